"""Stage 1: read a CSV or XLSX file into a :class:`StockTable` of text cells.

Every cell is read as text (no type inference), so leading zeros, big numbers and
odd values reach validation exactly as the file holds them. Each row keeps the row
number a person sees in a spreadsheet program (header = row 1).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sys
import tempfile
import zipfile
from array import array
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING
from xml.etree import ElementTree
from xml.parsers import expat

from invsync.errors import InputFileError, UsageError
from invsync.tables import ROW

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import polars as pl


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

_CSV_DELIMITERS = (",", ";", "\t", "|")
# Limits for untrusted files: far above any real stock file, far below what hurts.
MAX_COLUMNS = 1_000
MAX_CELL_CHARS = 10_000
"""Characters of a cell in a column invsync uses; a longer cell rejects its row."""
MAX_ANY_CELL_CHARS = 1_000_000
"""Characters of any cell (a description nobody reads may be long); past it, the file is
refused. The whole file's text is bounded by the readers' own budgets."""
MAX_XLSX_UNCOMPRESSED = 256 << 20
MAX_XLSX_RATIO = 200
MAX_XLSX_MEMBERS = 10_000
MAX_XLSX_CELL_TEXT = 64 << 20
"""Characters the Excel reader may materialise for one sheet: each cell's text, a shared
string counted once per cell that uses it (300,000 cells naming one 9,999-character string
are 3 GB of text from a 1.5 MB file)."""
_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
_TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ""}


@dataclass(frozen=True)
class StockTable:
    """A file's rows as text, with where each canonical column came from."""

    frame: pl.DataFrame
    """Original columns (all ``String``) under their original headers, plus :data:`ROW`."""
    path: Path
    format: str
    sha256: str
    mapping: dict[str, str]
    """Canonical column name -> original header, for the canonical columns present."""
    headers: list[str]
    """Original headers in file order (the columns of a re-uploadable rejected file)."""
    sheet: str | None = None
    sheet_index: int | None = None
    encoding: str | None = None
    delimiter: str | None = None
    blank_rows: int = 0
    notes: list[str] = field(default_factory=list)
    header_row: int = 1
    """The header's row number in the file (rows above it were a title or notes)."""
    layout: str | None = None
    """A recognised export layout (see :mod:`invsync.stages.layouts`), by its name."""
    problems: pl.DataFrame | None = None
    """Rows that could not be read (rejected as they are): ``ROW, column, value, reason,
    message``; the rows stay in ``frame`` so the rejected file keeps them."""

    @property
    def rows(self) -> int:
        """Number of non-blank data rows."""
        return self.frame.height


# A spreadsheet skips these before it looks for a formula sign: space, NBSP, U+3000, BOM.
BLANKS = " \u00a0\u3000\ufeff"
FORMULA = "^[" + BLANKS + "]*[=+\\-@\t\r]"
"""A cell a spreadsheet could evaluate: a formula sign after any leading blanks."""


def unescape_formulas(text: pl.Expr) -> pl.Expr:
    """Undo :func:`invsync.stages.report.escape_formulas`: ``'=x`` reads back as ``=x``."""
    return text.str.replace("^'(" + FORMULA[1:] + ")", "$1")


def normalise_header(name: str) -> str:
    """Lower-case a header, trim it, and treat spaces and punctuation (``-/.()?:#``) as
    underscores: ``Product Code/SKU`` is ``product_code_sku``, ``On hand (new)``
    ``on_hand_new``."""
    text = name.replace("\ufeff", "").replace("\x00", "").replace("\xa0", " ").lower()
    return re.sub(r"[\s\-_/.()\[\]?:#]+", "_", text).strip("_")


def read_stock_file(
    path: str | Path,
    *,
    sheet: str | None = None,
    column_map: dict[str, str] | None = None,
    encoding: str | None = None,
    header_row: int | None = None,
) -> StockTable:
    """Read ``path`` (CSV or a workbook, decided by content) into a :class:`StockTable`.

    ``column_map`` maps a file header to a canonical column and wins over the aliases and
    a recognised layout. ``encoding`` forces a CSV's text encoding (else it is detected);
    ``header_row`` names the header's row number (else the first of the top 20 rows
    naming an identifier and a quantity). Raises :class:`InputFileError` for an unreadable
    or unusable file.
    """
    p = Path(path)
    table = read_unmapped(p, sheet=sheet, encoding=encoding, header_row=header_row,
                          column_map=column_map)
    table = _map_columns(table, column_map or {})
    table = _check_used_cells(table)
    if table.format == "xlsx" and table.sheet_index is not None and zipfile.is_zipfile(p) \
            and p.suffix.lower() not in (".ods", ".xlsb"):
        table = _reject_uncalculated(table)
        notes = _numeric_identifier_notes(table)
        if notes:
            table = replace(table, notes=[*table.notes, *notes])
    return table


def _reject_uncalculated(table: StockTable) -> StockTable:
    """Reject the rows whose used cell is a formula no spreadsheet program has calculated."""
    import polars as pl

    used = list(dict.fromkeys(table.mapping.values()))
    cols = {table.headers.index(h): h for h in used if h in table.headers}
    found = uncalculated_formulas(table.path, table.sheet_index or 0, cols)
    rows = set(table.frame[ROW].to_list())
    hits = [(row, header) for header, rs in found.items() for row in rs if row in rows]
    if not hits:
        return table
    problems = pl.DataFrame(
        {ROW: [r for r, _ in hits], "column": [h for _, h in hits],
         "value": [None] * len(hits), "reason": ["formula_not_calculated"] * len(hits),
         "message": ["this cell holds a formula that was never calculated (its value would "
                     "be sent as 0); open and save the file in Excel first"] * len(hits)},
        schema={ROW: pl.Int64, "column": pl.String, "value": pl.String, "reason": pl.String,
                "message": pl.String})
    return _with_problems(table, problems.sort(ROW))


def uncalculated_formulas(path: Path, index: int, columns: dict[int, str]
                          ) -> dict[str, list[int]]:
    """Rows of each column (position in the used range) whose cell is an uncalculated formula.

    A formula without a cached value was never calculated; in a workbook flagged to
    recalculate everything on opening (``fullCalcOnLoad``, what writing libraries set
    because they cannot calculate) every formula's cached value is a placeholder.
    """
    def pick(zf: zipfile.ZipFile) -> Callable[[_Cell], bool]:
        workbook = ElementTree.fromstring(zf.read("xl/workbook.xml"))
        calc = next((e for e in workbook.iter() if _local(e.tag.rpartition("}")[2])
                     == "calcPr"), None)
        full_calc = calc is not None and calc.get("fullCalcOnLoad") in ("1", "true")
        return lambda cell: cell.formula and (full_calc or not cell.value)

    if not _may_hold_formulas(path, index):
        return {}
    return _cells_where(path, index, columns, pick, formulas_in_range=True)


_F_TAG = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?f[\s/>]")
_UTF8_HEAD = re.compile(rb"^(?:\xef\xbb\xbf)?\s*<(?!\?xml[^>]*encoding=[\"'](?!utf-8)[^\"']*[\"'])",
                        re.IGNORECASE)


def _may_hold_formulas(path: Path, index: int) -> bool:
    """Whether sheet ``index`` may hold a formula (``<f>``): a byte search, about 30 times
    faster than the per-cell parse, which most exported sheets (no formulas) then skip.
    True when unsure: a sheet not in UTF-8, or one that cannot be read so."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open(_sheet_member(zf, index)) as fh:
            tail = b""
            first = True
            while chunk := fh.read(1 << 20):
                if first and not _UTF8_HEAD.match(chunk):
                    return True
                first = False
                if _F_TAG.search(tail + chunk):
                    return True
                tail = chunk[-64:]  # a tag split between two chunks
    except (KeyError, StopIteration, IndexError, ValueError, zipfile.BadZipFile, OSError):
        return True
    return False


def read_stock_bytes(data: bytes, *, name: str = "stock.csv",
                     column_map: dict[str, str] | None = None, encoding: str | None = None,
                     header_row: int | None = None) -> StockTable:
    """Read a CSV file's ``data`` (named ``name`` in messages) as :func:`read_stock_file` does.

    Every check of a CSV file applies; for tests and callers holding the bytes in memory.
    A workbook is refused: its checks stream from a file on disk.
    """
    p = Path(name)
    if header_row is not None and header_row < 1:
        raise UsageError(f"--header-row must be 1 or more, not {header_row}")
    if _detect_format(p, data) == "excel":
        raise InputFileError(name, "an Excel workbook is read from a file: use read_stock_file")
    table = _read_csv(p, data, hashlib.sha256(data).hexdigest(), encoding=encoding,
                      header_row=header_row, column_map=column_map)
    return _check_used_cells(_map_columns(table, column_map or {}))


def read_unmapped(path: str | Path, *, sheet: str | None = None, encoding: str | None = None,
                  header_row: int | None = None, column_map: dict[str, str] | None = None,
                  ) -> StockTable:
    """Read ``path`` with every hostile-file check, but match no headers (``mapping`` is empty).

    For showing a file's columns to someone who has to say which is which.
    """
    p = Path(path)
    if header_row is not None and header_row < 1:
        raise UsageError(f"--header-row must be 1 or more, not {header_row}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputFileError(str(p), f"cannot read file: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if _detect_format(p, data) == "excel":
        return _read_excel(p, digest, sheet, header_row=header_row, column_map=column_map)
    if sheet is not None:
        raise UsageError(f"--sheet applies to Excel files, but {p} is a CSV file")
    return _read_csv(p, data, digest, encoding=encoding, header_row=header_row,
                     column_map=column_map)


def map_columns(table: StockTable, column_map: dict[str, str]) -> StockTable:
    """Match ``table``'s headers onto canonical columns (see :func:`read_stock_file`)."""
    return _check_used_cells(_map_columns(table, column_map))


def _check_used_cells(table: StockTable) -> StockTable:
    """Reject the rows whose cell in a used column is absurdly long (the rows, not the file)."""
    import polars as pl

    used = [h for h in dict.fromkeys(table.mapping.values()) if h in table.frame.columns]
    if not used or table.frame.height == 0:
        return table
    longest = table.frame.select(pl.max_horizontal(pl.col(used).str.len_chars().max())).item()
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
    return _with_problems(table, pl.concat(found))


def _with_problems(table: StockTable, found: pl.DataFrame) -> StockTable:
    """``table`` with ``found`` added to its problem rows (one per row: the first kept)."""
    import polars as pl

    merged = found if table.problems is None else pl.concat([table.problems, found])
    merged = merged.unique(ROW, keep="first", maintain_order=True).sort(ROW)
    return replace(table, problems=merged)


def _numeric_identifier_notes(table: StockTable) -> list[str]:
    """Notes on identifier cells stored as numbers: Excel may have dropped their leading zeros."""
    import polars as pl

    cols = {table.headers.index(h): h for c, h in table.mapping.items() if c == "sku"}
    if not cols:
        return []
    header = next(iter(cols.values()))
    digits = table.frame.filter(pl.col(header).str.contains(r"^\s*\d+\s*$"))
    if digits.height == 0:
        return []
    notes = []
    hits = numeric_cells(table.path, table.sheet_index or 0, cols, set(digits[ROW].to_list()))
    for name, rows in hits.items():
        shown = ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10:,} more"
                                                   if len(rows) > 10 else "")
        notes.append(
            f"column {name!r}: {len(rows):,} identifier cell(s) are stored as numbers in the "
            f"workbook (rows {shown}); if those SKUs have leading zeros, Excel removed them: "
            f"format the column as Text and type them again")
    return notes


def _detect_format(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    is_excel = data.startswith(_XLSX_MAGIC) or data.startswith(_XLS_MAGIC)
    if is_excel:
        if suffix in _TEXT_SUFFIXES - {""}:
            raise InputFileError(
                str(path), f"named {suffix} but it is an Excel workbook; rename it to .xlsx"
            )
        return "excel"
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml") and \
            b"urn:schemas-microsoft-com:office:spreadsheet" in data[:4096]:
        raise InputFileError(str(path), "this is an XML Spreadsheet 2003 file, not an Excel "
                                        "workbook; open it and save it as .xlsx or .csv")
    if suffix in _EXCEL_SUFFIXES:
        raise InputFileError(
            str(path), f"named {suffix} but it is not an Excel workbook (no xlsx/xls signature)"
        )
    if not data.strip():
        raise InputFileError(str(path), "the file is empty")
    return "csv"


_COMMON_ENCODINGS = (
    "cp1252", "cp1250", "cp1251", "cp1253", "cp1254", "cp1257", "iso8859_2", "iso8859_7",
    "iso8859_15", "cp932", "shift_jis", "euc_jp", "gb18030", "big5", "euc_kr", "koi8_r",
    "cp1255", "cp1256", "cp874",
)
"""Encodings a spreadsheet program or an old system writes; the detector picks among these."""
_ENCODING_NAMES = {"cp1252": "windows-1252", "cp1250": "windows-1250", "cp1251": "windows-1251",
                   "cp1253": "windows-1253", "cp1254": "windows-1254", "cp1257": "windows-1257",
                   "cp932": "shift_jis", "iso8859_2": "iso-8859-2", "iso8859_7": "iso-8859-7",
                   "iso8859_15": "iso-8859-15"}
_DETECT_SAMPLE = 1 << 20


def _utf16_without_bom(data: bytes) -> str | None:
    """``utf-16-le``/``-be`` when NUL bytes sit on one side of nearly every pair (ASCII text)."""
    head = data[:4096]
    pairs = len(head) // 2
    if pairs < 2:
        return None
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if odd > 0.4 * pairs and even < 0.05 * pairs:
        return "utf-16-le"
    if even > 0.4 * pairs and odd < 0.05 * pairs:
        return "utf-16-be"
    return None


def _detect_encoding(path: Path, data: bytes) -> str:
    """The encoding of text that is not UTF-8, or a refusal naming the candidates.

    charset-normalizer ranks the candidates; one is taken when it alone reads as a
    language, or when all the plausible ones read the file the same, or when Windows-1252
    (by far the most common) is among them; otherwise the readings are too close to call
    and the file is refused, naming them.
    """
    from charset_normalizer import from_bytes

    sample = data[:_DETECT_SAMPLE]
    results = list(from_bytes(sample, cp_isolation=list(_COMMON_ENCODINGS)))
    if not results:
        raise InputFileError(str(path), "the file's text encoding is not recognised; save it "
                                        "as UTF-8 (or name the encoding with --encoding)")
    best = min(m.chaos for m in results)
    band = [m for m in results if m.chaos <= best + 0.03]
    texts = {str(m) for m in band}
    if len(texts) == 1:
        return band[0].encoding
    fluent = sorted((m for m in band if m.coherence > 0.1), key=lambda m: -m.coherence)
    if any(m.encoding == "cp1252" for m in fluent):
        return "cp1252"  # by far the most common: a Western European Excel's "CSV"
    if len(fluent) == 1 or (len(fluent) > 1 and fluent[0].coherence - fluent[1].coherence >= 0.3):
        return fluent[0].encoding
    if not fluent and any(m.encoding == "cp1252" for m in band):
        return "cp1252"
    fluent = fluent or band
    names = ", ".join(_ENCODING_NAMES.get(m.encoding, m.encoding) for m in fluent[:4])
    raise InputFileError(
        str(path), f"the file is not UTF-8 and its encoding is unclear (it could be {names}); "
                   f"save it as UTF-8, or name the encoding with --encoding")


def text_encoding(name: str) -> str:
    """The codec name of the text encoding ``name``; LookupError if Python knows no such
    text encoding (``base64``, ``rot13`` or ``zlib`` are codecs, but not of text)."""
    import codecs

    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):  # a NUL in the name is a ValueError
        raise LookupError(name) from None
    if not getattr(info, "_is_text_encoding", True):
        raise LookupError(name)
    return info.name


def _decode(path: Path, data: bytes, forced: str | None = None) -> tuple[bytes, str]:
    """Return UTF-8 bytes without BOM and the encoding the file was in."""
    if forced:
        try:
            name = text_encoding(forced)
        except LookupError:
            raise UsageError(f"unknown encoding {forced!r} (--encoding; a text encoding)") from None
        try:
            text = data.decode(name)
        except UnicodeDecodeError as exc:
            raise InputFileError(str(path), f"the file is not valid {forced} text (byte "
                                            f"{exc.start:,}: {exc.reason})") from None
        except UnicodeError as exc:  # codecs such as punycode or undefined raise this
            raise InputFileError(str(path), f"the file is not valid {forced} text "
                                            f"({exc})") from None
        return text.lstrip("\ufeff").encode("utf-8"), name
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16").encode("utf-8"), "utf-16"
        except UnicodeDecodeError as exc:
            raise InputFileError(str(path), f"invalid UTF-16 text: {exc.reason}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data, encoding = data[3:], "utf-8-sig"
    else:
        encoding = "utf-8"
    if b"\x00" in data[:8192]:
        utf16 = _utf16_without_bom(data)
        if utf16 is not None:
            try:
                return data.decode(utf16).encode("utf-8"), utf16
            except UnicodeDecodeError:
                pass
        raise InputFileError(str(path), "this is a binary file, not CSV text")
    try:
        data.decode("utf-8")
        return data, encoding
    except UnicodeDecodeError:
        pass
    detected = _detect_encoding(path, data)
    try:
        text = data.decode(detected)
    except UnicodeDecodeError as exc:
        raise InputFileError(str(path), f"the file looks like {detected} text but byte "
                                        f"{exc.start:,} is not; save it as UTF-8, or name the "
                                        f"encoding with --encoding") from None
    return text.encode("utf-8"), _ENCODING_NAMES.get(detected, detected)


def _first_line_of(data: bytes) -> bytes:
    end = data.find(b"\n")
    return data if end < 0 else data[:end]  # no split(): that would copy the whole file


def _header_record_end(data: bytes) -> int:
    """Offset of the newline ending the header record (a quoted cell may hold newlines)."""
    quotes, start = 0, 0
    while (end := data.find(b"\n", start)) >= 0:
        quotes += data.count(b'"', start, end)
        if quotes % 2 == 0:  # outside quotes ("" inside a quoted cell counts twice)
            return end
        start = end + 1
    return len(data)


def _header_columns(data: bytes, delimiter: bytes) -> int:
    """Columns of the parsed header record: delimiters outside quotes, plus one.

    Linear in the header record's length and never more than a few copies of it: the
    first physical line is not enough, since ``"sku\n"`` hides the rest of the record.
    """
    end = _header_record_end(data)
    if data.count(delimiter, 0, end) < MAX_COLUMNS:
        return data.count(delimiter, 0, end) + 1  # an upper bound that is small enough
    parts = data[:end].split(b'"')
    return sum(part.count(delimiter) for part in parts[::2]) + 1


def _sniff_delimiter(data: bytes) -> str:
    """Pick the delimiter that occurs most in the header line (outside quotes)."""
    first = _first_line_of(data).decode("utf-8", errors="replace")
    unquoted = re.sub(r'"[^"]*"', "", first)
    counts = {d: unquoted.count(d) for d in _CSV_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _read_csv(path: Path, raw: bytes, digest: str, *, encoding: str | None = None,
              header_row: int | None = None, column_map: dict[str, str] | None = None,
              ) -> StockTable:
    import polars as pl

    data, encoding = _decode(path, raw, encoding)
    if b"\n" not in data and b"\r" in data:
        data = data.replace(b"\r", b"\n")  # classic Mac line endings
    # Excel's own first line naming the delimiter; Excel shows the header as row 1.
    sep = re.match(rb"\s*sep=([^\r\n])[ \t]*\r?\n", data)
    delimiter = sep.group(1).decode() if sep else None
    if sep:
        data = data[sep.end():]
    # Blank lines above the header: polars skips them, a spreadsheet counts them.
    blank = re.match(rb"(?:[ \t]*\r?\n)*", data)
    leading = blank.group(0).count(b"\n") if blank else 0
    data = data[blank.end():] if blank else data
    if not data:
        raise InputFileError(str(path), "the file has no header row")
    delimiter = delimiter or _sniff_delimiter(data)
    skip, data = _csv_header(path, data, delimiter, header_row, column_map, leading)
    if skip:  # the rows above the header: a title, notes
        delimiter = _sniff_delimiter(data) if not sep else delimiter
    first_row = 1 + leading + skip
    if _header_columns(data, delimiter.encode()) > MAX_COLUMNS:
        raise InputFileError(str(path), f"the header has more than {MAX_COLUMNS:,} columns; "
                                        f"this is not a stock file")
    problems = None
    try:
        frame = pl.read_csv(
            data,
            separator=delimiter,
            has_header=True,
            infer_schema=False,
            row_index_name=ROW,
            row_index_offset=first_row + 1,
            raise_if_empty=True,
        )
    except pl.exceptions.NoDataError:
        raise InputFileError(str(path), "the file has no header row") from None
    except pl.exceptions.PolarsError:
        # Not the strict CSV polars reads fast: read it as Python's csv module and
        # spreadsheet programs do, and reject only the rows that cannot be read.
        frame, problems = _read_csv_carefully(path, data, delimiter, first_row)
    notes = []
    if encoding not in ("utf-8", "utf-8-sig"):
        shown = encoding.replace("windows", "Windows").replace("utf", "UTF").upper() \
            if not encoding.startswith("windows") else encoding.replace("windows", "Windows")
        notes.append(f"the file is not UTF-8; it was read as {shown}")
    if skip:
        notes.append(f"the header is on row {first_row}; the {skip} row(s) above it were "
                     f"skipped")
    table = _finish(frame, path, "csv", digest, encoding=encoding, delimiter=delimiter,
                    notes=notes, header_row=first_row)
    if problems is not None and problems.height:
        table = StockTable(**{**table.__dict__, "problems": problems})
    return table


MAX_CSV_RECORD = 16 << 20
"""Characters one CSV record may hold (a quote that is never closed swallows the rest)."""


def _read_csv_carefully(path: Path, data: bytes, delimiter: str, first_row: int,
                        ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read CSV record by record with Python's csv module; return rows and problem rows.

    A row with more cells than the header (and something in them) or one the csv module
    refuses is a problem row, named by its row number; the others are read as a
    spreadsheet program reads them (a quote inside an unquoted cell is just a character).
    """
    import csv
    import io

    import polars as pl

    csv.field_size_limit(MAX_CSV_RECORD)
    text = data.decode("utf-8", errors="replace")
    lines = io.StringIO(text, newline="")
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise InputFileError(str(path), "the header row is not readable as CSV") from None
    names = _unique_headers(header)
    width = len(names)
    # The records go back out as strict CSV (the csv module's writer is C) for polars to
    # read: far less time and memory than a Python list per column.
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    write = writer.writerow
    bad_rows: list[int] = []
    bad_msgs: list[str] = []
    row, last_line = first_row, reader.line_num
    while True:
        row += 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad_rows.append(row)
            bad_msgs.append(f"this row cannot be read as CSV ({exc})")
            record = []
        if len(record) != width:
            lines_used = reader.line_num - last_line
            if len(record) > width and any(c.strip() for c in record[width:]):
                bad_rows.append(row)
                hint = (" (a quote opened here is never closed: it spans "
                        f"{lines_used} lines)" if lines_used > 1 else
                        f" (a {delimiter!r} inside a cell that is not in quotes?)")
                bad_msgs.append(f"this row has {len(record)} cells but the header has "
                                f"{width}{hint}")
                # Kept whole in its last cell, so the rejected file shows the row as written
                # ("1,204", not "1": fixed as shown, that would be a wrong level).
                record = [*record[:width - 1], delimiter.join(record[width - 1:])]
            record = (record + [""] * width)[:width]
        last_line = reader.line_num
        write([row, *record])
    frame = pl.read_csv(out.getvalue().encode("utf-8"), has_header=False, infer_schema=False,
                        new_columns=[ROW, *names], raise_if_empty=False)
    del out
    if frame.width != width + 1:  # no rows at all
        frame = pl.DataFrame(schema={ROW: pl.String, **dict.fromkeys(names, pl.String)})
    frame = frame.select(*names, pl.col(ROW).cast(pl.Int64))
    problems = pl.DataFrame(
        {ROW: bad_rows, "column": [None] * len(bad_rows), "value": [None] * len(bad_rows),
         "reason": ["unreadable_row"] * len(bad_rows), "message": bad_msgs},
        schema={ROW: pl.Int64, "column": pl.String, "value": pl.String, "reason": pl.String,
                "message": pl.String})
    return frame, problems


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


def _csv_header(path: Path, data: bytes, delimiter: str, header_row: int | None,
                column_map: dict[str, str] | None, leading: int) -> tuple[int, bytes]:
    """How many records sit above the header, and the data from the header on."""
    import csv
    import io

    if header_row is not None and header_row < 1 + leading:
        raise UsageError(f"--header-row {header_row}: the file's first row with text is row "
                         f"{1 + leading}")
    head = data[:1 << 20].decode("utf-8", errors="replace")

    def records(sep: str) -> tuple[list[list[str]], list[int]]:
        reader = csv.reader(io.StringIO(head, newline=""), delimiter=sep)
        rows: list[list[str]] = []
        ends: list[int] = []
        try:
            for record in reader:
                rows.append(record)
                ends.append(reader.line_num)
                if len(rows) >= HEADER_SEARCH_ROWS + 1 and header_row is None:
                    break
                if header_row is not None and len(rows) >= header_row - leading:
                    break
        except csv.Error:
            pass
        return rows, ends

    rows, ends = records(delimiter)
    if header_row is not None:
        skip = header_row - 1 - leading
        if skip >= len(rows):
            raise InputFileError(str(path), f"--header-row {header_row}: the file has no "
                                            f"such row")
    else:
        found = _header_index(rows, column_map)
        # A title line says nothing of the delimiter: the header may use another one.
        for other in (d for d in _CSV_DELIMITERS if d != delimiter):
            if found is not None:
                break
            rows_other, ends_other = records(other)
            found = _header_index(rows_other, column_map)
            if found is not None:
                ends = ends_other
        skip = found or 0
    if skip == 0:
        return 0, data
    offset = 0
    for _ in range(ends[skip - 1]):
        offset = data.index(b"\n", offset) + 1
    return skip, data[offset:]


def _check_workbook(path: Path) -> None:
    """Refuse zip bombs and XML with DTDs (entity bombs) before a parser sees them."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            if len(members) > MAX_XLSX_MEMBERS:
                raise InputFileError(str(path), f"the workbook has {len(members):,} parts; "
                                                f"refusing it as a likely zip bomb")
            total = sum(m.file_size for m in members)
            if total > MAX_XLSX_UNCOMPRESSED:
                raise _bomb(path, f"the workbook says it unpacks to {total / (1 << 20):,.0f} MiB")
            for m in members:
                if m.file_size > (16 << 20) and m.file_size / max(m.compress_size, 1) > \
                        MAX_XLSX_RATIO:
                    raise _bomb(path, f"part {m.filename} is compressed "
                                      f"{m.file_size / max(m.compress_size, 1):,.0f}:1")
            # Declared sizes are the sender's word: unpack every part once, counting real
            # bytes (zipfile stops at the declared size and checks the CRC).
            seen = 0
            for m in members:
                with zf.open(m) as fh:
                    head = fh.read(4096)
                    if m.filename.endswith((".xml", ".rels")) and (
                            b"<!DOCTYPE" in head or b"<!ENTITY" in head):
                        raise InputFileError(
                            str(path), f"part {m.filename} declares a DTD/entities, which "
                                       f"spreadsheets never do; refusing it (XML bomb?)")
                    seen += len(head)
                    while chunk := fh.read(1 << 20):
                        seen += len(chunk)
                        if seen > MAX_XLSX_UNCOMPRESSED:
                            raise _bomb(path, f"the workbook unpacks to more than "
                                              f"{MAX_XLSX_UNCOMPRESSED >> 20} MiB")
    except zipfile.BadZipFile as exc:
        raise InputFileError(str(path), f"not a readable workbook: {exc}") from None


def _bomb(path: Path, why: str) -> InputFileError:
    return InputFileError(str(path), f"{why}; refusing it as a likely zip bomb (invsync reads "
                                     f"workbooks of up to {MAX_XLSX_UNCOMPRESSED >> 20} MiB "
                                     f"unpacked; save a large export as CSV)")


def _check_cells(path: Path, frame: pl.DataFrame) -> None:
    """Refuse absurdly long cells (naming the first one) instead of carrying them along."""
    import polars as pl

    cols = [c for c in frame.columns if c != ROW]
    if not cols or frame.height == 0:
        return
    longest = frame.select(pl.max_horizontal(pl.col(cols).str.len_chars().max()))
    if (longest.item() or 0) <= MAX_ANY_CELL_CHARS:
        return
    for c in cols:
        hit = frame.filter(pl.col(c).str.len_chars() > MAX_ANY_CELL_CHARS).head(1)
        if hit.height:
            raise InputFileError(
                str(path), f"row {hit[ROW][0]}, column {c!r}: a cell of "
                           f"{len(hit[c][0]):,} characters (the limit is {MAX_ANY_CELL_CHARS:,}); "
                           f"is this really a stock file?")


def _read_excel(path: Path, digest: str, sheet: str | None, *, header_row: int | None = None,
                column_map: dict[str, str] | None = None) -> StockTable:
    import fastexcel

    suffix = path.suffix.lower()
    _refuse_other_formats(path)
    if zipfile.is_zipfile(path):
        _check_workbook(path)

    try:
        with _rust_panics_hushed():
            reader = fastexcel.read_excel(str(path))
    except Exception as exc:  # fastexcel raises its own hierarchy for corrupt files
        raise InputFileError(str(path), f"not a readable workbook: {_first_line(exc)}") from None
    except BaseException as exc:
        raise _damaged(path, exc) from None
    names = reader.sheet_names
    index = _pick_sheet(path, names, sheet)
    if zipfile.is_zipfile(path) and suffix != ".ods":
        _check_cell_text(path, index)
    try:
        with _rust_panics_hushed():
            # skip_rows=0 keeps the empty rows above the data: row i is the sheet's row i+1
            # in every format (xlsx, xlsb, xls, ods).
            loaded = reader.load_sheet(index, header_row=None, dtypes="string", skip_rows=0)
            frame = loaded.to_polars()
    except Exception as exc:
        raise InputFileError(
            str(path), f"sheet {names[index]!r} is not readable: {_first_line(exc)}"
        ) from None
    except BaseException as exc:
        raise _damaged(path, exc) from None
    import polars as pl

    frame = _utf16_cells(frame.with_row_index(ROW, offset=1)
                         .with_columns(pl.col(ROW).cast(pl.Int64)))
    cells = [c for c in frame.columns if c != ROW]
    filled = frame.filter(pl.any_horizontal(pl.col(cells).is_not_null()
                                            & (pl.col(cells).str.strip_chars() != "")))
    if filled.height == 0:
        raise InputFileError(str(path), f"sheet {names[index]!r} is empty")
    if header_row is not None:
        if header_row > frame.height:
            raise InputFileError(str(path), f"--header-row {header_row}: sheet "
                                            f"{names[index]!r} has {frame.height} rows")
        at = header_row - 1
    else:
        top = filled.head(HEADER_SEARCH_ROWS)
        rows = [[("" if v is None else str(v)) for v in r] for r in top.select(cells).rows()]
        at = int(top[ROW][find_header(rows, column_map)]) - 1
    header = [("" if v is None else str(v).replace("\x00", "")) for v in frame.select(cells)
              .row(at)]  # a NUL left after _utf16_cells is not part of any header
    body = frame.slice(at + 1).select(*cells, ROW)
    body.columns = [*_unique_headers(header), ROW]
    notes = []
    if at > 0 and filled[ROW][0] <= at:
        notes.append(f"the header is on row {at + 1}; the rows above it were skipped")
    return _finish(body, path, "xlsx", digest, sheet=names[index], sheet_index=index,
                   header_row=at + 1, notes=notes)


_OLE_MAGIC = _XLS_MAGIC


def _as_utf16(text: str | None) -> str | None:
    """``D\x00a\x00y\x00`` -> ``Day``: UTF-16 bytes a BIFF writer stored as 8-bit text."""
    if text is None or "\x00" not in text or len(text) % 2:
        return text
    try:
        return text.encode("latin-1").decode("utf-16-le")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _utf16_cells(frame: pl.DataFrame) -> pl.DataFrame:
    """Decode the cells some BIFF writers store as UTF-16 in 8-bit strings (as xlrd does)."""
    import polars as pl

    cols = [c for c, t in frame.schema.items() if t == pl.String]
    if not cols:
        return frame
    hit = frame.select(pl.col(cols).str.contains("\x00", literal=True).any())
    bad = [c for c in cols if hit[c][0]]
    if not bad:
        return frame
    return frame.with_columns(pl.col(c).map_elements(_as_utf16, return_dtype=pl.String)
                              for c in bad)


def _refuse_other_formats(path: Path) -> None:
    """Name what a workbook-looking file really is when invsync cannot read it."""
    how = "open it and save or export it as .xlsx or .csv"
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(_OLE_MAGIC):
        streams = _ole_stream_names(path)
        if "EncryptedPackage" in streams or "EncryptionInfo" in streams:
            raise InputFileError(str(path), "the workbook is password-protected: open it, "
                                            "save it without a password, and try again")
        if _xls_encrypted(path):
            raise InputFileError(str(path), "the workbook is password-protected: open it, "
                                            "save it without a password, and try again")
        if streams and not ({"Workbook", "Book"} & streams):
            raise InputFileError(str(path), f"this is not an Excel workbook (an OLE file "
                                            f"holding {', '.join(sorted(streams)[:4])}); {how}")
    elif zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                members = set(zf.namelist())
        except (zipfile.BadZipFile, OSError):
            return
        if any(m.endswith((".iwa", "Index.zip")) for m in members) or \
                ("[Content_Types].xml" not in members and "mimetype" not in members and any(
                    m.endswith(".numbers/") or m.startswith("Metadata/") for m in members)):
            raise InputFileError(str(path), "this is an Apple Numbers file, not an Excel "
                                            "workbook; in Numbers choose File > Export To > "
                                            "Excel (or CSV) and use that file")
    elif _is_xml_spreadsheet(path):
        raise InputFileError(str(path), f"this is an XML Spreadsheet 2003 file, not an Excel "
                                        f"workbook; {how}")


_BIFF8_BOF = b"\x09\x08\x10\x00\x00\x06\x05\x00"


def _xls_encrypted(path: Path) -> bool:
    """Whether a BIFF8 workbook's globals start with a FILEPASS record (it is encrypted)."""
    import struct

    data = path.read_bytes()
    at = data.find(_BIFF8_BOF)
    if at < 0:
        return False
    pos = at + 4 + 16
    for _ in range(16):  # FILEPASS follows BOF within the first few records
        if pos + 4 > len(data):
            return False
        kind, size = struct.unpack_from("<HH", data, pos)
        if kind == 0x002F:
            return True
        pos += 4 + size
    return False


def _is_xml_spreadsheet(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<?xml") and b"urn:schemas-microsoft-com:office:spreadsheet" in head


def _ole_stream_names(path: Path) -> set[str]:
    """Names in the root directory of an OLE compound file (best effort, empty if unsure)."""
    import struct

    try:
        data = path.read_bytes()
        sector = 1 << struct.unpack_from("<H", data, 30)[0]
        if sector not in (512, 4096):
            return set()
        first_dir = struct.unpack_from("<I", data, 48)[0]
        start = (first_dir + 1) * sector
        names = set()
        # The directory's first sector holds the root and its first entries: enough to
        # tell a workbook (Workbook/Book) from an encrypted package.
        for off in range(start, min(start + sector, len(data)), 128):
            length = struct.unpack_from("<H", data, off + 64)[0]
            if 2 <= length <= 64:
                names.add(data[off:off + length - 2].decode("utf-16-le", errors="replace"))
    except (OSError, struct.error):
        return set()
    return names


@contextlib.contextmanager
def _rust_panics_hushed() -> Iterator[None]:
    """Hold back what goes to stderr (fd 2) meanwhile; drop it if the reader panicked.

    A Rust panic prints its own message (and, with RUST_BACKTRACE, a backtrace) straight
    to fd 2 before Python sees the PanicException; invsync reports the damaged workbook
    itself. Anything else written meanwhile is passed on afterwards.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    panicked = False
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException as exc:
            panicked = type(exc).__name__ == "PanicException"
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not panicked:
                held.seek(0)
                if data := held.read():
                    os.write(2, data)


def _damaged(path: Path, exc: BaseException) -> BaseException:
    """The Excel reader's panic (a BaseException, not an Exception) as a refused file.

    Anything else deriving from BaseException (KeyboardInterrupt, SystemExit) is returned
    unchanged for the caller to re-raise.
    """
    if type(exc).__name__ != "PanicException":
        return exc
    return InputFileError(str(path), f"the workbook is damaged (the Excel reader failed: "
                                     f"{_first_line(exc)}); open it in Excel and save it "
                                     f"again, or export it as CSV")


def _pick_sheet(path: Path, names: list[str], sheet: str | None) -> int:
    if sheet is None:
        return 0
    if sheet in names:
        return names.index(sheet)
    if sheet.isdigit() and 1 <= int(sheet) <= len(names):
        return int(sheet) - 1
    raise InputFileError(
        str(path), f"no sheet {sheet!r}; the workbook has {', '.join(map(repr, names))}"
    )


_NS_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"


def _scan_xml(fh: IO[bytes], *, start: Callable[[str, dict[str, str]], None] | None = None,
              end: Callable[[str], None] | None = None,
              text: Callable[[str], None] | None = None) -> None:
    """Stream an XML part through expat, calling the given handlers; linear in its size.

    Element names come with any namespace prefix (``x:c``); DTDs and entity declarations
    are refused with a ValueError.
    """
    parser = expat.ParserCreate()
    parser.buffer_text = True

    def refuse(*_: object) -> None:
        raise ValueError("declares a DTD/entities, which spreadsheets never do")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    if start is not None:
        parser.StartElementHandler = start
    if end is not None:
        parser.EndElementHandler = end
    if text is not None:
        parser.CharacterDataHandler = text
    while chunk := fh.read(1 << 16):
        parser.Parse(chunk, False)
    parser.Parse(b"", True)


def _local(name: str) -> str:
    return name.rpartition(":")[2]


def _sheet_member(zf: zipfile.ZipFile, index: int) -> str:
    """The zip member holding sheet number ``index`` (0-based, workbook order)."""
    workbook = ElementTree.fromstring(zf.read("xl/workbook.xml"))
    # Transitional or Strict OOXML: the same names under other namespaces.
    sheets = next((e for e in workbook if e.tag.rpartition("}")[2] == "sheets"), None)
    if sheets is None:
        raise KeyError("sheets")
    attrs = list(sheets)[index].attrib
    rel_id = attrs.get(f"{_NS_REL}id") or next(
        (v for k, v in attrs.items() if k.startswith("{") and k.endswith("}id")), None)
    rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    target = next(r.get("Target", "") for r in rels if r.get("Id") == rel_id)
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


_REF = re.compile(r"([A-Z]{1,3})(\d{1,7})\Z")
"""A cell reference (``AB12``): the attribute is short, so matching it is cheap."""


def _col_number(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n


def numeric_cells(path: Path, index: int, columns: dict[int, str],
                  rows: set[int]) -> dict[str, list[int]]:
    """Of ``rows``, those whose cell in each column (position in the used range) is a number.

    A SKU typed into Excel as a number has lost any leading zeros before invsync sees it;
    only the cell's type tells a number cell from a text cell that looks the same.
    """
    def is_number(cell: _Cell) -> bool:
        return cell.value and cell.type == "n" and cell.row in rows

    return _cells_where(path, index, columns, lambda _: is_number)


@dataclass(slots=True)
class _Cell:
    """The ``<c>`` element being read by :func:`_cells_where` (one object, reused)."""

    col: int = 0
    row: int = 0
    type: str = "n"
    """Its ``t`` attribute (``n``, a number, when there is none)."""
    formula: bool = False
    """It holds an ``<f>``."""
    value: bool = False
    """It holds a ``<v>`` or an inline string ``<is>``."""


def _cells_where(path: Path, index: int, columns: dict[int, str],
                 pick: Callable[[zipfile.ZipFile], Callable[[_Cell], bool]], *,
                 formulas_in_range: bool = False) -> dict[str, list[int]]:
    """Rows of each column (position in the used range) whose cell ``pick`` chooses.

    ``pick`` gets the open workbook (to read what else it needs) and returns the test of
    one cell, called once per ``<c>`` with a row reference when its element ends. The used
    range starts at the first column with a value (``formulas_in_range``: or a formula).
    Sheet ``index`` is streamed through expat (linear time, no regex over the XML); a
    workbook that cannot be read so finds nothing (reading it properly says why).
    """
    first_col = [1 << 30]
    hits: dict[int, array[int]] = {}
    cell = _Cell()
    in_cell = [False]
    columns_seen: dict[str, int] = {}

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "c":
            ref = _REF.match(attrs.get("r", ""))
            in_cell[0] = ref is not None
            if ref is not None:
                letters = ref.group(1)
                col = columns_seen.get(letters)
                if col is None:
                    col = columns_seen[letters] = _col_number(letters)
                cell.col, cell.row = col, int(ref.group(2))
                cell.type, cell.formula, cell.value = attrs.get("t", "n"), False, False
        elif in_cell[0] and local == "f":
            cell.formula = True
        elif in_cell[0] and local in ("v", "is"):
            cell.value = True

    def end(name: str) -> None:
        if not in_cell[0] or _local(name) != "c":
            return
        in_cell[0] = False
        if cell.value or (formulas_in_range and cell.formula):
            first_col[0] = min(first_col[0], cell.col)
        if chosen(cell):
            hits.setdefault(cell.col, array("q")).append(cell.row)

    found: dict[str, list[int]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            chosen = pick(zf)
            with zf.open(_sheet_member(zf, index)) as fh:
                _scan_xml(fh, start=start, end=end)
    except (KeyError, StopIteration, IndexError, ValueError, zipfile.BadZipFile,
            ElementTree.ParseError, expat.ExpatError):
        return found
    for pos, header in columns.items():
        rows = hits.get(first_col[0] + pos)
        if rows:
            found[header] = sorted(rows)
    return found


_SI_TAG = re.compile(rb"<(?:[A-Za-z_][\w.\-]*:)?si[\s/>]")
_SST_QUICK_MAX = 32 << 20


def _longest_shared_string(zf: zipfile.ZipFile) -> int | None:
    """An upper bound of the longest shared string in characters, without parsing: the
    widest gap between two ``<si>`` tags. None when a tag-like text could hide in the part
    (CDATA, comments, processing instructions, a non-UTF-8 encoding) or it is large."""
    longest = 0
    for info in zf.infolist():
        if not info.filename.lower().endswith("sharedstrings.xml"):
            continue
        if info.file_size > _SST_QUICK_MAX:
            return None
        data = zf.read(info)
        head = data[:200].lower()
        if not data.lstrip(b"\xef\xbb\xbf").startswith(b"<") or (
                b"encoding=" in head and b"utf-8" not in head) or (
                b"<![cdata[" in data.lower() or b"<!--" in data or data.count(b"<?") > 1):
            return None
        last = None
        for m in _SI_TAG.finditer(data):  # linear: one tag name per "<"
            if last is not None:
                longest = max(longest, m.start() - last)
            last = m.start()
        if last is not None:
            longest = max(longest, len(data) - last)
    return longest


def _shared_string_lengths(zf: zipfile.ZipFile) -> array[int]:
    """Characters of each shared string, by index (the longest reading of any candidate)."""
    lengths: array[int] = array("q")
    for member in zf.namelist():
        if member.lower().endswith("sharedstrings.xml"):
            with zf.open(member) as fh:
                these = _string_lengths(fh)
            if len(these) > len(lengths):
                lengths.extend([0] * (len(these) - len(lengths)))
            for i, n in enumerate(these):
                lengths[i] = max(lengths[i], n)
    return lengths


def _string_lengths(fh: IO[bytes]) -> array[int]:
    """Characters of each ``<si>`` of a shared-strings part: its ``<t>`` text, not ``<rPh>``."""
    lengths: array[int] = array("q")
    state = {"si": False, "phonetic": False, "t": False}

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "si":
            lengths.append(0)
            state["si"] = True
        elif local == "rPh":
            state["phonetic"] = True
        elif local == "t":
            state["t"] = state["si"] and not state["phonetic"]

    def end(name: str) -> None:
        local = _local(name)
        if local in ("si", "rPh", "t"):
            state[{"si": "si", "rPh": "phonetic", "t": "t"}[local]] = False

    def text(data: str) -> None:
        if state["t"]:
            lengths[-1] += len(data)

    _scan_xml(fh, start=start, end=end, text=text)
    return lengths


def _check_cell_text(path: Path, index: int) -> None:
    """Refuse a sheet whose cells would expand to more than :data:`MAX_XLSX_CELL_TEXT`.

    Shared strings are stored once but materialised once per cell that names them, so
    the unpacked size says nothing about the reader's memory. A cheap bound (every cell
    naming the longest shared string) clears ordinary workbooks; otherwise the sheet is
    streamed and each cell's real length added up, stopping at the budget.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            member = _sheet_member(zf, index)
            longest = _longest_shared_string(zf)
            lengths = None
            if longest is None:
                lengths = _shared_string_lengths(zf)
                longest = max(lengths, default=0)
            size = tags = 0
            with zf.open(member) as fh:
                while chunk := fh.read(1 << 20):
                    size += len(chunk)
                    tags += chunk.count(b"<")
            # A cell naming a shared string takes at least three tags (<c>, <v>, </c>).
            if size + tags // 3 * longest <= MAX_XLSX_CELL_TEXT:
                return
            if lengths is None:
                lengths = _shared_string_lengths(zf)
            with zf.open(member) as fh:
                _sum_cell_text(fh, lengths, path)
    except (KeyError, StopIteration, IndexError, zipfile.BadZipFile):
        return  # the reader itself reports a workbook without this structure
    except (ValueError, expat.ExpatError) as exc:
        raise InputFileError(str(path), f"the workbook is damaged: {_first_line(exc)}") from None


def _sum_cell_text(fh: IO[bytes], lengths: array[int], path: Path) -> None:
    """Add up each cell's text as the reader will hold it; raise past the budget."""
    shared = [False]
    inside: list[str] = []  # the open <v>/<t> element, if any
    index: list[str] = []  # digits of a shared-string index (bounded: see text())
    total = [0]

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "c":
            shared[0] = attrs.get("t") == "s"
        elif local in ("v", "t"):
            inside[:] = [local]
            index.clear()

    def text(data: str) -> None:
        if not inside:
            return
        if shared[0] and inside[0] == "v":
            if sum(map(len, index)) < 32:
                index.append(data)
        else:
            total[0] += len(data)
            check()

    def end(name: str) -> None:
        local = _local(name)
        if not inside or local != inside[0]:
            return
        inside.clear()
        if shared[0] and local == "v":
            idx = "".join(index).strip()
            total[0] += lengths[int(idx)] if idx.isdigit() and int(idx) < len(lengths) else 0
            check()

    def check() -> None:
        if total[0] > MAX_XLSX_CELL_TEXT:
            raise InputFileError(
                str(path), f"the sheet's cells expand to more than {MAX_XLSX_CELL_TEXT:,} "
                           f"characters (a shared string counts once for every cell that "
                           f"uses it); refusing it as a likely bomb (save a large export "
                           f"as CSV)")

    _scan_xml(fh, start=start, end=end, text=text)


def _unique_headers(header: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, name in enumerate(header):
        name = name if name.strip() else f"column_{i + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        out.append(name)
    return out


def _finish(
    frame: pl.DataFrame, path: Path, fmt: str, digest: str, **extra: object
) -> StockTable:
    import polars as pl

    headers = [c for c in frame.columns if c != ROW]
    if len(headers) > MAX_COLUMNS:
        raise InputFileError(str(path), f"more than {MAX_COLUMNS:,} columns; "
                                        f"this is not a stock file")
    _check_cells(path, frame)
    data_cols = [pl.col(c) for c in headers]
    # A row is blank when every cell is empty or whitespace: skipped, never rejected.
    blank = pl.all_horizontal(
        [c.is_null() | (c.str.strip_chars().str.len_bytes() == 0) for c in data_cols]
    ) if data_cols else pl.lit(True)
    total = frame.height
    is_blank = frame.select(blank).to_series()
    if is_blank.any():  # copying a million rows to drop none is not free
        frame = frame.filter(~is_blank)
    frame = frame.with_columns(pl.col(ROW).cast(pl.Int64))
    return StockTable(
        frame=frame, path=path, format=fmt, sha256=digest, mapping={}, headers=headers,
        blank_rows=total - frame.height, **extra,  # type: ignore[arg-type]
    )


def _map_columns(table: StockTable, column_map: dict[str, str]) -> StockTable:
    """Match headers onto canonical columns: explicit map first, then a recognised layout
    (see :mod:`invsync.stages.layouts`), else the aliases.

    An explicit mapping wins over an alias on another header (that header is then just
    kept, never sent); ``HEADER=ignore`` keeps a header out of the mapping altogether.
    """
    from invsync.stages.layouts import recognise, skipped_rows

    explicit = {normalise_header(k): v for k, v in column_map.items()}
    for target in explicit.values():
        if target not in (*CANONICAL, "ignore"):
            raise UsageError(
                f"column map target {target!r} is not one of {', '.join(CANONICAL)} or ignore"
            )
    claimed = set(explicit.values())
    norms = [normalise_header(h) for h in table.headers]
    layout = recognise(norms)
    mapping: dict[str, str] = {}
    candidates: dict[str, list[str]] = {}
    if layout is not None:
        by_norm: dict[str, str] = {}
        for norm, header in zip(norms, table.headers, strict=False):
            by_norm.setdefault(norm, header)
        for canonical, names in layout.columns.items():
            present = [by_norm[n] for n in names if n in by_norm]
            if not present or canonical in claimed:
                continue
            filled = [h for h in present if _has_values(table, h)]
            mapping[canonical] = (filled or present)[0]
        ignored = {h for h, n in zip(table.headers, norms, strict=True)
                   if explicit.get(n) == "ignore"}
        mapping = {c: h for c, h in mapping.items() if h not in ignored}
        for norm, header in zip(norms, table.headers, strict=True):
            chosen = explicit.get(norm)
            if chosen is not None and chosen != "ignore":
                candidates.setdefault(chosen, []).append(header)
    else:
        for norm, header in zip(norms, table.headers, strict=True):
            named = explicit.get(norm)
            if named is None:
                named = ALIASES.get(norm)
                if named in claimed:
                    continue  # the user mapped another header onto this column
            if named is None or named == "ignore":
                continue
            candidates.setdefault(named, []).append(header)
    for canonical, headers in candidates.items():
        if len(headers) > 1:
            raise InputFileError(str(table.path), _ambiguous(table, canonical, headers))
        mapping[canonical] = headers[0]
    missing = []
    if not any(k in mapping for k in IDENTIFIERS):
        missing.append("an identifier column (sku, product_id or variant_id)")
    if "quantity" not in mapping:
        missing.append("quantity")
    if missing:
        raise InputFileError(
            str(table.path),
            f"missing required column(s): {' and '.join(missing)}; "
            f"found columns: {', '.join(map(repr, table.headers)) or 'none'}",
        )
    if "location_code" in mapping and "location_id" not in mapping:
        mapping["location_id"] = mapping.pop("location_code")
    table = replace(table, mapping=mapping, layout=layout.name if layout else None)
    if layout is not None:
        notes = list(table.notes)
        header_of = {role: table.headers[norms.index(n)] for role, n in layout.extra.items()
                     if n in norms}
        if len(header_of) == len(layout.extra):
            skip, note = skipped_rows(layout, table.frame, header_of, mapping.get("quantity"))
            if skip is not None:
                table = replace(table, frame=table.frame.filter(~skip))
                notes.append(str(note))
        notes.append(f"recognised a {layout.title}: using columns "
                     + ", ".join(f"{h!r} as {c}" for c, h in mapping.items()))
        table = replace(table, notes=notes)
    return table


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
