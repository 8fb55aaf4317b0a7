"""Column mapping: which of a file's headers are the SKU, the quantity, the location...

An explicit ``--map`` first, then a recognised export layout (:mod:`invsync.stages.layouts`),
else the aliases people really use.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import TYPE_CHECKING

from invsync.errors import InputFileError, UsageError
from invsync.stages.ingest.table import (
    MAX_CELL_CHARS,
    StockTable,
    UnclearEncoding,
    _with_problems,
    normalise_header,
)
from invsync.tables import ROW

if TYPE_CHECKING:
    from invsync.stages.layouts import Layout

CANONICAL = ("sku", "product_id", "variant_id", "location_id", "quantity")
IDENTIFIERS = ("sku", "variant_id", "product_id")
"""Identifier columns in precedence order: when a row fills several, the first one is sent."""

# Headers people really use, after normalisation (lower case, spaces and hyphens -> "_").
ALIASES: dict[str, str] = {
    **dict.fromkeys(["sku", "item_sku", "product_sku", "variant_sku", "product_code",
                     "item_code", "article_number", "product_code_sku", "seller_sku",
                     "internal_reference", "product_internal_reference", "artikelnummer",
                     "artikel_nr", "art_nr"], "sku"),
    **dict.fromkeys(["product_id", "productid"], "product_id"),
    **dict.fromkeys(["variant_id", "variantid"], "variant_id"),
    **dict.fromkeys(["location_id", "locationid", "location", "location_code", "warehouse",
                     "warehouse_id", "warehouse_code", "lagerort"], "location_id"),
    **dict.fromkeys(["quantity", "qty", "stock", "on_hand", "onhand", "inventory_level",
                     "stock_level", "inventory", "available", "current_stock_level",
                     "current_stock", "fulfillable_quantity", "onhand_quantity",
                     "on_hand_quantity", "location_on_hand", "afn_fulfillable_quantity",
                     "on_hand_new", "on_hand_current", "counted_quantity", "bestand",
                     "lagerbestand", "menge"], "quantity"),
}


def _check_used_cells(table: StockTable) -> StockTable:
    """Reject the rows whose cell in a used column shows an error (``#N/A``) or is absurdly
    long (the rows, not the file)."""
    return _check_long_cells(_check_error_cells(check_doubtful_encoding(table)))


def check_doubtful_encoding(table: StockTable) -> StockTable:
    """A text file whose encoding is unclear is read when its doubtful characters (every
    non-ASCII one) are all in columns invsync does not use, with a note naming them; when a
    used cell holds one, the file is refused, naming the candidates and that cell."""
    import polars as pl

    if not table.doubtful_encodings:
        return table
    names = ", ".join(table.doubtful_encodings[:5])
    used = [h for h in dict.fromkeys(table.mapping.values()) if h in table.frame.columns]
    odd = pl.col(used).str.contains(r"[^\x00-\x7f]").fill_null(False) if used else None
    named = next((h for h in used if not h.isascii()), None)
    if named is not None:
        raise UnclearEncoding(
            str(table.path),
            f"the file is not UTF-8 and its encoding is unclear (it could be {names}), and the "
            f"header {named!r} depends on it; save the file as UTF-8, or name the encoding "
            f"with --encoding")
    if odd is not None:
        hit = table.frame.select(pl.col(ROW), odd).filter(pl.any_horizontal(pl.all().exclude(ROW)))
        if hit.height:
            row = hit.row(0, named=True)
            column = next(h for h in used if row[h])
            raise UnclearEncoding(
                str(table.path),
                f"the file is not UTF-8 and its encoding is unclear (it could be {names}), and "
                f"row {row[ROW]}'s {column!r} cell depends on it; save the file as UTF-8, or "
                f"name the encoding with --encoding")
    others = [h for h in table.headers if h not in used]
    marked = [h for h in others if not h.isascii()
              or table.frame[h].str.contains(r"[^\x00-\x7f]").fill_null(False).any()]
    shown = ", ".join(map(repr, marked[:4])) + (" …" if len(marked) > 4 else "")
    note = (f"the file is not UTF-8 and its encoding is unclear (it could be {names}); it was "
            f"read as {table.doubtful_encodings[0]}: only columns invsync does not use "
            f"({shown or 'none'}) hold the characters that depend on it, so they may show "
            f"wrong letters (name the encoding with --encoding to read them right)")
    return replace(table, notes=[*table.notes, note])


def _check_error_cells(table: StockTable) -> StockTable:
    """Reject the rows whose cell in a used column is an error cell (read as empty)."""
    import polars as pl

    used = list(dict.fromkeys(table.mapping.values()))
    if table.error_cells is None or not used:
        return table
    hit = table.error_cells.filter(pl.col("column").is_in(used))
    if hit.height == 0:
        return table
    return _with_problems(table, hit.sort(ROW).select(
        ROW, "column", "value", pl.lit("error_cell").alias("reason"),
        pl.format("the cell shows {} — the spreadsheet could not calculate it: fix the formula "
                  "(or type the value) and save the file again", pl.col("value"))
        .alias("message")))


def _check_long_cells(table: StockTable) -> StockTable:
    """Reject the rows whose cell in a used column is absurdly long."""
    import polars as pl

    used = [h for h in dict.fromkeys(table.mapping.values()) if h in table.frame.columns]
    if not used or table.frame.height == 0:
        return table
    # Bytes first (a length read, no decoding): a cell has at most as many characters. A
    # text file's cells were measured as read: no used cell can be longer than the longest.
    longest = table.longest_cell if table.format == "csv" else None
    if longest is None:
        longest = table.frame.select(
            pl.max_horizontal(pl.col(used).str.len_bytes().max())).item()
    if (longest or 0) <= MAX_CELL_CHARS:
        return table
    found = []
    for header in used:
        hit = table.frame.filter(pl.col(header).str.len_chars() > MAX_CELL_CHARS)
        found.append(hit.select(
            pl.col(ROW), pl.lit(header).alias("column"), pl.lit(None, pl.String).alias("value"),
            pl.lit("cell_too_long").alias("reason"),
            pl.format("the cell has {} characters (the limit is {}); is this the right column?",
                      pl.col(header).str.len_chars(), pl.lit(f"{MAX_CELL_CHARS:,}"))
            .alias("message")))
    hits = pl.concat(found)
    # (Long in bytes only: multi-byte characters under the limit are no problem.)
    return _with_problems(table, hits) if hits.height else table


HEADER_SEARCH_ROWS = 20
"""The header is looked for in this many rows at the top of a sheet."""


def find_header(rows: list[list[str]], column_map: dict[str, str] | None = None) -> int:
    """Index of the first row that names an identifier and a quantity column, else 0."""
    return _header_index(rows, column_map) or 0


def _header_index(rows: list[list[str]], column_map: dict[str, str] | None) -> int | None:
    for i, row in enumerate(rows[:HEADER_SEARCH_ROWS]):
        found = set()
        for cell in row:
            canonical = _canonical_for(cell, column_map or {})
            if canonical:
                found.add(canonical)
        if "quantity" in found and found & set(IDENTIFIERS):
            return i
    return None


def _canonical_for(header: str, column_map: dict[str, str]) -> str | None:
    norm = normalise_header(header)
    explicit = {normalise_header(k): v for k, v in column_map.items()}
    if norm in explicit:
        return explicit[norm] if explicit[norm] != "ignore" else None
    return ALIASES.get(norm)


def _map_columns(table: StockTable, column_map: dict[str, str]) -> StockTable:
    """Match headers onto canonical columns: explicit map first, then a recognised layout
    (see :mod:`invsync.stages.layouts`), else the aliases.

    An explicit mapping wins over an alias on another header (that header is then just
    kept, never sent); ``HEADER=ignore`` keeps a header out of the mapping altogether.
    """
    from invsync.stages.layouts import recognise

    explicit = _explicit_map(column_map)
    norms = [normalise_header(h) for h in table.headers]
    layout = recognise(norms)
    if layout is None and "quantity" not in explicit.values():
        _refuse_per_location(table, norms)
    if layout is not None:
        mapping = _layout_mapping(table, layout, norms, explicit)
        candidates = _explicit_candidates(table.headers, norms, explicit)
    else:
        mapping = {}
        candidates = _alias_candidates(table.headers, norms, explicit)
    for canonical, headers in candidates.items():
        if len(headers) > 1:
            raise InputFileError(str(table.path), _ambiguous(table, canonical, headers))
        mapping[canonical] = headers[0]
    _require_columns(table, mapping)
    if "location_code" in mapping and "location_id" not in mapping:
        mapping["location_id"] = mapping.pop("location_code")
    table = replace(table, mapping=mapping, layout=layout.name if layout else None)
    return _apply_layout(table, layout, norms) if layout is not None else table


def _refuse_per_location(table: StockTable, norms: list[str]) -> None:
    """Shopify's older inventory export holds a quantity column per location: say how to
    sync one location at a time (invsync reads one quantity column)."""
    from invsync.stages.layouts import per_location_columns

    places = per_location_columns(norms, table.headers)
    if not places:
        return
    shown = ", ".join(map(repr, places[:6])) + (" …" if len(places) > 6 else "")
    raise InputFileError(
        str(table.path),
        f"this is Shopify's older inventory export, with one quantity column per location "
        f"({shown}); invsync reads one location at a time: run it once per location, e.g. "
        f"--map '{places[0]}=quantity' --location-id N (N the store's number for "
        f"{places[0]!r}), or export the newer inventory file (one row per location)")


def _explicit_map(column_map: dict[str, str]) -> dict[str, str]:
    """``column_map`` by normalised header, its targets checked."""
    explicit = {normalise_header(k): v for k, v in column_map.items()}
    for target in explicit.values():
        if target not in (*CANONICAL, "ignore"):
            raise UsageError(
                f"column map target {target!r} is not one of {', '.join(CANONICAL)} or ignore"
            )
    return explicit


def _layout_mapping(table: StockTable, layout: Layout, norms: list[str],
                    explicit: dict[str, str]) -> dict[str, str]:
    """The columns a recognised layout names (the first filled one of each), less those
    the explicit map claims or ignores."""
    claimed = set(explicit.values())
    by_norm: dict[str, str] = {}
    for norm, header in zip(norms, table.headers, strict=False):
        by_norm.setdefault(norm, header)
    mapping: dict[str, str] = {}
    for canonical, names in layout.columns.items():
        present = [by_norm[n] for n in names if n in by_norm]
        if not present or canonical in claimed:
            continue
        filled = [h for h in present if _has_values(table, h)]
        mapping[canonical] = (filled or present)[0]
    ignored = {h for h, n in zip(table.headers, norms, strict=True)
               if explicit.get(n) == "ignore"}
    return {c: h for c, h in mapping.items() if h not in ignored}


def _explicit_candidates(headers: list[str], norms: list[str], explicit: dict[str, str]
                         ) -> dict[str, list[str]]:
    """Canonical column -> the headers the explicit map puts on it."""
    candidates: dict[str, list[str]] = {}
    for norm, header in zip(norms, headers, strict=True):
        chosen = explicit.get(norm)
        if chosen is not None and chosen != "ignore":
            candidates.setdefault(chosen, []).append(header)
    return candidates


def _alias_candidates(headers: list[str], norms: list[str], explicit: dict[str, str]
                      ) -> dict[str, list[str]]:
    """Canonical column -> the headers the explicit map or an alias puts on it."""
    claimed = set(explicit.values())
    candidates: dict[str, list[str]] = {}
    for norm, header in zip(norms, headers, strict=True):
        named = explicit.get(norm)
        if named is None:
            named = ALIASES.get(norm)
            if named in claimed:
                continue  # the user mapped another header onto this column
        if named is None or named == "ignore":
            continue
        candidates.setdefault(named, []).append(header)
    return candidates


def _require_columns(table: StockTable, mapping: dict[str, str]) -> None:
    """Refuse a table without an identifier or a quantity column, saying how to name them."""
    missing = []
    if not any(k in mapping for k in IDENTIFIERS):
        missing.append("an identifier column (SKU, product id or variant id)")
    if "quantity" not in mapping:
        missing.append("the quantity")
    if not missing:
        return
    named = [h for h in table.headers if not _GENERATED.match(h)]
    found = (f"the file's columns are {', '.join(map(repr, named[:12]))}"
             + (f" and {len(named) - 12} more" if len(named) > 12 else "")) if named else \
        "the header row names no column"
    raise InputFileError(str(table.path), f"missing required column(s): {' and '.join(missing)}; "
                                          f"{found}; {_map_hint(table, mapping, named)}")


_GENERATED = re.compile(r"^(?:column_\d+|_duplicated_\d+|__UNNAMED__\d+|\s*)$")
"""Names invsync or the reader gives a column whose header cell is empty: never shown."""
_QUANTITY_WORDS = re.compile(r"qty|quant|stock|hand|avail|count|level|inventory|menge|bestand|"
                             r"stk|units|pcs|amount", re.IGNORECASE)
_ID_WORDS = re.compile(r"sku|code|item|art|ref|part|number|id\b|ean|upc|gtin|barcode|model",
                       re.IGNORECASE)


def _map_hint(table: StockTable, mapping: dict[str, str], named: list[str]) -> str:
    """The exact ``--map`` for the likeliest columns (or how to choose them)."""
    used = set(mapping.values())
    free = [h for h in named if h not in used]
    quantity = None if "quantity" in mapping else _likeliest(table, free, _QUANTITY_WORDS,
                                                             numbers=True)
    ident = None if any(k in mapping for k in IDENTIFIERS) else _likeliest(
        table, [h for h in free if h != quantity], _ID_WORDS, numbers=False)
    maps = [f"--map '{h}={c}'" for h, c in ((ident, "sku"), (quantity, "quantity")) if h]
    how = "say which column is which"
    if maps:
        return (f"{how} with {' '.join(maps)} on the command line (or in the upload page's "
                f"column step)")
    return (f"{how} with --map 'HEADER=quantity' (and 'HEADER=sku') on the command line, or "
            f"in the upload page's column step")


def _likeliest(table: StockTable, headers: list[str], words: re.Pattern[str], *,
               numbers: bool) -> str | None:
    """The header most likely to be the quantity (``numbers``) or the identifier: a
    telling name first, then what its first cells hold."""
    def score(header: str) -> tuple[int, float]:
        cells = table.frame[header].head(200).drop_nulls().str.strip_chars()
        cells = cells.filter(cells != "")
        if cells.len() == 0:
            return (0, 0.0)
        whole = int(cells.str.contains(r"^[+]?\d+(?:\.0+)?$").sum()) / cells.len()
        fit = whole if numbers else float(cells.n_unique()) / cells.len()
        return (1 if words.search(header) else 0, fit)

    best = [(score(h), h) for h in headers if h in table.frame.columns]
    best = [(s, h) for s, h in best if s[1] >= 0.8 or (s[0] and s[1] > 0)]
    return max(best, key=lambda b: b[0])[1] if best else None


def _apply_layout(table: StockTable, layout: Layout, norms: list[str]) -> StockTable:
    """Skip the rows a recognised layout says are not stock rows, and note the layout."""
    from invsync.stages.layouts import skipped_rows

    table = _shopify_levels(table, layout, norms)
    notes = list(table.notes)
    header_of = {role: table.headers[norms.index(n)] for role, n in layout.extra.items()
                 if n in norms}
    if len(header_of) == len(layout.extra):
        skip, note = skipped_rows(layout, table.frame, header_of, table.mapping.get("quantity"))
        if skip is not None:
            table = replace(table, frame=table.frame.filter(~skip))
            notes.append(str(note))
    notes.append(f"recognised a {layout.title}: using columns "
                 + ", ".join(f"{h!r} as {c}" for c, h in table.mapping.items()))
    return replace(table, notes=notes)


def _shopify_levels(table: StockTable, layout: Layout, norms: list[str]) -> StockTable:
    """A Shopify inventory export's level per row: ``On hand (new)`` where filled, else
    ``On hand (current)`` (see :func:`invsync.stages.layouts.shopify_levels`)."""
    from invsync.stages.layouts import SHOPIFY_CURRENT, SHOPIFY_NEW, shopify_levels

    if layout.name != "shopify-inventory" or SHOPIFY_NEW not in norms \
            or SHOPIFY_CURRENT not in norms:
        return table
    new, current = (table.headers[norms.index(n)] for n in (SHOPIFY_NEW, SHOPIFY_CURRENT))
    if table.mapping.get("quantity") != new:
        return table  # --map chose another quantity column, or "On hand (new)" is all empty
    return replace(table, frame=shopify_levels(table.frame, new, current), trimmed=frozenset(),
                   plain=frozenset(),
                   notes=[*table.notes,
                          f"Shopify inventory export: a row whose {new!r} is empty keeps "
                          f"its {current!r} (an empty cell means no change)"])


def _has_values(table: StockTable, header: str) -> bool:
    import polars as pl

    col = pl.col(header).str.strip_chars()
    return bool(table.frame.select((col.is_not_null() & (col != "")).any()).item())


def _ambiguous(table: StockTable, canonical: str, headers: list[str]) -> str:
    """Name the columns that could each be ``canonical``, with sample values, and the fix."""
    import polars as pl

    shown = []
    for header in headers:
        col = pl.col(header).str.strip_chars()
        sample = table.frame.filter(col.is_not_null() & (col != "")).head(3)[header].to_list()
        shown.append(f"{header!r} ({', '.join(map(repr, sample)) or 'empty'})")
    choices = " or ".join(f"--map '{h}={canonical}'" for h in headers)
    return (f"{len(headers)} columns could be the {canonical}: {', '.join(shown)}; "
            f"choose one with {choices}")
