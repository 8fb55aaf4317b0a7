"""The snapshot store: the levels a store last accepted, per location and item.

One Parquet file per (API host, store hash) under the state directory:
``<state-dir>/stores/<api host>/<store hash>/snapshot.parquet`` (see :func:`store_dir`).
It is only ever replaced atomically (write a temporary file, fsync, rename). A row's
``quantity`` is the level the store confirmed, or null: the level is unknown (a write
was sent but never confirmed, so the store may or may not have applied it). An unknown
item is still an item the store has: diffs send it, ``--zero-missing`` still sees it.

State files never follow symbolic links and are created 0600 in 0700 directories.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import polars as pl

from invsync.disk import make_private_dir, open_nofollow, write_atomic
from invsync.tables import KEY, SNAPSHOT_SCHEMA

__all__ = ["KEY", "SNAPSHOT_SCHEMA", "SnapshotStore", "make_private_dir", "open_nofollow",
           "store_dir", "write_atomic"]

DEFAULT_API_HOST = "api.bigcommerce.com"


def _safe_name(store_hash: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in store_hash) or "_"


def path_part(text: str) -> str:
    """``text`` as one path component, injectively (distinct texts, distinct names)."""
    name = quote(text, safe="-_.")
    if name in ("", ".", ".."):
        name = name.replace(".", "%2E") or "%00"
    return name


_LOOPBACK = frozenset(("localhost", "127.0.0.1", "::1", "ip6-localhost"))


def api_host(api_url: str) -> str:
    """The normalised host (and a non-default port) of ``api_url``: what names the store.

    Spellings of one URL are one store: letter case, a trailing dot or slash, the default
    port (443 or 80) written out, and this machine's loopback names (``localhost``,
    ``127.0.0.1``, ``::1``). Any other host name and its IP address stay two spellings
    only the operator can unify (the ``store_id`` setting).
    """
    parts = urlsplit(api_url if "//" in api_url else f"https://{api_url}")
    host = (parts.hostname or "").lower().rstrip(".")
    if host in _LOOPBACK:
        host = "localhost"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port and port not in (443, 80) else host


def store_dir(state_dir: Path, api_url: str, store_hash: str) -> Path:
    """``<state-dir>/stores/<api host>/<store hash>``: the state of one store of one API."""
    return Path(state_dir) / "stores" / path_part(api_host(api_url)) / path_part(store_hash)


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def last_write_file(frame: pl.DataFrame) -> bytes:
    """What :meth:`SnapshotStore.write_last_write` writes for ``frame``, as bytes."""
    return _parquet(frame)


class SnapshotStore:
    """Reads and atomically updates the snapshot of one store."""

    def __init__(self, state_dir: Path, store_hash: str,
                 api_url: str = f"https://{DEFAULT_API_HOST}", profile: str | None = None) -> None:
        self.store_dir = store_dir(state_dir, api_url, store_hash)
        """The store's folder (API host + store hash): its lock is shared by every profile."""
        # Each config profile keeps its own snapshot and journal, so a rehearsal profile
        # and the real one never share one even when they name the same store.
        self.dir = (self.store_dir / f"profile-{path_part(profile)}" if profile
                    else self.store_dir)
        self.path = self.dir / "snapshot.parquet"
        self.meta_path = self.dir / "state.json"
        self.legacy_dir = Path(state_dir) / _safe_name(store_hash)
        """Where earlier versions kept this store's state (never read: see README)."""

    def load(self) -> pl.DataFrame:
        """The snapshot, or an empty frame when there is none yet (null quantity: unknown)."""
        try:
            fh = open_nofollow(self.path, "rb")
        except FileNotFoundError:
            return pl.DataFrame(schema=SNAPSHOT_SCHEMA)
        with fh:
            return pl.read_parquet(fh).cast(SNAPSHOT_SCHEMA)  # type: ignore[arg-type]

    def merge(self, accepted: pl.DataFrame, forget: pl.DataFrame | None = None) -> int:
        """Record ``accepted`` levels (KEY + quantity); mark ``forget`` keys unknown; atomically.

        An item the store may have applied without confirming it keeps its row with a null
        (unknown) level, so the next run sends it whatever the file says and ``--zero-missing``
        still knows it exists. Returns the snapshot's size.
        """
        current = self.load()
        update = accepted.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA)  # type: ignore[arg-type]
        if forget is not None and forget.height:
            unknown = (forget.select(KEY).cast({"location_id": pl.Int64}).unique()
                       .join(update, on=KEY, how="anti")
                       .with_columns(quantity=pl.lit(None, pl.Int64)))
            already = current.filter(pl.col("quantity").is_null()).join(
                unknown, on=KEY, how="semi").height
            if already < unknown.height:
                update = pl.concat([update, unknown.select(list(SNAPSHOT_SCHEMA))])
        kept = current.join(update, on=KEY, how="anti")
        if update.height == 0:
            return current.height  # nothing learnt, nothing forgotten: leave the file alone
        merged = pl.concat([kept, update])
        self._write(merged)
        return merged.height

    def merged_file(self, accepted: pl.DataFrame) -> bytes:
        """The snapshot file :meth:`merge` would write for ``accepted`` (nothing forgotten),
        built now from the snapshot as it is: to be written later by :meth:`write_file`,
        when the store has confirmed every one of them (the work done while they are out)."""
        update = accepted.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA)  # type: ignore[arg-type]
        merged = pl.concat([self.load().join(update, on=KEY, how="anti"), update])
        return _parquet(merged.sort(KEY))

    def write_file(self, data: bytes) -> None:
        """Replace the snapshot with ``data`` (from :meth:`merged_file`), atomically."""
        make_private_dir(self.dir)
        write_atomic(self.path, data, prefix=".snapshot-", suffix=".parquet")

    def replace(self, frame: pl.DataFrame) -> None:
        """Replace the whole snapshot with ``frame`` (KEY + quantity), atomically."""
        self._write(frame.select(list(SNAPSHOT_SCHEMA)).cast(SNAPSHOT_SCHEMA))  # type: ignore[arg-type]

    def clean_temp_files(self) -> int:
        """Remove temporary files a killed run left behind (call with the lock held)."""
        removed = 0
        if not self.dir.is_dir():
            return 0
        for entry in self.dir.iterdir():
            if entry.name.startswith((".snapshot-", ".state.json-")):
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                    removed += 1
        return removed

    def _write(self, frame: pl.DataFrame) -> None:
        make_private_dir(self.dir)
        write_atomic(self.path, frame.sort(KEY).write_parquet, prefix=".snapshot-",
                     suffix=".parquet")

    def write_last_write(self, frame: pl.DataFrame | bytes) -> None:
        """Record what the last run that wrote set (KEY, ``before``, ``quantity``); or the
        file's bytes, :func:`last_write_file` of that frame."""
        make_private_dir(self.dir)
        write_atomic(self.dir / "last_write.parquet",
                     frame if isinstance(frame, bytes) else frame.write_parquet,
                     prefix=".snapshot-last-", suffix=".parquet")

    def load_last_write(self) -> pl.DataFrame:
        """What the last run that wrote set: KEY, ``before`` (null: unknown), ``quantity``."""
        try:
            fh = open_nofollow(self.dir / "last_write.parquet", "rb")
        except FileNotFoundError:
            return pl.DataFrame(schema={**SNAPSHOT_SCHEMA, "before": pl.Int64})
        with fh:
            return pl.read_parquet(fh)

    def next_run_seq(self) -> int:
        """Count one more run of this store and profile (call with the lock held): runs are
        ordered by this number, never by the clock (which may step back)."""
        path = self.dir / "run_seq"
        try:
            with open_nofollow(path, "r") as fh:
                current = int(fh.read().strip() or 0)
        except (OSError, ValueError):
            current = 0
        make_private_dir(self.dir)
        write_atomic(path, f"{current + 1}\n".encode())
        return current + 1

    def read_meta(self) -> dict[str, Any]:
        """Facts about past runs (e.g. the last successful run's row count)."""
        try:
            with open_nofollow(self.meta_path, "r") as fh:
                return dict(json.loads(fh.read()))
        except (OSError, ValueError, TypeError):
            return {}

    def write_meta(self, meta: dict[str, Any]) -> None:
        """Replace the facts about past runs atomically."""
        make_private_dir(self.dir)
        write_atomic(self.meta_path, json.dumps(meta, indent=2).encode())


