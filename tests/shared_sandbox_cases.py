"""Two tests run in this order in one pytest process by test_shared_sandbox.py (the name
does not start with ``test_``: a normal run does not collect it). The first leaves the
session's sandbox dirty in every way a test can; the second must find the same process as
if fresh."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from conftest import catalog_skus, env_for, run_invsync, write_stock

from invsync.sandbox.process import SandboxProcess

SEEN: dict[str, Any] = {}
DEFAULT_FAULTS = {"latency_ms": 0, "error_rate": 0.0, "bare_429_rate": 0.0, "drop_rate": 0.0,
                  "vague_422": False, "apply_delay_ms": 0}


def post_json(sb: SandboxProcess, path: str, payload: Any) -> Any:
    """POST ``payload`` as JSON to a ``/_sandbox/...`` endpoint; the decoded answer."""
    req = urllib.request.Request(sb.url + path, method="POST", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_1_leaves_the_sandbox_dirty(sandbox: SandboxProcess, tmp_path: Path) -> None:
    a, b, c = catalog_skus(3)
    stock = write_stock(tmp_path / "stock.csv", {(1, a): 5, (2, b): 7})
    run = run_invsync(["sync", str(stock)], env_for(sandbox, tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    post_json(sandbox, "/_sandbox/levels", [{"location_id": 1, "sku": c, "quantity": 9}])
    post_json(sandbox, "/_sandbox/orders", {"items": [{"sku": a, "quantity": 2}]})
    post_json(sandbox, "/_sandbox/faults", {"error_rate": 1.0, "latency_ms": 7,
                                             "apply_delay_ms": 60_000, "vague_422": True})
    assert sandbox.levels() == {(1, a): 3, (2, b): 7, (1, c): 9}
    assert sandbox.get("/_sandbox/orders") and sandbox.requests()
    assert sandbox.get("/_sandbox/faults") != DEFAULT_FAULTS
    SEEN["pid"] = sandbox.process.pid


def test_2_finds_the_same_sandbox_clean(sandbox: SandboxProcess, tmp_path: Path) -> None:
    assert sandbox.process.pid == SEEN["pid"]  # one process, shared
    assert sandbox.levels() == {}
    assert sandbox.get("/_sandbox/orders") == []
    assert sandbox.requests() == []
    assert sandbox.stats()["requests"] == 0
    assert sandbox.get("/_sandbox/faults") == DEFAULT_FAULTS
    # And the store answers as a fresh one: a run plans every level from 0 and sends it.
    a, b, _ = catalog_skus(3)
    stock = write_stock(tmp_path / "stock.csv", {(1, a): 5, (2, b): 7})
    run = run_invsync(["sync", str(stock)], env_for(sandbox, tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.report()["counts"]["submitted"] == 2
    assert sandbox.levels() == {(1, a): 5, (2, b): 7}
