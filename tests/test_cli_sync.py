"""Integration tests of ``invsync sync``: the real CLI against a real sandbox process.

Every test runs ``python -m invsync sync ...`` as a child process and checks what
really happened: the levels the sandbox ends with, the requests it received, its
stats, the run's report.json and rejected.csv, and the exit code.
"""

from __future__ import annotations

import csv
import json
import math
import re
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import (
    SAMPLE,
    TOKEN,
    CliResult,
    env_for,
    output,
    retry_config,
    run_invsync,
    state_store_dir,
    stocked,
    write_csv,
)

from invsync.sandbox.process import SandboxProcess

NIGHT1 = SAMPLE / "night1.csv"
NIGHT2 = SAMPLE / "night2.csv"
MERCHANT = SAMPLE / "merchant.xlsx"
ABSOLUTE_PATH = "/stores/sandbox/v3/inventory/adjustments/absolute"
LOCATIONS_PATH = "/stores/sandbox/v3/inventory/locations"
MAX_BATCH = 2000

Level = tuple[int, str]
Factory = Callable[..., SandboxProcess]


# ---- reading the inputs independently of invsync -------------------------------------------


def csv_levels(path: Path) -> dict[Level, int]:
    """(location_id, sku) -> quantity of a well-formed stock CSV, read with the csv module."""
    with path.open(newline="", encoding="utf-8") as fh:
        out = {(int(r["location_id"]), r["sku"]): int(r["quantity"]) for r in csv.DictReader(fh)}
    return out


def csv_row_count(path: Path) -> int:
    with path.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def catalog() -> dict[str, dict[str, str]]:
    with (SAMPLE / "catalog.csv").open(newline="", encoding="utf-8") as fh:
        return {r["sku"]: r for r in csv.DictReader(fh)}


def tracked_skus() -> list[str]:
    return [sku for sku, r in catalog().items() if r["tracking"] in ("product", "variant")]


# ---- looking at what the sandbox saw -------------------------------------------------------


def puts(sb: SandboxProcess) -> list[dict[str, Any]]:
    return [r for r in sb.requests() if r["method"] == "PUT"]


def item_key(item: dict[str, Any]) -> Level:
    return item["location_id"], item["sku"]


def sent_items(requests: list[dict[str, Any]], status: int | None = 200) -> list[dict[str, Any]]:
    return [it for r in requests if status is None or r["status"] == status for it in r["items"]]


def assert_well_formed_writes(requests: list[dict[str, Any]], max_batch: int = MAX_BATCH) -> None:
    """Every write is a PUT absolute adjustment of ≤ max_batch items of one location, each
    (location, item) once, each item exactly location_id + sku + quantity."""
    api_writes = [r for r in requests if r["method"] != "GET"]
    assert api_writes, "no writes at all"
    for r in api_writes:
        assert r["method"] == "PUT", r
        assert r["path"] == ABSOLUTE_PATH, r
        items = r["items"]
        assert 1 <= len(items) <= max_batch, (r["seq"], len(items))
        assert len({it["location_id"] for it in items}) == 1, f"request {r['seq']} mixes locations"
        keys = [item_key(it) for it in items]
        assert len(keys) == len(set(keys)), f"request {r['seq']} repeats an item"
        for it in items:
            assert set(it) == {"location_id", "sku", "quantity"}, it
            assert isinstance(it["quantity"], int) and it["quantity"] >= 0, it
    for r in requests:
        if r["method"] == "GET":
            assert r["path"].startswith("/stores/sandbox/v3/inventory/"), r


def assert_counts_add_up(counts: dict[str, int]) -> None:
    c = counts
    assert c["rows"] == c["valid"] + c["invalid"], c
    assert c["valid"] - c["merged"] == c["unchanged"] + c["changed"], c
    assert c["changed"] == c["submitted"] + c["not_sent"], c
    assert c["submitted"] == c["accepted"] + c["refused"] + c["unconfirmed"], c
    assert c["rejected"] == c["invalid"] + c["refused"], c


def assert_report_matches_sandbox(report: dict[str, Any], requests: list[dict[str, Any]]) -> None:
    """Transaction ids in the report are exactly the ones the sandbox answered 200 with, and
    each batch's ids belong to writes of that batch's location."""
    assert_counts_add_up(report["counts"])
    by_txid = {r["transaction_id"]: r for r in requests
               if r["method"] == "PUT" and r["status"] == 200}
    assert sorted(report["transaction_ids"]) == sorted(by_txid)
    batch_txids = [t for b in report["batches"] for t in b.get("transaction_ids") or []]
    assert sorted(batch_txids) == sorted(by_txid)
    for b in report["batches"]:
        ids = b.get("transaction_ids") or []
        assert b["transaction_id"] == (ids[0] if ids else None)
        accepted_items = 0
        for t in ids:
            r = by_txid[t]
            assert {it["location_id"] for it in r["items"]} == {b["location_id"]}
            accepted_items += len(r["items"])
        assert accepted_items == b["accepted"], b
    assert report["counts"]["accepted"] == sum(len(r["items"]) for r in by_txid.values())
    assert report["requests"]["sent"] == sum(1 for r in requests if r["method"] == "PUT")
    assert report["requests"]["http_429"] == sum(
        1 for r in requests if r["method"] == "PUT" and r["status"] == 429)


def api_levels(sb: SandboxProcess, token: str = TOKEN) -> dict[Level, int]:
    """On-hand levels as the store's public read API serves them (every page)."""
    out: dict[Level, int] = {}
    page = 1
    while True:
        req = urllib.request.Request(
            f"{sb.url}/stores/{sb.store_hash}/v3/inventory/items?limit=1000&page={page}",
            headers={"X-Auth-Token": token, "Accept": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = json.loads(resp.read())
        for entry in payload["data"]:
            for loc in entry["locations"]:
                out[(loc["location_id"], entry["identity"]["sku"])] = \
                    loc["total_inventory_onhand"]
        if page >= payload["meta"]["pagination"]["total_pages"]:
            return out
        page += 1


def read_rejected_csv(result: CliResult) -> tuple[list[str], list[dict[str, str]]]:
    delimiter = result.report()["input"].get("delimiter") or ","  # the input's own
    with (result.report_dir() / "rejected.csv").open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def snapshot_file(tmp_path: Path, store_hash: str = "sandbox",
                  sb: SandboxProcess | None = None) -> Path:
    return state_store_dir(tmp_path / "state", store_hash,
                           sb.url if sb else None) / "snapshot.parquet"


def store_state(tmp_path: Path, store_hash: str = "sandbox") -> dict[str, bytes]:
    """Every file of the store's state (snapshot, metadata, journal, lock), by name."""
    folder = state_store_dir(tmp_path / "state", store_hash)
    return {str(f.relative_to(folder)): f.read_bytes()
            for f in sorted(folder.rglob("*")) if f.is_file()} if folder.exists() else {}


# ---- 1. first full sync --------------------------------------------------------------------


def test_first_sync_of_night1_sets_every_level(sandbox: SandboxProcess,
                                               cli_env: dict[str, str]) -> None:
    expected = csv_levels(NIGHT1)
    assert len(expected) == csv_row_count(NIGHT1) == 3114

    result = run_invsync(["sync", str(NIGHT1)], cli_env)

    assert result.returncode == 0, output(result)
    assert stocked(sandbox.levels()) == stocked(expected)
    # The raw introspection view agrees, including the catalog's ids for each SKU.
    cat = catalog()
    raw = sandbox.get("/_sandbox/levels")
    assert len(raw) == len(stocked(expected))  # the store held 0 of the others already
    for lv in raw:
        assert lv["quantity"] == expected[(lv["location_id"], lv["sku"])]
        assert lv["product_id"] == int(cat[lv["sku"]]["product_id"])
        assert lv["variant_id"] == int(cat[lv["sku"]]["variant_id"])
    # ... and so does the store's public read API.
    served = api_levels(sandbox)
    assert {k: q for k, q in served.items() if k[0] in (1, 2)} == expected
    assert set(served.values()) - set(expected.values()) <= {0}  # location 3 never set

    requests = sandbox.requests()
    assert_well_formed_writes(requests)
    writes = [r for r in requests if r["method"] == "PUT"]
    assert all(r["status"] == 200 for r in writes)
    sent = sent_items(writes)
    assert len(sent) == len(stocked(expected))
    assert {item_key(it): it["quantity"] for it in sent} == stocked(expected)
    # Grouped by location: as few batches as 2000-item batches per location allow.
    per_location = Counter(loc for loc, _ in stocked(expected))
    assert len(writes) == sum(math.ceil(n / MAX_BATCH) for n in per_location.values())
    assert not any(r["method"] == "GET" and r["status"] != 200 for r in requests)

    stats = sandbox.stats()
    assert stats["items_applied"] == len(stocked(expected))
    assert stats["item_overlaps"] == 0
    assert stats["by_status"] == {"200": len(requests)}

    report = result.report()
    assert report["status"] == "succeeded"
    assert report["exit_code"] == 0
    assert report["error"] is None
    c = report["counts"]
    assert (c["rows"], c["valid"], c["invalid"], c["blank"]) == (3114, 3114, 0, 0)
    # The store held 0 of 246 items already: unchanged, not sent.
    assert (c["changed"], c["unchanged"], c["submitted"]) == (2868, 246, 2868)
    assert (c["accepted"], c["refused"], c["unconfirmed"], c["not_sent"]) == (2868, 0, 0, 0)
    assert c["rejected"] == 0
    assert report["rejected"] == []
    assert len(report["batches"]) == len(writes)
    assert all(b["status"] == "accepted" for b in report["batches"])
    assert_report_matches_sandbox(report, requests)
    assert report["input"]["rows"] == 3114
    assert report["input"]["format"] == "csv"
    assert "succeeded" in result.stdout


# ---- 2. incremental syncs ------------------------------------------------------------------


def test_second_sync_sends_exactly_the_changes_and_third_sends_nothing(
    sandbox: SandboxProcess, cli_env: dict[str, str]
) -> None:
    night1, night2 = csv_levels(NIGHT1), csv_levels(NIGHT2)
    assert night1.keys() == night2.keys()
    diff = {k: q for k, q in night2.items() if night1[k] != q}
    assert len(diff) == 93  # sample_data/README.md

    first = run_invsync(["sync", str(NIGHT1)], cli_env)
    assert first.returncode == 0, output(first)
    sandbox.post("/_sandbox/reset")

    second = run_invsync(["sync", str(NIGHT2)], cli_env)

    assert second.returncode == 0, output(second)
    requests = sandbox.requests()
    assert_well_formed_writes(requests)
    sent = sent_items(puts(sandbox), status=None)
    assert sorted((item_key(it), it["quantity"]) for it in sent) == sorted(diff.items())
    assert stocked(sandbox.levels()) == stocked(night2)
    report = second.report()
    assert report["status"] == "succeeded"
    c = report["counts"]
    assert (c["changed"], c["unchanged"], c["submitted"], c["accepted"]) == (93, 3021, 93, 93)
    assert_report_matches_sandbox(report, requests)

    sandbox.post("/_sandbox/reset")
    third = run_invsync(["sync", str(NIGHT2)], cli_env)

    assert third.returncode == 0, output(third)
    assert puts(sandbox) == []
    assert sandbox.stats()["items_applied"] == 0
    assert stocked(sandbox.levels()) == stocked(night2)
    report = third.report()
    assert report["status"] == "succeeded"
    c = report["counts"]
    assert (c["changed"], c["unchanged"], c["submitted"], c["accepted"]) == (0, 3114, 0, 0)
    assert report["batches"] == [] and report["transaction_ids"] == []
    assert_counts_add_up(c)


# ---- 3. batch size and concurrency ---------------------------------------------------------


def test_batch_size_and_concurrency_are_respected(sandbox_factory: Factory,
                                                  tmp_path: Path) -> None:
    # A little latency so that requests in flight at once really overlap in the sandbox.
    sb = sandbox_factory("--latency-ms", "40")
    env = env_for(sb, tmp_path)
    expected = csv_levels(NIGHT1)
    # Only what differs from the store is sent: the store already holds 0 of the others.
    per_location = Counter(loc for loc, _ in stocked(expected))
    batches = sum(math.ceil(n / 500) for n in per_location.values())

    serial = run_invsync(["sync", str(NIGHT1), "--batch-size", "500", "--concurrency", "1"], env)

    assert serial.returncode == 0, output(serial)
    requests = sb.requests()
    assert_well_formed_writes(requests, max_batch=500)
    writes = puts(sb)
    assert len(writes) == batches
    # Full batches: only the last batch of each location may be short.
    assert sorted(len(r["items"]) for r in writes)[len(per_location):] == \
        [500] * (batches - len(per_location))
    assert sb.stats()["max_in_flight"] == 1
    assert stocked(sb.levels()) == stocked(expected)
    report = serial.report()
    assert report["options"]["batch_size"] == 500
    assert report["options"]["concurrency"] == 1
    assert len(report["batches"]) == batches
    assert all(b["items"] <= 500 for b in report["batches"])
    assert_report_matches_sandbox(report, requests)

    sb.post("/_sandbox/reset")
    parallel = run_invsync(["sync", str(NIGHT1), "--full", "--batch-size", "500",
                            "--concurrency", "3"], env)

    assert parallel.returncode == 0, output(parallel)
    assert_well_formed_writes(sb.requests(), max_batch=500)
    stats = sb.stats()
    assert 1 < stats["max_in_flight"] <= 3, stats
    assert stats["item_overlaps"] == 0
    # --full sends every item, those the store holds at 0 too.
    assert len(puts(sb)) == sum(math.ceil(n / 500) for n in
                                Counter(loc for loc, _ in expected).values())
    assert stocked(sb.levels()) == stocked(expected)


# ---- 4. dry run ----------------------------------------------------------------------------


def test_dry_run_sends_nothing_and_changes_no_snapshot(sandbox: SandboxProcess,
                                                       cli_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    snap = snapshot_file(tmp_path, sb=sandbox)

    dry = run_invsync(["sync", str(NIGHT1), "--dry-run"], cli_env)

    assert dry.returncode == 0, output(dry)
    assert puts(sandbox) == []
    assert sandbox.levels() == {}
    assert not snap.exists()
    assert store_state(tmp_path) == {}
    report = dry.report()
    assert report["status"] == "dry_run"
    assert report["transaction_ids"] == []
    c = report["counts"]
    in_stock = len(stocked(csv_levels(NIGHT1)))  # the store holds 0 of the others already
    assert (c["changed"], c["submitted"], c["accepted"], c["not_sent"]) == \
        (in_stock, 0, 0, in_stock)
    assert_counts_add_up(c)
    assert report["batches"] and all(b["status"] == "planned" and b["transaction_id"] is None
                                     for b in report["batches"])
    assert sum(b["items"] for b in report["batches"]) == in_stock

    real = run_invsync(["sync", str(NIGHT1)], cli_env)

    assert real.returncode == 0, output(real)
    assert len(sent_items(puts(sandbox))) == in_stock
    assert real.report()["counts"]["submitted"] == in_stock
    assert stocked(sandbox.levels()) == stocked(csv_levels(NIGHT1))
    assert snap.exists()

    # A dry run after a real one: still nothing sent, the snapshot byte for byte the same.
    before = store_state(tmp_path)
    assert snap.name in before
    sandbox.post("/_sandbox/reset")
    dry2 = run_invsync(["sync", str(NIGHT2), "--dry-run"], cli_env)
    assert dry2.returncode == 0, output(dry2)
    assert puts(sandbox) == []
    assert store_state(tmp_path) == before
    assert dry2.report()["counts"]["changed"] == 93
    assert stocked(sandbox.levels()) == stocked(csv_levels(NIGHT1))

    # ... so the real night2 run still sends the 93 changes.
    real2 = run_invsync(["sync", str(NIGHT2)], cli_env)
    assert real2.returncode == 0, output(real2)
    assert len(sent_items(puts(sandbox))) == 93
    assert stocked(sandbox.levels()) == stocked(csv_levels(NIGHT2))


def test_dry_run_needs_no_token_and_contacts_no_store(sandbox: SandboxProcess,
                                                      cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "BIGCOMMERCE_ACCESS_TOKEN"}

    result = run_invsync(["sync", str(NIGHT1), "--dry-run"], env)

    assert result.returncode == 0, output(result)
    assert sandbox.requests() == []
    report = result.report()
    assert report["status"] == "dry_run"
    assert report["counts"]["changed"] == 3114


# ---- 5. --full -----------------------------------------------------------------------------


def test_full_resends_everything_even_when_unchanged(sandbox: SandboxProcess,
                                                     cli_env: dict[str, str]) -> None:
    expected = csv_levels(NIGHT1)
    first = run_invsync(["sync", str(NIGHT1)], cli_env)
    assert first.returncode == 0, output(first)
    sandbox.post("/_sandbox/reset")

    again = run_invsync(["sync", str(NIGHT1), "--full"], cli_env)

    assert again.returncode == 0, output(again)
    requests = sandbox.requests()
    assert_well_formed_writes(requests)
    sent = sent_items(puts(sandbox))
    assert len(sent) == 3114
    assert {item_key(it): it["quantity"] for it in sent} == expected
    assert stocked(sandbox.levels()) == stocked(expected)
    report = again.report()
    assert report["status"] == "succeeded"
    c = report["counts"]
    assert (c["changed"], c["unchanged"], c["submitted"], c["accepted"]) == (3114, 0, 3114, 3114)
    assert report["options"]["full"] is True
    assert_report_matches_sandbox(report, requests)


# ---- 6. bad rows ---------------------------------------------------------------------------


def test_bad_rows_are_rejected_with_their_original_text(sandbox: SandboxProcess,
                                                        cli_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    skus = tracked_skus()
    good = [[sku, "1", str(i + 1), f"good row {i}"] for i, sku in enumerate(skus[:20])]
    s = skus[20:40]
    bad_rows: list[tuple[list[str], str, str, str | None]] = [
        # (cells, reason, blamed column, value)
        ([s[0], "1", "abc", "not, a number"], "quantity_not_whole", "quantity", "abc"),
        ([s[1], "1", "-4", "shrinkage"], "quantity_negative", "quantity", "-4"),
        ([s[2], "1", "2.5", 'half "box"'], "quantity_not_whole", "quantity", "2.5"),
        ([s[3], "1", "", "count later"], "missing_quantity", "quantity", None),
        (["", "1", "7", "label fell off"], "missing_identifier", "sku", None),
        ([s[4], "1", "5", "first count"], "duplicate_item", "sku", s[4]),
        ([s[5], "1", "99999999999", "typo"], "quantity_too_large", "quantity", "99999999999"),
        ([s[6], "9", "3", "no such shop"], "unknown_location", "location_id", "9"),
        ([s[7], "1", "2024-05-01", "pasted a date"], "date_in_column", "quantity", "2024-05-01"),
        ([s[4], "1", "6", "=HYPERLINK(\"http://x\")"], "duplicate_item", "sku", s[4]),
    ]
    extra_good = [
        [s[4], "2", "9", "same sku at another location is no duplicate"],
        [s[8], "1", " 12 ", "padded"],
        [s[9], "2", "007", "leading zeros"],
        ["00123", "1", "30", "a text sku with leading zeros"],
    ]
    # Interleave: good rows, then each bad row followed by a good one.
    body: list[list[str]] = []
    expected_bad: dict[int, tuple[list[str], str, str, str | None]] = {}
    goods = iter(good + extra_good)
    for cells, reason, column, value in bad_rows:
        body.append(next(goods))
        body.append(cells)
        expected_bad[len(body) + 1] = (cells, reason, column, value)  # header is row 1
    body.extend(goods)
    header = ["sku", "location_id", "quantity", "note"]
    path = write_csv(tmp_path / "bad.csv", header, body)
    expected_levels = {
        (int(cells[1]), cells[0]): int(cells[2])
        for row, cells in enumerate(body, start=2) if row not in expected_bad
    }
    assert len(expected_levels) == len(body) - len(bad_rows)

    result = run_invsync(["sync", str(path)], cli_env)

    assert result.returncode == 1, output(result)
    assert stocked(sandbox.levels()) == stocked(expected_levels)
    requests = sandbox.requests()
    assert_well_formed_writes(requests)
    assert all(r["status"] == 200 for r in puts(sandbox))

    report = result.report()
    assert report["status"] == "partial"
    assert report["exit_code"] == 1
    c = report["counts"]
    assert (c["rows"], c["invalid"], c["refused"], c["rejected"]) == \
        (len(body), len(bad_rows), 0, len(bad_rows))
    assert c["accepted"] == len(expected_levels)
    assert_report_matches_sandbox(report, requests)
    got = {r["row"]: r for r in report["rejected"]}
    assert sorted(got) == sorted(expected_bad)
    for row, (_cells, reason, column, value) in expected_bad.items():
        rec = got[row]
        assert (rec["reason"], rec["column"], rec["value"]) == (reason, column, value), rec
        assert rec["message"], rec
        if value is not None and reason != "duplicate_item":
            assert value in rec["message"], rec
    assert report["rejected_by_reason"] == dict(Counter(r for _, r, _, _ in bad_rows))

    fields, rejected = read_rejected_csv(result)
    assert fields == [*header, "row", "reason", "message"]
    assert [int(r["row"]) for r in rejected] == sorted(expected_bad)
    for rec in rejected:
        cells, reason, _, _ = expected_bad[int(rec["row"])]
        original = [rec[h] for h in header]
        if cells[3].startswith("="):  # formula-like text is escaped for spreadsheets
            assert original[3] == "'" + cells[3]
            original[3] = cells[3]
        assert original == cells, rec
        assert rec["reason"] == reason
        assert rec["message"] == got[int(rec["row"])]["message"]


def test_location_id_flag_is_the_location_of_rows_without_one(sandbox: SandboxProcess,
                                                             cli_env: dict[str, str],
                                                             tmp_path: Path) -> None:
    skus = tracked_skus()[:5]
    path = write_csv(tmp_path / "noloc.csv", ["sku", "quantity"],
                     [[sku, str(i)] for i, sku in enumerate(skus)])

    to_two = run_invsync(["sync", str(path), "--location-id", "2"], cli_env)

    assert to_two.returncode == 0, output(to_two)
    assert stocked(sandbox.levels()) == stocked({(2, sku): i for i, sku in enumerate(skus)})
    assert_well_formed_writes(sandbox.requests())

    # The default location is disabled in the store: every row is rejected before sending,
    # and the rejection says which location it was (the file itself names none).
    sandbox.post("/_sandbox/reset")
    to_three = run_invsync(["sync", str(path), "--location-id", "3"], cli_env)

    assert to_three.returncode == 1, output(to_three)
    assert puts(sandbox) == []
    report = to_three.report()
    assert [r["reason"] for r in report["rejected"]] == ["disabled_location"] * len(skus)
    for rec in report["rejected"]:
        assert "'3'" in rec["message"], rec  # not "location '' is disabled ..."


@pytest.mark.parametrize("header", ["Warehouse Code", "Location Code", "Location",
                                    "Location ID"])
def test_location_codes_that_are_numbers_go_where_the_header_says(
        sandbox_factory: Factory, tmp_path: Path, header: str) -> None:
    # Location 1 is coded "20" and location 20 is coded "10": "20" under a code header
    # once wrote to location 20.
    locations = write_csv(tmp_path / "locations.csv", ["id", "code", "label", "enabled"],
                          [[1, "20", "Main", "true"], [20, "10", "Annex", "true"]])
    sb = sandbox_factory("--locations", str(locations))
    env = env_for(sb, tmp_path)
    skus = tracked_skus()[:2]
    path = write_csv(tmp_path / "coded.csv", ["sku", header, "quantity"],
                     [[skus[0], "20", "7"], [skus[1], "10", "8"]])

    result = run_invsync(["sync", str(path)], env)

    if header == "Location":  # "20" is id 20 and location 1's code: refused, not guessed
        assert result.returncode == 1, output(result)
        assert stocked(sb.levels()) == stocked({(20, skus[1]): 8})
        rejected = result.report()["rejected"]
        assert [(r["row"], r["reason"]) for r in rejected] == [(2, "ambiguous_location")]
    elif header == "Location ID":
        assert result.returncode == 1, output(result)  # no location has id 10
        assert stocked(sb.levels()) == stocked({(20, skus[0]): 7})
    else:
        assert result.returncode == 0, output(result)
        assert stocked(sb.levels()) == stocked({(1, skus[0]): 7, (20, skus[1]): 8})


# ---- 7. items the store refuses ------------------------------------------------------------


@pytest.mark.parametrize("vague", [False, True], ids=["named-422", "vague-422"])
def test_unknown_skus_refused_by_store_rest_applied_and_retried_next_run(
    sandbox_factory: Factory, tmp_path: Path, vague: bool
) -> None:
    sb = sandbox_factory(*(["--vague-422"] if vague else []))
    env = env_for(sb, tmp_path)
    skus = tracked_skus()
    rows = [[sku, "1", str(10 + i)] for i, sku in enumerate(skus[:60])]
    rows += [[sku, "2", str(i)] for i, sku in enumerate(skus[60:90])]
    ghosts = {12: ["GHOST-001", "1", "4"], 45: ["GHOST-002", "1", "8"],
              80: ["NO-SUCH-SKU-3", "2", "2"]}
    for at in sorted(ghosts):  # list positions, ascending so later inserts stay put
        rows.insert(at, ghosts[at])
    ghost_rows = {i + 2: cells for i, cells in enumerate(rows) if cells in ghosts.values()}
    assert len(ghost_rows) == 3
    ghost_keys = {(int(c[1]), c[0]) for c in ghost_rows.values()}
    path = write_csv(tmp_path / "with-ghosts.csv", ["sku", "location_id", "quantity"], rows)
    expected = {(int(loc), sku): int(q) for sku, loc, q in rows if (int(loc), sku)
                not in ghost_keys}

    first = run_invsync(["sync", str(path)], env)

    assert first.returncode == 1, output(first)
    assert stocked(sb.levels()) == stocked(expected)
    requests = sb.requests()
    assert_well_formed_writes(requests)
    writes = puts(sb)
    assert {r["status"] for r in writes} <= {200, 422}
    for r in writes:
        keys = {item_key(it) for it in r["items"]}
        if r["status"] == 200:
            assert not keys & ghost_keys, r["seq"]
        else:  # every refusal was caused by a ghost, never by a good item
            assert keys & ghost_keys, r["seq"]
    # Isolation stays cheap: with a title naming the item, ~3 requests per refused item;
    # by halving, ~2 per level of the halving tree; never one request per item.
    per_ghost = 3 if not vague else 2 * math.ceil(math.log2(62))
    assert len(writes) <= 2 + 3 * per_ghost, len(writes)
    report = first.report()
    assert report["status"] == "partial"
    c = report["counts"]
    assert (c["invalid"], c["refused"], c["rejected"]) == (0, 3, 3)
    # A row at 0 is not sent: the store holds 0 already.
    zeros = len(expected) - len(stocked(expected))
    assert (c["submitted"], c["accepted"]) == (len(rows) - zeros, len(expected) - zeros)
    assert_report_matches_sandbox(report, requests)
    refused = {r["row"]: r for r in report["rejected"]}
    assert sorted(refused) == sorted(ghost_rows)
    for row, rec in refused.items():
        assert rec["reason"] == "refused_by_store"
        assert rec["column"] == "sku"
        assert rec["value"] == ghost_rows[row][0]
        assert rec["message"].startswith("the store refused '")
        if not vague:
            assert ghost_rows[row][0] in rec["message"]
    assert report["rejected_by_reason"] == {"refused_by_store": 3}
    fields, rejected = read_rejected_csv(first)
    assert fields == ["sku", "location_id", "quantity", "row", "reason", "message"]
    assert {int(r["row"]): [r["sku"], r["location_id"], r["quantity"]] for r in rejected} == \
        ghost_rows
    assert {r["reason"] for r in rejected} == {"refused_by_store"}

    # The snapshot did not record the refused items: a rerun retries exactly those.
    sb.post("/_sandbox/reset")
    rerun = run_invsync(["sync", str(path)], env)

    assert rerun.returncode == 1, output(rerun)
    resent = sent_items(puts(sb), status=None)
    assert {item_key(it) for it in resent} == ghost_keys
    assert all(r["status"] == 422 for r in puts(sb))
    assert stocked(sb.levels()) == stocked(expected)
    report = rerun.report()
    c = report["counts"]
    assert (c["changed"], c["unchanged"], c["submitted"]) == (3, len(expected), 3)
    assert (c["accepted"], c["refused"]) == (0, 3)
    assert sorted(r["row"] for r in report["rejected"]) == sorted(ghost_rows)


# ---- 8. the merchant workbook --------------------------------------------------------------


_README_REASONS = [  # README wording -> reason code
    ("not a whole number", "quantity_not_whole"),
    ("quantity is negative", "quantity_negative"),
    ("quantity missing", "missing_quantity"),
    ("not a number", "quantity_not_whole"),
    ("unknown SKU", "refused_by_store"),
    ("same SKU + location", "duplicate_item"),
    ("SKU missing", "missing_identifier"),
    ("location 3 is disabled", "disabled_location"),  # rejected locally: locations are read
]


def readme_mistakes() -> dict[int, tuple[str, str]]:
    """Row -> (what README says invsync should do, SKU) from the README's table."""
    text = (SAMPLE / "README.md").read_text(encoding="utf-8")
    table = text.split("## The deliberate mistakes in `merchant.xlsx`", 1)[1]
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            sku = "" if cells[1] == "(empty)" else cells[1].strip("`")
            out[int(cells[0])] = (cells[4], sku)
    return out


def readme_reason(what: str) -> str | None:
    if what.startswith("valid") or what.startswith("skip"):
        return None
    for words, code in _README_REASONS:
        if words in what:
            return code
    raise AssertionError(f"README row not understood: {what}")


def test_merchant_xlsx_rejections_match_the_readme(sandbox: SandboxProcess,
                                                   cli_env: dict[str, str]) -> None:
    mistakes = readme_mistakes()
    assert len(mistakes) == 12
    expected_rejected = {row: (readme_reason(what), sku) for row, (what, sku) in mistakes.items()
                         if readme_reason(what)}
    assert len(expected_rejected) == 9
    # The workbook read independently (openpyxl) for the levels the valid rows set.
    sheet = openpyxl.load_workbook(MERCHANT, read_only=True, data_only=True)["Stock"]
    header = [str(v) for v in next(sheet.iter_rows(min_row=1, max_row=1, values_only=True))]
    assert header[:3] == ["SKU", "Location ID", "Quantity"]
    expected_levels = {}
    for row, values in enumerate(sheet.iter_rows(min_row=2, values_only=True), start=2):
        sku, loc, qty = values[:3]
        if row in expected_rejected or sku is None:
            continue
        expected_levels[(int(loc), str(sku))] = int(qty)
    assert len(expected_levels) == 42

    result = run_invsync(["sync", str(MERCHANT)], cli_env)

    assert result.returncode == 1, output(result)
    levels = sandbox.levels()
    assert stocked(levels) == stocked(expected_levels)
    assert levels[(1, "BEANIE-840-BLACK")] == 12
    assert levels[(1, "00123")] == 30 and (1, "123") not in levels
    requests = sandbox.requests()
    assert_well_formed_writes(requests)
    # Location 3 is disabled: known from GET /inventory/locations, never sent.
    assert any(r["method"] == "GET" and r["path"] == LOCATIONS_PATH for r in requests)
    assert all(it["location_id"] == 1 for it in sent_items(puts(sandbox), status=None))

    report = result.report()
    assert report["status"] == "partial"
    c = report["counts"]
    assert (c["rows"], c["blank"], c["rejected"]) == (51, 1, 9)
    # One row says 0, which the store holds already: unchanged, not sent.
    assert (c["invalid"], c["refused"], c["accepted"], c["unchanged"]) == (8, 1, 41, 1)
    assert_report_matches_sandbox(report, requests)
    got = {r["row"]: (r["reason"], r["value"] if r["column"] == "SKU" else None)
           for r in report["rejected"]}
    assert {row: reason for row, (reason, _) in got.items()} == \
        {row: reason for row, (reason, _) in expected_rejected.items()}
    for rec in report["rejected"]:
        assert rec["message"]
        assert rec["column"] in header
    assert report["input"]["sheet"] == "Stock"

    fields, rejected = read_rejected_csv(result)
    assert fields == [*header, "row", "reason", "message"]
    by_row = {int(r["row"]): r for r in rejected}
    assert sorted(by_row) == sorted(expected_rejected)
    for row, (reason, sku) in expected_rejected.items():
        assert by_row[row]["reason"] == reason
        assert by_row[row]["SKU"] == sku
    assert by_row[9]["Quantity"] == "12.5"
    assert by_row[13]["Quantity"] == "-3"
    assert by_row[17]["Quantity"] == ""
    assert by_row[20]["Quantity"] == "lots"
    assert by_row[45]["Location ID"] == "3"


# ---- 9. rate limit -------------------------------------------------------------------------


def test_rate_limited_store_is_paced_not_hammered(sandbox_factory: Factory,
                                                  tmp_path: Path) -> None:
    sb = sandbox_factory("--quota", "5", "--window-ms", "1000")
    env = env_for(sb, tmp_path)
    expected = csv_levels(NIGHT1)

    result = run_invsync(["--log-format", "json", "sync", str(NIGHT1), "--batch-size", "200"],
                         env, timeout=60)

    assert result.returncode == 0, output(result)
    assert stocked(sb.levels()) == stocked(expected)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    requests = sb.requests()
    assert_well_formed_writes(requests, max_batch=200)
    statuses = Counter(r["status"] for r in requests)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[429] <= 2, statuses
    assert len(puts(sb)) - statuses[429] == sum(
        math.ceil(n / 200) for n in Counter(loc for loc, _ in expected).values())
    [finished] = [e for e in events if e["event"] == "run_finished"]
    report = json.loads((Path(finished["report_dir"]) / "report.json").read_text())
    assert report["status"] == "succeeded"
    assert report["counts"]["accepted"] == len(stocked(expected))
    assert_report_matches_sandbox(report, requests)
    # Paced by the store's headers, not sent in one burst: it read the quota from them and
    # waited for the next window (17+ requests at 5 a window), each wait at most a window.
    assert {(e["quota"], e["window_s"]) for e in events if e["event"] == "rate_limit"} \
        == {(5, 1.0)}
    waits = [e["wait_s"] for e in events if e["event"] == "rate_limit_wait"]
    assert waits and all(0 < w <= 1.0 + 0.5 for w in waits), waits


# ---- 10. wrong token -----------------------------------------------------------------------


def test_wrong_token_fails_clearly_and_never_shows_the_token(sandbox: SandboxProcess,
                                                             tmp_path: Path) -> None:
    bad_token = "wrong-tok-5e8a1f0c"  # distinctive, so a leak cannot hide among other words
    env = env_for(sandbox, tmp_path, token=bad_token)

    result = run_invsync(["sync", str(NIGHT1)], env)

    assert result.returncode == 2, output(result)
    text = output(result)
    assert "401" in text
    assert "access token" in text.lower()
    assert bad_token not in text
    assert TOKEN not in text
    requests = sandbox.requests()
    assert requests and all(r["status"] == 401 for r in requests)
    assert puts(sandbox) == []
    assert sandbox.levels() == {}
    report = result.report()
    assert report["status"] == "failed"
    assert report["exit_code"] == 2
    assert "401" in report["error"]
    for f in (tmp_path / "state").rglob("*"):
        if f.is_file():
            assert bad_token.encode() not in f.read_bytes(), f
    assert not snapshot_file(tmp_path).exists()

    quiet = run_invsync(["-q", "sync", str(NIGHT1)], env)
    assert quiet.returncode == 2
    # -q: only the summary line of the failed run on stdout, the error on stderr.
    assert quiet.stdout.startswith("invsync: failed run=") and " exit=2 " in quiet.stdout
    assert len(quiet.stdout.splitlines()) == 1 and bad_token not in quiet.stdout
    assert "401" in quiet.stderr and bad_token not in quiet.stderr


# ---- 11. a store that keeps failing --------------------------------------------------------


def test_store_that_keeps_failing_stops_within_bounded_time(sandbox_factory: Factory,
                                                            tmp_path: Path) -> None:
    sb = sandbox_factory("--error-rate", "1.0")
    env = env_for(sb, tmp_path)
    config = retry_config(tmp_path, max_attempts=3, max_total_s=3.0)

    result = run_invsync(["sync", str(NIGHT1), "--config", str(config)], env, timeout=60)

    assert result.returncode == 2, output(result)
    requests = sb.requests()
    assert 1 <= len(requests) <= 3  # max_attempts bounds the tries
    assert {r["status"] for r in requests} <= {500, 502, 503}
    assert sb.levels() == {}
    report = result.report()
    assert report["status"] == "failed"
    assert report["exit_code"] == 2
    assert "kept failing" in report["error"]
    assert "kept failing" in output(result)
    assert not snapshot_file(tmp_path).exists()


def test_write_refused_for_scope_stops_the_run(sandbox_factory: Factory, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only token: the locations load, the first write gets 403, the run stops."""
    ro_token = "read-only-tok-71c2d9"
    monkeypatch.setenv("INVSYNC_SANDBOX_READ_ONLY_TOKEN", ro_token)  # the sandbox inherits it
    sb = sandbox_factory()
    env = env_for(sb, tmp_path, token=ro_token)

    result = run_invsync(["sync", str(NIGHT1), "--batch-size", "500", "--concurrency", "1"],
                         env)

    assert result.returncode == 2, output(result)
    text = output(result)
    assert "403" in text and "scope" in text
    assert ro_token not in text
    requests = sb.requests()
    assert {r["status"] for r in requests if r["method"] == "GET"} == {200}
    assert [r["status"] for r in puts(sb)] == [403]  # no new batch after a fatal answer
    assert sb.levels() == {}
    report = result.report()
    assert report["status"] == "failed"
    assert report["exit_code"] == 2
    c = report["counts"]
    assert c["accepted"] == 0
    assert c["not_sent"] + c["unconfirmed"] == c["changed"] == len(stocked(csv_levels(NIGHT1)))
    assert_counts_add_up(c)
    statuses = [b["status"] for b in report["batches"]]
    assert statuses[0] == "failed" and set(statuses[1:]) == {"not_sent"}
    # A 403 on the first attempt applied nothing: the batch is not_sent, and the snapshot
    # learns nothing (no level, and no unknown level either: the store holds what it held).
    assert statuses[0] == "failed" and report["batches"][0]["not_applied"] == 500
    assert c["unconfirmed"] == 0
    assert not snapshot_file(tmp_path).exists()


def test_run_failing_mid_way_keeps_confirmed_batches_and_rerun_sends_the_rest(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    """Half the requests fail (seeded): with two tries per request the run dies after a few
    batches (exit 2); what the store confirmed is kept, and the next run sends the rest."""
    # Seed 19: the locations GET and the first three batches get through, then the fourth
    # fails twice in a row (the fault sequence is deterministic with --concurrency 1).
    sb = sandbox_factory("--error-rate", "0.5", "--seed", "19")
    env = env_for(sb, tmp_path)
    expected = csv_levels(NIGHT1)
    flags = ["--batch-size", "500", "--concurrency", "1"]

    first = run_invsync(["sync", str(NIGHT1), "--config",
                         str(retry_config(tmp_path, max_attempts=2)), *flags], env, timeout=60)

    assert first.returncode == 2, output(first)
    requests = sb.requests()
    assert_well_formed_writes(requests, max_batch=500)
    confirmed = {item_key(it): it["quantity"] for it in sent_items(puts(sb))}
    assert 0 < len(confirmed) < len(expected)
    assert stocked(sb.levels()) == stocked(confirmed)
    report = first.report()
    assert report["status"] == "failed"
    assert "kept failing" in report["error"]
    c = report["counts"]
    assert c["accepted"] == len(confirmed)
    assert_report_matches_sandbox(report, requests)
    failed = [b for b in report["batches"] if b["status"] == "failed"]
    assert len(failed) == 1
    assert c["unconfirmed"] == failed[0]["items"]
    assert c["not_sent"] == c["changed"] - len(confirmed) - failed[0]["items"] > 0

    sb.post("/_sandbox/reset")
    second = run_invsync(["sync", str(NIGHT1), "--config",
                          str(retry_config(tmp_path, max_attempts=10)), *flags], env, timeout=60)

    assert second.returncode == 0, output(second)
    resent = sent_items(puts(sb))
    # The rest: what the store does not hold yet (it holds 0 of some items already).
    rest = {k: q for k, q in stocked(expected).items() if k not in confirmed}
    assert {item_key(it): it["quantity"] for it in resent} == rest
    assert stocked(sb.levels()) == stocked(expected)
    c = second.report()["counts"]
    assert (c["unchanged"], c["accepted"]) == (len(expected) - len(rest), len(rest))


# ---- 12. usage and input errors ------------------------------------------------------------


def test_batch_size_above_the_store_limit_is_a_usage_error(sandbox: SandboxProcess,
                                                           cli_env: dict[str, str]) -> None:
    result = run_invsync(["sync", str(NIGHT1), "--batch-size", "5000"], cli_env)
    assert result.returncode == 64, output(result)
    assert "batch-size" in output(result)
    assert sandbox.requests() == []


@pytest.mark.parametrize("args", [["--batch-size", "0"], ["--concurrency", "0"],
                                  ["--duplicates", "maybe"], ["--no-such-flag"]])
def test_other_bad_flags_are_usage_errors(sandbox: SandboxProcess, cli_env: dict[str, str],
                                          args: list[str]) -> None:
    result = run_invsync(["sync", str(NIGHT1), *args], cli_env)
    assert result.returncode == 64, output(result)
    assert sandbox.requests() == []


def test_missing_file_is_an_input_error(sandbox: SandboxProcess, cli_env: dict[str, str],
                                        tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = run_invsync(["sync", str(missing)], cli_env)
    assert result.returncode == 66, output(result)  # EX_NOINPUT, not 65 (not a stock file)
    assert "nope.csv" in output(result)
    assert sandbox.requests() == []
    report = result.report()
    assert report["status"] == "failed"
    assert report["exit_code"] == 66


def test_csv_without_quantity_column_names_the_missing_column(sandbox: SandboxProcess,
                                                              cli_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    path = write_csv(tmp_path / "noqty.csv", ["sku", "location_id", "count_me"],
                     [["00123", "1", "5"], ["123", "1", "6"]])
    result = run_invsync(["sync", str(path)], cli_env)
    assert result.returncode == 65, output(result)
    assert re.search(r"missing required column\(s\):.*quantity", output(result)), output(result)
    assert puts(sandbox) == []
    assert sandbox.levels() == {}
    assert "quantity" in result.report()["error"]


def test_missing_token_for_a_real_run_is_a_usage_error(sandbox: SandboxProcess,
                                                       cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "BIGCOMMERCE_ACCESS_TOKEN"}
    result = run_invsync(["sync", str(NIGHT1)], env)
    assert result.returncode == 64, output(result)
    assert "BIGCOMMERCE_ACCESS_TOKEN" in output(result)
    assert sandbox.requests() == []


# ---- 13. a flaky store ---------------------------------------------------------------------


def test_flaky_store_with_5xx_and_bare_429s_ends_with_every_level_right(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    sb = sandbox_factory("--error-rate", "0.2", "--bare-429-rate", "0.1", "--seed", "7")
    env = env_for(sb, tmp_path)
    config = retry_config(tmp_path, max_attempts=10, base_delay_s=0.01, max_delay_s=0.1,
                          max_total_s=30.0)
    expected = csv_levels(NIGHT1)

    result = run_invsync(["sync", str(NIGHT1), "--config", str(config), "--batch-size", "100"],
                         env, timeout=90)

    assert result.returncode == 0, output(result)
    assert stocked(sb.levels()) == stocked(expected)
    requests = sb.requests()
    assert_well_formed_writes(requests, max_batch=100)
    statuses = Counter(r["status"] for r in requests)
    assert statuses[429] + statuses[500] + statuses[502] + statuses[503] > 0, statuses
    assert set(statuses) <= {200, 429, 500, 502, 503}, statuses
    report = result.report()
    assert report["status"] == "succeeded"
    c = report["counts"]
    in_stock = len(stocked(expected))
    assert (c["submitted"], c["accepted"], c["unconfirmed"]) == (in_stock, in_stock, 0)
    assert_report_matches_sandbox(report, requests)
    assert sb.stats()["item_overlaps"] == 0


def test_dropped_answers_are_retried_and_levels_end_right(sandbox_factory: Factory,
                                                          tmp_path: Path) -> None:
    sb = sandbox_factory("--drop-rate", "0.3", "--seed", "3")
    env = env_for(sb, tmp_path)
    config = retry_config(tmp_path, max_attempts=10, base_delay_s=0.01, max_delay_s=0.1,
                          max_total_s=30.0)
    expected = csv_levels(NIGHT1)

    result = run_invsync(["sync", str(NIGHT1), "--config", str(config), "--batch-size", "250"],
                         env, timeout=90)

    assert result.returncode == 0, output(result)
    assert stocked(sb.levels()) == stocked(expected)
    requests = sb.requests()
    assert any(r["dropped"] for r in requests)
    report = result.report()
    assert report["status"] == "succeeded"
    assert report["counts"]["accepted"] == len(stocked(expected))
    assert_report_matches_sandbox(report, requests)
