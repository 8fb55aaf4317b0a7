"""The README documents every command, every sync option and every exit code."""

from __future__ import annotations

import re

import click
import pytest
from conftest import ROOT

from pipeline.cli import cli
from pipeline.errors import ExitCode
from schemas.stock import REASONS

README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"`{name}\b", README), f"command {name!r} is not documented"


@pytest.mark.parametrize("command", ["sync", "plan"])
def test_every_sync_option_is_in_the_readme(command: str) -> None:
    cmd = cli.commands[command]
    options = [opt for p in cmd.params if isinstance(p, click.Option)
               for opt in p.opts if opt.startswith("--") and opt != "--help"]
    missing = [opt for opt in options if f"`{opt}" not in README and f" {opt}" not in README]
    assert not missing, f"undocumented {command} options: {missing}"


@pytest.mark.parametrize("code", list(ExitCode))
def test_every_exit_code_is_in_the_readme(code: ExitCode) -> None:
    assert re.search(rf"^\| {int(code)} \|", README, re.M), f"exit code {int(code)} undocumented"


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_reason_code_is_in_the_readme(reason: str) -> None:
    assert f"`{reason}`" in README
