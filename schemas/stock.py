"""The pandera schema of a stock row, after its text cells were parsed.

The frame this schema checks is built by :mod:`invsync.stages.validate`: each canonical
column trimmed as text (``*_text``) and parsed (``product_id``, ``quantity``, ...;
null where the text is absent or unparseable). Every row-level rule is a named
pandera check whose name is the stable reason code reported for the rows it fails.
Checks are listed in priority order: a row failing several reports the first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:  # pandera is imported when the schema is built, off the start-up path
    import pandera.polars as pa

MAX_QUANTITY = 2_147_483_647
"""The store's ceiling for an on-hand level (and for ids)."""


@dataclass(frozen=True)
class Reason:
    """A stable rejection reason: its code, the canonical column it blames, a message."""

    code: str
    column: str
    message: str
    """A template; ``{value}`` is replaced by the offending cell's text."""


REASONS: dict[str, Reason] = {
    r.code: r
    for r in [
        Reason("missing_identifier", "sku", "no sku, product_id or variant_id in this row"),
        Reason("invalid_variant_id", "variant_id",
               "variant_id '{value}' is not a positive whole number"),
        Reason("invalid_product_id", "product_id",
               "product_id '{value}' is not a positive whole number"),
        Reason("invalid_location", "location_id",
               "location '{value}' is not a location id (a positive whole number)"),
        Reason("ambiguous_location", "location_id",
               "location '{value}' is one location's id and another location's code; "
               "head the column Location ID or Location Code to say which"),
        Reason("unknown_location", "location_id",
               "location '{value}' does not exist in the store"),
        Reason("disabled_location", "location_id",
               "location '{value}' is disabled in the store and accepts no stock changes"),
        Reason("location_mismatch", "location_id",
               "location id '{value}' and this row's location code name different locations"),
        Reason("missing_quantity", "quantity", "quantity is empty"),
        Reason("date_in_column", "quantity", "'{value}' is a date, not a quantity or id"),
        Reason("quantity_not_whole", "quantity", "quantity '{value}' is not a whole number"),
        Reason("quantity_negative", "quantity",
               "quantity '{value}' is negative; stock cannot go below 0"),
        Reason("quantity_too_large", "quantity",
               f"quantity '{{value}}' is above the store's maximum of {MAX_QUANTITY:,}"),
        Reason("duplicate_item", "sku",
               "the same item at the same location is in rows {value}; keep one row"),
        Reason("refused_by_store", "sku", "the store refused this item: {value}"),
        # Found by ingest, before parsing: the row itself (or one of its used cells).
        Reason("unreadable_row", "sku", "this row cannot be read"),
        Reason("cell_too_long", "sku", "a cell of this row is too long"),
        Reason("formula_not_calculated", "quantity",
               "this cell holds a formula that was never calculated; open and save the file "
               "in Excel first"),
    ]
}
"""Every reason code invsync reports, in priority order."""


def _text(name: str) -> pl.Expr:
    return pl.col(f"{name}_text")


def _rule(expr: pl.Expr) -> Callable[[pa.PolarsData], pl.LazyFrame]:
    """A frame-wide pandera check: ``expr`` must be true for a row to pass."""

    def check(data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(expr.fill_null(False).alias("ok"))

    return check


# Each rule below is true for a good row; its pandera check is named by the reason code.
RULES: dict[str, pl.Expr] = {
    "missing_identifier": pl.col("identifier").is_not_null(),
    "invalid_variant_id": _text("variant_id").is_null() | pl.col("variant_id").is_not_null(),
    "invalid_product_id": _text("product_id").is_null() | pl.col("product_id").is_not_null(),
    "invalid_location": _text("location_id").is_null() | pl.col("location_id").is_not_null()
    | pl.col("location_unknown") | pl.col("location_ambiguous"),
    "ambiguous_location": ~pl.col("location_ambiguous"),
    "unknown_location": ~pl.col("location_unknown"),
    "disabled_location": ~pl.col("location_disabled"),
    "location_mismatch": ~pl.col("location_mismatch"),
    "missing_quantity": _text("quantity").is_not_null(),
    "date_in_column": ~pl.col("has_date"),
    "quantity_not_whole": pl.col("quantity").is_not_null() | pl.col("quantity_negative")
    | pl.col("quantity_too_large") | _text("quantity").is_null(),
    "quantity_negative": ~pl.col("quantity_negative"),
    "quantity_too_large": ~pl.col("quantity_too_large"),
    "duplicate_item": ~pl.col("duplicate"),
}


def _int_column(minimum: int) -> pa.Column:
    import pandera.polars as pa

    return pa.Column(pl.Int64, nullable=True, checks=pa.Check.in_range(minimum, MAX_QUANTITY))


def stock_row_schema() -> pa.DataFrameSchema:
    """The schema of a parsed stock frame; each frame check is named by a reason code."""
    import pandera.polars as pa

    return pa.DataFrameSchema(
        columns={
            "__row": pa.Column(pl.Int64, nullable=False),
            "sku": pa.Column(pl.String, nullable=True),
            "identifier": pa.Column(pl.String, nullable=True,
                                    checks=pa.Check.isin(["sku", "variant_id", "product_id"])),
            "product_id": _int_column(1),
            "variant_id": _int_column(1),
            "location_id": _int_column(1),
            "quantity": _int_column(0),
            "quantity_negative": pa.Column(pl.Boolean),
            "quantity_too_large": pa.Column(pl.Boolean),
            "location_ambiguous": pa.Column(pl.Boolean),
            "duplicate": pa.Column(pl.Boolean),
        },
        checks=[pa.Check(_rule(expr), name=code) for code, expr in RULES.items()],
        strict=False,
        name="stock_row",
    )
