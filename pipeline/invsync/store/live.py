"""The store's live levels: a baseline to diff against, drift checks and run verification.

Levels are read with ``GET /inventory/items`` filtered by location (1000 per page), and by
the items wanted when a file names only some of the catalog, and turned
into the snapshot's shape (location, identifier, item key, on-hand quantity), with a
row for each way an item can be addressed (sku, variant_id, product_id).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import polars as pl

from invsync.errors import StoreError
from invsync.events import Observer
from invsync.store.client import StoreClient, whole_number
from invsync.store.identity import KINDS, query_chunks
from invsync.store.limits import MAX_PAGE_SIZE
from invsync.store.pages import Listing, Page, gather_in_order, json_page
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

    Either way a few requests are out at once (:mod:`invsync.store.pages`): the pages
    after the first once it told how many there are, or the filtered reads.
    """
    wanted = sorted(set(location_ids))
    requests_before = client.requests_sent
    acc = _Levels(emit)
    parse = partial(levels_page, wanted=frozenset(wanted))
    listing = Listing(client, "/inventory/items", _at(wanted), parse)
    filters = await _filtered_reads(listing, keys, known_items) if keys is not None else None
    mode = "full" if filters is None else "filtered"
    if emit:
        emit("read_started", {"locations": wanted, "mode": mode,
                              **({"requests": len(filters)} if mode == "filtered" and filters
                                 else {})})
    if mode == "filtered" and filters is not None:
        await _read_filtered(client, wanted, filters, acc)
    else:
        async with contextlib.aclosing(listing.pages()) as pages:
            async for page in pages:
                acc.add(page)
    if emit:
        emit("read_finished", {"items": acc.count, "levels": acc.levels,
                               "requests": client.requests_sent - requests_before})
    levels = levels_by_key(acc.frame(dedupe=mode == "filtered"))
    if mode == "filtered" and keys is not None:
        # A product id is a key only if one item carries it, which only a product_id:in
        # read (all its variants) can tell: keep just the keys that were asked for.
        levels = levels.join(keys.select("identifier", "item_key").unique(),
                             on=["identifier", "item_key"], how="semi")
    return levels


async def _filtered_reads(listing: Listing[pl.DataFrame], keys: pl.DataFrame,
                          known_items: int) -> list[tuple[str, str]] | None:
    """The filtered reads that name ``keys`` when they take fewer requests than reading
    every item, else None (then ``listing``'s first page may already be read)."""
    named = keys.select("identifier", "item_key").unique().height
    pages = math.ceil(max(known_items, named, 1) / MAX_PAGE_SIZE)
    # The floor spares chunking every value of a big file when a full read is cheaper.
    floor = filter_floor(keys)
    filters: list[tuple[str, str]] | None = None
    if floor < pages:
        filters = read_filters(keys)
        if filters is None:
            return None
        if len(filters) <= pages:  # a full read takes at least `pages` requests
            return filters
    # Undecided: the full read's first page tells the store's total; it is kept when
    # reading on is the cheaper way, else the filtered reads follow.
    total = (await listing.first()).total
    if total is None:
        return None
    rest = math.ceil(total / MAX_PAGE_SIZE) - 1
    if floor >= rest:
        return None
    if filters is None:
        filters = read_filters(keys)
    return filters if filters is not None and len(filters) < rest else None


async def stocked_at_least(client: StoreClient, location_id: int, needed: int) -> int:
    """Items holding stock at ``location_id``, counted page by page (one request at a time)
    until ``needed`` are seen or the listing ends: a lower bound, exact when under
    ``needed``. The mass-zeroing brake asks it when what it knows of a location (the
    file's own items, a partial snapshot) is too little to judge a share by."""
    listing = Listing(client, "/inventory/items", _at([location_id]),
                      partial(levels_page, wanted=frozenset([location_id])), in_flight=1)
    seen = 0
    async with contextlib.aclosing(listing.pages()) as pages:
        async for page in pages:
            seen += page.entries.filter(pl.col("quantity") > 0).height
            if seen >= needed:
                break
    return seen


def filter_floor(keys: pl.DataFrame) -> int:
    """Fewest filtered reads :func:`read_filters` could make of ``keys``: a value costs at
    least its length and a separator (nothing is encoded, so this is cheap)."""
    floor = 0
    for kind in KINDS:
        named = keys.filter(pl.col("identifier") == kind)["item_key"].drop_nulls()
        if kind == "sku":
            named = named.filter(named != "")
        else:
            named = named.cast(pl.Int64, strict=False).drop_nulls().cast(pl.String)
        named = named.unique()
        if named.len():
            size = int(named.str.len_bytes().sum()) + 3 * named.len()
            floor += math.ceil(size / (READ_QUERY_BUDGET + 3))
    return floor


def _at(location_ids: list[int], **filters: str) -> dict[str, str]:
    """The query of a listing at ``location_ids``, narrowed by ``filters``."""
    return {"location_id:in": ",".join(str(i) for i in sorted(location_ids)), **filters}


async def _read_filtered(client: StoreClient, wanted: list[int],
                         filters: list[tuple[str, str]], acc: _Levels) -> None:
    """Every filtered read, a few out at once; pages are taken in the filters' order."""
    parse = partial(levels_page, wanted=frozenset(wanted))

    async def read(name: str, value: str) -> list[Page[pl.DataFrame]]:
        listing = Listing(client, "/inventory/items", _at(wanted, **{name: value}), parse,
                          in_flight=1)
        async with contextlib.aclosing(listing.pages()) as pages:
            return [page async for page in pages]

    works = [partial(read, name, value) for name, value in filters]
    async with contextlib.aclosing(gather_in_order(works)) as results:
        async for read_pages in results:
            for page in read_pages:
                acc.add(page)


RAW_SCHEMA = {"location_id": pl.Int64, "sku": pl.String, "variant_id": pl.Int64,
              "product_id": pl.Int64, "quantity": pl.Int64}
"""One row per (item, location) listed: the item's identity and its on-hand level."""

# Every number is read as text, then converted strictly: a quantity of 12.7 or true must
# not become 12 or 1 (such a page is read again the slow way, which refuses it).
_TEXT_PAGE = pl.Struct({
    "data": pl.List(pl.Struct({
        "identity": pl.Struct({"sku": pl.String, "variant_id": pl.String,
                               "product_id": pl.String}),
        "locations": pl.List(pl.Struct({"location_id": pl.String,
                                        "total_inventory_onhand": pl.String})),
    })),
    "meta": pl.Struct({"pagination": pl.Struct({"total": pl.String,
                                                "total_pages": pl.String})}),
})


def levels_page(body: bytes, number: int, what: str, *,
                wanted: frozenset[int]) -> Page[pl.DataFrame]:
    """A ``GET /inventory/items`` page as :data:`RAW_SCHEMA` rows at the ``wanted``
    locations, parsed by polars (no Python object per entry) when the page is plain,
    else entry by entry (which names what is wrong)."""
    try:
        return _fast_levels_page(body, number, wanted)
    except (pl.exceptions.PolarsError, ValueError, TypeError, OverflowError):
        pass
    page = json_page(body, number, what)
    return Page(number, _slow_levels(page.entries, wanted, what, number), page.count,
                page.total, page.total_pages)


def _fast_levels_page(body: bytes, number: int, wanted: frozenset[int]) -> Page[pl.DataFrame]:
    """:func:`levels_page` by polars; raises (ValueError, a polars error) on anything
    that is not a plain page, to be read the slow way."""
    top = pl.read_json(io.BytesIO(body), schema=dict(_TEXT_PAGE.to_schema()))
    if top.height != 1:
        raise ValueError("not one JSON object")
    pagination = top.select(pl.col("meta").struct.field("pagination")).unnest("pagination")
    meta = pagination.select(pl.all().cast(pl.Int64, strict=True)).row(0)
    if any(v is None and t is not None for v, t in zip(meta, pagination.row(0), strict=True)):
        raise ValueError("unusable pagination")
    entries = top.select(pl.col("data").explode()).unnest("data")
    if entries.height == 1 and top["data"].list.len().item() == 0:
        entries = entries.clear()
    count = entries.height
    if entries["identity"].null_count() or entries["locations"].null_count():
        raise ValueError("an entry without identity or locations")
    levels = entries.unnest("identity").explode("locations").filter(
        pl.col("locations").is_not_null()).unnest("locations")
    if levels.height != entries["locations"].list.len().sum():
        raise ValueError("a null level")
    if levels["location_id"].null_count() or levels["total_inventory_onhand"].null_count():
        raise ValueError("a level without location_id or total_inventory_onhand")
    frame = levels.select(
        pl.col("location_id").cast(pl.Int64, strict=True),
        pl.col("sku"),
        pl.col("variant_id").cast(pl.Int64, strict=True),
        pl.col("product_id").cast(pl.Int64, strict=True),
        pl.col("total_inventory_onhand").cast(pl.Int64, strict=True).alias("quantity"),
    ).filter(pl.col("location_id").is_in(sorted(wanted)))
    return Page(number, frame, count, meta[0], meta[1])


def _slow_levels(data: list[dict[str, Any]], wanted: frozenset[int], what: str,
                 number: int) -> pl.DataFrame:
    """:data:`RAW_SCHEMA` rows of a page's JSON entries; :class:`StoreError` naming the
    first unusable one."""
    rows: list[tuple[int, str | None, int | None, int | None, int]] = []
    for i, entry in enumerate(data, start=1):
        try:
            ident = entry.get("identity") or {}
            sku, vid, pid = ident.get("sku"), _id(ident.get("variant_id")), _id(
                ident.get("product_id"))
            for level in entry.get("locations") or []:
                loc = whole_number(level["location_id"])
                if loc in wanted:
                    rows.append((loc, None if sku is None else str(sku), vid, pid,
                                 whole_number(level["total_inventory_onhand"])))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise StoreError(f"{what}: the store listed an item without a usable "
                             f"identity, location_id or total_inventory_onhand "
                             f"(page {number}, item {i})") from None
    return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")


class _Levels:
    """Collects the levels read, page by page, and tells how far the read is."""

    def __init__(self, emit: Observer | None) -> None:
        self.emit = emit
        self.frames: list[pl.DataFrame] = []
        self.count = 0
        self.levels = 0

    def add(self, page: Page[pl.DataFrame]) -> None:
        """Take a page's rows."""
        before = self.count
        self.frames.append(page.entries)
        self.levels += page.entries.height
        self.count += page.count
        if self.emit and self.count // 1000 > before // 1000:
            self.emit("read_page", {"items": self.count})

    def frame(self, *, dedupe: bool) -> pl.DataFrame:
        raw = pl.concat(self.frames) if self.frames else pl.DataFrame(schema=RAW_SCHEMA)
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


