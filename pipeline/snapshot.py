"""The snapshot store: the levels a store last accepted, per location and item.

One Parquet file per store hash under the state directory. It is only ever replaced
atomically (write a temporary file, fsync, rename), and only with items the store
confirmed, so a failed or partial run leaves it as it was for those items.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

KEY = ["location_id", "identifier", "item_key"]
SNAPSHOT_SCHEMA = {"location_id": pl.Int64, "identifier": pl.String, "item_key": pl.String,
                   "quantity": pl.Int64}


def _safe_name(store_hash: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in store_hash) or "_"


class SnapshotStore:
    """Reads and atomically updates the snapshot of one store."""

    def __init__(self, state_dir: Path, store_hash: str, profile: str | None = None) -> None:
        self.store_dir = Path(state_dir) / _safe_name(store_hash)
        """The store's folder: its lock is shared by every profile."""
        # Each config profile keeps its own snapshot and journal, so a rehearsal profile
        # and the real one never share one even when they name the same store.
        self.dir = (self.store_dir / f"profile-{_safe_name(profile)}" if profile
                    else self.store_dir)
        self.path = self.dir / "snapshot.parquet"
        self.meta_path = self.dir / "state.json"

    def load(self) -> pl.DataFrame:
        """The snapshot, or an empty frame when there is none yet."""
        if not self.path.exists():
            return pl.DataFrame(schema=SNAPSHOT_SCHEMA)
        return pl.read_parquet(self.path).cast(SNAPSHOT_SCHEMA)  # type: ignore[arg-type]

    def merge(self, accepted: pl.DataFrame, forget: pl.DataFrame | None = None) -> int:
        """Record ``accepted`` levels (KEY + quantity) and drop the ``forget`` keys, atomically.

        An item the store may have applied without confirming it is forgotten: its level is
        unknown, so the next run sends it whatever the file says. Returns the snapshot's size.
        """
        current = self.load()
        update = accepted.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA)  # type: ignore[arg-type]
        kept = current.join(update, on=KEY, how="anti")
        if forget is not None and forget.height:
            kept = kept.join(forget.select(KEY).cast({"location_id": pl.Int64}),
                             on=KEY, how="anti")
        if update.height == 0 and kept.height == current.height:
            return current.height  # nothing learnt, nothing forgotten: leave the file alone
        merged = pl.concat([kept, update])
        self._write(merged)
        return merged.height

    def replace(self, frame: pl.DataFrame) -> None:
        """Replace the whole snapshot with ``frame`` (KEY + quantity), atomically."""
        self._write(frame.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA))  # type: ignore[arg-type]

    def _write(self, frame: pl.DataFrame) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".snapshot-", suffix=".parquet")
        os.close(fd)
        try:
            frame.sort(KEY).write_parquet(tmp)
            _fsync(tmp)
            os.replace(tmp, self.path)
            _fsync_dir(self.dir)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def read_meta(self) -> dict[str, Any]:
        """Facts about past runs (e.g. the last successful run's row count)."""
        try:
            return dict(json.loads(self.meta_path.read_text()))
        except (OSError, ValueError):
            return {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Replace the facts about past runs atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.meta_path, json.dumps(meta, indent=2).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        _fsync(str(path))
