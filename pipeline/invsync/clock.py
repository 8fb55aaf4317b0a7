"""Timestamps, made one way: UTC, ISO 8601, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp() -> str:
    """Now, to the millisecond (log lines and events)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """Now, to the second (report fields)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def utc_now_ms() -> str:
    """Now, to the millisecond: for times compared with each other (when a level was read,
    when a write ended), where two events in one second must still have an order."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
