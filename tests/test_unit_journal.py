"""Unit tests of the write-ahead journal and the store locks (invsync.state.journal).

Fast, no processes: what ``recover`` makes of every journal a killed run can leave behind,
and how a lock is taken, refused, waited for, taken over and released.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from invsync.errors import LockedError, UsageError
from invsync.state import journal as journal_mod
from invsync.state.journal import (
    ENV_LOCK_DIR,
    Journal,
    StoreLock,
    host_lock,
    host_lock_dir,
)
from invsync.tables import KEY, SNAPSHOT_SCHEMA


def levels(*rows: tuple[int, str, str, int | None]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(SNAPSHOT_SCHEMA, r, strict=True)) for r in rows],
                        schema=SNAPSHOT_SCHEMA)


def keys(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(KEY)


def rows(frame: pl.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(frame.rows(), key=repr)


A = levels((1, "sku", "A", 5), (1, "sku", "B", 0))
C = levels((2, "sku", "C", 7))
D = levels((1, "product_id", "77", 3))


# ---- the journal ---------------------------------------------------------------------------


def test_records_are_json_lines_written_through(tmp_path: Path) -> None:
    j = Journal(tmp_path / "store")
    assert not j.exists()
    j.begin({"run_id": "r1", "file": "stock.csv"})
    assert j.exists()
    j.sending(0, keys(A))
    # Each record is on disk before the call returns (the next could be a kill -9).
    lines = (tmp_path / "store" / "journal.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"type": "begin", "run_id": "r1", "file": "stock.csv"},
        {"type": "sending", "batch": 0, "items": 2, "location_id": [1, 1],
         "identifier": ["sku", "sku"], "item_key": ["A", "B"]},
    ]
    assert all(" " not in x for x in lines)  # compact separators
    j.confirmed(0, "tx-1", A)
    last = json.loads((tmp_path / "store" / "journal.jsonl").read_text().splitlines()[-1])
    assert last == {"type": "confirmed", "batch": 0, "transaction_id": "tx-1",
                    "location_id": [1, 1], "identifier": ["sku", "sku"],
                    "item_key": ["A", "B"], "quantity": [5, 0]}
    j.close(remove=False)


def test_records_built_ahead_are_the_records_written_the_slow_way(tmp_path: Path) -> None:
    # Keys a JSON writer can get wrong: quotes, backslashes, control characters, non-ASCII,
    # a line separator, an empty key; and an unknown (null) level.
    odd = ['a"b', "back\\slash", "new\nline", "tab\t", "\x00nul", "é日本", "\u2028",
           "\u2029", "\x85nel", "\x0bvt", "\x1cfs", "😀", ""]
    frame = levels(*((i % 3 + 1, "sku", key, None if i == 2 else i) for i, key in enumerate(odd)))
    slow, ahead = Journal(tmp_path / "slow"), Journal(tmp_path / "ahead")
    for j in (slow, ahead):
        j.begin({"run_id": "r"})
    ahead.prepare(0, frame)
    for j in (slow, ahead):
        j.sending(0, keys(frame))
        j.confirmed(0, "tx-1", frame)
    texts = [(j.path.read_text(encoding="utf-8")) for j in (slow, ahead)]
    assert [[json.loads(x) for x in t.splitlines()] for t in texts] == \
        [[json.loads(x) for x in texts[0].splitlines()]] * 2
    assert all(len(t.splitlines()) == 3 for t in texts)  # one line a record
    got = ahead.recover()
    assert rows(got.confirmed) == rows(frame) and got.unconfirmed.height == 0
    assert ahead.recover().confirmed["item_key"].to_list() == odd


def test_the_journal_is_private(tmp_path: Path) -> None:
    j = Journal(tmp_path / "new" / "store")
    j.begin({})
    assert (tmp_path / "new" / "store").stat().st_mode & 0o777 == 0o700
    j.close(remove=False)


def test_appending_before_begin_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"^journal not begun$"):
        Journal(tmp_path).sending(0, keys(A))


def test_begin_starts_a_fresh_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin({"run_id": "old"})
    j.sending(0, keys(A))
    j.close(remove=False)
    j2 = Journal(tmp_path)
    j2.begin({"run_id": "new"})
    j2.close(remove=False)
    got = j2.recover()
    assert got.header == {"type": "begin", "run_id": "new"}
    assert got.in_flight == []
    assert got.unconfirmed is not None and got.unconfirmed.height == 0


def test_an_empty_batch_and_unknown_levels_keep_their_types(tmp_path: Path) -> None:
    # JSON lists of nothing or of nulls carry no type: recover gives them the snapshot's.
    j = Journal(tmp_path)
    j.begin({})
    j.sending(0, keys(A).head(0))
    j.sending(1, keys(A))
    j.confirmed(1, "tx-1", levels((1, "sku", "A", None)))
    j.confirmed(1, "tx-2", levels((1, "sku", "B", 4)))
    j.close(remove=False)
    got = Journal(tmp_path).recover()
    assert got.confirmed.schema == pl.Schema(SNAPSHOT_SCHEMA)
    assert got.confirmed.rows() == [(1, "sku", "A", None), (1, "sku", "B", 4)]
    assert got.in_flight == [0]
    assert got.unconfirmed is not None and got.unconfirmed.height == 0
    j2 = Journal(tmp_path / "b")
    j2.begin({})
    j2.sending(0, keys(A).head(0))
    j2.confirmed(0, "tx", levels((1, "sku", "A", None)))
    j2.close(remove=False)
    got = Journal(tmp_path / "b").recover()
    assert got.confirmed.schema == pl.Schema(SNAPSHOT_SCHEMA)
    assert got.unconfirmed is not None
    assert got.unconfirmed.schema == pl.Schema({k: SNAPSHOT_SCHEMA[k] for k in KEY})


def test_recover_a_finished_journal(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin({"run_id": "r1"})
    j.sending(0, keys(A))
    j.sending(1, keys(C))
    j.confirmed(1, "tx-c", C)
    j.confirmed(0, "tx-a", A)
    j.close(remove=False)
    got = Journal(tmp_path).recover()
    assert got.header["run_id"] == "r1"
    assert got.confirmed.schema == pl.Schema(SNAPSHOT_SCHEMA)
    assert rows(got.confirmed) == rows(pl.concat([A, C]))
    assert got.transaction_ids == ["tx-c", "tx-a"]
    assert got.in_flight == []
    assert got.unconfirmed is not None and got.unconfirmed.height == 0


def test_recover_batches_sent_but_never_confirmed(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin({"run_id": "r1"})
    j.sending(3, keys(D))
    j.sending(0, keys(A))
    j.sending(2, keys(C))
    j.confirmed(2, "tx-c", C)
    j.close(remove=False)
    got = Journal(tmp_path).recover()
    assert got.in_flight == [0, 3]  # sorted
    assert rows(got.confirmed) == rows(C)
    assert got.transaction_ids == ["tx-c"]
    assert got.unconfirmed is not None
    assert got.unconfirmed.schema == pl.Schema({k: SNAPSHOT_SCHEMA[k] for k in KEY})
    assert rows(got.unconfirmed) == rows(pl.concat([keys(D), keys(A)]))


def test_a_partly_confirmed_batch_leaves_the_rest_unconfirmed(tmp_path: Path) -> None:
    # A 422 isolates items: some of a batch are confirmed, the others never.
    j = Journal(tmp_path)
    j.begin({})
    j.sending(0, keys(A))
    j.confirmed(0, "tx-1", A.head(1))
    j.close(remove=False)
    got = Journal(tmp_path).recover()
    assert got.in_flight == []  # a confirmed record closes the batch
    assert got.unconfirmed is not None
    assert rows(got.unconfirmed) == [(1, "sku", "B")]


def test_unknown_levels_survive_the_round_trip(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin({})
    j.confirmed(0, "tx", levels((1, "sku", "A", None)))
    j.close(remove=False)
    assert Journal(tmp_path).recover().confirmed.rows() == [(1, "sku", "A", None)]


def test_a_torn_last_line_is_ignored_and_stops_reading(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin({"run_id": "r"})
    j.sending(0, keys(A))
    j.confirmed(0, "tx-a", A)
    j.close(remove=False)
    path = tmp_path / "journal.jsonl"
    whole = path.read_text()
    cut = whole.rstrip("\n").rsplit("\n", 1)[0] + "\n" + '{"type":"confirmed","batch":0,"tr'
    path.write_text(cut)
    got = Journal(tmp_path).recover()
    assert got.confirmed.height == 0 and got.transaction_ids == []
    assert got.in_flight == [0]
    # Nothing after a torn record is believed.
    path.write_text(whole.splitlines()[0] + "\n{torn\n" + "\n".join(whole.splitlines()[1:]))
    got = Journal(tmp_path).recover()
    assert got.header["run_id"] == "r"
    assert got.in_flight == [] and got.confirmed.height == 0


def test_records_of_unknown_type_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "journal.jsonl").write_text(
        '{"type":"begin","run_id":"x"}\n{"type":"later","batch":9}\n'
        '{"type":"sending","batch":"4","location_id":[1],"identifier":["sku"],'
        '"item_key":["A"]}\n{"type":"confirmed","batch":"4","transaction_id":12,'
        '"location_id":[1],"identifier":["sku"],"item_key":["A"],"quantity":[1]}\n')
    got = Journal(tmp_path).recover()
    assert got.header == {"type": "begin", "run_id": "x"}
    assert got.in_flight == []  # "4" and 4 are one batch
    assert got.transaction_ids == ["12"]


def test_an_empty_journal(tmp_path: Path) -> None:
    (tmp_path / "journal.jsonl").write_text("")
    got = Journal(tmp_path).recover()
    assert got.header == {}
    assert got.confirmed.schema == pl.Schema(SNAPSHOT_SCHEMA) and got.confirmed.height == 0
    assert got.transaction_ids == [] and got.in_flight == []
    assert got.unconfirmed is not None and got.unconfirmed.height == 0


def test_close_removes_only_when_asked(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin({})
    j.close(remove=False)
    assert j.exists()
    j.close(remove=True)
    assert not j.exists()
    j.close(remove=True)  # already gone: no error
    with pytest.raises(AssertionError):
        j.sending(0, keys(A))  # closed


def test_exists_sees_a_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "journal.jsonl").symlink_to(tmp_path / "nowhere")
    assert Journal(tmp_path).exists()


def test_appends_from_threads_never_interleave(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.begin({})
    big = levels(*[(1, "sku", f"K{i:05d}", i) for i in range(2000)])

    def worker(b: int) -> None:
        j.confirmed(b, f"tx{b}", big)

    threads = [threading.Thread(target=worker, args=(b,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    j.close(remove=False)
    got = Journal(tmp_path).recover()
    assert sorted(got.transaction_ids) == sorted(f"tx{b}" for b in range(8))
    assert got.confirmed.height == 8 * 2000


# ---- the lock folder -----------------------------------------------------------------------


def test_host_lock_dir_prefers_the_override(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_LOCK_DIR, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert host_lock_dir() == tmp_path / "mine"


def test_host_lock_dir_ignores_the_runtime_dir(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A login shell has $XDG_RUNTIME_DIR and cron does not: both must meet at one lock.
    monkeypatch.delenv(ENV_LOCK_DIR, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert host_lock_dir() == Path(tempfile.gettempdir()) / f"invsync-locks-{os.getuid()}"


@pytest.mark.parametrize("runtime", ["missing", "readonly", "unset", "empty"])
def test_host_lock_dir_falls_back_to_the_temp_dir(tmp_path: Path, runtime: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_LOCK_DIR, raising=False)
    if runtime == "unset":
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    elif runtime == "empty":
        monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    elif runtime == "missing":
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        real_access = os.access
        monkeypatch.setattr(journal_mod.os, "access",
                            lambda p, mode: False if str(p) == str(tmp_path)
                            else real_access(p, mode))
    monkeypatch.setattr(journal_mod.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert host_lock_dir() == tmp_path / "tmp" / f"invsync-locks-{os.getuid()}"


@pytest.mark.parametrize("missing", [os.W_OK, os.X_OK])
def test_runtime_dir_needs_write_and_search(tmp_path: Path, missing: int,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_LOCK_DIR, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setattr(journal_mod.os, "access", lambda p, mode: not mode & missing)
    monkeypatch.setattr(journal_mod.tempfile, "gettempdir", lambda: "/t")
    assert host_lock_dir() == Path("/t") / f"invsync-locks-{os.getuid()}"


def test_host_lock_names_host_and_store_injectively(private_lock_dir: Path) -> None:
    lock = host_lock("https://API.example.com:8443/stores", "ab/c")
    assert lock.path == private_lock_dir / "api.example.com%3A8443+ab%2Fc.lock"
    assert lock.store_hash == "ab/c"
    assert host_lock("https://api.example.com", "a_b").path != host_lock(
        "https://api.example.com", "a.b").path


def test_a_shared_lock_folder_must_be_private(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "locks"
    shared.mkdir(mode=0o700)
    monkeypatch.setenv(ENV_LOCK_DIR, str(shared))
    host_lock("https://x", "s").acquire("r1")  # private: fine
    for mode in (0o720, 0o702, 0o777):
        os.chmod(shared, mode)
        with pytest.raises(UsageError, match=r"cannot use the lock file .*writable by no one"):
            host_lock("https://x", "s").acquire("r1")
    os.chmod(shared, 0o700)


def test_a_lock_folder_that_is_not_a_folder_is_refused(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OSError, match="must be a folder owned by this user"):
        journal_mod._check_private(tmp_path / "link")
    journal_mod._check_private(real)
    os.chmod(real, 0o711)  # others may enter, not write: private enough
    journal_mod._check_private(real)
    other = os.getuid() + 1
    monkeypatch.setattr(journal_mod.os, "getuid", lambda: other)
    with pytest.raises(OSError, match="must be a folder owned by this user"):
        journal_mod._check_private(real)


def test_an_unprivate_store_folder_is_fine_without_shared_dir(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir(mode=0o770)
    os.chmod(folder, 0o770)
    lock = StoreLock(folder, "s")
    lock.acquire("r1")
    lock.release()


# ---- the lock ------------------------------------------------------------------------------


def holder_record(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_acquire_records_the_holder_and_release_empties_it(tmp_path: Path) -> None:
    lock = StoreLock(tmp_path / "store", "abc")
    assert lock.path == tmp_path / "store" / "lock"
    before = time.gmtime()
    lock.acquire("run-1", state_dir="/s", source="cli")
    rec = holder_record(lock.path)
    assert rec["run_id"] == "run-1" and rec["pid"] == os.getpid()
    assert rec["host"] == socket.gethostname()
    assert rec["state_dir"] == "/s" and rec["source"] == "cli"
    started = time.strptime(rec["started"], "%Y-%m-%dT%H:%M:%SZ")
    assert abs(time.mktime(started) - time.mktime(before)) <= 5
    assert lock.took_over is None
    assert (tmp_path / "store").stat().st_mode & 0o777 == 0o700
    lock.release()
    assert lock.path.read_text() == ""
    lock.release()  # twice: no error
    again = StoreLock(tmp_path / "store", "abc")
    again.acquire("run-2")
    assert again.took_over is None  # released cleanly: nothing to take over
    again.release()


def test_a_held_lock_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = StoreLock(tmp_path, "abc")
    first.acquire("run-1", state_dir="/state")
    second = StoreLock(tmp_path, "abc")
    with pytest.raises(LockedError) as err:
        second.acquire("run-2")
    msg = str(err.value)
    assert msg.startswith(f"run run-1 (pid {os.getpid()}, started ")
    assert ", state dir /state) is already syncing store 'abc'; wait for it to finish or " \
           "pass --wait-lock SECONDS (lock: " + str(tmp_path / "lock") + ")" in msg
    assert "after waiting" not in msg
    assert second._fh is None
    assert holder_record(first.path)["run_id"] == "run-1"  # the loser wrote nothing
    first.release()


def test_a_holder_without_a_record_is_another_run(tmp_path: Path) -> None:
    first = StoreLock(tmp_path, "abc")
    first.acquire("run-1")
    lock_file = tmp_path / "lock"
    for text in ("", "not json", "[1, 2]"):
        lock_file.write_text(text)
        with pytest.raises(LockedError, match=r"^another run is already syncing store 'abc'"):
            StoreLock(tmp_path, "abc").acquire("run-2")
    lock_file.write_text("{}")
    with pytest.raises(LockedError, match=r"^another run is already"):
        StoreLock(tmp_path, "abc").acquire("run-2")
    lock_file.write_text('{"run_id": "r9"}')
    with pytest.raises(LockedError, match=r"^run r9 \(pid \?, started \?\) is already"):
        StoreLock(tmp_path, "abc").acquire("run-2")
    lock_file.write_text('{"pid": 5, "started": "T1"}')
    with pytest.raises(LockedError, match=r"^run \? \(pid 5, started T1\) is already"):
        StoreLock(tmp_path, "abc").acquire("run-2")
    first.release()


def test_waiting_for_a_lock_that_stays_held(tmp_path: Path) -> None:
    first = StoreLock(tmp_path, "abc")
    first.acquire("run-1")
    told: list[dict[str, Any]] = []
    start = time.monotonic()
    with pytest.raises(LockedError, match=r"'abc' after waiting 0\.7 s; wait"):
        StoreLock(tmp_path, "abc").acquire("run-2", wait_s=0.7, on_wait=told.append)
    assert time.monotonic() - start >= 0.7
    assert len(told) == 1  # told once, however many times it polled
    assert told[0]["wait_s"] == 0.7 and told[0]["holder"]["run_id"] == "run-1"
    first.release()


def test_waiting_ends_when_the_holder_releases(tmp_path: Path) -> None:
    first = StoreLock(tmp_path, "abc")
    first.acquire("run-1")
    timer = threading.Timer(0.3, first.release)
    timer.start()
    second = StoreLock(tmp_path, "abc")
    second.acquire("run-2", wait_s=30)
    timer.join()
    assert holder_record(second.path)["run_id"] == "run-2"
    assert second.took_over is None
    second.release()


def test_waiting_without_on_wait(tmp_path: Path) -> None:
    first = StoreLock(tmp_path, "abc")
    first.acquire("run-1")
    with pytest.raises(LockedError, match="after waiting"):
        StoreLock(tmp_path, "abc").acquire("run-2", wait_s=0.05)
    first.release()


def test_the_start_time_is_utc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's clock is in a zone far from UTC: the lock still records UTC.
    monkeypatch.setenv("TZ", "KIR-14")  # POSIX rule for UTC+14: no zone database needed
    time.tzset()
    try:
        before = datetime.now(UTC).replace(microsecond=0)
        lock = StoreLock(tmp_path, "abc")
        lock.acquire("run-1")
        after = datetime.now(UTC)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    started = holder_record(lock.path)["started"]
    assert started.endswith("Z")
    assert before <= datetime.fromisoformat(started.replace("Z", "+00:00")) <= after


def test_a_record_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text('{"run_id": "dead", "pid": 1}')
    os.chmod(tmp_path / "lock", 0o600)
    lock = StoreLock(tmp_path, "abc")
    lock.acquire("run-2")
    assert lock.took_over == {"run_id": "dead", "pid": 1}
    rec = holder_record(lock.path)
    assert rec["run_id"] == "run-2"  # the old record is replaced, not appended to
    lock.release()


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match=r"/lock is a symbolic link"):
        StoreLock(tmp_path, "abc").acquire("run-1")
    assert (tmp_path / "elsewhere").read_text() == ""


def test_applied_to_replays_a_journal_onto_a_snapshot_in_memory(tmp_path: Path) -> None:
    """What drift and a dry run see after a kill: confirmed levels set, items in flight
    unknown (null), the rest of the snapshot as it was; nothing is written."""
    snapshot = levels((1, "sku", "A", 1), (1, "sku", "B", 2), (1, "sku", "KEEP", 3),
                      (2, "sku", "A", 4))
    j = Journal(tmp_path)
    j.begin({"run_id": "r1"})
    j.sending(0, keys(levels((1, "sku", "A", 10), (1, "sku", "NEW", 11))))
    j.confirmed(0, "tx-0", levels((1, "sku", "A", 10), (1, "sku", "NEW", 11)))
    j.sending(1, keys(levels((1, "sku", "B", 20), (2, "sku", "A", 21), (2, "sku", "X", 22))))
    j.close(remove=False)
    before = sorted(p.name for p in tmp_path.iterdir())
    replayed = j.recover().applied_to(snapshot)
    assert replayed.columns == list(SNAPSHOT_SCHEMA)
    assert rows(replayed) == rows(levels(
        (1, "sku", "A", 10), (1, "sku", "NEW", 11),  # confirmed
        (1, "sku", "B", None), (2, "sku", "A", None), (2, "sku", "X", None),  # in flight
        (1, "sku", "KEEP", 3)))
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # An item sent twice and never confirmed is one unknown row, not two.
    j2 = Journal(tmp_path / "two")
    (tmp_path / "two").mkdir()
    j2.begin({"run_id": "r2"})
    j2.sending(0, keys(levels((1, "sku", "B", 1))))
    j2.sending(1, keys(levels((1, "sku", "B", 1))))
    j2.close(remove=False)
    assert rows(j2.recover().applied_to(snapshot).filter(pl.col("item_key") == "B")) == [
        (1, "sku", "B", None)]


def test_holder_names_the_run_holding_the_lock_and_takes_nothing(tmp_path: Path) -> None:
    lock = StoreLock(tmp_path, "abc")
    assert lock.holder() is None  # no lock file yet
    lock.acquire("run-1", state_dir="/s")
    looker = StoreLock(tmp_path, "abc")
    seen = looker.holder()
    assert seen is not None and seen["run_id"] == "run-1" and seen["pid"] == os.getpid()
    assert seen["state_dir"] == "/s"
    assert looker.holder() == seen  # looking twice takes nothing
    with pytest.raises(LockedError):
        StoreLock(tmp_path, "abc").acquire("run-2")  # still held by run-1
    lock.release()
    assert looker.holder() is None  # free (an empty file) once released
    # A holder that wrote no record yet is still a holder.
    lock.path.write_text("")
    with open(lock.path) as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        assert looker.holder() == {"run_id": None}
    assert looker.holder() is None


def test_each_record_written_alone_is_fsynced_before_the_writer_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # One writer at a time (no one to share an fsync with): one fsync per record, each made
    # before the call returns, the first (begin) included.
    synced: list[int] = []
    real_fsync = os.fsync
    j = Journal(tmp_path)

    def counting(fd: int) -> None:
        real_fsync(fd)
        synced.append(len(j.path.read_text().splitlines()))

    monkeypatch.setattr(journal_mod.os, "fsync", counting)
    j.begin({"run_id": "r1"})
    assert (j.fsyncs, synced) == (1, [1])
    j.sending(0, keys(A))
    j.confirmed(0, "tx", A)
    assert (j.fsyncs, synced) == (3, [1, 2, 3])
    j.close(remove=False)


def test_sending_records_written_together_share_one_fsync(tmp_path: Path) -> None:
    from invsync.state.journal import _KEY_SCHEMA

    journal = Journal(tmp_path)
    journal.begin({"run_id": "r1"})
    before = journal.fsyncs
    for batch, durable in ((0, False), (1, False), (2, True)):
        keys = pl.DataFrame({"location_id": [1], "identifier": ["sku"],
                             "item_key": [f"S{batch}"]}, schema=_KEY_SCHEMA)
        journal.sending(batch, keys, durable=durable)
    assert journal.fsyncs - before == 1  # the last record's fsync covers the two before
    journal.close(remove=False)
    recovered = Journal(tmp_path).recover()
    assert recovered.in_flight == [0, 1, 2]
    assert sorted(recovered.unconfirmed["item_key"].to_list()) == ["S0", "S1", "S2"]
