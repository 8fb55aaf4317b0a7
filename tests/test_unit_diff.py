"""Unit tests of stage 3, the diff (invsync.stages.diff): every path of the hash join.

The join hashes the key and compares the real keys afterwards; the collision branch is
forced here by making every key hash alike, so a wrong match can never be taken for a level.
"""

from __future__ import annotations

import polars as pl
import pytest
from conftest import item_frame

from invsync.stages import diff
from invsync.stages.diff import ChangeSet, compute_changes
from invsync.stages.ingest import ROW
from invsync.stages.validate import VALID_COLUMNS
from invsync.tables import SNAPSHOT_SCHEMA


def valid_frame(items: list[tuple[int, str, str, int]]) -> pl.DataFrame:
    return item_frame(items).select(VALID_COLUMNS)


def baseline(items: list[tuple[int, str, str, int | None]]) -> pl.DataFrame:
    return pl.DataFrame(items, schema=SNAPSHOT_SCHEMA, orient="row")


def summary(cs: ChangeSet) -> list[tuple[object, ...]]:
    return cs.changes.select(ROW, "location_id", "identifier", "item_key", "quantity",
                             "old_quantity").rows()


FILE = [(1, "sku", "A", 5), (1, "sku", "B", 7), (1, "sku", "C", 0), (2, "sku", "A", 5),
        (1, "variant_id", "77", 3), (1, "sku", "77", 3), (1, "sku", "D", 1)]
BASE = [(1, "sku", "A", 5), (1, "sku", "B", 6), (1, "sku", "C", 0), (1, "variant_id", "77", 3),
        (1, "sku", "Z", 9), (2, "sku", "B", 7), (1, "sku", "D", None)]
EXPECTED = [(3, 1, "sku", "B", 7, 6), (5, 2, "sku", "A", 5, None),
            (7, 1, "sku", "77", 3, None), (8, 1, "sku", "D", 1, None)]


def test_the_change_set() -> None:
    cs = compute_changes(valid_frame(FILE), baseline(BASE))
    assert summary(cs) == EXPECTED
    assert cs.changes.columns == [*VALID_COLUMNS, "old_quantity"]
    assert (cs.changed, cs.new, cs.unchanged, cs.baseline, cs.zeroed_missing) == (
        4, 3, 3, "snapshot", 0)


def test_an_unknown_level_is_always_sent() -> None:
    # The store may or may not have applied an unconfirmed write: send the file's level.
    cs = compute_changes(valid_frame([(1, "sku", "D", 0)]), baseline([(1, "sku", "D", None)]))
    assert summary(cs) == [(2, 1, "sku", "D", 0, None)]
    assert cs.unchanged == 0


def test_the_baseline_name_is_kept() -> None:
    cs = compute_changes(valid_frame(FILE), baseline(BASE), baseline_name="live")
    assert cs.baseline == "live"


def test_no_baseline_sends_everything_in_file_order() -> None:
    cs = compute_changes(valid_frame(FILE), None)
    assert cs.baseline == "none" and cs.unchanged == 0
    assert cs.changes.schema["old_quantity"] == pl.Int64
    assert cs.changes[ROW].to_list() == list(range(2, 9))
    assert cs.changed == cs.new == len(FILE)


def test_a_baseline_with_another_int_width() -> None:
    base = baseline(BASE).cast({"location_id": pl.Int32, "quantity": pl.Int32})
    assert summary(compute_changes(valid_frame(FILE), base)) == EXPECTED


def test_rows_without_a_file_row_come_last() -> None:
    # --zero-missing adds rows with a null row number: they follow the file's rows.
    valid = valid_frame([(1, "sku", "A", 1), (1, "sku", "B", 2), (1, "sku", "C", 3)])
    valid = valid.with_columns(pl.when(pl.col("item_key") == "A").then(None)
                               .otherwise(pl.col(ROW)).alias(ROW))
    cs = compute_changes(valid, baseline([]))
    assert cs.changes[ROW].to_list() == [3, 4, None]
    valid = valid.reverse()
    assert compute_changes(valid, baseline([])).changes[ROW].to_list() == [3, 4, None]


@pytest.fixture
def colliding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every key hashes to one value: the join must still match real keys only."""
    monkeypatch.setattr(diff, "key_hashes",
                        lambda frame: pl.repeat(7, frame.height, dtype=pl.UInt64, eager=True))


@pytest.mark.usefixtures("colliding")
def test_a_hash_collision_never_matches_another_item() -> None:
    cs = compute_changes(valid_frame(FILE), baseline(BASE))
    assert summary(cs) == EXPECTED
    assert cs.unchanged == 3
    assert cs.changes.columns == [*VALID_COLUMNS, "old_quantity"]


@pytest.mark.usefixtures("colliding")
def test_a_collision_with_an_unknown_level() -> None:
    # The true match has an unknown level, the colliding one a level equal to the file's:
    # the item must be sent, not taken as unchanged.
    cs = compute_changes(valid_frame([(1, "sku", "D", 4)]),
                         baseline([(1, "sku", "D", None), (1, "sku", "E", 4)]))
    assert summary(cs) == [(2, 1, "sku", "D", 4, None)]
    # And the other way round: a true match at the file's level is unchanged.
    cs = compute_changes(valid_frame([(1, "sku", "E", 4)]),
                         baseline([(1, "sku", "D", None), (1, "sku", "E", 4)]))
    assert cs.changed == 0 and cs.unchanged == 1


@pytest.mark.usefixtures("colliding")
def test_a_collision_in_an_item_new_to_the_baseline() -> None:
    cs = compute_changes(valid_frame([(1, "sku", "N", 4), (1, "sku", "M", 2)]),
                         baseline([(1, "sku", "X", 4), (1, "sku", "Y", 2)]))
    assert summary(cs) == [(2, 1, "sku", "N", 4, None), (3, 1, "sku", "M", 2, None)]
    assert (cs.new, cs.unchanged) == (2, 0)


def test_a_partial_collision(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only some keys collide (hash = the key's length): the others join normally.
    monkeypatch.setattr(diff, "key_hashes",
                        lambda frame: frame["item_key"].str.len_bytes().cast(pl.UInt64))
    cs = compute_changes(valid_frame([(1, "sku", "AA", 1), (1, "sku", "B", 2),
                                      (1, "sku", "CCC", 3)]),
                         baseline([(1, "sku", "AA", 1), (1, "sku", "ZZ", 1), (1, "sku", "B", 5),
                                   (1, "sku", "CCC", 3)]))
    assert summary(cs) == [(3, 1, "sku", "B", 2, 5)]
    assert cs.unchanged == 2


def test_the_duplicate_checks_hashes_are_reused_only_for_their_own_frame() -> None:
    from dataclasses import replace

    from invsync.stages.ingest import read_stock_bytes
    from invsync.stages.validate import validate

    checked = validate(read_stock_bytes(b"sku,location_id,quantity\nA,1,1\nB,1,2\nC,2,0\n"))
    hashes = checked.hashes_of(checked.valid)
    assert hashes is not None and hashes.len() == 3
    base = baseline([(1, "sku", "A", 1), (1, "sku", "B", 5), (2, "sku", "C", 4)])
    reused = compute_changes(checked.valid, base, hashes=hashes)
    assert summary(reused) == summary(compute_changes(checked.valid, base))
    assert summary(reused) == [(3, 1, "sku", "B", 2, 5), (4, 2, "sku", "C", 0, 4)]
    # A copy of the result with other valid rows (as --as-of makes) has no hashes to reuse.
    other = replace(checked, valid=checked.valid.reverse())
    assert other.hashes_of(other.valid) is None
    # A file with a rejected row: the valid rows are not those hashed.
    rejected = validate(read_stock_bytes(b"sku,location_id,quantity\nA,1,1\nB,1,x\n"))
    assert rejected.hashes_of(rejected.valid) is None


def _plain_changes(valid: pl.DataFrame, base: pl.DataFrame) -> list[tuple[object, ...]]:
    """The diff as a plain join on the real keys would make it (the reference)."""
    keys = ["location_id", "identifier", "item_key"]
    joined = valid.join(base.select(*keys, pl.col("quantity").alias("old_quantity")),
                        on=keys, how="left", nulls_equal=False)
    changed = joined.filter(pl.col("old_quantity").is_null()
                            | (pl.col("old_quantity") != pl.col("quantity")))
    return changed.sort(ROW).select(ROW, *keys, "quantity", "old_quantity").rows()


@pytest.mark.parametrize("narrow", [False, True])
@pytest.mark.parametrize("buckets", [None, 1, 3, 50])
def test_the_hash_join_agrees_with_a_plain_join(monkeypatch: pytest.MonkeyPatch,
                                                 buckets: int | None, narrow: bool) -> None:
    # Seeded random files and baselines (items shared, new, gone; unknown levels), with
    # real hashes or hashes folded into a few buckets (collisions everywhere).
    import random

    if buckets is not None:
        real = diff.key_hashes
        monkeypatch.setattr(diff, "key_hashes", lambda frame: real(frame) % buckets)
    rng = random.Random(26 + (buckets or 0))
    for _ in range(40):
        # narrow: one location and SKUs only, on both sides (or nearly: one stray item)
        kinds, places = (["sku"], [1]) if narrow else (["sku", "variant_id"], [1, 2, 3])
        pool = [(rng.choice(places), kind, rng.choice("ABC12") + str(rng.randrange(5))
                 if kind == "sku" else str(rng.randrange(1, 30)))
                for kind in rng.choices(kinds, k=30)]
        if narrow and rng.random() < 0.3:
            pool.append(rng.choice([(2, "sku", "A1"), (1, "variant_id", "7")]))
        pool = list(dict.fromkeys(pool))
        mine = rng.sample(pool, rng.randrange(len(pool) + 1))
        theirs = rng.sample(pool, rng.randrange(len(pool) + 1))
        valid = valid_frame([(*k, rng.randrange(4)) for k in mine])
        base = baseline([(*k, rng.choice([None, 0, 1, 2, 3])) for k in theirs])
        cs = compute_changes(valid, base)
        assert summary(cs) == _plain_changes(valid, base)
        assert cs.unchanged == valid.height - cs.changed
        zeros = cs.zeros_seen
        assert zeros is not None
        held = {(r[0], r[1], r[2]): r[3] for r in base.rows()}
        assert sorted(zeros.rows()) == sorted(
            (*k, held.get(k), k in held) for k, q in
            ((r[:3], r[3]) for r in cs.changes.select(
                "location_id", "identifier", "item_key", "quantity").rows()) if q == 0)


def test_the_baselines_hashes_made_ahead_give_the_same_diff() -> None:
    valid, base = valid_frame(FILE), baseline(BASE)
    cs = compute_changes(valid, base, baseline_hashes=diff.key_hashes(base))
    assert summary(cs) == EXPECTED
    # Hashes of another frame (another height) are not taken for the baseline's.
    cs = compute_changes(valid, base, baseline_hashes=diff.key_hashes(base.head(3)))
    assert summary(cs) == EXPECTED


def test_the_snapshots_hashes_are_used_only_for_the_snapshot_as_loaded() -> None:
    import gc
    from concurrent.futures import Future
    from typing import Any

    from invsync.run.sync import _hashed, _hashes_of, _Read
    from invsync.stages.ingest import read_stock_bytes

    loaded = baseline(BASE)
    loading: Future[pl.DataFrame] = Future()
    loading.set_result(loaded)
    hashing: Future[tuple[Any, pl.Series]] = Future()
    hashing.set_result(_hashed(loading))
    read = _Read(read_stock_bytes(b"sku,quantity\nA,1\n"), None, None, hashing)
    hashes = _hashes_of(read, loaded)
    assert hashes is not None and hashes.equals(diff.key_hashes(loaded))
    assert _hashes_of(read, loaded.clone()) is None  # a frame made from it: not its hashes
    failed: Future[tuple[Any, pl.Series]] = Future()
    failed.set_exception(OSError("unreadable"))
    assert _hashes_of(_Read(read.table, None, None, failed), loaded) is None
    assert _hashes_of(_Read(read.table, None, None), loaded) is None
    # The snapshot is held weakly: a run that replaced it does not keep it in memory.
    del loaded, loading
    gc.collect()
    assert hashing.result()[0]() is None


@pytest.mark.parametrize("width", [pl.Int64, pl.Int32])
def test_an_empty_baseline_gives_what_the_join_gives(width: pl.DataType) -> None:
    # A first run (fresh state) compares with an empty snapshot without joining; seeded
    # random files (zeros, several locations and kinds of key, rows out of order) give the
    # very change set, zeros seen and counts the join gives.
    import random

    rng = random.Random(1426)
    empty = baseline([]).with_columns(pl.col("quantity").cast(width))
    for _ in range(40):
        keys = list(dict.fromkeys(
            (rng.choice([1, 2, 3]), rng.choice(["sku", "variant_id"]), str(rng.randrange(40)))
            for _ in range(rng.randrange(30))))
        valid = valid_frame([(*k, rng.choice([0, 0, 1, 5, 9])) for k in keys])
        if rng.random() < 0.5:
            valid = valid.sample(fraction=1.0, shuffle=True, seed=rng.randrange(1000))
        fast = compute_changes(valid, empty, baseline_name="live")
        plain = diff._joined_changes(valid, empty, "live", None, None)
        assert fast.changes.equals(plain.changes)
        assert fast.changes.schema == plain.changes.schema
        assert fast.zeros_seen is not None and plain.zeros_seen is not None
        assert fast.zeros_seen.sort(pl.all()).equals(plain.zeros_seen.sort(pl.all()))
        assert fast.zeros_seen.schema == plain.zeros_seen.schema
        assert (fast.unchanged, fast.changed, fast.new, fast.baseline) == (
            plain.unchanged, plain.changed, plain.new, "live")
        assert fast.compared is empty


def test_an_empty_baseline_is_not_joined(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_join(*args: object) -> None:
        raise AssertionError("joined against an empty baseline")

    monkeypatch.setattr(diff, "_join_on_key", no_join)
    cs = compute_changes(valid_frame(FILE), baseline([]))
    assert cs.changed == len(FILE) and cs.new == len(FILE) and cs.unchanged == 0
    with pytest.raises(AssertionError, match="joined"):
        compute_changes(valid_frame(FILE), baseline(BASE))
