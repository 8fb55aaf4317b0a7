"""Runs the stages in order: ingest → validate → diff → brakes → submit → report.

This is the library entry point behind ``invsync sync``: :func:`sync_file` never prints;
it returns the :class:`~pipeline.report.RunReport` it also wrote to the run folder.
A real run holds the store's lock, replays an interrupted run's journal first, and
journals every batch, so that ``kill -9`` at any moment loses nothing.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.brakes import check_brakes
from pipeline.config import Settings
from pipeline.diff import ChangeSet, compute_changes
from pipeline.errors import ExitCode, FatalError, InputFileError, SafetyBrakeError
from pipeline.ingest import ROW, StockTable, read_stock_file
from pipeline.journal import Journal, StoreLock
from pipeline.report import (
    Counts,
    RunReport,
    new_run_id,
    plan_frame,
    rejected_records,
    utc_now,
    write_run_folder,
)
from pipeline.snapshot import KEY, SnapshotStore
from pipeline.submit import (
    SEQ,
    Batch,
    BatchResult,
    SubmitResult,
    number_changes,
    plan_batches,
    submit,
)
from pipeline.validate import Location, Validated, validate

log = logging.getLogger("invsync.sync")

Event = Callable[[str, dict[str, Any]], None]


def _no_event(name: str, data: dict[str, Any]) -> None:
    return None


class _Run:
    """The state of one run while its stages execute."""

    def __init__(self, path: Path, settings: Settings, emit: Event) -> None:
        self.path = path
        self.settings = settings
        self.emit = emit
        self.report = RunReport(run_id=new_run_id(), status="failed", started_at=utc_now(),
                                options=settings.public(),
                                store={"store_hash": settings.store_hash,
                                       "api_url": settings.api_url})
        self.folder = settings.reports / self.report.run_id
        self.timings: dict[str, float] = {}
        self.table: StockTable | None = None
        self.rejected: pl.DataFrame | None = None
        self.plan: pl.DataFrame | None = None
        self.snapshot_future: Future[pl.DataFrame] | None = None
        store = settings.store_hash or "offline"
        self.snapshots = SnapshotStore(settings.state_dir, store)
        self.lock = StoreLock(self.snapshots.dir, store)
        self.journal = Journal(self.snapshots.dir)

    def timed(self, stage: str, started: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started


def sync_file(path: str | Path, settings: Settings, *, on_event: Event | None = None,
              command: str = "sync", origin: dict[str, Any] | None = None) -> RunReport:
    """Sync ``path`` into the store described by ``settings``; write and return the report.

    ``origin`` (who started the run, from where) is recorded as is in ``report.json``.
    """
    settings.check(needs_store=not settings.dry_run)
    run = _Run(Path(path), settings, on_event or _no_event)
    run.report.command = command
    run.report.origin = dict(origin or {})
    run.report.input = {"path": str(path)}
    t_start = time.perf_counter()
    run.emit("run_started", {"run_id": run.report.run_id, "input": str(path),
                             "dry_run": settings.dry_run})
    locked = False
    try:
        if not settings.dry_run:
            run.lock.acquire(run.report.run_id)
            locked = True
            if run.lock.took_over:
                run.report.notes.append(
                    f"took over the lock left by run {run.lock.took_over.get('run_id', '?')} "
                    f"(pid {run.lock.took_over.get('pid', '?')}), which is no longer running")
        _execute(run)
    except FatalError as exc:
        run.report.error = str(exc)
        run.report.exit_code = int(exc.exit_code)
    finally:
        if locked:
            run.lock.release()
    run.timings["total"] = time.perf_counter() - t_start
    report = run.report
    report.timings = {k: round(v, 4) for k, v in run.timings.items()}
    report.finished_at = utc_now()
    write_run_folder(report, run.folder, run.table, run.rejected, run.plan)
    run.emit("run_finished", {"run_id": report.run_id, "status": report.status,
                              "exit_code": report.exit_code, "counts": report.counts.__dict__,
                              "transactions": len(report.transaction_ids),
                              "error": report.error, "report_dir": str(run.folder)})
    return report


def resume(settings: Settings, *, on_event: Event | None = None) -> RunReport:
    """Finish the interrupted run of ``settings.store_hash``: same file, same options."""
    from pipeline.config import settings_from_public
    from pipeline.errors import UsageError

    store = settings.store_hash or "offline"
    journal = Journal(SnapshotStore(settings.state_dir, store).dir)
    if not journal.exists():
        raise UsageError(f"nothing to resume: no interrupted run for store {store!r} "
                         f"under {settings.state_dir}")
    header = journal.recover().header
    if not header.get("input"):
        raise UsageError(f"the journal {journal.path} names no input file; run sync again")
    resumed = settings_from_public(settings, header.get("options") or {})
    return sync_file(header["input"], resumed, on_event=on_event)


def _execute(run: _Run) -> None:
    settings, report = run.settings, run.report
    # While the file is parsed (polars releases the GIL), import pandera and read the
    # snapshot in the background: together they are a third of a dry run's time.
    background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="invsync-bg")
    background.submit(_warm_up)
    run.snapshot_future = background.submit(run.snapshots.load)
    background.shutdown(wait=False)
    t = time.perf_counter()
    if settings.plan_file:
        table, planned_old = _read_plan(run.path)
    else:
        table = read_stock_file(run.path, sheet=settings.sheet, column_map=settings.column_map)
        planned_old = None
    run.table = table
    run.timed("ingest", t)
    report.input = {"path": str(run.path), "sha256": table.sha256, "format": table.format,
                    "rows": table.rows, "blank_rows": table.blank_rows, "sheet": table.sheet,
                    "encoding": table.encoding, "delimiter": table.delimiter,
                    "columns": table.mapping}
    report.notes.extend(table.notes)
    locations = _fetch_locations(settings, run.emit) if settings.token else None

    t = time.perf_counter()
    checked = validate(table, default_location=settings.location_id, locations=locations,
                       duplicates=settings.duplicates,  # type: ignore[arg-type]
                       rules=settings.rules)
    run.timed("validate", t)
    report.notes.extend(checked.notes)

    t = time.perf_counter()
    snapshot = _baseline(run)
    if planned_old is not None:
        changes = _planned_changes(checked, planned_old, snapshot)
    elif settings.full:
        changes = compute_changes(checked.valid, None)
    elif settings.baseline == "live":
        from pipeline.live import live_levels

        live = live_levels(settings, checked.valid["location_id"].unique().to_list(), run.emit)
        changes = compute_changes(checked.valid, live, baseline_name="live")
    else:
        changes = compute_changes(checked.valid, snapshot)
    if settings.zero_missing and planned_old is None:
        changes = _with_missing_zeroed(changes, checked, snapshot, report)
    run.timed("diff", t)
    report.by_location = _by_location(checked, changes)

    meta = run.snapshots.read_meta()
    if settings.baseline == "snapshot" or planned_old is not None:
        synced = dict(snapshot.group_by("location_id").len().iter_rows())
    else:  # live: the items of the file that the store already had
        synced = {int(k): v["unchanged"] + v["changed"] for k, v in report.by_location.items()}
    from_plan = planned_old is not None  # a reviewed plan is not an export: no row brakes
    brakes = check_brakes(
        rows=table.rows, last_rows=None if from_plan else meta.get("last_rows"),
        changes=changes, synced_by_location=synced,
        limits=replace(settings.brakes, allow_empty=True) if from_plan else settings.brakes)
    t = time.perf_counter()
    batches = plan_batches(changes.changes, settings.batch_size)
    run.timed("plan", t)
    result: SubmitResult | None = None
    if brakes:
        report.brakes = [b.__dict__ for b in brakes]
        if not settings.dry_run:
            run.rejected = checked.rejected
            _fill(run, checked, changes, batches, None)
            raise SafetyBrakeError("safety brake: " + "; ".join(b.message for b in brakes)
                                   + ". Nothing was sent.")
    if not settings.dry_run and batches:
        t = time.perf_counter()
        result = _submit_journaled(run, changes, batches)
        run.timed("submit", t)
    run.rejected = _all_rejected(checked, changes, result)
    _fill(run, checked, changes, batches, result)
    if brakes and settings.dry_run:
        report.exit_code = int(ExitCode.SAFETY_BRAKE)
        report.error = "safety brake (dry run): " + "; ".join(b.message for b in brakes)
    if not settings.dry_run and report.status in ("succeeded", "partial") \
            and planned_old is None and table.rows > 0:
        run.snapshots.write_meta({**meta, "last_run": report.run_id, "last_rows": table.rows,
                                  "last_finished": utc_now()})


def _warm_up() -> None:
    from pipeline.validate import warm_up

    try:
        warm_up()
    except Exception:  # the real import in validate() reports any problem
        log.debug("validation warm-up failed", exc_info=True)


def _read_plan(path: Path) -> tuple[StockTable, pl.DataFrame]:
    """A reviewed ``plan.csv`` as a stock table (validated again) and its planned old levels."""
    # "item" stands in as the identifier column until the real mapping is set below.
    table = read_stock_file(path, column_map={"new": "quantity", "item": "sku"})
    needed = {"identifier", "item", "old", "new", "location_id"}
    if not needed <= set(table.headers):
        raise InputFileError(str(path), "not a plan.csv written by invsync plan (needs columns "
                                        f"{', '.join(sorted(needed))})")
    # validate() un-escapes formula-escaped items, as for any file it reads.
    ident, item = pl.col("identifier"), pl.col("item")
    frame = table.frame.with_columns(
        **{f"__{kind}": pl.when(ident == kind).then(item)
           for kind in ("sku", "variant_id", "product_id")})
    mapping = {"sku": "__sku", "variant_id": "__variant_id", "product_id": "__product_id",
               "location_id": table.mapping["location_id"], "quantity": table.mapping["quantity"]}
    old = frame.select(pl.col(ROW), pl.col("old").cast(pl.Int64, strict=False).alias("planned"))
    return replace(table, frame=frame, mapping=mapping, format="plan"), old


def _planned_changes(checked: Validated, planned_old: pl.DataFrame,
                     snapshot: pl.DataFrame) -> ChangeSet:
    """The plan's items, refused as a whole if the snapshot moved since the plan was made."""
    valid = checked.valid.join(planned_old, on=ROW, how="left")
    current = valid.join(snapshot.select(*KEY, pl.col("quantity").alias("now")), on=KEY,
                         how="left")
    moved = current.filter(~pl.col("planned").eq_missing(pl.col("now")))
    if moved.height:
        first = moved.row(0, named=True)
        raise SafetyBrakeError(
            f"the snapshot moved since this plan was made: {moved.height:,} planned item(s) now "
            f"have another old level (e.g. {first['identifier']} {first['item_key']} at location "
            f"{first['location_id']}: planned from {first['planned']}, now {first['now']}); "
            f"nothing was sent; make a new plan")
    changes = valid.rename({"planned": "old_quantity"})
    return ChangeSet(changes=changes, unchanged=0, baseline="plan")


def _by_location(checked: Validated, changes: ChangeSet) -> dict[str, dict[str, int]]:
    """Per location: items new, changed, to zero and unchanged."""
    valid = checked.valid.group_by("location_id").len("valid")
    ch = changes.changes.group_by("location_id").agg(
        pl.col("old_quantity").is_null().sum().alias("new"),
        pl.col("old_quantity").is_not_null().sum().alias("changed"),
        ((pl.col("quantity") == 0) & (pl.col("old_quantity").fill_null(0) != 0)).sum()
        .alias("to_zero"))
    table = valid.join(ch, on="location_id", how="full", coalesce=True).fill_null(0)
    out = {}
    for row in table.sort("location_id").iter_rows(named=True):
        out[str(row["location_id"])] = {
            "new": row["new"], "changed": row["changed"], "to_zero": row["to_zero"],
            "unchanged": max(row["valid"] - row["new"] - row["changed"], 0)}
    return out


def _baseline(run: _Run) -> pl.DataFrame:
    """The snapshot, with an interrupted run's confirmed levels replayed into it first."""
    future, run.snapshot_future = run.snapshot_future, None
    snapshot = future.result() if future is not None else run.snapshots.load()
    if not run.journal.exists():
        return snapshot
    recovered = run.journal.recover()
    header = recovered.header
    unconfirmed = recovered.unconfirmed
    assert unconfirmed is not None
    note = (f"recovered {recovered.confirmed.height:,} confirmed levels "
            f"({len(recovered.transaction_ids)} transactions) from interrupted run "
            f"{header.get('run_id', '?')}; {unconfirmed.height:,} items of "
            f"{len(recovered.in_flight)} batch(es) in flight are unknown and sent again")
    run.report.notes.append(note)
    run.report.resumed_from = header.get("run_id")
    run.emit("recovered", {"from_run": header.get("run_id"),
                           "confirmed": recovered.confirmed.height})
    if run.settings.dry_run:
        # A dry run changes no state: apply the journal in memory only.
        kept = snapshot.join(recovered.confirmed, on=KEY, how="anti").join(
            unconfirmed, on=KEY, how="anti")
        return pl.concat([kept, recovered.confirmed])
    if recovered.confirmed.height or unconfirmed.height:
        run.snapshots.merge(recovered.confirmed, forget=unconfirmed)
    run.journal.close(remove=True)
    return run.snapshots.load()


def _with_missing_zeroed(changes: ChangeSet, checked: Validated, baseline: pl.DataFrame,
                         report: RunReport) -> ChangeSet:
    """Add a 0 for each snapshot item, at a location the file covers, that the file omits."""
    locations = checked.valid["location_id"].unique().implode()
    covered = baseline.filter(pl.col("location_id").is_in(locations) & (pl.col("quantity") != 0))
    missing = covered if checked.seen_keys is None else covered.join(
        checked.seen_keys, on=KEY, how="anti")
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
        pl.col("quantity").alias("old_quantity"),
    )
    report.notes.append(f"--zero-missing: {zeros.height:,} items in the snapshot but not in the "
                        f"file are set to 0")
    return ChangeSet(changes=pl.concat([changes.changes, zeros.select(changes.changes.columns)]),
                     unchanged=changes.unchanged, baseline=changes.baseline,
                     zeroed_missing=zeros.height)


def _fetch_locations(settings: Settings, emit: Event) -> list[Location]:
    import asyncio

    from pipeline.live import store_client

    async def fetch() -> list[Location]:
        async with store_client(settings, emit) as client:
            return await client.get_locations()

    locations = asyncio.run(fetch())
    emit("locations", {"count": len(locations)})
    return locations


def _submit_journaled(run: _Run, changes: ChangeSet, batches: list[Batch]) -> SubmitResult:
    """Send the batches, journaling each before it goes and each confirmation as it comes."""
    import asyncio

    from pipeline.live import store_client

    settings = run.settings
    assert settings.token is not None
    journal = run.journal
    journal.begin({"run_id": run.report.run_id, "input": str(run.path),
                   "sha256": run.report.input.get("sha256"), "batches": len(batches),
                   "options": settings.public()})

    def on_sending(batch: Batch) -> None:
        journal.sending(batch.index, batch.frame.select(KEY))

    def on_confirmed(batch: Batch, idx: list[int], txid: str) -> None:
        levels = batch.frame if len(idx) == len(batch) else batch.frame[idx]
        journal.confirmed(batch.index, txid, levels.select(*KEY, "quantity"))

    def on_batch(result: BatchResult) -> None:
        run.emit("batch", result.to_dict())

    async def go() -> SubmitResult:
        async with store_client(settings, run.emit) as client:
            return await submit(client, batches, reason=settings.reason,
                                concurrency=settings.concurrency, on_batch=on_batch,
                                on_sending=on_sending, on_confirmed=on_confirmed)

    run.emit("submit_started", {"batches": len(batches),
                                "items": sum(len(b) for b in batches)})
    result = asyncio.run(go())
    items = number_changes(changes.changes)
    accepted = items.filter(pl.col(SEQ).is_in(result.accepted))
    # Sent but neither confirmed nor refused (a lost answer, a run that gave up): the store
    # may have applied it, so its old level is no longer known.
    settled = [*result.accepted, *(s for s, _ in result.refused)]
    unconfirmed = items.filter(pl.col(SEQ).is_in(result.sent) & ~pl.col(SEQ).is_in(settled))
    if accepted.height or unconfirmed.height:
        run.snapshots.merge(accepted.select(*KEY, "quantity"), forget=unconfirmed.select(KEY))
    # The snapshot now holds every confirmed level: the journal has done its job.
    journal.close(remove=True)
    return result


def _all_rejected(checked: Validated, changes: ChangeSet,
                  result: SubmitResult | None) -> pl.DataFrame:
    """Validation rejections plus the items the store refused, as one frame."""
    if result is None or not result.refused:
        return checked.rejected
    mapping = checked.source.mapping
    refused = pl.DataFrame(
        {SEQ: [s for s, _ in result.refused], "message": [m for _, m in result.refused]},
        schema={SEQ: pl.Int64, "message": pl.String},
    )
    items = number_changes(changes.changes)
    refused = refused.join(items.select(SEQ, ROW, "identifier", "item_key"), on=SEQ, how="left")
    refused = refused.with_columns(
        column=pl.col("identifier").replace_strict(mapping, default=pl.col("identifier"),
                                                   return_dtype=pl.String),
        value=pl.col("item_key"),
        reason=pl.lit("refused_by_store"),
        message=pl.lit("the store refused this item: ") + pl.col("message"),
    )
    return pl.concat([checked.rejected, refused.select(checked.rejected.columns)]).sort(
        ROW, nulls_last=True)


def _item_status(changes: ChangeSet, result: SubmitResult | None, dry_run: bool) -> pl.Expr:
    """Each change's fate, aligned with the change set's rows."""
    if result is None:
        return pl.lit("planned" if dry_run else "not_sent")
    seq = pl.int_range(pl.len(), dtype=pl.Int64)
    return (pl.when(seq.is_in(result.accepted)).then(pl.lit("accepted"))
            .when(seq.is_in([s for s, _ in result.refused])).then(pl.lit("refused"))
            .when(seq.is_in(result.sent)).then(pl.lit("unconfirmed"))
            .otherwise(pl.lit("not_sent")))


def _fill(run: _Run, checked: Validated, changes: ChangeSet, batches: list[Batch],
          result: SubmitResult | None) -> None:
    report, settings, table = run.report, run.settings, checked.source
    run.plan = plan_frame(changes.changes, _item_status(changes, result, settings.dry_run))
    rejected = run.rejected if run.rejected is not None else checked.rejected
    c = Counts(rows=table.rows, blank=table.blank_rows, invalid=checked.rejected.height,
               merged=checked.merged_rows, unchanged=changes.unchanged,
               changed=changes.changed - changes.zeroed_missing,
               zeroed_missing=changes.zeroed_missing)
    c.valid = c.rows - c.invalid
    if result is None:
        c.not_sent = c.changed + c.zeroed_missing
    else:
        c.accepted = len(result.accepted)
        c.refused = len(result.refused)
        c.submitted = sum(b.items for b in result.batches if b.status != "not_sent")
        c.unconfirmed = c.submitted - c.accepted - c.refused
        c.not_sent = c.changed + c.zeroed_missing - c.submitted
        report.batches = [b.to_dict() for b in result.batches]
        report.transaction_ids = result.transaction_ids
        report.requests = {"sent": result.requests, "http_429": result.responses_429}
    c.rejected = c.invalid + c.refused
    c.check()
    report.counts = c
    report.rejected = rejected_records(rejected)
    report.rejected_by_reason = dict(Counter(rejected["reason"].to_list()).most_common())
    if settings.dry_run:
        report.status = "dry_run"
        report.batches = [{"index": b.index, "location_id": b.location_id, "items": len(b),
                           "transaction_id": None, "status": "planned", "attempts": 0}
                          for b in batches]
    elif result is not None and result.fatal is not None:
        report.status = "failed"
        report.error = str(result.fatal)
    elif result is None and report.brakes:
        report.status = "failed"
    else:
        report.status = "partial" if c.rejected else "succeeded"
    if report.status == "failed" and result is not None and result.fatal is not None:
        report.exit_code = int(result.fatal.exit_code)
    elif c.rejected:
        report.exit_code = int(ExitCode.REJECTED_ROWS)
    else:
        report.exit_code = int(ExitCode.OK)
