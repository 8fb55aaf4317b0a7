"""Runs the stages in order: ingest → validate → diff → brakes → submit → report.

This is the library entry point behind ``invsync sync``: :func:`sync_file` never prints;
it returns the :class:`~invsync.stages.report.RunReport` it also wrote to the run folder.
A real run holds the store's lock, replays an interrupted run's journal first, and
journals every batch, so that ``kill -9`` at any moment loses nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from invsync.clock import utc_now, utc_now_ms
from invsync.disk import write_atomic
from invsync.errors import (
    ExitCode,
    FatalError,
    InputFileError,
    NoInputError,
    SafetyBrakeError,
    UsageError,
)
from invsync.events import EventName, Observer, no_event
from invsync.redact import redact, redact_data
from invsync.rules.messages import refused_messages
from invsync.run import signals
from invsync.run.brakes import Brake, check_brakes, comparable_rows, record_rows
from invsync.run.config import Settings, settings_from_public
from invsync.run.outcome import count_run, count_unchecked, outcome
from invsync.run.plans import plan_binding
from invsync.run.store_access import StoreSession
from invsync.stages.diff import ChangeSet, compute_changes, key_hashes
from invsync.stages.ingest import StockTable, cut_off_end, read_stock_file
from invsync.stages.report import (
    Counts,
    PlanAhead,
    RunReport,
    change_records,
    new_run_id,
    plan_frame,
    rejected_records,
    summary_line,
    warm_up,
    write_plan_ahead,
    write_run_folder,
)
from invsync.stages.submit import (
    Batch,
    BatchResult,
    SubmitObserver,
    SubmitResult,
    number_changes,
    plan_batches,
    submit,
)
from invsync.stages.validate import QuantityRules, Validated, validate
from invsync.state.history import wrote_report
from invsync.state.journal import Journal, StoreLock, host_lock
from invsync.state.snapshot import SnapshotStore, last_write_file
from invsync.store.identity import IdentityResolver, canonical_snapshot
from invsync.tables import KEY, READ_AT, ROW, SEQ, Location, goes_to_zero
from invsync.terminal import log_where, one_line

log = logging.getLogger("invsync.sync")



class _Run:
    """The state of one run while its stages execute."""

    def __init__(self, path: Path, settings: Settings, emit: Observer) -> None:
        self.path = path
        self.settings = settings
        self.report = RunReport(run_id=new_run_id(), status="failed", started_at=utc_now(),
                                options=settings.public(),
                                store={"store_hash": settings.store_hash,
                                       "api_url": settings.api_url,
                                       "profile": settings.profile})
        self.retries: Counter[str] = Counter()
        run_id = self.report.run_id

        def tagged(name: EventName, data: dict[str, Any]) -> None:
            if name == "retry":
                self.retries[retry_cause(data.get("status"))] += 1
            emit(name, {"run_id": run_id, **data})  # every event names its run

        self.emit: Observer = tagged
        self.folder = settings.reports / self.report.run_id
        self.timings: dict[str, float] = {}
        self.table: StockTable | None = None
        self.rejected: pl.DataFrame | None = None
        self.plan: pl.DataFrame | None = None
        self.plan_ahead: PlanAhead | None = None
        self.snapshot_future: Future[pl.DataFrame] | None = None
        self.cut_off: SubmitResult | None = None
        self.replayed: pl.DataFrame | None = None
        """KEY of the items an interrupted run confirmed or left unknown, when this run
        replayed its journal, and the sha256 of that run's input (a plan pushed again)."""
        self.replayed_sha256: str | None = None
        self.as_of: tuple[Any, str, str] | None = None
        """The run's as-of time and where it came from (``--as-of``); see run/as_of.py."""
        self.sold_side: pl.DataFrame | None = None
        """Per file row: ``file_level`` and ``sold_since_as_of``, for plan.csv."""
        self.resumed_levels: pl.DataFrame | None = None
        """The levels an interrupted run's journal confirmed (KEY + quantity), if replayed."""
        self.read_at: str | None = None
        """When this run read the store's live levels (UTC), if it did."""
        self.rechecked = False
        """The submit's result as far as it went, when a signal interrupted it."""
        store = settings.store_hash or "offline"
        self.snapshots = SnapshotStore(settings.state_dir, store, settings.store_host,
                                       settings.profile)
        self.lock = StoreLock(self.snapshots.store_dir, store)
        self.host_lock = host_lock(settings.store_host, store)
        self.journal = Journal(self.snapshots.dir)
        # The run's one loop and one client: locations, live levels, identities and the
        # submit share its connections and what the store said about the quota.
        # Made at once in a worker thread (the HTTP stack's imports), while the run takes
        # its locks and reads the file.
        self.store = StoreSession(settings, self.emit, warm=True)

    def timed(self, stage: str, started: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started


def retry_cause(status: Any) -> str:
    """How a retry is counted in the summary: ``429``, ``5xx``, ``network`` or the status."""
    if status == 429:
        return "429"
    if isinstance(status, int) and status >= 500:
        return "5xx"
    return "network" if status is None else str(status)


def sync_file(path: str | Path, settings: Settings, *, on_event: Observer | None = None,
              command: str = "sync", origin: dict[str, Any] | None = None,
              reverted_from: str | None = None, notes: list[str] | None = None) -> RunReport:
    """Sync ``path`` into the store described by ``settings``; write and return the report.

    The error rule: a run that started returns its :class:`RunReport` (its ``status`` and
    ``exit_code`` say how it ended, whatever went wrong); only what is not a run raises:
    :class:`~invsync.errors.UsageError` for unusable settings (or a call inside a running
    event loop: use :func:`sync_file_async` there) and :class:`~invsync.errors.LockedError`
    when another run holds the store's lock (after ``settings.wait_lock_s``). Neither
    leaves a run folder. ``origin`` (who started the run, from where) is recorded as is in
    ``report.json``, and so are ``reverted_from`` (a ``revert`` run) and ``notes`` (added
    to the run's notes).
    """
    _refuse_running_loop()
    settings.check(needs_store=not settings.dry_run)
    _refuse_foreign_plan(Path(path), settings)
    # Before anything is read or sent: a run whose report cannot be written is refused.
    ensure_writable(settings.reports, "report folder")
    run = _Run(Path(path), settings, on_event or no_event)
    run.report.command = command
    run.report.origin = dict(origin or {})
    run.report.reverted_from = reverted_from
    run.report.notes.extend(notes or [])
    run.report.input = {"path": str(path), "source": settings.source}
    t_start = time.perf_counter()
    locks_held: list[StoreLock] = [] if settings.dry_run else _lock(run)
    run.emit("run_started", {"input": str(path), "dry_run": settings.dry_run,
                             "profile": settings.profile})
    try:
        _prepare(run, locked=bool(locks_held))
        _execute(run)
        run.store.close()
    except FatalError as exc:
        run.report.error = str(exc)
        run.report.error_kind = exc.kind
        run.report.exit_code = int(exc.exit_code)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a run always ends with a report
        _failed(run, exc)
    finally:
        _close(run, locks_held)
    run.timings["total"] = time.perf_counter() - t_start
    return _finish(run)


def _refuse_running_loop() -> None:
    """A call inside a running event loop is refused (:class:`UsageError`)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return  # no event loop without asyncio: not imported for a run that needs none
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop in this thread: the run may drive its own
    raise UsageError("sync_file was called inside a running event loop; "
                     "await invsync.sync_file_async(...) there instead")


def _lock(run: _Run) -> list[StoreLock]:
    """A real run's locks, taken in order (the state folder proven writable first), and
    its number in the store's runs; the locks held, to release in reverse order."""
    settings = run.settings
    ensure_writable(settings.state_dir, "state folder")
    # A run refused by a lock is not a run: LockedError propagates and no run folder
    # is written (so `show last` never picks it). This state dir's lock, then this
    # host's lock on the store (API host + hash): two runs for one store exit 4 even
    # with different state dirs.
    locks_held: list[StoreLock] = []
    where = f"state folder {settings.state_dir}"
    try:
        for lock in (run.lock, run.host_lock):
            if lock is run.host_lock:  # its own folder (INVSYNC_LOCK_DIR or the temp dir)
                where = f"lock folder {lock.path.parent}"
            lock.acquire(run.report.run_id, settings.wait_lock_s,
                         on_wait=lambda info: run.emit("lock_wait", info),
                         state_dir=str(settings.state_dir), profile=settings.profile,
                         input=str(run.path.absolute()))
            locks_held.append(lock)
        where = f"state folder {settings.state_dir}"
        run.report.run_seq = run.snapshots.next_run_seq()
    except BaseException as exc:
        for lock in reversed(locks_held):
            lock.release()
        if isinstance(exc, OSError):  # its disk filled up since proven writable
            raise UsageError(f"the {where} is not writable "
                             f"({exc.strerror or exc}); nothing was sent") from None
        raise
    return locks_held


def _prepare(run: _Run, *, locked: bool) -> None:
    """Before the steps: what a killed run left (its lock, temporary files), a snapshot
    of the old layout, and whether the live baseline is due (``baseline_every``)."""
    took_over = run.lock.took_over
    if took_over:
        run.report.notes.append(
            f"took over the lock left by run {took_over.get('run_id', '?')} "
            f"(pid {took_over.get('pid', '?')}), which is no longer running")
        _resuming(run, str(took_over.get("run_id") or "") or None)
    if locked and run.snapshots.clean_temp_files():
        run.report.notes.append("removed temporary snapshot files a killed run left")
    _note_legacy_state(run)
    _scheduled_live_baseline(run)


def _resuming(run: _Run, run_id: str | None) -> None:
    """Record that this run finishes the interrupted run ``run_id``, and whether that run
    left a report: one killed (``kill -9``) stopped before writing it, so no run folder
    holds it and ``finished=RUN_ID`` must not send anyone looking for one."""
    report = run.report
    if run_id is not None and run_id == report.resumed_from:
        return  # its lock and its journal both name it
    report.resumed_from = run_id
    # A dry run replays a journal into its plan but finishes nothing: it leaves it be.
    report.resumed_from_no_report = bool(run_id) and not run.settings.dry_run and \
        not wrote_report(run.settings.reports, run_id)
    if report.resumed_from_no_report:
        report.notes.append(f"run {run_id} stopped before writing its report (killed): no "
                            f"run folder holds it; this run's report is its record")


def _close(run: _Run, locks_held: list[StoreLock]) -> None:
    """Close the store client and the journal (kept for resume if the run did not
    finish), then release the locks."""
    try:
        run.store.close()
    except Exception as exc:  # the run's outcome is recorded; a failed close is not it
        log.warning("could not close the store client: %s", one_line(exc))
    try:
        run.journal.close(remove=False)  # kept for resume if the run did not finish
    except OSError as exc:  # its last record may be torn: recovery ignores that
        log.warning("could not close the journal %s: %s", run.journal.path, exc)
    for lock in reversed(locks_held):
        _release(lock)


def _finish(run: _Run) -> RunReport:
    """Complete the report (plan, retries, timings, end time), write the run folder and
    say the run finished (``run_finished``)."""
    report, settings = run.report, run.settings
    report.plan = run.plan
    if run.table is not None and report.counts == Counts():
        # Stopped after the file was read, before its rows were counted: they are unchecked.
        report.counts = count_unchecked(run.table)
    if run.retries:
        report.requests["retries"] = sum(run.retries.values())
        report.requests.update({f"retries_{k}": v for k, v in run.retries.most_common()})
    report.timings = {k: round(v, 4) for k, v in run.timings.items()}
    report.finished_at = utc_now()
    if report.error:
        report.error = redact(report.error)
    _write_report(run)
    run.emit("run_finished", {"status": report.status, "profile": settings.profile,
                              "summary": summary_line(report),
                              "exit_code": report.exit_code, "counts": report.counts.__dict__,
                              "transactions": len(report.transaction_ids),
                              "error": report.error, "report_dir": report.report_dir})
    return report


def _refuse_foreign_plan(path: Path, settings: Settings) -> None:
    """A plan applied to another store (or profile) is refused before anything is read
    (:class:`~invsync.errors.PlanForAnotherStore`, exit 64)."""
    if settings.plan_file:
        from invsync.run.plans import check_binding, read_binding

        check_binding(read_binding(path), settings, f"the plan {path}")


def ensure_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and prove a file can be written in it, or raise UsageError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".invsync-probe-")
        try:
            os.write(fd, b"invsync")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        why = "it is not a folder" if folder.exists() and not folder.is_dir() \
            else exc.strerror or str(exc)
        raise UsageError(f"the {what} {folder} is not writable ({why}); nothing was sent") \
            from None


def _failed(run: _Run, exc: BaseException) -> None:
    """Record an interruption (SIGINT/SIGTERM) or an unexpected error as the run's outcome."""
    report = run.report
    if signals.was_interrupted(exc):
        sig = signals.received()
        report.status = "interrupted"
        report.error_kind = "interrupted"
        report.exit_code = int(ExitCode.TERMINATED if sig == 15 else ExitCode.INTERRUPTED)
        name = "SIGTERM" if sig == 15 else "SIGINT"
        report.error = f"interrupted by {name}"
    else:
        log_where(log, "unexpected error", exc)
        report.status = "failed"
        report.error_kind = "internal"
        report.exit_code = int(ExitCode.RUN_FAILED)
        kind = "system error" if isinstance(exc, OSError) else "unexpected error"
        token = run.settings.token.reveal() if run.settings.token else None
        report.error = f"{kind}: {one_line(exc, token)}"
    if run.journal.exists() and not run.settings.dry_run:
        report.error += ("; the levels the store confirmed are kept in the journal: run "
                         "`invsync resume` to finish (confirmed batches are not sent again)")
    elif report.status == "interrupted":
        report.error += ("; nothing was sent" if run.settings.dry_run else
                         "; no batch is left unconfirmed: run the same command again")


def _release(lock: StoreLock) -> None:
    try:
        lock.release()
    except OSError as exc:  # the kernel frees the flock when the process ends anyway
        log.warning("could not clear the lock file %s: %s", lock.path, exc.strerror)


def _write_report(run: _Run) -> None:
    """Write the run folder; if that fails, say so clearly and leave no half-written files."""
    report = run.report
    interrupted: int | None = None
    try:
        write_run_folder(report, run.folder, run.table, run.rejected, run.plan,
                         ahead=run.plan_ahead)
        return
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: the run must not vanish from history
        interrupted = signals.received()
        problem = f"interrupted by {'SIGTERM' if interrupted == 15 else 'SIGINT'}"
        failure: BaseException = exc
    except Exception as exc:  # a full disk must not hide what was sent
        problem, failure = one_line(exc), exc
    sent = "" if report.status not in ("succeeded", "partial") else \
        "; the stock was sent and the snapshot recorded"
    message = f"the run's report could not be written to {run.folder} ({problem}){sent}"
    error = report.error
    if interrupted is not None:
        report.status, report.error_kind = "interrupted", "interrupted"
        report.exit_code = int(ExitCode.TERMINATED if interrupted == 15
                               else ExitCode.INTERRUPTED)
    elif report.exit_code in (ExitCode.OK, ExitCode.REJECTED_ROWS):
        report.exit_code, report.error_kind = int(ExitCode.RUN_FAILED), "internal"
    log_where(log, "report not written", failure)
    _remove_folder(run.folder)  # a new folder of this run only: no half a report is left
    # The bare record (no rejected rows, no plan) may still fit; if not, the message is all.
    bare = replace(report, rejected=[], report_dir=str(run.folder),
                   error="; ".join(filter(None, [error, message + "; only this bare "
                                                 "report.json was written"])))
    try:
        run.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(run.folder / "report.json",
                     json.dumps(redact_data(bare.to_dict()), indent=2,
                                ensure_ascii=False).encode())
        report.error, report.report_dir = bare.error, bare.report_dir
    except OSError:
        _remove_folder(run.folder)
        report.error = "; ".join(filter(None, [error, message]))
        report.report_dir = ""


def _remove_folder(folder: Path) -> None:
    """Remove a run folder this run created, with whatever it holds (files only)."""
    if not folder.is_dir():
        return
    for item in folder.iterdir():
        with contextlib.suppress(OSError):
            item.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


async def sync_file_async(path: str | Path, settings: Settings, *,
                          on_event: Observer | None = None, command: str = "sync",
                          origin: dict[str, Any] | None = None) -> RunReport:
    """:func:`sync_file` for a caller inside a running event loop (a web app, a scheduler).

    The run goes on in a worker thread, so the caller's loop keeps serving while the file is
    parsed and the store is written; ``on_event`` is called from that thread. Cancelling the
    awaiting task does not stop a run that has started (its journal and lock must end
    cleanly); the same errors rule applies as for :func:`sync_file`.
    """
    import asyncio

    return await asyncio.to_thread(sync_file, path, settings, on_event=on_event,
                                   command=command, origin=origin)


def resume(settings: Settings, *, on_event: Observer | None = None) -> RunReport:
    """Finish the interrupted run of ``settings.store_hash``: same file, same options."""
    store = settings.store_hash or "offline"
    journal = Journal(SnapshotStore(settings.state_dir, store, settings.store_host,
                                    settings.profile).dir)
    if not journal.exists():
        raise UsageError(f"nothing to resume: no interrupted run for store {store!r} "
                         f"at {settings.api_url} under {settings.state_dir}")
    header = journal.recover().header
    if not header.get("input"):
        raise UsageError(f"the journal {journal.path} names no input file; run sync again")
    _check_unchanged(Path(header["input"]), header)
    resumed = settings_from_public(settings, header.get("options") or {})
    return sync_file(header["input"], resumed, on_event=on_event)


def _check_unchanged(path: Path, header: dict[str, Any]) -> None:
    """Refuse to resume with a file that is no longer the one the interrupted run read."""
    recorded = header.get("sha256")
    if not recorded:
        return
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise NoInputError(str(path), f"cannot read the interrupted run's input: "
                                        f"{exc.strerror or exc}") from None
    if digest != recorded:
        raise InputFileError(
            str(path), f"the file changed since interrupted run {header.get('run_id', '?')} "
                       f"read it (sha256 {recorded[:12]}… then, {digest[:12]}… now); nothing "
                       f"was sent: sync the file as it is now with invsync sync (it recovers "
                       f"what the interrupted run confirmed first)")


def _scheduled_live_baseline(run: _Run) -> None:
    """``baseline_every``: use the live baseline when the last run that did is too old."""
    if run.settings.baseline_every_s is None:
        return  # no schedule (the reconcile module, with the HTTP client, is not loaded)
    from invsync.run.reconcile import live_baseline_due

    why = live_baseline_due(run.settings, run.snapshots.read_meta())
    if why:
        run.settings = replace(run.settings, baseline="live")  # the caller's stay as they are
        run.report.options["baseline"] = "live"
        run.report.notes.append(why)


def _note_legacy_state(run: _Run) -> None:
    """Say once that a snapshot of the old layout (per state dir and hash only) is not used."""
    snapshots = run.snapshots
    if (snapshots.legacy_dir / "snapshot.parquet").exists() and not snapshots.path.exists():
        run.report.notes.append(
            f"the snapshot in {snapshots.legacy_dir} (the layout before snapshots were kept per "
            f"API host) is not used: it may hold levels of another API host with the same "
            f"store hash; this run starts from an empty snapshot for "
            f"{snapshots.dir}, so every item of the file is sent once")


@dataclass(frozen=True)
class _Read:
    """What the read step found: the file as a table, a reviewed plan's levels, the
    store's locations."""

    table: StockTable
    planned_old: pl.DataFrame | None
    """A reviewed plan's ``before`` levels and ``read_at`` by row (``--plan-file``), else None."""
    locations: list[Location] | None
    """The store's locations (None without an access token: not checked)."""
    snapshot_hashes: Future[tuple[weakref.ref[pl.DataFrame], pl.Series]] | None = None
    """The snapshot as loaded (weakly: a run that replaces it lets it go) and its key
    hashes, made in the background while the file is read (the diff joins on them when it
    compares the file with that very frame)."""

    @property
    def from_plan(self) -> bool:
        return self.planned_old is not None


@dataclass(frozen=True)
class _Resolved:
    """The file's rows checked, with each item under its one identity."""

    snapshot: pl.DataFrame
    """The snapshot, with an interrupted run's confirmed levels replayed into it."""
    checked: Validated
    rules: QuantityRules
    mapping: pl.DataFrame | None
    """The identities resolved (None when none needed resolving)."""


@dataclass(frozen=True)
class _Baseline:
    """What the file is compared with."""

    snapshot: pl.DataFrame
    """The snapshot, re-keyed by canonical identity."""
    held: pl.DataFrame
    """What the store holds as far as this run knows (for the brakes)."""
    live: pl.DataFrame | None
    """The live levels read (None when none were)."""


@dataclass(frozen=True)
class _Diff:
    checked: Validated
    """The file's rows checked, lowered by what sold since ``--as-of``."""
    changes: ChangeSet
    """The items to send, numbered by SEQ."""


def _execute(run: _Run) -> None:
    """The run's steps, in order; each records what it found in ``run.report``."""
    read = _read(run)
    resolved = _resolve(run, read)
    baseline = _baseline(run, read, resolved)
    diff = _diff(run, read, resolved, baseline)
    brakes, batches = _brake(run, read, baseline, diff)
    try:
        result = _send(run, read, baseline, diff, batches)
        _record(run, baseline, diff, batches, result, braked=bool(brakes))
    except KeyboardInterrupt:  # SIGINT/SIGTERM once batches went out
        _record_cut_off(run, baseline, diff, batches)
        raise
    _note_dry_run_brakes(run, brakes)
    _remember_rows(run, read)


def _read(run: _Run) -> _Read:
    """Read the file (or the reviewed plan) and the store's locations; ``--as-of`` is
    checked first, and the snapshot is read in the background meanwhile."""
    settings, report = run.settings, run.report
    # While the file is parsed (polars releases the GIL), read the snapshot in the
    # background. (pandera is imported only for a file with a row to reject.)
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invsync-bg")
    loading = run.snapshot_future = background.submit(run.snapshots.load)
    # The report's templates, compiled off the critical path while the file is parsed
    # (compiling holds the GIL: done first, it overlaps the parse, which does not); in a
    # store run, once its client is made instead (the client's imports hold the GIL too,
    # and the store's locations read waits for the client); in a real run, once its
    # batches go out (see _warm_up_while_sending).
    warm_first = not run.store.making
    if warm_first:
        background.submit(warm_up)
    # What the diff joins on, made meanwhile, when the file is compared with the snapshot.
    hashing = None if settings.full or settings.plan_file or (
        settings.token and settings.baseline == "live") else background.submit(_hashed, loading)
    if not warm_first and settings.dry_run:
        background.submit(_warm_up_after, run.store)
    background.shutdown(wait=False)
    _resolve_as_of(run)
    locations: list[Location] | None = None
    if settings.token and os.path.isfile(run.path) and os.access(run.path, os.R_OK):
        # The store's locations are read while the file is (in a worker thread): the
        # file's error first, the store's once the file is read and recorded.
        (table, planned_old, seconds), asked = run.store.locations_beside(
            lambda: _timed_read(run), interrupted=lambda done: _record_read(run, *done))
        try:
            _record_file(run, table, seconds)
        except BaseException:
            if not asked.cancelled():
                asked.exception()  # the file's error is the run's; the store's is dropped
            raise
        locations = asked.result()
        run.emit("locations", {"count": len(locations)})
    else:  # no store to ask, or a file that cannot be opened: nothing is sent
        table, planned_old, seconds = _timed_read(run)
        _record_file(run, table, seconds)
        locations = _fetch_locations(run) if settings.token else None
    if locations is None:
        report.notes.append("locations not checked against the store (no access token): "
                            "rows for unknown or disabled locations count as valid")
    return _Read(table, planned_old, locations, hashing)


def _hashed(loading: Future[pl.DataFrame]) -> tuple[weakref.ref[pl.DataFrame], pl.Series]:
    """The snapshot ``loading`` loads (weakly) and its
    :func:`~invsync.stages.diff.key_hashes`."""
    snapshot = loading.result()
    return weakref.ref(snapshot), key_hashes(snapshot)


def _hashes_of(read: _Read, frame: pl.DataFrame) -> pl.Series | None:
    """The key hashes of ``frame`` when it is the snapshot as loaded (else None: a frame
    made from it, such as one with an interrupted run's levels replayed, has none)."""
    if read.snapshot_hashes is None or read.snapshot_hashes.exception() is not None:
        return None
    loaded, hashes = read.snapshot_hashes.result()
    return hashes if loaded() is frame else None


def _warm_up_after(store: StoreSession) -> None:
    """Compile the report's templates once ``store``'s client is made."""
    store.wait_made()
    warm_up()


def _warm_up_while_sending() -> None:
    """Compile the report's templates in a thread of their own while the batches go out.

    Not sooner: compiling holds the GIL, and beside the checks and the diff (many short
    polars calls, each waiting for the GIL back) it made them about 20 ms slower on a
    100,000-row night; the store's answers leave the interpreter idle long enough for it."""
    import threading

    threading.Thread(target=warm_up, name="invsync-warm", daemon=True).start()


def _timed_read(run: _Run) -> tuple[StockTable, pl.DataFrame | None, float]:
    """The file (or reviewed plan) and the seconds it took; changes nothing of ``run``
    (it may run in a worker thread)."""
    t = time.perf_counter()
    table, planned_old = _read_table(run)
    return table, planned_old, time.perf_counter() - t


def _record_file(run: _Run, table: StockTable, seconds: float) -> None:
    """Record the file read in the report; ``--zero-missing`` refuses a swallowed row."""
    run.table = table
    run.timings["ingest"] = run.timings.get("ingest", 0.0) + seconds
    run.report.input = _input_record(run, table)
    run.report.notes.extend(table.notes)
    if run.settings.zero_missing and not run.settings.plan_file:
        _refuse_swallowed_rows(run.path, table)


def _record_read(run: _Run, table: StockTable, _planned: object, seconds: float) -> None:
    """Record a file read before a signal stopped the run (the store's locations were still
    being read): the report counts its rows, and the interruption stays the run's outcome."""
    with contextlib.suppress(FatalError):  # --zero-missing's refusal: not what stopped it
        _record_file(run, table, seconds)


def _read_table(run: _Run) -> tuple[StockTable, pl.DataFrame | None]:
    """The file as a stock table, and a reviewed plan's levels (None for a stock file)."""
    settings = run.settings
    if settings.plan_file:
        return _read_plan(run.path)
    table = read_stock_file(run.path, sheet=settings.sheet, column_map=settings.column_map,
                            encoding=settings.encoding, header_row=settings.header_row)
    return cut_off_end(table, settings.reports), None


def _input_record(run: _Run, table: StockTable) -> dict[str, Any]:
    """The report's ``input``: what was read and how."""
    return {"path": str(run.path), "sha256": table.sha256, "format": table.format,
            "rows": table.rows, "blank_rows": table.blank_rows, "sheet": table.sheet,
            "encoding": table.encoding, "delimiter": table.delimiter,
            "columns": table.mapping, "source": run.settings.source,
            "layout": table.layout, "header_row": table.header_row,
            "last_line_complete": table.last_line_complete}


def _resolve(run: _Run, read: _Read) -> _Resolved:
    """Check the file's rows, each item resolved to its one identity against the snapshot
    (an interrupted run's journal replayed into it first) and the store."""
    settings, report = run.settings, run.report
    t = time.perf_counter()
    # The snapshot first: identities are resolved when its kinds of key meet the file's.
    snapshot = _snapshot(run)
    run.timed("diff", t)
    t = time.perf_counter()
    resolver = IdentityResolver(
        snapshot, run.store.fetcher() if settings.token else None)
    # A reviewed plan holds final levels: the quantity rules were applied when it was made.
    rules = QuantityRules() if read.from_plan else settings.rules
    checked = validate(read.table, default_location=settings.location_id,
                       locations=read.locations,
                       duplicates=settings.duplicates,  # type: ignore[arg-type]
                       rules=_rules_before_sold(run, rules), identities=resolver)
    run.timed("validate", t)
    report.notes.extend(resolver.notes)
    report.notes.extend(checked.notes)
    return _Resolved(snapshot, checked, rules, resolver.mapping)


def _baseline(run: _Run, read: _Read, resolved: _Resolved) -> _Baseline:
    """What the file is compared with: the snapshot re-keyed canonically and, with the
    live baseline or a reviewed plan, the store's live levels of the file's items."""
    t = time.perf_counter()
    snapshot = resolved.snapshot
    if resolved.mapping is not None:
        snapshot = _canonical_snapshot(run, snapshot, resolved.mapping)
    held, live = _store_levels(run, resolved.checked, snapshot, from_plan=read.from_plan)
    run.timed("diff", t)
    return _Baseline(snapshot, held, live)


def _diff(run: _Run, read: _Read, resolved: _Resolved, baseline: _Baseline) -> _Diff:
    """The items to send: the file against its baseline, less what an interrupted run of
    the same file confirmed, plus the zeros of ``--zero-missing``; numbered once."""
    settings, report = run.settings, run.report
    # Orders sold since the as-of time, read last before the diff: an order placed while
    # the live levels were read is counted. (Timed apart, as "orders".)
    checked = _subtract_sold_since(run, resolved.checked, resolved.rules)
    t = time.perf_counter()
    live = baseline.live
    changes = _changes(run, read, checked, baseline)
    changes = _without_resumed(run, changes, read.table.sha256)
    if settings.zero_missing and not read.from_plan:
        changes = _with_missing_zeroed(changes, checked, baseline.snapshot, report, live)
    read_at = run.read_at if live is not None else None
    changes = replace(changes, changes=changes.changes.with_columns(
        pl.lit(read_at, pl.String).alias(READ_AT)))
    report.baseline = "plan" if read.from_plan else changes.baseline
    report.read_at = read_at
    # Numbered once: the batches, the results, the plan and the journal name items by SEQ.
    changes = replace(changes, changes=number_changes(changes.changes))
    run.timed("diff", t)
    report.by_location = _by_location(checked, changes)
    return _Diff(checked, changes)


def _changes(run: _Run, read: _Read, checked: Validated, baseline: _Baseline) -> ChangeSet:
    """The file's rows against the baseline: a reviewed plan's items (re-checked against
    the store), every item (``--full``), or what differs from the live levels or the
    snapshot."""
    snapshot, live = baseline.snapshot, baseline.live
    if read.planned_old is not None:
        # An interrupted push of this very plan moved its items itself (`invsync resume`).
        pushed = run.replayed if (
            run.replayed_sha256 and run.replayed_sha256 == read.table.sha256) else None
        return _planned_changes(run, checked, read.planned_old, snapshot, live, pushed)
    if run.settings.full:
        changes = compute_changes(checked.valid, None)
        if live is not None:  # every item is sent; each records the level it replaces
            changes = replace(changes, changes=_with_before(changes.changes, live))
        return changes
    if live is not None:
        return compute_changes(checked.valid, live, baseline_name="live")
    changes = compute_changes(checked.valid, snapshot,
                              hashes=checked.hashes_of(checked.valid),
                              baseline_hashes=_hashes_of(read, snapshot))
    if run.sold_side is not None:  # orders moved the store since the snapshot was taken
        from invsync.run.as_of import resend_sold

        changes = resend_sold(changes, checked.valid, run.sold_side)
    return changes


def _brake(run: _Run, read: _Read, baseline: _Baseline,
           diff: _Diff) -> tuple[list[Brake], list[Batch]]:
    """The safety brakes this run trips, and its batches. A real run that trips one
    records its report and stops here (:class:`SafetyBrakeError`): nothing is sent."""
    settings, from_plan = run.settings, read.from_plan
    meta = run.snapshots.read_meta()
    # A reviewed plan is not an export: no row brakes.
    brakes = check_brakes(
        rows=read.table.rows,
        last_rows=None if from_plan else comparable_rows(meta, _source(run)),
        changes=_zeroed_by_the_file(run, diff.changes), held=baseline.held,
        zero_missing=settings.zero_missing and not from_plan,
        limits=replace(settings.brakes, allow_empty=True) if from_plan else settings.brakes,
        store_stock=None if settings.token is None else run.store.stocked_at_least)
    t = time.perf_counter()
    batches = plan_batches(diff.changes.changes, settings.batch_size)
    run.timed("plan", t)
    if brakes:
        run.report.brakes = [b.__dict__ for b in brakes]
        if not settings.dry_run:
            run.rejected = diff.checked.rejected
            _fill(run, diff.checked, diff.changes, batches, None, braked=True)
            raise SafetyBrakeError("safety brake: " + "; ".join(b.message for b in brakes)
                                   + ". Nothing was sent.")
    if not settings.dry_run and batches:
        _warm_up_while_sending()
    return brakes, batches


def _send(run: _Run, read: _Read, baseline: _Baseline, diff: _Diff,
          batches: list[Batch]) -> SubmitResult | None:
    """A real run sends the batches, journaled (None for a dry run or nothing to send);
    an unknown level the live read found at the file's level is learnt."""
    settings = run.settings
    result: SubmitResult | None = None
    if not settings.dry_run and batches:
        t = time.perf_counter()
        result = _submit_journaled(run, diff.changes, batches)
        run.timed("submit", t)
    if not settings.dry_run and baseline.live is not None and not read.from_plan:
        _learn_unknown_levels(run, diff.checked, diff.changes, baseline.snapshot,
                              baseline.live)
    return result


def _record(run: _Run, baseline: _Baseline, diff: _Diff, batches: list[Batch],
            result: SubmitResult | None, *, braked: bool) -> None:
    """Record the rejected rows (the store's refusals among them), the plan, the counts,
    the status and the exit code in the report."""
    run.rejected = _all_rejected(diff.checked, diff.changes, result,
                                 (baseline.snapshot, baseline.held))
    _fill(run, diff.checked, diff.changes, batches, result, braked=braked)


def _record_cut_off(run: _Run, baseline: _Baseline, diff: _Diff,
                    batches: list[Batch]) -> None:
    """A signal once batches went out: the report still counts what the store confirmed
    (the journal keeps the levels for the next run)."""
    if run.cut_off is None:
        return
    try:
        _record(run, baseline, diff, batches, run.cut_off, braked=False)
    except Exception as exc:  # the interruption stays the run's outcome
        log_where(log, "counting an interrupted submit", exc)


def _note_dry_run_brakes(run: _Run, brakes: list[Brake]) -> None:
    """A dry run that trips a brake says so in its error (a real run stopped at the brake)."""
    if brakes and run.settings.dry_run:
        run.report.error = "safety brake (dry run): " + "; ".join(b.message for b in brakes)
        run.report.error_kind = "brake"


def _remember_rows(run: _Run, read: _Read) -> None:
    """A real run that sent its file records the file's row count (the row brakes of the
    next run of this source compare with it) and when it finished."""
    settings, report = run.settings, run.report
    if settings.dry_run or report.status not in ("succeeded", "partial") \
            or read.from_plan or read.table.rows <= 0:
        return
    # Read again: the submit recorded when it wrote (last_write_at).
    meta = record_rows(run.snapshots.read_meta(), _source(run), read.table.rows,
                       settings.zero_missing)
    meta.pop("last_rows", None)  # the old single count: now kept per source
    live_meta = ({"last_live_baseline": report.started_at}
                 if settings.baseline == "live" else {})
    run.snapshots.write_meta({**meta, "last_run": report.run_id,
                              "last_finished": utc_now(), **live_meta})


def _rules_before_sold(run: _Run, rules: QuantityRules) -> QuantityRules:
    """The quantity rules of validation: with an as-of time, the maximum comes after what
    sold since is subtracted (run/as_of.py)."""
    if run.as_of is None:
        return rules
    from invsync.run.as_of import rules_before_sold

    return rules_before_sold(rules)


def _subtract_sold_since(run: _Run, checked: Validated, rules: QuantityRules) -> Validated:
    """``--as-of``: ``checked`` lowered by what sold since (run/as_of.py), timed as orders."""
    if run.as_of is None:
        return checked
    from invsync.run.as_of import apply_sold_since

    t = time.perf_counter()
    checked, run.sold_side = apply_sold_since(run.store, run.report, checked, run.as_of,
                                              run.emit, rules=rules)
    run.timed("orders", t)
    return checked


def _zeroed_by_the_file(run: _Run, changes: ChangeSet) -> ChangeSet:
    """The changes the mass-zeroing brake judges: items sold out since the as-of time are
    not a file that says 0 (run/as_of.py)."""
    if run.sold_side is None:
        return changes
    from invsync.run.as_of import zeroed_by_the_file

    return zeroed_by_the_file(changes, run.sold_side)


def _source(run: _Run) -> str:
    """The source this run's file is compared with (its path, or a configured name)."""
    from invsync.state.history import source_key

    return source_key(run.settings.source, str(run.path))


def _resolve_as_of(run: _Run) -> None:
    """``--as-of``: checked before anything is read or sent (exit 64 in plain words)."""
    settings = run.settings
    if settings.as_of is None:
        return
    if not settings.as_of.strip():  # an unset variable in a script: say so, never ignore it
        raise UsageError("--as-of is empty: give the time the file's levels were true "
                         "(ISO 8601 with an offset) or 'mtime'; nothing was sent")
    if settings.plan_file:
        run.report.notes.append("--as-of is not applied to a reviewed plan: its levels had "
                                "what sold since subtracted when it was made")
        return
    from invsync.run.as_of import resolve_as_of

    run.as_of = resolve_as_of(settings.as_of, run.path, settings.max_as_of_age_s)


def _read_plan(path: Path) -> tuple[StockTable, pl.DataFrame]:
    """A reviewed ``plan.csv`` as a stock table (validated again) and its planned levels:
    ``planned`` (its ``before``) and ``read_at`` by row. A plan of an earlier version
    (``old``/``new`` columns) reads the same."""
    legacy = _legacy_plan(path)
    before, after = ("old", "new") if legacy else ("before", "after")
    # "item" stands in as the identifier column until the real mapping is set below.
    table = read_stock_file(path, column_map={after: "quantity", "item": "sku"})
    needed = {"identifier", "item", before, after, "location_id"}
    if not needed <= set(table.headers):
        raise InputFileError(str(path), "not a plan.csv written by invsync plan (needs columns "
                                        "location_id, identifier, item, before, after)")
    # validate() un-escapes formula-escaped items, as for any file it reads.
    ident, item = pl.col("identifier"), pl.col("item")
    frame = table.frame.with_columns(
        **{f"__{kind}": pl.when(ident == kind).then(item)
           for kind in ("sku", "variant_id", "product_id")})
    mapping = {"sku": "__sku", "variant_id": "__variant_id", "product_id": "__product_id",
               "location_id": table.mapping["location_id"], "quantity": table.mapping["quantity"]}
    read_at = pl.col(READ_AT) if READ_AT in frame.columns else pl.lit(None, pl.String)
    old = frame.select(pl.col(ROW),
                       pl.col(before).cast(pl.Int64, strict=False).alias("planned"),
                       read_at.cast(pl.String).alias(READ_AT))
    return replace(table, frame=frame, mapping=mapping, format="plan"), old


SWALLOWED = "is never closed"
"""Ingest's words for a quote that swallowed the lines after it into one row."""


def _refuse_swallowed_rows(path: Path, table: StockTable) -> None:
    """``--zero-missing`` zeroes what the file leaves out: a file whose rows a stray quote
    swallowed leaves out items it names, so it is refused whole."""
    rows: list[int] = []
    problems = table.problems
    if problems is not None and problems.height:
        rows += problems.filter(pl.col("message").str.contains(SWALLOWED, literal=True))[
            ROW].to_list()
    # A quote opened in the last used cell swallows the lines after it into that cell.
    used = [c for c in dict.fromkeys(table.mapping.values()) if c in table.frame.columns]
    if used and table.frame.height:
        rows += table.frame.filter(pl.any_horizontal(
            pl.col(c).str.contains("[\r\n]").fill_null(False) for c in used))[ROW].to_list()
    if rows:
        row = min(rows)
        raise InputFileError(str(path), f"row {row}: a quote opened there is never closed and "
                                        f"swallows the rows after it, so items the file names "
                                        f"would look missing; --zero-missing would zero them. "
                                        f"Nothing was sent: fix the quote and sync again")


def _legacy_plan(path: Path) -> bool:
    """Whether ``path`` is a plan.csv of an earlier version (``old``/``new`` columns)."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            header = {h.strip().strip('"') for h in fh.readline().split(",")}
    except OSError:
        return False  # reading it properly says what is wrong
    return "before" not in header and {"old", "new"} <= header


def _planned_changes(run: _Run, checked: Validated, planned_old: pl.DataFrame,
                     snapshot: pl.DataFrame, live: pl.DataFrame | None,
                     pushed: pl.DataFrame | None = None) -> ChangeSet:
    """The plan's items, refused as a whole (:class:`StalePlan`) when the store moved since
    the plan was made: its live levels (re-read just now) against the plan's ``before``;
    without a token (a dry run offline), the snapshot's levels.

    ``pushed``: the items an interrupted push of this same plan sent (its journal was just
    replayed). They moved by the plan's own hand, to its new level (confirmed) or to an
    unknown one (in flight at the kill): resuming the push sends them again.
    """
    valid = checked.valid.join(planned_old, on=ROW, how="left")
    planned = valid.select(*KEY, pl.col("planned").alias("before"), READ_AT)
    if pushed is not None and pushed.height:
        # Moved by this plan's own push: to its level, or unknown while in flight.
        mine = valid.join(pushed.unique(), on=KEY, how="semi")
        planned = planned.join(mine.select(KEY), on=KEY, how="anti")
    if live is None:
        moved = planned.join(snapshot.select(*KEY, pl.col("quantity").alias("live")), on=KEY,
                             how="left").filter(~pl.col("before").eq_missing(pl.col("live")))
        if moved.height:
            from invsync.run.plans import stale_plan

            raise stale_plan(moved, against="the snapshot")
    else:
        from invsync.run.plans import recheck

        meta = run.snapshots.read_meta()
        fresh = recheck(planned, lambda keys: _reread(run, keys, live), snapshot=snapshot,
                        own=run.snapshots.load_last_write(),
                        own_written_at=meta.get("last_write_at"),
                        lag_s=run.settings.verify_lag_s)
        del fresh
    changes = valid.rename({"planned": "old_quantity"}).drop(READ_AT)
    return ChangeSet(changes=changes, unchanged=0, baseline="plan")


def _reread(run: _Run, keys: pl.DataFrame, first: pl.DataFrame) -> pl.DataFrame:
    """The live levels of ``keys``: the read made for this run the first time, then
    fresh reads (the apply re-check re-reading items a lagging read may hide)."""
    if not run.rechecked:
        run.rechecked = True
        return first
    return run.store.live_levels(keys["location_id"].unique().to_list(), keys=keys)


def _by_location(checked: Validated, changes: ChangeSet) -> dict[str, dict[str, int]]:
    """Per location: items new, changed, to zero and unchanged."""
    valid = checked.valid.group_by("location_id").len("valid")
    ch = changes.changes.group_by("location_id").agg(
        pl.col("old_quantity").is_null().sum().alias("new"),
        pl.col("old_quantity").is_not_null().sum().alias("changed"),
        goes_to_zero(pl.col("quantity"), pl.col("old_quantity")).sum().alias("to_zero"))
    table = valid.join(ch, on="location_id", how="full", coalesce=True).fill_null(0)
    out = {}
    for row in table.sort("location_id").iter_rows(named=True):
        out[str(row["location_id"])] = {
            "new": row["new"], "changed": row["changed"], "to_zero": row["to_zero"],
            "unchanged": max(row["valid"] - row["new"] - row["changed"], 0)}
    return out


def _store_levels(run: _Run, checked: Validated, snapshot: pl.DataFrame, *,
                  from_plan: bool) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """What the store holds as far as this run knows (for the brakes) and the live levels
    read (None when none were: ``--baseline snapshot``, or no access token).

    Plans are made against the store: with a token, the live levels of the file's items
    are read (filtered reads, unless reading every item at its locations takes no more
    requests, or ``--zero-missing`` needs the items the file leaves out). A reviewed plan
    reads its items' levels whatever the baseline: that is its apply re-check.
    """
    from invsync.run.store_access import known_items

    settings = run.settings
    if settings.token is None:
        if settings.baseline == "live" or from_plan:
            run.report.notes.append(
                "no access token: no live levels were read; this plan is made against the "
                "snapshot (the levels invsync last set), not the store")
        return snapshot, None
    if settings.baseline != "live" and not from_plan:
        return snapshot, None
    file_locations = checked.valid["location_id"].unique()
    kinds = checked.valid["identifier"].unique().implode()
    read_all = settings.zero_missing and not from_plan
    run.read_at = utc_now_ms()
    if file_locations.len() == 0:
        live = pl.DataFrame(schema=snapshot.schema)
    else:
        live = run.store.live_levels(file_locations.to_list(),
                                     keys=None if read_all else checked.valid,
                                     known_items=known_items(snapshot))
    # The store lists an item under its SKU, variant id and product id: counted once per
    # item only in the identifier kinds the file uses, or the brake's share is diluted.
    live = live.filter(pl.col("identifier").is_in(kinds))
    held = live
    if not read_all:
        # The snapshot's levels of the items not read keep the brake's denominator.
        held = pl.concat([live, snapshot.filter(
            pl.col("location_id").is_in(file_locations.implode())
            & pl.col("identifier").is_in(kinds)).join(live, on=KEY, how="anti")
            .select(live.columns)])
    return held, live


def _learn_unknown_levels(run: _Run, checked: Validated, changes: ChangeSet,
                          snapshot: pl.DataFrame, live: pl.DataFrame) -> None:
    """Items the snapshot holds with an unknown level (a write never confirmed) that the
    live read found already at the file's level were not sent: their level is known
    now (the store said it), so the snapshot records it."""
    unknown = snapshot.filter(pl.col("quantity").is_null()).select(KEY)
    if unknown.height == 0:
        return
    same = checked.valid.select(*KEY, "quantity").join(unknown, on=KEY, how="semi").join(
        live.select(*KEY, pl.col("quantity").alias("_live")), on=KEY, how="inner").filter(
        pl.col("_live") == pl.col("quantity")).join(changes.changes.select(KEY), on=KEY,
                                                    how="anti")
    if same.height:
        run.snapshots.merge(same.select(*KEY, "quantity"))


def _with_before(changes: pl.DataFrame, live: pl.DataFrame) -> pl.DataFrame:
    """``changes`` with each item's live level as its ``old_quantity`` (``--full``)."""
    return changes.drop("old_quantity").join(
        live.select(*KEY, pl.col("quantity").alias("old_quantity")), on=KEY, how="left",
        maintain_order="left")


def _without_resumed(run: _Run, changes: ChangeSet, sha256: str | None) -> ChangeSet:
    """Resuming the same file: leave out the items the interrupted run's journal confirmed
    at the level the file asks (whatever the baseline: ``--full`` too)."""
    done = run.resumed_levels
    if done is None or done.height == 0 or not sha256 or run.replayed_sha256 != sha256:
        return changes
    frame = changes.changes
    confirmed = frame.join(done.select(*KEY, pl.col("quantity").alias("_done")).unique(KEY),
                           on=KEY, how="inner").filter(pl.col("_done") == pl.col("quantity"))
    if confirmed.height == 0:
        return changes
    run.report.notes.append(f"{confirmed.height:,} item(s) the interrupted run confirmed at the "
                            f"file's level are not sent again")
    return replace(changes, changes=frame.join(confirmed.select(KEY), on=KEY, how="anti"),
                   unchanged=changes.unchanged + confirmed.height)


def _snapshot(run: _Run) -> pl.DataFrame:
    """The snapshot, with an interrupted run's confirmed levels replayed into it first."""
    future, run.snapshot_future = run.snapshot_future, None
    snapshot = future.result() if future is not None else run.snapshots.load()
    if not run.journal.exists():
        return snapshot
    recovered = run.journal.recover()
    header = recovered.header
    unconfirmed = recovered.unconfirmed
    note = (f"recovered {recovered.confirmed.height:,} confirmed levels "
            f"({len(recovered.transaction_ids)} transactions) from interrupted run "
            f"{header.get('run_id', '?')}; {unconfirmed.height:,} items of "
            f"{len(recovered.in_flight)} batch(es) in flight are kept with an unknown level "
            f"and sent again")
    run.report.notes.append(note)
    _resuming(run, header.get("run_id"))
    run.replayed = pl.concat([recovered.confirmed.select(KEY), unconfirmed.select(KEY)])
    run.replayed_sha256 = header.get("sha256")
    run.resumed_levels = recovered.confirmed
    run.emit("recovered", {"from_run": header.get("run_id"),
                           "confirmed": recovered.confirmed.height,
                           "from_report": wrote_report(run.settings.reports,
                                                        header.get("run_id"))})
    if run.settings.dry_run:
        return recovered.applied_to(snapshot)  # a dry run changes no state
    if recovered.confirmed.height or unconfirmed.height:
        run.snapshots.merge(recovered.confirmed, forget=unconfirmed)
    run.journal.close(remove=True)
    return run.snapshots.load()


def _with_missing_zeroed(changes: ChangeSet, checked: Validated, baseline: pl.DataFrame,
                        report: RunReport, live: pl.DataFrame | None = None) -> ChangeSet:
    """Add a 0 for each snapshot item, at a location the file covers, that the file omits.

    An item named by any row of the file, valid or rejected, is not missing. Each zero
    replaces the item's live level when it was read (an item the store already holds at
    0 is left alone), else its snapshot level; an unknown level (null) is zeroed too: it
    may hold stock.
    """
    locations = checked.valid["location_id"].unique().implode()
    covered = baseline.filter(pl.col("location_id").is_in(locations))
    if live is not None:
        covered = covered.drop("quantity").join(live.select(*KEY, "quantity"), on=KEY,
                                                how="left")
    covered = covered.filter(pl.col("quantity").ne_missing(0))
    missing = covered if checked.seen_keys is None else covered.join(
        checked.seen_keys, on=KEY, how="anti")
    missing = missing.join(changes.changes.select(KEY), on=KEY, how="anti")
    if missing.height == 0:
        return changes
    zeros = missing.select(
        pl.lit(None, pl.Int64).alias(ROW), "location_id", "identifier", "item_key",
        pl.when(pl.col("identifier") == "sku").then(pl.col("item_key")).alias("sku"),
        pl.when(pl.col("identifier") == "product_id").then(pl.col("item_key"))
        .cast(pl.Int64).alias("product_id"),
        pl.when(pl.col("identifier") == "variant_id").then(pl.col("item_key"))
        .cast(pl.Int64).alias("variant_id"),
        pl.lit(0, pl.Int64).alias("quantity"),
        pl.col("identifier").alias("address"), pl.col("item_key").alias("address_key"),
        pl.col("quantity").alias("old_quantity"),
    )
    report.notes.append(f"--zero-missing: {zeros.height:,} items in the snapshot but not in the "
                        f"file are set to 0")
    return replace(changes, changes=pl.concat([changes.changes,
                                               zeros.select(changes.changes.columns)]),
                   zeroed_missing=zeros.height)


def _canonical_snapshot(run: _Run, snapshot: pl.DataFrame, mapping: pl.DataFrame) -> pl.DataFrame:
    """Re-key the snapshot's entries canonically; a real run stores the result (under its lock)."""
    canon, moved, conflicts = canonical_snapshot(snapshot, mapping)
    if moved == 0:
        return snapshot
    note = f"{moved:,} snapshot entries re-keyed by the item's canonical identity"
    if conflicts:
        note += (f"; {conflicts:,} items were held under two keys with different levels: "
                 f"their level is unknown, so they are sent again")
    run.report.notes.append(note)
    if not run.settings.dry_run:
        run.snapshots.replace(canon)
    return canon


def _fetch_locations(run: _Run) -> list[Location]:
    locations = run.store.locations()
    run.emit("locations", {"count": len(locations)})
    return locations


class _JournaledSubmit(SubmitObserver):
    """Journals each batch before it goes and each confirmation as it comes; reports each
    finished batch as a ``batch`` event."""

    confirmed_blocks = False
    """A confirmation is written, not fsynced (the next batch's record or the close syncs
    it): on the event loop, no thread hop."""

    def __init__(self, journal: Journal, emit: Observer, *, wave: int = 0,
                 on_wave: Callable[[], object] | None = None) -> None:
        self.journal, self.emit = journal, emit
        self.wave, self.on_wave = wave, on_wave
        """``on_wave()`` is called once batch number ``wave`` is recorded as sending."""
        # What happened so far, for a report of a submit cut off by a signal.
        self.sent: set[int] = set()
        self.confirmations: dict[int, list[tuple[list[int], str]]] = {}
        """Per batch: the positions the store confirmed and their transaction id."""
        self.done: dict[int, BatchResult] = {}
        self.journal_failed = False
        """The journal could not record a batch or a confirmation: it is kept (whatever
        the snapshot took), so that `invsync resume` finishes the run, as the error says."""

    def prepare(self, batch: Batch) -> None:
        self.journal.prepare(batch.index, batch.frame.select(*KEY, "quantity"))

    def sending(self, batch: Batch) -> None:
        self.sending_all([batch])

    def sending_all(self, batches: list[Batch]) -> None:
        """Record ``batches`` as sending, on disk together (the last record's fsync)."""
        try:
            for n, batch in enumerate(batches, 1):
                self.journal.sending(batch.index, batch.frame.select(KEY),
                                     durable=n == len(batches))
        except OSError as exc:
            raise FatalError(self._failed(exc, "sending stopped (a batch is never sent "
                                               "before the journal holds it)")) from None
        self.sent.update(batch.index for batch in batches)
        if self.on_wave is not None and len(self.sent) >= self.wave:
            on_wave, self.on_wave = self.on_wave, None
            on_wave()

    def confirmed(self, batch: Batch, items: list[int], transaction_id: str) -> None:
        levels = batch.frame if len(items) == len(batch) else batch.frame[items]
        try:
            # On disk with the next batch's sending record (one fsync a batch).
            self.journal.confirmed(batch.index, transaction_id,
                                   levels.select(*KEY, "quantity"), durable=False)
        except OSError as exc:
            raise FatalError(self._failed(exc, "sending stopped (what the store confirmed "
                                               "since is sent again)")) from None
        self.confirmations.setdefault(batch.index, []).append((items, transaction_id))

    def _failed(self, exc: OSError, what: str) -> str:
        self.journal_failed = True
        return (f"the journal {self.journal.path} could not be written "
                f"({exc.strerror or exc}): {what}; make room, then run `invsync resume` "
                f"to finish")

    def finished(self, result: BatchResult) -> None:
        self.done[result.index] = result
        self.emit("batch", result.to_dict())

    def interrupted(self, batches: list[Batch], requests: int) -> SubmitResult:
        """The submit's result as far as it went when a signal cut it off: finished
        batches as they ended, a batch in flight with the items the store confirmed (the
        rest unconfirmed: it may have applied them), the others not sent."""
        results = []
        for batch in batches:
            done = self.done.get(batch.index)
            if done is None:
                done = BatchResult(batch.index, batch.location_id, len(batch),
                                   status="not_sent")
                if batch.index in self.sent:
                    seqs = batch.seqs
                    confirmed = {seqs[i]: txid for items, txid in
                                 self.confirmations.get(batch.index, []) for i in items}
                    done.status, done.error = "failed", "interrupted while in flight"
                    done.accepted = list(confirmed)
                    done.transaction_ids = list(dict.fromkeys(confirmed.values()))
            results.append(done)
        return SubmitResult(batches=results, batch_seqs=[b.seqs for b in batches],
                            requests=requests)


def _submit_journaled(run: _Run, changes: ChangeSet, batches: list[Batch]) -> SubmitResult:
    """Send the batches, journaling each before it goes and each confirmation as it comes."""
    settings = run.settings
    journal = run.journal
    try:
        journal.begin({"run_id": run.report.run_id, "run_seq": run.report.run_seq,
                       "input": str(run.path),
                       "sha256": run.report.input.get("sha256"), "batches": len(batches),
                       "options": settings.public()})
    except OSError as exc:  # a full or read-only state disk, before any batch went out
        # (Journal.begin leaves no journal behind then: it would hold nothing to resume.)
        raise FatalError(f"the journal {journal.path} could not be started "
                         f"({exc.strerror or exc}): nothing was sent; make room in the state "
                         f"folder, then run the same command again") from None
    run.emit("submit_started", {"batches": len(batches),
                                "items": sum(len(b) for b in batches)})
    # The snapshot and last-write files are built once the first batches are out (all a
    # write slot can hold): their building does not hold up the first requests.
    ahead: list[Future[tuple[bytes, bytes]]] = []
    observer = _JournaledSubmit(
        journal, run.emit, wave=min(max(settings.concurrency, 1), len(batches)),
        on_wave=lambda: ahead.append(_files_ahead(run, changes.changes)))
    before = run.store.requests_sent
    try:
        result = run.store.run(lambda client: submit(
            client, batches, reason=settings.reason, concurrency=settings.concurrency,
            observer=observer))
    except KeyboardInterrupt:  # SIGINT/SIGTERM: the report still says what was confirmed
        run.cut_off = observer.interrupted(batches, run.store.requests_sent - before)
        raise
    run.cut_off = result  # a signal from here on: the report counts the whole result
    _settle(run, changes.changes, result, ahead[0] if ahead else None,
            keep_journal=observer.journal_failed)
    return result


def _files_ahead(run: _Run, items: pl.DataFrame) -> Future[tuple[bytes, bytes]]:
    """The snapshot and last-write files as they will be once the store has confirmed
    every item, built in a worker thread while the batches are out (written, by
    :func:`_settle`, only if it does)."""
    snapshots = run.snapshots
    levels = items.select(*KEY, "quantity")
    last = items.select(*KEY, pl.col("old_quantity").alias("before"), "quantity")
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invsync-ahead")
    future = pool.submit(lambda: (snapshots.merged_file(levels), last_write_file(last)))
    pool.shutdown(wait=False)
    return future


def _all_accepted(result: SubmitResult, items: int) -> bool:
    """Did the store confirm every item, each batch in one piece?"""
    return result.fatal is None and sum(b.items for b in result.batches) == items and all(
        b.status == "accepted" and len(b.accepted) == b.items for b in result.batches)


def _ready(ahead: Future[tuple[bytes, bytes]] | None) -> tuple[bytes, bytes] | None:
    """The files built ahead, or None if that failed or never started (the slow way then
    says why)."""
    if ahead is None:
        return None
    try:
        return ahead.result()
    except Exception as exc:
        log_where(log, "building the snapshot ahead", exc)
        return None


def _settle(run: _Run, items: pl.DataFrame, result: SubmitResult,
            ahead: Future[tuple[bytes, bytes]] | None, *, keep_journal: bool = False) -> None:
    """Record what the store confirmed in the snapshot (an item sent without an answer
    as unknown), then remove the journal (``keep_journal``: keep it, for `invsync
    resume`); a full state disk is the run's failure."""
    files = _ready(ahead) if _all_accepted(result, items.height) else None
    if files is not None:
        accepted, unconfirmed = items, items.clear()
    else:
        accepted = items.filter(pl.col(SEQ).is_in(_seqs(result.accepted)))
        # Sent but neither confirmed nor refused (a lost answer, a run that gave up): the
        # store may have applied it, so its level is no longer known (null in the snapshot).
        settled = [*result.accepted, *(s for s, _ in result.refused)]
        unconfirmed = items.filter(pl.col(SEQ).is_in(_seqs(result.sent))
                                   & ~pl.col(SEQ).is_in(_seqs(settled)))
    try:
        if files is not None:
            run.snapshots.write_file(files[0])
        elif accepted.height or unconfirmed.height:
            run.snapshots.merge(accepted.select(*KEY, "quantity"),
                                forget=unconfirmed.select(KEY))
        if result.sent_count:  # (not the list of every item sent)
            # What and when this tool last wrote: the apply re-check forgives a read
            # lagging it (and only that).
            run.snapshots.write_last_write(files[1] if files is not None else accepted.select(
                *KEY, pl.col("old_quantity").alias("before"), "quantity"))
            meta = run.snapshots.read_meta()
            run.snapshots.write_meta({**meta, "last_write_at": utc_now_ms(),
                                      "last_write_run": run.report.run_id})
        # The snapshot now holds every confirmed level: the journal has done its job,
        # unless it failed the run: then it is kept, so that `invsync resume` finishes it.
        if not keep_journal:
            run.journal.close(remove=True)
    except OSError as exc:  # a full state disk: what the store confirmed is still reported
        problem = FatalError(
            f"the snapshot in {run.snapshots.dir} could not be updated "
            f"({exc.strerror or exc}) after the store confirmed {accepted.height:,} items; "
            f"the journal is kept, so the next sync or `invsync resume` records them")
        if result.fatal is None:
            result.fatal = problem
        else:
            run.report.notes.append(str(problem))


def _all_rejected(checked: Validated, changes: ChangeSet, result: SubmitResult | None,
                  known: tuple[pl.DataFrame | None, ...] = ()) -> pl.DataFrame:
    """Validation rejections plus the items the store refused, as one frame.

    ``known`` holds the items the store is known to have (the snapshot, live levels): a
    refused SKU gets a "did you mean" from them.
    """
    if result is None or not result.refused:
        return checked.rejected
    mapping = checked.source.mapping
    refused = pl.DataFrame(
        {SEQ: [s for s, _ in result.refused], "message": [m for _, m in result.refused]},
        schema={SEQ: pl.Int64, "message": pl.String},
    )
    items = changes.changes
    refused = refused.join(items.select(SEQ, ROW, "address", "address_key"), on=SEQ, how="left")
    refused = refused.with_columns(
        column=pl.col("address").replace_strict(mapping, default=pl.col("address"),
                                                return_dtype=pl.String),
        value=pl.col("address_key"),
        reason=pl.lit("refused_by_store"),
        message=refused_messages(refused, known),
    )
    return pl.concat([checked.rejected, refused.select(checked.rejected.columns)]).sort(
        ROW, nulls_last=True)


def _seqs(values: list[int]) -> pl.Series:
    """``values`` for ``is_in``: a typed list (a Python list is converted value by value,
    8 times slower for a first night's 100,000 items)."""
    return pl.Series(values, dtype=pl.Int64).implode()


def _item_status(result: SubmitResult | None, dry_run: bool, planned: int) -> pl.Expr:
    """Each change's fate, by its :data:`SEQ` (the number the results name it by), for a
    plan of ``planned`` changes."""
    if result is None:
        return pl.lit("planned" if dry_run else "not_sent")
    if _all_accepted(result, planned):
        return pl.lit("accepted")  # no list of them built (a run stopped early: not this)
    seq = pl.col(SEQ)
    return (pl.when(seq.is_in(_seqs(result.accepted))).then(pl.lit("accepted"))
            .when(seq.is_in(_seqs([s for s, _ in result.refused]))).then(pl.lit("refused"))
            .when(seq.is_in(_seqs(result.sent))).then(pl.lit("unconfirmed"))
            .otherwise(pl.lit("not_sent")))


def _fill(run: _Run, checked: Validated, changes: ChangeSet, batches: list[Batch],
          result: SubmitResult | None, *, braked: bool) -> None:
    """Record the run's plan, counts, rejected rows, status and exit code in its report."""
    report, settings, table = run.report, run.settings, checked.source
    run.plan = plan_frame(changes.changes, _item_status(result, settings.dry_run,
                                                           changes.changes.height))
    if run.sold_side is not None:
        from invsync.run.as_of import plan_columns

        run.plan = plan_columns(run.plan, run.sold_side)
    # plan.csv is written (and synced) while the rest of the report is made.
    run.plan_ahead = write_plan_ahead(run.folder, run.plan)
    report.plan_binding = plan_binding(settings, checked.valid["location_id"].unique().to_list())
    report.changes = change_records(run.plan)
    rejected = run.rejected if run.rejected is not None else checked.rejected
    c = count_run(table, checked, changes, result, run.plan, rejected)
    if result is not None:
        report.batches = [b.to_dict() for b in result.batches]
        report.transaction_ids = result.transaction_ids
        report.requests = {"sent": result.requests, "http_429": result.responses_429}
    report.counts = c
    report.rejected = rejected_records(rejected)
    report.rejected_by_reason = dict(Counter(rejected["reason"].to_list()).most_common())
    fatal = result.fatal if result is not None else None
    report.status, report.exit_code = outcome(c, fatal=fatal, braked=braked,
                                              dry_run=settings.dry_run)
    if settings.dry_run:
        report.batches = [{"index": b.index, "location_id": b.location_id, "items": len(b),
                           "transaction_id": None, "status": "planned", "attempts": 0}
                          for b in batches]
    elif fatal is not None:
        report.error, report.error_kind = str(fatal), fatal.kind
