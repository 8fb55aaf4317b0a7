"""Night 2 with the live baseline (issue 26): the requests are the minimal listing reads
plus the writes the changes need, the listing's pages overlap (a few out at once, never
more), and the levels read are exactly the store's (an edit behind invsync's back is put
right). Counted in the real sandbox's request log, never by the clock.
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import env_for, run_invsync, write_csv
from conftest import output as out

from invsync.sandbox.process import SandboxProcess
from invsync.store.pages import READS_IN_FLIGHT

ITEMS = 3_500
LOCATIONS = (1, 2)


def sku(i: int) -> str:
    return f"N2-{i:06d}"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.csv"
    write_csv(path, ["sku", "product_id", "variant_id", "tracking"],
              ([sku(i), 200_000 + i, 20_000_000 + i, "product"] for i in range(ITEMS)))
    return path


def night(i: int, changed: bool) -> dict[tuple[int, str], int]:
    """Every item at both locations; on night 2 every 20th row moves (5%)."""
    out: dict[tuple[int, str], int] = {}
    for n in range(ITEMS):
        for loc in LOCATIONS:
            row = 2 * n + loc - 1
            out[(loc, sku(n))] = 1 + (row * 7 + (5 if changed and row % 20 == 0 else 0)) % 90
    return out


def stock(path: Path, levels: dict[tuple[int, str], int]) -> Path:
    return write_csv(path, ["sku", "location_id", "quantity"],
                     ([s, loc, q] for (loc, s), q in levels.items()))


def post(sb: SandboxProcess, path: str, payload: Any) -> None:
    req = urllib.request.Request(f"{sb.url}{path}", method="POST",
                                 data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def by_kind(log: list[dict[str, Any]]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for r in log:
        key = f"{r['method']} {r['path'].split('/v3', 1)[-1]}"
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


def test_night_two_reads_the_minimal_pages_a_few_at_once_and_sets_what_changed(
        sandbox_factory: Callable[..., SandboxProcess], catalog: Path, tmp_path: Path) -> None:
    sb = sandbox_factory("--latency-ms", "60", catalog=catalog)
    env = env_for(sb, tmp_path)
    night1, night2 = night(1, False), night(2, True)
    post(sb, "/_sandbox/levels", [{"location_id": loc, "sku": s, "quantity": q}
                                  for (loc, s), q in night1.items()])
    # Behind invsync's back: an item night 2 leaves as it was now reads 999 at the store.
    edited = (2, sku(1))
    assert night1[edited] == night2[edited]
    post(sb, "/_sandbox/levels", [{"location_id": 2, "sku": sku(1), "quantity": 999}])
    sb.post("/_sandbox/reset")

    result = run_invsync(["sync", str(stock(tmp_path / "night2.csv", night2))], env)
    assert result.returncode == 0, out(result)

    log = sb.requests()
    kinds = by_kind(log)
    changed = {k for k in night2 if night2[k] != night1[k]} | {edited}
    writes = sum(math.ceil(len([k for k in changed if k[0] == loc]) / 2000)
                 for loc in LOCATIONS)  # batches hold one location's items
    assert kinds == {"GET /inventory/locations": 1,
                     "GET /inventory/items": math.ceil(ITEMS / 1000),  # 4 pages, not 24 filters
                     "PUT /inventory/adjustments/absolute": writes}, kinds
    sent = {(i["location_id"], i["sku"]) for r in log if r["method"] == "PUT" for i in r["items"]}
    assert sent == changed  # the edit was read as the store's, and put right
    assert sb.levels() == night2

    pages = [r for r in log if r["path"].endswith("/inventory/items")]
    assert "page=1&" in pages[0]["query"]  # page 1 alone first: it tells the page count
    assert all(p["started"] >= pages[0]["finished"] for p in pages[1:])
    overlap = max(sum(1 for q in pages if q["started"] < p["finished"] and p["started"]
                      < q["finished"]) for p in pages[1:])
    assert 2 <= overlap <= READS_IN_FLIGHT, overlap
    report = result.report()
    assert report["counts"]["changed"] == len(changed)


def test_overlapping_reads_keep_within_the_quota_share(
        sandbox_factory: Callable[..., SandboxProcess], catalog: Path, tmp_path: Path) -> None:
    # 5 requests a 1.5 s window, 0.8 of it ours: 4 requests a window, never a 429.
    sb = sandbox_factory("--quota", "5", "--window-ms", "1500", catalog=catalog)
    env = env_for(sb, tmp_path)
    file = stock(tmp_path / "n.csv", night(1, False))
    result = run_invsync(["plan", str(file), "--baseline", "live"], env)
    assert result.returncode == 0, out(result)
    log = sb.requests()
    assert [r["status"] for r in log].count(429) == 0, by_kind(log)
    assert by_kind(log)["GET /inventory/items"] == math.ceil(ITEMS / 1000)


def test_overlapping_reads_survive_5xx_and_bare_429s_and_read_exactly_the_store(
        sandbox_factory: Callable[..., SandboxProcess], catalog: Path, tmp_path: Path) -> None:
    sb = sandbox_factory("--latency-ms", "20", "--error-rate", "0.2", "--bare-429-rate", "0.2",
                         "--seed", "26", catalog=catalog)
    env = env_for(sb, tmp_path)
    config = tmp_path / "fast-retry.toml"
    config.write_text("[retry]\nbase_delay_s = 0.01\nmax_delay_s = 0.05\n")
    night1, night2 = night(1, False), night(2, True)
    post(sb, "/_sandbox/levels", [{"location_id": loc, "sku": s, "quantity": q}
                                  for (loc, s), q in night1.items()])
    result = run_invsync(["sync", str(stock(tmp_path / "n2.csv", night2)),
                          "--config", str(config)], env)
    assert result.returncode == 0, out(result)
    log = sb.requests()
    assert any(r["status"] == 429 for r in log) and any(r["status"] >= 500 for r in log)
    sent = {(i["location_id"], i["sku"]) for r in log
            if r["method"] == "PUT" and r["status"] == 200 for i in r["items"]}
    assert sent == {k for k in night2 if night2[k] != night1[k]}
    assert sb.levels() == night2


def test_verify_re_reads_only_the_items_that_differ(
        sandbox_factory: Callable[..., SandboxProcess], catalog: Path, tmp_path: Path) -> None:
    sb = sandbox_factory(catalog=catalog)
    env = env_for(sb, tmp_path)
    levels = night(1, False)
    first = run_invsync(["sync", str(stock(tmp_path / "n1.csv", levels))], env)
    assert first.returncode == 0, out(first)
    assert first.report()["counts"]["accepted"] == len(levels)
    post(sb, "/_sandbox/levels", [{"location_id": 1, "sku": sku(7), "quantity": 999}])

    n = len(sb.requests())
    verify = run_invsync(["verify", first.report()["run_id"], "--timeout", "5"], env)
    assert verify.returncode == 1, out(verify)
    assert f"{len(levels):,} items checked, {len(levels) - 1:,} match, 1 differ" in verify.stdout
    reads = json.loads((first.report_dir() / "verify.json").read_text())["reads"]
    assert reads >= 2  # it re-read at least once within the 5 s
    gets = [r for r in sb.requests()[n:] if r["path"].endswith("/inventory/items")]
    full, again = gets[:math.ceil(ITEMS / 1000)], gets[math.ceil(ITEMS / 1000):]
    assert all("sku%3Ain" not in r["query"] for r in full)
    # Each re-read asks for the one differing item, not every page again.
    assert len(again) == reads - 1, [r["query"][:60] for r in again]
    assert all(f"sku%3Ain={sku(7)}" in r["query"] for r in again)
