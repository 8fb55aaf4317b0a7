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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING
from xml.etree import ElementTree
from xml.parsers import expat

from invsync.errors import InputFileError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import polars as pl

ROW = "__row"
"""Name of the column holding each row's number as seen in the file (header = row 1)."""

CANONICAL = ("sku", "product_id", "variant_id", "location_id", "quantity")
IDENTIFIERS = ("sku", "variant_id", "product_id")
"""Identifier columns in precedence order: when a row fills several, the first one is sent."""

# Headers people really use, after normalisation (lower case, spaces and hyphens -> "_").
ALIASES: dict[str, str] = {
    **dict.fromkeys(["sku", "item_sku", "product_sku", "variant_sku", "product_code",
                     "item_code", "article_number"], "sku"),
    **dict.fromkeys(["product_id", "productid"], "product_id"),
    **dict.fromkeys(["variant_id", "variantid"], "variant_id"),
    **dict.fromkeys(["location_id", "locationid", "location", "location_code", "warehouse",
                     "warehouse_id", "warehouse_code"], "location_id"),
    **dict.fromkeys(["quantity", "qty", "stock", "on_hand", "onhand", "inventory_level",
                     "stock_level", "inventory", "available"], "quantity"),
}

_CSV_DELIMITERS = (",", ";", "\t", "|")
# Limits for untrusted files: far above any real stock file, far below what hurts.
MAX_COLUMNS = 1_000
MAX_CELL_CHARS = 10_000
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
    """Lower-case a header, trim it, and treat spaces and hyphens as underscores."""
    text = name.replace("\ufeff", "").replace("\xa0", " ").strip().lower()
    return re.sub(r"[\s\-_]+", "_", text)


def read_stock_file(
    path: str | Path,
    *,
    sheet: str | None = None,
    column_map: dict[str, str] | None = None,
) -> StockTable:
    """Read ``path`` (CSV or XLSX, decided by content) into a :class:`StockTable`.

    ``column_map`` maps a file header to a canonical column and wins over the aliases.
    Raises :class:`InputFileError` for an unreadable or unusable file.
    """
    p = Path(path)
    table = read_unmapped(p, sheet=sheet)
    table = _map_columns(table, column_map or {})
    if table.format == "xlsx" and table.sheet_index is not None and p.suffix.lower() != ".xls":
        _note_numeric_identifiers(table)
    return table


def read_unmapped(path: str | Path, *, sheet: str | None = None) -> StockTable:
    """Read ``path`` with every hostile-file check, but match no headers (``mapping`` is empty).

    For showing a file's columns to someone who has to say which is which.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputFileError(str(p), f"cannot read file: {exc.strerror or exc}") from None
    digest = hashlib.sha256(data).hexdigest()
    if _detect_format(p, data) == "excel":
        return _read_excel(p, digest, sheet)
    if sheet is not None:
        raise UsageError(f"--sheet applies to Excel files, but {p} is a CSV file")
    return _read_csv(p, data, digest)


def map_columns(table: StockTable, column_map: dict[str, str]) -> StockTable:
    """Match ``table``'s headers onto canonical columns (see :func:`read_stock_file`)."""
    return _map_columns(table, column_map)


def _note_numeric_identifiers(table: StockTable) -> None:
    """Note identifier cells stored as numbers: Excel may have dropped their leading zeros."""
    import polars as pl

    cols = {table.headers.index(h): h for c, h in table.mapping.items() if c == "sku"}
    if not cols:
        return
    header = next(iter(cols.values()))
    digits = table.frame.filter(pl.col(header).str.contains(r"^\s*\d+\s*$"))
    if digits.height == 0:
        return
    hits = numeric_cells(table.path, table.sheet_index or 0, cols, set(digits[ROW].to_list()))
    for name, rows in hits.items():
        shown = ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10:,} more"
                                                   if len(rows) > 10 else "")
        table.notes.append(
            f"column {name!r}: {len(rows):,} identifier cell(s) are stored as numbers in the "
            f"workbook (rows {shown}); if those SKUs have leading zeros, Excel removed them: "
            f"format the column as Text and type them again")


def _detect_format(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    is_excel = data.startswith(_XLSX_MAGIC) or data.startswith(_XLS_MAGIC)
    if is_excel:
        if suffix in _TEXT_SUFFIXES - {""}:
            raise InputFileError(
                str(path), f"named {suffix} but it is an Excel workbook; rename it to .xlsx"
            )
        return "excel"
    if suffix in _EXCEL_SUFFIXES:
        raise InputFileError(
            str(path), f"named {suffix} but it is not an Excel workbook (no xlsx/xls signature)"
        )
    if not data.strip():
        raise InputFileError(str(path), "the file is empty")
    return "csv"


def _decode(path: Path, data: bytes) -> tuple[bytes, str]:
    """Return UTF-8 bytes without BOM and the encoding the file was in."""
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
        raise InputFileError(str(path), "this is a binary file, not CSV text")
    try:
        data.decode("utf-8")
        return data, encoding
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace").encode("utf-8"), "windows-1252"


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


def _read_csv(path: Path, raw: bytes, digest: str) -> StockTable:
    import polars as pl

    data, encoding = _decode(path, raw)
    if b"\n" not in data and b"\r" in data:
        data = data.replace(b"\r", b"\n")  # classic Mac line endings
    # Blank lines above the header: polars skips them, a spreadsheet counts them.
    blank = re.match(rb"(?:[ \t]*\r?\n)*", data)
    leading = blank.group(0).count(b"\n") if blank else 0
    data = data[blank.end():] if blank else data
    if not data:
        raise InputFileError(str(path), "the file has no header row")
    delimiter = _sniff_delimiter(data)
    if _header_columns(data, delimiter.encode()) > MAX_COLUMNS:
        raise InputFileError(str(path), f"the header has more than {MAX_COLUMNS:,} columns; "
                                        f"this is not a stock file")
    try:
        frame = pl.read_csv(
            data,
            separator=delimiter,
            has_header=True,
            infer_schema=False,
            row_index_name=ROW,
            row_index_offset=2 + leading,
            raise_if_empty=True,
        )
    except pl.exceptions.NoDataError:
        raise InputFileError(str(path), "the file has no header row") from None
    except pl.exceptions.PolarsError as exc:
        raise InputFileError(str(path), f"not readable as CSV: {_first_line(exc)}") from None
    notes = []
    if encoding == "windows-1252":
        notes.append("the file is not valid UTF-8; it was read as Windows-1252")
    return _finish(frame, path, "csv", digest, encoding=encoding, delimiter=delimiter,
                   notes=notes)


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
    if (longest.item() or 0) <= MAX_CELL_CHARS:
        return
    for c in cols:
        hit = frame.filter(pl.col(c).str.len_chars() > MAX_CELL_CHARS).head(1)
        if hit.height:
            raise InputFileError(
                str(path), f"row {hit[ROW][0]}, column {c!r}: a cell of "
                           f"{len(hit[c][0]):,} characters (the limit is {MAX_CELL_CHARS:,}); "
                           f"is this really a stock file?")


def _read_excel(path: Path, digest: str, sheet: str | None) -> StockTable:
    import fastexcel

    if path.suffix.lower() != ".xls":
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
    if path.suffix.lower() != ".xls":
        _check_cell_text(path, index)
    try:
        with _rust_panics_hushed():
            loaded = reader.load_sheet(index, header_row=None, dtypes="string")
            frame = loaded.to_polars()
    except Exception as exc:
        raise InputFileError(
            str(path), f"sheet {names[index]!r} is not readable: {_first_line(exc)}"
        ) from None
    except BaseException as exc:
        raise _damaged(path, exc) from None
    if frame.height == 0:
        raise InputFileError(str(path), f"sheet {names[index]!r} is empty")
    first_row = _first_used_row(path, index) if path.suffix.lower() != ".xls" else 1
    import polars as pl

    header = [("" if v is None else str(v)) for v in frame.row(0)]
    body = frame.slice(1)
    body.columns = _unique_headers(header)
    body = body.with_row_index(ROW, offset=first_row + 1).with_columns(pl.col(ROW).cast(pl.Int64))
    return _finish(body, path, "xlsx", digest, sheet=names[index], sheet_index=index)


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


_NS_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_NS_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
class _StopScan(Exception):
    """Raised by a scan handler that has seen what it needed."""


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
    sheets = workbook.find(f"{_NS_MAIN}sheets")
    if sheets is None:
        raise KeyError("sheets")
    rel_id = list(sheets)[index].get(f"{_NS_REL}id")
    rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    target = next(r.get("Target", "") for r in rels if r.get("Id") == rel_id)
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


def _first_used_row(path: Path, index: int) -> int:
    """Row number (1-based) of the first cell holding a value in sheet ``index``.

    The Excel reader starts its range at the first used row, so without this an export
    with title rows above the header would report every row number shifted.
    """
    cell: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "c":
            cell[:] = [attrs.get("r", "")]
        elif local in ("v", "is") and cell:
            raise _StopScan(cell[0])

    def end(name: str) -> None:
        if _local(name) == "c":
            cell.clear()

    try:
        with zipfile.ZipFile(path) as zf, zf.open(_sheet_member(zf, index)) as fh:
            _scan_xml(fh, start=start, end=end)
    except _StopScan as found:
        digits = re.sub(r"^[A-Z]+", "", str(found.args[0]))
        return int(digits) if digits.isdigit() else 1
    except (KeyError, StopIteration, IndexError, ValueError, zipfile.BadZipFile,
            ElementTree.ParseError, expat.ExpatError):
        return 1
    return 1


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
    only the cell's type tells a number cell from a text cell that looks the same. The
    sheet is streamed through an XML parser (linear time, no regex over the XML).
    """
    first_col = [1 << 30]
    numeric: dict[int, array[int]] = {}
    cell: list[tuple[int, int, bool]] = []
    columns_seen: dict[str, int] = {}

    def start(name: str, attrs: dict[str, str]) -> None:
        if name == "c" or name.endswith(":c"):
            cell.clear()
            ref = _REF.match(attrs.get("r", ""))
            if ref is not None:
                letters = ref.group(1)
                col = columns_seen.get(letters)
                if col is None:
                    col = columns_seen[letters] = _col_number(letters)
                cell.append((col, int(ref.group(2)), attrs.get("t", "n") == "n"))
        elif cell and (name in ("v", "is") or name.endswith((":v", ":is"))):
            col, row, is_number = cell.pop()
            if col < first_col[0]:
                first_col[0] = col
            if is_number and row in rows:
                numeric.setdefault(col, array("q")).append(row)

    found: dict[str, list[int]] = {}
    try:
        with zipfile.ZipFile(path) as zf, zf.open(_sheet_member(zf, index)) as fh:
            _scan_xml(fh, start=start)
    except (KeyError, StopIteration, IndexError, ValueError, zipfile.BadZipFile,
            ElementTree.ParseError, expat.ExpatError):
        return found
    for pos, header in columns.items():
        hits = numeric.get(first_col[0] + pos)
        if hits:
            found[header] = sorted(hits)
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
    """Match headers onto canonical columns: explicit map first, then aliases.

    An explicit mapping wins over an alias on another header (that header is then just
    kept, never sent); ``HEADER=ignore`` keeps a header out of the mapping altogether.
    """
    explicit = {normalise_header(k): v for k, v in column_map.items()}
    for target in explicit.values():
        if target not in (*CANONICAL, "ignore"):
            raise UsageError(
                f"column map target {target!r} is not one of {', '.join(CANONICAL)} or ignore"
            )
    claimed = set(explicit.values())
    mapping: dict[str, str] = {}
    for header in table.headers:
        norm = normalise_header(header)
        canonical = explicit.get(norm)
        if canonical is None:
            canonical = ALIASES.get(norm)
            if canonical in claimed:
                continue  # the user mapped another header onto this column
        if canonical is None or canonical == "ignore":
            continue
        if canonical in mapping:
            raise InputFileError(
                str(table.path),
                f"columns {mapping[canonical]!r} and {header!r} both map to {canonical!r}; "
                f"choose one with --map '{header}={canonical}' (or --map '{header}=ignore')",
            )
        mapping[canonical] = header
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
    return StockTable(**{**table.__dict__, "mapping": mapping})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
