"""Options every command shares: output (-v, -q, --log-format, before or after the command)
and where settings come from (--config, --profile)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

_OUTPUT: dict[str, Any] = {"log_format": "text"}
"""The output chosen so far, for errors raised before or outside a command."""


def _configure_output(obj: dict[str, Any]) -> None:
    """Set up logging for the chosen verbosity and format (called again by late options)."""
    level = logging.ERROR if obj["quiet"] else [logging.WARNING, logging.INFO, logging.DEBUG][
        min(obj["verbose"], 2)]
    handler = logging.StreamHandler(sys.stderr)
    if obj["log_format"] == "json":
        from invsync.surfaces.progress import JsonLogFormatter

        handler.setFormatter(JsonLogFormatter())
    else:
        from invsync.surfaces.progress import TextLogFormatter

        handler.setFormatter(TextLogFormatter())
    from invsync.redact import RedactingFilter

    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # With json every stderr line is JSON: Python warnings go through the log handler too.
    logging.captureWarnings(obj["log_format"] == "json")


def _late_global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """``-v``, ``-q``, ``--log-format`` given after the command: same effect as before it."""
    if value is None or value == 0 or ctx.obj is None:
        return
    key = param.name or ""
    ctx.obj[key] = ctx.obj[key] + value if key == "verbose" else value
    _OUTPUT.update(ctx.obj)
    _configure_output(ctx.obj)


def _global_options(fn: Any) -> Any:
    """The group's -v/-q/--log-format, accepted after the command name too (not in --help)."""
    options = [
        click.option("-v", "--verbose", count=True, default=None, expose_value=False,
                     hidden=True, callback=_late_global),
        click.option("-q", "--quiet", is_flag=True, default=None, expose_value=False,
                     hidden=True, callback=_late_global),
        click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                     expose_value=False, hidden=True, callback=_late_global),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config_options(fn: Any) -> Any:
    """``--config`` and ``--profile``, accepted by every command that reads settings."""
    options = [
        click.option("--config", "config_path", type=click.Path(path_type=Path),
                     help="TOML config file [env INVSYNC_CONFIG]."),
        click.option("--profile", help="Use [profiles.NAME] of the config [env INVSYNC_PROFILE]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return _global_options(fn)
