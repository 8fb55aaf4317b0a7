"""What a run reports while it works: one observer type, one list of event names.

The library never prints; it calls an :class:`Observer` with an event's name and its data,
and the surfaces turn events into a progress bar, plain lines or JSON lines (the names are
those of ``--log-format json``, a documented interface). The names are a ``Literal``, so a
misspelt event is a type error, not a line a log shipper silently never sees.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, get_args

EventName = Literal[
    "run_started",  # a run began (input, dry_run, profile)
    "lock_wait",  # waiting for another run's lock on the store
    "locations",  # the store's locations were read (count)
    "identities",  # item identities were resolved through the store
    "read_started", "read_page", "read_finished",  # live levels being read
    "recovered",  # an interrupted run's confirmed levels were replayed
    "sold_since",  # --as-of: the orders since were read (counts, units, requests)
    "submit_started",  # the batches are about to be sent (batches, items)
    "batch",  # one batch finished (its result, transaction ids)
    "retry",  # a request is retried (status, attempt, wait)
    "rate_limit", "rate_limit_wait",  # the store's quota; a wait for its window
    "verify_retry",  # verify reads again: some writes have not landed yet
    "run_finished",  # the run ended (status, counts, summary line, report folder)
    "notify_failed",  # a webhook could not be delivered (the run's outcome is unchanged)
    "revert_left",  # `revert`: the items it left as they are (changed since, new in the run)
    "error",  # a failure before any run started (bad flags, config, the lock)
    "source_unchanged",  # a source's file is the last successful run's: no run
    "watch_problem",  # `watch`: a file or the source could not be read (it goes on)
    "drift", "verify",  # the CLI's result of `drift` / `verify` (checked, matched, items)
    "doctor",  # `doctor`: one check (check, ok, detail, fix)
]
EVENT_NAMES: tuple[str, ...] = get_args(EventName)


class Observer(Protocol):
    """Receives a run's events: ``observer("batch", {...})``."""

    def __call__(self, name: EventName, data: dict[str, Any], /) -> None: ...


def no_event(name: EventName, data: dict[str, Any], /) -> None:
    """The observer that ignores every event."""
