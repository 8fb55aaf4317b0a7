"""The store's hard limits and how long invsync keeps trying: no heavy imports here."""

from __future__ import annotations

import random
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

MAX_ITEMS_PER_REQUEST = 2000
"""Items in one absolute adjustment request."""
MAX_PAGE_SIZE = 1000
"""Entries in one page of an inventory or locations listing."""
MAX_PAGES = 10_000
"""Pages one listing may take (10 million entries), whatever the store says it has."""


DEFAULT_QUOTA_SHARE = 0.8
"""The share of each rate-limit window's requests invsync uses by default: the quota is
the store's, shared by every app on it, and a polite bulk job leaves some of it."""


def reserved_requests(quota: int | None, share: float) -> int:
    """Requests of each window of ``quota`` left to the store's other apps when invsync
    uses at most ``share`` of it (at least one request always remains invsync's)."""
    if quota is None or quota <= 0 or share >= 1:
        return 0
    usable = max(1, int(quota * share))
    return quota - usable


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying a request: bounded in attempts and in total time.

    ``max_total_s`` bounds each request and the run as a whole: once the store has given
    no answer that moves the run on (a 2xx or a 422) for that long, every request gives up.
    """

    max_attempts: int = 10
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_total_s: float = 300.0
    timeout_s: float = 60.0
    """One attempt, from sending to the last byte of the answer."""
    max_wait_s: float = 60.0
    """The longest wait the store may ask for (``X-Retry-After``, a quota window reset)."""

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential delay before retry number ``attempt`` (1-based)."""
        return rng.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class EncodedItems:
    """A request's ``items`` array already serialised as JSON (``[{...},...]``)."""

    json: bytes
    count: int

    def __len__(self) -> int:
        return self.count


WRITTEN_OUT: ContextVar[Callable[[], None] | None] = ContextVar("invsync_written_out",
                                                                default=None)
"""Called by the client, in the task that sends, once a request is written out in full
(then only its answer is awaited): the sender builds the next body from then on, not while
this one is being written (the two would share the GIL)."""
