"""The command line of sources: ``plan|sync SOURCE`` and ``invsync watch SOURCE``.

A SOURCE is a URL (sftp://, ftp://, ftps://, s3://, gs://, az://, https://), a glob or a
``[sources.NAME]`` of the config; a plain path is read as it always was. See docs/sources.md.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import click

from invsync.terminal import clean


def _finite_seconds(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and (value != value or value < 0):
        raise click.BadParameter(f"{param.opts[0]} must be a number of seconds")
    return value


def _source_options(fn: Any) -> Any:
    """The options of a SOURCE: --pick, --force, --max-age, --settle."""
    options = [
        click.option("--pick", type=click.Choice(["only", "newest", "oldest"]),
                     help="Which file a SOURCE glob reads when several match [only: refuse]."),
        click.option("--force", "source_force", is_flag=True,
                     help="Run a SOURCE's file even if it is byte-identical to the last "
                          "successful run's."),
        click.option("--max-age", metavar="AGE",
                     help="Refuse a SOURCE file older than this, e.g. 26h (exit 3, "
                          "notification stale_file)."),
        click.option("--settle", "settle_s", type=float, metavar="SECONDS",
                     callback=_finite_seconds,
                     help="A SOURCE file is read once its size and mtime stayed the same "
                          "this long [3]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _source_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """Take the source options out of ``flags`` (the rest are settings)."""
    from invsync.sources.spec import duration_s

    max_age = flags.pop("max_age", None)
    return {"pick": flags.pop("pick", None), "force": bool(flags.pop("source_force", False)),
            "max_age_s": duration_s(max_age, "--max-age") if max_age is not None else None,
            "settle_s": flags.pop("settle_s", None)}


def _from_source(ctx: click.Context, /, arg: str, settings: Any, command: str,
                 source: dict[str, Any]) -> bool:
    """Run ``plan|sync`` on a SOURCE; False when ``arg`` is a plain path (not handled here)."""
    # A plain file path needs none of the fetching machinery: only its import is paid here.
    from invsync.sources.spec import is_source

    overrides = {k: v for k, v in source.items() if k != "force"}
    if not is_source(str(arg), settings.sources):
        if any(v is not None for v in overrides.values()) or source["force"]:
            raise click.UsageError("--pick, --force, --max-age and --settle apply to a "
                                   "SOURCE (a URL, a glob or a [sources.NAME]), not a file")
        return False
    from invsync.run.sourced import source_spec, sync_source
    from invsync.surfaces.cli import _events, _finish

    spec = source_spec(arg, settings, **overrides)
    done = sync_source(spec, settings, command=command, force=source["force"],
                       on_event=_events(ctx), origin={"via": "cli"})
    for problem in done.problems:
        click.echo(f"invsync: {clean(problem)}", err=True)
    if done.report is None:
        _say_unchanged(ctx, done)
        ctx.exit(0)
    if command == "plan" and ctx.obj["log_format"] != "json" and not ctx.obj["quiet"]:
        from invsync.surfaces.summary import print_plan

        print_plan(done.report)
    _finish(ctx, done.report, settings)
    return True


def _say_unchanged(ctx: click.Context, /, done: Any) -> None:
    if ctx.obj["log_format"] == "json":
        from invsync.surfaces.progress import JsonEvents

        JsonEvents()("source_unchanged", {"run_id": None, "source": done.spec.display,
                                          "unchanged_since": done.unchanged_since,
                                          "sha256": done.fetched.sha256 if done.fetched
                                          else None, "after": done.after})
    elif not ctx.obj["quiet"]:
        click.echo(clean(done.message))
        if done.after:
            click.echo(clean(done.after))


def watch_command(sync_options: Callable[[Any], Any]) -> click.Command:
    """``invsync watch SOURCE`` (built with the sync options, which it shares)."""

    @click.command(context_settings={"help_option_names": ["-h", "--help"],
                                     "max_content_width": 100})
    @sync_options
    @click.option("--max-age", metavar="AGE",
                  help="Refuse a file older than this, e.g. 26h (notification stale_file).")
    @click.option("--settle", "settle_s", type=float, metavar="SECONDS",
                  callback=_finite_seconds,
                  help="Read a file once its size and mtime stayed the same this long [3].")
    @click.option("--interval", "interval_s", type=float, metavar="SECONDS",
                  callback=_finite_seconds, help="Look for new files this often [30].")
    @click.pass_context
    def watch(ctx: click.Context, /, file: str | None, config_path: Path | None,
              maps: tuple[str, ...], **flags: Any) -> None:
        """Process each new file of SOURCE once, in arrival order, until stopped.

        SOURCE is a folder glob (/srv/drop/stock_*.csv), a URL with a glob
        (sftp://host/out/*.csv) or a [sources.NAME]. Each file gets a run folder and the
        notifications of a sync; processed files are kept in a ledger by sha256. SIGTERM
        stops it cleanly between files (exit 0); the file in progress is finished first.
        """
        from invsync.run.config import load_settings
        from invsync.run.sourced import Watcher, source_spec
        from invsync.sources.spec import duration_s
        from invsync.surfaces.cli import _overrides

        if file is None:
            raise click.UsageError("missing argument SOURCE")
        max_age = flags.pop("max_age", None)
        overrides = {"max_age_s": duration_s(max_age, "--max-age") if max_age else None,
                     "settle_s": flags.pop("settle_s", None),
                     "interval_s": flags.pop("interval_s", None), "pick": "oldest"}
        settings = load_settings(config_path, _overrides(flags, maps))
        spec = source_spec(file, settings, **overrides)
        watcher = Watcher(spec=spec, settings=settings, on_done=_on_done(ctx, settings),
                          on_problem=_on_problem(ctx), on_event=_events_of(ctx))

        def stop(signum: int, _frame: FrameType | None) -> None:
            watcher.stop.set()  # between files at once; a file in progress is finished first

        signal.signal(signal.SIGTERM, stop)
        if not ctx.obj["quiet"] and ctx.obj["log_format"] != "json":
            click.echo(clean(f"watching {spec.display} every {spec.interval_s:g} s "
                             f"(SIGTERM stops it)"))
            sys.stdout.flush()
        watcher.run()
        if not ctx.obj["quiet"] and ctx.obj["log_format"] != "json":
            click.echo("invsync: watch stopped")
        ctx.exit(watcher.interrupted or 0)

    return watch


def _events_of(ctx: click.Context) -> Any:
    from invsync.surfaces.cli import _events

    return _events(ctx)


def _on_done(ctx: click.Context, /, settings: Any) -> Callable[[Any], None]:
    """After each file of a watch: notify, then print its summary line (never exit)."""

    def done(result: Any) -> None:
        json_out = ctx.obj["log_format"] == "json"
        report = result.report
        for problem in result.problems:
            click.echo(f"invsync: {clean(problem)}", err=True)
        if report is None:
            _say_unchanged(ctx, result)
            return
        if settings.notify:
            from invsync.run.notify import notify_run

            for problem in notify_run(report, settings):
                click.echo(f"invsync: {clean(problem)}", err=True)
        if not json_out:
            from invsync.stages.report import summary_line

            if report.exit_code or not ctx.obj["quiet"]:
                click.echo(clean(summary_line(report)))
            if report.error:
                click.echo(f"invsync: {clean(report.error)}", err=True)
        sys.stdout.flush()

    return done


def _on_problem(ctx: click.Context) -> Callable[[str], None]:
    def problem(text: str) -> None:
        from invsync.redact import redact

        message = clean(redact(text))
        if ctx.obj["log_format"] == "json":
            from invsync.surfaces.progress import JsonEvents

            JsonEvents()("watch_problem", {"run_id": None, "error": message})
        else:
            click.echo(f"invsync: {message}", err=True)
        sys.stderr.flush()

    return problem
