"""Crash safety: a per-store lock and a write-ahead journal of what was sent and confirmed.

Before a batch is sent the journal records ``sending``; when the store confirms (part
of) it, the journal records the confirmed levels with their transaction id, fsynced.
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl

from pipeline.errors import LockedError
from pipeline.snapshot import KEY, SNAPSHOT_SCHEMA

_KEY_SCHEMA = {k: SNAPSHOT_SCHEMA[k] for k in KEY}


class StoreLock:
    """An exclusive ``flock`` on ``<state>/<store>/lock``; the kernel frees it if we die."""

    def __init__(self, directory: Path, store_hash: str) -> None:
        self.path = directory / "lock"
        self.store_hash = store_hash
        self._fh: IO[str] | None = None
        self.took_over: dict[str, Any] | None = None

    def acquire(self, run_id: str, wait_s: float = 0.0,
                on_wait: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Take the lock or raise :class:`LockedError` naming the run that holds it.

        With ``wait_s`` > 0, wait up to that long for the holder to finish first
        (``on_wait`` is told once, with the holder, when waiting starts).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
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
                       f"started {holder.get('started', '?')})") if holder else "another run"
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
                             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        fh.flush()
        self._fh = fh

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
    unconfirmed: pl.DataFrame | None = None
    """KEY of every item sent but never confirmed: the store may have applied it."""


class Journal:
    """The append-only journal ``<state>/<store>/journal.jsonl`` of the current run."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "journal.jsonl"
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()  # records are appended from worker threads

    def exists(self) -> bool:
        return self.path.exists()

    def begin(self, header: dict[str, Any]) -> None:
        """Start a fresh journal for a run (the previous one must have been recovered)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - held for the run
        self._append({"type": "begin", **header})

    def sending(self, batch: int, keys: pl.DataFrame) -> None:
        """Record the items (KEY columns) about to be sent in ``batch``."""
        cols = {c: keys[c].to_list() for c in KEY}
        self._append({"type": "sending", "batch": batch, "items": keys.height, **cols})

    def confirmed(self, batch: int, transaction_id: str, levels: pl.DataFrame) -> None:
        """Record levels the store confirmed with ``transaction_id``."""
        cols = {c: levels[c].to_list() for c in SNAPSHOT_SCHEMA}
        self._append({"type": "confirmed", "batch": batch, "transaction_id": transaction_id,
                      **cols})

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            assert self._fh is not None, "journal not begun"
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self, *, remove: bool) -> None:
        """Close the journal; remove it once its levels are safely in the snapshot."""
        if self._fh is not None:
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
        with open(self.path, encoding="utf-8") as fh:
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
