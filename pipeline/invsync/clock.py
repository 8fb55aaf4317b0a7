"""Timestamps, made one way: UTC, ISO 8601, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp() -> str:
    """Now, to the millisecond (log lines and events)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """Now, to the second (report fields)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
