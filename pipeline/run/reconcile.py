"""``invsync drift`` and ``invsync verify``: compare what we believe with the live store."""

from __future__ import annotations

import json
from pathlib import Path

import click
import polars as pl

from invsync.disk import write_atomic
from invsync.errors import FatalError
from invsync.redact import redact
from invsync.run.config import Settings
from invsync.run.store_access import live_levels, verify_levels
from invsync.stages.ingest import unescape_formulas
from invsync.state.history import find_run
from invsync.state.snapshot import SnapshotStore
from invsync.store.live import Comparison, compare
from invsync.tables import KEY
from invsync.terminal import clean


def _print(result: Comparison, what: str, quiet: bool, as_json: bool, top: int = 20) -> int:
    diff = result.differences
    if as_json:
        from invsync.clock import timestamp

        click.echo(json.dumps({"ts": timestamp(), "event": what, "checked": result.expected,
                               "matched": result.matched, "differences": diff.height,
                               "items": diff.head(1000).to_dicts()}))
    elif not quiet:
        click.echo(f"{clean(what)}: {result.expected:,} items checked, {result.matched:,} match, "
                   f"{diff.height:,} differ")
        for r in diff.head(top).iter_rows(named=True):
            live = "not listed" if r["live"] is None else f"{r['live']:,}"
            click.echo(f"  location {r['location_id']} {clean(r['identifier'])} "
                       f"{clean(r['item_key'])}: expected {r['expected']:,}, store has {live}")
        if diff.height > top:
            click.echo(f"  … {diff.height - top:,} more")
    return 0 if diff.height == 0 else 1


def drift_check(settings: Settings, file: Path | None, location_id: int | None, *,
                quiet: bool = False, as_json: bool = False) -> int:
    """Items whose live level differs from the snapshot; exit code 0 (none) or 1."""
    expected = SnapshotStore(settings.state_dir, settings.store_hash or "",
                             settings.api_url, settings.profile).load()
    unknown = expected.filter(pl.col("quantity").is_null())
    expected = expected.filter(pl.col("quantity").is_not_null())
    if unknown.height and not quiet and not as_json:
        click.echo(f"drift: {unknown.height:,} items have an unknown level (a write was never "
                   f"confirmed) and are not compared; the next sync sends them")
    if location_id is not None:
        expected = expected.filter(pl.col("location_id") == location_id)
    if file is not None:
        from invsync.run.store_access import store_fetcher
        from invsync.stages.ingest import read_stock_file
        from invsync.stages.validate import validate
        from invsync.store.identity import IdentityResolver

        # The file's keys as the snapshot holds them: one canonical key per item.
        resolver = IdentityResolver(expected, store_fetcher(settings))
        checked = validate(read_stock_file(file, sheet=settings.sheet,
                                           column_map=settings.column_map,
                                           encoding=settings.encoding,
                                           header_row=settings.header_row),
                           default_location=settings.location_id, identities=resolver)
        if resolver.mapping is not None:
            from invsync.store.identity import canonical_snapshot

            expected = canonical_snapshot(expected, resolver.mapping)[0]
        expected = expected.join(checked.valid.select(KEY), on=KEY, how="semi")
    if expected.height == 0:
        if not quiet:
            click.echo("drift: the snapshot holds no items to compare (sync first)")
        return 0
    live = live_levels(settings, expected["location_id"].unique().to_list())
    return _print(compare(expected, live), "drift", quiet, as_json)


def verify_run(settings: Settings, run_id: str, *, timeout_s: float = 30.0,
               quiet: bool = False, as_json: bool = False) -> int:
    """Read back the levels run ``run_id`` had accepted; exit code 0 (all landed) or 1."""
    past = find_run(settings.reports, run_id, settings.profile)
    plan_path = past.folder / "plan.csv"
    if not plan_path.exists():
        raise click.UsageError(f"run {past.run_id} has no plan.csv to verify")
    plan = pl.read_csv(plan_path, infer_schema=False)
    accepted = plan.filter(pl.col("status") == "accepted").select(
        pl.col("location_id").cast(pl.Int64), "identifier",
        unescape_formulas(pl.col("item")).alias("item_key"),
        pl.col("new").cast(pl.Int64).alias("quantity"))
    if accepted.height == 0:
        if not quiet:
            click.echo(f"verify: run {clean(past.run_id)} set no levels")
        return 0
    try:
        result = verify_levels(settings, accepted, timeout_s=timeout_s)
    except FatalError as exc:  # a failed read is a failed verification (exit 2), recorded
        write_atomic(past.folder / "verify.json", json.dumps({
            "run_id": past.run_id, "status": "failed", "error": redact(str(exc)),
            "exit_code": int(exc.exit_code)}, indent=2).encode())
        raise
    write_atomic(past.folder / "verify.json", json.dumps({
        "run_id": past.run_id, "checked": result.expected, "matched": result.matched,
        "differences": result.differences.to_dicts(), "reads": result.reads,
        "seconds": round(result.seconds, 2)}, indent=2).encode())
    return _print(result, f"verify {past.run_id}", quiet, as_json)
