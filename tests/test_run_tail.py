"""A run's tail (from the last answer to the exit): what it no longer does there."""

from __future__ import annotations

import subprocess
import sys

from conftest import budget
from hypothesis import example, given, settings
from hypothesis import strategies as st


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


_PIECES = ["x-auth-token", "X_AUTH_TOKEN", "Authorization", "ACCESS-token", ":", "=", " ",
           "'", '"', ",", "Bearer ", "basic ", "sftp://", "HTTPS://", "user:", "pw@", "/",
           "?", "&", "token=", "X-Amz-Signature=", "key=", "#", "s3cr3tLONGvalue", "tok",
           "xtok", "[redacted]", "[redacted", "é", "SKU-001", "12", "auth", "acc"]


@settings(max_examples=budget(400), deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=4), max_size=14))
@example(["https://example.com/f.csv", "?", "token=", "12"])
@example(["f.csv", "?", "sig=", "12"])
@example(["sftp://", "user:", "pw@", "host/"])
@example(["X_AUTH_TOKEN", "=", "12"])
@example(["Authorization", ":", " ", "Bearer ", "12"])
@example(["ACCESS-token", "=", "'", "12"])
@example(["SKU ", "s3cr3tLONGvalue", "x"])
@example(["a ", "tok", " b"])
def test_the_quick_look_never_changes_what_is_redacted(pieces: list[str]) -> None:
    # redact() skips text with no clue of a secret in one scan; the full rules, run on
    # every text, give the same result.
    import re

    import invsync.redact as redaction

    text = "".join(pieces)
    saved = (set(redaction._secrets), redaction._pattern, redaction._clue)
    try:
        redaction.register("s3cr3tLONGvalue")
        redaction.register("tok")  # short: only as a whole word
        quick = redaction.redact(text)
        clue, redaction._clue = redaction._clue, re.compile("")  # every text: the full rules
        try:
            full = redaction.redact(text)
        finally:
            redaction._clue = clue
        assert quick == full
        assert redaction.redact_data({"a": [text, 1, None, (text,)]}) == \
            {"a": [full, 1, None, (full,)]}
    finally:
        redaction._secrets, redaction._pattern, redaction._clue = saved
