"""Live reads with a few pages out at once (issue 26): the pages after the first are asked
for together once page 1 tells how many there are, parsed off the event loop, and still
checked as the one-page-after-the-other read checks them (an implausible page count, a
repeated page, an empty page while entries are missing). Against MockTransport stores.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import httpx
import polars as pl
import pytest

from invsync.errors import AuthError, StoreError
from invsync.redact import Secret
from invsync.store.client import StoreClient
from invsync.store.limits import RetryPolicy
from invsync.store.live import (
    RAW_SCHEMA,
    _fast_levels_page,
    _slow_levels,
    filter_floor,
    levels_page,
    read_filters,
    read_levels,
)
from invsync.store.pages import READS_IN_FLIGHT, gather_in_order

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01, max_total_s=30)
AsyncHandler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


def client(handler: AsyncHandler, **kwargs: Any) -> StoreClient:
    return StoreClient("http://store.test", "abc123", Secret("tok-unit-pages"),
                       transport=httpx.MockTransport(handler), retry=FAST, seed=1, **kwargs)


def entry(n: int, locations: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    return {"identity": {"sku": f"S{n}", "variant_id": 1000 + n, "product_id": 5000 + n,
                         "sku_id": None},
            "locations": [{"location_id": loc, "location_code": f"L{loc}",
                           "total_inventory_onhand": n * 10 + loc, "available_to_sell": 0,
                           "settings": {"safety_stock": 0}} for loc in locations]}


class Store:
    """Pages of ``items`` entries, 1000 a page; counts requests and the most in flight."""

    def __init__(self, items: int, *, delay_s: float = 0.02,
                 page: Callable[[int, list[dict[str, Any]]], Any] | None = None) -> None:
        self.items, self.delay_s, self.page = items, delay_s, page
        self.calls: list[int] = []
        self.in_flight = self.most = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        self.calls.append(number)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        data = [entry(n) for n in range((number - 1) * 1000, min(number * 1000, self.items))]
        body = {"data": data, "meta": {"pagination": {
            "total": self.items, "total_pages": -(-self.items // 1000), "per_page": 1000,
            "current_page": number}}}
        if self.page is not None:
            body = self.page(number, data)
        return httpx.Response(200, json=body)


def read(store: Store, locations: tuple[int, ...] = (1, 2), **kwargs: Any) -> pl.DataFrame:
    async def go() -> pl.DataFrame:
        async with client(store) as c:
            return await read_levels(c, locations, **kwargs)

    return asyncio.run(go())


def test_every_page_is_read_once_with_at_most_four_out_at_once() -> None:
    store = Store(9_500)
    levels = read(store)
    assert sorted(store.calls) == list(range(1, 11))  # 10 pages, each once
    assert store.calls[0] == 1  # page 1 alone first: it tells how many there are
    assert 2 <= store.most <= READS_IN_FLIGHT
    by_sku = levels.filter(pl.col("identifier") == "sku")
    assert by_sku.height == 9_500 * 2
    expected = {(loc, f"S{n}"): n * 10 + loc for n in range(9_500) for loc in (1, 2)}
    assert {(r[0], r[2]): r[3] for r in by_sku.iter_rows()} == expected


def test_only_the_wanted_locations_are_kept() -> None:
    levels = read(Store(1_500), locations=(2,))
    assert set(levels["location_id"].to_list()) == {2}
    assert levels.filter(pl.col("identifier") == "variant_id").height == 1_500


def test_an_implausible_page_count_fails_after_page_one() -> None:
    def page(number: int, data: list[dict[str, Any]]) -> Any:
        return {"data": [entry(number * 1000 + i) for i in range(1000)],
                "meta": {"pagination": {"total": 3000, "total_pages": 59766830}}}

    store = Store(3000, page=page)
    with pytest.raises(StoreError, match=r"claims 59766830 pages, more than plausible \(3 "):
        read(store)
    assert store.calls == [1]


def test_a_repeated_page_fails_clearly() -> None:
    store = Store(3000, page=lambda number, data: {
        "data": [entry(i) for i in range(1000)],
        "meta": {"pagination": {"total": 3000, "total_pages": 3}}})
    with pytest.raises(StoreError, match="page 2 repeats page 1"):
        read(store)


def test_an_empty_page_while_entries_are_missing_fails() -> None:
    store = Store(2500, page=lambda number, data: {
        "data": data if number != 2 else [],
        "meta": {"pagination": {"total": 2500, "total_pages": 3}}})
    with pytest.raises(StoreError, match="page 2 is empty although only 1,000 of the 2,500"):
        read(store)


def test_without_a_page_count_pages_are_read_one_after_the_other_until_a_short_one() -> None:
    store = Store(2300, page=lambda number, data: {"data": data})
    levels = read(store)
    assert store.calls == [1, 2, 3] and store.most == 1
    assert levels.filter(pl.col("identifier") == "sku").height == 4600


def test_a_failing_page_fails_the_read_and_leaves_nothing_running() -> None:
    pending: list[asyncio.Task[Any]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        if number == 3:
            return httpx.Response(401)
        await asyncio.sleep(0.01 if number < 3 else 5)
        return httpx.Response(200, json={"data": [entry(number * 1000 + i) for i in range(1000)],
                                         "meta": {"pagination": {"total": 8000,
                                                                 "total_pages": 8}}})

    async def go() -> None:
        async with client(handler) as c:
            try:
                await read_levels(c, [1])
            finally:
                pending.extend(t for t in asyncio.all_tasks()
                               if t is not asyncio.current_task())

    with pytest.raises(AuthError):
        asyncio.run(go())
    assert pending == []  # the pages still out were cancelled, not left to run


def test_gather_in_order_keeps_the_order_and_the_bound() -> None:
    running = {"now": 0, "most": 0}

    async def work(i: int) -> int:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
        await asyncio.sleep(0.001 * (7 - i % 7))  # later ones often finish first
        running["now"] -= 1
        return i

    async def go() -> list[int]:
        works = [partial(work, i) for i in range(30)]
        return [r async for r in gather_in_order(works, limit=3)]

    assert asyncio.run(go()) == list(range(30))
    assert running["most"] == 3


# ---- the fast page parser and the slow one agree --------------------------------------


def page_body(entries: list[Any], **pagination: Any) -> bytes:
    return json.dumps({"data": entries, "meta": {"pagination": pagination}}).encode()


def both(body: bytes, wanted: frozenset[int] = frozenset({1, 2})) -> pl.DataFrame:
    """``levels_page`` of ``body``, checked against the entry-by-entry reading."""
    page = levels_page(body, 1, "GET /inventory/items", wanted=wanted)
    slow = _slow_levels(json.loads(body)["data"], wanted, "GET /inventory/items", 1)
    assert page.entries.schema == pl.Schema(RAW_SCHEMA)
    assert page.entries.equals(slow), (page.entries, slow)
    return page.entries


def fast(body: bytes, wanted: frozenset[int] = frozenset({1, 2})) -> bool:
    """Whether polars read the page (no Python object per entry)."""
    try:
        _fast_levels_page(body, 1, wanted)
    except (pl.exceptions.PolarsError, ValueError):
        return False
    return True


def test_a_plain_store_page_is_read_by_polars() -> None:
    body = page_body([entry(n) for n in range(1000)], total=5000, total_pages=5)
    assert fast(body)
    frame = both(body)
    assert frame.height == 2000
    page = levels_page(body, 3, "GET /inventory/items", wanted=frozenset({1, 2}))
    assert (page.number, page.count, page.total, page.total_pages) == (3, 1000, 5000, 5)


def test_random_pages_read_alike_by_both_parsers() -> None:
    rng = random.Random(26)
    ways = {True: 0, False: 0}
    for _ in range(80):
        entries = []
        for n in range(rng.randrange(0, 40)):
            ident: dict[str, Any] = {}
            for key, value in (("sku", rng.choice([f"S{n}", f"é-{n}", "", None, n])),
                               ("variant_id", rng.choice([n, None, float(n), str(n)])),
                               ("product_id", rng.choice([n + 7, None]))):
                if rng.random() < 0.9:
                    ident[key] = value
            levels = [{"location_id": rng.choice([1, 2, 3, "2", 1.0]),
                       "total_inventory_onhand": rng.choice([0, 5, 2**40, "7", 3.0, 4, " 8 "]),
                       "extra": {"nested": [1, 2]}} for _ in range(rng.randrange(0, 3))]
            e: dict[str, Any] = {"locations": levels, "identity": ident}
            if rng.random() < 0.5:
                e = dict(reversed(list(e.items())))  # key order is not fixed
            entries.append(e)
        body = page_body(entries, total=len(entries), total_pages=1)
        ways[fast(body)] += 1
        both(body)
    assert ways[True] >= 10 and ways[False] >= 10, ways  # both readings were exercised


@pytest.mark.parametrize("level", [
    {"location_id": 1, "total_inventory_onhand": 12.5},
    {"location_id": 1, "total_inventory_onhand": True},
    {"location_id": 1, "total_inventory_onhand": None},
    {"location_id": 1},
    {"location_id": "one", "total_inventory_onhand": 1},
    {"location_id": 1, "total_inventory_onhand": [1]},
    None,
])
def test_an_unusable_level_is_refused_naming_the_page_and_item(level: Any) -> None:
    body = page_body([entry(0), {"identity": {"sku": "B"}, "locations": [level]}],
                     total=2, total_pages=1)
    with pytest.raises(StoreError, match=r"without a usable identity.*\(page 1, item 2\)"):
        levels_page(body, 1, "GET /inventory/items", wanted=frozenset({1}))


def test_text_numbers_are_read_as_the_slow_reading_reads_them() -> None:
    body = page_body([{"identity": {"sku": "A", "variant_id": "77"},
                       "locations": [{"location_id": "1", "total_inventory_onhand": " 12 "}]}],
                     total="1", total_pages=1.0)
    frame = both(body)
    assert frame.to_dicts() == [{"location_id": 1, "sku": "A", "variant_id": 77,
                                 "product_id": None, "quantity": 12}]
    page = levels_page(body, 1, "GET /inventory/items", wanted=frozenset({1}))
    assert (page.total, page.total_pages, page.count) == (1, 1, 1)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"data": {"a": 1}}',
                                  b'{"data": ["x"]}'])
def test_a_page_that_is_not_a_list_of_entries_is_refused(body: bytes) -> None:
    with pytest.raises(StoreError, match="GET /inventory/items: the store's page 4 is not"):
        levels_page(body, 4, "GET /inventory/items", wanted=frozenset({1}))


def test_unusable_pagination_is_refused() -> None:
    with pytest.raises(StoreError, match="page 1 has no usable pagination"):
        levels_page(page_body([entry(1)], total="many"), 1, "GET /inventory/items",
                    wanted=frozenset({1}))


# ---- choosing filtered reads or the full listing --------------------------------------


def keys_frame(rows: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"identifier": pl.String, "item_key": pl.String},
                        orient="row")


def test_the_filter_floor_never_exceeds_the_filtered_reads() -> None:
    rng = random.Random(2026)
    alphabet = "AZaz09-_. é/&,%+"
    for _ in range(200):
        rows = []
        for _ in range(rng.randrange(0, 3000)):
            kind = rng.choice(["sku", "sku", "variant_id", "product_id"])
            if kind == "sku":
                key = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
                key = key.replace(",", "") if rng.random() < 0.95 else key
            else:
                key = rng.choice([str(rng.randrange(10**9)), "007", "x", ""])
            rows.append((kind, key))
        keys = keys_frame(rows)
        filters = read_filters(keys)
        if filters is not None:
            assert filter_floor(keys) <= len(filters)


def test_a_big_file_reads_every_page_without_chunking_its_values(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import invsync.store.live as live

    def chunked(keys: pl.DataFrame) -> Any:
        raise AssertionError("read_filters called although a full read is cheaper")

    monkeypatch.setattr(live, "read_filters", chunked)
    store = Store(3000)
    keys = keys_frame([("sku", f"S{n}") for n in range(3000)])
    levels = read(store, keys=keys, known_items=3000)
    assert sorted(store.calls) == [1, 2, 3]
    assert levels.filter(pl.col("identifier") == "sku").height == 6000


def test_a_few_named_items_are_read_by_filter_in_one_request() -> None:
    def page(number: int, data: list[dict[str, Any]]) -> Any:
        return {"data": [entry(1), entry(2)],
                "meta": {"pagination": {"total": 2, "total_pages": 1}}}

    store = Store(50_000, page=page)
    keys = keys_frame([("sku", "S1"), ("sku", "S2")])
    levels = read(store, keys=keys, known_items=50_000)
    assert store.calls == [1]
    assert sorted(levels.filter(pl.col("identifier") == "sku")["item_key"].to_list()) == [
        "S1", "S1", "S2", "S2"]


def test_an_implausible_page_count_without_a_total_is_read_one_page_after_the_other() -> None:
    def page(number: int, data: list[dict[str, Any]]) -> Any:
        return {"data": [entry(number * 1000 + i) for i in range(1000)],
                "meta": {"pagination": {"total_pages": 59766830}}}

    store = Store(10**9, page=page)
    with pytest.raises(StoreError, match=r"claims 59766830 pages, more than plausible \(5\)"):
        async def go() -> None:
            async with client(store, max_pages=5) as c:
                await read_levels(c, [1])

        asyncio.run(go())
    assert store.calls == [1, 2, 3, 4, 5] and store.most == 1


def test_one_named_item_costs_one_request_even_when_the_catalog_size_is_unknown() -> None:
    def page(number: int, data: list[dict[str, Any]]) -> Any:
        return {"data": [entry(7)], "meta": {"pagination": {"total": 1, "total_pages": 1}}}

    store = Store(50_000, page=page)
    levels = read(store, keys=keys_frame([("sku", "S7")]), known_items=0)
    assert store.calls == [1]  # the filtered read alone, no full page 1 to learn the total
    assert levels.filter(pl.col("identifier") == "sku")["item_key"].to_list() == ["S7", "S7"]
