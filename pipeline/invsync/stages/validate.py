"""Stage 2: parse and validate a :class:`StockTable` into a :class:`Validated` split.

Parsing is vectorised polars; the rules themselves live in the pandera schema in
:mod:`invsync.rules.stock`, one named check per reason code. Every row ends up either
valid (typed, one identifier chosen) or rejected with its row number, the blamed
column, the original cell text, a stable reason code and a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import polars as pl

from invsync.rules.messages import quantity_fields, render, rows_phrase, thousands
from invsync.rules.numbers import DOT_GROUPED, read_by_convention
from invsync.rules.stock import MAX_QUANTITY, REASONS, RULES, stock_row_schema
from invsync.stages.diff import key_hashes
from invsync.stages.ingest import IDENTIFIERS, ROW, StockTable, normalise_header, unescape_formulas
from invsync.tables import Location

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

DuplicatePolicy = Literal["reject", "sum", "last"]
DUPLICATE_POLICIES: tuple[str, ...] = ("reject", "sum", "last")

_DATE = r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
_DATE_CELL = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?$"
"""How the workbook reader writes a date cell as text (always with its time of day)."""

REJECTED_SCHEMA = {ROW: pl.Int64, "column": pl.String, "value": pl.String,
                   "reason": pl.String, "message": pl.String}
VALID_COLUMNS = [ROW, "location_id", "identifier", "item_key", "sku", "product_id",
                 "variant_id", "quantity", "address", "address_key"]
"""``identifier``/``item_key`` are the item's key (canonical once identities were resolved,
see :mod:`invsync.store.identity`); ``address``/``address_key`` are how the row named it, which
is how the request names it."""


@dataclass(frozen=True)
class QuantityRules:
    """Optional rules applied to each parsed quantity, in this order."""

    text_map: Mapping[str, int] = field(default_factory=dict)
    """Text such as ``in stock`` -> a number; matched case-insensitively after trimming."""
    buffer: int = 0
    """Safety stock kept back: subtracted from every quantity, down to 0 at most."""
    clamp_negative: bool = False
    """Negative results become 0 instead of being rejected."""
    maximum: int | None = None
    """Quantities above this are capped to it."""

    @property
    def active(self) -> bool:
        return bool(self.text_map or self.buffer or self.clamp_negative or self.maximum is not None)

    def describe(self) -> dict[str, object]:
        return {"text_map": dict(self.text_map), "buffer": self.buffer,
                "clamp_negative": self.clamp_negative, "maximum": self.maximum}


@dataclass(frozen=True)
class Validated:
    """The outcome of validation: typed valid rows and rejected rows."""

    source: StockTable
    valid: pl.DataFrame
    """One row per (location, item): columns :data:`VALID_COLUMNS`."""
    rejected: pl.DataFrame
    """One row per rejected file row: columns of :data:`REJECTED_SCHEMA`."""
    merged_rows: int = 0
    """Rows folded into another row by the ``sum``/``last`` duplicate policy."""
    seen_keys: pl.DataFrame | None = None
    """Every (location, item) the file names, valid or not (for ``--zero-missing``)."""
    notes: list[str] = field(default_factory=list)
    location_unchecked: int = 0
    """Rows kept out of the plan because they name their location by name or code and the
    store's locations could not be read (an offline plan): checked when it is reached."""
    hashed: tuple[pl.DataFrame, pl.Series] | None = field(default=None, compare=False,
                                                          repr=False)
    """A frame of valid rows and :func:`~invsync.stages.diff.key_hashes` of its rows
    (the duplicate check made them), or None; see :meth:`hashes_of`."""

    def hashes_of(self, frame: pl.DataFrame) -> pl.Series | None:
        """The key hashes of ``frame`` if they were made of that very frame (a frame made
        from it later, such as a copy of this one with other :attr:`valid` rows, has none)."""
        if self.hashed is None or self.hashed[0] is not frame:
            return None
        return self.hashed[1]


_NAMED_BASE = 2_000_000_000
"""Offline, a location named by text stands in as ``_NAMED_BASE + n`` (one per distinct
name, never sent, never in a plan): the rows' other cells and duplicates are still checked."""
_HAS_LETTER = r"[^\W\d_]"
"""Location text with a letter names a location (``East warehouse``, ``WH-EAST``); ``-5`` or
``1.5`` do not, and are rejected as ``invalid_location`` as before."""


def _trimmed(table: StockTable, column: str | None) -> pl.Expr:
    if column is None:
        return pl.lit(None, dtype=pl.String)
    if column in table.plain:  # nothing to trim, empty or unescape, as ingest knows
        return pl.col(column)
    frame = table.frame
    # Unicode whitespace, which includes the non-breaking spaces spreadsheets leave behind
    # (a column ingest saw to have none at the edges of its cells is not copied to trim it).
    trimmed = column in table.trimmed
    text = pl.col(column) if trimmed else pl.col(column).str.strip_chars()
    # A cell invsync escaped in a rejected file ('=..., '-...) reads back as its original text.
    escaped, empty = frame.select(pl.col(column).str.starts_with("'").any().alias("q"),
                                  (pl.col(column) == "").any().alias("e")).row(0)
    if escaped:
        text = unescape_formulas(pl.col(column).str.strip_chars()).str.strip_chars()
    elif trimmed and not empty:
        return text  # nothing to trim or empty: the column as it is, not a copy of it
    return pl.when(text == "").then(None).otherwise(text)


_TEN_DIGITS = 9_999_999_999


@dataclass(frozen=True)
class _Whole:
    """Text parsed as a signed whole number: value (null if not whole or beyond Int64)."""

    value: pl.Series
    huge: pl.Series
    """More than 10 significant digits: beyond any level the store accepts."""
    date: pl.Series
    """The text looks like a date (an Excel date cell, a date typed in)."""


def _parse_whole(text: pl.Series) -> _Whole:
    """Parse ``[+-]digits[.000]`` vectorised; the regex runs only on what a cast refuses."""
    date = pl.zeros(len(text), pl.Boolean, eager=True)
    if text.null_count() == len(text):  # a column the file does not have: nothing to parse
        return _Whole(pl.Series(text.name, [None], pl.Int64).extend_constant(None, len(text) - 1)
                      if len(text) else pl.Series(text.name, [], pl.Int64), date, date)
    value = text.cast(pl.Int64, strict=False)
    # More than 10 digits whatever the form (12345678901 as 12345678901.0): a rule's
    # maximum must not cap it to a level.
    huge = (value > _TEN_DIGITS).fill_null(False)
    slow = text.is_not_null() & value.is_null()
    if not slow.any():
        return _Whole(value, huge, date)
    idx = slow.arg_true()
    sub = text.gather(idx)
    parts = sub.str.extract_groups(r"^([+-]?)0*(\d+?)(?:\.0*)?$")
    sign, digits = parts.struct.field("1"), parts.struct.field("2")
    too_many = (digits.str.len_chars() > 10).fill_null(False)
    magnitude = digits.zip_with(~too_many, pl.Series([None], dtype=pl.String)).cast(
        pl.Int64, strict=False)
    signed = pl.select(pl.when(sign == "-").then(-magnitude).otherwise(magnitude)).to_series()
    value = value.scatter(idx, signed)
    huge = huge.scatter(idx, too_many)
    date = date.scatter(idx, sub.str.contains(_DATE).fill_null(False))
    # A huge negative still says "negative": keep its sign visible as -1.
    neg_huge = (too_many & (sign == "-")).fill_null(False)
    if neg_huge.any():
        value = value.scatter(idx.filter(neg_huge), -1)
        huge = huge.scatter(idx.filter(neg_huge), False)
    return _Whole(value, huge, date)


def _parse_id(text: pl.Series) -> pl.Series:
    """A positive whole number up to the store's maximum, else null."""
    value = _parse_whole(text).value
    return value.zip_with((value >= 1) & (value <= MAX_QUANTITY),
                          pl.Series([None], dtype=pl.Int64)).alias(text.name)


def _identity(mapping: Mapping[str, str]) -> dict[str, pl.Expr]:
    """``identifier`` and ``item_key``: the row's SKU, else its variant id, else its product
    id (a cell that is there decides, even when it is no valid id: the row is rejected)."""
    by_sku = pl.col("sku").is_not_null()
    if "variant_id" not in mapping and "product_id" not in mapping:
        # A file of SKUs only: no text compared per row to pick the kind.
        return {"identifier": pl.when(by_sku).then(pl.lit("sku")), "item_key": pl.col("sku")}
    by_variant = pl.col("variant_id_text").is_not_null()
    by_product = pl.col("product_id_text").is_not_null()
    return {
        "identifier": pl.when(by_sku).then(pl.lit("sku"))
        .when(by_variant).then(pl.lit("variant_id"))
        .when(by_product).then(pl.lit("product_id")),
        "item_key": pl.when(by_sku).then(pl.col("sku"))
        .when(by_variant).then(pl.col("variant_id").cast(pl.String))
        .when(by_product).then(pl.col("product_id").cast(pl.String)),
    }


def validate(
    table: StockTable,
    *,
    default_location: int = 1,
    locations: list[Location] | None = None,
    duplicates: DuplicatePolicy = "reject",
    rules: QuantityRules | None = None,
    identities: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> Validated:
    """Validate every row of ``table``; see :data:`invsync.rules.stock.REASONS` for the rules.

    ``locations``, when known, resolves location codes and rejects rows for unknown or
    disabled locations before anything is sent. ``identities`` (see
    :class:`invsync.store.identity.IdentityResolver`) maps the rows' keys to canonical ones, so
    that one item named by SKU and by id is one item to the duplicate policy.
    """
    rules = rules or QuantityRules()
    m = table.mapping
    # Rows ingest could not read are rejected as they are, never half-read; but the items
    # they name are still named by the file (--zero-missing must not zero them).
    source = table.frame
    unreadable = table.problems
    frame = source.select(
        pl.col(ROW),
        *[_trimmed(table, m.get(c)).alias(f"{c}_text")
          for c in ("sku", "product_id", "variant_id", "location_id", "quantity")],
        _trimmed(table, m.get("location_code") if "location_id" in m else None)
        .alias("location_code_text"),
    )
    frame = frame.with_columns(
        sku=pl.col("sku_text"),
        product_id=_parse_id(frame["product_id_text"]),
        variant_id=_parse_id(frame["variant_id_text"]),
    )
    frame = frame.with_columns(**_identity(m))
    frame = _resolve_locations(frame, default_location, locations,
                               _location_kind(table))
    frame = frame.with_columns(address=pl.col("identifier"), address_key=pl.col("item_key"))
    if identities is not None:
        from invsync.store.identity import apply_mapping

        frame = apply_mapping(frame, identities(frame.select(_KEY)))
    seen = frame.select(_KEY)
    if seen.null_count().sum_horizontal().item():  # (dropping none would still copy every row)
        seen = seen.drop_nulls()
    if unreadable is not None and unreadable.height:
        frame = frame.join(unreadable.select(ROW), on=ROW, how="anti")
    decimal_comma = decimal_comma_file(table, frame["quantity_text"])
    # In a ';'-separated file a dot is as likely to group thousands as to mark decimals:
    # 1.000 is asked about ("did you mean 1000?"), never read as 1, unless it is certain.
    doubtful = table.format == "csv" and table.delimiter == ";" and not decimal_comma
    frame = _parse_quantity(frame, rules, decimal_comma=decimal_comma,
                            dot_groups_doubtful=doubtful)
    # Excel date cells arrive as ISO text; in a CSV only the quantity is checked, since a
    # text SKU that looks like a date is the sender's own choice there.
    date_cols = [] if table.format == "csv" else list(IDENTIFIERS)
    # Only a real date cell reads back with a time of day; text like 3048-20-30 stays text.
    date_exprs = {c: pl.col(f"{c}_text").str.contains(_DATE_CELL).fill_null(False)
                  for c in date_cols}
    date_exprs["quantity"] = pl.col("_quantity_date")
    frame = frame.with_columns(
        has_date=pl.any_horizontal(list(date_exprs.values())),
        date_column=pl.coalesce([pl.when(e).then(pl.lit(c)) for c, e in date_exprs.items()]),
    ).drop("_quantity_date")
    frame, merged, hashes = _mark_duplicates(frame, duplicates)

    failures = _run_schema(frame)
    rejected = _rejected_rows(table, frame, failures, default_location)
    if unreadable is not None and unreadable.height:
        rejected = pl.concat([rejected, unreadable.select(list(REJECTED_SCHEMA))
                              .cast(pl.Schema(REJECTED_SCHEMA))]).sort(ROW)
    valid = frame.select(VALID_COLUMNS) if rejected.height == 0 else frame.join(
        rejected.select(ROW), on=ROW, how="anti").select(VALID_COLUMNS)
    if duplicates == "sum":
        valid, too_large = _reject_large_sums(table, frame, valid)
        if too_large.height:
            rejected = pl.concat([rejected, too_large]).sort(ROW)
    if merged is not None:
        before = valid.height
        valid = _merge_duplicates(valid, duplicates)
        merged = before - valid.height
    notes = []
    unchecked = 0
    if locations is None:
        valid, seen, unchecked, named_note = _without_named_locations(frame, valid, seen)
        notes.extend(named_note)
    if decimal_comma:
        notes.extend(_convention_note(frame, rejected))
    if rules.active:
        notes.append(f"quantity rules applied: {rules.describe()}")
    # The rows of the frame the hashes were made of, in order (none rejected or merged).
    same_rows = merged is None and valid.height == frame.height and rejected.height == 0
    return Validated(source=table, valid=valid, rejected=rejected,
                     merged_rows=(merged or 0), seen_keys=seen, notes=notes,
                     location_unchecked=unchecked,
                     hashed=(valid, hashes) if same_rows and hashes is not None else None)


def _without_named_locations(
    frame: pl.DataFrame, valid: pl.DataFrame, seen: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, int, list[str]]:
    """Offline: take the rows whose location is a name out of the plan, with a note.

    Their other cells were checked like any row's (a bad quantity is still rejected); the
    location itself is checked when the store is reached. Returns the valid rows left, the
    keys seen (without stand-ins), how many valid rows were kept out, and the note.
    """
    is_named = pl.col("location_id") >= _NAMED_BASE
    if not seen.select(is_named.any()).item():  # no row names its location: nothing to copy
        return valid, seen, 0, []
    kept_out = valid.filter(is_named)
    # An item whose location is a name is named at whichever location that is: never
    # "missing" (--zero-missing) at any location the plan covers.
    named_items = seen.filter(is_named).select(_KEY[1:]).unique()
    seen = seen.filter(~is_named)
    covered = valid.filter(~is_named).select("location_id").unique()
    seen = pl.concat([seen, covered.join(named_items, how="cross").select(_KEY)])
    if kept_out.height == 0:
        return valid, seen, 0, []
    # One spelling per stand-in (letter case aside), as the file first writes it.
    names = frame.filter(pl.col("location_id").is_in(kept_out["location_id"].unique()
                                                      .implode())).sort(ROW)\
        .unique("location_id", keep="first", maintain_order=True)["location_id_text"]
    shown = ", ".join(f"'{n}'" for n in names.head(3).to_list())
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    note = (f"{kept_out.height:,} row(s) name their location ({shown}{more}): without the "
            f"store's list of locations a name cannot be checked, so these rows are kept out "
            f"of this plan (not rejected) and are checked when the store is reached "
            f"(run with the access token)")
    return valid.filter(~is_named), seen, kept_out.height, [note]


_CODE_HEADERS = frozenset(("location_code", "warehouse_code"))
_ID_HEADERS = frozenset(("location_id", "locationid", "warehouse_id"))


def _location_kind(table: StockTable) -> Literal["id", "code", "name", "either"]:
    """What the location column holds: a recognised layout says, else its header."""
    from invsync.stages.layouts import LAYOUTS

    layout = next((lay for lay in LAYOUTS if lay.name == table.layout), None)
    if layout is not None and layout.location_kind != "either":
        return layout.location_kind
    return location_header_kind(table.mapping.get("location_id"))


def location_header_kind(header: str | None) -> Literal["id", "code", "either"]:
    """What a location column holds, as its header says: ids, codes, or either."""
    norm = normalise_header(header or "")
    if norm in _CODE_HEADERS:
        return "code"
    if norm in _ID_HEADERS:
        return "id"
    return "either"


def _resolve_locations(
    frame: pl.DataFrame, default_location: int, locations: list[Location] | None,
    kind: Literal["id", "code", "name", "either"] = "either",
) -> pl.DataFrame:
    """Resolve each row's location text to an id.

    A column headed as codes resolves through the codes only; under one headed as ids a
    number is an id (text that is no number may still be a code); under a bare
    ``location``, a value that is one location's id and another's code is ambiguous and
    rejected (``20`` could be id 20 or the location coded "20").
    """
    text = pl.col("location_id_text")
    as_id = pl.lit(_parse_id(frame["location_id_text"]))
    if kind in ("code", "name"):
        as_id = pl.lit(None, pl.Int64)
    if locations is None:
        # Without the store's list a name or code cannot be resolved: such rows are kept
        # under a stand-in id per name and left out of the plan (see _NAMED_BASE).
        if frame.select((text.is_not_null() & as_id.is_null()).any()).item():
            named = text.is_not_null() & as_id.is_null() & text.str.contains(_HAS_LETTER)
            # Ranking the names sorts every row's text: only done when some row has a name.
            stand_in = _NAMED_BASE + text.str.to_lowercase().rank("dense").cast(pl.Int64)
            location = pl.when(text.is_null()).then(pl.lit(default_location, pl.Int64))\
                .when(named).then(stand_in).otherwise(as_id)
        else:  # every cell is an id or empty: no text is searched for a letter
            location = as_id.fill_null(pl.lit(default_location, pl.Int64))
        return frame.with_columns(
            location_id=location,
            location_unknown=pl.lit(False),
            location_disabled=pl.lit(False),
            location_ambiguous=pl.lit(False),
            location_mismatch=pl.lit(False),
        )
    directory = pl.DataFrame(
        {"_id": [loc.id for loc in locations], "_code": [loc.code for loc in locations],
         "_label": [loc.label.strip().lower() for loc in locations],
         "_enabled": [loc.enabled for loc in locations]},
        schema={"_id": pl.Int64, "_code": pl.String, "_label": pl.String,
                "_enabled": pl.Boolean},
    )
    if kind in ("name", "either"):
        # A location named as the other system names it (Shopify, ShipStation) or as the
        # merchant calls it: the store's label, letter case aside; a code is accepted too
        # (under a bare "Location" header a code wins). A label two locations share names
        # neither.
        labels = directory.filter(pl.col("_label") != "").group_by("_label").agg(
            pl.col("_id").first(), pl.len().alias("_n")).filter(pl.col("_n") == 1)
        frame = frame.with_columns(_name=text.str.to_lowercase()).join(
            labels.select(pl.col("_label").alias("_name"), pl.col("_id").alias("_label_id")),
            on="_name", how="left", maintain_order="left").drop("_name")
    by_code = directory.select(pl.col("_code").alias("location_id_text"),
                               pl.col("_id").alias("_code_id"))
    frame = frame.join(by_code, on="location_id_text", how="left", maintain_order="left")
    if kind == "name":
        frame = frame.with_columns(_code_id=pl.coalesce("_label_id", "_code_id"))\
            .drop("_label_id")
    elif kind == "either":
        frame = frame.with_columns(_code_id=pl.coalesce("_code_id", "_label_id"))\
            .drop("_label_id")
    # A file with both an id and a code column (BigCommerce's inventory export): the id is
    # used, and a code naming another location rejects the row.
    code_of_row = directory.select(pl.col("_code").alias("location_code_text"),
                                   pl.col("_id").alias("_code_col_id"))
    frame = frame.join(code_of_row, on="location_code_text", how="left", maintain_order="left")
    ids = directory["_id"].implode()
    id_known = as_id.is_in(ids).fill_null(False)
    code_id = pl.col("_code_id")
    ambiguous = (id_known & code_id.is_not_null() & (code_id != as_id)) if kind == "either" \
        else pl.lit(False)
    # Under an id header a number is an id; only text that is no number can be a code.
    chosen = pl.coalesce(as_id, code_id) if kind == "id" else (
        pl.when(id_known).then(as_id).otherwise(pl.coalesce(code_id, as_id)))
    resolved = (
        pl.when(text.is_null()).then(pl.lit(default_location, pl.Int64))
        .when(ambiguous).then(pl.lit(None, pl.Int64))
        .otherwise(chosen)
    )
    mismatch = pl.col("location_code_text").is_not_null() & (
        pl.col("_code_col_id").is_null() | (pl.col("_code_col_id") != resolved)).fill_null(True)
    frame = frame.with_columns(_loc=resolved, location_ambiguous=ambiguous,
                               location_mismatch=mismatch & text.is_not_null())\
        .drop("_code_id", "_code_col_id")
    frame = frame.join(directory.select("_id", "_enabled"), left_on="_loc", right_on="_id",
                       how="left", maintain_order="left")
    known = pl.col("_enabled").is_not_null()
    return frame.with_columns(
        location_id=pl.when(known).then(pl.col("_loc")),
        # An id column's text that is no id at all is invalid, not an unknown location.
        location_unknown=~known & ~pl.col("location_ambiguous")
        & (pl.lit(kind != "id") | pl.col("_loc").is_not_null()),
        location_disabled=known & ~pl.col("_enabled"),
    ).drop("_loc", "_enabled")


_DECIMAL_COMMA = r"^\s*[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),(?:\d{1,2}|\d{4,})\s*$"
"""``3,5``, ``12,00``, ``1.204,50``: a comma that can only be a decimal comma (never
three digits after it, which could group thousands)."""
_DECIMAL_POINT = r"^\s*[+-]?\d+\.(?:\d{1,2}|\d{4,})\s*$|\d,\d{3}\."
"""``3.5``, ``1,204.5``: a dot that can only be a decimal point."""


def decimal_comma_file(table: StockTable, quantities: pl.Series) -> bool:
    """Does the file make its decimal-comma convention certain?

    Only a ``;``-separated text file whose quantity cells write some decimal with a comma
    (``3,5``) and none with a point (``3.5``): then a dot only groups thousands and
    ``1.204`` is 1204. Anything less certain guesses nothing.
    """
    if table.format != "csv" or table.delimiter != ";":
        return False
    found = pl.DataFrame({"q": quantities}).select(
        comma=pl.col("q").str.contains(_DECIMAL_COMMA).fill_null(False).any(),
        point=pl.col("q").str.contains(_DECIMAL_POINT).fill_null(False).any())
    return bool(found["comma"].item()) and not bool(found["point"].item())


def _convention_note(frame: pl.DataFrame, rejected: pl.DataFrame) -> list[str]:
    """The run note that says dotted thousands were read as the file writes them."""
    dotted = frame.filter(pl.col("quantity_text").str.contains(DOT_GROUPED).fill_null(False))
    if rejected.height:
        dotted = dotted.join(rejected.select(ROW), on=ROW, how="anti")
    if dotted.height == 0:
        return []
    first = dotted.row(0, named=True)
    return [f"quantities read with the file's own number convention (a ';'-separated file "
            f"that writes decimals with a comma, so a dot groups thousands): "
            f"{dotted.height:,} row(s) such as row {first[ROW]}'s "
            f"'{first['quantity_text']}' read as {first['quantity']}"]


def _parse_quantity(frame: pl.DataFrame, rules: QuantityRules, *,
                    decimal_comma: bool = False,
                    dot_groups_doubtful: bool = False) -> pl.DataFrame:
    text = frame["quantity_text"]
    if rules.text_map:
        lowered = {k.strip().lower(): str(v) for k, v in rules.text_map.items()}
        text = pl.select(pl.lit(text).str.to_lowercase().replace_strict(
            lowered, default=pl.lit(text))).to_series()
    parsed = _parse_whole(text)
    if decimal_comma:
        # 1.204 is 1204 here (never 1.204 read as 1 by the "1.000 is 1" rule).
        certain = pl.select(read_by_convention(pl.lit(text), True)).to_series()
        parsed = _Whole(certain.fill_null(parsed.value), parsed.huge, parsed.date)
    elif dot_groups_doubtful:
        grouped = text.str.contains(DOT_GROUPED).fill_null(False)
        if grouped.any():
            parsed = _Whole(parsed.value.zip_with(~grouped, pl.Series([None], dtype=pl.Int64)),
                            parsed.huge, parsed.date)
    value = pl.lit(parsed.value)
    if rules.buffer:
        # A buffer keeps stock back; it never makes a level negative: 1 with a buffer of 2
        # is 0 (a negative quantity in the file is still refused).
        value = pl.when(value >= 0).then(pl.max_horizontal(value - rules.buffer, pl.lit(0)))\
            .otherwise(value)
    if rules.clamp_negative:
        value = pl.when(value < 0).then(0).otherwise(value)
    if rules.maximum is not None:
        value = pl.when(value > rules.maximum).then(rules.maximum).otherwise(value)
    frame = frame.with_columns(_q=value, _huge=pl.lit(parsed.huge),
                               _quantity_date=pl.lit(parsed.date))
    return frame.with_columns(
        quantity=pl.when((pl.col("_q") >= 0) & (pl.col("_q") <= MAX_QUANTITY)).then(pl.col("_q")),
        quantity_negative=(pl.col("_q") < 0).fill_null(False),
        quantity_too_large=(pl.col("_q") > MAX_QUANTITY).fill_null(False) | pl.col("_huge"),
    ).drop("_q", "_huge")


_KEY = ["location_id", "identifier", "item_key"]
_DUP_SHOWN = 5
"""Rows a ``duplicate_item`` message names before it says how many more there are."""


def _thousands(count: pl.Expr | str) -> pl.Expr:
    """A count as text with thousands separators (``4,995``)."""
    return thousands(pl.col(count) if isinstance(count, str) else count)


def _distinct(values: pl.Series) -> bool:
    """No value twice: sorted, no two neighbours are equal (a sort holds far less memory
    than the hash table of ``n_unique`` for a million values). One thread: polars' parallel
    sort of a million integers took a third longer, and twice the CPU time."""
    values = values.sort(multithreaded=False)
    return values.len() < 2 or not (values.slice(1) == values.slice(0, values.len() - 1)).any()


def _mark_duplicates(frame: pl.DataFrame, policy: str
                     ) -> tuple[pl.DataFrame, int | None, pl.Series | None]:
    """Flag (location, item) pairs named in more than one row (whatever their quantities);
    also the rows' key hashes when they were made (the diff joins on them)."""
    good_key = pl.all_horizontal([pl.col(k).is_not_null() for k in _KEY])
    keys = pl.struct(_KEY)
    if policy == "reject":
        # Distinct hashes prove there is no duplicate; only otherwise compare exactly.
        hashes = key_hashes(frame)
        if _distinct(hashes):  # distinct hashes: distinct keys
            return frame.with_columns(duplicate=pl.lit(False),
                                      dup_rows=pl.lit(None, pl.String)), None, hashes
        frame = frame.with_columns(duplicate=(good_key & keys.is_duplicated()).fill_null(False))
        if not frame["duplicate"].any():
            return frame.with_columns(dup_rows=pl.lit(None, pl.String)), None, hashes
        # Name the first few rows and the count: listing every row of a group makes each
        # message as long as the group, so the reports would grow with its square.
        rows = frame.filter("duplicate").group_by(_KEY).agg(
            _first=pl.col(ROW).sort().head(_DUP_SHOWN), _count=pl.len(),
        ).with_columns(dup_rows=rows_phrase(pl.col("_first"), pl.col("_count")))\
            .drop("_first", "_count")
        frame = frame.join(rows, on=_KEY, how="left", maintain_order="left")
        return frame.with_columns(dup_rows=pl.when("duplicate").then("dup_rows")), None, None
    # sum/last: only rows whose quantity is good are folded together; the rest stay rejected.
    frame = frame.with_columns(duplicate=pl.lit(False), dup_rows=pl.lit(None, pl.String))
    return frame, 0, None


_ADDRESS = ["sku", "product_id", "variant_id", "address", "address_key"]
"""A merged item is sent as its first row names it."""


def _reject_large_sums(table: StockTable, frame: pl.DataFrame,
                       valid: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Reject every row of a group whose ``sum`` would pass the store's maximum.

    Capping the total would send a level the file never said; the rows are rejected as
    ``quantity_too_large`` instead, each message naming the group's rows and total.
    """
    total = pl.col("quantity").sum().over(_KEY)
    over = valid.filter(total > MAX_QUANTITY)
    if over.height == 0:
        return valid, pl.DataFrame(schema=REJECTED_SCHEMA)
    groups = over.sort(ROW).group_by(_KEY).agg(
        _first=pl.col(ROW).head(_DUP_SHOWN).cast(pl.String).str.join(", "),
        _count=pl.len(), _total=pl.col("quantity").sum())
    named = pl.when(pl.col("_count") > _DUP_SHOWN).then(
        pl.format("{} and {} more", "_first", _thousands(pl.col("_count") - _DUP_SHOWN)))\
        .otherwise("_first")
    groups = groups.select(*_KEY, _message=pl.format(
        "the quantities of rows {} add up to {}, above the store's maximum of {} — check the "
        "numbers, or keep one row with `--duplicates last`", named,
        _thousands("_total"), pl.lit(f"{MAX_QUANTITY:,}")))
    texts = frame.select(ROW, "quantity_text")
    rows = over.select(ROW, *_KEY).join(groups, on=_KEY, how="left").join(texts, on=ROW)
    rejected = rows.select(
        pl.col(ROW), pl.lit(table.mapping.get("quantity", "quantity")).alias("column"),
        pl.col("quantity_text").alias("value"), pl.lit("quantity_too_large").alias("reason"),
        pl.col("_message").alias("message"))
    return valid.join(over.select(ROW), on=ROW, how="anti"), rejected


def _merge_duplicates(valid: pl.DataFrame, policy: str) -> pl.DataFrame:
    if policy == "last":
        merged = valid.sort(ROW).group_by(_KEY, maintain_order=True).agg(
            pl.col(ROW).first(), pl.col(*_ADDRESS).first(), pl.col("quantity").last())
    else:
        merged = valid.sort(ROW).group_by(_KEY, maintain_order=True).agg(
            pl.col(ROW).first(), pl.col(*_ADDRESS).first(),
            pl.col("quantity").sum())
    return merged.select(VALID_COLUMNS).sort(ROW)


_NO_FAILURES = {"index": pl.Int64, "check": pl.String}
_ID_COLUMNS = {"product_id": 1, "variant_id": 1, "location_id": 1, "quantity": 0}
"""The schema's integer columns and their lowest value (the highest is MAX_QUANTITY)."""
_FLAG_COLUMNS = ("quantity_negative", "quantity_too_large", "location_ambiguous", "duplicate")
_RULE_FLAGS = ("location_unknown", "location_disabled", "location_mismatch", "has_date")
"""Flags only the rules read (the schema does not type them): of another type, a rule over
them cannot run, and the schema (which reports that) must decide."""


def passes_every_rule(frame: pl.DataFrame) -> bool:
    """Whether ``frame`` passes :func:`~invsync.rules.stock.stock_row_schema` whole, told
    with one polars query and without pandera (whose import costs more than validating
    100,000 rows). The same rules and column checks as the schema; any doubt (a missing
    column, another type) answers False, and the schema itself then decides."""
    schema = frame.schema
    types = {ROW: pl.Int64, "sku": pl.String, "identifier": pl.String,
             **dict.fromkeys(_ID_COLUMNS, pl.Int64), **dict.fromkeys(_FLAG_COLUMNS, pl.Boolean),
             **dict.fromkeys(_RULE_FLAGS, pl.Boolean)}
    if any(schema.get(c) != t for c, t in types.items()):
        return False
    if frame.height == 0:
        return True
    checks = [rule.fill_null(False) for rule in RULES.values()]
    checks += [pl.col(ROW).is_not_null(),
               pl.col("identifier").is_null()
               | pl.col("identifier").is_in(list(IDENTIFIERS)).fill_null(False)]
    checks += [pl.col(c).is_null() | pl.col(c).is_between(low, MAX_QUANTITY).fill_null(False)
               for c, low in _ID_COLUMNS.items()]
    checks += [pl.col(c).is_not_null() for c in _FLAG_COLUMNS]
    return bool(frame.select(pl.all_horizontal(checks).all()).item())


def _run_schema(frame: pl.DataFrame) -> pl.DataFrame:
    """Run the pandera schema with data checks on; return (index, check) failures.

    A frame every row of which passes (a clean file, the usual case) is told so by
    :func:`passes_every_rule` without importing pandera.
    """
    if passes_every_rule(frame):
        return pl.DataFrame(schema=_NO_FAILURES)
    import pandera.polars as pa
    from pandera.config import ValidationDepth, config_context

    # The rules read text columns only for being empty or not; pandera copies the failing
    # rows' cells into its failure cases, so long cells go in as "" (nulls stay null).
    text = [c for c, t in frame.schema.items() if t == pl.String and c != "identifier"]
    frame = frame.with_columns(pl.when(pl.col(c).is_null()).then(None).otherwise(pl.lit(""))
                               .alias(c) for c in text)
    # On a LazyFrame pandera checks only the schema unless told to check the data too.
    with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            stock_row_schema().validate(frame.lazy(), lazy=True).collect()
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases
        else:
            return pl.DataFrame(schema=_NO_FAILURES)
    # A check that raised (a column of the wrong type) fails with no row: every row would
    # pass it unseen, so it breaks the run like a check of no reason code.
    unexpected = cases.filter(~pl.col("check").is_in(list(REASONS)) | pl.col("index").is_null())
    if unexpected.height:
        raise AssertionError(f"stock frame broke its own schema: {unexpected.head(5)}")
    found: pl.DataFrame = cases.select(pl.col("index").cast(pl.Int64), pl.col("check"))
    return found


def _rejected_rows(table: StockTable, frame: pl.DataFrame, failures: pl.DataFrame,
                   default_location: int) -> pl.DataFrame:
    """One rejected row per failing file row: its highest-priority reason."""
    if failures.height == 0:
        return pl.DataFrame(schema=REJECTED_SCHEMA)
    priority = {code: i for i, code in enumerate(REASONS)}
    first = (
        failures.with_columns(_p=pl.col("check").replace_strict(priority, return_dtype=pl.Int32))
        .sort("index", "_p").unique("index", keep="first", maintain_order=True)
    )
    rows = frame.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64)).join(
        first.select("index", "check"), on="index", how="inner"
    ).sort(ROW)
    canonical = pl.col("check").replace_strict(
        {code: r.column for code, r in REASONS.items()}, return_dtype=pl.String)
    column = (
        pl.when(pl.col("check") == "date_in_column").then(pl.col("date_column"))
        .when(pl.col("check").is_in(["missing_identifier", "duplicate_item"]))
        .then(pl.col("address").fill_null(
            next((c for c in IDENTIFIERS if c in table.mapping), "sku")))
        .otherwise(canonical)
    )
    rows = rows.with_columns(_canon=column)
    # A row without a location of its own is blamed on the default it was given.
    text = {c: pl.col(f"{c}_text") for c in ("sku", "product_id", "variant_id", "quantity")}
    text["location_id"] = pl.col("location_id_text").fill_null(pl.lit(str(default_location)))
    value = pl.coalesce([pl.when(pl.col("_canon") == c).then(t) for c, t in text.items()])
    rows = rows.with_columns(_value=value)
    # The plain message of each reason (schemas/stock.py), filled in vectorised.
    message = render(pl.col("check"), {
        "value": pl.col("_value"), "rows": pl.col("dup_rows"),
        "detail": pl.lit(None, pl.String), **quantity_fields(pl.col("quantity_text")),
    })
    # Blame the file's own header, so the message matches what the sender sees.
    header = pl.col("_canon").replace_strict(
        {c: table.mapping.get(c, c) for c in ("sku", "product_id", "variant_id",
                                               "location_id", "quantity")},
        default=pl.col("_canon"), return_dtype=pl.String)
    return rows.select(
        pl.col(ROW), header.alias("column"), pl.col("_value").alias("value"),
        pl.col("check").alias("reason"), message.alias("message"),
    )

