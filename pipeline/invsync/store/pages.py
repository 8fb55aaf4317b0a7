"""Paged reads with a few pages out at once: a listing's time is its pages' round trips.

Once the first page of ``GET /inventory/items`` tells how many pages there are, the next
ones are asked for together, at most :data:`READS_IN_FLIGHT` at a time, and handed over in
page order while the following ones are still on their way. BigCommerce's "one request in
flight" advice is about writes; reads only count against the quota, which the client's
rate limiter shares between them as it does for every request.

The store's pagination is a hint, not a promise: the pages read are capped by what its
``total`` makes plausible and by the client's ``max_pages``; a page that repeats the one
before, or an empty page while entries are still missing, fails the read. Every paged read
goes through :class:`Listing` (the client's own listings, such as the locations, too), so a
page's shape is checked in one place: :func:`json_page`, or a parser built on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from invsync.errors import StoreError
from invsync.redact import redact
from invsync.store.limits import MAX_PAGE_SIZE

if TYPE_CHECKING:
    from invsync.store.client import StoreClient

READS_IN_FLIGHT = 4
"""GET requests out at once in one listing (or over a run's filtered reads)."""

T = TypeVar("T")
E = TypeVar("E")


@dataclass
class Page(Generic[E]):
    """One page of a listing: what the parser made of its entries, and what the page
    says of the whole listing."""

    number: int
    entries: E
    count: int
    """Entries on the page."""
    total: int | None
    total_pages: int | None


class NotJson(StoreError):
    """A page whose body is not JSON at all (an HTML maintenance page, a proxy's error)."""


Parser = Callable[[bytes, int, str], Page[E]]
"""Turns a page's body, its number and what was asked (``GET /path``, for messages) into
a :class:`Page`; :class:`StoreError` when the answer is not a page of entries."""


def json_page(body: bytes, number: int, what: str) -> Page[list[dict[str, Any]]]:
    """A page's entries as JSON objects."""
    from invsync.store.client import whole_number

    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise NotJson(f"{what}: the store's page {number} is not JSON") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise StoreError(f"{what}: the store's page {number} is not a list of entries")
    meta = payload.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    if not isinstance(pagination, dict):
        pagination = {}
    try:
        total_pages = whole_number(pagination["total_pages"]) \
            if "total_pages" in pagination else None
        total = whole_number(pagination["total"]) if "total" in pagination else None
    except (TypeError, ValueError):
        raise StoreError(f"{what}: page {number} has no usable pagination") from None
    return Page(number, data, len(data), total, total_pages)


class Listing(Generic[E]):
    """A paged ``GET`` listing: :meth:`first` reads page 1 (and tells the total);
    :meth:`pages` yields every page's entries in order, the later pages read
    ``in_flight`` at a time. Each page's body is parsed by ``parse`` in a worker thread
    (a parser that releases the GIL works while the next pages arrive)."""

    def __init__(self, client: StoreClient, path: str, params: dict[str, str],
                 parse: Parser[E], *, in_flight: int = READS_IN_FLIGHT) -> None:
        self.client, self.path, self.params, self.parse = client, path, params, parse
        self.in_flight = max(1, in_flight)
        self._first: Page[E] | None = None

    async def first(self) -> Page[E]:
        """Page 1 (read once)."""
        if self._first is None:
            self._first = await self._page(1)
        return self._first

    async def _page(self, number: int) -> Page[E]:
        body, kind = await self.client.get_answer(
            self.path, {**self.params, "page": str(number), "limit": str(MAX_PAGE_SIZE)})
        try:
            return await asyncio.to_thread(self.parse, body, number, f"GET {self.path}")
        except NotJson as exc:  # what the store sent instead says most (text/html)
            if "json" in kind.lower():
                raise
            raise StoreError(f"{exc} ({redact(kind or 'no content type')[:60]})") from None

    async def pages(self) -> AsyncGenerator[Page[E], None]:
        """Every page, in page order."""
        first = await self.first()
        last = self._plan(first)
        if last is None:  # no page count given: one page after the other
            async for data in self._one_by_one(first):
                yield data
            return
        check = _Checks(f"GET {self.path}", first.total)
        if not check.page(first):
            return
        yield first
        async with _Ahead(self.in_flight) as ahead:
            for number in range(2, last + 1):
                ahead.start(partial(self._page, number))
            async for page in ahead.results():
                if not check.page(page):
                    return
                yield page

    def _plan(self, first: Page[E]) -> int | None:
        """The last page to read (None: one page after the other, when the store gives no
        page count or an implausible one without a total); fails at once on a page count
        ``total`` makes implausible."""
        if first.total_pages is None or not first.count:
            return None
        cap = self.client.max_pages
        if first.total is not None:
            cap = min(cap, max(1, math.ceil(first.total / first.count)))
        if first.total_pages > cap and first.total is None:
            return None  # one page after the other: a repeated page or the cap stops it
        if first.total_pages > cap:
            raise StoreError(
                f"GET {self.path}: the store claims {first.total_pages} pages, more than "
                f"plausible ({cap:,}"
                + (f" for {first.total:,} entries at {first.count:,} a page"
                   if first.total is not None else "")
                + f"); stopped after 1 page and {first.count:,} entries")
        return first.total_pages

    async def _one_by_one(self, page: Page[E]) -> AsyncGenerator[Page[E], None]:
        """Without a page count, a short page is the last; capped as :meth:`_plan` caps."""
        check = _Checks(f"GET {self.path}", page.total)
        page_size = page.count
        while True:
            if not check.page(page):
                return
            yield page
            page_size = page_size or page.count
            if page.total_pages is not None and page.number >= page.total_pages:
                return
            if page.total_pages is None and page.count < MAX_PAGE_SIZE:
                return
            cap = self.client.max_pages
            if page.total is not None:
                cap = min(cap, max(1, math.ceil(page.total / page_size)))
            if page.number >= cap:
                raise StoreError(
                    f"GET {self.path}: the store claims {page.total_pages or 'more'} pages, "
                    f"more than plausible ({cap:,}); stopped after {page.number:,} pages "
                    f"and {check.read:,} entries")
            page = await self._page(page.number + 1)


class _Checks:
    """What every page must pass, in page order."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what, self.total = what, total
        self.read = 0
        self.previous: Any = None

    def page(self, page: Page[Any]) -> bool:
        """True to take the page; False at an empty page that ends a complete listing."""
        if not page.count:
            if self.total is not None and self.read < self.total:
                raise StoreError(f"{self.what}: page {page.number} is empty although only "
                                 f"{self.read:,} of the {self.total:,} entries the store "
                                 f"lists were read")
            return False
        if self.previous is not None and _same(page.entries, self.previous):
            raise StoreError(f"{self.what}: page {page.number} repeats page {page.number - 1} "
                             f"(the store ignores the page number); stopped after "
                             f"{self.read:,} entries")
        self.previous = page.entries
        self.read += page.count
        return True


def _same(a: Any, b: Any) -> bool:
    """Whether two pages' entries are the same (frames compared as frames)."""
    if hasattr(a, "equals") and hasattr(b, "equals"):
        return bool(a.equals(b))
    return bool(a == b)


class _Ahead:
    """Runs queued coroutines at most ``limit`` at a time and yields their results in the
    order they were queued; whatever is still out is cancelled when the block ends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._queued: list[Callable[[], Awaitable[Any]]] = []
        self._tasks: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> _Ahead:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for task in self._tasks:  # a failure nobody waited for is not left unretrieved
            if task.done() and not task.cancelled():
                task.exception()

    def start(self, work: Callable[[], Awaitable[Any]]) -> None:
        """Queue ``work`` (started once fewer than ``limit`` are out ahead of the reader)."""
        self._queued.append(work)

    def _top_up(self, upto: int) -> None:
        while len(self._tasks) < min(upto, len(self._queued)):
            self._tasks.append(asyncio.ensure_future(self._queued[len(self._tasks)]()))

    async def results(self) -> AsyncGenerator[Any, None]:
        """Each queued work's result, in queue order."""
        for i in range(len(self._queued)):
            self._top_up(i + self.limit)
            result = await self._tasks[i]
            self._top_up(i + 1 + self.limit)  # the next stays out while this one is used
            yield result


async def gather_in_order(works: Sequence[Callable[[], Awaitable[T]]],
                          limit: int = READS_IN_FLIGHT) -> AsyncGenerator[T, None]:
    """Each of ``works``' results in order, at most ``limit`` running at once."""
    async with _Ahead(limit) as ahead:
        for work in works:
            ahead.start(work)
        async for result in ahead.results():
            yield result
