"""Fetch a source's file once it is whole and fresh, and remember what was processed.

:func:`fetch` picks the file (a path, or a glob with ``pick``), waits until it is settled
(size and mtime stable for ``settle_s``, or its marker file exists), refuses a stale one
(``max_age``), and copies it into the source's state folder with its sha256. The state
folder (``<state-dir>/sources/<key>/``) also holds ``last.json`` (the last successful
run's sha256, ETag and Last-Modified: a byte-identical file is "unchanged") and, for
``invsync watch``, ``ledger.jsonl`` (one line per processed file) and the watch lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invsync.clock import utc_now
from invsync.disk import make_private_dir, write_atomic
from invsync.errors import UsageError
from invsync.sources.errors import NotReadyError, SourceError, StaleFileError
from invsync.sources.remote import Download, Remote, RemoteFile, copy_file, remote_for
from invsync.sources.spec import SourceSpec

log = logging.getLogger("invsync.sources")

Sleep = Callable[[float], None]
Clock = Callable[[], float]


@dataclass
class Fetched:
    """A file fetched from a source, ready to be read from ``local``."""

    spec: SourceSpec
    file: RemoteFile
    local: Path
    sha256: str
    size: int
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: str = field(default_factory=utc_now)
    unchanged_since: str | None = None
    """The run id of the last successful run of this source, when the file is the same."""

    @property
    def url(self) -> str:
        """Where the file was, as it may be shown (no password): ``sftp://u@host/out/x.csv``."""
        spec = self.spec
        if spec.is_http:
            return spec.display
        if spec.scheme == "file":
            return self.file.path
        user = f"{spec.username}@" if spec.username else ""
        port = f":{spec.port}" if spec.port else ""
        if spec.scheme in ("s3", "gs", "gcs", "az", "abfs"):
            return f"{spec.scheme}://{self.file.path.lstrip('/')}"
        return f"{spec.scheme}://{user}{spec.host}{port}{self.file.path}"

    def record(self) -> dict[str, Any]:
        """What ``source.json`` in the run folder (and report.json's ``origin.source``) says."""
        return {"source": self.spec.display, "name": self.spec.name, "url": self.url,
                "path": self.file.shown_path,
                "size": self.size, "mtime": self.file.mtime, "sha256": self.sha256,
                "etag": self.etag, "last_modified": self.last_modified,
                "fetched_at": self.fetched_at}


class SourceState:
    """The state folder of one source: last successful run, ledger, watch lock, downloads."""

    def __init__(self, state_dir: Path, spec: SourceSpec) -> None:
        self.dir = state_dir / "sources" / spec.key
        self.last_path = self.dir / "last.json"
        self.ledger_path = self.dir / "ledger.jsonl"
        self.lock_path = self.dir / "watch.lock"
        self.downloads = self.dir / "fetched"

    def last(self) -> dict[str, Any]:
        """The last successful run's record (empty if none)."""
        try:
            data = json.loads(self.last_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remember(self, fetched: Fetched, run_id: str) -> None:
        """Record ``fetched`` as processed by successful run ``run_id``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        record = {**fetched.record(), "run_id": run_id}
        write_atomic(self.last_path, json.dumps(record, indent=2).encode())

    def ledger(self) -> list[dict[str, Any]]:
        """Every line of the watch ledger (a torn last line is skipped)."""
        out = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.ledger_path.read_text(encoding="utf-8").splitlines():
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def add_to_ledger(self, entry: dict[str, Any]) -> None:
        """Append one processed file to the ledger (fsynced before anything else happens)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.ledger_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def pick(spec: SourceSpec, files: list[RemoteFile]) -> RemoteFile:
    """The one file to read from what the source's path or glob matched."""
    if not files:
        raise StaleFileError(f"{spec.display}: no file matches (the export did not arrive?)")
    if len(files) == 1:
        return files[0]
    if spec.pick == "only":
        names = ", ".join(f.name for f in files[:5]) + (" …" if len(files) > 5 else "")
        raise UsageError(f"{spec.display}: {len(files)} files match ({names}): pass "
                         f"--pick newest (or set pick in [sources.NAME]) to read one of them")
    ordered = sorted(files, key=lambda f: (f.mtime or 0.0, f.path))
    return ordered[-1] if spec.pick == "newest" else ordered[0]


def check_fresh(spec: SourceSpec, file: RemoteFile, now: float) -> None:
    """Raise :class:`StaleFileError` if ``file`` is older than the source's ``max_age``."""
    if spec.max_age_s is None or file.mtime is None:
        return
    age = now - file.mtime
    if age > spec.max_age_s:
        raise StaleFileError(
            f"{spec.display}: {file.name} is {_age(age)} old, older than max_age "
            f"({_age(spec.max_age_s)}): the export may have stopped arriving; nothing was sent")


def _age(seconds: float) -> str:
    if seconds >= 86400 * 2:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def marker_path(spec: SourceSpec, file: RemoteFile) -> str | None:
    """The marker file that says ``file`` is complete (``stock.csv.done``), if configured."""
    return file.path + spec.marker if spec.marker else None


def wait_settled(remote: Remote, file: RemoteFile, *, sleep: Sleep = time.sleep,
                 clock: Clock = time.monotonic) -> RemoteFile:
    """``file`` once it is whole: its marker file exists, or its size and mtime stayed the
    same for ``settle_s``. Raise :class:`NotReadyError` after ``settle_timeout_s``."""
    spec = remote.spec
    deadline = clock() + spec.settle_timeout
    marker = marker_path(spec, file)
    if marker is not None:
        while not remote.exists(marker):
            if clock() >= deadline:
                raise NotReadyError(f"{spec.display}: {file.name} has no marker file "
                                    f"{os.path.basename(marker)} yet: not read; nothing was sent")
            sleep(min(1.0, spec.settle_s or 1.0))
        return remote.stat(file.path) or file
    if spec.settle_s <= 0 or spec.scheme in ("s3", "gs", "gcs", "az", "abfs", "http", "https"):
        return file  # an object or a response is whole once it can be seen
    current = file
    stable_since = clock()
    while True:
        sleep(min(spec.settle_s, max(0.05, spec.settle_s / 4)))
        now = remote.stat(file.path)
        if now is None:
            raise NotReadyError(f"{spec.display}: {file.name} disappeared while it settled")
        if (now.size, now.mtime) != (current.size, current.mtime):
            current, stable_since = now, clock()
        elif clock() - stable_since >= spec.settle_s:
            return now
        if clock() >= deadline:
            raise NotReadyError(f"{spec.display}: {file.name} is still being written (it kept "
                                f"changing for {spec.settle_timeout:g} s): not read; nothing "
                                f"was sent")


def download(remote: Remote, file: RemoteFile, state: SourceState, *,
             force: bool = False) -> Fetched:
    """Copy ``file`` into the state folder and hash it; say if it is the last run's file."""
    spec = remote.spec
    last = state.last()
    if (not force and file.etag and last.get("etag") == file.etag
            and last.get("size") == file.size and last.get("path") == file.shown_path):
        # The server's ETag says this is the object the last successful run read.
        return Fetched(spec=spec, file=file, local=state.downloads / file.name,
                       sha256=str(last.get("sha256", "")), size=int(last.get("size") or 0),
                       etag=file.etag, unchanged_since=str(last.get("run_id") or "?"))
    name = file.name if file.name not in ("", ".", "..") else "download"
    incoming = state.downloads / f".incoming-{os.getpid()}-{name}"
    done: Download = remote.download(
        file, incoming, etag=None if force else last.get("etag"),
        last_modified=None if force else last.get("last_modified"))
    if done.not_modified:
        return Fetched(spec=spec, file=file, local=state.downloads / name,
                       sha256=str(last.get("sha256", "")), size=int(last.get("size") or 0),
                       etag=done.etag, last_modified=done.last_modified,
                       unchanged_since=str(last.get("run_id") or "?"))
    found = done.file or file
    if found.size is not None and done.size != found.size and not spec.is_http:
        raise NotReadyError(f"{spec.display}: {file.name} changed while it was read "
                            f"({done.size} of {found.size} bytes): not read; nothing was sent")
    # Each content in a folder of its own: two runs at once never read each other's bytes,
    # and an interrupted run's input is still there for `invsync resume`.
    local = state.downloads / done.sha256[:16] / name
    make_private_dir(local.parent)
    os.replace(incoming, local)
    _prune(state.downloads, keep=local.parent)
    fetched = Fetched(spec=spec, file=found, local=local, sha256=done.sha256, size=done.size,
                      etag=done.etag or found.etag, last_modified=done.last_modified)
    if not force and last.get("sha256") == done.sha256:
        fetched.unchanged_since = str(last.get("run_id") or "?")
    return fetched


KEEP_DOWNLOADS = 5
"""How many past downloads of a source its state folder keeps (run folders keep theirs)."""


def _prune(downloads: Path, keep: Path) -> None:
    """Remove all but the newest :data:`KEEP_DOWNLOADS` download folders, and what a
    killed process left half-downloaded (``.incoming-<pid>-...``)."""
    for part in downloads.glob(".incoming-*"):
        pid = part.name.split("-", 2)[1]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                part.unlink()
    folders = sorted((p for p in downloads.iterdir() if p.is_dir() and p != keep),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[KEEP_DOWNLOADS - 1:]:
        with contextlib.suppress(OSError):
            for item in old.iterdir():
                item.unlink()
            old.rmdir()


def _alive(pid: int) -> bool:
    """Is process ``pid`` running (on this machine)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def fetch(spec: SourceSpec, state_dir: Path, *, force: bool = False,
          sleep: Sleep = time.sleep) -> Fetched:
    """Pick, settle, check and download the source's file (see the module's docstring).

    Raises :class:`StaleFileError` (exit 3) for a stale or missing file,
    :class:`NotReadyError` (exit 3) for one still being written, :class:`SourceError`
    (exit 2) when the source cannot be reached or read, :class:`UsageError` (exit 64) for
    an ambiguous glob or a missing extra.
    """
    remote = remote_for(spec)
    try:
        found = [f for f in remote.list() if not (spec.marker and f.path.endswith(spec.marker))]
        file = pick(spec, found)  # a marker file is never the file read
        check_fresh(spec, file, time.time())
        file = wait_settled(remote, file, sleep=sleep)
        check_fresh(spec, file, time.time())
        return download(remote, file, SourceState(state_dir, spec), force=force)
    finally:
        remote.close()


def keep_in_run_folder(fetched: Fetched, folder: Path) -> None:
    """Keep the fetched bytes and their record (``source.json``) in the run folder."""
    if not folder.is_dir():
        return
    copy_file(fetched.local, folder / "fetched" / fetched.local.name)
    write_atomic(folder / "source.json", json.dumps(
        {**fetched.record(), "local": str(folder / "fetched" / fetched.local.name)},
        indent=2).encode())


def after(spec: SourceSpec, file: RemoteFile, succeeded: bool) -> str | None:
    """Apply ``on_success``/``on_failure`` to ``file`` (and its marker); say what was done.

    Called only once the run's outcome is recorded. Errors are raised as
    :class:`SourceError` for the caller to note.
    """
    action = spec.on_success if succeeded else spec.on_failure
    if not action:
        return None
    remote = remote_for(spec)
    try:
        now = remote.stat(file.path)
        if now is None:
            return f"{file.name} was no longer at the source: nothing to {action}"
        if (now.size, now.mtime) != (file.size, file.mtime) or (
                now.etag and file.etag and now.etag != file.etag):
            # A new export under the same name: its bytes were not read by this run.
            raise SourceError(f"{file.name} changed at the source since it was read: left "
                              f"where it is, for the next run")
        marker = marker_path(spec, file)
        targets = [file.path] + ([marker] if marker and remote.exists(marker) else [])
        if action == "delete":
            for path in targets:
                remote.delete(path)
            return f"deleted {file.name} at the source"
        folder = action.removeprefix("move:")
        moved = [remote.move(path, folder) for path in targets]
        return f"moved {file.name} at the source to {moved[0]}"
    finally:
        remote.close()


__all__ = ["Fetched", "NotReadyError", "SourceError", "SourceState", "StaleFileError",
           "after", "check_fresh", "download", "fetch", "keep_in_run_folder", "pick",
           "wait_settled"]
