"""The sandbox's storefront: orders take units off stock as the store's setting says."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from conftest import SAMPLE

from invsync.sandbox.server import SandboxConfig, create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SKU = "TOWEL-907-NAVY-SHEET"
H = {"X-Auth-Token": "sandbox-token", "Accept": "application/json"}


def store(**config: Any) -> TestClient:
    client = TestClient(create_app(SandboxConfig(SAMPLE / "catalog.csv", **config)))
    client.post("/_sandbox/levels", json=[{"location_id": 1, "sku": SKU, "quantity": 10}])
    return client


def level(client: TestClient) -> int:
    return next(lv["quantity"] for lv in client.get("/_sandbox/levels").json()
                if lv["location_id"] == 1 and lv["sku"] == SKU)


def place(client: TestClient, quantity: int = 2, **extra: Any) -> Any:
    return client.post("/_sandbox/orders", json={"items": [{"sku": SKU, "quantity": quantity}],
                                                 **extra})


def status(client: TestClient, order_id: int, status_id: int) -> None:
    assert client.post(f"/_sandbox/orders/{order_id}/status",
                       json={"status_id": status_id}).status_code == 200


def test_order_placed_takes_at_once_and_a_cancel_gives_back() -> None:
    c = store()
    oid = place(c).json()["id"]
    assert level(c) == 8
    status(c, oid, 2)
    assert level(c) == 8
    status(c, oid, 5)
    assert level(c) == 10


def test_completed_or_shipped_takes_when_shipped() -> None:
    c = store(update_stock_behavior="order_completed_or_shipped")
    oid = place(c).json()["id"]
    assert level(c) == 10
    status(c, oid, 9)
    assert level(c) == 10
    status(c, oid, 2)
    assert level(c) == 8
    status(c, oid, 4)
    assert level(c) == 10


def test_without_refund_adjustment_a_refund_keeps_the_units_off_stock() -> None:
    c = store(refund_stock_adjustment=False)
    oid = place(c).json()["id"]
    status(c, oid, 4)
    assert level(c) == 8
    listed = c.get("/stores/sandbox/v3/settings/inventory", headers=H).json()["data"]
    assert listed["refund_order_stock_adjustment"] is False


def test_an_order_beyond_stock_is_refused_and_changes_nothing() -> None:
    c = store()
    r = place(c, quantity=11)
    assert r.status_code == 409 and "not enough stock" in r.json()["error"]
    assert level(c) == 10 and c.get("/_sandbox/orders").json() == []


def test_the_listing_filters_by_creation_time_pages_and_hides_incomplete_orders() -> None:
    c = store()
    for hour in range(1, 5):
        place(c, 1, date_created=f"2026-12-06T0{hour}:00:00+00:00")
    place(c, 1, date_created="2026-12-06T05:00:00Z", status_id=0)
    q = {"min_date_created": "Sun, 06 Dec 2026 02:00:00 +0000", "limit": "2",
         "include": "consignments.line_items", "consignment_structure": "object"}
    first = c.get("/stores/sandbox/v2/orders", params=q, headers=H).json()
    second = c.get("/stores/sandbox/v2/orders", params={**q, "page": "2"}, headers=H).json()
    assert [o["date_created"][17:22] for o in first + second] == ["02:00", "03:00", "04:00"]
    assert first[0]["consignments"]["shipping"][0]["line_items"][0]["sku"] == SKU
    plain = c.get("/stores/sandbox/v2/orders", headers=H).json()
    assert "consignments" not in plain[0]


@pytest.mark.parametrize(("path", "code"), [("/stores/sandbox/v2/orders", 403),
                                            ("/stores/sandbox/v3/settings/inventory", 200)])
def test_no_orders_scope(path: str, code: int) -> None:
    c = store(orders_scope=False)
    assert c.get(path, headers=H).status_code == code


def test_order_reads_need_the_token_and_count_against_the_quota() -> None:
    c = store(quota=1)
    assert c.get("/stores/sandbox/v2/orders").status_code == 401
    r = c.get("/stores/sandbox/v2/orders", headers=H)
    assert r.status_code == 429 and "x-rate-limit-requests-left" in r.headers
