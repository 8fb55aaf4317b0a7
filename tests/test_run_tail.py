"""A run's tail (from the last answer to the exit): what it no longer does there."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


def test_the_summary_does_not_load_the_http_stack() -> None:
    # A dry run prints its summary without ever loading httpx (~0.05 s) for it.
    code = ("import sys, invsync.surfaces.cli; import invsync.surfaces.summary; "
            "print('httpx' in sys.modules, 'invsync.store.live' in sys.modules)")
    assert _python(code) == "False False"


def test_the_summary_console_is_imported_ahead_once_batches_are_out() -> None:
    code = """
import sys, threading
from invsync.surfaces import cli
seen = []
emit = cli._summary_ahead(lambda name, data: seen.append(name))
emit("run_started", {"dry_run": False})
before = "rich.console" in sys.modules
emit("submit_started", {"batches": 1, "items": 1})
emit("batch", {})
for t in threading.enumerate():
    if t.name == "invsync-console":
        t.join(60)
print(before, "rich.console" in sys.modules, "rich.table" in sys.modules, seen)
"""
    assert _python(code) == ("False True True "
                             "['run_started', 'submit_started', 'batch']")


def test_a_dry_runs_summary_console_is_imported_as_it_starts() -> None:
    code = """
import sys, threading
from invsync.surfaces import cli
emit = cli._summary_ahead(lambda name, data: None)
emit("run_started", {"dry_run": True})
for t in threading.enumerate():
    if t.name == "invsync-console":
        t.join(60)
print("rich.console" in sys.modules)
"""
    assert _python(code) == "True"
