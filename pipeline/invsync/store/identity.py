"""One key per item: rows naming one item by SKU, variant id or product id are one item.

A run can meet one item under two kinds of identifier: a file with a ``sku`` row and a
``variant_id`` row for it, or a file keyed by variant id while the snapshot holds the item
by SKU. Whenever the kinds a run sees at a location (the file's and the snapshot's) are
more than one, every variant and product id among them is resolved through
``GET /inventory/items`` (its ``identity``: sku, variant_id, product_id), filtered with
``variant_id:in`` / ``product_id:in`` in short chunks, so only the items named are read.

The canonical key of an item the store knows is its **SKU**, else its **variant id**
(every inventory item has one; a product tracked by product has its base variant's).
A SKU row is therefore already canonical and needs no request. A product id is resolved
only when exactly one inventory item carries it (a product tracked by variant lists one
item per variant: addressing it by product id is refused by the store anyway).
Ids the store does not know keep their own key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import polars as pl

if TYPE_CHECKING:
    from invsync.store.client import StoreClient


ID_KINDS = ("variant_id", "product_id")
KINDS = ("sku", *ID_KINDS)
MAPPING_SCHEMA = {"identifier": pl.String, "item_key": pl.String,
                  "canon_identifier": pl.String, "canon_key": pl.String}
QUERY_BUDGET = 1800
"""Characters of one URL-encoded filter value (a comma is ``%2C``): URLs stay short."""

Fetch = Callable[[dict[str, list[int]]], tuple[list[dict[str, Any]], int]]
"""Reads the identities of ``{kind: ids}``; returns them and the requests it took."""


def query_chunks(values: Sequence[int | str], budget: int = QUERY_BUDGET) -> Iterator[str]:
    """Comma-joined runs of ``values``, each at most ``budget`` characters once encoded."""
    chunk: list[str] = []
    size = 0
    for value in values:
        text = str(value)
        # What the value costs in the URL once percent-encoded (a comma is ``%2C``).
        encoded = len(text) if isinstance(value, int) else len(quote(text, safe=""))
        cost = encoded + (3 if chunk else 0)
        if chunk and size + cost > budget:
            yield ",".join(chunk)
            chunk, size = [], 0
            cost = encoded
        chunk.append(text)
        size += cost
    if chunk:
        yield ",".join(chunk)


async def read_identities(client: StoreClient, ids: dict[str, list[int]]) -> list[dict[str, Any]]:
    """The ``identity`` of every inventory item carrying one of ``ids`` (kind -> ids); the
    chunks' reads overlap, a few at once (see :mod:`invsync.store.pages`)."""
    from invsync.store.pages import Listing, gather_in_order, json_page

    async def read(kind: str, chunk: str) -> list[dict[str, Any]]:
        listing = Listing(client, "/inventory/items", {f"{kind}:in": chunk}, json_page,
                          in_flight=1)
        found: list[dict[str, Any]] = []
        async with contextlib.aclosing(listing.pages()) as pages:
            async for page in pages:
                found.extend(e["identity"] for e in page.entries
                             if isinstance(e.get("identity"), dict))
        return found

    works = [partial(read, kind, chunk) for kind, values in ids.items()
             for chunk in query_chunks(sorted(set(values)))]
    out: list[dict[str, Any]] = []
    async with contextlib.aclosing(gather_in_order(works)) as results:
        async for found in results:
            out.extend(found)
    return out


def _kinds(frame: pl.DataFrame, where: pl.Expr) -> set[str]:
    """The identifier kinds among the rows of ``frame`` that ``where`` selects."""
    present = frame.select(
        [(where & (pl.col("identifier") == k)).any().alias(k) for k in KINDS]).row(0)
    return {k for k, found in zip(KINDS, present, strict=True) if found}


def ids_to_resolve(keys: pl.DataFrame) -> dict[str, list[int]]:
    """The variant and product ids among ``keys`` (``identifier``, ``item_key``)."""
    out: dict[str, list[int]] = {}
    for kind in ID_KINDS:
        values = keys.filter(pl.col("identifier") == kind)["item_key"].cast(
            pl.Int64, strict=False).drop_nulls().unique().sort().to_list()
        if values:
            out[kind] = values
    return out


def canonical_mapping(identities: list[dict[str, Any]],
                      asked: dict[str, list[int]]) -> pl.DataFrame:
    """(identifier, item_key) -> canonical (identifier, item_key), for the asked ids that move."""
    rows = []
    for ident in identities:
        try:
            vid = int(ident["variant_id"]) if ident.get("variant_id") is not None else None
            pid = int(ident["product_id"]) if ident.get("product_id") is not None else None
        except (TypeError, ValueError):
            continue
        sku = ident.get("sku")
        rows.append({"sku": str(sku) if sku not in (None, "") else None,
                     "variant_id": vid, "product_id": pid})
    found = pl.DataFrame(rows, schema={"sku": pl.String, "variant_id": pl.Int64,
                                       "product_id": pl.Int64}).unique(maintain_order=True)
    found = found.with_columns(
        canon_identifier=pl.when(pl.col("sku").is_not_null()).then(pl.lit("sku"))
        .when(pl.col("variant_id").is_not_null()).then(pl.lit("variant_id")),
        canon_key=pl.coalesce(pl.col("sku"), pl.col("variant_id").cast(pl.String)),
    ).filter(pl.col("canon_key").is_not_null())
    parts = []
    for kind in ID_KINDS:
        wanted = pl.Series(kind, asked.get(kind, []), dtype=pl.Int64)
        hits = found.filter(pl.col(kind).is_in(wanted.implode()))
        if kind == "product_id":  # a product id names one item only if one item carries it
            hits = hits.filter(pl.len().over("product_id") == 1)
        parts.append(hits.select(pl.lit(kind).alias("identifier"),
                                 pl.col(kind).cast(pl.String).alias("item_key"),
                                 "canon_identifier", "canon_key"))
    mapping = pl.concat(parts).unique(["identifier", "item_key"], keep="first")
    moved = (pl.col("identifier") != pl.col("canon_identifier")) | (
        pl.col("item_key") != pl.col("canon_key"))
    return mapping.filter(moved).cast(MAPPING_SCHEMA)  # type: ignore[arg-type]


def apply_mapping(frame: pl.DataFrame, mapping: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with its ``identifier``/``item_key`` replaced by their canonical key."""
    if mapping.height == 0:
        return frame
    joined = frame.join(mapping, on=["identifier", "item_key"], how="left",
                        maintain_order="left")
    return joined.with_columns(
        identifier=pl.coalesce("canon_identifier", "identifier"),
        item_key=pl.coalesce("canon_key", "item_key"),
    ).drop("canon_identifier", "canon_key")


def canonical_snapshot(snapshot: pl.DataFrame,
                       mapping: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """The snapshot keyed canonically; (frame, entries re-keyed, items whose levels conflicted).

    Two entries that turn out to be one item keep one level when they agree; when they
    disagree the level is unknown (a null quantity), so the next run sends the item and
    ``--zero-missing`` still knows it exists.
    """
    keys = ["location_id", "identifier", "item_key"]
    moved = snapshot.join(mapping.select("identifier", "item_key"),
                          on=["identifier", "item_key"], how="semi").height
    if moved == 0:
        return snapshot, 0, 0
    canon = apply_mapping(snapshot, mapping)
    levels = canon.group_by(keys).agg(pl.col("quantity").n_unique().alias("_levels"))
    conflicts = levels.filter(pl.col("_levels") > 1).select(keys)
    # n_unique counts null as a level of its own: an unknown entry makes the item unknown.
    out = canon.unique(keys, keep="first", maintain_order=True).with_columns(
        quantity=pl.when(pl.struct(keys).is_in(conflicts.select(pl.struct(keys)).to_series()
                                               .implode()))
        .then(pl.lit(None, pl.Int64)).otherwise(pl.col("quantity")))
    return out.select(snapshot.columns), moved, conflicts.height


class IdentityResolver:
    """Called by validation with the file's keys; returns the canonical mapping (maybe empty).

    ``fetch`` is None without an access token: then nothing is resolved, and a note says
    so when identifier kinds meet.
    """

    def __init__(self, snapshot: pl.DataFrame, fetch: Fetch | None) -> None:
        self.snapshot = snapshot
        self.fetch = fetch
        self.mapping: pl.DataFrame | None = None
        self.notes: list[str] = []

    def __call__(self, keys: pl.DataFrame) -> pl.DataFrame:
        """``keys``: the file's (location_id, identifier, item_key) rows."""
        empty = pl.DataFrame(schema=MAPPING_SCHEMA)
        # Kinds are found with a vectorised pass or two, nothing copied: a file and a
        # snapshot of one kind (the usual night) cost a few milliseconds per million rows.
        named = pl.col("item_key").is_not_null()
        file_kinds = _kinds(keys, named)
        other = pl.lit(True)
        for kind in file_kinds:
            other = other & (pl.col("identifier") != kind)
        # A snapshot holding no other kind anywhere holds none at the file's locations: the
        # file's locations (a pass over every row) are not needed to say so.
        if len(file_kinds) < 2 and not self.snapshot.select(other.any()).item():
            return empty
        locations = keys["location_id"].drop_nulls().unique().implode()
        held = pl.col("location_id").is_in(locations)
        if len(file_kinds) < 2 and not self.snapshot.select((held & other).any()).item():
            return empty
        kinds = sorted(file_kinds | _kinds(self.snapshot, held))
        if len(kinds) < 2:
            return empty
        where = ("the file names" if len(file_kinds) > 1
                 else "the file and the snapshot at its locations name")
        ids = pl.col("identifier").is_in(ID_KINDS)
        if self.fetch is None:
            self.notes.append(
                f"{where} items by {' and '.join(kinds)}; without an access token these "
                f"could not be resolved to one identity per item, so one item named two ways "
                f"counts as two (run with a token to resolve them)")
            return empty
        asked = ids_to_resolve(pl.concat([
            keys.filter(named & ids).select("identifier", "item_key"),
            self.snapshot.filter(held & ids).select("identifier", "item_key")]))
        if not asked:
            return empty
        identities, requests = self.fetch(asked)
        self.mapping = canonical_mapping(identities, asked)
        total = sum(len(v) for v in asked.values())
        self.notes.append(
            f"{where} items by {' and '.join(kinds)}: {total:,} ids resolved through "
            f"GET /inventory/items ({requests} requests); {self.mapping.height:,} of them are "
            f"keyed by the item's SKU (or variant id) instead")
        return self.mapping
