"""Stage 1: read a CSV file or a workbook into a :class:`StockTable` of text cells.

Every cell is read as text (no type inference), so leading zeros, big numbers and
odd values reach validation exactly as the file holds them. Each row keeps the row
number a person sees in a spreadsheet program (header = row 1).

One module per kind of file (:mod:`.text` for CSV, :mod:`.xlsx`, :mod:`.xls`,
:mod:`.workbook` for the reader every workbook goes through), :mod:`.columns` for
matching headers, :mod:`.table` for what they share.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invsync.errors import InputFileError, NoInputError, UsageError
from invsync.stages.ingest.columns import (
    ALIASES,
    CANONICAL,
    HEADER_SEARCH_ROWS,
    IDENTIFIERS,
    _check_used_cells,
    _map_columns,
    find_header,
)
from invsync.stages.ingest.table import (
    BLANKS,
    FORMULA,
    MAX_ANY_CELL_CHARS,
    MAX_CELL_CHARS,
    MAX_COLUMNS,
    StockTable,
    UnclearEncoding,
    normalise_header,
    unescape_formulas,
)
from invsync.stages.ingest.text import MAX_CSV_RECORD, _read_csv, text_encoding
from invsync.stages.ingest.truncation import cut_off_end
from invsync.tables import ROW

if TYPE_CHECKING:
    from invsync.stages.ingest.xlsx import (
        MAX_XLSX_CELL_TEXT,
        MAX_XLSX_MEMBERS,
        MAX_XLSX_RATIO,
        MAX_XLSX_UNCOMPRESSED,
        numeric_cells,
        uncalculated_formulas,
    )

_FROM_XLSX = frozenset(("MAX_XLSX_CELL_TEXT", "MAX_XLSX_MEMBERS", "MAX_XLSX_RATIO",
                        "MAX_XLSX_UNCOMPRESSED", "numeric_cells", "uncalculated_formulas"))
"""Names of the workbook readers, imported when first asked for: a CSV file needs none of
them (nor the workbook libraries they load)."""


def __getattr__(name: str) -> Any:
    if name not in _FROM_XLSX:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from invsync.stages.ingest import xlsx

    value = getattr(xlsx, name)
    globals()[name] = value
    return value

__all__ = [
    "ALIASES", "BLANKS", "CANONICAL", "FORMULA", "HEADER_SEARCH_ROWS", "IDENTIFIERS",
    "MAX_ANY_CELL_CHARS", "MAX_CELL_CHARS", "MAX_COLUMNS", "MAX_CSV_RECORD",
    "MAX_XLSX_CELL_TEXT", "MAX_XLSX_MEMBERS", "MAX_XLSX_RATIO", "MAX_XLSX_UNCOMPRESSED", "ROW",
    "StockTable", "UnclearEncoding", "cut_off_end", "find_header", "map_columns",
    "normalise_header", "numeric_cells",
    "read_stock_bytes", "read_stock_file", "read_unmapped", "text_encoding",
    "uncalculated_formulas", "unescape_formulas",
]
_XLSX_MAGIC = b"PK\x03\x04"
_XLS_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls"}
_TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ""}


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
    if table.format == "xlsx" and table.sheet_index is not None:
        table = _workbook_checks(p, table)
    return table


def _workbook_checks(p: Path, table: StockTable) -> StockTable:
    """An xlsx workbook's own checks: formulas never calculated, numeric identifiers."""
    from invsync.stages.ingest.workbook import is_zip
    from invsync.stages.ingest.xlsx import _numeric_identifier_notes, _reject_uncalculated

    if is_zip(p) and p.suffix.lower() not in (".ods", ".xlsb"):
        table = _reject_uncalculated(table)
        notes = _numeric_identifier_notes(table)
        if notes:
            table = replace(table, notes=[*table.notes, *notes])
    return table


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
        raise NoInputError(str(p), f"cannot read file: {exc.strerror or exc}") from None
    if _detect_format(p, data) == "excel":
        from invsync.stages.ingest.workbook import _read_excel

        # Hashed once the reader's process is on its way (its start is the longer wait).
        return _read_excel(p, lambda: hashlib.sha256(data).hexdigest(), sheet,
                           header_row=header_row, column_map=column_map)
    if sheet is not None:
        raise UsageError(f"--sheet applies to Excel files, but {p} is a CSV file")
    # The file is hashed while it is parsed (hashlib lets go of the GIL for the work).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="invsync-sha256") as pool:
        hashing = pool.submit(lambda: hashlib.sha256(data).hexdigest())
        table = _read_csv(p, data, "", encoding=encoding, header_row=header_row,
                          column_map=column_map)
        return replace(table, sha256=hashing.result())


def map_columns(table: StockTable, column_map: dict[str, str]) -> StockTable:
    """Match ``table``'s headers onto canonical columns (see :func:`read_stock_file`)."""
    return _check_used_cells(_map_columns(table, column_map))


_SAVE_AS = "open it in a spreadsheet program and save it as .xlsx (or CSV UTF-8)"
_OLD_EXCEL = {b"\x09\x00": "2", b"\x09\x02": "3", b"\x09\x04": "4"}
"""The BOF record that starts an Excel 2/3/4 worksheet (a bare BIFF stream, no container)."""


def _refuse_named_formats(path: Path, data: bytes) -> None:
    """Name what a file is when it is a format invsync does not read, with how to save it."""
    if data.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise InputFileError(str(path), f"this is UTF-32 text, which spreadsheet programs do "
                                        f"not write; {_SAVE_AS}, or save the text as UTF-8")
    if (data.startswith(b"ID;") and b"\nC;" in data[:65536]) or data.startswith(b"ID;P"):
        raise InputFileError(str(path), f"this is a SYLK file (.slk), not a CSV file; "
                                        f"{_SAVE_AS}")
    version = _OLD_EXCEL.get(data[:2])
    if version is not None and len(data) > 4 and 4 <= int.from_bytes(data[2:4], "little") <= 16:
        raise InputFileError(str(path), f"this is an Excel {version} worksheet, a format from "
                                        f"before 1995 that invsync does not read; {_SAVE_AS}")


def _detect_format(path: Path, data: bytes) -> str:
    suffix = path.suffix.lower()
    is_excel = data.startswith(_XLSX_MAGIC) or data.startswith(_XLS_MAGIC)
    if is_excel:
        if suffix in _TEXT_SUFFIXES - {""}:
            raise InputFileError(
                str(path), f"named {suffix} but it is an Excel workbook; rename it to .xlsx"
            )
        return "excel"
    _refuse_named_formats(path, data)
    if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<?xml") and \
            b"urn:schemas-microsoft-com:office:spreadsheet" in data[:4096]:
        raise InputFileError(str(path), "this is an XML Spreadsheet 2003 file, not an Excel "
                                        "workbook; open it and save it as .xlsx or .csv")
    if suffix in _EXCEL_SUFFIXES:
        raise InputFileError(
            str(path), f"named {suffix} but it is not an Excel workbook (no xlsx/xls signature)"
        )
    if not data or data.isspace():  # (no strip(): that would copy the whole file)
        raise InputFileError(str(path), "the file is empty")
    return "csv"
