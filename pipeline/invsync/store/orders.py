"""What sold since the file's as-of time: the store's orders and its stock behaviour.

``GET /v3/settings/inventory`` says when the store takes an order's units off stock
(``update_stock_behavior``: ``order_placed`` or ``order_completed_or_shipped``) and whether
a cancelled or refunded order gives them back (``refund_order_stock_adjustment``).
``GET /v2/orders?min_date_created=WHEN&include=consignments.line_items`` lists the orders
created since WHEN with their line items, one page of 250 after the other (bounded).
:func:`units_taken` decides, per order line, how many units the store holds off stock for
it now; :func:`read_sold_since` returns those lines (scope ``store_v2_orders_read_only``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import polars as pl

from invsync.errors import AuthError, StoreError
from invsync.store.client import StoreClient, whole_number

ORDERS_PAGE = 250
"""Orders per page (the most ``GET /v2/orders`` gives)."""
MAX_ORDER_PAGES = 400
"""At most this many pages (100,000 orders) are read for one run; more fails the run."""
BEHAVIORS = ("order_placed", "order_completed_or_shipped")
INCOMPLETE, SHIPPED, PARTIALLY_SHIPPED, REFUNDED, CANCELLED, DECLINED, COMPLETED = (
    0, 2, 3, 4, 5, 6, 10)
SOLD_SCHEMA = {"order_id": pl.Int64, "sku": pl.String, "product_id": pl.Int64,
               "variant_id": pl.Int64, "units": pl.Int64}
"""One row per order line whose units the store holds off stock."""
ORDERS_SCOPE_HELP = ("the access token cannot read orders (HTTP 403): --as-of needs the "
                     "scope store_v2_orders_read_only (Orders: read-only) on the API account; "
                     "nothing was sent")


@dataclass(frozen=True)
class StockBehavior:
    """The store's inventory settings that decide which orders hold units."""

    update_stock_behavior: str
    refund_returns_stock: bool = True


@dataclass
class SoldSince:
    """The order lines sold since the as-of time that the store took off stock."""

    as_of: datetime
    behavior: StockBehavior
    lines: pl.DataFrame
    orders_read: int = 0
    orders_counted: int = 0
    requests: int = 0
    notes: list[str] = field(default_factory=list)


def units_taken(order: dict[str, Any], line: dict[str, Any], behavior: StockBehavior) -> int:
    """Units of ``line`` that the store holds off stock now, given ``order``'s status.

    ``order_placed``: every order but Incomplete and Declined holds its units.
    ``order_completed_or_shipped``: Shipped, Partially Shipped (the whole line, to be
    safe), Completed, or any order with a shipping date. Cancelled and Refunded hold none
    when the store gives units back on a refund (``refund_order_stock_adjustment``), and a
    line's refunded units are left out then too.
    """
    status = _int(order.get("status_id"))
    quantity = max(_int(line.get("quantity")), 0)
    shipped = bool(str(order.get("date_shipped") or "").strip())
    if status in (INCOMPLETE, DECLINED):
        return 0
    placed = behavior.update_stock_behavior == "order_placed"
    taken = placed or shipped or status in (SHIPPED, PARTIALLY_SHIPPED, COMPLETED)
    if status in (REFUNDED, CANCELLED):
        return 0 if behavior.refund_returns_stock or not taken else quantity
    if not taken:
        return 0
    refunded = _int(line.get("quantity_refunded")) if behavior.refund_returns_stock else 0
    return max(quantity - max(refunded, 0), 0)


async def read_stock_behavior(client: StoreClient) -> StockBehavior:
    """``GET /v3/settings/inventory``: when the store takes units off stock."""
    try:
        response, _ = await client._request("GET", "/settings/inventory", None)
    except AuthError as exc:
        if "403" in str(exc):
            raise AuthError("the access token cannot read the store's inventory settings "
                            "(HTTP 403): --as-of needs them to know when an order takes its "
                            "units off stock (scope: Information & Settings, read-only); "
                            "nothing was sent") from None
        raise
    payload = _json_body(response, "GET /settings/inventory")
    data = payload.get("data") if isinstance(payload, dict) else None
    behavior = data.get("update_stock_behavior") if isinstance(data, dict) else None
    if behavior not in BEHAVIORS:
        raise StoreError(f"GET /settings/inventory: the store's update_stock_behavior is "
                         f"{behavior!r}, not one of {', '.join(BEHAVIORS)}; nothing was sent")
    assert isinstance(data, dict)
    refund = data.get("refund_order_stock_adjustment")
    return StockBehavior(str(behavior), refund is not False)


def order_time(value: Any) -> datetime | None:
    """An order's ``date_created`` (RFC 2822, or ISO 8601) in UTC; None if unreadable."""
    text = str(value or "").strip()
    if not text:
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def since_param(as_of: datetime) -> str:
    """``min_date_created`` for ``as_of``: ISO 8601 in UTC, to the second (rounded down:
    the store keeps order times to the second, so an order in the as-of's second counts)."""
    return as_of.astimezone(UTC).replace(microsecond=0).isoformat()


async def read_sold_since(client: StoreClient, as_of: datetime,
                          behavior: StockBehavior | None = None) -> SoldSince:
    """The order lines created at or after ``as_of`` whose units the store holds off stock.

    Reads the inventory settings (unless ``behavior`` is given), then every page of the
    orders listing; :class:`AuthError` in plain words for a token without the orders scope,
    :class:`StoreError` for a listing that cannot be trusted (lines missing, a page
    repeated, more than :data:`MAX_ORDER_PAGES` pages).
    """
    before = client.requests_sent
    if behavior is None:
        behavior = await read_stock_behavior(client)
    floor = as_of.astimezone(UTC).replace(microsecond=0)
    rows: list[tuple[int, str | None, int | None, int | None, int]] = []
    found = _Found()
    page, previous = 1, None
    while True:
        orders = await _orders_page(client, floor, page)
        ids = [o.get("id") for o in orders]
        if orders and ids == previous:
            raise StoreError(f"GET /v2/orders: page {page} repeats page {page - 1} (the store "
                             f"ignores the page number); nothing was sent")
        for order in orders:
            found.add(order, floor, behavior, rows)
        if len(orders) < ORDERS_PAGE:
            break
        if page >= MAX_ORDER_PAGES:
            raise StoreError(f"more than {MAX_ORDER_PAGES * ORDERS_PAGE:,} orders since the "
                             f"as-of time {since_param(as_of)}: too many to read for one run; "
                             f"use a later as-of time (a fresher file); nothing was sent")
        previous, page = ids, page + 1
    lines = pl.DataFrame(rows, schema=SOLD_SCHEMA, orient="row")
    notes = []
    if found.early:
        notes.append(f"the store listed {found.early:,} order(s) created before the as-of time "
                     f"although asked for later ones only: they were not counted")
    return SoldSince(as_of=as_of, behavior=behavior, lines=lines, orders_read=found.read,
                     orders_counted=found.counted, requests=client.requests_sent - before,
                     notes=notes)


@dataclass
class _Found:
    read: int = 0
    counted: int = 0
    early: int = 0

    def add(self, order: dict[str, Any], floor: datetime, behavior: StockBehavior,
            rows: list[tuple[int, str | None, int | None, int | None, int]]) -> None:
        created = order_time(order.get("date_created"))
        if created is not None and created < floor:
            self.early += 1
            return
        self.read += 1
        order_id = _int(order.get("id"))
        counted = False
        for line in _line_items(order):
            units = units_taken(order, line, behavior)
            if units <= 0:
                continue
            sku = line.get("sku")
            rows.append((order_id, str(sku) if sku not in (None, "") else None,
                         _id(line.get("product_id")), _id(line.get("variant_id")), units))
            counted = True
        self.counted += counted


async def _orders_page(client: StoreClient, floor: datetime, page: int) -> list[dict[str, Any]]:
    params = {"min_date_created": since_param(floor), "include": "consignments.line_items",
              "consignment_structure": "object", "sort": "id",
              "page": str(page), "limit": str(ORDERS_PAGE)}
    try:
        response, _ = await client._request("GET", "/v2/orders", None, params=params)
    except AuthError as exc:
        if "403" in str(exc):
            raise AuthError(ORDERS_SCOPE_HELP) from None
        raise
    if response.status_code == 204 or not response.content.strip():
        return []  # the v2 API answers 204 No Content when nothing matches
    orders = _json_body(response, "GET /v2/orders")
    if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
        raise StoreError(f"GET /v2/orders: page {page} is not a list of orders; nothing was sent")
    return orders


def _line_items(order: dict[str, Any]) -> list[dict[str, Any]]:
    """The order's line items from its consignments (shipping, pickups, downloads)."""
    consignments = order.get("consignments")
    if isinstance(consignments, list):  # the older array structure
        consignments = consignments[0] if consignments and isinstance(consignments[0],
                                                                      dict) else {}
    if not isinstance(consignments, dict) or "url" in consignments:
        raise StoreError(f"GET /v2/orders: order {order.get('id')} came without its line items "
                         f"(include=consignments.line_items was ignored); nothing was sent")
    lines: list[dict[str, Any]] = []
    for kind in ("shipping", "pickups", "downloads"):
        for consignment in consignments.get(kind) or []:
            items = consignment.get("line_items") if isinstance(consignment, dict) else None
            if isinstance(items, dict):
                items = [items]
            for item in items or []:
                if isinstance(item, dict) and "quantity" in item:
                    lines.append(item)
                elif isinstance(item, dict) and "resource" in item:
                    raise StoreError(f"GET /v2/orders: order {order.get('id')} lists its line "
                                     f"items as links only; nothing was sent")
    return lines


def _json_body(response: Any, what: str) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        raise StoreError(f"{what}: the store's answer is not JSON; nothing was sent") from None


def _int(value: Any) -> int:
    try:
        return whole_number(value)
    except (TypeError, ValueError):
        return 0


def _id(value: Any) -> int | None:
    number = _int(value)
    return number if number > 0 else None
