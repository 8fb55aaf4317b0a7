"""Live reads name the items a file names: ``--baseline live``, ``drift FILE`` and ``verify``
of 1,000 items of a 100,000-item catalog take at most 5 read requests (issue 13).

Requests are counted in the real sandbox's request log; the levels read must still be the
store's (an edit made behind invsync's back is found), so fewer reads lose nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import env_for, run_invsync, write_csv
from conftest import output as out

from invsync.sandbox.process import SandboxProcess
from invsync.store.identity import query_chunks
from invsync.store.live import READ_QUERY_BUDGET

CATALOG_ITEMS = 100_000
NAMED = 1_000
MAX_READS = 5


def sku(i: int) -> str:
    return f"SKU-{i:07d}"


@pytest.fixture(scope="module")
def big_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    write_csv(path, ["sku", "product_id", "variant_id", "tracking"],
              ([sku(i), 100_000 + i, 10_000_000 + i, "product"] for i in range(CATALOG_ITEMS)))
    return path


def reads(sb: SandboxProcess, since: int) -> list[dict[str, Any]]:
    return [r for r in sb.requests()[since:] if r["method"] == "GET"]


def test_a_file_naming_1000_of_100000_items_reads_only_those(
        sandbox_factory: Callable[..., SandboxProcess], big_catalog: Path,
        tmp_path: Path) -> None:
    sb = sandbox_factory(catalog=big_catalog)
    env = env_for(sb, tmp_path)
    # Every 100th item at location 1: spread over the whole catalog, not one page of it.
    named = [i * (CATALOG_ITEMS // NAMED) for i in range(NAMED)]
    stock = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                      ([sku(i), 1, 1 + i % 50] for i in named))

    n = len(sb.requests())
    first = run_invsync(["sync", "--baseline", "live", str(stock)], env)
    assert first.returncode == 0, out(first)
    assert first.report()["counts"]["accepted"] == NAMED
    got = reads(sb, n)
    assert len(got) <= MAX_READS, [(r["path"], r["query"][:80]) for r in got]
    assert any("sku%3Ain=" in r["query"] or "sku:in=" in r["query"] for r in got)

    # A second live run: the store already holds the file's levels, nothing is sent.
    n = len(sb.requests())
    again = run_invsync(["sync", "--baseline", "live", str(stock)], env)
    assert again.returncode == 0, out(again)
    assert again.report()["counts"]["changed"] == 0
    assert len(reads(sb, n)) <= MAX_READS
    assert not [r for r in sb.requests()[n:] if r["method"] == "PUT"]

    # An edit behind invsync's back is found by drift FILE, in at most 5 reads.
    edited = named[NAMED // 2]
    _edit(sb, sku(edited), 999)
    n = len(sb.requests())
    # (No read-after-write lag allowed here: drift would re-read the edited item for up
    # to verify_lag_s after invsync's own write before calling it drift.)
    no_lag = tmp_path / "no-lag.toml"
    no_lag.write_text("verify_lag_s = 0\n")
    drift = run_invsync(["drift", str(stock), "--config", str(no_lag)], env)
    assert drift.returncode == 1, out(drift)
    assert f"{NAMED:,} items checked, {NAMED - 1:,} match, 1 differ" in drift.stdout
    assert f"sku {sku(edited)}: expected {1 + edited % 50}, store has 999" in drift.stdout
    assert len(reads(sb, n)) <= MAX_READS

    # verify reads back the first run's 1,000 levels: the edited one differs.
    n = len(sb.requests())
    verify = run_invsync(["verify", first.report()["run_id"], "--timeout", "0"], env)
    assert verify.returncode == 1, out(verify)
    assert f"{NAMED:,} items checked, {NAMED - 1:,} match, 1 differ" in verify.stdout
    assert len(reads(sb, n)) <= MAX_READS


def _edit(sb: SandboxProcess, item: str, quantity: int) -> None:
    import json
    import urllib.request

    req = urllib.request.Request(
        f"{sb.url}/_sandbox/levels", method="POST",
        data=json.dumps([{"location_id": 1, "sku": item, "quantity": quantity}]).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200


def test_filter_chunks_stay_under_the_url_budget_and_cover_every_value() -> None:
    values: list[int | str] = [sku(i) for i in range(NAMED)] + ["a b/é&"]
    chunks = list(query_chunks(values, READ_QUERY_BUDGET))
    from urllib.parse import quote

    assert all(len(quote(c, safe="")) <= READ_QUERY_BUDGET for c in chunks)
    assert len(chunks) <= 3
    assert ",".join(chunks).split(",")[:NAMED] == [sku(i) for i in range(NAMED)]
