"""Ingest's helper: the export layouts of other systems, recognised by their headers.

A layout names which of its columns invsync uses (and only those: an export has several
columns that look like a quantity) and which of its rows are not stock rows (a parent
product tracked by variant, a variable product, a cell saying ``not stocked``). Headers are
compared after :func:`invsync.stages.ingest.normalise_header`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class Layout:
    """An export layout: the headers that identify it and what invsync takes from it."""

    name: str
    title: str
    signature: frozenset[str]
    """Normalised headers that must all be present."""
    columns: dict[str, tuple[str, ...]]
    """Canonical column -> normalised headers to take it from, first present (and filled) wins."""
    location_kind: Literal["id", "code", "name", "either"] = "either"
    """What the location column holds: a store location's id, code, or label (a name)."""
    extra: dict[str, str] = field(default_factory=dict)
    """Further columns used by a rule: role -> normalised header."""


LAYOUTS: tuple[Layout, ...] = (
    Layout("bigcommerce-bulk-edit", "BigCommerce Bulk Edit export",
           frozenset({"item_type", "product_id", "product_code_sku", "current_stock_level",
                      "track_inventory"}),
           {"sku": ("product_code_sku",), "quantity": ("current_stock_level",)},
           extra={"item_type": "item_type", "track": "track_inventory"}),
    Layout("bigcommerce-inventory", "BigCommerce inventory export",
           frozenset({"product_id", "variant_id", "sku", "location_id", "current_stock"}),
           {"sku": ("sku",), "variant_id": ("variant_id",), "location_id": ("location_id",),
            "location_code": ("location_code",), "quantity": ("current_stock",)},
           location_kind="id"),
    Layout("shopify-inventory", "Shopify inventory export",
           frozenset({"handle", "sku", "location"}),
           {"sku": ("sku",), "location_id": ("location",),
            "quantity": ("on_hand_new", "on_hand_current", "available")},
           location_kind="name"),
    Layout("shopify-products", "Shopify products export",
           frozenset({"handle", "variant_sku", "variant_inventory_qty"}),
           {"sku": ("variant_sku",), "quantity": ("variant_inventory_qty",)},
           extra={"sku": "variant_sku", "quantity": "variant_inventory_qty"}),
    Layout("amazon-fba", "Amazon FBA inventory report",
           frozenset({"seller_sku", "afn_fulfillable_quantity"}),
           {"sku": ("seller_sku",), "quantity": ("afn_fulfillable_quantity",)}),
    Layout("shipstation", "ShipStation inventory export",
           frozenset({"sku", "warehouse", "location_on_hand"}),
           {"sku": ("sku",), "location_id": ("warehouse",), "quantity": ("location_on_hand",)},
           location_kind="name"),
    Layout("shipbob", "ShipBob inventory export",
           frozenset({"inventory_id", "fulfillable_quantity", "onhand_quantity"}),
           {"sku": ("sku",), "quantity": ("fulfillable_quantity",)}),
    Layout("woocommerce", "WooCommerce product export",
           frozenset({"id", "type", "sku", "in_stock", "stock"}),
           {"sku": ("sku",), "quantity": ("stock",)},
           extra={"type": "type"}),
    Layout("odoo", "Odoo inventory export",
           frozenset({"product_internal_reference"}),
           {"sku": ("product_internal_reference",),
            "quantity": ("counted_quantity", "quantity", "on_hand_quantity",
                         "available_quantity", "inventoried_quantity")}),
)


SHOPIFY_OLD_INVENTORY = frozenset({"handle", "title", "option1_name", "option1_value", "sku"})
"""Shopify's older inventory export: these, then one quantity column per location (named
after it), and no ``Location`` column."""
_SHOPIFY_OLD_FIXED = {"handle", "title", "option1_name", "option1_value", "option2_name",
                      "option2_value", "option3_name", "option3_value", "sku", "hs_code",
                      "coo", "barcode"}


def per_location_columns(normalised: list[str], headers: list[str]) -> list[str] | None:
    """The location columns of Shopify's older inventory export (one per location), or
    None when the headers are not that export."""
    if not set(normalised) >= SHOPIFY_OLD_INVENTORY or "location" in normalised:
        return None
    return [h for n, h in zip(normalised, headers, strict=True)
            if n and n not in _SHOPIFY_OLD_FIXED]


def recognise(normalised: list[str]) -> Layout | None:
    """The layout whose signature the headers carry (the most specific one), if any."""
    present = set(normalised)
    found = [lay for lay in LAYOUTS if lay.signature <= present]
    return max(found, key=lambda lay: len(lay.signature)) if found else None


def skipped_rows(layout: Layout, frame: pl.DataFrame, header_of: dict[str, str],
                 quantity: str | None) -> tuple[pl.Series | None, str | None]:
    """Rows of ``frame`` the layout says are not stock rows, and one note saying why."""
    import polars as pl

    if layout.name == "bigcommerce-bulk-edit":
        kind = pl.col(header_of["item_type"]).str.strip_chars().str.to_lowercase()
        track = pl.col(header_of["track"]).str.strip_chars().str.to_lowercase().fill_null("")
        # A SKU row belongs to the product row above it.
        parent = pl.when(kind == "product").then(track).forward_fill()
        by_variant = parent.str.contains("option|variant|sku").fill_null(True)
        untracked = track.is_in(["", "none", "no", "n"])
        marks = frame.select(
            rule=(kind == "rule").fill_null(False),
            parent=((kind == "product") & track.str.contains("option|variant|sku"))
            .fill_null(False),
            untracked=(((kind == "product") & untracked)
                       | ((kind == "sku") & ~by_variant)).fill_null(False),
        )
        skip = marks["rule"] | marks["parent"] | marks["untracked"]
        if not skip.any():
            return None, None
        return skip, (f"BigCommerce Bulk Edit export: skipped {marks['parent'].sum():,} "
                      f"parent row(s) of products tracked by variant, "
                      f"{marks['untracked'].sum():,} untracked item(s) and "
                      f"{marks['rule'].sum():,} rule row(s)")
    if layout.name == "woocommerce":
        skip = frame[header_of["type"]].str.to_lowercase().str.contains("variable")\
            .fill_null(False)
        if not skip.any():
            return None, None
        return skip, (f"WooCommerce export: skipped {skip.sum():,} variable-product parent "
                      f"row(s) (their variations carry the stock)")
    if layout.name == "shopify-products":
        empty = [frame[header_of[r]].str.strip_chars().fill_null("").eq("")
                 for r in ("sku", "quantity")]
        skip = empty[0] & empty[1]
        if not skip.any():
            return None, None
        return skip, (f"Shopify products export: skipped {skip.sum():,} row(s) without a "
                      f"variant SKU or quantity (extra images of a product)")
    if layout.name == "shopify-inventory" and quantity is not None:
        skip = frame[quantity].str.strip_chars().str.to_lowercase().eq("not stocked")\
            .fill_null(False)
        if not skip.any():
            return None, None
        return skip, (f"Shopify export: skipped {skip.sum():,} row(s) whose quantity is "
                      f"'not stocked' (the item is not stocked at that location: "
                      f"{_example_rows(frame.filter(skip))})")
    return None, None


def _example_rows(frame: pl.DataFrame) -> str:
    """``row 4``, ``rows 4, 7, 9`` or ``rows 4, 7, 9 …``: the first few rows of ``frame``."""
    from invsync.tables import ROW

    rows = frame[ROW].head(5).to_list()
    more = " …" if frame.height > len(rows) else ""
    return ("row " if len(rows) == 1 else "rows ") + ", ".join(map(str, rows)) + more


SHOPIFY_NEW, SHOPIFY_CURRENT = "on_hand_new", "on_hand_current"
"""Shopify's inventory export: the level the merchant typed, and the level Shopify had."""


def shopify_levels(frame: pl.DataFrame, new: str, current: str) -> pl.DataFrame:
    """Shopify's rule, one row at a time: an empty ``On hand (new)`` means "no change", so
    the row's level is its ``On hand (current)``; a filled one is the level to set.

    The ``new`` column of the returned frame holds that level (the rejected file is written
    from the headers, and a re-upload of it reads the same)."""
    import polars as pl

    typed = pl.col(new).str.strip_chars()
    return frame.with_columns(
        pl.when(typed.is_null() | (typed == "")).then(pl.col(current))
        .otherwise(pl.col(new)).alias(new))
