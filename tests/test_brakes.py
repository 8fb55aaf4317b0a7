"""Unit tests of the safety brakes (pipeline/brakes.py): exact boundaries and histories."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import item_frame

from invsync.run.brakes import BrakeLimits, check_brakes, comparable_rows, record_rows
from invsync.stages.diff import compute_changes
from invsync.state.snapshot import SNAPSHOT_SCHEMA


def held(levels: dict[tuple[int, str], int | None]) -> pl.DataFrame:
    """What the store holds: (location, sku) -> level (None: unknown)."""
    return pl.DataFrame([{"location_id": loc, "identifier": "sku", "item_key": sku,
                          "quantity": qty} for (loc, sku), qty in levels.items()],
                        schema=SNAPSHOT_SCHEMA)


def names(file: dict[tuple[int, str], int], store: pl.DataFrame, *, rows: int | None = None,
          last_rows: int | None = None, zero_missing: bool = False, full: bool = False,
          limits: BrakeLimits | None = None) -> list[str]:
    valid = item_frame([(loc, "sku", sku, qty) for (loc, sku), qty in file.items()])
    changes = compute_changes(valid, None if full else store)
    return [b.name for b in check_brakes(
        rows=len(file) if rows is None else rows, last_rows=last_rows, changes=changes,
        held=store, limits=limits or BrakeLimits(), zero_missing=zero_missing)]


def catalog(n: int, qty: int = 5) -> dict[tuple[int, str], int]:
    return {(1, f"S{i:04d}"): qty for i in range(n)}


# ---- mass zeroing --------------------------------------------------------------------------


@pytest.mark.parametrize(("zeroed", "tripped"), [(30, False), (31, True)])
def test_mass_zeroing_trips_above_exactly_30_percent(zeroed: int, tripped: bool) -> None:
    store = catalog(100)
    file = {k: (0 if i < zeroed else v) for i, (k, v) in enumerate(store.items())}
    assert names(file, held(store)) == (["mass_zeroing"] if tripped else [])


@pytest.mark.parametrize("full", [False, True])
def test_a_baseline_of_all_ones_zeroed_trips_with_and_without_full(full: bool) -> None:
    store = catalog(300, qty=1)
    assert names(dict.fromkeys(store, 0), held(store), full=full) == ["mass_zeroing"]
    assert names(dict.fromkeys(store, 0), held(store), full=full,
                 limits=BrakeLimits(allow_zeroing=True)) == []


@pytest.mark.parametrize("items", [0, 1, 2])
def test_the_smallest_stores_brake_too_and_an_empty_one_cannot(items: int) -> None:
    # One item held and zeroed is 100% of the location; nothing held, nothing can drop.
    store = catalog(items)
    file = dict.fromkeys(store, 0) or {(1, "NEW"): 0}
    assert names(file, held(store)) == (["mass_zeroing"] if items else [])


def test_items_already_at_zero_are_no_drop() -> None:
    store = catalog(100, qty=0)
    assert names(dict.fromkeys(store, 0), held(store), full=True) == []


def test_unknown_levels_count_in_the_denominator_and_as_drops() -> None:
    # 70 known at 5, 30 unknown; zeroing the 30 unknown: 30 of 100 (not above 30%).
    store: dict[tuple[int, str], int | None] = {**catalog(70),
                                                 **{(1, f"U{i}"): None for i in range(30)}}
    unknown = [k for k, v in store.items() if v is None]
    assert names(dict.fromkeys(unknown, 0), held(store), full=True) == []
    # One more (a known one) tips it over: an unknown level may hold stock.
    one_known = next(k for k, v in store.items() if v is not None)
    file = dict.fromkeys([*unknown, one_known], 0)
    assert names(file, held(store), full=True) == ["mass_zeroing"]


def test_mass_zeroing_is_per_location() -> None:
    # Location 2 holds 10 items, all zeroed: tripped although 10 of 110 overall.
    store = catalog(100) | {(2, f"S{i:04d}"): 5 for i in range(10)}
    file = {(2, f"S{i:04d}"): 0 for i in range(10)}
    assert names(file, held(store)) == ["mass_zeroing"]


def test_new_items_at_zero_are_no_drop() -> None:
    store = catalog(10)
    file = {(1, f"NEW{i}"): 0 for i in range(50)}
    assert names(file, held(store)) == []


# ---- shrunken file ----------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "tripped"), [(150, False), (149, True)])
def test_shrunken_file_trips_under_exactly_half_with_zero_missing(rows: int,
                                                                    tripped: bool) -> None:
    assert names({}, held({}), rows=rows, last_rows=300, zero_missing=True) == (
        ["shrunken_file"] if tripped else [])


def test_one_row_after_a_300_row_run() -> None:
    store = catalog(300)
    one = {(1, "S0000"): 6}
    # Another source (a correction file: no history of its own): no brake.
    assert names(one, held(store), last_rows=None) == []
    # The same source shrunk from 300 rows to 1: a truncated export, with or without
    # --zero-missing (issue 22: the brake follows the source, not the flag).
    assert names(one, held(store), last_rows=300) == ["shrunken_file"]
    assert names(one, held(store), last_rows=300, zero_missing=True) == ["shrunken_file"]
    assert names(one, held(store), last_rows=300, zero_missing=True,
                 limits=BrakeLimits(allow_shrink=True)) == []


def test_empty_file_brake() -> None:
    assert names({}, held({}), rows=0, last_rows=300, zero_missing=True) == ["empty_file"]
    assert names({}, held({}), rows=0, limits=BrakeLimits(allow_empty=True)) == []


def test_rows_are_compared_per_source_with_the_last_successful_run() -> None:
    from invsync.state.history import source_key

    nightly, correction = source_key("cli", "/srv/stock.csv"), source_key("cli", "/tmp/fix.csv")
    meta = record_rows({}, nightly, 6000, zero_missing=True)
    meta = record_rows(meta, correction, 20, zero_missing=False)  # another file
    meta = record_rows(meta, source_key("portal", "/x/upload.csv"), 15, zero_missing=False)
    assert comparable_rows(meta, nightly) == 6000
    assert comparable_rows(meta, correction) == 20
    assert comparable_rows(meta, source_key("portal", "/y/other.csv")) == 15  # a named source
    assert comparable_rows(meta, source_key("cli", "/srv/other.csv")) is None
    # The last successful run, --zero-missing or not.
    assert comparable_rows(record_rows(meta, nightly, 5000, zero_missing=False), nightly) == 5000
    # A relative and an absolute path to one file are one source.
    assert source_key("cli", "stock.csv") == source_key(None, str(Path("stock.csv").absolute()))


# ---- messages ---------------------------------------------------------------------------


def brakes(file: dict[tuple[int, str], int], store: pl.DataFrame, **kw: object) -> dict[str, str]:
    valid = item_frame([(loc, "sku", sku, qty) for (loc, sku), qty in file.items()])
    rows = kw.pop("rows", len(file))
    return {b.name: b.message for b in check_brakes(
        rows=rows, changes=compute_changes(valid, store), held=store,  # type: ignore[arg-type]
        limits=BrakeLimits(), **kw)}  # type: ignore[arg-type]


def test_each_brake_says_what_it_saw_and_how_to_override_it() -> None:
    assert brakes({}, held({}), rows=0, last_rows=None, zero_missing=False) == {
        "empty_file": "the file has no data rows; pass --allow-empty if that is really meant"}
    assert brakes({}, held({}), rows=1234, last_rows=5000, zero_missing=True) == {
        "shrunken_file": "the file has 1,234 rows, under 50% of the 5,000 of the last "
                         "successful run from the same source, and --zero-missing would zero "
                         "what it leaves out (a truncated export?); pass --allow-shrink to "
                         "sync it anyway"}
    store = {(7, f"S{i:04d}"): 5 for i in range(2000)}
    file = {k: 0 for i, (k, _) in enumerate(store.items()) if i < 1500}
    assert brakes(file, held(store), last_rows=None, zero_missing=False) == {
        "mass_zeroing": "1,500 of the 2,000 items holding stock at location 7 (75%) would "
                        "drop to 0, more than the 30% allowed; pass --allow-zeroing to sync "
                        "anyway"}
