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
    """A stable rejection reason: its code, the column it blames, and its plain words.

    The words are the one place a reason is explained: the rejected files, the terminal
    summary, report.html and the upload page all show them (see :mod:`invsync.rules.messages`).
    """

    code: str
    column: str
    message: str
    """One row's sentence with its fix, a template: ``{value}`` is the offending cell's
    text, ``{rows}`` the rows of a duplicate group, ``{hint}`` and ``{nature}`` are
    worked out from the value (see :func:`invsync.rules.messages.row_messages`)."""
    kind: str = ""
    """The kind of problem, as a heading for the rows that share it."""
    fix: str = ""
    """What to do, for the whole kind."""


_ID_FIX = "use the number the store shows (digits only), or the SKU"
REASONS: dict[str, Reason] = {
    r.code: r
    for r in [
        Reason("missing_identifier", "sku",
               "this row has no SKU — fill in the SKU (or the product or variant id)",
               "Rows with no SKU", "fill in the SKU (or the product or variant id)"),
        Reason("invalid_variant_id", "variant_id",
               f"the variant id '{{value}}' is not a number — {_ID_FIX}",
               "A variant id that is not a number", _ID_FIX),
        Reason("invalid_product_id", "product_id",
               f"the product id '{{value}}' is not a number — {_ID_FIX}",
               "A product id that is not a number", _ID_FIX),
        Reason("invalid_location", "location_id",
               "the location '{value}' is not a location number — write the location's "
               "number or its code as the store shows it",
               "A location that is not a location number",
               "write the location's number or its code as the store shows it"),
        Reason("ambiguous_location", "location_id",
               "the location '{value}' is one location's number and another location's "
               "code — head the column Location ID or Location Code to say which",
               "A location that could be two locations",
               "head the column Location ID or Location Code to say which"),
        Reason("unknown_location", "location_id",
               "the store has no location '{value}' — check it against the store's list "
               "of locations",
               "A location the store does not have",
               "check it against the store's list of locations"),
        Reason("disabled_location", "location_id",
               "the location '{value}' is switched off in the store, so its stock cannot "
               "change — switch it on in the store, or move the row to another location",
               "A location switched off in the store",
               "switch it on in the store, or move the rows to another location"),
        Reason("location_mismatch", "location_id",
               "the location id '{value}' and this row's location code name different "
               "locations — keep one of the two, or make them agree",
               "A location id and code that disagree",
               "keep one of the two location columns, or make them agree"),
        Reason("missing_quantity", "quantity",
               "the quantity is empty — write how many are in stock (0 if none)",
               "An empty quantity", "write how many are in stock (0 if none)"),
        Reason("date_in_column", "quantity",
               "'{value}' is a date, not a quantity or id — the spreadsheet probably "
               "changed it: format the column as plain numbers and type the value again",
               "A date where a number belongs",
               "format the column as plain numbers and type the value again"),
        Reason("quantity_not_whole", "quantity",
               "the quantity '{value}' is not {nature} — {hint}",
               "A quantity that is not a whole number",
               "write how many are in stock as a whole number, such as 12"),
        Reason("quantity_negative", "quantity",
               "the quantity '{value}' is below 0 — write 0 or more (or run with "
               "`--clamp-negative` to send 0)",
               "A quantity below 0", "write 0 or more (or run with `--clamp-negative`)"),
        Reason("quantity_too_large", "quantity",
               f"the quantity '{{value}}' is above the store's maximum of {MAX_QUANTITY:,} "
               "— check the number: it is probably a typo",
               "A quantity above the store's maximum",
               "check the number: it is probably a typo"),
        Reason("duplicate_item", "sku",
               "{rows} are the same item at the same location — keep one, or sum them "
               "with `--duplicates sum`",
               "The same item twice at one location",
               "keep one row, or sum them with `--duplicates sum`"),
        Reason("refused_by_store", "sku",
               "the store refused '{value}': {detail} — {hint}",
               "Items the store refused",
               "check that the SKU exists in the store and tracks stock"),
        # Found by ingest, before parsing: the row itself (or one of its used cells).
        Reason("unreadable_row", "sku",
               "this row cannot be read (a stray quote or the wrong number of fields) — "
               "fix the row in a spreadsheet program and save it again",
               "Rows that cannot be read",
               "fix the row in a spreadsheet program and save the file again"),
        Reason("cell_too_long", "sku",
               "a cell of this row is too long — shorten it to under 10,000 characters",
               "Cells that are too long", "shorten the cell to under 10,000 characters"),
        Reason("formula_not_calculated", "quantity",
               "this cell holds a formula that was never calculated — open and save the "
               "file in Excel first",
               "Formulas never calculated", "open and save the file in Excel first"),
        Reason("error_cell", "quantity",
               "the cell shows {value} — the spreadsheet could not calculate it: fix the "
               "formula (or type the value) and save the file again",
               "Cells showing an error such as #N/A",
               "fix the formula (or type the value) and save the file again"),
        Reason("maybe_truncated", "quantity",
               "this last line is cut off mid-line, while the last run of this file ended "
               "with a complete line — check that the file arrived whole and send it again",
               "A last row that may be cut off",
               "check that the file arrived whole and send it again"),
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
