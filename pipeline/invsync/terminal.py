"""Text shown on a terminal: file and store text is printed as data, never as markup or codes.

A cell, a header, a path or a store's message may hold rich markup (``[/b]``), emoji codes
or control characters (ESC sequences that recolour, move the cursor or retitle a terminal).
Everything that reaches a terminal passes :func:`clean` (control characters shown as
visible escapes such as ``\\x1b``, so every value stays on its line) and, when printed
through rich, :func:`safe` (markup escaped too).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

# C0 (newline and tab included: a value is one line), DEL, C1, and the bidi overrides that
# make text read differently from what it is.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(match: re.Match[str]) -> str:
    ch = match.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def clean(text: object) -> str:
    """``text`` on one line, every control character shown as an escape (``\\x1b``, ``\\n``)."""
    return _CONTROL.sub(_visible, str(text))


def one_line(exc: BaseException, secret: str | None = None) -> str:
    """An unexpected exception as one clean line: an OSError names its file and cause.

    ``secret`` (the access token) is blanked out wherever it appears: an exception from a
    library may quote a header value.
    """
    if isinstance(exc, OSError) and exc.strerror:
        text = (f"{exc.filename}: {exc.strerror}" if exc.filename
                else f"{type(exc).__name__}: {exc.strerror}")
    else:
        detail = " ".join(str(exc).split())
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    for value in {secret or "", (secret or "").strip()}:
        if len(value) >= 4:
            text = text.replace(value, "[token]")
    return clean(text)


def log_where(log: logging.Logger, what: str, exc: BaseException) -> None:
    """Log where ``exc`` was raised at debug level (``-vv``), one record per line: the stack
    and the type, never the message (a library's message may quote the token)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    import traceback

    log.debug("%s: %s", what, type(exc).__name__)
    for frame in traceback.format_tb(exc.__traceback__):
        for line in frame.splitlines():
            log.debug("  %s", line)


def safe(text: object) -> str:
    """:func:`clean` text escaped for rich markup: printed exactly as it is."""
    from rich.markup import escape

    return escape(clean(text))


def console(*, stderr: bool = False) -> Console:
    """A rich console for summaries: no markup guessing, no emoji codes, no highlighting."""
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True, emoji=False, stderr=stderr)
    # A table narrower than its numbers cuts them ("3,1…" for 3,114): a narrow terminal
    # (or COLUMNS=20 in a job's environment) gets lines it wraps itself instead.
    out.width = max(out.width, MIN_WIDTH)
    return out


MIN_WIDTH = 80
"""The narrowest a summary is laid out for, whatever the terminal says."""
