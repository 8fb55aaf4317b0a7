"""One Jinja2 environment for every page invsync writes or serves: one look for both.

Autoescape is on for every template, so any value from a file or the store is text, never
markup. The stylesheet is ``static/invsync.css``: the upload page links it, ``report.html``
(which must open from disk, with nothing fetched) carries it inline and allows exactly it
by its hash in the Content-Security-Policy, so no page needs ``unsafe-inline``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, FileSystemBytecodeCache, PackageLoader, select_autoescape
from jinja2.bccache import Bucket

STATUS_CLASS = {
    "succeeded": "ok", "accepted": "ok",
    "partial": "warn", "unconfirmed": "warn", "applying": "info", "waiting": "info",
    "failed": "bad", "refused": "bad", "stale": "warn",
    "dry_run": "info", "planned": "info",
    "not_sent": "muted", "pending": "muted", "discarded": "muted",
}
STATUS_LABEL = {"dry_run": "dry run", "not_sent": "not sent"}
"""How a status reads to people, where it differs from the status itself (the one list: the
report page, the summary, the upload page)."""


def num(value: Any) -> str:
    """A number with thousands separators; ``—`` for nothing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value)


def signed(value: Any) -> str:
    """A whole number with its sign (``+3``, ``-1,000``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:+,}"
    return num(value)


def status_label(status: Any) -> str:
    text = "" if status is None else str(status)
    return STATUS_LABEL.get(text, text) or "unknown"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#!])")
_MD_LEADING = re.compile(r"^(\s*)([-+=>]|\d+[.)])")


def _oneline(value: Any) -> str:
    return " ".join(("" if value is None else str(value)).split())


def md(value: Any) -> str:
    """Markdown-escape text so that it renders as itself and on one line."""
    text = _MD_SPECIAL.sub(r"\\\1", _oneline(value))
    return _MD_LEADING.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def md_code(value: Any) -> str:
    """Text as a Markdown code span, fenced with more backticks than it contains."""
    text = _oneline(value)
    runs = re.findall(r"`+", text)
    fence = "`" * (max((len(r) for r in runs), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_cell(text: str) -> str:
    """A Markdown table cell: a pipe would end the cell, even inside a code span."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def status_class(status: Any) -> str:
    """A CSS class for a status; never the raw value, so nothing reaches an attribute."""
    return STATUS_CLASS.get("" if status is None else str(status), "muted")


class _QuietBytecodeCache(FileSystemBytecodeCache):
    """Jinja's per-user cache of compiled templates; a cache that cannot be read or written
    (a full or read-only temp folder) only means compiling again, never a failed report."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # unreadable or torn (a killed writer): compile instead
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _bytecode_cache() -> FileSystemBytecodeCache | None:
    """Compiling report.html's templates takes ~0.1 s a run; the compiled code is kept in a
    folder of the user's own under the temp folder (Jinja checks its owner and mode), keyed
    by each template's source, so an edited template is compiled afresh."""
    try:
        return _QuietBytecodeCache()
    except (OSError, RuntimeError):  # no safe temp folder: compile every time
        return None


@cache
def environment() -> Environment:
    """The shared environment (autoescape on for every template)."""
    env = Environment(loader=PackageLoader("invsync.html", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      trim_blocks=True, lstrip_blocks=True, bytecode_cache=_bytecode_cache())
    env.filters.update(num=num, signed=signed, status_label=status_label,
                       status_class=status_class, md=md, md_code=md_code, md_cell=md_cell)
    return env


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)


@cache
def stylesheet() -> str:
    """The project's stylesheet, as text."""
    return resources.files("invsync.html").joinpath("static/invsync.css").read_text("utf-8")


def csp_hash(text: str) -> str:
    """A CSP source (``'sha256-...'``) allowing exactly this inline style or script."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def static_dir() -> Any:
    """The folder of the static files (CSS, JavaScript) the upload page serves."""
    return resources.files("invsync.html").joinpath("static")
