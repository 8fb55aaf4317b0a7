"""``invsync drift`` and ``invsync verify``: compare what we believe with the live store."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from invsync.disk import write_atomic
from invsync.errors import FatalError, UsageError
from invsync.events import Observer
from invsync.redact import redact
from invsync.run.config import Settings
from invsync.run.plans import write_binding
from invsync.run.store_access import StoreSession, known_items, verify_levels
from invsync.stages.ingest import unescape_formulas
from invsync.state.history import PastRun, find_run, list_runs
from invsync.state.journal import Journal
from invsync.state.snapshot import SnapshotStore, api_host
from invsync.store.live import Comparison, compare
from invsync.tables import KEY, with_plan_names


def live_baseline_due(settings: Settings, meta: dict[str, Any],
                      now: datetime | None = None) -> str | None:
    """Why this run should diff against the live levels (``baseline_every``), or None.

    Only a run that would diff against the snapshot (not ``--full``, not a plan file) with
    a token is switched; the last live-baseline run is ``last_live_baseline`` in the
    store's ``state.json``.
    """
    every = settings.baseline_every_s
    if (every is None or settings.baseline != "snapshot" or settings.full
            or settings.plan_file or settings.token is None):
        return None
    now = now or datetime.now(UTC)
    last = meta.get("last_live_baseline")
    try:
        age = (now - datetime.fromisoformat(str(last).replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        age = None
    if age is not None and age < every:
        return None
    when = "no run has used it yet" if age is None else f"the last one was at {last}"
    return (f"baseline_every = {_duration(every)}: this run diffs against the store's live "
            f"levels ({when}), so edits made in the store since are repaired too")


def _duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:g}{unit}"
    return f"{seconds:g}s"


@dataclass
class Drift:
    """What ``invsync drift`` found: the comparison (None: nothing to compare)."""

    comparison: Comparison | None
    unknown: int = 0
    """Snapshot items whose level is unknown (a write never confirmed): not compared."""
    repair: dict[str, Any] | None = None
    """When items differ: ``commands`` that repair them and the repair ``plan_file``
    (``error`` if that plan could not be written)."""
    recovered_from: str | None = None
    """The interrupted run whose journal was replayed (in memory) into the snapshot."""


def drift_check(settings: Settings, file: Path | None, location_id: int | None, *,
                command_options: list[str] | None = None,
                on_event: Observer | None = None) -> Drift:
    """Compare the snapshot (the items of ``file`` if given) with the live levels.

    When some differ, :attr:`Drift.repair` holds the commands that repair them
    (``command_options``, such as ``--config F``, are added to each): ``invsync sync
    --plan-file`` of a plan putting back the snapshot's levels, and ``invsync sync FILE
    --baseline live``.
    """
    snapshots = SnapshotStore(settings.state_dir, settings.store_hash or "",
                              settings.store_host, settings.profile)
    expected = snapshots.load()
    journal = Journal(snapshots.dir)
    recovered_from = None
    if journal.exists():
        # A run was killed: what the store confirmed to it is not drift (nothing is written;
        # the next sync replays the journal for good).
        recovered = journal.recover()
        expected = recovered.applied_to(expected)
        recovered_from = str(recovered.header.get("run_id") or "?")
    catalog_hint = known_items(expected)
    unknown = expected.filter(pl.col("quantity").is_null())
    expected = expected.filter(pl.col("quantity").is_not_null())
    if location_id is not None:
        expected = expected.filter(pl.col("location_id") == location_id)
    written_at = snapshots.read_meta().get("last_write_at")
    with StoreSession(settings, on_event) as store:  # one loop, one client for every read
        found = _drift(settings, store, expected, file, catalog_hint=catalog_hint)
        if found is not None and found.differences.height:
            found = _settle(settings, store, expected, found, written_at)
    repair = _repair(settings, found, file, command_options or []) \
        if found is not None and found.differences.height else None
    return Drift(found, unknown.height, repair, recovered_from)


def _drift(settings: Settings, store: StoreSession, expected: pl.DataFrame, file: Path | None,
           *, catalog_hint: int) -> Comparison | None:
    if file is not None:
        from invsync.stages.ingest import read_stock_file
        from invsync.stages.validate import validate
        from invsync.store.identity import IdentityResolver

        # The file's keys as the snapshot holds them: one canonical key per item.
        resolver = IdentityResolver(expected, store.fetcher())
        checked = validate(read_stock_file(file, sheet=settings.sheet,
                                           column_map=settings.column_map,
                                           encoding=settings.encoding,
                                           header_row=settings.header_row),
                           default_location=settings.location_id, identities=resolver)
        if resolver.mapping is not None:
            from invsync.store.identity import canonical_snapshot

            expected = canonical_snapshot(expected, resolver.mapping)[0]
        # Every item the file names, whatever became of its rows: a duplicate group (a
        # bin-level export synced with --duplicates sum) or a row with a bad quantity
        # still names an item whose live level may have drifted.
        named = checked.seen_keys if checked.seen_keys is not None else checked.valid
        expected = expected.join(named.select(KEY).unique(), on=KEY, how="semi")
    if expected.height == 0:
        return None
    # Only the items compared are read (filtered reads) unless that takes more requests.
    from dataclasses import replace

    from invsync.clock import utc_now_ms

    read_at = utc_now_ms()
    live = store.live_levels(expected["location_id"].unique().to_list(), keys=expected,
                             known_items=catalog_hint)
    return replace(compare(expected, live), read_at=read_at)


def _settle(settings: Settings, store: StoreSession, expected: pl.DataFrame,
            found: Comparison, written_at: Any) -> Comparison:
    """Re-read the differing items while this tool's last write may still lag (for up to
    ``verify_lag_s`` after it): a read right after a write may show the old level."""
    import time

    from invsync.run.plans import parse_time

    written = parse_time(str(written_at)) if written_at else None
    if written is None:
        return found
    left = settings.verify_lag_s - (datetime.now(UTC) - written).total_seconds()
    deadline = time.monotonic() + max(left, 0.0)
    pause = 0.5
    while found.differences.height and time.monotonic() < deadline:
        time.sleep(min(pause, max(deadline - time.monotonic(), 0.0)))
        pause *= 2  # a few reads over the window, not one a second
        keys = found.differences.select(KEY)
        again = store.live_levels(keys["location_id"].unique().to_list(), keys=keys)
        still = compare(expected.join(keys, on=KEY, how="semi"), again)
        found = Comparison(expected=found.expected,
                           matched=found.expected - still.differences.height,
                           differences=still.differences, reads=found.reads + 1,
                           read_at=found.read_at)
    return found


def _repair(settings: Settings, result: Comparison, file: Path | None,
            options: list[str]) -> dict[str, Any]:
    """The commands that repair the drift found: a plan putting back the snapshot's levels
    (written to ``<report-dir>/drift-<time>.plan.csv``), and the live-baseline sync of the
    file (the periodic reconcile: the store made equal to the file again)."""
    import shlex

    from invsync.clock import timestamp
    from invsync.stages.report import escape_formulas

    opts = " ".join(shlex.quote(o) for o in options)
    opts = f" {opts}" if opts else ""
    live_cmd = (f"invsync sync {shlex.quote(str(file)) if file else 'FILE'} "
                f"--baseline live{opts}")
    out: dict[str, Any] = {"plan_file": None, "commands": [live_cmd] if file else []}
    plan = result.differences.select(
        "location_id", "identifier", escape_formulas(pl.col("item_key")).alias("item"),
        pl.col("live").alias("before"), pl.col("expected").alias("after"),
        (pl.col("expected") - pl.col("live").fill_null(0)).alias("delta"),
        pl.lit(None, pl.Int64).alias("row"), pl.lit("planned").alias("status"),
        # When the first read began: a re-read is later, so the apply re-check forgives
        # no more than it should.
        pl.lit(result.read_at, pl.String).alias("read_at"))
    path = settings.reports / f"drift-{timestamp().replace(':', '').replace('-', '')}.plan.csv"
    try:
        settings.reports.mkdir(parents=True, exist_ok=True)
        write_atomic(path, plan.write_csv().encode())
        write_binding(path, settings, plan["location_id"].unique().to_list())
    except OSError as exc:
        out["error"] = f"the repair plan could not be written to {path}: {exc.strerror or exc}"
    else:
        out["plan_file"] = str(path)
        out["commands"].insert(1 if file else 0,
                               f"invsync sync --plan-file {shlex.quote(str(path))}{opts}")
    if not file:
        out["commands"].append(live_cmd)
    return out


def newest_that_wrote(settings: Settings) -> PastRun:
    """The most recent run of this store (and profile) that wrote levels, by run sequence
    number (``run_seq``), never by the clock; runs from before sequence numbers come
    after every numbered one, newest id first. A plan or dry run wrote nothing."""
    wrote = []
    for past in list_runs(settings.reports, settings.store_hash, profile=settings.profile):
        store = past.report.get("store") or {}
        if api_host(str(store.get("api_url") or "")) != api_host(settings.api_url):
            continue
        counts = past.report.get("counts") or {}
        if past.report.get("status") != "dry_run" and \
                (counts.get("accepted") or counts.get("unconfirmed")):
            wrote.append(past)
    if not wrote:
        raise UsageError(f"no run under {settings.reports} has set levels of store "
                         f"{settings.store_hash!r} yet")
    return max(wrote, key=lambda p: (int(p.report.get("run_seq") or 0), p.run_id))


def verify_run(settings: Settings, run_id: str, *, timeout_s: float | None = None,
               on_event: Observer | None = None) -> tuple[str, Comparison | None]:
    """Read back the levels run ``run_id`` had accepted: its full id and the comparison.

    ``last`` is the most recent run that wrote (a plan or a preview writes nothing).
    Differing items are re-read for up to ``timeout_s`` (default ``verify_lag_s``): a read
    right after a write may still show the old level. None when the run set no levels.
    The result is also written to its ``verify.json``.
    """
    if timeout_s is None:
        timeout_s = settings.verify_lag_s
    past = newest_that_wrote(settings) if run_id == "last" else \
        find_run(settings.reports, run_id, settings.profile)
    plan_path = past.folder / "plan.csv"
    if not plan_path.exists():
        raise UsageError(f"run {past.run_id} has no plan.csv to verify")
    plan = with_plan_names(pl.read_csv(plan_path, infer_schema=False))
    accepted = plan.filter(pl.col("status") == "accepted").select(
        pl.col("location_id").cast(pl.Int64), "identifier",
        unescape_formulas(pl.col("item")).alias("item_key"),
        pl.col("after").cast(pl.Int64).alias("quantity"))
    if accepted.height == 0:
        return past.run_id, None
    try:
        catalog_hint = known_items(SnapshotStore(settings.state_dir, settings.store_hash or "",
                                                 settings.store_host, settings.profile).load())
        result = verify_levels(settings, accepted, timeout_s=timeout_s,
                               catalog_hint=catalog_hint, emit=on_event)
    except FatalError as exc:  # a failed read is a failed verification (exit 2), recorded
        write_atomic(past.folder / "verify.json", json.dumps({
            "run_id": past.run_id, "status": "failed", "error": redact(str(exc)),
            "exit_code": int(exc.exit_code)}, indent=2).encode())
        raise
    write_atomic(past.folder / "verify.json", json.dumps({
        "run_id": past.run_id, "checked": result.expected, "matched": result.matched,
        "differences": result.differences.to_dicts(), "reads": result.reads,
        "seconds": round(result.seconds, 2)}, indent=2).encode())
    return past.run_id, result
