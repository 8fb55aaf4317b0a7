"""A run's way to the store: clients and blocking reads built from the run's settings.

The store layer (``invsync.store``) knows nothing of settings; this module turns
:class:`~invsync.run.config.Settings` into a :class:`~invsync.store.client.StoreClient` and
wraps the store's async reads for the run's synchronous steps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import polars as pl

from invsync.errors import UsageError
from invsync.run.config import Settings
from invsync.store.client import StoreClient
from invsync.store.identity import Fetch, read_identities
from invsync.store.live import Comparison, compare, read_levels

Event = Callable[[str, dict[str, Any]], None]


def store_client(settings: Settings, emit: Event | None = None) -> StoreClient:
    """A client for the store in ``settings``; its retries are reported as ``retry`` events."""
    if settings.token is None:
        raise UsageError("no access token: set BIGCOMMERCE_ACCESS_TOKEN or access_token in "
                         "the config file")

    def on_retry(info: dict[str, Any]) -> None:
        if emit:
            emit("retry", info)

    def on_rate_wait(info: dict[str, Any]) -> None:
        # "rate_limit": the store's quota (once per client); "rate_limit_wait": a wait for it.
        if emit:
            kind = info.pop("kind", "wait")
            emit("rate_limit" if kind == "quota" else "rate_limit_wait", info)

    return StoreClient(settings.api_url, settings.store_hash or "", settings.token,
                       concurrency=settings.concurrency, retry=settings.retry,
                       verify_tls=settings.verify_tls, on_retry=on_retry,
                       on_rate_wait=on_rate_wait)


def live_levels(settings: Settings, location_ids: Iterable[int],
                emit: Event | None = None, *, keys: pl.DataFrame | None = None,
                known_items: int = 0) -> pl.DataFrame:
    """Read the live levels (blocking wrapper around :func:`read_levels`): of the items
    ``keys`` names only (filtered reads) when that takes fewer requests than reading all."""

    async def go() -> pl.DataFrame:
        async with store_client(settings, emit) as client:
            return await read_levels(client, location_ids, emit, keys=keys,
                                     known_items=known_items)

    return asyncio.run(go())


def known_items(snapshot: pl.DataFrame) -> int:
    """Items a snapshot knows (one per key, whatever the locations): a lower bound on the
    catalog that lets a live read choose between filtered and full reads without asking."""
    return snapshot.select("identifier", "item_key").n_unique() if snapshot.height else 0


def verify_levels(settings: Settings, expected: pl.DataFrame, *, timeout_s: float = 30.0,
                  interval_s: float = 2.0, emit: Event | None = None,
                  catalog_hint: int = 0) -> Comparison:
    """Compare ``expected`` with the store, re-reading for a while: writes land asynchronously."""
    started = time.monotonic()
    locations = expected["location_id"].unique().to_list()
    reads = 0
    while True:
        reads += 1
        result = compare(expected, live_levels(settings, locations, emit, keys=expected,
                                               known_items=catalog_hint))
        elapsed = time.monotonic() - started
        if result.differences.height == 0 or elapsed + interval_s > timeout_s:
            result.reads, result.seconds = reads, elapsed
            return result
        if emit:
            emit("verify_retry", {"differences": result.differences.height, "read": reads})
        time.sleep(interval_s)
def store_fetcher(settings: Settings, emit: Event | None = None) -> Fetch:
    """Reads identities from the store (blocking), for :class:`IdentityResolver`."""
    import asyncio

    def fetch(ids: dict[str, list[int]]) -> tuple[list[dict[str, Any]], int]:
        async def go() -> tuple[list[dict[str, Any]], int]:
            async with store_client(settings, emit) as client:
                found = await read_identities(client, ids)
                return found, client.requests_sent

        found, requests = asyncio.run(go())
        if emit:
            emit("identities", {"asked": sum(len(v) for v in ids.values()),
                                "found": len(found),
                                "requests": requests})
        return found, requests

    return fetch
