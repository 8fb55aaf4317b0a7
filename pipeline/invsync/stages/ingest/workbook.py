"""Reading any workbook (xlsx, xlsm, xls, xlsb, ods) through the Excel reader into text cells."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from invsync.errors import InputFileError
from invsync.stages.ingest.columns import HEADER_SEARCH_ROWS, find_header
from invsync.stages.ingest.table import StockTable, _finish, _first_line, _unique_headers
from invsync.stages.ingest.xls import (
    _OLE_MAGIC,
    _ole_stream_names,
    _utf16_cells,
    _xls_encrypted,
)
from invsync.stages.ingest.xlsx import _check_cell_text, _check_workbook
from invsync.tables import ROW

if TYPE_CHECKING:
    from collections.abc import Iterator



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


def _is_xml_spreadsheet(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<?xml") and b"urn:schemas-microsoft-com:office:spreadsheet" in head


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
