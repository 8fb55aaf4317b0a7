"""Unit tests of stage 3: the change set against a baseline, and the atomic snapshot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from conftest import item_frame

from invsync import disk
from invsync.stages.diff import compute_changes
from invsync.stages.ingest import ROW
from invsync.stages.validate import VALID_COLUMNS
from invsync.state.snapshot import KEY, SNAPSHOT_SCHEMA, SnapshotStore, write_atomic


def valid_frame(items: list[tuple[int, str, str, int]]) -> pl.DataFrame:
    """Valid rows from (location_id, identifier, item_key, quantity)."""
    return item_frame(items).select(VALID_COLUMNS)


def baseline_frame(items: list[tuple[int, str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(items, schema=SNAPSHOT_SCHEMA, orient="row")


def test_new_changed_and_unchanged() -> None:
    valid = valid_frame([(1, "sku", "A", 5), (1, "sku", "B", 7), (1, "sku", "C", 0),
                         (2, "sku", "A", 5), (1, "variant_id", "77", 3)])
    baseline = baseline_frame([(1, "sku", "A", 5), (1, "sku", "B", 6), (1, "sku", "C", 0),
                               (1, "variant_id", "77", 3), (1, "sku", "Z", 9)])
    cs = compute_changes(valid, baseline)
    assert cs.baseline == "snapshot"
    assert cs.unchanged == 3  # A@1, C@1, variant 77@1
    assert cs.changed == 2
    assert cs.new == 1  # A at location 2
    got = cs.changes.select("location_id", "item_key", "quantity", "old_quantity").rows()
    assert got == [(1, "B", 7, 6), (2, "A", 5, None)]
    assert cs.changes[ROW].to_list() == [3, 5]


def test_identifier_kind_is_part_of_the_key() -> None:
    # variant 77 and the SKU "77" are different items.
    valid = valid_frame([(1, "sku", "77", 4)])
    baseline = baseline_frame([(1, "variant_id", "77", 4)])
    cs = compute_changes(valid, baseline)
    assert cs.changed == 1 and cs.new == 1 and cs.unchanged == 0


def test_baseline_none_sends_everything() -> None:
    valid = valid_frame([(1, "sku", "A", 5), (1, "sku", "B", 7)])
    cs = compute_changes(valid, None)
    assert cs.baseline == "none"
    assert cs.unchanged == 0
    assert cs.changed == 2 and cs.new == 2
    assert cs.changes["old_quantity"].to_list() == [None, None]
    assert cs.changes.select(VALID_COLUMNS).equals(valid)


def test_empty_baseline_marks_everything_new() -> None:
    valid = valid_frame([(1, "sku", "A", 5)])
    cs = compute_changes(valid, pl.DataFrame(schema=SNAPSHOT_SCHEMA), baseline_name="live")
    assert cs.baseline == "live"
    assert (cs.changed, cs.new, cs.unchanged) == (1, 1, 0)


def test_snapshot_roundtrip_and_merge_keeps_other_items(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "abc123")
    assert store.load().height == 0
    assert dict(store.load().schema) == SNAPSHOT_SCHEMA

    first = baseline_frame([(1, "sku", "A", 5), (1, "sku", "B", 7), (2, "sku", "A", 1)])
    assert store.merge(first) == 3
    update = baseline_frame([(1, "sku", "B", 8), (1, "sku", "C", 0)])
    assert store.merge(update) == 4

    loaded = store.load().sort(KEY)
    assert loaded.rows() == [(1, "sku", "A", 5), (1, "sku", "B", 8), (1, "sku", "C", 0),
                             (2, "sku", "A", 1)]
    # A new store object reads the same file.
    assert SnapshotStore(tmp_path, "abc123").load().sort(KEY).equals(loaded)


def test_merge_accepts_extra_columns_of_a_change_set(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    valid = valid_frame([(1, "sku", "A", 5)])
    changes = compute_changes(valid, None).changes
    store.merge(changes.select(*KEY, "quantity"))
    assert store.load().rows() == [(1, "sku", "A", 5)]


def test_snapshot_drives_the_next_diff(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    night1 = valid_frame([(1, "sku", "A", 5), (1, "sku", "B", 7)])
    store.merge(compute_changes(night1, store.load()).changes.select(*KEY, "quantity"))
    night2 = valid_frame([(1, "sku", "A", 5), (1, "sku", "B", 6)])
    cs = compute_changes(night2, store.load())
    assert cs.unchanged == 1
    assert cs.changes.select("item_key", "quantity", "old_quantity").rows() == [("B", 6, 7)]


def test_snapshots_are_per_store_and_names_are_safe(tmp_path: Path) -> None:
    a = SnapshotStore(tmp_path, "store-a")
    b = SnapshotStore(tmp_path, "../evil/b")
    a.merge(baseline_frame([(1, "sku", "A", 1)]))
    b.merge(baseline_frame([(1, "sku", "B", 2)]))
    assert a.load().rows() == [(1, "sku", "A", 1)]
    assert b.load().rows() == [(1, "sku", "B", 2)]
    assert b.path.resolve().is_relative_to(tmp_path.resolve())


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(baseline_frame([(1, "sku", "A", 1)]))
    store.merge(baseline_frame([(1, "sku", "B", 2)]))
    store.write_meta({"last_run": "r1", "last_rows": 2})
    store.write_meta({**store.read_meta(), "last_run": "r2"})
    assert sorted(p.name for p in store.dir.iterdir()) == ["snapshot.parquet", "state.json"]
    assert store.read_meta() == {"last_run": "r2", "last_rows": 2}
    assert json.loads(store.meta_path.read_text())["last_run"] == "r2"


def test_failed_snapshot_write_keeps_the_old_file_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(baseline_frame([(1, "sku", "A", 1)]))
    before = store.path.read_bytes()

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(disk.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.merge(baseline_frame([(1, "sku", "A", 99)]))
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert store.load().rows() == [(1, "sku", "A", 1)]
    assert [p.name for p in store.dir.iterdir()] == ["snapshot.parquet"]


def test_write_atomic_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    write_atomic(target, b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("nope")

    monkeypatch.setattr(disk.os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_write_atomic_reports_a_writer_librarys_io_failure_as_the_oserror(
        tmp_path: Path) -> None:
    # polars reports a full disk as ComputeError("... underlying IO error: ... (os error
    # 28)"); the run handles a full disk as an OSError wherever a file is written.
    target = tmp_path / "snapshot.parquet"

    def polars_full_disk(fh: object) -> None:
        raise pl.exceptions.ComputeError("parquet: File out of specification: underlying IO "
                                         "error: No space left on device (os error 28)")

    with pytest.raises(OSError) as err:
        write_atomic(target, polars_full_disk)
    assert err.value.errno == 28 and str(target) in str(err.value)
    assert os.listdir(tmp_path) == []

    def a_bug(fh: object) -> None:
        raise ValueError("not an IO error")

    with pytest.raises(ValueError):
        write_atomic(target, a_bug)


def test_write_atomic_takes_a_writers_error_on_a_full_disk_for_the_full_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # polars' parquet writer loses the OSError when the footer cannot be written.
    def footer_lost(fh: object) -> None:
        raise pl.exceptions.ComputeError("parquet: File out of specification: Invalid "
                                         "thrift: transport error")

    class Fs:
        def __init__(self, free: int) -> None:
            self.f_bavail, self.f_frsize = free, 1

    monkeypatch.setattr(disk.os, "statvfs", lambda folder: Fs(4096))
    with pytest.raises(OSError) as err:
        write_atomic(tmp_path / "s.parquet", footer_lost)
    assert err.value.errno == 28
    monkeypatch.setattr(disk.os, "statvfs", lambda folder: Fs(10 << 30))
    with pytest.raises(pl.exceptions.ComputeError):  # room left: not a full disk, a bug
        write_atomic(tmp_path / "s.parquet", footer_lost)
    assert os.listdir(tmp_path) == []


def test_read_meta_of_missing_or_corrupt_file_is_empty(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    assert store.read_meta() == {}
    store.dir.mkdir(parents=True)
    store.meta_path.write_text("{not json")
    assert store.read_meta() == {}
