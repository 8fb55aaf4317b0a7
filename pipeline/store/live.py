"""The store's live levels: a baseline to diff against, drift checks and run verification.

Levels are read with ``GET /inventory/items`` filtered by location (1000 per page) and turned
into the snapshot's shape (location, identifier, item key, on-hand quantity), with a
row for each way an item can be addressed (sku, variant_id, product_id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import polars as pl

from invsync.errors import StoreError
from invsync.store.client import StoreClient, whole_number
from invsync.tables import KEY, SNAPSHOT_SCHEMA

Event = Callable[[str, dict[str, Any]], None]


async def read_levels(client: StoreClient, location_ids: Iterable[int],
                      emit: Event | None = None) -> pl.DataFrame:
    """On-hand levels at ``location_ids`` in the snapshot's shape (KEY + quantity)."""
    wanted = set(location_ids)
    locs, skus, vids, pids, qtys = [], [], [], [], []
    count = 0
    if emit:
        emit("read_started", {"locations": sorted(wanted)})
    # One paged pass over GET /inventory/items, filtered by location (1000 items a page).
    async for entry in client.iter_items(sorted(wanted)):
        try:
            ident = entry.get("identity") or {}
            sku, vid, pid = ident.get("sku"), _id(ident.get("variant_id")), _id(
                ident.get("product_id"))
            for level in entry.get("locations") or []:
                loc = whole_number(level["location_id"])
                if loc not in wanted:
                    continue
                locs.append(loc)
                skus.append(None if sku is None else str(sku))
                vids.append(vid)
                pids.append(pid)
                qtys.append(whole_number(level["total_inventory_onhand"]))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise StoreError("GET /inventory/items: the store listed an item without a usable "
                             f"identity, location_id or total_inventory_onhand (item {count + 1})"
                             ) from None
        count += 1
        if emit and count % 1000 == 0:
            emit("read_page", {"items": count})
    if emit:
        emit("read_finished", {"items": count, "levels": len(locs)})
    raw = pl.DataFrame({"location_id": locs, "sku": skus, "variant_id": vids,
                        "product_id": pids, "quantity": qtys},
                       schema={"location_id": pl.Int64, "sku": pl.String,
                               "variant_id": pl.Int64, "product_id": pl.Int64,
                               "quantity": pl.Int64})
    return levels_by_key(raw)


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


def compare(expected: pl.DataFrame, live: pl.DataFrame) -> Comparison:
    """Items of ``expected`` (KEY + quantity) whose live level differs."""
    joined = expected.select(*KEY, pl.col("quantity").alias("expected")).join(
        live.select(*KEY, pl.col("quantity").alias("live")), on=KEY, how="left")
    diff = joined.filter(pl.col("live").is_null() | (pl.col("live") != pl.col("expected")))
    return Comparison(expected=expected.height, matched=expected.height - diff.height,
                      differences=diff.sort(pl.col("expected") - pl.col("live").fill_null(0),
                                            descending=True))


