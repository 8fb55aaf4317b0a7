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


def test_a_share_just_over_the_limit_is_shown_over_it() -> None:
    # 301 of 1,000 rounds to "30%": the message must not read as if 30% tripped a 30% limit.
    store = {(1, f"S{i:04d}"): 5 for i in range(1000)}
    file = {k: 0 for i, (k, _) in enumerate(store.items()) if i < 301}
    message = brakes(file, held(store), last_rows=None, zero_missing=False)["mass_zeroing"]
    assert "(30.1%) would drop to 0, more than the 30% allowed" in message


# ---- how the brake finds the held levels (the diff's own, a lookup, a first count) ---------


def _brake_with(file: dict[tuple[int, str], int], store: pl.DataFrame, *,
                held_frame: pl.DataFrame, full: bool = False) -> list[str]:
    valid = item_frame([(loc, "sku", sku, qty) for (loc, sku), qty in file.items()])
    changes = compute_changes(valid, None if full else store)
    return [b.message for b in check_brakes(
        rows=len(file), last_rows=None, changes=changes, held=held_frame,
        limits=BrakeLimits(), zero_missing=False)]


def _reference(file: dict[tuple[int, str], int], levels: dict[tuple[int, str], int | None],
               max_share: float = 0.3) -> bool:
    """The brake's rule in plain Python: per location, items going from stock (or an unknown
    level) to 0, against the items holding stock (or of unknown level)."""
    for loc in sorted({loc for loc, _ in levels}):
        stocked = [k for k, q in levels.items() if k[0] == loc and (q is None or q > 0)]
        drops = [k for k in stocked if file.get(k) == 0]
        if stocked and len(drops) > max_share * len(stocked):
            return True
    return False


@pytest.mark.parametrize("seed", range(12))
def test_the_diffs_levels_a_lookup_and_the_rule_agree(seed: int) -> None:
    import random

    rng = random.Random(seed)
    levels: dict[tuple[int, str], int | None] = {}
    for i in range(rng.randint(1, 60)):
        levels[(rng.choice([1, 2]), f"S{i:03d}")] = rng.choice([None, 0, 0, 3, 5, 9])
    file = {k: rng.choice([0, 0, 1, 2 if q is None else q]) for k, q in levels.items()
            if rng.random() < 0.8}
    file.update({(rng.choice([1, 2]), f"NEW{i}"): 0 for i in range(rng.randint(0, 5))})
    store = held(levels)
    expected = _reference(file, levels)
    # The very frame the diff compared with (its levels reused), a copy of it (looked up
    # again), and --full (no diff baseline: looked up).
    for held_frame, full in ((store, False), (store.clone(), False), (store, True)):
        assert bool(_brake_with(file, store, held_frame=held_frame, full=full)) == expected, (
            seed, full, held_frame is store)


def test_an_unknown_level_zeroed_counts_and_a_new_item_zeroed_does_not() -> None:
    store = held({(1, "A"): None, (1, "B"): 5, (1, "C"): 5})
    # A (unknown level) and a new item set to 0: 1 of 3 (33%) would drop, over 30%.
    assert _brake_with({(1, "A"): 0, (1, "NEW"): 0}, store, held_frame=store) != []
    # The new items alone drop nothing.
    assert _brake_with({(1, "NEW"): 0, (1, "NEW2"): 0}, store, held_frame=store) == []


def test_a_large_store_is_counted_whole_when_a_sample_does_not_settle_it() -> None:
    # 70,000 items at location 1 first, then 100 at location 2: zeroing 40 of location 2's
    # must trip even though the rows counted first hold only half of location 2's items.
    levels: dict[tuple[int, str], int | None] = {(1, f"S{i:05d}"): 5 for i in range(70_000)}
    levels.update({(2, f"T{i:03d}"): 5 for i in range(100)})
    store = held(levels)
    file = {(2, f"T{i:03d}"): 0 for i in range(40)}
    assert _brake_with(file, store, held_frame=store) == [
        "40 of the 100 items holding stock at location 2 (40%) would drop to 0, more than "
        "the 30% allowed; pass --allow-zeroing to sync anyway"]
    # At location 1, 40 zeros are far under 30% of the ~35,000 rows counted first: no full
    # count is needed, and nothing trips.
    file = {(1, f"S{i:05d}"): 0 for i in range(40)}
    assert _brake_with(file, store, held_frame=store) == []


def test_a_lookup_whose_hashes_all_collide_still_finds_only_the_zeroed_items(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.run import brakes as brakes_module

    monkeypatch.setattr(brakes_module, "key_hashes",
                        lambda frame: pl.repeat(7, frame.height, dtype=pl.UInt64, eager=True))
    store = held({(1, f"S{i:03d}"): 5 for i in range(10)})
    # 3 of 10 zeroed is 30%: allowed; 4 is not. A copy of the store: looked up, not reused.
    assert _brake_with({(1, f"S{i:03d}"): 0 for i in range(3)}, store,
                       held_frame=store.clone()) == []
    assert _brake_with({(1, f"S{i:03d}"): 0 for i in range(4)}, store,
                       held_frame=store.clone()) != []
