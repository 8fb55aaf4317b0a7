"""Unit tests of the snapshot store (invsync.state.snapshot): folder names, merge, forget.

Fast, no processes. The folder name of a store must be injective (two stores never share a
folder), and ``merge`` must record what was accepted, mark what was forgotten unknown, and
leave the file alone when it learnt nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from invsync import disk as disk_mod
from invsync.errors import UsageError
from invsync.state.snapshot import (
    KEY,
    SNAPSHOT_SCHEMA,
    SnapshotStore,
    api_host,
    path_part,
    store_dir,
)


def levels(*rows: tuple[int, str, str, int | None]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(SNAPSHOT_SCHEMA, r, strict=True)) for r in rows],
                        schema=SNAPSHOT_SCHEMA)


def content(store: SnapshotStore) -> dict[tuple[int, str, str], int | None]:
    return {(loc, ident, key): qty for loc, ident, key, qty in store.load().rows()}


# ---- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "name"), [
    ("abc123", "abc123"), ("a-b_c.d", "a-b_c.d"), ("a/b", "a%2Fb"), ("a b", "a%20b"),
    ("", "%00"), (".", "%2E"), ("..", "%2E%2E"), ("...", "..."), ("a%2Fb", "a%252Fb"),
    ("é", "%C3%A9"), ("a:8443", "a%3A8443"),
])
def test_path_part(text: str, name: str) -> None:
    assert path_part(text) == name


def test_path_part_is_injective() -> None:
    texts = ["", ".", "..", "%00", "%2E", "a_b", "a.b", "a-b", "a/b", "a\\b", "a b", "a%20b",
             "A_B", "abc", "ab", "a" * 40, "ü", "u"]
    names = [path_part(t) for t in texts]
    assert len(set(names)) == len(texts)
    for name in names:
        assert "/" not in name and name not in ("", ".", "..")


@pytest.mark.parametrize(("url", "host"), [
    ("https://api.bigcommerce.com/stores/abc/v3", "api.bigcommerce.com"),
    ("https://API.BigCommerce.com", "api.bigcommerce.com"),
    ("https://api.example.com:443/x", "api.example.com"),
    # This machine's loopback names are one host (issue 19, hole 4), and so are the
    # default ports written out, whatever the scheme.
    ("http://127.0.0.1:80", "localhost"),
    ("http://127.0.0.1:8080/x", "localhost:8080"),
    ("http://LOCALHOST.:8080/", "localhost:8080"),
    ("https://127.0.0.1:80", "localhost"),
    ("https://api.example.com.:443/", "api.example.com"),
    ("HTTP://h:80", "h"),
    ("api.example.com:9000", "api.example.com:9000"),
    ("api.example.com", "api.example.com"),
    ("https://h:notaport/x", "h"),
    ("ftp://h:21", "h:21"),
    ("https:///stores/x", ""),
])
def test_api_host(url: str, host: str) -> None:
    assert api_host(url) == host


def test_store_dir_is_host_then_hash(tmp_path: Path) -> None:
    assert store_dir(tmp_path, "http://127.0.0.1:8080/", "abc") == (
        tmp_path / "stores" / "localhost%3A8080" / "abc")
    assert store_dir(str(tmp_path), "https://api.bigcommerce.com", "a/b") == (  # type: ignore[arg-type]
        tmp_path / "stores" / "api.bigcommerce.com" / "a%2Fb")


def test_two_stores_never_share_a_folder(tmp_path: Path) -> None:
    hashes = ["abc", "abd", "a_c", "a.c", "a/c", "a-c", "", "..", "ABC"]
    folders = {store_dir(tmp_path, "https://api.bigcommerce.com", h) for h in hashes}
    assert len(folders) == len(hashes)
    hosts = ["https://a.example", "https://b.example", "https://a.example:8443"]
    assert len({store_dir(tmp_path, u, "abc") for u in hosts}) == len(hosts)
    for folder in folders:
        assert folder.parent == tmp_path / "stores" / "api.bigcommerce.com"


def test_snapshot_store_paths(tmp_path: Path) -> None:
    default = SnapshotStore(tmp_path, "abc")
    assert default.store_dir == tmp_path / "stores" / "api.bigcommerce.com" / "abc"
    assert default.dir == default.store_dir
    assert default.path == default.dir / "snapshot.parquet"
    assert default.meta_path == default.dir / "state.json"
    assert default.legacy_dir == tmp_path / "abc"
    prof = SnapshotStore(tmp_path, "abc", "http://127.0.0.1:9/", profile="re hearsal")
    assert prof.store_dir == tmp_path / "stores" / "localhost%3A9" / "abc"
    assert prof.dir == prof.store_dir / "profile-re%20hearsal"
    assert prof.path == prof.dir / "snapshot.parquet"
    assert prof.meta_path == prof.dir / "state.json"
    assert SnapshotStore(tmp_path, "abc", profile="").dir == default.dir


@pytest.mark.parametrize(("store_hash", "legacy"), [
    ("abc123", "abc123"), ("a-b_c", "a-b_c"), ("a/b.c", "a_b_c"), ("", "_"), ("ü", "ü"),
])
def test_the_legacy_folder_name(tmp_path: Path, store_hash: str, legacy: str) -> None:
    assert SnapshotStore(tmp_path, store_hash).legacy_dir == tmp_path / legacy


# ---- load, merge, replace ------------------------------------------------------------------


def test_load_without_a_snapshot(tmp_path: Path) -> None:
    frame = SnapshotStore(tmp_path, "s").load()
    assert frame.height == 0 and frame.schema == pl.Schema(SNAPSHOT_SCHEMA)


def test_load_refuses_a_symlink(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 1)))
    real = tmp_path / "real.parquet"
    store.path.rename(real)
    store.path.symlink_to(real)
    with pytest.raises(UsageError, match="symbolic link"):
        store.load()


def test_load_casts_to_the_schema(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.dir.mkdir(parents=True)
    pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"],
                  "quantity": [3]}, schema={"location_id": pl.Int32, "identifier": pl.String,
                                            "item_key": pl.String, "quantity": pl.Int32}
                 ).write_parquet(store.path)
    assert store.load().schema == pl.Schema(SNAPSHOT_SCHEMA)


def test_merge_adds_and_updates(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    assert store.merge(levels((1, "sku", "A", 5), (1, "sku", "B", 2))) == 2
    assert store.merge(levels((1, "sku", "B", 0), (2, "sku", "A", 9))) == 3
    assert content(store) == {(1, "sku", "A"): 5, (1, "sku", "B"): 0, (2, "sku", "A"): 9}
    # Written sorted by key, private.
    assert pl.read_parquet(store.path).rows() == sorted(pl.read_parquet(store.path).rows())
    assert store.path.stat().st_mode & 0o777 == 0o600
    assert store.dir.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in store.dir.iterdir()] == ["snapshot.parquet"]


def test_merge_takes_extra_columns_and_any_int_width(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    accepted = pl.DataFrame({"row": [2], "quantity": [4], "item_key": ["A"],
                             "identifier": ["sku"], "location_id": [1]},
                            schema={"row": pl.Int64, "quantity": pl.Int32, "item_key": pl.String,
                                    "identifier": pl.String, "location_id": pl.Int32})
    assert store.merge(accepted) == 1
    assert store.load().rows() == [(1, "sku", "A", 4)]


def test_the_file_built_ahead_is_the_file_merge_writes(tmp_path: Path) -> None:
    start = levels((1, "sku", "A", 1), (1, "sku", "B", None), (2, "product_id", "7", 4))
    accepted = pl.DataFrame({"location_id": [2, 1, 3], "identifier": ["product_id", "sku", "sku"],
                             "item_key": ["7", "B", "Z"], "quantity": [9, 2, 0]},
                            schema={"location_id": pl.Int32, "identifier": pl.String,
                                    "item_key": pl.String, "quantity": pl.Int32})
    slow = SnapshotStore(tmp_path / "slow", "h")
    ahead = SnapshotStore(tmp_path / "ahead", "h")
    for store in (slow, ahead):
        store.replace(start)
    data = ahead.merged_file(accepted)
    assert ahead.path.read_bytes() != data  # built, not written
    slow.merge(accepted)
    ahead.write_file(data)
    assert ahead.load().equals(slow.load())
    assert content(ahead) == {(1, "sku", "A"): 1, (1, "sku", "B"): 2,
                              (2, "product_id", "7"): 9, (3, "sku", "Z"): 0}
    assert not [p for p in ahead.dir.iterdir() if p.name.startswith(".snapshot-")]


def test_merge_of_nothing_leaves_the_file_alone(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    assert store.merge(levels()) == 0
    assert not store.path.exists() and not store.dir.exists()
    store.merge(levels((1, "sku", "A", 5)))
    before = store.path.stat()
    assert store.merge(levels()) == 1
    assert store.merge(levels(), forget=levels()) == 1
    after = store.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_forget_marks_items_unknown(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 5), (1, "sku", "B", 2), (1, "sku", "C", 1)))
    # B confirmed at 7; A and B sent in the same batch but only B confirmed; D was new.
    forget = levels((1, "sku", "A", 0), (1, "sku", "B", 7), (1, "sku", "D", 3),
                    (1, "sku", "A", 0)).select(KEY)
    assert store.merge(levels((1, "sku", "B", 7)), forget=forget) == 4
    assert content(store) == {(1, "sku", "A"): None, (1, "sku", "B"): 7,
                              (1, "sku", "C"): 1, (1, "sku", "D"): None}


def test_forget_takes_any_int_width_for_the_location(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 5)))
    forget = pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"]},
                          schema={"location_id": pl.Int32, "identifier": pl.String,
                                  "item_key": pl.String})
    assert store.merge(levels(), forget=forget) == 1
    assert content(store) == {(1, "sku", "A"): None}


def test_forgetting_what_is_already_unknown_writes_nothing(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", None), (1, "sku", "B", 2)))
    before = store.path.stat()
    assert store.merge(levels(), forget=levels((1, "sku", "A", 0)).select(KEY)) == 2
    after = store.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # One of them newly unknown: written.
    forget = levels((1, "sku", "A", 0), (1, "sku", "B", 0)).select(KEY)
    assert store.merge(levels(), forget=forget) == 2
    assert content(store) == {(1, "sku", "A"): None, (1, "sku", "B"): None}


def test_forget_with_nothing_to_forget(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 5)))
    assert store.merge(levels((1, "sku", "B", 1)), forget=levels().select(KEY)) == 2
    assert content(store) == {(1, "sku", "A"): 5, (1, "sku", "B"): 1}


def test_replace(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 5), (1, "sku", "B", 2)))
    store.replace(levels((2, "sku", "Z", 1), (1, "sku", "C", None)).with_columns(x=pl.lit(1)))
    assert content(store) == {(2, "sku", "Z"): 1, (1, "sku", "C"): None}
    assert pl.read_parquet(store.path).columns == list(SNAPSHOT_SCHEMA)
    store.replace(levels())
    assert store.load().height == 0


def test_a_failed_write_leaves_the_old_snapshot_and_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 5)))

    def boom(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(disk_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.merge(levels((1, "sku", "A", 6)))
    monkeypatch.undo()
    assert content(store) == {(1, "sku", "A"): 5}
    assert [p.name for p in store.dir.iterdir()] == ["snapshot.parquet"]


def test_the_write_is_fsynced_before_the_rename(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(disk_mod.os, "fsync",
                        lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(disk_mod.os, "replace",
                        lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    monkeypatch.setattr(disk_mod, "_fsync_dir", lambda d: calls.append(f"dir {d}"))
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 5)))
    assert calls == ["fsync", "replace", f"dir {store.dir}"]


def test_the_temp_file_is_one_clean_temp_files_removes(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # A kill between writing and renaming leaves the temp file: it must be found later.
    store = SnapshotStore(tmp_path, "s")
    temps: list[Path] = []
    real_replace = os.replace
    monkeypatch.setattr(disk_mod.os, "replace",
                        lambda a, b: (temps.append(Path(a)), real_replace(a, b))[1])
    store.merge(levels((1, "sku", "A", 5)))
    (temp,) = temps
    assert temp.parent == store.dir
    assert temp.name.startswith(".snapshot-") and temp.name.endswith(".parquet")


def test_clean_temp_files_when_another_process_removed_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.merge(levels((1, "sku", "A", 5)))
    (store.dir / ".snapshot-x.parquet").write_text("half")
    (store.dir / ".snapshot-y.parquet").write_text("half")
    real_unlink = Path.unlink

    def unlink(self: Path, missing_ok: bool = False) -> None:
        real_unlink(self)
        if self.name == ".snapshot-x.parquet":
            raise FileNotFoundError(self)  # as if the other process got there first

    monkeypatch.setattr(Path, "unlink", unlink)
    assert store.clean_temp_files() == 1
    assert [p.name for p in store.dir.iterdir()] == ["snapshot.parquet"]


def test_clean_temp_files(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    assert store.clean_temp_files() == 0  # no folder yet
    store.merge(levels((1, "sku", "A", 5)))
    store.write_meta({"a": 1})
    for name in (".snapshot-x.parquet", ".state.json-y", ".snapshot-z"):
        (store.dir / name).write_text("half")
    (store.dir / "keep.txt").write_text("mine")
    (store.dir / "x.snapshot-").write_text("mine")
    assert store.clean_temp_files() == 3
    assert sorted(p.name for p in store.dir.iterdir()) == [
        "keep.txt", "snapshot.parquet", "state.json", "x.snapshot-"]
    assert store.clean_temp_files() == 0


def test_meta_round_trip(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s", profile="p")
    assert store.read_meta() == {}
    meta = {"sources": {"cli": {"last_rows": 3}}, "last_run": "x"}
    store.write_meta(meta)
    assert store.read_meta() == meta
    assert json.loads(store.meta_path.read_text()) == meta
    assert store.meta_path.read_text().startswith('{\n  "sources"')  # indented, for people
    assert store.meta_path.stat().st_mode & 0o777 == 0o600
    assert store.dir.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("text", ["not json", "", "\xff"])
def test_unreadable_meta_is_no_meta(tmp_path: Path, text: str) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.dir.mkdir(parents=True)
    store.meta_path.write_text(text, encoding="latin-1")
    assert store.read_meta() == {}


def test_meta_that_is_not_an_object(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s")
    store.dir.mkdir(parents=True)
    store.meta_path.write_text("[1, 2]")
    assert store.read_meta() == {}
