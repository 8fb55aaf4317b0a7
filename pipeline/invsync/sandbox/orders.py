"""The sandbox's orders: a storefront that sells, and the order reads invsync makes.

Kept apart from the inventory API in `server.py`: the server hands order paths here
after its token, quota and fault checks, and gives this book two callbacks to read and
move a catalog item's level at a location (as an order does, seen by reads at once).

API (under `/stores/{store_hash}`):

    GET /v2/orders              orders, oldest id first; `min_date_created` (RFC 2822 or
                                ISO 8601), `page`, `limit` (at most 250),
                                `include=consignments.line_items` with
                                `consignment_structure=object` puts the line items in
                                `consignments.shipping[0].line_items`
    GET /v3/settings/inventory  `update_stock_behavior`, `refund_order_stock_adjustment`, ...

Introspection (no token, quota or faults), standing in for the storefront and the
control panel:

    POST /_sandbox/orders               place an order: `{"items": [{"sku": "A",
                                        "quantity": 2}], "status_id": 11,
                                        "date_created": ISO 8601 (default now)}`; items by
                                        sku, variant_id or product_id; 409 if not in stock
    POST /_sandbox/orders/{id}/status   `{"status_id": 2}` (shipped, 5 cancelled, 4 refunded...)
    GET  /_sandbox/orders               every order as the listing shows it

When the store takes an order's units off stock follows `update_stock_behavior`:
`order_placed` when the order is placed (any status but Incomplete 0 and Declined 6),
`order_completed_or_shipped` when it is Shipped (2), Partially Shipped (3, the whole
order) or Completed (10). Cancelled (5) and Refunded (4) give the units back when
`refund_order_stock_adjustment` is true. Units are taken from the default location (1):
the default storefront sells that location's stock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

UPDATE_STOCK_BEHAVIORS = ("order_placed", "order_completed_or_shipped")
ORDER_LOCATION = 1
MAX_ORDERS_LIMIT = 250
STATUS_NAMES = {
    0: "Incomplete", 1: "Pending", 2: "Shipped", 3: "Partially Shipped", 4: "Refunded",
    5: "Cancelled", 6: "Declined", 7: "Awaiting Payment", 8: "Awaiting Pickup",
    9: "Awaiting Shipment", 10: "Completed", 11: "Awaiting Fulfillment",
    12: "Manual Verification Required", 13: "Disputed", 14: "Partially Refunded",
}
_SHIPPED = frozenset((2, 3, 10))
_NOT_PLACED = frozenset((0, 6))
_GIVEN_BACK = frozenset((4, 5))


class OrderProblem(Exception):
    """A refused order request: the HTTP status and a title."""

    def __init__(self, status: int, title: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title


@dataclass
class Line:
    """One order line: a catalog item and its units."""

    id: int
    index: int
    sku: str
    product_id: int
    variant_id: int
    quantity: int


@dataclass
class Order:
    """One order with its lines and whether its units are off stock now."""

    id: int
    status_id: int
    created: datetime
    lines: list[Line]
    modified: datetime
    shipped: datetime | None = None
    taken: bool = False


@dataclass
class OrderBook:
    """The orders of one sandbox store and the store's stock behaviour."""

    find_item: Callable[[dict[str, Any]], tuple[int, str, int, int] | None]
    """An order item (`sku` / `variant_id` / `product_id`) -> (catalog index, sku,
    product id, variant id), or None when no tracked item matches."""
    level: Callable[[int, int], int]
    move: Callable[[int, int, int], None]
    """`move(location_id, index, delta)`: change a level at once (reads see it)."""
    update_stock_behavior: str = "order_placed"
    refund_stock_adjustment: bool = True
    orders: list[Order] = field(default_factory=list)
    _line_ids: int = 0

    def __post_init__(self) -> None:
        if self.update_stock_behavior not in UPDATE_STOCK_BEHAVIORS:
            raise ValueError(f"update_stock_behavior must be one of "
                             f"{', '.join(UPDATE_STOCK_BEHAVIORS)}")

    # ---- the storefront and the control panel ---------------------------------------------

    def place(self, payload: Any) -> dict[str, Any]:
        """Place an order (`POST /_sandbox/orders`); its listing entry."""
        if not isinstance(payload, dict) or not isinstance(payload.get("items"), list) \
                or not payload["items"]:
            raise OrderProblem(400, "an order needs items: [{sku|variant_id|product_id, "
                                    "quantity}]")
        status = _status(payload.get("status_id", 11))
        # The store keeps order times to the second (RFC 2822).
        created = _when(payload.get("date_created")).replace(microsecond=0)
        lines: list[Line] = []
        for item in payload["items"]:
            qty = item.get("quantity") if isinstance(item, dict) else None
            if type(qty) is not int or qty < 1:
                raise OrderProblem(400, f"bad order item {item!r}: quantity must be 1 or more")
            found = self.find_item(item)
            if found is None:
                raise OrderProblem(400, f"no tracked item for {item!r}")
            self._line_ids += 1
            lines.append(Line(self._line_ids, *found, quantity=qty))
        order = Order(len(self.orders) + 100, status, created, lines, modified=created,
                      shipped=created if status in _SHIPPED else None)
        self._settle(order, status)
        self.orders.append(order)
        return self._entry(order, lines_too=True)

    def set_status(self, order_id: int, payload: Any) -> dict[str, Any]:
        """Change an order's status (`POST /_sandbox/orders/{id}/status`)."""
        order = next((o for o in self.orders if o.id == order_id), None)
        if order is None:
            raise OrderProblem(404, f"no order {order_id}")
        status = _status(payload.get("status_id") if isinstance(payload, dict) else None)
        self._settle(order, status)
        order.status_id = status
        order.modified = datetime.now(UTC)
        if status in _SHIPPED and order.shipped is None:
            order.shipped = order.modified
        return self._entry(order, lines_too=True)

    def _wants_taken(self, order: Order, status: int) -> bool:
        if status in _GIVEN_BACK:
            return order.taken and not self.refund_stock_adjustment
        if self.update_stock_behavior == "order_placed":
            return status not in _NOT_PLACED
        return status in _SHIPPED or (order.taken and status == 14)

    def _settle(self, order: Order, status: int) -> None:
        """Take the order's units off stock, or give them back, as the new status says."""
        want = self._wants_taken(order, status)
        if want == order.taken:
            return
        sign = -1 if want else 1
        if want:
            short = [ln.sku for ln in order.lines
                     if self.level(ORDER_LOCATION, ln.index) < ln.quantity]
            if short:
                raise OrderProblem(409, f"not enough stock at location {ORDER_LOCATION} for "
                                        f"{', '.join(short)}")
        for ln in order.lines:
            self.move(ORDER_LOCATION, ln.index, sign * ln.quantity)
        order.taken = want

    # ---- the API ---------------------------------------------------------------------------

    def list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """`GET /v2/orders`: a JSON array, paged by `page`/`limit`, oldest id first."""
        try:
            page = int(query.get("page", "1"))
            limit = int(query.get("limit", "50"))
        except ValueError:
            raise OrderProblem(400, "page and limit must be whole numbers") from None
        if page < 1 or not 1 <= limit <= MAX_ORDERS_LIMIT:
            raise OrderProblem(400, f"page must be 1 or more and limit 1 to {MAX_ORDERS_LIMIT}")
        since = query.get("min_date_created")
        floor = _when(since) if since else None
        includes = set((query.get("include") or "").split(","))
        lines_too = "consignments.line_items" in includes
        chosen = [o for o in self.orders if o.status_id != 0
                  and (floor is None or o.created >= floor)]
        chunk = chosen[(page - 1) * limit: page * limit]
        return [self._entry(o, lines_too=lines_too) for o in chunk]

    def every_order(self) -> list[dict[str, Any]]:
        """Every order with its lines (`GET /_sandbox/orders`), Incomplete ones too."""
        return [self._entry(o, lines_too=True) for o in self.orders]

    def settings(self) -> dict[str, Any]:
        """`GET /v3/settings/inventory`."""
        return {"data": {"update_stock_behavior": self.update_stock_behavior,
                         "refund_order_stock_adjustment": self.refund_stock_adjustment,
                         "edit_order_stock_adjustment": True,
                         "product_out_of_stock_behavior": "do_nothing",
                         "option_out_of_stock_behavior": "do_nothing",
                         "stock_level_display": "dont_show"},
                "meta": {}}

    def _entry(self, order: Order, *, lines_too: bool) -> dict[str, Any]:
        """An order as the listing shows it (a subset of BigCommerce's order fields)."""
        units = sum(ln.quantity for ln in order.lines)
        entry: dict[str, Any] = {
            "id": order.id,
            "status_id": order.status_id,
            "status": STATUS_NAMES.get(order.status_id, "Pending"),
            "date_created": format_datetime(order.created),
            "date_modified": format_datetime(order.modified),
            "date_shipped": format_datetime(order.shipped) if order.shipped else "",
            "items_total": units,
            "items_shipped": units if order.status_id in (2, 10) else 0,
            "channel_id": 1,
            "order_source": "www",
            "is_deleted": False,
        }
        if lines_too:
            entry["consignments"] = {"pickups": [], "downloads": [],
                                     "email": {"gift_certificates": []},
                                     "shipping": [{"id": order.id, "line_items": [
                                         self._line(order, ln) for ln in order.lines]}]}
        return entry

    @staticmethod
    def _line(order: Order, ln: Line) -> dict[str, Any]:
        shipped = ln.quantity if order.status_id in (2, 10) else 0
        return {"id": ln.id, "order_id": order.id, "product_id": ln.product_id,
                "variant_id": ln.variant_id, "sku": ln.sku, "name": ln.sku,
                "type": "physical", "quantity": ln.quantity, "quantity_shipped": shipped,
                "quantity_refunded": 0, "is_refunded": order.status_id == 4}


def _status(value: Any) -> int:
    if type(value) is not int or value not in STATUS_NAMES:
        raise OrderProblem(400, f"status_id must be one of {sorted(STATUS_NAMES)}, not "
                                f"{value!r}")
    return value


def _when(value: Any) -> datetime:
    """A time from ISO 8601 (with an offset) or RFC 2822; now when None."""
    if value is None:
        return datetime.now(UTC)
    if not isinstance(value, str):
        raise OrderProblem(400, f"not a date: {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            raise OrderProblem(400, f"not a date in ISO 8601 or RFC 2822: {value!r}") from None
    if parsed.tzinfo is None:
        raise OrderProblem(400, f"the date {value!r} needs a time zone offset")
    return parsed.astimezone(UTC)
