"""Past runs: every run folder under the report directory, newest first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invsync.errors import UsageError


@dataclass(frozen=True)
class PastRun:
    """One run folder and its ``report.json``."""

    folder: Path
    report: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.report.get("run_id", self.folder.name))

    def row(self) -> dict[str, Any]:
        """The run as one line of ``invsync runs``."""
        r, counts = self.report, self.report.get("counts") or {}
        return {
            "run_id": self.run_id, "started_at": r.get("started_at"), "status": r.get("status"),
            "command": r.get("command", "sync"),
            "store": (r.get("store") or {}).get("store_hash"),
            "profile": (r.get("store") or {}).get("profile"),
            "file": (r.get("input") or {}).get("path"), "rows": counts.get("rows", 0),
            "changed": counts.get("changed", 0), "accepted": counts.get("accepted", 0),
            "rejected": counts.get("rejected", 0),
            "transactions": len(r.get("transaction_ids") or []),
            "exit_code": r.get("exit_code"), "folder": str(self.folder),
            "not_resumed": False,
        }


def list_runs(report_dir: Path, store_hash: str | None = None, *,
              profile: str | None = None) -> list[PastRun]:
    """Every readable run under ``report_dir`` (optionally one store's or profile's), newest
    first."""
    runs = []
    for path in Path(report_dir).glob("*/report.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a run killed before writing its report leaves no report.json
        if store_hash and (report.get("store") or {}).get("store_hash") != store_hash:
            continue
        if profile and (report.get("store") or {}).get("profile") != profile:
            continue
        runs.append(PastRun(path.parent, report))
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def wrote_report(report_dir: Path, run_id: object) -> bool:
    """Whether run ``run_id`` wrote its run folder under ``report_dir`` (one killed before
    its end did not)."""
    return bool(run_id) and (Path(report_dir) / str(run_id) / "report.json").is_file()


def find_run(report_dir: Path, run_id: str, profile: str | None = None) -> PastRun:
    """The run whose id is ``run_id`` or starts with it (with ``profile``: among its runs).

    ``last`` is the newest run that read its file (one that failed before, e.g. on an
    unreadable file, has nothing to show or verify).
    """
    runs = list_runs(report_dir, profile=profile)
    if run_id == "last":
        read = [r for r in runs if (r.report.get("input") or {}).get("sha256")]
        if read:
            return read[0]
        raise UsageError(f"no run under {report_dir} has read a file yet")
    matches = [r for r in runs if r.run_id == run_id] or [
        r for r in runs if r.run_id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run {run_id!r} under {report_dir}")
    raise UsageError(f"{run_id!r} matches {len(matches)} runs; give more of the id")


def finished_by(report_dir: Path, run_id: str, profile: str | None = None) -> PastRun | None:
    """The run that finished run ``run_id`` (an id or its start) when that run stopped
    before writing its report (killed): its ``resumed_from``, with no run folder of its
    own. None if no run did, or if ``run_id`` starts the id of a run that has a folder."""
    runs = list_runs(report_dir, profile=profile)
    if not run_id or any(run.run_id.startswith(run_id) for run in runs):
        return None
    for run in runs:
        resumed = str(run.report.get("resumed_from") or "")
        if resumed.startswith(run_id) and run.report.get("resumed_from_no_report") \
                and run.report.get("status") != "dry_run":
            return run
    return None


SUCCESSFUL = ("succeeded", "partial")
"""Statuses of a run that read its file and sent it: what a normal night looks like."""


def source_key(source: str | None, path: str | None) -> str:
    """The source a run's file comes from, for the shrunken-file brake and ``volume_drop``.

    A ``source`` name given by a config or an upload (anything but the default ``cli``)
    names the source; otherwise the file's absolute path does: a 20-row correction file
    is another source than the nightly export.
    """
    if source and source != "cli":
        return f"name:{source}"
    if not path:
        return "path:"
    return f"path:{Path(path).expanduser().absolute()}"


def last_successful(report_dir: Path, store_hash: str | None, profile: str | None, *,
                    before: str | None = None,
                    source: tuple[str | None, str | None] | None = None
                    ) -> dict[str, Any] | None:
    """The report of the newest ``succeeded``/``partial`` run (not a dry run) of this store
    and profile, older than run ``before``; with ``source`` (name, path), of that source."""
    wanted = source_key(*source) if source is not None else None
    for run in list_runs(report_dir, store_hash):
        r = run.report
        if before is not None and run.run_id >= before:
            continue
        if (r.get("store") or {}).get("profile") != profile or r.get("status") not in SUCCESSFUL:
            continue
        if r.get("command", "sync") not in ("sync", "resume"):
            continue
        if wanted is not None:
            given = r.get("input") or {}
            if source_key(given.get("source"), given.get("path")) != wanted:
                continue
        return r
    return None


@dataclass(frozen=True)
class OpenRun:
    """A run that did not finish: killed (``kill -9``, a power cut) or interrupted with
    batches unconfirmed. Found from its journal and its lock file, not from a report."""

    run_id: str
    store_dir: Path
    profile: str | None
    input: str | None
    started: str | None
    journal: Path | None
    running: bool
    """Its lock is still held: the run is going on now."""

    def row(self) -> dict[str, Any]:
        """The run as one line of ``invsync runs`` (``status`` interrupted, not resumed)."""
        return {
            "run_id": self.run_id, "started_at": self.started,
            "status": "running" if self.running else "interrupted",
            "not_resumed": not self.running, "command": "sync",
            "store": self.store_dir.name, "profile": self.profile, "file": self.input,
            "rows": 0, "changed": 0, "accepted": 0, "rejected": 0, "transactions": 0,
            # No run folder: it has written no report (it is running, or was killed first).
            "exit_code": None, "folder": None,
            "journal": str(self.journal) if self.journal else None,
        }


def _lock_record(store_dir: Path) -> tuple[dict[str, Any] | None, bool]:
    """The run a store's lock file names (None: a clean lock), and whether it is held."""
    from invsync.state.journal import StoreLock

    lock = StoreLock(store_dir, store_dir.name)
    try:
        text = lock.path.read_text(encoding="utf-8")
    except OSError:
        return None, False
    try:
        recorded = json.loads(text) if text.strip() else None
    except ValueError:
        recorded = None
    held = lock.holder() is not None
    return (recorded if isinstance(recorded, dict) else None), held


def _started_of(run_id: str) -> str | None:
    """When run ``run_id`` started, as its id says (``20261207T005940.001Z-ccb112``): a run
    stopped by a signal released its lock, whose record said it."""
    import re

    m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)(?:\.\d+)?Z-[0-9a-f]+", run_id)
    return None if m is None else "{}-{}-{}T{}:{}:{}Z".format(*m.groups())


def open_runs(state_dir: Path, store_hash: str | None = None,
              profile: str | None = None) -> list[OpenRun]:
    """Runs that started under ``state_dir`` and have not finished, newest first: a lock
    file still naming a run (the kernel freed the lock of a killed process, the file keeps
    its record) or a journal still open (batches to replay)."""
    found: dict[str, OpenRun] = {}
    for store_dir in sorted(Path(state_dir).glob("stores/*/*")):
        if not store_dir.is_dir() or (store_hash and store_dir.name != store_hash):
            continue
        recorded, held = _lock_record(store_dir)
        for journal in [store_dir / "journal.jsonl",
                        *sorted(store_dir.glob("profile-*/journal.jsonl"))]:
            header = _journal_header(journal)
            if header is None:
                continue
            run_id = str(header.get("run_id") or "?")
            run_profile = (header.get("options") or {}).get("profile")
            started = (recorded or {}).get("started") \
                if (recorded or {}).get("run_id") == run_id else None
            found[run_id] = OpenRun(run_id, store_dir, run_profile, header.get("input"),
                                    started or _started_of(run_id),
                                    journal, held and (recorded or {}).get("run_id") == run_id)
        if recorded and recorded.get("run_id") and recorded["run_id"] not in found:
            found[recorded["run_id"]] = OpenRun(
                str(recorded["run_id"]), store_dir, recorded.get("profile"),
                recorded.get("input"), recorded.get("started"), None, held)
    runs = [r for r in found.values() if profile is None or r.profile == profile]
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def _journal_header(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(encoding="utf-8") as fh:
            first = fh.readline()
    except OSError:
        return None
    try:
        header = json.loads(first)
    except ValueError:
        return {"run_id": None}
    return header if isinstance(header, dict) else {"run_id": None}


@dataclass
class Pruned:
    """What :func:`prune` removed (or would remove) and what it kept on purpose."""

    removed: list[Path]
    kept: list[tuple[Path, str]]


def _age_s(run_id: str, now: float) -> float | None:
    """Seconds since a run id's UTC timestamp (``20261127T103512.345Z-...``)."""
    from datetime import UTC, datetime

    try:
        when = datetime.strptime(run_id[:19], "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
    except ValueError:
        return None
    return now - when.timestamp()


def prune(report_dir: Path, state_dir: Path, keep_s: float, *, dry_run: bool = False,
          now: float | None = None) -> Pruned:
    """Remove run folders and uploads older than ``keep_s`` seconds.

    Never removed: the last successful run of each store, profile and source (the
    shrunken-file brake and ``volume_drop`` compare with it, ``revert`` needs it), and a
    run whose journal is still open (``resume`` needs its files).
    """
    import shutil
    import time

    now = time.time() if now is None else now
    protected: dict[str, str] = {}
    for pending in open_runs(state_dir):
        protected[pending.run_id] = ("its journal is open (run invsync resume)"
                                     if pending.journal else "it is running or was killed")
    seen: set[tuple[Any, ...]] = set()
    for run in list_runs(report_dir):
        r = run.report
        if r.get("status") not in SUCCESSFUL or r.get("command", "sync") not in ("sync", "resume"):
            continue
        given = r.get("input") or {}
        key = ((r.get("store") or {}).get("store_hash"), (r.get("store") or {}).get("profile"),
               source_key(given.get("source"), given.get("path")))
        if key not in seen:
            seen.add(key)
            protected.setdefault(run.run_id, "the last successful run of its source")
    out = Pruned([], [])
    for folder in sorted(p for p in Path(report_dir).iterdir() if p.is_dir()) \
            if Path(report_dir).is_dir() else []:
        age = _age_s(folder.name, now)
        if age is None or age <= keep_s:
            continue
        if folder.name in protected:
            out.kept.append((folder, protected[folder.name]))
            continue
        out.removed.append(folder)
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
    uploads = Path(state_dir) / "portal" / "uploads"
    for folder in sorted(uploads.iterdir()) if uploads.is_dir() else []:
        try:
            age = now - folder.stat().st_mtime
        except OSError:
            continue
        if folder.is_dir() and age > keep_s:
            out.removed.append(folder)
            if not dry_run:
                shutil.rmtree(folder, ignore_errors=True)
    return out
