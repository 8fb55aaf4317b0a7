"""The store's live levels: a baseline to diff against, drift checks and run verification.

Levels are read with ``GET /inventory/items`` filtered by location (1000 per page), and by
the items wanted when a file names only some of the catalog, and turned
into the snapshot's shape (location, identifier, item key, on-hand quantity), with a
row for each way an item can be addressed (sku, variant_id, product_id).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from invsync.errors import StoreError
from invsync.events import Observer
from invsync.store.client import StoreClient, whole_number
from invsync.store.identity import KINDS, query_chunks
from invsync.store.limits import MAX_PAGE_SIZE
from invsync.tables import KEY, SNAPSHOT_SCHEMA

READ_QUERY_BUDGET = 6000
"""Characters of one URL-encoded ``sku:in``/``variant_id:in``/``product_id:in`` value in a
filtered read: about 400 SKUs a request, and the whole URL stays under the 8 KiB that
servers and proxies commonly accept."""


def read_filters(keys: pl.DataFrame) -> list[tuple[str, str]] | None:
    """The ``(filter, value)`` requests that read exactly the items ``keys`` name
    (``identifier``, ``item_key``), chunked under :data:`READ_QUERY_BUDGET`; None when
    they cannot be expressed as filters (a SKU holding a comma)."""
    out: list[tuple[str, str]] = []
    for kind in KINDS:
        named = keys.filter(pl.col("identifier") == kind)["item_key"].drop_nulls().unique()
        if kind == "sku":
            values: list[int | str] = sorted(v for v in named.to_list() if v != "")
            if any("," in str(v) for v in values):
                return None
        else:
            values = sorted(named.cast(pl.Int64, strict=False).drop_nulls().to_list())
        out.extend((f"{kind}:in", chunk) for chunk in query_chunks(values, READ_QUERY_BUDGET))
    return out


async def read_levels(client: StoreClient, location_ids: Iterable[int],
                      emit: Observer | None = None, *, keys: pl.DataFrame | None = None,
                      known_items: int = 0) -> pl.DataFrame:
    """On-hand levels at ``location_ids`` in the snapshot's shape (KEY + quantity).

    Without ``keys`` every item at the locations is read (1000 a page). With ``keys``
    (``identifier``, ``item_key``: the items wanted) only those are read, through
    ``sku:in``/``variant_id:in``/``product_id:in`` filters, unless a full read takes no
    more requests: ``known_items`` (items known to exist, e.g. the snapshot's) bounds the
    catalog from below; when that is not enough to decide, the full read's first page
    tells the store's total, and is kept when reading on is the cheaper way.
    """
    wanted = sorted(set(location_ids))
    requests_before = client.requests_sent
    filters = read_filters(keys) if keys is not None else None
    acc = _Levels(set(wanted), emit)
    full: Any = None  # the full read, when its first page was read to learn the total
    mode = "full"
    if filters is not None and keys is not None:
        named = keys.select("identifier", "item_key").unique().height
        if len(filters) < math.ceil(max(known_items, named, 1) / MAX_PAGE_SIZE):
            mode = "filtered"
        else:
            # Undecided: the full read's first page tells the store's total; it is kept
            # when reading on is the cheaper way, else the filtered reads follow.
            totals: list[int | None] = []
            full = client.iter_items(wanted, on_total=totals.append)
            first: list[dict[str, Any]] = []
            async for entry in full:
                first.append(entry)
                if len(first) >= _page_len(totals):
                    break  # the first page is in; the next entry would fetch page 2
            total = totals[0] if totals else None
            if total is not None and len(filters) < math.ceil(total / MAX_PAGE_SIZE) - 1:
                mode = "filtered"
                await full.aclose()
                full = None
            else:
                for entry in first:
                    acc.add(entry)
    if emit:
        emit("read_started", {"locations": wanted, "mode": mode,
                              **({"requests": len(filters)} if mode == "filtered" and filters
                                 else {})})
    if mode == "filtered" and filters is not None:
        for name, value in filters:
            async for entry in client.iter_items(wanted, {name: value}):
                acc.add(entry)
    else:
        async for entry in full if full is not None else client.iter_items(wanted):
            acc.add(entry)
    if emit:
        emit("read_finished", {"items": acc.count, "levels": len(acc.locs),
                               "requests": client.requests_sent - requests_before})
    levels = levels_by_key(acc.frame(dedupe=mode == "filtered"))
    if mode == "filtered" and keys is not None:
        # A product id is a key only if one item carries it, which only a product_id:in
        # read (all its variants) can tell: keep just the keys that were asked for.
        levels = levels.join(keys.select("identifier", "item_key").unique(),
                             on=["identifier", "item_key"], how="semi")
    return levels


def _page_len(totals: list[int | None]) -> int:
    """Entries the first page holds: a full page, or all there are."""
    total = totals[0] if totals else None
    return MAX_PAGE_SIZE if total is None else max(1, min(total, MAX_PAGE_SIZE))


class _Levels:
    """Collects the per-location levels of ``GET /inventory/items`` entries."""

    def __init__(self, wanted: set[int], emit: Observer | None) -> None:
        self.wanted, self.emit = wanted, emit
        self.locs: list[int] = []
        self.skus: list[str | None] = []
        self.vids: list[int | None] = []
        self.pids: list[int | None] = []
        self.qtys: list[int] = []
        self.count = 0

    def add(self, entry: dict[str, Any]) -> None:
        try:
            ident = entry.get("identity") or {}
            sku, vid, pid = ident.get("sku"), _id(ident.get("variant_id")), _id(
                ident.get("product_id"))
            for level in entry.get("locations") or []:
                loc = whole_number(level["location_id"])
                if loc not in self.wanted:
                    continue
                self.locs.append(loc)
                self.skus.append(None if sku is None else str(sku))
                self.vids.append(vid)
                self.pids.append(pid)
                self.qtys.append(whole_number(level["total_inventory_onhand"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise StoreError("GET /inventory/items: the store listed an item without a usable "
                             f"identity, location_id or total_inventory_onhand "
                             f"(item {self.count + 1})") from None
        self.count += 1
        if self.emit and self.count % 1000 == 0:
            self.emit("read_page", {"items": self.count})

    def frame(self, *, dedupe: bool) -> pl.DataFrame:
        raw = pl.DataFrame({"location_id": self.locs, "sku": self.skus, "variant_id": self.vids,
                            "product_id": self.pids, "quantity": self.qtys},
                           schema={"location_id": pl.Int64, "sku": pl.String,
                                   "variant_id": pl.Int64, "product_id": pl.Int64,
                                   "quantity": pl.Int64})
        # Filtered reads may list one item twice (asked by SKU and by product id).
        return raw.unique(maintain_order=True) if dedupe else raw


def _id(value: Any) -> int | None:
    return None if value is None else whole_number(value)


def levels_by_key(raw: pl.DataFrame) -> pl.DataFrame:
    """One row per way of addressing each item; a product id shared by variants is left out."""
    by_sku = raw.filter(pl.col("sku").is_not_null() & (pl.col("sku") != "")).select(
        "location_id", pl.lit("sku").alias("identifier"), pl.col("sku").alias("item_key"),
        "quantity")
    by_variant = raw.filter(pl.col("variant_id").is_not_null()).select(
        "location_id", pl.lit("variant_id").alias("identifier"),
        pl.col("variant_id").cast(pl.String).alias("item_key"), "quantity")
    # A product tracked by variant lists one entry per variant under the same product id:
    # addressing it by product id is refused, so only a product id seen once is a key.
    by_product = raw.filter(pl.col("product_id").is_not_null()).filter(
        pl.len().over("location_id", "product_id") == 1).select(
        "location_id", pl.lit("product_id").alias("identifier"),
        pl.col("product_id").cast(pl.String).alias("item_key"), "quantity")
    return pl.concat([by_sku, by_variant, by_product]).cast(SNAPSHOT_SCHEMA)  # type: ignore[arg-type]


@dataclass
class Comparison:
    """Expected levels against the store's live ones."""

    expected: int
    matched: int
    differences: pl.DataFrame
    """KEY + ``expected`` + ``live`` (null: the store does not list the item)."""
    reads: int = 1
    seconds: float = 0.0
    read_at: str | None = None
    """When the live levels were first read (ISO 8601, to the millisecond)."""


def compare(expected: pl.DataFrame, live: pl.DataFrame) -> Comparison:
    """Items of ``expected`` (KEY + quantity) whose live level differs."""
    joined = expected.select(*KEY, pl.col("quantity").alias("expected")).join(
        live.select(*KEY, pl.col("quantity").alias("live")), on=KEY, how="left")
    diff = joined.filter(pl.col("live").is_null() | (pl.col("live") != pl.col("expected")))
    return Comparison(expected=expected.height, matched=expected.height - diff.height,
                      differences=diff.sort(pl.col("expected") - pl.col("live").fill_null(0),
                                            descending=True))


