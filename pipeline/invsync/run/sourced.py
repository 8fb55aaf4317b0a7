"""Runs whose file comes from a source (``invsync plan|sync|watch SOURCE``, "fetch now").

:func:`sync_source` fetches the source's file (see :mod:`invsync.sources`), skips it when
it is byte-identical to the last successful run's (unless ``force``), runs
:func:`~invsync.run.sync.sync_file` on the fetched copy, keeps the fetched bytes in the run
folder, and only then, with the outcome recorded, applies ``on_success``/``on_failure``.
:func:`watch` does that for each new file of a source, in arrival order, until stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from invsync.clock import utc_now
from invsync.disk import write_atomic
from invsync.errors import LockedError, UsageError
from invsync.events import Observer
from invsync.redact import redact
from invsync.run.config import Settings
from invsync.sources import (
    Fetched,
    NotReadyError,
    RemoteFile,
    SourceError,
    SourceSpec,
    SourceState,
    StaleFileError,
    after,
    keep_in_run_folder,
    remote_for,
    resolve,
)
from invsync.sources.fetching import check_fresh, download, wait_settled
from invsync.stages.report import RunReport

log = logging.getLogger("invsync.sources")

OK_EXITS = (0, 1)
"""A run that ended 0 (all sent) or 1 (some rows rejected) processed its file."""
FILE_FAILED_EXITS = (3, 65)
"""A run that ended 3 (a brake) or 65 (an unusable file) failed because of its file
(``on_failure``); any other failure (2: the store or the source) leaves the file as it is,
to be run again."""
RETRY_ERRORS_AFTER_S = 600.0
"""``watch``: a file whose run failed with exit 2 (the store) is tried again this much later."""


@dataclass
class SourceRun:
    """What :func:`sync_source` did with one file of a source."""

    spec: SourceSpec
    fetched: Fetched | None = None
    report: RunReport | None = None
    """The run's report; None when the file was unchanged (no run)."""
    unchanged_since: str | None = None
    """The run id of the last successful run when the file was byte-identical to its."""
    after: str | None = None
    """What ``on_success``/``on_failure`` did at the source, if anything."""
    problems: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for a person: what happened."""
        if self.report is None:
            return (f"{self.spec.display}: unchanged since run {self.unchanged_since} "
                    f"(the same bytes); nothing to do (--force runs it again)")
        return f"{self.spec.display}: run {self.report.run_id} {self.report.status}"

    @property
    def exit_code(self) -> int:
        return 0 if self.report is None else self.report.exit_code


def source_spec(source: str | SourceSpec, settings: Settings, **overrides: Any) -> SourceSpec:
    """The spec of ``source`` (a URL, path, glob or ``[sources.NAME]``), with ``overrides``
    (``pick``, ``max_age_s``, ``settle_s``) over the config's values."""
    if isinstance(source, SourceSpec):
        return replace(source, **{k: v for k, v in overrides.items() if v is not None})
    return resolve(source, settings.sources, **overrides)


def sync_source(source: str | SourceSpec, settings: Settings, *, command: str = "sync",
                force: bool = False, on_event: Observer | None = None,
                origin: dict[str, Any] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> SourceRun:
    """Fetch ``source``'s file and sync it (``command="plan"``: plan it); see the module.

    Raises what :func:`invsync.sources.fetch` raises before any run (a stale file is also
    notified as ``stale_file`` when ``[notify]`` asks for it) and what
    :func:`~invsync.run.sync.sync_file` raises (:class:`LockedError`, :class:`UsageError`).
    """
    from invsync.sources import fetch

    spec = source_spec(source, settings)
    check_settings(spec, settings)
    try:
        # A plan reads the file whatever the last run read (no conditional request).
        fetched = fetch(spec, settings.state_dir, force=force or settings.dry_run, sleep=sleep)
    except StaleFileError as exc:
        if not settings.dry_run:  # plans and dry runs never notify
            notify_source_event(settings, "stale_file", str(exc), spec)
        raise
    return process(fetched, settings, command=command, on_event=on_event, origin=origin)


def check_settings(spec: SourceSpec, settings: Settings) -> None:
    """Refuse what cannot work before anything is fetched (exit 64)."""
    if spec.is_http and (spec.on_success or spec.on_failure):
        raise UsageError(f"{spec.display}: on_success/on_failure cannot move or delete an "
                         f"http(s) source")
    settings.check(needs_store=not settings.dry_run)


def process(fetched: Fetched, settings: Settings, *, command: str = "sync",
            on_event: Observer | None = None,
            origin: dict[str, Any] | None = None) -> SourceRun:
    """Run ``fetched`` (or skip it when unchanged), keep it, then handle it at the source."""
    from invsync.run.sync import sync_file

    spec = fetched.spec
    done = SourceRun(spec=spec, fetched=fetched, unchanged_since=fetched.unchanged_since)
    if fetched.unchanged_since and not settings.dry_run:
        done.after = _after(done, fetched.file, succeeded=True)
        return done
    notes = [f"fetched {fetched.file.name} from {spec.display} (sha256 "
             f"{fetched.sha256[:12]}…); the copy read is kept in this run folder's fetched/"]
    if spec.max_age_s is not None and fetched.file.mtime is None:
        notes.append("max_age could not be checked: the server does not say when the file "
                     "last changed (no Last-Modified)")
    if settings.source == "cli":  # the brakes compare runs of one source, not one temp copy
        settings = replace(settings, source=spec.name or fetched.url)
    report = sync_file(fetched.local, settings, on_event=on_event, command=command,
                       origin={**(origin or {}), "source": fetched.record()}, notes=notes)
    done.report = report
    # The run is known by where its file came from (`runs`, notifications' volume_drop);
    # the copy it read is input.fetched (and fetched/ in the run folder).
    report.input["fetched"] = report.input.get("path")
    report.input["path"] = fetched.url
    if report.error:  # "…/fetched/<sha>/stock.csv: the file is empty" names the source's file
        report.error = report.error.replace(str(fetched.local), fetched.url)
    if report.report_dir:
        try:
            keep_in_run_folder(fetched, Path(report.report_dir))
        except OSError as exc:
            done.problems.append(f"the fetched file could not be kept in the run folder: "
                                 f"{exc.strerror or exc}")
    if settings.dry_run or report.status == "interrupted":
        return _noted(done)  # a plan changes nothing; an interrupted run is run again
    succeeded = report.exit_code in OK_EXITS
    if succeeded:
        SourceState(settings.state_dir, spec).remember(fetched, report.run_id)
    if succeeded or report.exit_code in FILE_FAILED_EXITS:
        done.after = _after(done, fetched.file, succeeded=succeeded)
    return _noted(done)


def _after(done: SourceRun, file: RemoteFile, *, succeeded: bool) -> str | None:
    try:
        return after(done.spec, file, succeeded)
    except (SourceError, OSError) as exc:
        action = done.spec.on_success if succeeded else done.spec.on_failure
        done.problems.append(redact(f"{action} of {file.name} at the source failed: {exc}"))
        return None


def _noted(done: SourceRun) -> SourceRun:
    """Add what was done at the source (and any problem) to report.json's notes."""
    report = done.report
    notes = [n for n in [done.after, *done.problems] if n]
    if report is None or not report.report_dir:
        return done
    report.notes.extend(notes)
    path = Path(report.report_dir) / "report.json"
    with contextlib.suppress(OSError):
        write_atomic(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False).encode())
    return done


def notify_source_event(settings: Settings, event: str, text: str, spec: SourceSpec) -> list[str]:
    """Send a source's own event (``stale_file``) to the ``[notify]`` webhooks that ask for
    it; return the delivery problems (the outcome is unchanged by them)."""
    if not settings.notify:
        return []
    from invsync.run.notify import notify_config, post

    cfg = notify_config(settings.notify)
    hooks = [h for h in cfg["hooks"] if event in h.on]  # each receiver's own `on`
    if not hooks:
        return []
    profile = settings.profile
    body = {"text": f"{f'[{profile}] ' if profile else ''}{event}: {redact(text)}",
            "event": event, "events": [event], "run_id": None, "profile": profile,
            "store_hash": settings.store_hash, "status": "refused", "exit_code": 3,
            "error": redact(text), "source": spec.display}
    problems = []
    for url in (h.url for h in hooks):
        problem = post(url, body, timeout_s=cfg["timeout_s"], attempts=cfg["attempts"])
        if problem:
            problems.append(f"notification ({event}) failed: {problem}")
    return problems


def fetch_now(name: str, settings: Settings, *, origin: dict[str, Any] | None = None,
              force: bool = False, on_event: Observer | None = None) -> SourceRun:
    """Run the configured source ``[sources.NAME]`` now (the upload page's "fetch now").

    Blocking (call it in a worker thread from an event loop). Returns a :class:`SourceRun`
    (``report`` None: the file was unchanged); raises :class:`UsageError` for an unknown
    name, and what :func:`sync_source` raises.
    """
    if name not in settings.sources:
        known = ", ".join(sorted(settings.sources)) or "none"
        raise UsageError(f"no source {name!r} in the config (sources: {known})")
    return sync_source(resolve(name, settings.sources), settings, force=force,
                       on_event=on_event, origin={"via": "fetch now", **(origin or {})})


async def fetch_now_async(name: str, settings: Settings, **kwargs: Any) -> SourceRun:
    """:func:`fetch_now` for a caller inside a running event loop (the upload page)."""
    import asyncio

    return await asyncio.to_thread(fetch_now, name, settings, **kwargs)


# --- watch -------------------------------------------------------------------------------


class Stopped(Exception):
    """The watch was asked to stop (SIGTERM) while it waited."""


@contextlib.contextmanager
def watch_lock(state: SourceState) -> Iterator[None]:
    """The watch's own lock on its source: one watch per source and state folder (exit 4)."""
    state.dir.mkdir(parents=True, exist_ok=True)
    with state.lock_path.open("a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise LockedError(f"another watch of this source is running (pid {holder}; lock "
                              f"{state.lock_path})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass
class Watcher:
    """``invsync watch``: each new matching file once, in arrival order, until stopped."""

    spec: SourceSpec
    settings: Settings
    on_done: Callable[[SourceRun], None]
    """Called after each processed file (the CLI notifies and prints there)."""
    on_problem: Callable[[str], None]
    on_event: Observer | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    busy: bool = False
    """True while a file is being fetched or run (SIGTERM then stops after it)."""
    interrupted: int | None = None
    """The exit code of a run that Ctrl-C cut off (130): the watch stops with it."""

    def __post_init__(self) -> None:
        self.state = SourceState(self.settings.state_dir, self.spec)

    def sleep(self, seconds: float) -> None:
        """Wait, unless asked to stop (then raise :class:`Stopped`)."""
        if self.stop.wait(seconds):
            raise Stopped

    def run(self) -> None:
        """Poll the source every ``interval_s`` until :attr:`stop` is set."""
        check_settings(self.spec, self.settings)
        with watch_lock(self.state), contextlib.suppress(Stopped):
            while not self.stop.is_set():
                self.poll_once()
                self.sleep(max(self.spec.interval_s, 0.1))

    def poll_once(self) -> int:
        """Process every new file found now, oldest first; return how many were processed."""
        ledger = self.state.ledger()
        retry_before = time.time() - RETRY_ERRORS_AFTER_S
        seen = {(e.get("path"), e.get("size"), e.get("mtime")) for e in ledger
                if e.get("status") != "error" or float(e.get("at_s") or 0) > retry_before}
        remote = remote_for(self.spec)
        try:
            files = sorted(remote.list(), key=lambda f: (f.mtime or 0.0, f.path))
        except (SourceError, OSError) as exc:
            self.on_problem(str(exc))
            return 0
        finally:
            remote.close()
        marker = self.spec.marker
        # A file whose server gives no mtime (a feed without Last-Modified) is fetched at
        # each look: its bytes (sha256) say whether it changed.
        new = [f for f in files if (f.mtime is None or f.identity() not in seen)
               and not (marker and f.path.endswith(marker))]
        count = 0
        for file in new:
            if self.stop.is_set():
                break
            self.busy = True
            try:
                if self.one(file, ledger):
                    count += 1
            finally:
                self.busy = False
        return count

    def one(self, file: RemoteFile, ledger: list[dict[str, Any]]) -> bool:
        """Settle, check, fetch and run one file; record it in the ledger."""
        spec = self.spec
        remote = remote_for(spec)
        try:
            settled = wait_settled(remote, file, sleep=self.sleep)
            check_fresh(spec, settled, time.time())
            fetched = download(remote, settled, self.state)
        except StaleFileError as exc:
            self._record(file, None, "stale", None)
            notify_source_event(self.settings, "stale_file", str(exc), spec)
            self.on_problem(str(exc))
            return False
        except NotReadyError as exc:
            self.on_problem(str(exc))  # not in the ledger: seen again at the next poll
            return False
        except SourceError as exc:
            self.on_problem(str(exc))
            return False
        finally:
            remote.close()
        latest: dict[str, Any] = next(
            (e for e in reversed(ledger) if e.get("path") == settled.shown_path), {})
        if settled.mtime is None and latest.get("sha256") == fetched.sha256:
            return False  # the same bytes as at the last look: nothing new
        # The same bytes as the file processed last (a copy under a new name) are not run
        # again; bytes processed before a newer file was are (the store has moved since).
        done_before = next((e for e in reversed(ledger) if e.get("status") == "processed"),
                           None)
        if done_before is not None and done_before.get("sha256") == fetched.sha256:
            fetched.unchanged_since = done_before.get("run_id")
        try:
            done = process(fetched, self.settings, on_event=self.on_event,
                           origin={"via": "watch"})
        except LockedError as exc:  # a cron run of the same store: try again next time
            self.on_problem(f"{file.name}: {exc}; tried again at the next look")
            return False
        report = done.report
        status = "processed" if report is None or report.exit_code in OK_EXITS else \
            "failed" if report.exit_code in FILE_FAILED_EXITS else "error"
        if report is not None and report.status == "interrupted":
            # Ctrl-C stops the watch as it stops a sync: the file is left for the next
            # start (or `invsync resume`), not run again at the next look.
            self.interrupted = report.exit_code
            self.stop.set()
            self.on_done(done)
            return False
        entry = self._record(settled, fetched.sha256, status,
                             report.run_id if report else fetched.unchanged_since)
        ledger.append(entry)
        self.on_done(done)
        return True

    def _record(self, file: RemoteFile, sha256: str | None, status: str,
                run_id: str | None) -> dict[str, Any]:
        entry = {"path": file.shown_path, "size": file.size, "mtime": file.mtime, "sha256": sha256,
                 "status": status, "run_id": run_id, "at": utc_now(), "at_s": time.time()}
        self.state.add_to_ledger(entry)
        return entry
