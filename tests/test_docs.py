"""The README documents every command, every sync option and every exit code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest
from conftest import ROOT

from invsync.errors import ExitCode
from invsync.events import EVENT_NAMES
from invsync.schemas.stock import REASONS
from invsync.surfaces.cli import cli

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


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_json_event_is_in_the_readme(name: str) -> None:
    assert f"`{name}`" in README, f"JSON event {name!r} is not documented"


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_reason_code_is_in_the_readme(reason: str) -> None:
    assert f"`{reason}`" in README


@pytest.mark.parametrize("command", sorted(set(cli.commands) - {"sandbox"}))
def test_every_option_of_every_command_is_in_the_readme(command: str) -> None:
    cmd = cli.commands[command]
    options = [opt for p in cmd.params if isinstance(p, click.Option) and not p.hidden
               for opt in p.opts if opt.startswith("--") and opt != "--help"]
    missing = [opt for opt in options if not re.search(rf"[` \[]{re.escape(opt)}\b", README)]
    assert not missing, f"undocumented {command} options: {missing}"


def test_config_and_profile_are_accepted_by_every_command_that_reads_settings() -> None:
    commands = [(name, cmd) for name, cmd in cli.commands.items()
                if not isinstance(cmd, click.Group)]
    commands += [(f"{name} {sub}", c) for name, cmd in cli.commands.items()
                 if isinstance(cmd, click.Group) for sub, c in cmd.commands.items()]
    for name, cmd in commands:
        if name == "sandbox":
            continue
        subcommands = getattr(cmd, "commands", None)  # a group (portal): each of its commands
        for sub_name, sub in (subcommands or {name: cmd}).items():
            opts = {opt for p in sub.params for opt in p.opts}
            assert {"--config", "--profile", "-v", "-q", "--log-format"} <= opts, sub_name


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.splitlines()
        return [ROOT / name for name in listed]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file
        skip = {".venv", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis"}
        return [p for p in ROOT.rglob("*") if p.is_file()
                and not skip & set(p.relative_to(ROOT).parts)]


def test_nothing_outside_tests_points_outside_the_repository() -> None:
    """`../shared/...` exists on the authors' machine, not in a clone: docs/ holds the facts."""
    offenders = []
    for path in _tracked_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "tests" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if "../shared" in text:
            offenders.append(str(rel))
    assert not offenders, f"these files point outside the repository: {offenders}"
    for doc in ("docs/bigcommerce-api.md", "docs/operations.md"):
        assert (ROOT / doc).is_file() and f"({doc})" in README, doc


def test_readme_links_into_the_repository_exist() -> None:
    for target in re.findall(r"\]\((?!https?://|#)([^)#]+)", README):
        assert (ROOT / target).exists(), f"README links to missing {target}"
