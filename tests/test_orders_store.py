"""The order reads against stores that misbehave (an in-process transport, no network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from invsync.errors import AuthError, StoreError
from invsync.store.client import StoreClient
from invsync.store.limits import RetryPolicy
from invsync.store.orders import ORDERS_PAGE, SoldSince, read_sold_since

AS_OF = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)
SETTINGS = {"data": {"update_stock_behavior": "order_placed",
                     "refund_order_stock_adjustment": True}, "meta": {}}


def order(order_id: int, *, created: str = "Sun, 06 Dec 2026 03:00:00 +0000",
          status: int = 11, sku: str = "A", quantity: int = 2) -> dict[str, Any]:
    line = {"id": order_id, "order_id": order_id, "product_id": 5, "variant_id": 7,
            "sku": sku, "quantity": quantity, "quantity_refunded": 0}
    return {"id": order_id, "status_id": status, "date_created": created, "date_shipped": "",
            "consignments": {"pickups": [], "downloads": [], "email": {"gift_certificates": []},
                             "shipping": [{"id": 1, "line_items": [line]}]}}


def read(handler: Callable[[httpx.Request], httpx.Response]) -> SoldSince:
    async def go() -> SoldSince:
        client = StoreClient("http://store.test", "s", "token",
                             transport=httpx.MockTransport(handler),
                             retry=RetryPolicy(max_attempts=2, base_delay_s=0.01,
                                               max_delay_s=0.01, max_total_s=5, timeout_s=5))
        async with client:
            return await read_sold_since(client, AS_OF)
    return asyncio.run(go())


def store(pages: Callable[[int], Any], *, settings: Any = SETTINGS,
          orders_status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/stores/s/v3/settings/inventory":
            return httpx.Response(200, json=settings)
        assert path == "/stores/s/v2/orders", path
        if orders_status != 200:
            return httpx.Response(orders_status, json=[{"status": orders_status,
                                                        "message": "no"}])
        q = request.url.params
        assert q["min_date_created"] == "2026-12-06T02:00:00+00:00"
        assert q["include"] == "consignments.line_items"
        body = pages(int(q["page"]))
        if body is None:
            return httpx.Response(204)
        return httpx.Response(200, content=json.dumps(body).encode(),
                              headers={"content-type": "application/json"})
    return handler


def test_pages_are_read_until_a_short_one_and_lines_are_counted() -> None:
    full = [order(i) for i in range(1, ORDERS_PAGE + 1)]
    sold = read(store(lambda page: full if page == 1 else [order(999, status=5)]))
    assert sold.orders_read == ORDERS_PAGE + 1 and sold.orders_counted == ORDERS_PAGE
    assert sold.lines["units"].sum() == 2 * ORDERS_PAGE and sold.requests == 3


def test_no_content_means_no_orders() -> None:
    sold = read(store(lambda page: None))
    assert sold.orders_read == 0 and sold.lines.height == 0


def test_a_store_that_ignores_the_page_number_fails_the_read() -> None:
    full = [order(i) for i in range(1, ORDERS_PAGE + 1)]
    with pytest.raises(StoreError, match="repeats page 1"):
        read(store(lambda page: full))


def test_orders_without_their_line_items_fail_the_read() -> None:
    bare = order(1)
    bare["consignments"] = {"url": "https://x/orders/1/consignments", "resource": "/x"}
    with pytest.raises(StoreError, match="without its line items"):
        read(store(lambda page: [bare]))
    linked = order(2)
    linked["consignments"]["shipping"][0]["line_items"] = [{"url": "u", "resource": "/r"}]
    with pytest.raises(StoreError, match="links only"):
        read(store(lambda page: [linked]))


def test_orders_from_before_the_as_of_time_are_not_counted_even_if_listed() -> None:
    early = order(1, created="Sun, 06 Dec 2026 01:59:59 +0000", quantity=5)
    sold = read(store(lambda page: [early, order(2)]))
    assert sold.orders_read == 1 and sold.lines["units"].to_list() == [2]
    assert any("before the as-of time" in n for n in sold.notes)


def test_a_403_names_the_orders_scope() -> None:
    with pytest.raises(AuthError, match="store_v2_orders_read_only"):
        read(store(lambda page: [], orders_status=403))


@pytest.mark.parametrize("settings", [{"data": {}}, {"data": {"update_stock_behavior": "x"}},
                                      [], {"data": None}])
def test_an_unknown_stock_behaviour_fails_the_read(settings: Any) -> None:
    with pytest.raises(StoreError, match="update_stock_behavior"):
        read(store(lambda page: [], settings=settings))


def test_a_listing_that_is_not_a_list_fails_the_read() -> None:
    with pytest.raises(StoreError, match="not a list of orders"):
        read(store(lambda page: {"data": []}))
