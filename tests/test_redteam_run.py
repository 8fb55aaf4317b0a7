"""Red-team findings against a run's plumbing: one loop and one client per run, counts from
independent sources, signals at every stage, full disks, a store that misbehaves.

The real CLI (a child process) against a real sandbox process on 127.0.0.1, with the small
misbehaving server (``tests/misbehaving.py``) in front of it where the attack needs one.
Each test guards a fix made after this hunt (it failed before the fix), or is marked
``xfail(strict=True)`` with the defect it shows.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    SAMPLE,
    env_for,
    output,
    run_invsync,
    write_stock,
)
from misbehaving import Reply, Request, misbehaving_store

from invsync.sandbox.process import SandboxProcess

pytestmark = pytest.mark.integration

Factory = Callable[..., SandboxProcess]


def catalog_skus(n: int) -> list[str]:
    with (SAMPLE / "catalog.csv").open(encoding="utf-8") as fh:
        return [r["sku"] for r in csv.DictReader(fh) if r["tracking"] != "none"][:n]


def env_at(url: str, tmp_path: Path, sb: SandboxProcess) -> dict[str, str]:
    env = env_for(sb, tmp_path)
    env["BIGCOMMERCE_API_URL"] = url
    return env


def fast_retry_config(tmp_path: Path, **retry: float) -> Path:
    section = {"max_attempts": 5, "base_delay_s": 0.05, "max_delay_s": 0.2,
               "max_total_s": 30.0, "timeout_s": 10.0, **retry}
    path = tmp_path / "invsync.toml"
    path.write_text("[retry]\n" + "".join(f"{k} = {v!r}\n" for k, v in section.items()))
    return path


def with_headers(headers: dict[str, str]) -> Callable[[Request], Reply | None]:
    """Forward every request, with ``headers`` set on every answer (reads and writes)."""

    def respond(req: Request) -> Reply | None:
        def alter(reply: Reply) -> Reply:
            for name, value in headers.items():
                reply.set_header(name, value)
            return reply

        req.alter = alter
        return None

    return respond


# ---- 1. a quota window the store states absurdly long or negative ---------------------


def test_a_quota_window_of_eleven_days_is_waited_at_most_max_wait_s(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """Every answer (reads, then writes) says: 1 request per 1,000,000,000 ms window, none
    left, reset in 10 ms. The window is a wait the store asks for: at most max_wait_s."""
    respond = with_headers({"X-Rate-Limit-Requests-Quota": "1",
                            "X-Rate-Limit-Time-Window-Ms": "1000000000",
                            "X-Rate-Limit-Requests-Left": "0",
                            "X-Rate-Limit-Time-Reset-Ms": "10"})
    levels = {(1, sku): 5 + i for i, sku in enumerate(catalog_skus(30))}
    path = write_stock(tmp_path / "stock.csv", levels)
    config = fast_retry_config(tmp_path, max_wait_s=1.0)
    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        result = run_invsync(["sync", str(path), "--config", str(config), "--batch-size", "5"],
                             env, timeout=180)
    assert "Traceback" not in output(result)
    assert result.returncode == 0, output(result)
    assert {k: v for k, v in sandbox.levels().items() if k in levels} == levels


def test_a_negative_quota_window_does_not_hang_the_run(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """A window of -1000 ms made the limiter open a 'new window' that ended before it began,
    over and over, without ever yielding to the loop: the run spun at 100% CPU forever."""
    respond = with_headers({"X-Rate-Limit-Requests-Quota": "1",
                            "X-Rate-Limit-Time-Window-Ms": "-1000",
                            "X-Rate-Limit-Requests-Left": "0",
                            "X-Rate-Limit-Time-Reset-Ms": "10"})
    levels = {(1, sku): 5 + i for i, sku in enumerate(catalog_skus(30))}
    path = write_stock(tmp_path / "stock.csv", levels)
    config = fast_retry_config(tmp_path, max_wait_s=1.0)
    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        # A hang shows as subprocess.TimeoutExpired (the child is killed).
        result = run_invsync(["sync", str(path), "--config", str(config), "--batch-size", "5"],
                             env, timeout=180)
    assert "Traceback" not in output(result)
    assert result.returncode == 0, output(result)
    assert {k: v for k, v in sandbox.levels().items() if k in levels} == levels
