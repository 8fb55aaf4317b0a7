"""Subtract what sold since the file's as-of time from the file's levels (before the diff).

A warehouse export says 10 at 02:00; two units sold on the storefront since, and the store
took them off stock. The file's 10 is then 8 now: :func:`subtract_sold` lowers each valid
row's quantity by the units sold since (never below 0), matched the way the row names its
item: a SKU row by the order line's SKU, a variant id row by its variant id, a product id
row by every line of that product. Only rows at the location the store sells from
(``location_id``, the default location 1) are lowered; the order listing does not say
which location an order took its units from.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

FILE_LEVEL = "file_level"
SOLD = "sold_since_as_of"


@dataclass(frozen=True)
class SoldSummary:
    """What the subtraction did."""

    rows_lowered: int
    units_subtracted: int
    units_sold: int
    """Units sold since the as-of time of the items the file names at ``location_id``."""
    units_not_in_file: int
    """Units sold since the as-of time of items no row at ``location_id`` names."""
    other_locations: list[int]
    """Locations of the file other than ``location_id``: their rows were not lowered."""


def sold_by_key(lines: pl.DataFrame) -> pl.DataFrame:
    """Units sold per (``identifier``, ``key``): by SKU, by variant id and by product id."""
    parts = []
    for identifier in ("sku", "variant_id", "product_id"):
        parts.append(
            lines.filter(pl.col(identifier).is_not_null())
            .group_by(pl.col(identifier).cast(pl.String).alias("key"))
            .agg(pl.col("units").sum().alias(SOLD))
            .with_columns(pl.lit(identifier).alias("identifier")))
    return pl.concat(parts).select("identifier", "key", SOLD)


def subtract_sold(valid: pl.DataFrame, lines: pl.DataFrame, *, location_id: int = 1,
                  maximum: int | None = None) -> tuple[pl.DataFrame, SoldSummary]:
    """``valid`` with ``quantity`` lowered by the units sold since (never below 0).

    Adds ``file_level`` (the level the file gave, after the quantity rules but the maximum)
    and ``sold_since_as_of`` (units sold since the as-of time; null at other locations,
    where it is not known). ``lines`` has ``sku``, ``product_id``, ``variant_id``,
    ``units``. ``maximum`` (the quantity rule) caps what is left, at every location: 600
    with 200 sold since is 400 under a maximum of 500, not 500 − 200.
    """
    sold = sold_by_key(lines)
    here = pl.col("location_id") == location_id
    joined = valid.join(sold, left_on=["address", "address_key"],
                        right_on=["identifier", "key"], how="left")
    out = joined.with_columns(
        pl.col("quantity").alias(FILE_LEVEL),
        pl.when(here).then(pl.col(SOLD).fill_null(0)).otherwise(None).cast(pl.Int64)
        .alias(SOLD),
    ).with_columns(
        pl.when(here).then((pl.col("quantity") - pl.col(SOLD)).clip(lower_bound=0))
        .otherwise(pl.col("quantity")).cast(pl.Int64).alias("quantity"))
    if maximum is not None:
        out = out.with_columns(pl.col("quantity").clip(upper_bound=maximum))
    out = out.select(*valid.columns, FILE_LEVEL, SOLD)
    at_here = out.filter(here)
    named = sold.join(at_here.select(pl.col("address").alias("identifier"),
                                     pl.col("address_key").alias("key")).unique(),
                      on=["identifier", "key"], how="semi")
    numbered = lines.with_row_index("__line")
    units_sold = int(numbered.join(_lines_named(numbered, named), on="__line", how="semi")
                     ["units"].sum() or 0)
    others = sorted(set(out.filter(~here)["location_id"].to_list()))
    summary = SoldSummary(
        rows_lowered=at_here.filter(pl.col(SOLD) > 0).height,
        units_subtracted=int(at_here.select(pl.min_horizontal(FILE_LEVEL, SOLD).sum()).item()
                             or 0),
        units_sold=units_sold,
        units_not_in_file=int(lines["units"].sum() or 0) - units_sold,
        other_locations=others)
    return out, summary


def _lines_named(numbered: pl.DataFrame, named: pl.DataFrame) -> pl.DataFrame:
    """The ``__line`` numbers of the order lines some row of the file names."""
    hits = []
    for identifier in ("sku", "variant_id", "product_id"):
        keys = named.filter(pl.col("identifier") == identifier)["key"]
        hits.append(numbered.filter(pl.col(identifier).cast(pl.String).is_in(keys.implode()))
                    .select("__line"))
    return pl.concat(hits).unique()
