"""OpenDocument spreadsheets (.ods): what the Excel reader misses in them.

The reader drops cells whose value type it does not know (LibreOffice shows their text),
reads an error cell (``#N/A``) as an empty string, and refuses a file without its
``mimetype`` entry (which LibreOffice opens). ``content.xml`` is streamed here once to find
those cells; a file without ``mimetype`` is read from a copy that has it.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from xml.parsers import expat

from invsync.stages.ingest.table import set_cells
from invsync.stages.ingest.xlsx import _local, _scan_xml
from invsync.tables import ROW

if TYPE_CHECKING:
    import polars as pl

MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"
_KNOWN = {"float", "percentage", "currency", "date", "time", "boolean", "string"}
MAX_FOUND = 100_000
"""Cells of each kind kept (a repeated error cell may stand for a million)."""


def is_ods(path: Path) -> bool:
    """Whether ``path`` is an OpenDocument spreadsheet (by content, not name)."""
    try:
        with path.open("rb") as fh:
            if fh.read(4) != b"PK\x03\x04":
                return False
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False
    return "content.xml" in names and "[Content_Types].xml" not in names


def with_mimetype(path: Path, folder: Path) -> Path:
    """``path`` itself when it has its ``mimetype`` entry, else a copy in ``folder`` with it."""
    with zipfile.ZipFile(path) as zf:
        if "mimetype" in zf.namelist():
            return path
        copy = folder / (path.stem + ".ods")
        with zipfile.ZipFile(copy, "w") as out:
            out.writestr(zipfile.ZipInfo("mimetype"), MIMETYPE)
            for info in zf.infolist():
                with zf.open(info) as src, out.open(info.filename, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    return copy


@dataclass
class OdsCells:
    """Cells of one sheet, by the sheet's own 1-based row and column."""

    errors: list[tuple[int, int, str]] = field(default_factory=list)
    """Error cells and the text they show."""
    unknown: list[tuple[int, int, str]] = field(default_factory=list)
    """Cells the reader drops or reads otherwise than they show (a value type it does not
    know; a number formatted as a boolean), and their text."""
    first_col: int | None = None
    """The first column holding a value the reader reads (where its columns start)."""


@dataclass
class _State:
    index: int
    table: int = -1
    row: int = 1
    row_repeat: int = 1
    col: int = 1
    col_repeat: int = 1
    kind: str | None = None
    error: bool = False
    in_cell: bool = False
    text: list[str] = field(default_factory=list)


def ods_cells(path: Path, index: int) -> OdsCells:
    """The error cells and the cells of unknown type of sheet ``index`` (0-based)."""
    found = OdsCells()
    st = _State(index)

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "table" and name.startswith("table:"):
            st.table += 1
            st.row = 1
        if st.table != st.index:
            return
        if local == "table-row":
            st.row_repeat = _int(attrs.get("table:number-rows-repeated"))
            st.col = 1
        elif local in ("table-cell", "covered-table-cell"):
            st.col_repeat = _int(attrs.get("table:number-columns-repeated"))
            st.kind = attrs.get("office:value-type")
            st.error = attrs.get("calcext:value-type") == "error"
            st.in_cell, st.text = True, []
        elif local == "p" and st.in_cell and st.text:
            st.text.append("\n")

    def text(data: str) -> None:
        if st.in_cell and st.table == st.index and sum(map(len, st.text)) < 1_000_000:
            st.text.append(data)

    def end(name: str) -> None:
        if st.table != st.index:
            return
        local = _local(name)
        if local in ("table-cell", "covered-table-cell"):
            _cell_done(st, found)
            st.col += st.col_repeat
            st.in_cell = False
        elif local == "table-row":
            st.row += st.row_repeat

    try:
        with zipfile.ZipFile(path) as zf:
            if not _worth_a_look(zf):
                return found
            with zf.open("content.xml") as fh:
                _scan_xml(fh, start=start, end=end, text=text)
    except (KeyError, ValueError, zipfile.BadZipFile, expat.ExpatError):
        return OdsCells()
    return found


_WORTH = re.compile(rb'value-type="(?!(?:float|percentage|currency|date|time|boolean|string)")'
                    rb"|>(?:TRUE|FALSE)<")
"""An error or unknown value type, or a cell showing TRUE/FALSE: what the cell walk is for."""


def _worth_a_look(zf: zipfile.ZipFile) -> bool:
    """Whether ``content.xml`` may hold a cell :func:`ods_cells` looks for: a byte search,
    far faster than the walk, which most sheets then skip."""
    with zf.open("content.xml") as fh:
        tail = b""
        while chunk := fh.read(1 << 20):
            if _WORTH.search(tail + chunk):
                return True
            tail = chunk[-64:]
    return False


def _cell_done(st: _State, found: OdsCells) -> None:
    shown = "".join(st.text).strip()
    if not shown and st.kind is None:
        return
    unknown = st.kind is not None and st.kind not in _KNOWN
    if not unknown and (found.first_col is None or st.col < found.first_col):
        found.first_col = st.col
    # LibreOffice stores TRUE as a formula of type float showing TRUE: read what it shows.
    boolean = st.kind == "float" and shown in ("TRUE", "FALSE")
    target = found.errors if st.error else (
        found.unknown if (unknown and shown) or boolean else None)
    if target is None:
        return
    for r in range(st.row, st.row + min(st.row_repeat, MAX_FOUND)):
        for c in range(st.col, st.col + min(st.col_repeat, MAX_FOUND)):
            if len(target) >= MAX_FOUND:
                return
            target.append((r, c, shown[:16] if st.error else shown))


def _int(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


def place(frame: pl.DataFrame, found: OdsCells) -> tuple[pl.DataFrame, list[tuple[int, int, str]]]:
    """``frame`` (the reader's cells and ``ROW``) with the unknown-type cells put in, widened
    or lengthened as needed, and the error cells by position in the returned frame."""
    import polars as pl

    cells = [c for c in frame.columns if c != ROW]
    first = found.first_col or min((c for _, c, _ in found.unknown), default=1)
    base = min([first, *(c for _, c, _ in found.unknown)])
    offset = first - base if cells else 0
    width = max([offset + len(cells), *(c - base + 1 for _, c, _ in found.unknown)])
    height = max([frame.height, *(r for r, _, _ in found.unknown)])
    names = [f"__cell_{i}" for i in range(width)]
    frame = frame.rename(dict(zip(cells, names[offset:offset + len(cells)], strict=True)))
    frame = frame.with_columns(pl.lit(None, pl.String).alias(n) for n in names
                               if n not in frame.columns)
    if height > frame.height:
        more = pl.DataFrame({ROW: range(frame.height + 1, height + 1)}, schema={ROW: pl.Int64})
        frame = pl.concat([frame, more], how="diagonal")
    frame = frame.select(*names, ROW)
    unknown = pl.DataFrame({ROW: [r for r, _, _ in found.unknown],
                            "column": [names[c - base] for _, c, _ in found.unknown],
                            "value": [t for _, _, t in found.unknown]},
                           schema={ROW: pl.Int64, "column": pl.String, "value": pl.String})
    frame = set_cells(frame, unknown)
    errors = [(r, c - base, t) for r, c, t in found.errors if 0 <= c - base < width]
    return frame, errors
