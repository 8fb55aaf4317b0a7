"""Runs the stages in order: ingest → validate → diff → submit → report.

This is the library entry point behind ``invsync sync``: :func:`sync_file` never prints;
it returns the :class:`~pipeline.report.RunReport` it also wrote to the run folder.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.config import Settings
from pipeline.diff import ChangeSet, compute_changes
from pipeline.errors import ExitCode, FatalError, InputFileError
from pipeline.ingest import ROW, StockTable, read_stock_file
from pipeline.report import Counts, RunReport, new_run_id, rejected_records, utc_now, \
    write_run_folder
from pipeline.snapshot import KEY, SnapshotStore
from pipeline.submit import BatchResult, SubmitResult, plan_batches, submit
from pipeline.validate import Location, Validated, validate

log = logging.getLogger("invsync.sync")

Event = Callable[[str, dict[str, Any]], None]


def _no_event(name: str, data: dict[str, Any]) -> None:
    return None


def sync_file(path: str | Path, settings: Settings, *, on_event: Event | None = None) -> RunReport:
    """Sync ``path`` into the store described by ``settings``; write and return the report."""
    emit = on_event or _no_event
    settings.check(needs_store=not settings.dry_run)
    report = RunReport(run_id=new_run_id(), status="failed", started_at=utc_now(),
                       options=settings.public(),
                       store={"store_hash": settings.store_hash, "api_url": settings.api_url})
    folder = settings.reports / report.run_id
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    emit("run_started", {"run_id": report.run_id, "input": str(path),
                         "dry_run": settings.dry_run})
    table: StockTable | None = None
    checked: Validated | None = None
    rejected: pl.DataFrame | None = None
    try:
        t = time.perf_counter()
        table = read_stock_file(path, sheet=settings.sheet, column_map=settings.column_map)
        timings["ingest"] = time.perf_counter() - t
        report.input = {"path": str(path), "sha256": table.sha256, "format": table.format,
                        "rows": table.rows, "blank_rows": table.blank_rows,
                        "sheet": table.sheet, "encoding": table.encoding,
                        "delimiter": table.delimiter, "columns": table.mapping}
        report.notes.extend(table.notes)
        locations = _fetch_locations(settings, emit) if settings.token else None

        t = time.perf_counter()
        checked = validate(table, default_location=settings.location_id, locations=locations,
                           duplicates=settings.duplicates,  # type: ignore[arg-type]
                           rules=settings.rules)
        timings["validate"] = time.perf_counter() - t
        report.notes.extend(checked.notes)

        t = time.perf_counter()
        snapshots = SnapshotStore(settings.state_dir, settings.store_hash or "offline")
        baseline = None if settings.full else snapshots.load()
        changes = compute_changes(checked.valid, baseline)
        timings["diff"] = time.perf_counter() - t

        t = time.perf_counter()
        batches = plan_batches(changes.changes, settings.batch_size)
        timings["plan"] = time.perf_counter() - t
        result: SubmitResult | None = None
        if not settings.dry_run and batches:
            t = time.perf_counter()
            result = asyncio.run(_submit(settings, batches, emit))
            timings["submit"] = time.perf_counter() - t
            accepted = changes.changes.filter(pl.col(ROW).is_in(result.accepted_rows))
            if accepted.height:
                snapshots.merge(accepted.select(*KEY, "quantity"))
        rejected = _all_rejected(checked, result)
        _fill(report, table, checked, changes, batches, result, rejected, settings)
        if result is None or result.fatal is None:
            snapshots.write_meta({**snapshots.read_meta(), "last_run": report.run_id,
                                  "last_rows": table.rows})
    except InputFileError as exc:
        report.error = str(exc)
        report.exit_code = int(exc.exit_code)
    except FatalError as exc:
        report.error = str(exc)
        report.exit_code = int(exc.exit_code)
    timings["total"] = time.perf_counter() - t_start
    report.timings = {k: round(v, 4) for k, v in timings.items()}
    report.finished_at = utc_now()
    write_run_folder(report, folder, table, rejected)
    emit("run_finished", {"run_id": report.run_id, "status": report.status,
                          "exit_code": report.exit_code, "counts": report.counts.__dict__,
                          "report_dir": str(folder)})
    return report


def _fetch_locations(settings: Settings, emit: Event) -> list[Location]:
    from pipeline.client import StoreClient

    async def fetch() -> list[Location]:
        assert settings.token is not None
        async with StoreClient(settings.api_url, settings.store_hash or "",
                               settings.token.reveal(), retry=settings.retry,
                               verify_tls=settings.verify_tls) as client:
            return await client.get_locations()

    locations = asyncio.run(fetch())
    emit("locations", {"count": len(locations)})
    return locations


async def _submit(settings: Settings, batches: list[Any], emit: Event) -> SubmitResult:
    from pipeline.client import StoreClient

    assert settings.token is not None

    def on_batch(result: BatchResult) -> None:
        emit("batch_done", result.to_dict())

    def on_retry(info: dict[str, Any]) -> None:
        emit("retry", info)

    async with StoreClient(settings.api_url, settings.store_hash or "", settings.token.reveal(),
                           concurrency=settings.concurrency, retry=settings.retry,
                           verify_tls=settings.verify_tls, on_retry=on_retry) as client:
        return await submit(client, batches, reason=settings.reason,
                            concurrency=settings.concurrency, on_batch=on_batch)


def _all_rejected(checked: Validated, result: SubmitResult | None) -> pl.DataFrame:
    """Validation rejections plus the items the store refused, as one frame."""
    if result is None or not result.refused:
        return checked.rejected
    source = checked.source
    refused = pl.DataFrame(
        {ROW: [r for r, _ in result.refused], "message": [m for _, m in result.refused]},
        schema={ROW: pl.Int64, "message": pl.String},
    )
    ident = checked.valid.select(ROW, "identifier", "item_key")
    refused = refused.join(ident, on=ROW, how="left").with_columns(
        column=pl.col("identifier").replace_strict(source.mapping, default=pl.col("identifier"),
                                                   return_dtype=pl.String),
        value=pl.col("item_key"),
        reason=pl.lit("refused_by_store"),
        message=pl.lit("the store refused this item: ") + pl.col("message"),
    )
    return pl.concat([checked.rejected, refused.select(checked.rejected.columns)]).sort(ROW)


def _fill(
    report: RunReport, table: StockTable, checked: Validated, changes: ChangeSet,
    batches: list[Any], result: SubmitResult | None, rejected: pl.DataFrame, settings: Settings,
) -> None:
    c = Counts(rows=table.rows, blank=table.blank_rows, invalid=checked.rejected.height,
               merged=checked.merged_rows, unchanged=changes.unchanged, changed=changes.changed)
    c.valid = c.rows - c.invalid
    if result is None:
        c.not_sent = c.changed
    else:
        c.accepted = len(result.accepted_rows)
        c.refused = len(result.refused)
        sent_batches = [b for b in result.batches if b.status != "not_sent"]
        c.submitted = sum(b.items for b in sent_batches)
        c.unconfirmed = c.submitted - c.accepted - c.refused
        c.not_sent = c.changed - c.submitted
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
    else:
        report.status = "partial" if c.rejected else "succeeded"
    if report.status == "failed" and result is not None and result.fatal is not None:
        report.exit_code = int(result.fatal.exit_code)
    elif c.rejected:
        report.exit_code = int(ExitCode.REJECTED_ROWS)
    else:
        report.exit_code = int(ExitCode.OK)
