"""The ``invsync`` command line: a thin click layer over the library.

Heavy libraries (polars, pandera, httpx) are imported inside the commands so that
``invsync --help`` starts fast. Library errors become exit codes only here.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from invsync.errors import ExitCode, InvsyncError
from invsync.surfaces.cli_sandbox import sandbox
from invsync.surfaces.cli_sources import _from_source, _source_flags, _source_options, watch_command
from invsync.surfaces.options import (
    _OUTPUT,
    _config_options,
    _configure_output,
)
from invsync.surfaces.web.cli import portal, serve
from invsync.terminal import clean, log_where, one_line

# httpx imports its own command line (rich's progress bars, pygments' lexers: ~0.1 s) each
# time it is imported, if those packages happen to be installed; invsync never runs it, so
# its import fails cleanly and httpx keeps a stub `main` instead (its own fallback).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
# Likewise httpcore imports trio (~0.05 s) whenever it is installed (another package may
# bring it); invsync drives httpx on asyncio only, so this process never loads it.
sys.modules.setdefault("trio", None)  # type: ignore[arg-type]


def _finite(value: float, name: str) -> float:
    """Refuse nan (which slips through a FloatRange: every comparison with it is false)."""
    if value != value:
        raise click.BadParameter(f"{name} must be a number of seconds, not nan")
    return value


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}




@click.group(context_settings=CONTEXT)
@click.version_option(package_name="invsync", prog_name="invsync")
@click.option("-v", "--verbose", count=True,
              help="More log detail (-v info and retries, -vv debug).")
@click.option("-q", "--quiet", is_flag=True,
              help="Only errors, and the summary line of a run that did not exit 0.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: one JSON event per line on stdout (run start, batches with "
                   "transaction ids, retries, run end), logs as JSON on stderr.")
@click.pass_context
def cli(ctx: click.Context, /, verbose: int, quiet: bool, log_format: str) -> None:
    """Keep a BigCommerce store's stock levels equal to what a CSV or XLSX file says.

    The access token comes from BIGCOMMERCE_ACCESS_TOKEN or the config file, never a flag.
    -v, -q and --log-format may also follow the command.

    Documentation, installed with the package (operations.md: running it unattended):

    \b
    DOCS_DIR
    """
    ctx.obj = {"quiet": quiet, "verbose": verbose, "log_format": log_format}
    _OUTPUT.update(ctx.obj)
    _configure_output(ctx.obj)




def docs_dir() -> str:
    """Where the documentation pages are: installed with the package (``invsync/docs``),
    or the checkout's ``docs/`` when run from the source tree."""
    package = Path(__file__).resolve().parents[1]
    for place in (package / "docs", package.parents[1] / "docs"):
        if (place / "operations.md").is_file():
            return str(place)
    return "docs/ of the source distribution"


cli.help = (cli.help or "").replace("DOCS_DIR", docs_dir())


def _overrides(flags: dict[str, Any], maps: tuple[str, ...]) -> dict[str, Any]:
    """Flag values for :func:`load_settings`, with the repeatable ``KEY=VALUE`` flags parsed."""
    from invsync.run.config import parse_map

    out = dict(flags)
    out["column_map"] = parse_map(maps, "--map")
    text_map = parse_map(out.pop("quantity_maps", ()) or (), "--quantity-map")
    out["text_map"] = text_map or None
    return out


def _events(ctx: click.Context) -> Any:
    from invsync.surfaces.progress import make_event_sink

    sink = make_event_sink(ctx.obj["log_format"], ctx.obj["quiet"])
    if sink is None or ctx.obj["log_format"] == "json":
        return sink  # no summary is printed: nothing to import ahead
    return _summary_ahead(sink)


def _summary_ahead(sink: Any) -> Any:
    """``sink``, which also imports the run summary's console library (rich, ~0.03 s of
    Python) in a daemon thread while the run has time to spare: a store run's batches
    out, a dry run's file being parsed (polars lets go of the interpreter meanwhile).
    Only the library is imported there (no invsync module), so the summary's own import
    at the end waits for it at worst and can never deadlock with it."""
    started: list[bool] = []

    def emit(name: Any, data: dict[str, Any]) -> None:
        if not started and (name == "submit_started" or
                            (name == "run_started" and data.get("dry_run"))):
            import threading

            started.append(True)
            threading.Thread(target=_import_console, name="invsync-console",
                             daemon=True).start()
        sink(name, data)
    return emit


def _import_console() -> None:
    try:
        import rich.console
        import rich.table  # noqa: F401
    except Exception:  # the summary's own import says what is wrong, if anything is
        pass


def _tagged(ctx: click.Context, /, run_id: str) -> Any:
    """The event sink for a command that is not a run (drift, verify): every event names
    ``run_id`` (the run verified, or the drift check's own id), and long reads show
    progress as for a run."""
    sink = _events(ctx)
    if sink is None:
        return None

    def emit(name: Any, data: dict[str, Any]) -> None:
        sink(name, {"run_id": run_id, **data})
    return emit


def _sync_options(fn: Any) -> Any:
    options = [
        # A path, or a SOURCE (URL, glob, [sources.NAME]): text, so "sftp://" keeps its "//".
        click.argument("file", metavar="FILE|SOURCE", required=False),
        click.option("--location-id", type=int, help="Location for rows without one [1]."),
        click.option("--reason", help="Reason recorded with each adjustment."),
        click.option("--dry-run", is_flag=True, help="Send nothing, change no snapshot."),
        click.option("--full", is_flag=True, help="Ignore the snapshot; send every valid row."),
        click.option("--store-hash", help="Store hash [env BIGCOMMERCE_STORE_HASH]."),
        click.option("--api-url", help="API base [env BIGCOMMERCE_API_URL, "
                                       "default https://api.bigcommerce.com]."),
        click.option("--state-dir", type=click.Path(path_type=Path),
                     help="Snapshots and locks [$XDG_STATE_HOME/invsync]."),
        click.option("--report-dir", type=click.Path(path_type=Path),
                     help="Run folders [<state-dir>/runs]."),
        click.option("--sheet", help="Excel sheet name or 1-based number [first]."),
        click.option("--encoding", help="A CSV's text encoding, e.g. shift_jis or "
                                        "windows-1250 [detected]."),
        click.option("--header-row", type=int,
                     help="Row number of the header [the first of the top 20 rows naming "
                          "an identifier and a quantity]."),
        click.option("--batch-size", type=int, help="Items per request, at most 2000 [2000]."),
        click.option("--concurrency", type=int,
                     help="Writes in flight at once [1: BigCommerce asks to wait for each "
                          "answer; see docs/bigcommerce-api.md]."),
        click.option("--map", "maps", multiple=True, metavar="HEADER=COLUMN",
                     help="Map a file header onto sku, product_id, variant_id, location_id "
                          "or quantity (repeatable)."),
        click.option("--duplicates", type=click.Choice(["reject", "sum", "last"]),
                     help="Several rows for one item and location [reject]."),
        click.option("--buffer", type=int, help="Subtract this safety stock from every quantity."),
        click.option("--clamp-negative", is_flag=True, default=None,
                     help="Negative quantities (after the buffer) become 0."),
        click.option("--max-quantity", "maximum", type=int, help="Cap quantities at this."),
        click.option("--quantity-map", "quantity_maps", multiple=True, metavar="TEXT=N",
                     help="Read quantity text such as 'in stock' as a number (repeatable)."),
        click.option("--zero-missing", is_flag=True,
                     help="Set items in the snapshot but absent from the file to 0 "
                          "(at the locations the file covers)."),
        click.option("--allow-empty", is_flag=True, help="Override the empty-file brake."),
        click.option("--allow-shrink", is_flag=True,
                     help="Override the brake on a file far smaller than the last "
                          "successful run's from the same source (file path or `source`)."),
        click.option("--allow-zeroing", is_flag=True,
                     help="Override the brake on zeroing many of the items the store holds."),
        click.option("--baseline", type=click.Choice(["snapshot", "live"]),
                     help="Plan against the store's live levels, read first [live], or the "
                          "snapshot of what invsync last set (no reads; store edits are left "
                          "alone until the file's number changes)."),
        click.option("--no-verify-tls", "verify_tls", flag_value=False, default=None,
                     help="Turn TLS certificate checks off (never do this in production)."),
        _wait_lock_option,
        click.option("--as-of", metavar="WHEN",
                     help="When the file's levels were true: ISO 8601 with an offset "
                          "(2026-12-06T02:00:00+01:00) or 'mtime' (the file's modification "
                          "time). Units sold since are subtracted (docs/orders.md)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return _config_options(fn)


_wait_lock_option = click.option(
    "--wait-lock", type=float, metavar="SECONDS",
    help="If another run holds the store's lock, wait up to this long for it instead of "
         "exiting 4 at once.")


@cli.command(context_settings=CONTEXT)
@_sync_options
@_source_options
@click.option("--plan-file", type=click.Path(path_type=Path),
              help="Push exactly this reviewed plan.csv (from invsync plan) instead of FILE; "
                   "refused (exit 64) for another store or profile, and (exit 3) if the "
                   "store's levels moved since the plan was made.")
@click.pass_context
def sync(ctx: click.Context, /, file: str | None, config_path: Path | None,
         maps: tuple[str, ...], plan_file: Path | None, **flags: Any) -> None:
    """Sync FILE (CSV or XLSX) into the store: only the changes are sent.

    FILE may be a SOURCE: a URL (sftp://, ftp://, s3://, https://...), a glob or a
    [sources.NAME] of the config (see docs/sources.md).
    """
    from invsync.run.config import load_settings
    from invsync.run.sync import sync_file

    if (file is None) == (plan_file is None):
        raise click.UsageError("give either FILE or --plan-file PLAN.csv")
    source = _source_flags(flags)
    settings = replace(load_settings(config_path, _overrides(flags, maps)),
                       plan_file=plan_file is not None)
    if file is not None and _from_source(ctx, file, settings, "sync", source):
        return
    path = plan_file or (Path(file) if file else None)
    assert path is not None
    _finish(ctx, sync_file(path, settings, on_event=_events(ctx)), settings)


@cli.command(context_settings=CONTEXT)
@_sync_options
@_source_options
@click.pass_context
def plan(ctx: click.Context, /, file: str | None, config_path: Path | None,
         maps: tuple[str, ...], **flags: Any) -> None:
    """Show what syncing FILE would change, send nothing, and write plan.csv.

    Review the plan, then push exactly it with: invsync sync --plan-file <run>/plan.csv
    """
    from invsync.run.config import load_settings
    from invsync.run.sync import sync_file

    if file is None:
        raise click.UsageError("missing argument FILE")
    source = _source_flags(flags)
    settings = load_settings(config_path, {**_overrides(flags, maps), "dry_run": True})
    if _from_source(ctx, file, settings, "plan", source):
        return
    report = sync_file(Path(file), settings, on_event=_events(ctx), command="plan")
    if ctx.obj["log_format"] != "json" and not ctx.obj["quiet"]:
        from invsync.surfaces.summary import print_plan

        print_plan(report)
    _finish(ctx, report, settings)


@cli.command(context_settings=CONTEXT)
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="[$XDG_STATE_HOME/invsync]")
@click.option("--store-hash", help="Only runs for this store.")
@click.option("-n", "--limit", type=int, default=20, show_default=True, help="How many runs.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON Lines: one JSON object per run, one per line.")
@_config_options
def runs(report_dir: Path | None, state_dir: Path | None, store_hash: str | None, limit: int,
         as_json: bool, config_path: Path | None, profile: str | None) -> None:
    """List past runs, newest first: id, command, status, profile, file, counts.

    A run that was killed (kill -9, a power cut) is listed first as "interrupted, not yet
    resumed" (from its journal and lock) until a run finishes it. With a profile
    (--profile or INVSYNC_PROFILE), only that profile's runs.
    """
    import json

    from invsync.run.config import load_settings
    from invsync.state.history import list_runs, open_runs

    settings = load_settings(config_path, {"report_dir": report_dir, "state_dir": state_dir,
                                           "profile": profile})
    found = [r.row() for r in list_runs(settings.reports, store_hash,
                                        profile=settings.profile)]
    pending = {r.run_id: r.row() for r in open_runs(settings.state_dir, store_hash,
                                                    settings.profile)}
    for row in found:  # an interrupted run with a report whose journal is still open
        if row["run_id"] in pending:
            row["not_resumed"] = pending.pop(row["run_id"])["not_resumed"]
    rows = sorted([*pending.values(), *found], key=lambda r: str(r["run_id"]),
                  reverse=True)[:limit]
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    from invsync.surfaces.summary import print_runs

    print_runs(rows, settings.reports)


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="[$XDG_STATE_HOME/invsync]")
@_config_options
def show(run_id: str, report_dir: Path | None, state_dir: Path | None,
         config_path: Path | None, profile: str | None) -> None:
    """Print one run's summary and where its files are (RUN_ID may be a prefix or 'last').

    'last' is the newest run that read its file; a killed run not yet resumed is named
    above it.
    """
    from invsync.errors import UsageError
    from invsync.run.config import load_settings
    from invsync.stages.report import RunReport, report_from_dict
    from invsync.state.history import find_run, finished_by, open_runs, wrote_report
    from invsync.surfaces.summary import print_summary

    settings = load_settings(config_path, {"report_dir": report_dir, "state_dir": state_dir,
                                           "profile": profile})
    pending = [r for r in open_runs(settings.state_dir, profile=settings.profile)
               if not r.running]
    named = pending if run_id == "last" else [r for r in pending if r.run_id.startswith(run_id)]
    if named:
        for r in named:
            where = f"journal {r.journal}" if r.journal else f"lock {r.store_dir / 'lock'}"
            unreported = "" if wrote_report(settings.reports, r.run_id) else \
                "; it stopped before writing its report"
            click.echo(f"run {clean(r.run_id)}: interrupted, not yet resumed (file "
                       f"{clean(r.input or '?')}, started {clean(r.started or '?')}, {where})"
                       f"{unreported}; run `invsync resume` or the same sync again to finish it")
    try:
        past = find_run(settings.reports, run_id, settings.profile)
    except UsageError:
        if named:
            return
        by = None if run_id == "last" else \
            finished_by(settings.reports, run_id, settings.profile)
        if by is None:
            raise
        click.echo(f"run {clean(by.report.get('resumed_from') or run_id)}: interrupted, it "
                   f"stopped before writing its report; run {clean(by.run_id)} finished it:")
        past = by
    report: RunReport = report_from_dict(past.report)
    print_summary(report)
    for name in ("report.json", "report.html", "summary.md", "rejected.csv", "rejected.xlsx",
                 "plan.csv", "verify.json"):
        if (past.folder / name).exists():
            click.echo(f"  {clean(past.folder / name)}")


@cli.command(context_settings=CONTEXT)
@click.option("--store-hash", help="Store hash [env BIGCOMMERCE_STORE_HASH].")
@click.option("--api-url", help="API base [env BIGCOMMERCE_API_URL].")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Snapshots and locks.")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@click.option("--location-id", type=int, help="The location runs write to [1].")
@_config_options
@click.pass_context
def doctor(ctx: click.Context, /, config_path: Path | None, **flags: Any) -> None:
    """Check before the first night what would make a run fail; nothing is changed.

    The token is accepted and has the inventory scopes (and the orders scope when as_of
    is set), the location exists and is enabled, the store sends its quota headers, the
    state, report and lock folders are writable and private, and this host's clock agrees
    with the store's. One line per check, ok or fail with the fix. Exit 0: all ok; 2: a
    check failed.
    """
    import json

    from invsync.clock import timestamp
    from invsync.run.config import load_settings
    from invsync.run.doctor import run_checks

    settings = load_settings(config_path, flags)
    settings.check(needs_store=False)
    checks = run_checks(settings)
    for c in checks:
        if ctx.obj["log_format"] == "json":
            click.echo(json.dumps({"ts": timestamp(), "event": "doctor", **c.to_dict()}))
        elif c.ok:
            click.echo(f"ok    {c.name}: {clean(c.detail)}")
        else:
            fix = f"\n      fix: {clean(c.fix)}" if c.fix else ""
            click.echo(f"FAIL  {c.name}: {clean(c.detail)}{fix}")
    ctx.exit(0 if all(c.ok for c in checks) else int(ExitCode.RUN_FAILED))


@cli.command(context_settings=CONTEXT)
@click.option("--keep", metavar="DURATION",
              help="Remove run folders and uploads older than this, e.g. 90d [retention].")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--state-dir", type=click.Path(path_type=Path), help="[$XDG_STATE_HOME/invsync]")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@_config_options
@click.pass_context
def prune(ctx: click.Context, /, keep: str | None, dry_run: bool, config_path: Path | None,
          **flags: Any) -> None:
    """Remove old run folders and uploads (never the last successful run of a source, nor
    a run whose journal is still open)."""
    from invsync.errors import UsageError
    from invsync.run.config import load_settings, parse_duration

    settings = load_settings(config_path, flags)
    keep_s = parse_duration(keep, "--keep") if keep else settings.retention_s
    if keep_s is None:
        raise UsageError("give --keep DURATION (such as 90d) or retention in the config")
    done = _prune(settings, keep_s, dry_run=dry_run)
    if ctx.obj["quiet"]:
        return
    verb = "would remove" if dry_run else "removed"
    for folder in done.removed:
        click.echo(f"{verb} {clean(folder)}")
    for folder, why in done.kept:
        click.echo(f"kept {clean(folder)}: {why}")
    click.echo(f"prune: {verb} {len(done.removed):,}, kept {len(done.kept):,} older on purpose")


def _prune(settings: Any, keep_s: float, *, dry_run: bool = False) -> Any:
    from invsync.state.history import prune as prune_folders

    return prune_folders(settings.reports, settings.state_dir, keep_s, dry_run=dry_run)


@cli.command(context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path), required=False)
@click.option("--store-hash", help="Store hash [env BIGCOMMERCE_STORE_HASH].")
@click.option("--api-url", help="API base [env BIGCOMMERCE_API_URL].")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Snapshots.")
@click.option("--location-id", type=int, help="Only this location.")
@_config_options
@click.pass_context
def drift(ctx: click.Context, /, file: Path | None, config_path: Path | None,
          location_id: int | None, **flags: Any) -> None:
    """Report items whose live level differs from the snapshot (e.g. manual edits).

    With FILE, only the items FILE names are checked. Exit 0: no drift; 1: drift found.
    """
    from invsync.run.config import load_settings
    from invsync.run.reconcile import drift_check

    settings = load_settings(config_path, flags)
    settings.check(needs_store=True)
    # The repair commands it prints name the same store and state as this drift check.
    options = [*(["--config", str(settings.config_path)] if settings.config_path else []),
               *(["--profile", settings.profile] if settings.profile else [])]
    for name in ("store_hash", "api_url", "state_dir"):
        if flags.get(name) is not None:
            options += [f"--{name.replace('_', '-')}", str(flags[name])]
    from invsync.surfaces.summary import print_comparison

    quiet, as_json = ctx.obj["quiet"], ctx.obj["log_format"] == "json"
    from invsync.stages.report import new_run_id

    check_id = f"drift-{new_run_id()}"
    found = drift_check(settings, file, location_id, command_options=options,
                        on_event=_tagged(ctx, check_id))
    if found.recovered_from and not quiet and not as_json:
        click.echo(f"drift: compared with the levels interrupted run "
                   f"{clean(found.recovered_from)} had confirmed (its journal); run `invsync "
                   f"resume` or sync again to finish it")
    if found.unknown and not quiet and not as_json:
        click.echo(f"drift: {found.unknown:,} items have an unknown level (a write was never "
                   f"confirmed) and are not compared; the next sync sends them")
    if found.comparison is None:
        if not quiet:
            click.echo("drift: the snapshot holds no items to compare (sync first)")
        ctx.exit(0)
    ctx.exit(print_comparison(found.comparison, "drift", quiet, as_json, repair=found.repair,
                              run_id=check_id))


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--store-hash", help="Store hash [env BIGCOMMERCE_STORE_HASH].")
@click.option("--api-url", help="API base [env BIGCOMMERCE_API_URL].")
@click.option("--state-dir", type=click.Path(path_type=Path), help="[$XDG_STATE_HOME/invsync]")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0, 86_400), default=None,
              callback=lambda _c, _p, v: None if v is None else _finite(v, "--timeout"),
              help="Keep re-reading this long for writes to land (they are asynchronous) "
                   "[verify_lag_s: 30].")
@_config_options
@click.pass_context
def verify(ctx: click.Context, /, run_id: str, config_path: Path | None, timeout_s: float,
           **flags: Any) -> None:
    """Read back the levels run RUN_ID set and report any that did not land.

    Exit 0: every accepted level is in the store; 1: some differ.
    """
    from invsync.run.config import load_settings
    from invsync.run.reconcile import newest_that_wrote, verify_run

    settings = load_settings(config_path, flags)
    settings.check(needs_store=True)
    from invsync.surfaces.summary import print_comparison
    from invsync.terminal import clean

    quiet, as_json = ctx.obj["quiet"], ctx.obj["log_format"] == "json"
    from invsync.state.history import find_run

    # 'last' is the last run that wrote (a plan or a preview wrote nothing); else a prefix.
    named = newest_that_wrote(settings).run_id if run_id == "last" else \
        find_run(settings.reports, run_id, settings.profile).run_id
    full_id, result = verify_run(settings, named, timeout_s=timeout_s,
                                 on_event=_tagged(ctx, named))
    if result is None:
        if not quiet:
            click.echo(f"verify: run {clean(full_id)} set no levels")
        ctx.exit(0)
    ctx.exit(print_comparison(result, f"verify {full_id}", quiet, as_json, run_id=full_id))


@cli.command(context_settings=CONTEXT)
@click.option("--store-hash", help="Store hash [env BIGCOMMERCE_STORE_HASH].")
@click.option("--api-url", help="API base [env BIGCOMMERCE_API_URL].")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Snapshots and locks.")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@_wait_lock_option
@_config_options
@click.pass_context
def resume(ctx: click.Context, /, config_path: Path | None, **flags: Any) -> None:
    """Finish a run that was interrupted (killed, crashed): same file, same options.

    Batches the store already confirmed are not sent again. Running the same sync
    command again does the same.
    """
    from invsync.run.config import load_settings
    from invsync.run.sync import resume as resume_run

    settings = load_settings(config_path, flags)
    _finish(ctx, resume_run(settings, on_event=_events(ctx)), settings)


@cli.command(context_settings=CONTEXT)
@click.argument("run_id")
@click.option("--dry-run", is_flag=True, help="Show what would be put back; send nothing.")
@click.option("--force", is_flag=True,
              help="Also put back items whose level changed since that run.")
@click.option("--reason", help="Reason recorded with each adjustment [invsync revert of run ID].")
@click.option("--store-hash", help="Store hash [env BIGCOMMERCE_STORE_HASH].")
@click.option("--api-url", help="API base [env BIGCOMMERCE_API_URL].")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Snapshots and locks.")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@click.option("--no-verify-tls", "verify_tls", flag_value=False, default=None,
              help="Turn TLS certificate checks off (never do this in production).")
@_wait_lock_option
@_config_options
@click.pass_context
def revert(ctx: click.Context, /, run_id: str, config_path: Path | None, force: bool,
           **flags: Any) -> None:
    """Put back the levels run RUN_ID replaced ('last' and prefixes work).

    Only items whose live level is still what that run set are reverted; the others, and
    items that were new in that run, are listed (--force reverts changed items too). The
    revert is a run of its own: lock, brakes, report (command "revert").
    """
    from invsync.run.config import load_settings
    from invsync.run.revert import revert_run

    settings = load_settings(config_path, flags)
    done = revert_run(settings, run_id, force=force, on_event=_events(ctx))
    json_out = ctx.obj["log_format"] == "json"
    if json_out:
        from invsync.surfaces.progress import JsonEvents

        JsonEvents()("revert_left", {
            "run_id": done.report.run_id if done.report else None,
            "reverted_from": done.past.run_id, "reverted": done.reverted,
            "left": done.left.height, "items": done.left.head(1000).to_dicts()})
    elif not ctx.obj["quiet"] or done.report is None:
        from invsync.surfaces.summary import print_revert_left

        print_revert_left(done)
    if done.report is None:
        # Nothing to send: no run. Exit 1 when items were left because they moved.
        moved = done.left.filter(done.left["why"] == "changed_since").height
        ctx.exit(1 if moved else 0)
    _finish(ctx, done.report, settings)


def _finish(ctx: click.Context, /, report: Any, settings: Any) -> None:
    """After any run: notify, print the summary and the summary line, exit with its code.

    This is the one place runs end in the CLI (sync, plan, resume, revert), so notifications are
    sent here, after the run folder is complete.
    """
    json_out = ctx.obj["log_format"] == "json"
    if settings.notify:
        from invsync.run.notify import notify_run

        for problem in notify_run(report, settings):
            if json_out:
                from invsync.surfaces.progress import JsonEvents

                JsonEvents()("notify_failed", {"run_id": report.run_id, "error": problem})
            else:
                click.echo(f"invsync: {problem}", err=True)
    if getattr(settings, "retention_s", None) and report.status != "dry_run":
        try:
            _prune(settings, settings.retention_s)
        except OSError as exc:  # an old folder that cannot go never fails a run
            logging.getLogger("invsync").warning("retention: %s", one_line(exc))
    if json_out:
        pass  # the run_finished event already carried the outcome and the summary line
    elif not ctx.obj["quiet"]:
        from invsync.surfaces.summary import print_summary

        print_summary(report)
        if report.error and not sys.stdout.isatty():
            click.echo(f"invsync: {clean(_redact(report.error))}", err=True)  # cron mails stderr
    elif report.error:
        click.echo(f"invsync: {clean(_redact(report.error))}", err=True)
    if not json_out and (report.exit_code or not ctx.obj["quiet"]):
        from invsync.stages.report import summary_line

        click.echo(clean(summary_line(report)))
    ctx.exit(report.exit_code)


cli.add_command(sandbox)
cli.add_command(serve)
cli.add_command(portal)
cli.add_command(watch_command(_sync_options))


ALLOCATOR_ENV = "_RJEM_MALLOC_CONF"
ALLOCATOR_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
_POLARS_OWN_CONF = {"dirty_decay_ms:500", "muzzy_decay_ms:1000", "thp:always",
                    "metadata_thp:always"}


def tune_allocator() -> None:
    """Have polars' allocator (jemalloc) give freed memory back at once.

    polars keeps freed pages for 0.5 s (and 1 s more as "muzzy"), so a run of a few seconds
    peaks near all it ever allocated: returning them at once lowers a 1M-row dry run's peak
    by about a third (500 -> 345 MiB) for about 7% more CPU. polars appends this variable
    to its own defaults when it loads; so only before polars is loaded, and never over the
    user's own setting (polars' own default, which a parent process that imported polars
    passes on, is not one).
    """
    if "polars" in sys.modules:
        return
    current = os.environ.get(ALLOCATOR_ENV)
    # A parent process that imported polars passes on the value polars wrote: not a choice.
    if current is None or set(current.split(",")) <= _POLARS_OWN_CONF:
        os.environ[ALLOCATOR_ENV] = ALLOCATOR_CONF


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps errors to the documented exit codes.

    Never a traceback: anything unexpected is one line and exit 2 (``-vv`` logs the
    traceback); SIGINT and SIGTERM exit 130 and 143.
    """
    tune_allocator()
    from invsync.run import signals

    args = sys.argv[1:] if argv is None else argv
    if argv is None:
        signals.install()
        if _wants_json(args):
            sys.stderr = _NoBareNewlines(sys.stderr)
    try:
        code = cli.main(args=argv, prog_name="invsync", standalone_mode=False)
    except click.UsageError as exc:
        _show_click_error(args, exc)
        code = ExitCode.USAGE
        _error_event(args, exc.format_message(), code)
    except (click.Abort, KeyboardInterrupt):
        sigterm = signals.received() == 15
        _stderr(args, f"interrupted by {'SIGTERM' if sigterm else 'SIGINT'}")
        code = ExitCode.TERMINATED if sigterm else ExitCode.INTERRUPTED
    except click.ClickException as exc:
        _show_click_error(args, exc)
        code = ExitCode.USAGE
        _error_event(args, exc.format_message(), code)
    except InvsyncError as exc:
        # Raised before a run started (bad config, usage, the lock): no run folder exists.
        message = clean(_redact(str(exc)))
        _stderr(args, message)
        code = exc.exit_code
        _error_event(args, message, code)
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a bug or a broken environment: one line, exit 2
        log_where(logging.getLogger("invsync"), "unexpected error", exc)
        token = os.environ.get("BIGCOMMERCE_ACCESS_TOKEN")
        message = f"unexpected error: {one_line(exc, token)}"
        _stderr(args, message)
        code = ExitCode.RUN_FAILED
        _error_event(args, message, code)
    code = int(code) if isinstance(code, int) else 0
    if argv is None:
        _exit_now(code)
    sys.exit(code)


def _redact(text: str) -> str:
    from invsync.redact import redact

    return redact(text)


def _wants_json(args: list[str]) -> bool:
    return _OUTPUT.get("log_format") == "json" or "--log-format=json" in args or any(
        a == "--log-format" and b == "json" for a, b in itertools.pairwise(args))


def _stderr(args: list[str], message: str, level: str = "error") -> None:
    """A message on stderr: ``invsync: ...``, or with ``--log-format json`` a JSON line (every
    stderr line is JSON then, config errors and signal messages included)."""
    if _wants_json(args):
        import json

        from invsync.clock import timestamp
        from invsync.surfaces.progress import current_run

        sys.stderr.write(json.dumps({"ts": timestamp(), "event": "log", **current_run(),
                                     "level": level, "logger": "invsync",
                                     "message": _redact(message)}) + "\n")
        sys.stderr.flush()
    else:
        click.echo(f"invsync: {message}", err=True)


class _NoBareNewlines:
    """stderr for ``--log-format json``: every line JSON, so the bare newline click writes
    when Ctrl-C or SIGTERM interrupts a command is dropped."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text in ("\n", "\r\n"):
            return len(text)
        return int(self._stream.write(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _show_click_error(args: list[str], exc: click.ClickException) -> None:
    if _wants_json(args):
        _stderr(args, exc.format_message())
    else:
        exc.show()


def _error_event(args: list[str], message: str, code: int) -> None:
    """With ``--log-format json``, a failure before any run is a JSON event on stdout too."""
    if _wants_json(args):
        from invsync.surfaces.progress import JsonEvents

        JsonEvents()("error", {"run_id": None, "exit_code": int(code), "error": message})


def _exit_now(code: int) -> None:
    """End the process without interpreter teardown.

    Everything invsync writes is already flushed and fsynced or atomically renamed; what
    is left is freeing a million-row frame, which takes a noticeable part of a second.
    Only the console entry point does this (``argv is None``), never a library caller.
    """
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
