"""Reading any workbook (xlsx, xlsm, xls, xlsb, ods) through the Excel reader into text cells."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from invsync.errors import InputFileError
from invsync.stages.ingest.columns import HEADER_SEARCH_ROWS, find_header
from invsync.stages.ingest.isolated import DAMAGED, load_sheet, start_reader
from invsync.stages.ingest.ods import is_ods, ods_cells, place, with_mimetype
from invsync.stages.ingest.table import StockTable, _finish, _unique_headers, set_cells
from invsync.stages.ingest.xls import (
    _OLE_MAGIC,
    _ole_stream_names,
    _utf16_cells,
    _xls_encrypted,
    biff_error_cells,
    foreign_codepage,
    ole_damage,
    recode,
)
from invsync.stages.ingest.xlsb import xlsb_error_cells
from invsync.stages.ingest.xlsx import WorkbookScan, _check_workbook, error_cells, may_hold_nul
from invsync.tables import ROW

if TYPE_CHECKING:
    from collections.abc import Callable

    import polars as pl

PASSWORD = ("the workbook is password-protected: open it, save it without a password, and "
            "try again")

def _read_excel(path: Path, digest: Callable[[], str], sheet: str | None, *,
                header_row: int | None = None, column_map: dict[str, str] | None = None
                ) -> StockTable:
    """Read a workbook's sheet; ``digest()`` makes the file's SHA-256 (called while the
    reader reads)."""
    _refuse_other_formats(path)
    scan = None
    if is_zip(path):
        _check_workbook(path)
        scan = WorkbookScan(path)  # the parts themselves: scanned while the reader works
    start_reader()  # a file refused by what it says of itself starts no reader
    opendocument = is_ods(path)
    foreign = None if opendocument or is_zip(path) else \
        foreign_codepage(path.read_bytes())
    hashed: list[str] = []
    # Named by process id, as the worker's folder is: what a killed run left is swept.
    with tempfile.TemporaryDirectory(prefix=f"invsync-read-{os.getpid()}-") as tmp:
        source = _named_by_content(path, Path(tmp))
        if opendocument:
            source = with_mimetype(source, Path(tmp))
        elif foreign is not None:
            source = Path(tmp) / f"foreign{source.suffix}"
            source.write_bytes(foreign[0])
        try:
            loaded = load_sheet(source, sheet, shown=path,
                                meanwhile=_meanwhile(scan, digest, hashed))
        except InputFileError:
            if scan is not None:
                scan.finish()  # a bomb or a DTD is named for what it is
            raise
        if scan is not None:
            scan.finish()
    names, index = loaded.names, loaded.index
    sha256 = hashed[0] if hashed else digest()
    import polars as pl

    frame = loaded.frame if foreign is None else recode(loaded.frame, foreign[1])
    frame = frame.with_row_index(ROW, offset=1).with_columns(pl.col(ROW).cast(pl.Int64))
    if scan is None or may_hold_nul(path, index):  # (a NUL is looked for in every cell)
        frame = _utf16_cells(frame)
    frame = _booleans(frame)
    if opendocument:
        frame, found = place(frame, ods_cells(path, index))
    else:
        found = _error_cells(path, index)
    cells = [c for c in frame.columns if c != ROW]
    errors = _error_frame(found, cells)
    if errors.height:
        frame = set_cells(frame, errors)
    filled = _first_filled(frame, cells)
    if filled.height == 0:
        raise InputFileError(str(path), _empty_sheet(names, index))
    if header_row is not None:
        if header_row > frame.height:
            raise InputFileError(str(path), f"--header-row {header_row}: sheet "
                                            f"{names[index]!r} has {frame.height} rows")
        at = header_row - 1
    else:
        top = filled
        rows = [[("" if v is None else str(v)) for v in r] for r in top.select(cells).rows()]
        at = int(top[ROW][find_header(rows, column_map)]) - 1
    header = [("" if v is None else str(v).replace("\x00", "")) for v in frame.select(cells)
              .row(at)]  # a NUL left after _utf16_cells is not part of any header
    body = frame.slice(at + 1).select(*cells, ROW)
    body.columns = [*_unique_headers(header), ROW]
    notes = []
    if at > 0 and filled[ROW][0] <= at:
        notes.append(f"the header is on row {at + 1}; the rows above it were skipped")
    table = _finish(body, path, "xlsx", sha256, sheet=names[index], sheet_index=index,
                    header_row=at + 1, notes=notes, sheets=tuple(names))
    return _errors_read_as_empty(table, errors, dict(zip(cells, table.headers, strict=True)))


def _meanwhile(scan: WorkbookScan | None, digest: Callable[[], str], hashed: list[str]
               ) -> Callable[[], bool]:
    """The parent's work while the reader reads: the workbook's scan, a slice at a time,
    the file's hash (into ``hashed``), then (once per process) the data frame library's
    first use, paid here rather than when the cells arrive."""
    def step() -> bool:
        if scan is not None and scan.step():
            return True
        if not hashed:
            hashed.append(digest())
            return True
        _warm_up()
        return False

    return step


_WARM: list[bool] = []


def _warm_up() -> None:
    """Run, on a two-row frame, what is done to every sheet read (its threads started, its
    code paths loaded), and import what the headers' matching needs, once per process."""
    if _WARM:
        return
    _WARM.append(True)
    import io

    import polars as pl

    buf = io.BytesIO()
    pl.DataFrame({"a": ["x", None], "b": ["1", "true"]}).write_ipc(buf)
    frame = pl.read_ipc(buf.getvalue()).with_row_index(ROW, offset=1).with_columns(
        pl.col(ROW).cast(pl.Int64))
    frame = _booleans(frame)
    _first_filled(frame, ["a", "b"])
    frame.select(pl.max_horizontal(pl.col("a", "b").str.len_bytes().max()))
    import invsync.stages.layouts  # noqa: F401  # what matching the headers loads first


_TOP_ROWS = 1000
"""Rows looked at first for the rows holding anything (most sheets fill their first rows)."""


def _first_filled(frame: pl.DataFrame, cells: list[str]) -> pl.DataFrame:
    """The first :data:`HEADER_SEARCH_ROWS` rows holding anything, where the header is
    looked for: searched for in the top rows, the whole sheet only when they hold fewer."""
    import polars as pl

    def first(part: pl.DataFrame) -> pl.DataFrame:  # (eager: a query plan costs more here)
        return part.filter(pl.any_horizontal(
            pl.col(cells).is_not_null() & (pl.col(cells).str.strip_chars() != ""))
        ).head(HEADER_SEARCH_ROWS)

    top = first(frame.head(_TOP_ROWS))
    if top.height >= HEADER_SEARCH_ROWS or frame.height <= _TOP_ROWS:
        return top
    return first(frame)


def _refuse_other_formats(path: Path) -> None:
    """Name what a workbook-looking file really is when invsync cannot read it."""
    how = "open it and save or export it as .xlsx or .csv"
    with path.open("rb") as fh:
        head = fh.read(8)
    if head.startswith(_OLE_MAGIC):
        damage = ole_damage(path.read_bytes())
        if damage is not None:
            raise InputFileError(str(path), DAMAGED.format(why=damage))
        streams = _ole_stream_names(path)
        if "EncryptedPackage" in streams or "EncryptionInfo" in streams or \
                _xls_encrypted(path):
            raise InputFileError(str(path), PASSWORD)
        if streams and not ({"Workbook", "Book"} & streams):
            raise InputFileError(str(path), f"this is not an Excel workbook (an OLE file "
                                            f"holding {', '.join(sorted(streams)[:4])}); {how}")
    elif is_zip(path):
        try:
            with zipfile.ZipFile(path) as zf:
                members = set(zf.namelist())
                manifest = b""
                if "META-INF/manifest.xml" in members:  # its head: it may be a bomb
                    with zf.open("META-INF/manifest.xml") as fh:
                        manifest = fh.read(1 << 20)
        except (zipfile.BadZipFile, OSError, KeyError, ValueError):
            return
        if b"encryption-data" in manifest:  # an OpenDocument file saved with a password
            raise InputFileError(str(path), PASSWORD)
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


def is_zip(path: Path) -> bool:
    """Whether the file starts as a zip does (an OLE workbook may embed a zip, a theme, near
    its end, which ``zipfile.is_zipfile`` takes for a zip)."""
    with path.open("rb") as fh:
        return fh.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(path)


def _content_suffix(path: Path) -> str:
    """The extension that names what the workbook is, by its content."""
    if not is_zip(path):
        return ".xls"
    if is_ods(path):
        return ".ods"
    with zipfile.ZipFile(path) as zf:
        return ".xlsb" if "xl/workbook.bin" in zf.namelist() else ".xlsx"


def _named_by_content(path: Path, folder: Path) -> Path:
    """``path``, or a link to it in ``folder`` named for what it is (the reader goes by the
    name: an .xls renamed .xlsx is still read as the .xls it is)."""
    suffix = _content_suffix(path)
    if path.suffix.lower() == suffix or (suffix == ".xlsx" and path.suffix.lower() == ".xlsm"):
        return path
    link = folder / f"workbook{suffix}"
    try:
        link.symlink_to(path.resolve())
    except OSError:
        shutil.copyfile(path, link)
    return link


def _error_cells(path: Path, index: int) -> list[tuple[int, int, str]]:
    """The error cells of an .xlsx/.xlsm, .xlsb or .xls sheet: (row, position, text)."""
    if is_zip(path):
        with zipfile.ZipFile(path) as zf:
            binary = "xl/workbook.bin" in zf.namelist()
        return xlsb_error_cells(path, index) if binary else error_cells(path, index)
    with path.open("rb") as fh:
        if fh.read(8) != _OLE_MAGIC:
            return []
    return biff_error_cells(path.read_bytes(), index)


def _error_frame(found: list[tuple[int, int, str]], cells: list[str]) -> pl.DataFrame:
    """Error cells (``#N/A``...) by (row, position): ``ROW``, the column's name, the text."""
    import polars as pl

    found = [(r, p, t) for r, p, t in found if 0 <= p < len(cells)]
    return pl.DataFrame({ROW: [r for r, _, _ in found], "column": [cells[p] for _, p, _ in found],
                         "value": [t for _, _, t in found]},
                        schema={ROW: pl.Int64, "column": pl.String, "value": pl.String})


def _errors_read_as_empty(table: StockTable, errors: pl.DataFrame, header_of: dict[str, str]
                          ) -> StockTable:
    """Empty the error cells of ``table`` (they kept their rows from counting as blank) and
    keep them, by header, for :func:`invsync.stages.ingest.columns.check_used_cells`."""
    import polars as pl

    if errors.height == 0:
        return table
    body = errors.filter(pl.col(ROW) > table.header_row).with_columns(
        pl.col("column").replace_strict(header_of, default=None))
    return replace(table, frame=set_cells(table.frame, body, empty=True), error_cells=body)


def _booleans(frame: pl.DataFrame) -> pl.DataFrame:
    """Boolean cells as a spreadsheet shows them: ``TRUE``/``FALSE`` (the reader says
    ``true``/``false``; typing either into a spreadsheet makes a boolean cell too)."""
    import polars as pl

    cols = [c for c, t in frame.schema.items() if t == pl.String]
    return frame.with_columns(
        pl.when(pl.col(c) == "true").then(pl.lit("TRUE"))
        .when(pl.col(c) == "false").then(pl.lit("FALSE"))
        .otherwise(pl.col(c)).alias(c) for c in cols)


def _empty_sheet(names: list[str], index: int) -> str:
    """Sheet ``index`` is empty: name the others and how to choose one."""
    others = [n for i, n in enumerate(names) if i != index]
    if not others:
        return f"sheet {names[index]!r} is empty (the workbook has no other sheet)"
    shown = ", ".join(map(repr, others[:10])) + (f" and {len(others) - 10} more"
                                                  if len(others) > 10 else "")
    return (f"sheet {names[index]!r} is empty; the workbook's other sheet(s): {shown}; "
            f"choose one with --sheet {others[0]!r} (on the upload page: choose the sheet)")


def plain_reader_error(path: Path, exc: BaseException, *, sheet: str | None = None) -> str:
    """The Excel reader's error as a plain sentence (never the library's own text)."""
    text = str(exc).lower()
    if "password" in text or "encrypt" in text:
        return PASSWORD
    where = f"sheet {sheet!r} of " if sheet is not None else ""
    return DAMAGED.format(why=f"{where}it cannot be parsed as a spreadsheet")


def pick_sheet(path: Path, names: list[str], sheet: str | None) -> int:
    if sheet is None:
        return 0
    if sheet in names:
        return names.index(sheet)
    if sheet.isdigit() and 1 <= int(sheet) <= len(names):
        return int(sheet) - 1
    raise InputFileError(
        str(path), f"no sheet {sheet!r}; the workbook has {', '.join(map(repr, names))}"
    )
