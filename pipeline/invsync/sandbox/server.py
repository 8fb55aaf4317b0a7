"""The sandbox: a local stand-in for a BigCommerce store's inventory API.

It speaks the subset of the Inventory API that invsync uses (see
`bigcommerce-inventory-api.md`) against a catalog CSV, keeps levels in memory, and can
inject the faults a real store shows: latency, 5xx, 429s with and without rate-limit
headers, and connections dropped after a write was applied.

API paths hang off `/stores/{store_hash}/v3`:

    PUT  /inventory/adjustments/absolute          set levels (whole-batch 422 on any bad item)
    POST /inventory/adjustments/relative          add signed deltas (never below 0)
    GET  /inventory/items                         levels per item, all locations
    GET  /inventory/locations/{location_id}/items levels at one location
    GET  /inventory/locations                     the store's locations

Introspection for tests, with no token, quota or faults:

    GET  /_sandbox/requests   every API request: query, body, items as received, status,
                              answer headers, timing (and the answer body with
                              `record_answers`)
    GET  /_sandbox/levels     every level ever set, ignoring the apply delay
    POST /_sandbox/levels     a manual edit, as in the control panel: set levels at once,
                              `[{"location_id": 1, "sku": "A", "quantity": 5}, ...]`
                              (or `variant_id`/`product_id`); seen by reads at once
    GET  /_sandbox/faults     the fault settings in force
    POST /_sandbox/faults     change them while running: `{"error_rate": 0.1, ...}` with any
                              of latency_ms, error_rate, bare_429_rate, drop_rate, vague_422,
                              apply_delay_ms (alias apply_lag_ms: read-after-write lag)
    GET  /_sandbox/stats      counts, max in flight, item overlaps
    POST /_sandbox/reset      clear log and stats (`?levels=1`: levels too; `?all=1`: back
                              to how the process started: log, stats, levels, orders,
                              the startup fault settings, the random seed, the quota window)

Rate-limit headers are on every API response except the header-less 429 fault. With
`quota=None` they still appear, announcing a quota of `UNLIMITED_QUOTA` per window, so a
client's pacing logic always has headers to read; no request is ever refused for quota then.

A request whose connection was dropped is logged with `status` 0 and `dropped` true.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import json
import logging
import math
import random
import signal
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

MAX_ITEMS = 2000
MAX_QUANTITY = 2_147_483_647
MAX_PAGE_LIMIT = 1000
DEFAULT_PAGE_LIMIT = 50
MAX_BODY_BYTES = 4 * 1024 * 1024
UNLIMITED_QUOTA = 1_000_000
PROBLEM_TYPE = "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes"
VAGUE_TITLE = "The request contains invalid items"
INVALID_FIELDS = "Payload contains invalid fields"

TRACKED = ("product", "variant")
_ID_FIELDS = ("sku", "variant_id", "product_id")
_ITEM_FIELDS = frozenset(("location_id", "quantity", *_ID_FIELDS))
_JSON = b"application/json"
_PROBLEM = b"application/problem+json"
_DROP_LOG_MESSAGE = "ASGI callable returned without completing response."
_LOGGED_HEADERS = (b"accept", b"content-type", b"user-agent")  # never the token
_FAULTS = {"latency_ms": int, "error_rate": float, "bare_429_rate": float, "drop_rate": float,
           "vague_422": bool, "apply_delay_ms": int}
_FAULT_ALIASES = {"apply_lag_ms": "apply_delay_ms"}
"""Read-after-write lag (`--apply-lag-ms`): reads show the old level this long after a write."""


@dataclass
class Location:
    """One inventory location of the store."""

    id: int
    code: str
    label: str
    enabled: bool = True


def _default_locations() -> list[Location]:
    return [
        Location(1, "BC-LOCATION-1", "Default location", True),
        Location(2, "WH-EAST", "East warehouse", True),
        Location(3, "OLD-SHOP", "Closed shop", False),
    ]


@dataclass
class SandboxConfig:
    """Everything that shapes one sandbox store, faults included."""

    catalog_path: Path
    token: str = "sandbox-token"
    read_only_token: str | None = None
    store_hash: str = "sandbox"
    locations: list[Location] = field(default_factory=_default_locations)
    quota: int | None = None
    window_ms: int = 30000
    latency_ms: int = 0
    error_rate: float = 0.0
    bare_429_rate: float = 0.0
    drop_rate: float = 0.0
    vague_422: bool = False
    apply_delay_ms: int = 0
    seed: int | None = None
    record_answers: bool = False
    """Keep every answer's decoded JSON body in the request log (memory grows with reads)."""
    # ---- orders (see invsync.sandbox.orders) ----
    update_stock_behavior: str = "order_placed"
    """When an order takes its units off stock: `order_placed` or `order_completed_or_shipped`."""
    refund_stock_adjustment: bool = True
    """Cancelled and refunded orders give their units back."""
    orders_scope: bool = True
    """False: the token lacks `store_v2_orders_read_only` (order reads answer 403)."""

    def __repr__(self) -> str:  # keep tokens out of logs and tracebacks
        return (
            f"SandboxConfig(catalog_path={str(self.catalog_path)!r}, "
            f"store_hash={self.store_hash!r}, quota={self.quota}, window_ms={self.window_ms})"
        )


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One inventory item: a product tracked by product, or one variant."""

    sku: str
    product_id: int
    variant_id: int
    tracking: str  # "product", "variant", or anything else for "not tracked"


@dataclass
class Catalog:
    """The store's inventory items with the indexes the API needs."""

    items: list[CatalogItem]
    by_sku: dict[str, int]
    by_variant: dict[int, int]
    by_product: dict[int, list[int]]

    def tracked_indexes(self) -> list[int]:
        """Indexes of the items whose inventory is tracked, in catalog order."""
        return [i for i, item in enumerate(self.items) if item.tracking in TRACKED]


def load_catalog(path: Path | str) -> Catalog:
    """Read a catalog CSV (`sku,product_id,variant_id,tracking`); ValueError if unusable."""
    path = Path(path)
    items: list[CatalogItem] = []
    by_sku: dict[str, int] = {}
    by_variant: dict[int, int] = {}
    by_product: dict[int, list[int]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        missing = {"sku", "product_id", "variant_id", "tracking"} - set(header)
        if missing:
            raise ValueError(f"{path}: missing column(s): {', '.join(sorted(missing))}")
        col = {name: header.index(name) for name in ("sku", "product_id", "variant_id", "tracking")}
        for line_no, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            try:
                sku = row[col["sku"]].strip()
                product_id = int(row[col["product_id"]])
                variant_id = int(row[col["variant_id"]])
                tracking = row[col["tracking"]].strip().lower()
            except (IndexError, ValueError):
                raise ValueError(f"{path}:{line_no}: malformed row {row!r}") from None
            if not sku:
                raise ValueError(f"{path}:{line_no}: empty sku")
            if sku in by_sku:
                raise ValueError(f"{path}:{line_no}: duplicate sku {sku!r}")
            if variant_id in by_variant:
                raise ValueError(f"{path}:{line_no}: duplicate variant_id {variant_id}")
            siblings = by_product.get(product_id, [])
            if siblings:
                first = items[siblings[0]].tracking
                if first != tracking:
                    raise ValueError(
                        f"{path}:{line_no}: product {product_id} mixes tracking "
                        f"{first!r} and {tracking!r}"
                    )
                if tracking != "variant":
                    raise ValueError(
                        f"{path}:{line_no}: product {product_id} is not tracked by variant "
                        "but has more than one row"
                    )
            idx = len(items)
            items.append(CatalogItem(sku, product_id, variant_id, tracking))
            by_sku[sku] = idx
            by_variant[variant_id] = idx
            by_product.setdefault(product_id, []).append(idx)
    return Catalog(items, by_sku, by_variant, by_product)


def load_locations(path: Path | str) -> list[Location]:
    """Read a locations CSV (`id,code,label,enabled`); ValueError if unusable."""
    path = Path(path)
    out: list[Location] = []
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for line_no, row in enumerate(csv.DictReader(fh), start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            try:
                enabled_text = row.get("enabled", "true").lower()
                if enabled_text not in ("true", "false", "1", "0", "yes", "no", ""):
                    raise ValueError(enabled_text)
                out.append(
                    Location(
                        id=int(row["id"]),
                        code=row["code"],
                        label=row.get("label") or row["code"],
                        enabled=enabled_text in ("true", "1", "yes", ""),
                    )
                )
            except (KeyError, ValueError):
                raise ValueError(f"{path}:{line_no}: malformed location row") from None
    if not out:
        raise ValueError(f"{path}: no locations")
    return out


class DroppedConnection(Exception):
    """Raised after a dropped PUT was applied, so the server closes the connection unanswered.

    Under uvicorn the status line has already gone out, so uvicorn just closes the
    transport and the client sees an incomplete response. In-process test clients
    (Starlette's TestClient, httpx.ASGITransport) re-raise it instead.
    """


class _Problem(Exception):
    """An error answer: status, title, and the `errors` object."""

    def __init__(self, status: int, title: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or {}


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: bytes = _JSON
    rate_headers: bool = True
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    drop: bool = False


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _problem_reply(p: _Problem) -> _Reply:
    body = {"status": p.status, "title": p.title, "type": PROBLEM_TYPE, "errors": p.errors}
    return _Reply(p.status, _dumps(body), _PROBLEM)


def _request_headers(scope: Scope, entry: dict[str, Any]) -> dict[bytes, bytes]:
    """The headers the store reads; the logged ones also go into the request log ``entry``."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in (b"x-auth-token", b"content-type", b"content-length"):
            headers[name] = value
        if name in _LOGGED_HEADERS:
            entry["request_headers"][name.decode("latin-1")] = value.decode("latin-1")
    return headers


def _route(rest: str, parts: list[str]) -> str:
    """The method an API path takes (HEAD goes with GET); 404 for any other path."""
    if rest == "inventory/adjustments/absolute":
        return "PUT"
    if rest == "inventory/adjustments/relative":
        return "POST"
    if rest in ("inventory/items", "inventory/locations") or (
        len(parts) == 4 and parts[:2] == ["inventory", "locations"] and parts[3] == "items"
    ):
        return "GET"
    raise _Problem(404, "Not found")


def _check_shape(items: list[Any], relative: bool) -> None:
    """A batch of 1 to MAX_ITEMS items, each of the right shape."""
    if not items:
        raise _Problem(422, INVALID_FIELDS, {"items": "At least one item is required."})
    if len(items) > MAX_ITEMS:
        raise _Problem(
            422,
            f"The request contains {len(items)} items, at most {MAX_ITEMS} are allowed",
            {"items": f"At most {MAX_ITEMS} items per request."},
        )
    for i, it in enumerate(items):
        if not _item_ok(it, relative):
            raise _Problem(422, INVALID_FIELDS, _item_shape_errors(it, i, relative))


def _relative_level(level: int, who: str, location_id: int) -> int:
    """A relative adjustment's new level, if it stays within 0 and the maximum."""
    if level < 0:
        raise _Problem(422, f"[{who} would go below zero at location {location_id}]")
    if level > MAX_QUANTITY:
        raise _Problem(422, f"[{who} would exceed {MAX_QUANTITY} at location {location_id}]")
    return level


def _item_ok(item: Any, relative: bool) -> bool:
    """Fast path of `_item_shape_errors`: True when the item is well formed."""
    if type(item) is not dict or len(item) != 3 or not item.keys() <= _ITEM_FIELDS:
        return False
    q = item.get("quantity")
    if type(item.get("location_id")) is not int or type(q) is not int:
        return False
    if not (-MAX_QUANTITY if relative else 0) <= q <= MAX_QUANTITY:
        return False
    # Three allowed keys, two of them location_id and quantity: exactly one identity field.
    sku = item.get("sku")
    if sku is not None:
        return type(sku) is str and sku != ""
    return type(item.get("variant_id", item.get("product_id"))) is int


def _item_shape_errors(item: Any, i: int, relative: bool) -> dict[str, str]:
    """Schema errors of one adjustment item, keyed like `items.0.quantity`; {} when fine."""
    p = f"items.{i}"
    if type(item) is not dict:
        return {p: "Each item must be an object."}
    errors: dict[str, str] = {}
    if type(item.get("location_id")) is not int:
        errors[f"{p}.location_id"] = "location_id is required and must be an integer."
    q = item.get("quantity")
    if type(q) is not int:
        errors[f"{p}.quantity"] = "quantity is required and must be an integer."
    elif relative and abs(q) > MAX_QUANTITY:
        errors[f"{p}.quantity"] = f"quantity must be between -{MAX_QUANTITY} and {MAX_QUANTITY}."
    elif not relative and not 0 <= q <= MAX_QUANTITY:
        errors[f"{p}.quantity"] = f"quantity must be between 0 and {MAX_QUANTITY}."
    given = [k for k in _ID_FIELDS if k in item]
    if len(given) != 1:
        errors[p] = "Exactly one of sku, variant_id or product_id is required."
    else:
        value = item[given[0]]
        if given[0] == "sku":
            if type(value) is not str or not value:
                errors[f"{p}.sku"] = "sku must be a non-empty string."
        elif type(value) is not int:
            errors[f"{p}.{given[0]}"] = f"{given[0]} must be an integer."
    if not item.keys() <= _ITEM_FIELDS:
        for k in item.keys() - _ITEM_FIELDS:
            errors[f"{p}.{k}"] = "Unknown field."
    return errors


def _int_list(query: dict[str, str], name: str) -> set[int] | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return {int(v) for v in raw.split(",") if v.strip()}
    except ValueError:
        raise _Problem(
            422, f"Invalid value for filter {name}", {name: "Expected integers."}
        ) from None


def _str_list(query: dict[str, str], name: str) -> set[str] | None:
    raw = query.get(name)
    return None if raw is None else {v for v in raw.split(",") if v}


def _page_params(query: dict[str, str]) -> tuple[int, int]:
    try:
        page = int(query.get("page", "1"))
        limit = int(query.get("limit", str(DEFAULT_PAGE_LIMIT)))
    except ValueError:
        raise _Problem(422, "page and limit must be integers") from None
    if page < 1 or limit < 1:
        raise _Problem(422, "page and limit must be positive")
    if limit > MAX_PAGE_LIMIT:
        raise _Problem(
            422, f"limit must be at most {MAX_PAGE_LIMIT}", {"limit": f"at most {MAX_PAGE_LIMIT}"}
        )
    return page, limit


def _page(rows: list[Any], page: int, limit: int) -> tuple[list[Any], dict[str, Any]]:
    total = len(rows)
    total_pages = math.ceil(total / limit)
    chunk = rows[(page - 1) * limit : page * limit]

    def link(n: int) -> str:
        return f"?page={n}&limit={limit}"

    # The published schema types every link as a string: absent links are left out, not null.
    links = {"current": link(page)}
    if page > 1:
        links["previous"] = link(page - 1)
    if page < total_pages:
        links["next"] = link(page + 1)
    pagination = {
        "total": total,
        "count": len(chunk),
        "per_page": limit,
        "current_page": page,
        "total_pages": total_pages,
        "links": links,
    }
    return chunk, {"pagination": pagination}


def _settings(onhand: int) -> dict[str, Any]:
    return {
        "safety_stock": 0,
        "is_in_stock": onhand > 0,
        "warning_level": 0,
        "bin_picking_number": "",
    }


Key = tuple[int, int]  # (location_id, catalog item index)


class Sandbox:
    """The sandbox store as a raw ASGI app; `create_app` wraps it in Starlette."""

    def __init__(self, config: SandboxConfig) -> None:
        for name in ("error_rate", "bare_429_rate", "drop_rate"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if config.window_ms < 1:
            raise ValueError("window_ms must be positive")
        if config.quota is not None and config.quota < 1:
            raise ValueError("quota must be positive")
        ids = [loc.id for loc in config.locations]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate location ids")
        self.config = config
        self.catalog = load_catalog(config.catalog_path)
        self._tracked = self.catalog.tracked_indexes()
        self._locations = {loc.id: loc for loc in config.locations}
        self._prefix = f"/stores/{config.store_hash}/v3/"
        self._token = config.token.encode()
        self._ro_token = config.read_only_token.encode() if config.read_only_token else None
        self._startup_faults = self._faults()
        self._generation = 0  # bumped by every reset of the request log
        self._epoch = 0  # bumped by every full reset
        self._reset_all()

    # ---- state -------------------------------------------------------------------------

    def _reset_all(self) -> None:
        """Back to how the process started (`POST /_sandbox/reset?all=1`)."""
        self._epoch += 1
        for name, value in self._startup_faults.items():
            setattr(self.config, name, value)
        self._rng = random.Random(self.config.seed)
        self._t0 = time.monotonic()
        self._window = -1
        self._used = 0
        self._reset_levels()
        self._reset_log()
        self._init_orders()

    def _reset_levels(self) -> None:
        self._levels: dict[Key, int] = {}
        # (location_id, product_id) -> sum of its items' levels, for the product-total limit
        self._totals: dict[tuple[int, int], int] = {}
        # What reads see; with an apply delay, changes reach it from _pending when due.
        self._visible: dict[Key, int] = {} if self.config.apply_delay_ms else self._levels
        self._pending: deque[tuple[float, list[tuple[Key, int]]]] = deque()

    def _reset_log(self) -> None:
        # Requests still in flight belong to the log before this one: they must not
        # touch the new counters when they end.
        self._generation += 1
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self._by_status: dict[str, int] = {}
        self._items_applied = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._item_overlaps = 0
        self._in_flight_keys: dict[Any, int] = {}

    def _flush_visible(self, now: float) -> None:
        while self._pending and self._pending[0][0] <= now:
            self._visible.update(self._pending.popleft()[1])

    # ---- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/_sandbox/"):
            await self._introspect(scope, receive, send)
        else:
            await self._api(scope, receive, send)

    @staticmethod
    async def _send(send: Send, reply: _Reply, extra: list[tuple[bytes, bytes]]) -> None:
        headers = [
            (b"content-type", reply.content_type),
            (b"content-length", str(len(reply.body)).encode()),
            *reply.headers,
            *extra,
        ]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if not reply.drop:
            await send({"type": "http.response.body", "body": reply.body})

    async def _read_body(self, receive: Receive, content_length: int | None) -> bytes | None:
        """The request body, or None when it exceeds MAX_BODY_BYTES."""
        if content_length is not None and content_length > MAX_BODY_BYTES:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _api(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        method: str = scope["method"]
        entry: dict[str, Any] = {
            "seq": self._seq,
            "method": method,
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "status": None,
            "items": [],
            "duplicates": 0,
            "transaction_id": None,
            "started": started,
            "finished": None,
            "applied": False,
            "dropped": False,
            "body": None,
            "request_headers": {},
            "answer_headers": {},
        }
        self._seq += 1
        self._log.append(entry)
        generation, epoch = self._generation, self._epoch
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        headers = _request_headers(scope, entry)
        keys: set[Any] = set()
        reply: _Reply | None = None
        try:
            body: bytes | None = b""
            parsed: Any = None
            if method not in ("GET", "HEAD"):
                body, parsed = await self._read_json(receive, headers)
                entry["body"] = parsed
                if isinstance(parsed, dict) and isinstance(parsed.get("items"), list):
                    entry["items"] = parsed["items"]
                    keys = self._claim_keys(parsed["items"])
            if self.config.latency_ms:
                await asyncio.sleep(self.config.latency_ms / 1000)
            stale = epoch != self._epoch
            rate = (0, self.config.window_ms) if stale else self._count_request()
            try:
                if stale:
                    # The store was reset (`?all=1`) while this request waited: it belongs
                    # to the store before, as if the process had restarted under it.
                    raise _Problem(503, "Service unavailable: the store was reset")
                reply = self._handle(method, scope, headers, body, parsed, entry)
            except _Problem as p:
                reply = _problem_reply(p)
            extra = self._rate_headers(*rate) if reply.rate_headers else []
            if reply.status == 429 and reply.rate_headers:
                extra.append((b"x-retry-after", str(math.ceil(rate[1] / 1000)).encode()))
            entry["answer_headers"] = {
                k.decode("latin-1"): v.decode("latin-1")
                for k, v in [(b"content-type", reply.content_type), *reply.headers, *extra]
            }
            if self.config.record_answers:
                entry["answer"] = json.loads(reply.body) if reply.body else None
            await self._send(send, reply, extra)
        finally:
            status = 500 if reply is None else (0 if reply.drop else reply.status)
            entry["status"] = status
            entry["dropped"] = bool(reply and reply.drop)
            entry["finished"] = time.monotonic()
            if generation == self._generation:
                self._release(keys)
                self._by_status[str(status)] = self._by_status.get(str(status), 0) + 1
        if reply is not None and reply.drop:
            raise DroppedConnection(f"request {entry['seq']} applied, connection dropped")

    def _release(self, keys: set[Any]) -> None:
        """A request ended: it is no longer in flight, nor are its items."""
        for key in keys:
            left = self._in_flight_keys[key] - 1
            if left:
                self._in_flight_keys[key] = left
            else:
                del self._in_flight_keys[key]
        self._in_flight -= 1

    async def _read_json(self, receive: Receive, headers: dict[bytes, bytes]
                         ) -> tuple[bytes | None, Any]:
        """The request body (None: too large) and its JSON (None: none or not JSON)."""
        try:
            length: int | None = int(headers[b"content-length"])
        except (KeyError, ValueError):
            length = None
        body = await self._read_body(receive, length)
        if not body:
            return body, None
        try:
            return body, json.loads(body)
        except (ValueError, RecursionError):
            return body, None

    def _claim_keys(self, items: list[Any]) -> set[Any]:
        """Mark this request's (location, item) pairs in flight; count overlaps with others."""
        cat = self.catalog
        keys: set[Any] = set()
        for it in items:
            if type(it) is not dict:
                continue
            loc = it.get("location_id")
            if type(loc) is not int:
                continue
            ident: Any = None
            if type(sku := it.get("sku")) is str:
                ident = cat.by_sku.get(sku, ("sku", sku))
            elif type(vid := it.get("variant_id")) is int:
                ident = cat.by_variant.get(vid, ("variant_id", vid))
            elif type(pid := it.get("product_id")) is int:
                idxs = cat.by_product.get(pid)
                ident = idxs[0] if idxs and len(idxs) == 1 else ("product_id", pid)
            if ident is not None:
                keys.add((loc, ident))
        for key in keys:
            if key in self._in_flight_keys:
                self._item_overlaps += 1
                self._in_flight_keys[key] += 1
            else:
                self._in_flight_keys[key] = 1
        return keys

    # ---- rate limit --------------------------------------------------------------------

    def _count_request(self) -> tuple[int, int]:
        """Count one request in the current fixed window: (used in window, ms to reset)."""
        window = self.config.window_ms
        elapsed_ms = (time.monotonic() - self._t0) * 1000
        index = int(elapsed_ms // window)
        if index != self._window:
            self._window = index
            self._used = 0
        self._used += 1
        reset_ms = max(1, math.ceil((index + 1) * window - elapsed_ms))
        return self._used, reset_ms

    def _rate_headers(self, used: int, reset_ms: int) -> list[tuple[bytes, bytes]]:
        quota = self.config.quota if self.config.quota is not None else UNLIMITED_QUOTA
        return [
            (b"x-rate-limit-time-window-ms", str(self.config.window_ms).encode()),
            (b"x-rate-limit-time-reset-ms", str(reset_ms).encode()),
            (b"x-rate-limit-requests-quota", str(quota).encode()),
            (b"x-rate-limit-requests-left", str(max(0, quota - used)).encode()),
        ]

    # ---- API ---------------------------------------------------------------------------

    def _handle(
        self,
        method: str,
        scope: Scope,
        headers: dict[bytes, bytes],
        body: bytes | None,
        parsed: Any,
        entry: dict[str, Any],
    ) -> _Reply:
        path: str = scope["path"]
        orders_path = self._is_orders_path(path)
        self._authorize(method, path, headers, orders_path=orders_path)
        bare_429 = self._random_fault()
        if bare_429 is not None:
            return bare_429
        if orders_path:
            return self._orders_api(method, path, entry)
        cfg = self.config
        drop = method == "PUT" and bool(cfg.drop_rate) and self._rng.random() < cfg.drop_rate

        rest = path[len(self._prefix) :].rstrip("/")
        parts = rest.split("/")
        expected = _route(rest, parts)
        if method != expected and not (expected == "GET" and method == "HEAD"):
            raise _Problem(405, "Method not allowed")

        query = dict(parse_qsl(entry["query"], keep_blank_values=True))
        if expected == "GET":
            now = time.monotonic()
            self._flush_visible(now)
            if rest == "inventory/items":
                return self._get_items(query)
            if rest == "inventory/locations":
                return self._get_locations(query)
            return self._get_location_items(parts[2], query)

        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype != _JSON and not ctype.endswith(b"+json"):
            raise _Problem(415, "Content-Type must be application/json")
        if body is None:
            raise _Problem(413, f"Request body larger than {MAX_BODY_BYTES} bytes")
        if parsed is None:
            try:
                json.loads(body)
            except (ValueError, RecursionError):
                raise _Problem(400, "The request body is not valid JSON") from None
        return self._adjust(parsed, relative=(expected == "POST"), drop=drop, entry=entry)

    def _authorize(self, method: str, path: str, headers: dict[bytes, bytes], *,
                   orders_path: bool = False) -> None:
        """This store (its v3 API or its orders), a valid token with the scope the method
        needs, quota left."""
        if not (orders_path or path.startswith(self._prefix)):
            raise _Problem(404, "Store not found" if path.startswith("/stores/") else "Not found")
        token = headers.get(b"x-auth-token", b"")
        is_rw = hmac.compare_digest(token, self._token)
        is_ro = self._ro_token is not None and hmac.compare_digest(token, self._ro_token)
        if not (is_rw or is_ro):
            raise _Problem(401, "Unauthorized: missing or invalid X-Auth-Token")
        writing = method not in ("GET", "HEAD")
        if writing and not is_rw:
            raise _Problem(403, "You don't have a required scope to access the endpoint")
        if self.config.quota is not None and self._used > self.config.quota:
            raise _Problem(429, "Too many requests")

    def _random_fault(self) -> _Reply | None:
        """The configured random faults: a 5xx (raised), a bare 429 (returned), or none."""
        cfg = self.config
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            status = self._rng.choice((500, 502, 503))
            raise _Problem(status, "Internal error" if status == 500 else "Service unavailable")
        if cfg.bare_429_rate and self._rng.random() < cfg.bare_429_rate:
            reply = _problem_reply(_Problem(429, "Too many requests"))
            reply.rate_headers = False
            return reply
        return None

    def _adjust(self, parsed: Any, relative: bool, drop: bool, entry: dict[str, Any]) -> _Reply:
        if not isinstance(parsed, dict) or not isinstance(parsed.get("items"), list):
            raise _Problem(
                422, INVALID_FIELDS, {"items": "items is required and must be an array."}
            )
        if "reason" in parsed and not isinstance(parsed["reason"], str):
            raise _Problem(422, INVALID_FIELDS, {"reason": "reason must be a string."})
        items: list[Any] = parsed["items"]
        try:
            pending, duplicates = self._check_items(items, relative)
        except _Problem as p:
            if self.config.vague_422 and p.status == 422:
                p.errors = {}
                if p.title != INVALID_FIELDS:
                    p.title = VAGUE_TITLE
            raise
        self._apply(pending)
        transaction_id = str(uuid.uuid4())
        entry.update(duplicates=duplicates, transaction_id=transaction_id, applied=True)
        self._items_applied += len(items)
        return _Reply(200, _dumps({"transaction_id": transaction_id}), drop=drop)

    def _check_items(self, items: list[Any], relative: bool) -> tuple[dict[Key, int], int]:
        """Validate a whole batch; the new level per (location, item) and the duplicate count.

        Like the real store, a title names only the first offending item found.
        """
        _check_shape(items, relative)
        self._check_locations(items)
        levels = self._levels
        pending: dict[Key, int] = {}
        duplicates = 0
        for it in items:
            idx, who = self._resolve(it)
            key = (it["location_id"], idx)
            if key in pending:
                duplicates += 1
            if relative:
                level = pending[key] if key in pending else levels.get(key, 0)
                pending[key] = _relative_level(level + it["quantity"], who, it["location_id"])
            else:
                pending[key] = it["quantity"]
        self._check_product_totals(pending)
        return pending, duplicates

    def _check_locations(self, items: list[Any]) -> None:
        """Every location named exists and is active (the real store's two messages)."""
        unknown: list[int] = []
        disabled: list[int] = []
        seen: set[int] = set()
        for it in items:
            loc_id = it["location_id"]
            if loc_id in seen:
                continue
            seen.add(loc_id)
            loc = self._locations.get(loc_id)
            if loc is None:
                unknown.append(loc_id)
            elif not loc.enabled:
                disabled.append(loc_id)
        if unknown:
            raise _Problem(422, f"Location not found, identities: [{','.join(map(str, unknown))}]")
        if disabled:
            ids = ",".join(map(str, disabled))
            raise _Problem(422, f"Location is not active, identities: [{ids}]")

    def _resolve(self, it: dict[str, Any]) -> tuple[int, str]:
        """The catalog index of an item and how a title names it; 422 if it cannot be set."""
        cat = self.catalog
        if "sku" in it:
            field_name, value = "sku", it["sku"]
            idx = cat.by_sku.get(value)
        elif "variant_id" in it:
            field_name, value = "variant_id", it["variant_id"]
            idx = cat.by_variant.get(value)
        else:
            field_name, value = "product_id", it["product_id"]
            idxs = cat.by_product.get(value)
            idx = idxs[0] if idxs else None
        who = f"Item with {field_name} {value}"
        if idx is None:
            raise _Problem(422, f"[{who} not found]")
        tracking = cat.items[idx].tracking
        if tracking not in TRACKED:
            raise _Problem(422, f"[{who} does not have inventory tracking enabled]")
        if field_name == "variant_id" and tracking == "product":
            raise _Problem(
                422, f"[{who} is tracked by product, please update stock by product id]"
            )
        if field_name == "product_id" and tracking == "variant":
            raise _Problem(
                422, f"[{who} is tracked by variant, please update stock by variant id or sku]"
            )
        return idx, who

    def _check_product_totals(self, pending: dict[Key, int]) -> None:
        """The sum of a product's variants at a location stays within the maximum."""
        cat = self.catalog
        levels = self._levels
        deltas: dict[tuple[int, int], int] = {}
        for (loc_id, idx), qty in pending.items():
            item = cat.items[idx]
            if item.tracking == "variant":
                total_key = (loc_id, item.product_id)
                deltas[total_key] = deltas.get(total_key, 0) + qty - levels.get((loc_id, idx), 0)
        for (loc_id, product_id), delta in deltas.items():
            if self._totals.get((loc_id, product_id), 0) + delta > MAX_QUANTITY:
                raise _Problem(
                    422,
                    f"[Total stock of product with product_id {product_id} at location {loc_id} "
                    f"would exceed {MAX_QUANTITY}]",
                )

    def _apply(self, pending: dict[Key, int]) -> None:
        items = self.catalog.items
        levels = self._levels
        totals = self._totals
        for key, qty in pending.items():
            total_key = (key[0], items[key[1]].product_id)
            totals[total_key] = totals.get(total_key, 0) + qty - levels.get(key, 0)
            levels[key] = qty
        if self.config.apply_delay_ms:
            due = time.monotonic() + self.config.apply_delay_ms / 1000
            self._pending.append((due, list(pending.items())))

    # ---- reads -------------------------------------------------------------------------

    def _filtered_items(self, query: dict[str, str]) -> list[int]:
        skus = _str_list(query, "sku:in")
        variant_ids = _int_list(query, "variant_id:in")
        product_ids = _int_list(query, "product_id:in")
        items = self.catalog.items
        if skus is None and variant_ids is None and product_ids is None:
            return self._tracked
        return [
            i
            for i in self._tracked
            if (skus is None or items[i].sku in skus)
            and (variant_ids is None or items[i].variant_id in variant_ids)
            and (product_ids is None or items[i].product_id in product_ids)
        ]

    def _filtered_locations(self, query: dict[str, str]) -> list[Location]:
        ids = _int_list(query, "location_id:in")
        codes = _str_list(query, "location_code:in")
        return [
            loc
            for loc in self.config.locations
            if (ids is None or loc.id in ids) and (codes is None or loc.code in codes)
        ]

    def _identity(self, idx: int) -> dict[str, Any]:
        item = self.catalog.items[idx]
        return {
            "sku": item.sku,
            "variant_id": item.variant_id,
            "product_id": item.product_id,
            "sku_id": None,
        }

    def _get_items(self, query: dict[str, str]) -> _Reply:
        page, limit = _page_params(query)
        locations = self._filtered_locations(query)
        chunk, meta = _page(self._filtered_items(query), page, limit)
        visible = self._visible
        data = []
        for idx in chunk:
            entries = []
            for loc in locations:
                onhand = visible.get((loc.id, idx), 0)
                entries.append(
                    {
                        "location_id": loc.id,
                        "location_code": loc.code,
                        "location_name": loc.label,
                        "available_to_sell": onhand,
                        "total_inventory_onhand": onhand,
                        "location_enabled": loc.enabled,
                        "settings": _settings(onhand),
                    }
                )
            data.append({"identity": self._identity(idx), "locations": entries})
        return _Reply(200, _dumps({"data": data, "meta": meta}))

    def _get_location_items(self, raw_id: str, query: dict[str, str]) -> _Reply:
        try:
            location_id = int(raw_id)
        except ValueError:
            raise _Problem(404, "Location not found") from None
        if location_id not in self._locations:
            raise _Problem(404, f"Location not found, identities: [{location_id}]")
        page, limit = _page_params(query)
        chunk, meta = _page(self._filtered_items(query), page, limit)
        visible = self._visible
        data = []
        for idx in chunk:
            onhand = visible.get((location_id, idx), 0)
            identity = self._identity(idx)
            del identity["sku_id"]  # this listing's identity has no sku_id in the spec
            data.append(
                {
                    "identity": identity,
                    "available_to_sell": onhand,
                    "total_inventory_onhand": onhand,
                    "settings": _settings(onhand),
                }
            )
        return _Reply(200, _dumps({"data": data, "meta": meta}))

    def _get_locations(self, query: dict[str, str]) -> _Reply:
        page, limit = _page_params(query)
        locations = self._filtered_locations(query)
        active = query.get("is_active")
        if active is not None:
            if active.lower() not in ("true", "false", "1", "0"):
                raise _Problem(422, "Invalid value for filter is_active")
            want = active.lower() in ("true", "1")
            locations = [loc for loc in locations if loc.enabled == want]
        chunk, meta = _page(locations, page, limit)
        data = [
            {
                "id": loc.id,
                "code": loc.code,
                "label": loc.label,
                "description": "",
                "managed_by_external_source": False,
                "type_id": "PHYSICAL",
                "enabled": loc.enabled,
                "storefront_visibility": loc.enabled,
                "time_zone": "Etc/UTC",
            }
            for loc in chunk
        ]
        return _Reply(200, _dumps({"data": data, "meta": meta}))

    # ---- introspection -----------------------------------------------------------------

    async def _introspect(self, scope: Scope, receive: Receive, send: Send) -> None:
        what = scope["path"][len("/_sandbox/") :].rstrip("/")
        method = scope["method"]
        body: Any
        if what == "orders" or what.startswith("orders/"):
            await self._orders_introspect(what, method, receive, send)
            return
        if method == "POST" and what in ("levels", "faults"):
            raw = await self._read_body(receive, None)
            try:
                payload = json.loads(raw or b"null")
                body = self._set_levels(payload) if what == "levels" else self._set_faults(payload)
            except (ValueError, TypeError, KeyError, RecursionError) as exc:
                await self._send(send, _Reply(400, _dumps({"error": str(exc)})), [])
                return
            await self._send(send, _Reply(200, _dumps(body)), [])
            return
        if method == "GET" and what == "faults":
            body = self._faults()
        elif method == "GET" and what == "requests":
            body = self._log
        elif method == "GET" and what == "levels":
            items = self.catalog.items
            body = [
                {
                    "location_id": loc_id,
                    "sku": items[idx].sku,
                    "product_id": items[idx].product_id,
                    "variant_id": items[idx].variant_id,
                    "quantity": qty,
                }
                for (loc_id, idx), qty in sorted(self._levels.items())
            ]
        elif method == "GET" and what == "stats":
            body = self.stats()
        elif method == "POST" and what == "reset":
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if query.get("all", "").lower() in ("1", "true", "yes"):
                self._reset_all()
            elif query.get("levels", "").lower() in ("1", "true", "yes"):
                self._reset_levels()
                self._reset_log()
            else:
                self._reset_log()
            body = {"reset": True}
        else:
            await self._send(send, _Reply(404, _dumps({"error": "not found"})), [])
            return
        await self._send(send, _Reply(200, _dumps(body)), [])

    def _faults(self) -> dict[str, Any]:
        return {name: getattr(self.config, name) for name in _FAULTS}

    def _set_faults(self, payload: Any) -> dict[str, Any]:
        """Change fault settings at run time (`POST /_sandbox/faults`); the settings in force."""
        if not isinstance(payload, dict):
            raise ValueError("expected a JSON object")
        new = self._faults()
        payload = {_FAULT_ALIASES.get(k, k): v for k, v in payload.items()}
        for name, value in payload.items():
            kind = _FAULTS.get(name)
            if kind is None:
                raise ValueError(f"unknown fault setting {name!r}")
            if kind is bool:
                if type(value) is not bool:
                    raise ValueError(f"{name} must be true or false")
            elif type(value) not in (int, float) or type(value) is bool:
                raise ValueError(f"{name} must be a number")
            elif kind is float and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
            elif kind is int and (value != int(value) or value < 0):
                raise ValueError(f"{name} must be a whole number >= 0")
            new[name] = kind(value)
        lagging = bool(self.config.apply_delay_ms)
        for name, value in new.items():
            setattr(self.config, name, value)
        if self.config.apply_delay_ms and not lagging:
            self._visible = dict(self._levels)  # reads now see writes only when due
        elif lagging and not self.config.apply_delay_ms:
            self._pending.clear()
            self._visible = self._levels
        return new

    def _set_levels(self, payload: Any) -> list[dict[str, Any]]:
        """A manual edit (`POST /_sandbox/levels`): set levels at once, visible to reads at once.

        Items are named like adjustment items; the levels set are returned as in
        `GET /_sandbox/levels`. A bad item changes nothing (ValueError).
        """
        entries = payload if isinstance(payload, list) else [payload]
        cat = self.catalog
        pending: dict[Key, int] = {}
        for it in entries:
            if not isinstance(it, dict) or type(it.get("location_id")) is not int:
                raise ValueError(f"bad item {it!r}")
            if it["location_id"] not in self._locations:
                raise ValueError(f"unknown location {it['location_id']}")
            qty = it.get("quantity")
            if type(qty) is not int or not 0 <= qty <= MAX_QUANTITY:
                raise ValueError(f"bad quantity in {it!r}")
            if "sku" in it:
                idx = cat.by_sku.get(it["sku"])
            elif "variant_id" in it:
                idx = cat.by_variant.get(it["variant_id"])
            else:
                idxs = cat.by_product.get(it.get("product_id"))  # type: ignore[arg-type]
                idx = idxs[0] if idxs and len(idxs) == 1 else None
            if idx is None or cat.items[idx].tracking not in TRACKED:
                raise ValueError(f"no tracked item for {it!r}")
            pending[(it["location_id"], idx)] = qty
        items = cat.items
        for key, qty in pending.items():
            total_key = (key[0], items[key[1]].product_id)
            self._totals[total_key] = self._totals.get(total_key, 0) + qty - self._levels.get(
                key, 0)
            self._levels[key] = qty
            self._visible[key] = qty
        return [
            {"location_id": loc, "sku": items[idx].sku, "product_id": items[idx].product_id,
             "variant_id": items[idx].variant_id, "quantity": qty}
            for (loc, idx), qty in sorted(pending.items())
        ]

    # ---- orders (a separate region: invsync.sandbox.orders holds the logic) ---------------

    def _init_orders(self) -> None:
        from invsync.sandbox.orders import OrderBook

        self._v2_prefix = f"/stores/{self.config.store_hash}/v2/"
        self.orders = OrderBook(find_item=self._order_item, level=self._order_level,
                                move=self._order_move,
                                update_stock_behavior=self.config.update_stock_behavior,
                                refund_stock_adjustment=self.config.refund_stock_adjustment)

    def _is_orders_path(self, path: str) -> bool:
        return path.startswith(self._v2_prefix) or \
            path.rstrip("/") == self._prefix + "settings/inventory"

    def _order_item(self, item: dict[str, Any]) -> tuple[int, str, int, int] | None:
        cat = self.catalog
        if "sku" in item:
            idx = cat.by_sku.get(item["sku"]) if isinstance(item["sku"], str) else None
        elif "variant_id" in item:
            idx = cat.by_variant.get(item["variant_id"])
        else:
            idxs = cat.by_product.get(item.get("product_id"))  # type: ignore[arg-type]
            idx = idxs[0] if idxs and len(idxs) == 1 else None
        if idx is None or cat.items[idx].tracking not in TRACKED:
            return None
        found = cat.items[idx]
        return idx, found.sku, found.product_id, found.variant_id

    def _order_level(self, location_id: int, idx: int) -> int:
        self._flush_visible(time.monotonic())
        return self._levels.get((location_id, idx), 0)

    def _order_move(self, location_id: int, idx: int, delta: int) -> None:
        key = (location_id, idx)
        level = self._levels.get(key, 0) + delta
        total_key = (location_id, self.catalog.items[idx].product_id)
        self._totals[total_key] = self._totals.get(total_key, 0) + delta
        self._levels[key] = level
        self._visible[key] = level

    def _orders_api(self, method: str, path: str, entry: dict[str, Any]) -> _Reply:
        """`GET /v2/orders` and `GET /v3/settings/inventory` (token, quota, faults checked)."""
        from invsync.sandbox.orders import OrderProblem

        if method not in ("GET", "HEAD"):
            raise _Problem(405, "Method not allowed")
        query = dict(parse_qsl(entry["query"], keep_blank_values=True))
        if path.startswith(self._prefix):
            return _Reply(200, _dumps(self.orders.settings()))
        if not self.config.orders_scope:
            raise _Problem(403, "You don't have a required scope to access the endpoint")
        if path[len(self._v2_prefix):].rstrip("/") != "orders":
            raise _Problem(404, "Not found")
        try:
            listed = self.orders.list_orders(query)
        except OrderProblem as p:
            raise _Problem(p.status, p.title) from None
        return _Reply(200, _dumps(listed))

    async def _orders_introspect(self, what: str, method: str, receive: Receive,
                                 send: Send) -> None:
        """`POST /_sandbox/orders`, `POST /_sandbox/orders/{id}/status`, `GET /_sandbox/orders`."""
        from invsync.sandbox.orders import OrderProblem

        parts = what.split("/")
        try:
            if method == "GET" and what == "orders":
                body: Any = self.orders.every_order()
            else:
                raw = await self._read_body(receive, None)
                try:
                    payload = json.loads(raw or b"null")
                except (ValueError, RecursionError):
                    raise OrderProblem(400, "the body is not JSON") from None
                if method == "POST" and what == "orders":
                    body = self.orders.place(payload)
                elif method == "POST" and len(parts) == 3 and parts[2] == "status" \
                        and parts[1].isdigit():
                    body = self.orders.set_status(int(parts[1]), payload)
                else:
                    raise OrderProblem(404, "not found")
        except OrderProblem as p:
            await self._send(send, _Reply(p.status, _dumps({"error": p.title})), [])
            return
        await self._send(send, _Reply(200, _dumps(body)), [])

    def stats(self) -> dict[str, Any]:
        """Counts since the last reset (the body of `GET /_sandbox/stats`)."""
        return {
            "requests": len(self._log),
            "by_status": dict(self._by_status),
            "items_applied": self._items_applied,
            "max_in_flight": self._max_in_flight,
            "item_overlaps": self._item_overlaps,
        }


def create_app(config: SandboxConfig) -> Starlette:
    """Build the sandbox ASGI app; the Sandbox object is at `app.state.sandbox`."""
    core = Sandbox(config)
    app = Starlette(routes=[Mount("", app=core)])
    app.state.sandbox = core
    return app


class _HideDrops(logging.Filter):
    """Keep deliberate connection drops out of uvicorn's error log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DroppedConnection):
            return False
        return record.getMessage() != _DROP_LOG_MESSAGE


def serve(config: SandboxConfig, host: str = "127.0.0.1", port: int = 0) -> None:
    """Run the sandbox until SIGTERM/SIGINT; prints one 'listening on' line first.

    The socket is bound before the line is printed, so port 0 picks a free port and a
    client may connect as soon as it has read the line.
    """
    import uvicorn

    app = create_app(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose
    # proto says TCP, and without it Nagle plus delayed ACKs add ~40 ms to every answer.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        uv_config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        logging.getLogger("uvicorn.error").addFilter(_HideDrops())
        server = uvicorn.Server(uv_config)

        # A signal that arrives before uvicorn installs its own handlers still stops the
        # server; uvicorn re-raises the signal after shutdown and lands here too, so the
        # process ends with exit code 0 instead of dying from the signal.
        def stop(signum: int, frame: Any) -> None:
            server.should_exit = True

        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, stop)
        try:
            bound_port = sock.getsockname()[1]
            shown = f"[{host}]" if family == socket.AF_INET6 else host
            print(
                f"invsync sandbox listening on http://{shown}:{bound_port} "
                f"(store hash: {config.store_hash})",
                flush=True,
            )
            server.run(sockets=[sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    finally:
        sock.close()
