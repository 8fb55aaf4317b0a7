"""A first end-to-end check: the sample nights against a sandbox process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import SAMPLE, run_invsync

from invsync.sandbox.process import SandboxProcess


def test_night1_then_night2_sends_only_changes(sandbox: SandboxProcess,
                                                cli_env: dict[str, str]) -> None:
    first = run_invsync(["sync", str(SAMPLE / "night1.csv")], cli_env)
    assert first.returncode == 0, first.stderr
    # Planned against the store: the 246 rows at 0 are what it holds already.
    assert first.report()["counts"]["accepted"] == 3114 - 246
    second = run_invsync(["sync", str(SAMPLE / "night2.csv")], cli_env)
    assert second.returncode == 0, second.stderr
    assert second.report()["counts"]["submitted"] == 93
    assert Path(second.report_dir()).is_dir()


def test_the_cli_has_polars_give_freed_memory_back_unless_told_otherwise() -> None:
    """The allocator setting is made before polars loads (jemalloc reads it once), and a
    user's own setting wins; the benchmark (case 5) measures what it saves."""
    code = ("import os, sys\n"
            "from invsync.surfaces import cli\n"
            "assert 'polars' not in sys.modules\n"
            "cli.tune_allocator()\n"
            "import polars\n"
            "print(os.environ.get(cli.ALLOCATOR_ENV))\n"
            "os.environ.pop(cli.ALLOCATOR_ENV)\n"
            "cli.tune_allocator()\n"  # polars is loaded now: too late, left alone
            "print(os.environ.get(cli.ALLOCATOR_ENV))\n")
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    # polars puts its own defaults first; a later setting wins in jemalloc's parsing.
    first, after = done.stdout.split()
    assert first.endswith(",dirty_decay_ms:0,muzzy_decay_ms:0") and after == "None"
    # A parent that imported polars (a scheduler, the benchmark) passes polars' own value on.
    inherited = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**env, "_RJEM_MALLOC_CONF": "dirty_decay_ms:500,muzzy_decay_ms:1000"})
    assert inherited.stdout.split()[0].endswith(",dirty_decay_ms:0,muzzy_decay_ms:0")
    mine = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**env, "_RJEM_MALLOC_CONF": "narenas:1"}, check=True)
    first, after = mine.stdout.split()
    assert first.endswith(",narenas:1") and "decay_ms:0" not in first and after == "None"
