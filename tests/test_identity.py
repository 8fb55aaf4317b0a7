"""One item named two ways (SKU, variant id, product id) is one item: in a file and across runs.

Unit tests of :mod:`invsync.store.identity`, and the real CLI against a real sandbox process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import polars as pl
import pytest
from conftest import output as out
from conftest import run_invsync, state_store_dir, write_csv

from invsync.sandbox.process import SandboxProcess
from invsync.state.snapshot import SNAPSHOT_SCHEMA
from invsync.store.identity import (
    canonical_mapping,
    canonical_snapshot,
    ids_to_resolve,
    query_chunks,
)

# From sample_data/catalog.csv: a variant of a product tracked by variant, and a product
# tracked by product (its base variant is 1003).
VARIANT_SKU, VARIANT_ID, VARIANT_PRODUCT = "TOWEL-907-NAVY-SHEET", 1000, 100
PRODUCT_SKU, PRODUCT_ID, PRODUCT_BASE_VARIANT = "POSTER-1755", 101, 1003
ITEMS_PATH = "/stores/sandbox/v3/inventory/items"


# ---- unit -----------------------------------------------------------------------------------


def test_query_chunks_stay_short_and_cover_every_value() -> None:
    values = list(range(10**9, 10**9 + 1000))
    chunks = list(query_chunks(values, budget=200))
    assert len(chunks) > 1
    assert all(len(quote(c, safe="")) <= 200 for c in chunks)
    assert [int(v) for c in chunks for v in c.split(",")] == values
    assert list(query_chunks([])) == []


def identity(sku: str | None, vid: int, pid: int) -> dict[str, Any]:
    return {"sku": sku, "variant_id": vid, "product_id": pid, "sku_id": None}


def test_canonical_key_is_the_sku_else_the_variant_id() -> None:
    found = [identity("A", 10, 1), identity(None, 20, 2), identity("", 30, 3),
             identity("V1", 41, 4), identity("V2", 42, 4)]
    asked = {"variant_id": [10, 20, 30, 99], "product_id": [1, 2, 3, 4, 98]}
    mapping = canonical_mapping(found, asked)
    got = {(r["identifier"], r["item_key"]): (r["canon_identifier"], r["canon_key"])
           for r in mapping.to_dicts()}
    assert got == {
        ("variant_id", "10"): ("sku", "A"),
        ("product_id", "1"): ("sku", "A"),
        # no SKU: the variant id is the key (a product tracked by product: its base variant)
        ("product_id", "2"): ("variant_id", "20"),
        ("product_id", "3"): ("variant_id", "30"),
    }
    # variant 20/30 map onto themselves (nothing to move); unknown ids (99, 98) and a
    # product id carried by two items (4) keep their own key: they are absent.


def test_canonical_snapshot_merges_agreeing_entries_and_marks_conflicts_unknown() -> None:
    snap = pl.DataFrame([
        (1, "sku", "A", 5), (1, "variant_id", "10", 5),      # one item, same level
        (1, "sku", "B", 5), (1, "variant_id", "11", 7),      # one item, two levels
        (2, "variant_id", "10", 3),                          # another location
        (1, "sku", "C", 9),
    ], schema=list(SNAPSHOT_SCHEMA), orient="row")
    mapping = canonical_mapping([identity("A", 10, 1), identity("B", 11, 2)],
                                {"variant_id": [10, 11]})
    canon, moved, conflicts = canonical_snapshot(snap, mapping)
    assert (moved, conflicts) == (3, 1)
    # B's two levels disagree: the item stays, with an unknown (null) level.
    assert sorted(canon.rows(), key=str) == sorted(
        [(1, "sku", "A", 5), (1, "sku", "B", None), (1, "sku", "C", 9), (2, "sku", "A", 3)],
        key=str)
    unchanged, moved, conflicts = canonical_snapshot(snap, mapping.clear())
    assert (moved, conflicts) == (0, 0) and unchanged.equals(snap)


def test_ids_to_resolve_ignores_skus() -> None:
    keys = pl.DataFrame({"identifier": ["sku", "variant_id", "product_id", "variant_id"],
                         "item_key": ["7", "10", "3", "10"]})
    assert ids_to_resolve(keys) == {"variant_id": [10], "product_id": [3]}


# ---- the real CLI against a real sandbox ----------------------------------------------------


def mixed_file(path: Path, first: tuple[str, str, int], second: tuple[str, str, int]) -> Path:
    """Row 2 and row 3 naming items by (kind, value, quantity)."""
    header = ["sku", "variant_id", "product_id", "quantity"]
    rows = []
    for kind, value, qty in (first, second):
        row: list[Any] = ["", "", "", qty]
        row[header.index(kind)] = value
        rows.append(row)
    return write_csv(path, header, rows)


def puts(sb: SandboxProcess) -> list[dict[str, Any]]:
    return [r for r in sb.requests() if r["method"] == "PUT"]


def snapshot(tmp_path: Path) -> list[tuple[Any, ...]]:
    path = state_store_dir(tmp_path / "state") / "snapshot.parquet"
    return sorted(pl.read_parquet(path).rows()) if path.exists() else []


def test_sku_and_variant_id_of_one_item_are_duplicates_by_default(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = mixed_file(tmp_path / "mixed.csv", ("sku", VARIANT_SKU, 5),
                      ("variant_id", str(VARIANT_ID), 7))
    result = run_invsync(["sync", str(path)], cli_env)
    assert result.returncode == 1, out(result)
    report = result.report()
    rejected = report["rejected"]
    assert [(r["row"], r["reason"]) for r in rejected] == [(2, "duplicate_item"),
                                                           (3, "duplicate_item")]
    assert all("2" in r["message"] and "3" in r["message"] for r in rejected)
    # Each row is blamed on its own column and value.
    assert [(r["column"], r["value"]) for r in rejected] == [("sku", VARIANT_SKU),
                                                            ("variant_id", str(VARIANT_ID))]
    assert puts(sandbox) == []
    assert sandbox.levels() == {}
    gets = [r for r in sandbox.requests() if r["path"] == ITEMS_PATH]
    assert [r["query"] for r in gets] == [f"variant_id%3Ain={VARIANT_ID}&page=1&limit=1000"]


@pytest.mark.parametrize(("policy", "expected"), [("sum", 12), ("last", 7)])
def test_sku_and_variant_id_of_one_item_merge_into_one_request_item(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        policy: str, expected: int) -> None:
    path = mixed_file(tmp_path / "mixed.csv", ("sku", VARIANT_SKU, 5),
                      ("variant_id", str(VARIANT_ID), 7))
    result = run_invsync(["sync", str(path), "--duplicates", policy], cli_env)
    assert result.returncode == 0, out(result)
    items = [it for r in puts(sandbox) for it in r["items"]]
    # Exactly one item went out, named as its first row named it.
    assert items == [{"location_id": 1, "sku": VARIANT_SKU, "quantity": expected}]
    assert sandbox.levels() == {(1, VARIANT_SKU): expected}
    assert snapshot(tmp_path) == [(1, "sku", VARIANT_SKU, expected)]
    counts = result.report()["counts"]
    assert (counts["valid"], counts["merged"], counts["accepted"]) == (2, 1, 1)


def test_product_id_and_sku_of_a_product_tracked_item_are_one_item(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = mixed_file(tmp_path / "mixed.csv", ("product_id", str(PRODUCT_ID), 4),
                      ("sku", PRODUCT_SKU, 9))
    result = run_invsync(["sync", str(path), "--duplicates", "last"], cli_env)
    assert result.returncode == 0, out(result)
    # Sent by product id, as row 2 named it (the store accepts a product-tracked item so).
    assert [it for r in puts(sandbox) for it in r["items"]] == [
        {"location_id": 1, "product_id": PRODUCT_ID, "quantity": 9}]
    assert sandbox.levels() == {(1, PRODUCT_SKU): 9}
    assert snapshot(tmp_path) == [(1, "sku", PRODUCT_SKU, 9)]
    plan = (result.report_dir() / "plan.csv").read_text().splitlines()
    # Planned against the store's live level: it held none of the item (0), read at read_at.
    line, read_at = plan[1].rsplit(",", 1)
    assert line == f"1,product_id,{PRODUCT_ID},0,9,9,2,accepted"
    assert plan[0].endswith(",read_at") and read_at.startswith("20"), plan


@pytest.mark.parametrize(("night1", "night2"), [
    (("sku", VARIANT_SKU), ("variant_id", str(VARIANT_ID))),
    (("variant_id", str(VARIANT_ID)), ("sku", VARIANT_SKU)),
    (("product_id", str(PRODUCT_ID)), ("sku", PRODUCT_SKU)),
])
def test_a_later_night_keyed_the_other_way_is_unchanged(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        night1: tuple[str, str], night2: tuple[str, str]) -> None:
    other = write_csv(tmp_path / "other.csv", ["sku", "quantity"], [["NB-8084", 3]])
    header = ["sku", "variant_id", "product_id", "quantity"]

    def night(name: str, kind: str, value: str, qty: int) -> Path:
        row: list[Any] = ["", "", "", qty]
        row[header.index(kind)] = value
        return write_csv(tmp_path / name, header, [row, ["NB-8084", "", "", 3]])

    first = run_invsync(["sync", str(night("n1.csv", *night1, 6))], cli_env)
    assert first.returncode == 0, out(first)
    assert len(snapshot(tmp_path)) == 2
    before = len(puts(sandbox))

    second = run_invsync(["sync", str(night("n2.csv", *night2, 6))], cli_env)
    assert second.returncode == 0, out(second)
    counts = second.report()["counts"]
    assert (counts["unchanged"], counts["changed"], counts["submitted"]) == (2, 0, 0)
    assert len(puts(sandbox)) == before
    # One entry per item, keyed by the item's SKU.
    sku = VARIANT_SKU if VARIANT_SKU in (night1[1], night2[1]) else PRODUCT_SKU
    assert snapshot(tmp_path) == [(1, "sku", "NB-8084", 3), (1, "sku", sku, 6)]

    # --zero-missing sees the item once: one 0 goes out for it, named by its SKU.
    third = run_invsync(["sync", str(other), "--zero-missing", "--allow-zeroing"], cli_env)
    assert third.returncode == 0, out(third)
    assert [it for r in puts(sandbox)[before:] for it in r["items"]] == [
        {"location_id": 1, "sku": sku, "quantity": 0}]
    assert snapshot(tmp_path) == [(1, "sku", "NB-8084", 3), (1, "sku", sku, 0)]


def test_a_snapshot_holding_one_item_twice_is_repaired(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # What the old behaviour left behind: the item under its SKU and its variant id, with
    # different levels. Its level is unknown: it is sent again and stored once.
    folder = state_store_dir(tmp_path / "state", api_url=sandbox.url)
    folder.mkdir(parents=True)
    pl.DataFrame([(1, "sku", VARIANT_SKU, 5), (1, "variant_id", str(VARIANT_ID), 7)],
                 schema=list(SNAPSHOT_SCHEMA), orient="row").write_parquet(
        folder / "snapshot.parquet")
    path = write_csv(tmp_path / "n.csv", ["sku", "quantity"], [[VARIANT_SKU, 5]])
    result = run_invsync(["sync", str(path), "--allow-shrink"], cli_env)
    assert result.returncode == 0, out(result)
    assert any("different levels" in n for n in result.report()["notes"])
    assert [it for r in puts(sandbox) for it in r["items"]] == [
        {"location_id": 1, "sku": VARIANT_SKU, "quantity": 5}]
    assert snapshot(tmp_path) == [(1, "sku", VARIANT_SKU, 5)]


def test_without_a_token_mixed_identifiers_are_noted_not_resolved(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = mixed_file(tmp_path / "mixed.csv", ("sku", VARIANT_SKU, 5),
                      ("variant_id", str(VARIANT_ID), 7))
    env = {k: v for k, v in cli_env.items() if k != "BIGCOMMERCE_ACCESS_TOKEN"}
    result = run_invsync(["plan", str(path)], env)
    assert result.returncode == 0, out(result)
    notes = result.report()["notes"]
    assert any("sku and variant_id" in n and "could not be resolved" in n for n in notes), notes
    assert sandbox.requests() == []

    # With a token, the dry run resolves them (reads only) and finds the duplicate.
    dry = run_invsync(["sync", str(path), "--dry-run"], cli_env)
    assert dry.returncode == 1, out(dry)
    assert dry.report()["rejected_by_reason"] == {"duplicate_item": 2}
    assert puts(sandbox) == []
    assert not (tmp_path / "state" / "invsync" / "sandbox" / "snapshot.parquet").exists()


def test_a_file_of_one_kind_with_a_snapshot_of_the_same_kind_reads_no_identities(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "n.csv", ["sku", "quantity"], [[VARIANT_SKU, 5]])
    # Against the snapshot, nothing is read from the store at all.
    for _ in range(2):
        assert run_invsync(["sync", str(path), "--baseline", "snapshot"],
                           cli_env).returncode == 0
    assert [r for r in sandbox.requests() if r["path"] == ITEMS_PATH] == []
    # Against the live levels (the default), the store is read for levels, by SKU or by
    # location, but never for identities (no variant_id:in / product_id:in filter).
    assert run_invsync(["sync", str(path)], cli_env).returncode == 0
    reads = [r["query"] for r in sandbox.requests() if r["path"] == ITEMS_PATH]
    assert reads, "the live levels were not read"
    assert not [q for q in reads if "variant_id" in q or "product_id" in q], reads


def test_drift_of_a_file_keyed_the_other_way_checks_its_items(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    by_sku = write_csv(tmp_path / "a.csv", ["sku", "quantity"], [[VARIANT_SKU, 4]])
    by_variant = write_csv(tmp_path / "b.csv", ["variant_id", "quantity"], [[VARIANT_ID, 4]])
    assert run_invsync(["sync", str(by_sku)], cli_env).returncode == 0
    drift = run_invsync(["drift", str(by_variant)], cli_env)
    assert drift.returncode == 0, out(drift)
    assert "1 items checked, 1 match, 0 differ" in drift.stdout


def test_a_plan_keyed_the_other_way_is_pushed_against_the_same_snapshot_entry(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    by_sku = write_csv(tmp_path / "a.csv", ["sku", "quantity"], [[VARIANT_SKU, 6]])
    by_variant = write_csv(tmp_path / "b.csv", ["variant_id", "quantity"], [[VARIANT_ID, 8]])
    assert run_invsync(["sync", str(by_sku)], cli_env).returncode == 0
    planned = run_invsync(["plan", str(by_variant)], cli_env)
    assert planned.returncode == 0, out(planned)
    plan_csv = planned.report_dir() / "plan.csv"
    line, read_at = plan_csv.read_text().splitlines()[1].rsplit(",", 1)
    assert line == f"1,variant_id,{VARIANT_ID},6,8,2,2,planned"
    assert read_at.startswith("20")
    before = len(puts(sandbox))
    pushed = run_invsync(["sync", "--plan-file", str(plan_csv)], cli_env)
    assert pushed.returncode == 0, out(pushed)
    assert [it for r in puts(sandbox)[before:] for it in r["items"]] == [
        {"location_id": 1, "variant_id": VARIANT_ID, "quantity": 8}]
    assert snapshot(tmp_path) == [(1, "sku", VARIANT_SKU, 8)]


def test_the_resolver_asks_exactly_when_kinds_meet_at_the_files_locations() -> None:
    # Seeded: files and snapshots of one or more kinds at overlapping or separate locations.
    # The store is asked (and notes written) exactly when the file names two kinds, or the
    # snapshot names another kind at one of the file's locations (the plain definition).
    import random

    import polars as pl

    from invsync.store.identity import IdentityResolver

    rng = random.Random(1426)
    kinds = ["sku", "variant_id", "product_id"]

    def keys(n: int, places: list[int], kinds_here: list[str]) -> pl.DataFrame:
        rows = [(rng.choice(places), kind, rng.choice(["A", "B"]) if kind == "sku"
                 else str(rng.randrange(1, 9)))
                for kind in (rng.choice(kinds_here) for _ in range(n))]
        return pl.DataFrame(rows, schema={"location_id": pl.Int64, "identifier": pl.String,
                                          "item_key": pl.String}, orient="row")

    asked: list[dict[str, list[int]]] = []

    def fetch(ids: dict[str, list[int]]) -> tuple[list[dict[str, object]], int]:
        asked.append(ids)
        return [], 1

    for _ in range(200):
        asked.clear()
        file = keys(rng.randrange(1, 6), rng.sample([1, 2, 3], rng.randrange(1, 3)),
                    rng.sample(kinds, rng.randrange(1, 3)))
        snapshot = keys(rng.randrange(0, 6), rng.sample([1, 2, 3, 4], rng.randrange(1, 3)),
                        rng.sample(kinds, rng.randrange(1, 4))).with_columns(
            quantity=pl.lit(1, pl.Int64))
        file_kinds = set(file["identifier"])
        here = set(snapshot.filter(pl.col("location_id").is_in(file["location_id"].implode()))
                   ["identifier"])
        meet = len(file_kinds) > 1 or bool(here - file_kinds)
        with_ids = bool((file_kinds | here) & {"variant_id", "product_id"})
        resolver = IdentityResolver(snapshot, fetch)
        resolver(file)
        assert bool(asked) == (meet and with_ids), (file.rows(), snapshot.rows())
        assert bool(resolver.notes) == (meet and with_ids)
        offline = IdentityResolver(snapshot, None)
        offline(file)
        assert bool(offline.notes) == meet
