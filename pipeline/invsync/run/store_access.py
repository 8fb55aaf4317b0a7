"""A run's way to the store: clients and blocking reads built from the run's settings.

The store layer (``invsync.store``) knows nothing of settings; this module turns
:class:`~invsync.run.config.Settings` into a :class:`~invsync.store.client.StoreClient` and
wraps the store's async reads for the run's synchronous steps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import polars as pl

from invsync.errors import StoreError, UsageError
from invsync.events import Observer
from invsync.run.config import Settings
from invsync.tables import KEY, Location

if TYPE_CHECKING:  # the HTTP client and the loop: imported when a run talks to the store
    import asyncio

    from invsync.store.client import StoreClient
    from invsync.store.identity import Fetch
    from invsync.store.live import Comparison

T = TypeVar("T")


def _in_thread(work: Callable[[], T]) -> Future[T]:
    """``work()`` in a daemon thread of its own (never waited for at exit); its future."""
    future: Future[T] = Future()

    def target() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to whoever asks for the result
                future.set_exception(exc)

    threading.Thread(target=target, name="invsync-client", daemon=True).start()
    return future


def store_client(settings: Settings, emit: Observer | None = None) -> StoreClient:
    """A client for the store in ``settings``; its retries are reported as ``retry`` events."""
    from invsync.store.client import StoreClient

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

    try:
        return StoreClient(settings.api_url, settings.store_hash or "", settings.token,
                           concurrency=settings.concurrency, retry=settings.retry,
                           verify_tls=settings.verify_tls, on_retry=on_retry,
                           on_rate_wait=on_rate_wait, quota_share=settings.quota_share)
    except (OSError, ValueError, ImportError) as exc:  # this machine's TLS or proxy setup
        raise StoreError(_client_failed(exc)) from None


def _client_failed(exc: Exception) -> str:
    """One line for a client that could not be made: what in the environment is wrong."""
    import os

    if isinstance(exc, OSError):  # ssl.SSLError is one too
        where = ", ".join(f"{name}={os.environ[name]}" for name in
                          ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(name))
        return (f"cannot connect to the store: the TLS certificates could not be loaded "
                f"({where or 'the system CA bundle'}: {exc.strerror or exc}); point "
                f"SSL_CERT_FILE at a PEM bundle, or unset it")
    return (f"cannot connect to the store: the proxy settings (HTTP_PROXY, HTTPS_PROXY, "
            f"ALL_PROXY) cannot be used: {exc}")


def _warm_client(settings: Settings, emit: Observer | None) -> StoreClient:
    """The run's client, made in a worker thread: the HTTP stack's imports (httpx,
    httpcore, anyio's asyncio backend: ~0.1 s, all of it Python) are done before the
    first request instead of on its way."""
    client = store_client(settings, emit)
    import anyio._backends._asyncio  # noqa: F401  (httpcore's first connection needs it)
    import httpcore._backends.anyio  # noqa: F401

    return client


L = TypeVar("L")


class _Held(Generic[T]):
    """A task's result under a constant repr.

    :class:`asyncio.Runner` looks its SIGINT handler (a partial holding the main task) up
    with ``signal.getsignal`` once the task is done; that lookup formats the handler's repr
    and so the task's and its result's: a submit result of every item took a tenth of a
    run's tail to format for nothing.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<held result>"


async def _held(work: Coroutine[Any, Any, T]) -> _Held[T]:
    return _Held(await work)


async def _beside(mine: asyncio.Future[L], work: Coroutine[Any, Any, T]
                  ) -> tuple[L, asyncio.Future[T]]:
    """``mine``'s result, ``work`` run meanwhile (cancelled if ``mine`` fails first) and
    its future, done."""
    import asyncio
    import contextlib

    remote = asyncio.ensure_future(work)
    try:
        await asyncio.wait((mine, remote), return_when=asyncio.FIRST_COMPLETED)
        value = await mine  # its error first, whatever the store said
        await asyncio.wait((remote,))  # its error stays in it, for the caller to raise
    except BaseException:
        remote.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await remote
        raise
    return value, remote


class StoreSession:
    """A run's one event loop and one :class:`StoreClient`, for its synchronous stages.

    Every read and write of a run goes through one session, so the connection pool and the
    rate limiter (what the store said about the quota) carry from one step to the next::

        with StoreSession(settings, emit) as store:
            locations = store.locations()
            result = store.run(lambda client: submit(client, batches))

    The loop is an :class:`asyncio.Runner`: SIGINT cancels the running requests, then
    raises :class:`KeyboardInterrupt`, as ``asyncio.run`` does. The client is made on first
    use, so a session that never talks to the store needs no token; with ``warm`` (and a
    token) it is made at once in a worker thread, while the caller goes on.
    """

    def __init__(self, settings: Settings, emit: Observer | None = None, *,
                 warm: bool = False) -> None:
        self.settings = settings
        self.emit = emit
        self._runner: asyncio.Runner | None = None  # made on first use (a dry run needs none)
        self._closed = False
        self._client: StoreClient | None = None
        self._warming: Future[StoreClient] | None = None
        if warm and settings.token is not None:
            self._warming = _in_thread(lambda: _warm_client(settings, emit))
        self._ahead = self._warming
        """The client being made ahead, still there once taken (for :meth:`wait_made`)."""

    def __enter__(self) -> StoreSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client and the loop (idempotent)."""
        try:
            if self._client is not None:
                client, self._client = self._client, None
                self._loop().run(client.__aexit__(None, None, None))
        finally:
            self._closed = True
            if self._runner is not None:
                self._runner.close()

    @property
    def making(self) -> bool:
        """Whether a client is being made ahead (in a worker thread) and not yet taken."""
        return self._warming is not None

    def wait_made(self, timeout_s: float = 10.0) -> None:
        """Wait (at most ``timeout_s``) until the client made ahead is made, if one is
        being made; from any thread."""
        # Not ``_warming``: the run may have taken it already and be waiting for it itself.
        ahead = self._ahead
        if ahead is not None:
            futures_wait([ahead], timeout=timeout_s)

    def _warmed(self) -> StoreClient | None:
        """The client made ahead (None when none was, or making it failed: it is then made
        here again, and fails with its own error)."""
        warming, self._warming = self._warming, None
        if warming is None:
            return None
        try:
            return warming.result()
        except Exception:
            return None

    def _loop(self) -> asyncio.Runner:
        if self._runner is None:
            if self._closed:
                raise RuntimeError("Runner is closed")
            import asyncio

            self._runner = asyncio.Runner()
        return self._runner

    @property
    def requests_sent(self) -> int:
        """Requests the run's client has sent so far (reads and writes)."""
        return self._client.requests_sent if self._client is not None else 0

    def _made(self) -> StoreClient:
        """The session's one client (made now unless made already or ahead)."""
        if self._client is None:
            self._client = self._warmed() or store_client(self.settings, self.emit)
        return self._client

    def run(self, work: Callable[[StoreClient], Coroutine[Any, Any, T]]) -> T:
        """Run ``work(client)`` on the session's loop with its one client; block until done."""
        client = self._made()
        return self._loop().run(_held(work(client))).value

    def locations(self) -> list[Location]:
        """The store's locations."""
        return self.run(lambda client: client.get_locations())

    def locations_beside(self, local: Callable[[], L], *,
                         interrupted: Callable[[L], None] | None = None
                         ) -> tuple[L, asyncio.Future[list[Location]]]:
        """``local()`` (reading the file) in a worker thread while the store's locations
        are read; see :meth:`run_beside`."""
        return self.run_beside(local, lambda client: client.get_locations(),
                               interrupted=interrupted)

    def run_beside(self, local: Callable[[], L],
                   work: Callable[[StoreClient], Coroutine[Any, Any, T]], *,
                   interrupted: Callable[[L], None] | None = None
                   ) -> tuple[L, asyncio.Future[T]]:
        """Run ``local()`` in a worker thread while the client is made and ``work(client)``
        runs on the session's loop; return ``local``'s result and ``work``'s finished
        future (its ``result()`` raises ``work``'s error).

        ``local``'s error is raised as soon as ``local`` fails, ``work`` cancelled or never
        started (a bad file is not held up by a slow store). Interrupted (SIGINT),
        ``local`` is not waited for, so it must not change what the caller reports; if it
        had already finished, ``interrupted`` is called with its result (in this thread)
        before the interruption goes on.
        """
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invsync-local")
        running = pool.submit(local)  # under way while the client is made
        try:
            try:
                self._made()
            except Exception:
                running.result()  # a bad file is told first (exit 65), not the client's error
                raise

            async def both(client: StoreClient) -> tuple[L, asyncio.Future[T]]:
                if running.done() and running.exception() is not None:
                    running.result()  # it failed while the client was made: nothing is sent
                return await _beside(asyncio.wrap_future(running), work(client))

            return self.run(both)
        except KeyboardInterrupt:
            # Finished or not at this instant: a read still under way counts as not read.
            if interrupted is not None and running.done() and not running.cancelled() \
                    and running.exception() is None:
                interrupted(running.result())
            raise
        finally:
            pool.shutdown(wait=False)

    def live_levels(self, location_ids: Iterable[int], *, keys: pl.DataFrame | None = None,
                    known_items: int = 0) -> pl.DataFrame:
        """The live levels at ``location_ids``: of the items ``keys`` names only (filtered
        reads) when that takes fewer requests than reading all (see :func:`read_levels`)."""
        from invsync.store.live import read_levels

        ids = list(location_ids)
        return self.run(lambda client: read_levels(client, ids, self.emit, keys=keys,
                                                   known_items=known_items))

    def stocked_at_least(self, location_id: int, needed: int) -> int:
        """Items holding stock at ``location_id``, read until ``needed`` are seen (see
        :func:`invsync.store.live.stocked_at_least`)."""
        from invsync.store.live import stocked_at_least

        return self.run(lambda client: stocked_at_least(client, location_id, needed))

    def fetcher(self) -> Fetch:
        """Reads identities through this session, for :class:`IdentityResolver`."""

        from invsync.store.identity import read_identities

        def fetch(ids: dict[str, list[int]]) -> tuple[list[dict[str, Any]], int]:
            before = self.requests_sent
            found = self.run(lambda client: read_identities(client, ids))
            requests = self.requests_sent - before
            if self.emit:
                self.emit("identities", {"asked": sum(len(v) for v in ids.values()),
                                         "found": len(found), "requests": requests})
            return found, requests

        return fetch


def live_levels(settings: Settings, location_ids: Iterable[int],
                emit: Observer | None = None, *, keys: pl.DataFrame | None = None,
                known_items: int = 0) -> pl.DataFrame:
    """Read the live levels once (a session of its own); see :meth:`StoreSession.live_levels`."""
    with StoreSession(settings, emit) as store:
        return store.live_levels(location_ids, keys=keys, known_items=known_items)


def known_items(snapshot: pl.DataFrame) -> int:
    """Items a snapshot knows (one per key, whatever the locations): a lower bound on the
    catalog that lets a live read choose between filtered and full reads without asking."""
    return snapshot.select("identifier", "item_key").n_unique() if snapshot.height else 0


def verify_levels(settings: Settings, expected: pl.DataFrame, *, timeout_s: float = 30.0,
                  interval_s: float = 2.0, emit: Observer | None = None,
                  catalog_hint: int = 0) -> Comparison:
    """Compare ``expected`` with the store, then re-read only the items that differ for a
    while (writes land asynchronously): the items that matched are not read again.

    Every read goes through one session: one loop, one client, one quota budget.
    """
    from invsync.store.live import Comparison, compare

    started = time.monotonic()
    locations = expected["location_id"].unique().to_list()
    with StoreSession(settings, emit) as store:
        found = compare(expected, store.live_levels(locations, keys=expected,
                                                    known_items=catalog_hint))
        reads = 1
        while found.differences.height and \
                time.monotonic() - started + interval_s <= timeout_s:
            if emit:
                emit("verify_retry", {"differences": found.differences.height,
                                      "read": reads})
            time.sleep(interval_s)
            keys = found.differences.select(KEY)
            again = store.live_levels(keys["location_id"].unique().to_list(), keys=keys,
                                      known_items=catalog_hint)
            still = compare(expected.join(keys, on=KEY, how="semi"), again).differences
            reads += 1
            found = Comparison(expected=expected.height,
                               matched=expected.height - still.height, differences=still)
    found.reads, found.seconds = reads, time.monotonic() - started
    return found
