"""Plain words for people who upload a spreadsheet: what went wrong and what to do.

A rejection reason's words are those of every other report (one place:
:data:`invsync.rules.stock.REASONS`, through :mod:`invsync.rules.messages`); each
safety brake maps here to a sentence a non-technical person understands and its fix.
"""

from __future__ import annotations

import re
from typing import Any

from invsync.rules.messages import kind_of

BRAKES: dict[str, tuple[str, str]] = {
    "empty_file": (
        "The file has no rows, so nothing would be set.",
        "Check that you uploaded the right file and that it has data below the header."),
    "shrunken_file": (
        "The file is much smaller than the last one of this kind: it may have been cut short.",
        "If you meant to send only these rows, ask an administrator; otherwise upload the "
        "complete file."),
    "mass_zeroing": (
        "This would set a large share of the items at a location to 0.",
        "Check the file. If you really mean to zero them, tick the box before applying."),
}


def reason_text(reason: str | None) -> tuple[str, str]:
    """(what is wrong, what to do) for a rejection reason code, as whole sentences."""
    kind, fix = kind_of(reason)
    return f"{kind}.", fix[:1].upper() + fix[1:] + "."


def brake_text(name: str | None) -> tuple[str, str]:
    """(what would happen, what to do) for a safety brake."""
    return BRAKES.get(name or "", ("A safety check stopped this upload.",
                                   "Read the details below or ask an administrator."))


_CLI_ADVICE = re.compile(r";\s*(?:pass|use|add) --[a-z-]+\b.*$", re.S)


def web_brake(brake: dict[str, Any]) -> dict[str, Any]:
    """A tripped brake as the page and the API show it: its message without the CLI's
    advice (\"pass --allow-zeroing\"), since here the override is the tick box or
    ``override_brakes=yes``."""
    message = brake.get("message")
    if not isinstance(message, str):
        return brake
    return {**brake, "message": _CLI_ADVICE.sub("", message).rstrip()}


UPLOAD_WORDS: dict[str, tuple[str, str]] = {
    "new": ("uploaded", "muted"), "unmapped": ("columns to choose", "warn"),
    "previewing": ("preview being made", "info"), "planned": ("ready to apply", "info"),
    "applying": ("applying now", "info"), "cancelling": ("cancelling", "warn"),
    "succeeded": ("applied", "ok"), "partial": ("applied, some rows left out", "warn"),
    "failed": ("did not finish", "bad"), "stale": ("store changed: preview again", "warn"),
    "cancelled": ("cancelled", "muted"), "not_applied": ("not applied", "muted"),
    "discarded": ("discarded", "muted"),
}
"""An upload's state in the page's words, and its badge colour."""

RUN_WORDS: dict[str, str] = {
    "succeeded": "done", "partial": "done, some left out", "failed": "did not finish",
    "stale": "store changed", "dry_run": "preview", "interrupted": "stopped",
    "braked": "stopped by a safety check", "not_sent": "not sent",
}
"""A run's status in History's words."""


def upload_word(status: str | None) -> tuple[str, str]:
    """(words, badge class) for an upload's state."""
    return UPLOAD_WORDS.get(status or "", ((status or "").replace("_", " "), "muted"))


def run_word(status: str | None) -> str:
    """A run's status in words."""
    return RUN_WORDS.get(status or "", (status or "").replace("_", " "))


_PATH = re.compile(r"(?<![\w.])/(?:[^\s:;,'\"()/]+/)+([^\s:;,'\"()]+)")
_FLAG = re.compile(r"\s*\((?:[^()]*?)--[a-z][a-z-]*[^()]*\)|\s*(?:pass|use|run with|add) "
                   r"`?--[a-z][a-z-]*(?: [^\s,;)`]+)?`?|`?--[a-z][a-z-]*`?")
_CLI = re.compile(r"`?invsync (?:resume|sync|plan|revert)[^`;]*`?")


_INNER_WORDS = (
    (" in the journal: run the next update to finish", ": the next update finishes the rest"),
    ("(confirmed batches are not sent again)", "(what the store confirmed is not sent again)"),
    ("no batch is left unconfirmed: run the same command again",
     "nothing is left unconfirmed: upload the file again"),
    ("batches", "changes"), ("batch", "change"),
)
"""The CLI's inner words in a run's error -> the page's."""


def plain_run_error(message: str | None) -> str:
    """A run's error for a page: file names instead of server paths, no CLI flags or
    commands (a merchant cannot type them)."""
    if not message:
        return ""
    text = _PATH.sub(r"\1", message)
    text = re.sub(r"[;,]\s*(?:pass|use|add|run with) `?--[a-z][a-z-]*.*?(?=;|$)", "", text)
    text = re.sub(r"interrupted by SIG(?:TERM|INT)", "stopped (the program was shut down)", text)
    text = _CLI.sub("the next update", text)
    for inner, plain in _INNER_WORDS:
        text = text.replace(inner, plain)
    text = _FLAG.sub("", text)
    text = re.sub(r"\s{2,}", " ", text).strip()
    return text[:1].upper() + text[1:]
