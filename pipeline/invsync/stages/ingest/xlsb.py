"""Excel binary workbooks (.xlsb): the error cells the reader reads as empty.

An .xlsb sheet is a stream of records (a variable-length type and size, then the body):
a row header names the row, each cell record its column; ``BrtCellError`` and
``BrtFmlaError`` hold an error code (``#N/A`` is 0x2A), as in BIFF.
"""

from __future__ import annotations

import struct
import zipfile
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from invsync.stages.ingest.xls import BIFF_ERRORS

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

_ROW_HEADER = 0
_CELL_ERROR, _FORMULA_ERROR = 3, 11
_VALUE_CELLS = range(2, 12)
"""Cell records holding a value (1 is a blank, formatted cell)."""
_BUNDLE_SHEET = 156
MAX_RECORDS = 50_000_000


def _varint(data: bytes, pos: int, most: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(most):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value, pos


def records(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(type, body offset, size)`` of each record of an .xlsb part."""
    pos = 0
    for _ in range(MAX_RECORDS):
        if pos >= len(data):
            return
        kind, pos = _varint(data, pos, 2)
        size, pos = _varint(data, pos, 4)
        yield kind, pos, size
        pos += size


def _sheet_member(zf: zipfile.ZipFile, index: int) -> str:
    """The part holding sheet ``index`` (workbook order)."""
    book = zf.read("xl/workbook.bin")
    rel_ids = []
    for kind, pos, _ in records(book):
        if kind == _BUNDLE_SHEET:
            length = struct.unpack_from("<I", book, pos + 8)[0]
            rel_ids.append(book[pos + 12:pos + 12 + 2 * length].decode("utf-16-le"))
    rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.bin.rels"))
    target = next(r.get("Target", "") for r in rels if r.get("Id") == rel_ids[index])
    return target.lstrip("/") if target.startswith("/") else f"xl/{target}"


def xlsb_error_cells(path: Path, index: int) -> list[tuple[int, int, str]]:
    """The error cells of sheet ``index``: ``(row as the sheet shows it, position in the used
    range, text)``. Empty when the workbook cannot be read so (reading it says why)."""
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read(_sheet_member(zf, index))
        found, first_col, row = [], 1 << 30, 0
        for kind, pos, size in records(data):
            if kind == _ROW_HEADER and size >= 4:
                row = struct.unpack_from("<I", data, pos)[0]
            elif kind in _VALUE_CELLS and size >= 8:
                col = struct.unpack_from("<I", data, pos)[0]
                first_col = min(first_col, col)
                if kind in (_CELL_ERROR, _FORMULA_ERROR) and size >= 9:
                    found.append((row + 1, col, BIFF_ERRORS.get(data[pos + 8], "#ERROR")))
    except (KeyError, IndexError, StopIteration, ValueError, struct.error, zipfile.BadZipFile,
            ElementTree.ParseError):
        return []
    return [(r, c - first_col, t) for r, c, t in found]
