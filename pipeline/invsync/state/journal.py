"""Crash safety: a per-store lock and a write-ahead journal of what was sent and confirmed.

Before a batch is sent the journal records ``sending``, on disk before the batch goes
out; when the store confirms (part of) it, the journal records the confirmed levels with
their transaction id, written before the next batch goes out and on disk with that
batch's record (one fsync a batch). Records written while an fsync runs share the next
one (group commit). A batch's records are serialised while the batch before it is out.
After a run the confirmed levels are merged into the snapshot and the journal is
removed. After ``kill -9`` the next run (or ``invsync resume``) replays the confirmed
levels into the snapshot first, so nothing already confirmed is sent again and the
snapshot never holds a level the store did not accept.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl

from invsync.clock import utc_now
from invsync.errors import LockedError, UsageError
from invsync.state.snapshot import (
    KEY,
    SNAPSHOT_SCHEMA,
    api_host,
    make_private_dir,
    open_nofollow,
    path_part,
)

_KEY_SCHEMA = {k: SNAPSHOT_SCHEMA[k] for k in KEY}
_PREPARED_MAX = 80
"""Batches whose records are kept built ahead: more than are ever in flight or prepared
at once (``--concurrency`` is at most 32); the oldest beyond that are written the slow way."""


ENV_LOCK_DIR = "INVSYNC_LOCK_DIR"


def host_lock_dir() -> Path:
    """Where host-wide store locks live: ``$INVSYNC_LOCK_DIR``, else
    ``<system temp dir>/invsync-locks-<uid>``."""
    override = os.environ.get(ENV_LOCK_DIR)
    if override:
        return Path(override)
    # One place whatever the environment: $XDG_RUNTIME_DIR is set in a login shell but not
    # under cron, and two runs must meet at the same lock to exclude each other.
    return Path(tempfile.gettempdir()) / f"invsync-locks-{os.getuid()}"


class StoreLock:
    """An exclusive ``flock`` on ``<state>/<store>/lock``; the kernel frees it if we die."""

    def __init__(self, directory: Path, store_hash: str, *, path: Path | None = None,
                 shared_dir: bool = False) -> None:
        self.path = path or directory / "lock"
        self.store_hash = store_hash
        self._shared_dir = shared_dir
        self._fh: IO[str] | None = None
        self.took_over: dict[str, Any] | None = None

    def acquire(self, run_id: str, wait_s: float = 0.0,
                on_wait: Callable[[dict[str, Any]], None] | None = None, **info: Any) -> None:
        """Take the lock or raise :class:`LockedError` naming the run that holds it.

        With ``wait_s`` > 0, wait up to that long for the holder to finish first
        (``on_wait`` is told once, with the holder, when waiting starts). ``info`` is
        recorded in the lock file for whoever finds it held.
        """
        try:
            make_private_dir(self.path.parent)
            if self._shared_dir:
                _check_private(self.path.parent)
            fh = open_nofollow(self.path, "r+")
        except OSError as exc:
            raise UsageError(f"cannot use the lock file {self.path}: "
                             f"{exc.strerror or exc}") from None
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                fh.seek(0)
                holder = _parse(fh.read())
                who = (f"run {holder.get('run_id', '?')} (pid {holder.get('pid', '?')}, "
                       f"started {holder.get('started', '?')}"
                       + (f", state dir {holder['state_dir']}" if holder.get("state_dir")
                          else "")
                       + ")") if holder else "another run"
                if time.monotonic() < deadline:
                    if not waited and on_wait:
                        on_wait({"holder": holder, "wait_s": wait_s})
                    waited = True
                    time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))
                    continue
                fh.close()
                after = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
                raise LockedError(
                    f"{who} is already syncing store {self.store_hash!r}{after}; wait for it "
                    f"to finish or pass --wait-lock SECONDS (lock: {self.path})"
                ) from None
        fh.seek(0)
        previous = _parse(fh.read())
        if previous:
            # The file outlived its holder: that run was killed before it could clean up.
            self.took_over = previous
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                             "started": utc_now(),
                             **info}))
        fh.flush()
        self._fh = fh

    def holder(self) -> dict[str, Any] | None:
        """Who holds this lock (its recorded run), or None when it is free. Takes nothing."""
        try:
            fh = open_nofollow(self.path, "r")
        except OSError:
            return None
        with fh:
            try:
                # A shared lock only looks: it fails while a run holds the exclusive one.
                fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _parse(fh.read()) or {"run_id": None}
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return None

    def release(self) -> None:
        """Empty the lock file and release the lock."""
        if self._fh is None:
            return
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.flush()
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None


def host_lock(api_url: str, store_hash: str) -> StoreLock:
    """The lock one store (API host + store hash) has on this host, whatever the state dir."""
    name = f"{path_part(api_host(api_url))}+{path_part(store_hash)}.lock"
    return StoreLock(Path(), store_hash, path=host_lock_dir() / name, shared_dir=True)


def _check_private(directory: Path) -> None:
    """Refuse a lock folder another user owns or may write (it may sit in /tmp)."""
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{directory} must be a folder owned by this user and writable by no "
                      f"one else (set {ENV_LOCK_DIR} to use another)")


def _columns_json(frame: pl.DataFrame, columns: list[str]) -> str:
    """``{"col":[values...],...}`` and a newline: ``columns`` of ``frame`` as one JSON
    object of lists, serialised by polars (no Python object per value, the GIL let go)."""
    text = frame.select(pl.col(c).implode() for c in columns).write_ndjson()
    if not text.isascii():  # what else breaks a line for str.splitlines, escaped
        for ch in _LINE_BREAKS:
            text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text


_LINE_BREAKS = ("\x85", "\u2028", "\u2029")
"""Characters that end a line for ``str.splitlines`` which JSON may leave unescaped (the
control characters below U+0020 it must escape)."""


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class Recovered:
    """What an interrupted run's journal held."""

    header: dict[str, Any]
    confirmed: pl.DataFrame
    """Confirmed levels: snapshot columns."""
    transaction_ids: list[str] = field(default_factory=list)
    in_flight: list[int] = field(default_factory=list)
    """Batches recorded as sending but never (wholly) confirmed."""
    unconfirmed: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_KEY_SCHEMA))
    """KEY of every item sent but never confirmed: the store may have applied it."""

    def applied_to(self, snapshot: pl.DataFrame) -> pl.DataFrame:
        """``snapshot`` as it stands once this journal is replayed, in memory: confirmed
        levels set, items sent without a confirmation unknown (null quantity)."""
        unknown = self.unconfirmed.unique().select(*KEY, pl.lit(None, pl.Int64).alias("quantity"))
        update = pl.concat([self.confirmed, unknown]).select(snapshot.columns)
        return pl.concat([snapshot.join(update, on=KEY, how="anti"), update])


class Journal:
    """The append-only journal ``<state>/<store>/journal.jsonl`` of the current run."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "journal.jsonl"
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()  # records are appended from worker threads
        self._sync_lock = threading.Lock()  # one fsync at a time; the others wait for it
        self._written = 0  # records written to the file (flushed to the kernel)
        self._synced = 0  # records known to be on disk
        self.fsyncs = 0
        self._prepared: dict[int, tuple[int, str, str]] = {}
        """Batch -> (items, its sending line, its whole confirmation's columns), built
        ahead by :meth:`prepare`."""

    def exists(self) -> bool:
        return os.path.lexists(self.path)

    def begin(self, header: dict[str, Any]) -> None:
        """Start a fresh journal for a run (the previous one must have been recovered)."""
        make_private_dir(self.path.parent)
        with self._lock:
            self._prepared.clear()  # built for another run's batches
        self._fh = open_nofollow(self.path, "w")
        try:
            self._append({"type": "begin", **header})
        except OSError:
            # A full disk can leave part of the first record: the file holds nothing else
            # (opened truncated), so it goes, or the next run would "recover" a torn run.
            fh, self._fh = self._fh, None
            with contextlib.suppress(OSError):
                if fh is not None:
                    fh.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise

    def prepare(self, batch: int, levels: pl.DataFrame) -> None:
        """Serialise ``batch``'s records ahead of time (KEY + quantity of all its items),
        while the batch before it is out: :meth:`sending`, and :meth:`confirmed` of the
        whole batch, then only write them. Thread-safe; nothing is written here."""
        # One serialisation for both: the sending record is the confirmed one's columns
        # without the last, "quantity" (a list of numbers: its name cannot occur before).
        confirmed = _columns_json(levels, list(SNAPSHOT_SCHEMA))[1:-1]
        keys = confirmed[:confirmed.rindex(',"quantity":[')]
        sending = f'{{"type":"sending","batch":{batch},"items":{levels.height},{keys}}}\n'
        with self._lock:
            self._prepared[batch] = (levels.height, sending, confirmed)
            while len(self._prepared) > _PREPARED_MAX:  # a batch never confirmed (refused)
                del self._prepared[next(iter(self._prepared))]

    def sending(self, batch: int, keys: pl.DataFrame, *, durable: bool = True) -> None:
        """Record the items (KEY columns) about to be sent in ``batch``; on disk when this
        returns (``durable=False``: written to the file only, for a caller that records
        several batches and sends none before the last one's record is on disk)."""
        with self._lock:
            ready = self._prepared.get(batch)
        if ready is not None and ready[0] == keys.height:
            self._write(ready[1], durable=durable)
            return
        cols = {c: keys[c].to_list() for c in KEY}
        self._append({"type": "sending", "batch": batch, "items": keys.height, **cols},
                     durable=durable)

    def confirmed(self, batch: int, transaction_id: str, levels: pl.DataFrame, *,
                  durable: bool = True) -> None:
        """Record levels the store confirmed with ``transaction_id`` (rows of ``batch``).

        ``durable=False`` returns once the record is written to the file (a kill cannot
        lose it) without waiting for the disk: the next durable record's fsync (the next
        batch's ``sending``, before it goes out) or :meth:`close` covers it. A
        confirmation lost with the machine's power only makes its items unknown.
        """
        with self._lock:
            ready = self._prepared.pop(batch, None) if levels.height else None
        if ready is not None and ready[0] == levels.height:  # the whole batch: as prepared
            head = json.dumps({"type": "confirmed", "batch": batch,
                               "transaction_id": transaction_id}, separators=(",", ":"))
            self._write(head[:-1] + "," + ready[2] + "\n", durable=durable)
            return
        cols = {c: levels[c].to_list() for c in SNAPSHOT_SCHEMA}
        self._append({"type": "confirmed", "batch": batch, "transaction_id": transaction_id,
                      **cols}, durable=durable)

    def _append(self, record: dict[str, Any], *, durable: bool = True) -> None:
        self._write(json.dumps(record, separators=(",", ":")) + "\n", durable=durable)

    def _write(self, line: str, *, durable: bool) -> None:
        """Write one record line and, if ``durable``, return once it is on disk (group
        commit: one fsync covers every record written while the fsync before it ran)."""
        with self._lock:
            assert self._fh is not None, "journal not begun"
            self._fh.write(line)
            self._fh.flush()  # in the kernel now: any fsync from here on covers it
            self._written += 1
            mine = self._written
        if durable:
            self._sync(mine)

    def _sync(self, mine: int) -> None:
        with self._sync_lock:
            if self._synced >= mine:
                return  # an fsync that started after this write has finished
            with self._lock:
                assert self._fh is not None, "journal closed while writing"
                upto, fd = self._written, self._fh.fileno()
            os.fsync(fd)
            self.fsyncs += 1
            self._synced = upto

    def close(self, *, remove: bool) -> None:
        """Close the journal; remove it once its levels are safely in the snapshot."""
        if self._fh is not None:
            if not remove and self._synced < self._written:
                with contextlib.suppress(OSError):  # kept for resume: on disk, if it can be
                    self._sync(self._written)
            self._fh.close()
            self._fh = None
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def recover(self) -> Recovered:
        """Read an interrupted run's journal; a torn last line is ignored."""
        header: dict[str, Any] = {}
        frames: list[pl.DataFrame] = []
        sent: list[pl.DataFrame] = []
        txids: list[str] = []
        sending: set[int] = set()
        done: set[int] = set()
        with open_nofollow(self.path, "r") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    break  # killed mid-write: that record never happened
                kind = rec.get("type")
                if kind == "begin":
                    header = rec
                elif kind == "sending":
                    sending.add(int(rec["batch"]))
                    sent.append(pl.DataFrame({c: rec[c] for c in KEY}, schema=_KEY_SCHEMA))
                elif kind == "confirmed":
                    frames.append(pl.DataFrame({c: rec[c] for c in SNAPSHOT_SCHEMA},
                                               schema=SNAPSHOT_SCHEMA))
                    txids.append(str(rec["transaction_id"]))
                    done.add(int(rec["batch"]))
        confirmed = pl.concat(frames) if frames else pl.DataFrame(schema=SNAPSHOT_SCHEMA)
        all_sent = pl.concat(sent) if sent else pl.DataFrame(schema=_KEY_SCHEMA)
        unconfirmed = all_sent.join(confirmed.select(KEY), on=KEY, how="anti")
        return Recovered(header=header, confirmed=confirmed, transaction_ids=txids,
                         in_flight=sorted(sending - done), unconfirmed=unconfirmed)
