"""The docs (README.md and docs/*.md) document every command, option, exit code, event and
reason; every link in them leads somewhere."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest
from conftest import ROOT

from invsync.errors import ExitCode
from invsync.events import EVENT_NAMES
from invsync.rules.stock import REASONS
from invsync.surfaces.cli import cli

README = (ROOT / "README.md").read_text(encoding="utf-8")
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# The reference: README.md and every page of docs/ read as one text.
DOCS = "\n".join(p.read_text(encoding="utf-8") for p in DOC_FILES)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_in_the_readme(name: str) -> None:
    assert re.search(rf"`{name}\b", DOCS), f"command {name!r} is not documented"


@pytest.mark.parametrize("command", ["sync", "plan"])
def test_every_sync_option_is_in_the_readme(command: str) -> None:
    cmd = cli.commands[command]
    options = [opt for p in cmd.params if isinstance(p, click.Option)
               for opt in p.opts if opt.startswith("--") and opt != "--help"]
    missing = [opt for opt in options if f"`{opt}" not in DOCS and f" {opt}" not in DOCS]
    assert not missing, f"undocumented {command} options: {missing}"


@pytest.mark.parametrize("code", list(ExitCode))
def test_every_exit_code_is_in_the_readme(code: ExitCode) -> None:
    assert re.search(rf"^\| {int(code)} \|", DOCS, re.M), f"exit code {int(code)} undocumented"


@pytest.mark.parametrize("name", EVENT_NAMES)
def test_every_json_event_is_in_the_readme(name: str) -> None:
    assert f"`{name}`" in DOCS, f"JSON event {name!r} is not documented"


@pytest.mark.parametrize("reason", sorted(REASONS))
def test_every_reason_code_is_in_the_readme(reason: str) -> None:
    assert f"`{reason}`" in DOCS


@pytest.mark.parametrize("command", sorted(set(cli.commands) - {"sandbox"}))
def test_every_option_of_every_command_is_in_the_readme(command: str) -> None:
    cmd = cli.commands[command]
    options = [opt for p in cmd.params if isinstance(p, click.Option) and not p.hidden
               for opt in p.opts if opt.startswith("--") and opt != "--help"]
    missing = [opt for opt in options if not re.search(rf"[` \[]{re.escape(opt)}\b", DOCS)]
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


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    out = set()
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.name)
def test_every_link_in_the_docs_leads_somewhere(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    dead = []
    for target in re.findall(r"\]\((?!https?://|mailto:)([^)\s]+)\)", text):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        missing_anchor = bool(anchor) and dest.suffix == ".md" and anchor not in _anchors(dest)
        if not dest.exists() or missing_anchor:
            dead.append(target)
    assert not dead, f"{doc.name} has dead links: {dead}"


def test_the_readme_stays_short_and_links_every_docs_page() -> None:
    assert len(README.splitlines()) <= 120
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in README, f"README does not link docs/{page.name}"
