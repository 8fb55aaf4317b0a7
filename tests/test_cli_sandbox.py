"""`invsync sandbox`'s fault options, generated from one table (``cli_sandbox.FAULTS``):
each flag (and each alias) sets its own fault of the store and nothing else; all are off by
default. In-process: the server's ``serve`` is replaced by a recorder."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from invsync.sandbox import server
from invsync.surfaces.cli_sandbox import FAULTS, sandbox

NAMES = [flags[0].removeprefix("--").replace("-", "_") for flags, _, _ in FAULTS]
OFF = {"latency_ms": 0, "error_rate": 0.0, "bare_429_rate": 0.0, "drop_rate": 0.0,
       "vague_422": False, "apply_delay_ms": 0}


def started(monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    """The faults the sandbox would have served with, started with ``args``."""
    seen: list[server.SandboxConfig] = []
    monkeypatch.setattr(server, "serve", lambda config, **_: seen.append(config))
    result = CliRunner().invoke(sandbox, ["--port", "0", *args])
    assert result.exit_code == 0, result.output
    [config] = seen
    return {name: getattr(config, name) for name in OFF}


def test_the_table_is_every_fault_of_the_store() -> None:
    assert list(OFF) == NAMES


def test_every_fault_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert started(monkeypatch) == OFF


@pytest.mark.parametrize(("flag", "name", "kind"), [
    pytest.param(flag, name, kind, id=flag.removeprefix("--"))
    for (flags, kind, _), name in zip(FAULTS, NAMES, strict=True) for flag in flags])
def test_each_fault_option_sets_its_fault_only(monkeypatch: pytest.MonkeyPatch, flag: str,
                                                name: str, kind: Any) -> None:
    if kind is None:
        args, value = [flag], True
    elif isinstance(kind, click.FloatRange):
        args, value = [flag, "0.25"], 0.25
    else:
        args, value = [flag, "7"], 7
    assert started(monkeypatch, *args) == {**OFF, name: value}


@pytest.mark.parametrize("args", [["--error-rate", "1.5"], ["--latency-ms", "-1"],
                                  ["--drop-rate", "x"]], ids=["rate-over-1", "negative-ms",
                                                              "not-a-number"])
def test_a_fault_out_of_range_is_refused(args: list[str]) -> None:
    result = CliRunner().invoke(sandbox, ["--port", "0", *args])
    assert result.exit_code == 2 and "Invalid value" in result.output, result.output
