"""What a run shows while it works: a progress bar, plain log lines, or JSON events.

The library reports progress as events (``name``, ``data``); this module turns them
into a rich progress bar on a terminal, periodic plain lines when output is not a
terminal (cron, CI), or one JSON object per line for log shippers.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

from invsync.clock import timestamp
from invsync.events import EventName

_current_run: dict[str, str] = {}
"""The run the JSON events are about, so that log records can name it too."""


class JsonLogFormatter(logging.Formatter):
    """Python log records as one JSON object per line (with the current run's id)."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": timestamp(), "event": "log", **_current_run,
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage()})


class TextLogFormatter(logging.Formatter):
    """``2026-11-29T21:13:10.123Z WARNING invsync.x: message`` (UTC, like the JSON events)."""

    def format(self, record: logging.LogRecord) -> str:
        from invsync.terminal import clean

        # Control characters in a message are shown as escapes; exceptions are logged by
        # terminal.log_where (the stack and the type, never a message that may quote a token).
        return f"{timestamp()} {record.levelname} {record.name}: {clean(record.getMessage())}"


class JsonEvents:
    """Writes each event as one JSON line: ``{"ts", "event", ...data}``."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, name: EventName, data: dict[str, Any]) -> None:
        from invsync.redact import redact

        if data.get("run_id"):
            _current_run["run_id"] = str(data["run_id"])
        record = {"ts": timestamp(), "event": name, **data}
        self.stream.write(redact(json.dumps(record, default=str)) + "\n")
        self.stream.flush()


class QuotaEta:
    """The time left of a submission, counting the store's rate-limit windows still to come.

    A rate measured over the first burst of a window says little when most of the time is
    spent waiting for the next windows: with ``quota`` requests a window of ``window_s``,
    ``n`` more requests need at least ``ceil(n / quota) - 1`` more windows after this one.
    """

    def __init__(self) -> None:
        self.quota: int | None = None
        self.window_s: float | None = None
        self.wait_until = 0.0

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        if name in ("rate_limit", "rate_limit_wait") and data.get("quota"):
            self.quota, self.window_s = int(data["quota"]), float(data.get("window_s") or 0)
        if name == "rate_limit_wait":
            self.wait_until = max(self.wait_until, time.monotonic() + float(data["wait_s"]))

    def eta(self, now: float, elapsed: float, items_done: int, items_total: int,
            batches_left: int) -> float | None:
        """Seconds left (None: not known yet): the larger of the rate's and the quota's."""
        left = items_total - items_done
        if left <= 0:
            return 0.0
        by_rate = left / (items_done / elapsed) if items_done and elapsed > 0 else None
        by_quota = None
        if self.quota and self.window_s and batches_left > 0:
            windows = -(-batches_left // self.quota) - 1  # full windows after this one
            by_quota = max(self.wait_until - now, 0.0) + windows * self.window_s
        known = [t for t in (by_rate, by_quota) if t is not None]
        return max(known) if known else None


def waiting_text(wait_s: float) -> str:
    """``waiting 12 s for the store's rate limit``."""
    amount = f"{wait_s:,.0f}" if wait_s >= 10 else f"{wait_s:.1f}"
    return f"waiting {amount} s for the store's rate limit"


class PlainProgress:
    """Periodic plain lines on stderr: good in cron mail and CI logs."""

    def __init__(self, stream: IO[str] | None = None, every_s: float | None = None) -> None:
        import os

        self.stream = stream or sys.stderr
        if every_s is None:  # INVSYNC_PROGRESS_EVERY_S: how often (tests, chatty CI logs)
            try:
                every_s = float(os.environ.get("INVSYNC_PROGRESS_EVERY_S") or 5.0)
            except ValueError:
                every_s = 5.0
        self.every_s = every_s
        self.quota = QuotaEta()
        self._last_wait = 0.0
        self._last = 0.0
        self._start = 0.0
        self.total_batches = 0
        self.total_items = 0
        self.done_batches = 0
        self.done_items = 0
        self._start_read = 0.0

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        self.quota.on_event(name, data)
        if name == "rate_limit_wait" and self.total_batches:
            now = time.monotonic()
            # Once per window, but not more often than a progress line (short windows).
            if now - self._last_wait >= self.every_s or data["wait_s"] >= self.every_s:
                self._last_wait = self._last = now
                self._line(f"{self._status(now)}; {waiting_text(float(data['wait_s']))}")
        elif name == "submit_started":
            self._start = self._last = time.monotonic()
            self.total_batches, self.total_items = data["batches"], data["items"]
            self._line(f"sending {self.total_items:,} items in {self.total_batches:,} batches")
        elif name == "batch":
            self.done_batches += 1
            self.done_items += int(data.get("items", 0))
            now = time.monotonic()
            if now - self._last >= self.every_s or self.done_batches == self.total_batches:
                self._last = now
                self._line(self._status(now))
        elif name == "lock_wait":
            holder = data.get("holder") or {}
            self._line(f"waiting up to {data.get('wait_s', 0):g} s for the lock held by run "
                       f"{holder.get('run_id', '?')}")
        # Retries are not printed here: the client logs each at -v (INFO), and the run's
        # summary line counts them by cause.
        elif name == "read_started":
            self._start_read = self._last = time.monotonic()
            self._line(f"reading live levels at location(s) {data['locations']}")
        elif name in ("read_page", "read_finished"):
            now = time.monotonic()
            if name == "read_finished" or now - self._last >= self.every_s:
                self._last = now
                rate = data["items"] / max(now - self._start_read, 1e-6)
                self._line(f"read {data['items']:,} items from the store, {rate:,.0f} items/s")

    def _status(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-6)
        rate = self.done_items / elapsed
        left_s = self.quota.eta(now, elapsed, self.done_items, self.total_items,
                                self.total_batches - self.done_batches)
        eta = f", ETA {left_s:,.0f} s" if left_s else ""
        return (f"sent {self.done_batches:,}/{self.total_batches:,} batches "
                f"({self.done_items:,}/{self.total_items:,} items), {rate:,.0f} items/s{eta}")

    def _line(self, text: str) -> None:
        from invsync.terminal import clean

        self.stream.write(f"{timestamp()} invsync: {clean(text)}\n")
        self.stream.flush()


class RichProgress:
    """A rich progress bar (items, batches, rate, ETA) while batches are sent."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        # Items/s is shown in the description (rich's TransferSpeedColumn counts bytes).
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[batches]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"), console=Console(stderr=True), transient=True)
        del TimeRemainingColumn  # its ETA knows nothing of the store's rate-limit windows
        self.quota = QuotaEta()
        self._task: Any = None
        self._read: Any = None
        self._start = 0.0
        self._batches = (0, 0)

    def __call__(self, name: str, data: dict[str, Any]) -> None:
        self.quota.on_event(name, data)
        if name == "rate_limit_wait" and self._task is not None:
            self._progress.update(self._task, description=waiting_text(float(data["wait_s"])),
                                  eta=self._eta())
        elif name == "lock_wait":
            holder = data.get("holder") or {}
            self._progress.console.print(
                f"waiting up to {data.get('wait_s', 0):g} s for the lock held by run "
                f"{holder.get('run_id', '?')}")
        elif name == "read_started":
            self._progress.start()
            self._read = self._progress.add_task("reading live levels", total=None,
                                                 batches="", rate="", eta="")
        elif name in ("read_page", "read_finished") and self._read is not None:
            self._progress.update(self._read, completed=int(data["items"]),
                                  rate=f"{data['items']:,} items")
            if name == "read_finished":
                self._progress.stop()
                self._read = None
        elif name == "submit_started":
            self._progress.start()
            self._start = time.monotonic()
            self._batches = (0, int(data["batches"]))
            self._task = self._progress.add_task("sending items", total=int(data["items"]),
                                                 batches=f"0/{data['batches']} batches",
                                                 rate="", eta="")
        elif name == "batch" and self._task is not None:
            done = self._batches[0] + 1
            self._batches = (done, self._batches[1])
            self._progress.advance(self._task, int(data.get("items", 0)))
            completed = self._sending().completed
            rate = completed / max(time.monotonic() - self._start, 1e-6)
            self._progress.update(self._task, batches=f"{done}/{self._batches[1]} batches",
                                  rate=f"{rate:,.0f} items/s", description="sending items",
                                  eta=self._eta())
        elif name == "run_finished" and self._task is not None:
            self._progress.stop()
            self._task = None


    def _sending(self) -> Any:
        return next(t for t in self._progress.tasks if t.id == self._task)

    def _eta(self) -> str:
        """``ETA 0:01:15``, counting the rate-limit windows still to come."""
        import datetime

        if self._task is None:
            return ""
        now = time.monotonic()
        task = self._sending()
        left = self.quota.eta(now, now - self._start, int(task.completed), int(task.total or 0),
                              self._batches[1] - self._batches[0])
        return "" if left is None else f"ETA {datetime.timedelta(seconds=round(left))}"


def make_event_sink(log_format: str, quiet: bool) -> Any:
    """The event handler for the chosen output: json, rich bar, plain lines or nothing."""
    if log_format == "json":
        return JsonEvents()
    if quiet:
        return None
    if sys.stderr.isatty():
        return RichProgress()
    return PlainProgress()


def current_run() -> dict[str, str]:
    """The run the JSON lines are about so far (``{"run_id": ...}``, or empty)."""
    return dict(_current_run)
