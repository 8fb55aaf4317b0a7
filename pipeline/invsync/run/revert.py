"""``invsync revert RUN_ID``: put back the levels a run replaced.

The levels come from the run's ``plan.csv``: each item it set (status ``accepted``, or
``unconfirmed``: sent without an answer, it may have landed) goes
back to its ``old`` level, but only while the store still holds the level that run set
(read live, filtered to those items): an item changed since (a manual edit, a later run)
is left as it is and listed, unless ``force``. Items that were new in that run (no old
level) are left and listed too: invsync never knew a level to put back.

A revert is a run like any other: it writes its revert plan next to the reverted run's
folder and pushes it through the ``sync --plan-file`` path of :mod:`invsync.run.sync`
(lock, brakes, journal, snapshot, its own run folder with ``command: "revert"`` and
``reverted_from``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from invsync.clock import timestamp, utc_now_ms
from invsync.disk import write_atomic
from invsync.errors import InputFileError, UsageError
from invsync.events import Observer
from invsync.run.config import Settings
from invsync.run.plans import write_binding
from invsync.run.reconcile import newest_that_wrote
from invsync.run.store_access import live_levels
from invsync.run.sync import sync_file
from invsync.stages.ingest import unescape_formulas
from invsync.stages.report import RunReport, escape_formulas
from invsync.state.history import PastRun, find_run
from invsync.state.snapshot import SnapshotStore, api_host
from invsync.tables import KEY, with_plan_names

LEFT_COLUMNS = {"location_id": pl.Int64, "identifier": pl.String, "item_key": pl.String,
                "old": pl.Int64, "set": pl.Int64, "live": pl.Int64, "why": pl.String}


@dataclass
class Revert:
    """What a revert did: its run (None when there was nothing to send) and what it left."""

    past: PastRun
    report: RunReport | None
    left: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=LEFT_COLUMNS))
    """Items not put back: ``why`` is ``changed_since`` (the live level is no longer the one
    the run set; reverted anyway with ``force``: then not listed) or ``new_in_run``."""
    reverted: int = 0


def revert_run(settings: Settings, run_id: str, *, force: bool = False,
               on_event: Observer | None = None) -> Revert:
    """Put back the levels run ``run_id`` replaced; see the module's description.

    Raises :class:`UsageError` when the run is not one of this store's (same API URL, store
    hash and profile) or has no ``plan.csv``.
    """
    settings.check(needs_store=True)  # even a dry run reads the live levels
    _refuse_interrupted(settings, run_id)
    past = newest_that_wrote(settings) if run_id == "last" else \
        find_run(settings.reports, run_id, settings.profile)
    store = past.report.get("store") or {}
    if (store.get("store_hash"), api_host(str(store.get("api_url") or ""))) != (
            settings.store_hash, api_host(settings.api_url)):
        raise UsageError(f"run {past.run_id} synced store {store.get('store_hash')!r} at "
                         f"{store.get('api_url')}, not {settings.store_hash!r} at "
                         f"{settings.api_url}: nothing was sent")
    if (store.get("profile") or None) != settings.profile:
        raise UsageError(f"run {past.run_id} ran with profile {store.get('profile')!r}, not "
                         f"{settings.profile!r}: nothing was sent")
    accepted = _accepted(past)
    new_items = accepted.filter(pl.col("old").is_null())
    candidates = accepted.filter(pl.col("old").is_not_null())
    left = [new_items.with_columns(live=pl.lit(None, pl.Int64), why=pl.lit("new_in_run"))]
    to_revert = candidates.head(0)
    read_at: str | None = None
    if candidates.height:
        read_at = utc_now_ms()
        live = _live_levels_of(settings, candidates.select(KEY), on_event)
        compared = candidates.join(live.select(*KEY, pl.col("quantity").alias("live")),
                                   on=KEY, how="left")
        still = compared.filter(pl.col("live").eq_missing(pl.col("set")))
        moved = compared.filter(~pl.col("live").eq_missing(pl.col("set")))
        to_revert = compared if force else still
        if not force:
            left.append(moved.with_columns(why=pl.lit("changed_since")))
    left_frame = pl.concat([f.select(list(LEFT_COLUMNS)).cast(LEFT_COLUMNS)  # type: ignore[arg-type]
                            for f in left]).sort("location_id", "identifier", "item_key")
    result = Revert(past=past, report=None, left=left_frame, reverted=to_revert.height)
    if to_revert.height == 0:
        return result
    plan_path = _write_revert_plan(settings, past, to_revert, read_at)
    notes = [f"revert of run {past.run_id}: {to_revert.height:,} item(s) put back to the level "
             f"they had before it" + (" (--force: also items changed since)" if force else "")]
    moved_left = left_frame.filter(pl.col("why") == "changed_since").height
    if moved_left:
        notes.append(f"{moved_left:,} item(s) left as they are: the store's level changed since "
                     f"that run (revert --force puts them back too)")
    if new_items.height:
        notes.append(f"{new_items.height:,} item(s) left as they are: new in that run (no "
                     f"earlier level to put back)")
    reason = settings.reason
    if reason in (None, Settings().reason):
        reason = f"invsync revert of run {past.run_id}"
    run_settings = replace(settings, plan_file=True, full=False, zero_missing=False,
                           reason=reason)
    result.report = sync_file(plan_path, run_settings, on_event=on_event, command="revert",
                              reverted_from=past.run_id, notes=notes)
    return result


def _refuse_interrupted(settings: Settings, run_id: str) -> None:
    """A run killed while sending (its journal is still there) is the last run that wrote:
    revert refuses until it is finished (``invsync resume``)."""
    from invsync.state.journal import Journal

    snapshots = SnapshotStore(settings.state_dir, settings.store_hash or "",
                              settings.store_host, settings.profile)
    journal = Journal(snapshots.dir)
    if not journal.exists():
        return
    header = journal.recover().header
    killed = str(header.get("run_id") or "?")
    if run_id != "last" and not killed.startswith(run_id):
        return
    raise UsageError(f"run {killed} was interrupted while sending (killed: its journal "
                     f"{journal.path} is still there); run `invsync resume` to finish it, "
                     f"then revert it: nothing was sent")


def _accepted(past: PastRun) -> pl.DataFrame:
    """The items run ``past`` set: KEY, ``old`` (null: new then) and ``set`` (its level)."""
    path = past.folder / "plan.csv"
    if not path.exists():
        accepted = (past.report.get("counts") or {}).get("accepted") or 0
        if not accepted:
            raise UsageError(f"run {past.run_id} has no plan.csv: nothing to revert")
        # Its report could not be written whole (a full disk): it did set levels.
        raise UsageError(f"run {past.run_id} set {accepted:,} item(s) but its plan.csv was "
                         f"not written (see its report.json's error): it cannot be reverted; "
                         f"nothing was sent")
    try:
        plan = with_plan_names(pl.read_csv(path, infer_schema=False))
        # An unconfirmed item may have landed: the live read tells (it holds the run's level).
        return plan.filter(pl.col("status").is_in(["accepted", "unconfirmed"])).select(
            pl.col("location_id").cast(pl.Int64), "identifier",
            unescape_formulas(pl.col("item")).alias("item_key"),
            pl.col("before").cast(pl.Int64).alias("old"),
            pl.col("after").cast(pl.Int64).alias("set"))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputFileError(str(path), f"not a readable plan.csv: {exc}") from None


def _live_levels_of(settings: Settings, keys: pl.DataFrame, emit: Observer | None) -> pl.DataFrame:
    """Live levels of just ``keys`` (filtered reads, unless a full read costs less)."""
    locations = sorted(keys["location_id"].unique().to_list())
    return live_levels(settings, locations, emit, keys=keys)


def _write_revert_plan(settings: Settings, past: PastRun, items: pl.DataFrame,
                       read_at: str | None) -> Path:
    """The revert as a ``plan.csv`` (before: the live level just read, which is the level
    the run set; after: the level before the run), beside the reverted run's folder:
    ``<run>/revert-<time>.plan.csv``, with its binding in ``revert-<time>.plan.json``."""
    plan = items.select(
        "location_id", "identifier", escape_formulas(pl.col("item_key")).alias("item"),
        pl.col("live").alias("before"), pl.col("old").alias("after"),
        (pl.col("old") - pl.col("live").fill_null(0)).alias("delta"),
        pl.lit(None, pl.Int64).alias("row"), pl.lit("planned").alias("status"),
        pl.lit(read_at, pl.String).alias("read_at"))
    stamp = timestamp().replace(":", "").replace("-", "")
    path = past.folder / f"revert-{stamp}.plan.csv"
    write_atomic(path, plan.write_csv().encode())
    write_binding(path, settings, plan["location_id"].unique().to_list())
    return path
