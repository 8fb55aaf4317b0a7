"""The one place that keeps secrets out of text: :func:`redact`.

Every access token a :class:`~invsync.run.config.Secret` holds is registered here, so that
text from the store (error bodies, messages) can be cleaned where it enters the program,
and reports, logs and printed lines once more where they leave it. Anything shaped like
an ``X-Auth-Token`` or ``Authorization`` header value is removed as well, whoever's it is.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Iterator
from typing import Any

REDACTED = "[redacted]"

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_CLUES = r"://|\?|(?i:auth|access)"
"""What every rule's find holds besides a registered secret: a URL's ``://`` or query's
``?``, or a header name (``x-auth-token``, ``authorization``, ``access_token``)."""
_clue: re.Pattern[str] = re.compile(_CLUES)
"""Text without a match of this holds nothing to redact: one scan tells (most text)."""

# `X-Auth-Token: v`, `"x-auth-token": "v"`, `('authorization', 'Bearer v')`, `X-Auth-Token=v`
_HEADER = re.compile(
    r"""(?ix)
    (x[-_]auth[-_]token|authorization|access[-_]token)   # the header (or setting) name
    (["']?\s*[:=]\s*["']?|["']\s*,\s*["'])               # a separator, maybe quoted
    ((?:bearer|basic|token)\s+)?                         # an auth scheme
    ([^\s"',;)}\]]+)                                     # the value
    """)

# A URL's password (`sftp://user:PASSWORD@host`) and secret-looking query values
# (`?token=`, `&X-Amz-Signature=`, `&sig=`, `&key=` ...): a source URL may carry either.
# A password may hold "@" (urlsplit takes the host after the last one): up to that "@".
_URL_PASSWORD = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)(?!\[redacted\]@)[^\s/?#\"'<>]*@")
_URL_SECRET_QUERY = re.compile(
    r"(?i)([?&][a-z0-9_.-]*(?:token|secret|signature|sig|password|passwd|pwd|key|credential"
    r"|auth)[a-z0-9_.-]*=)(?!\[redacted\])[^&\s#\"'<>]+?(?=[:;,.)]?(?:[&\s#\"'<>]|$))")

MIN_FREE_LENGTH = 8
"""A registered secret this long is removed wherever it appears; a shorter one only as a
whole word (removing every ``abc`` inside other words would wreck the reports)."""


def register(secret: str) -> None:
    """Remember ``secret`` so that :func:`redact` removes it from any text."""
    global _pattern, _clue
    if not secret or secret in _secrets:
        return
    _secrets.add(secret)
    parts = []
    for s in sorted(_secrets, key=len, reverse=True):
        parts.append(re.escape(s) if len(s) >= MIN_FREE_LENGTH
                     else rf"(?<![A-Za-z0-9]){re.escape(s)}(?![A-Za-z0-9])")
    _pattern = re.compile("|".join(parts))
    _clue = re.compile("|".join([*parts, _CLUES]))


def redact(text: str) -> str:
    """``text`` without any registered secret or header-shaped credential.

    Every rule looks at the ORIGINAL text and the spans they find are replaced together:
    replacing one rule's finds first could break the shape another rule looks for (a
    registered ``token`` turning ``x-auth-token=v`` into ``x-auth-[redacted]=v``, a
    registered ``sftp`` eating a URL's scheme), and a marker already in the text is never
    redacted again, so redacting twice changes nothing more.
    """
    if not text or not _clue.search(text):
        return text
    kept = [(m.start(), m.end()) for m in _MARKER.finditer(text)]
    spans = [s for s in _spans(text) if not any(s[0] < e and b < s[1] for b, e in kept)]
    return _replace(text, spans)


def redact_url(text: str) -> str:
    """``text`` with any URL's password and secret-looking query values replaced."""
    return _replace(text, list(_url_spans(text)))


_MARKER = re.compile(re.escape(REDACTED))


def _url_spans(text: str) -> Iterator[tuple[int, int]]:
    if "://" in text:
        for m in _URL_PASSWORD.finditer(text):
            yield m.end(1), m.end() - 1  # the password, between ``user:`` and ``@``
    if "?" in text:
        for m in _URL_SECRET_QUERY.finditer(text):
            yield m.end(1), m.end()


def _spans(text: str) -> Iterator[tuple[int, int]]:
    """Where ``text`` holds something secret, by every rule (spans may overlap)."""
    if _pattern is not None:
        for m in _pattern.finditer(text):
            yield m.span()
    yield from _url_spans(text)
    for m in _HEADER.finditer(text):
        if not m.group(4).startswith(REDACTED[:-1]):  # a value already redacted
            yield m.span(4)


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each (merged) span replaced by the marker."""
    out, at = [], 0
    for start, end in sorted(spans):
        if end <= start:
            continue
        if start < at:  # overlaps the span just replaced: that marker covers it too
            at = max(at, end)
            continue
        out.append(text[at:start])
        out.append(REDACTED)
        at = end
    out.append(text[at:])
    return "".join(out)


def redact_data(value: Any) -> Any:
    """:func:`redact` applied to every string inside nested dicts, lists and tuples."""
    kind = type(value)
    if kind is str or isinstance(value, str):
        return redact(value)
    if kind is int or value is None or kind is float or kind is bool:
        return value  # most of a report's values: told apart at once
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return type(value)([redact_data(v) for v in value])
    if isinstance(value, tuple):
        return type(value)(redact_data(v) for v in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message (and exception text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: let the handler report it as logging does
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class Secret:
    """A string that never shows itself in ``str``, ``repr``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        register(value)  # so that no text the program writes can carry it

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        # Equal settings hold equal tokens; compared in constant time all the same.
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))
