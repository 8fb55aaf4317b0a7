"""Legacy Excel workbooks (.xls, BIFF in an OLE compound file): the container's facts
(streams, encryption) and the 8-bit strings some writers fill with UTF-16."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    import polars as pl



_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


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


_END_OF_CHAIN = 0xFFFFFFFE
_MAX_SECTOR = 0xFFFFFFFA


def ole_damage(data: bytes) -> str | None:
    """What is wrong with an OLE compound file's structure, or None when its sector chains
    are sound: every chain (the directory's, each stream's) ends, stays inside the file and
    is long enough for the size its stream claims. A reader trusting a chain that loops
    never ends (and one trusting the claimed size allocates it)."""
    import struct

    try:
        shift = struct.unpack_from("<H", data, 30)[0]
        if shift not in (9, 12):
            return "its sector size is not one a workbook has"
        size = 1 << shift
        count = max(0, (len(data) - 512) // size)
        fat = _ole_fat(data, size, count)
        cutoff = struct.unpack_from("<I", data, 56)[0]
        directory = _ole_chain(fat, struct.unpack_from("<I", data, 48)[0], count)
        if directory is None:
            return "its directory's sector chain loops or leaves the file"
        for sector in directory:
            base = 512 + sector * size
            for off in range(base, base + size, 128):
                kind = data[off + 66]
                start, length = struct.unpack_from("<IQ", data, off + 116)
                if kind != 2 or length < cutoff:
                    continue
                chain = _ole_chain(fat, start, count)
                if chain is None:
                    return "a stream's sector chain loops or leaves the file"
                if length > len(chain) * size:
                    return "a stream claims more data than the file holds"
    except (struct.error, IndexError):
        return "it ends inside its own structure"
    return None


def _ole_fat(data: bytes, size: int, count: int) -> list[int]:
    """The file allocation table: the next sector of each sector."""
    import struct

    fat_sectors = [s for s in struct.unpack_from("<109I", data, 76) if s <= _MAX_SECTOR]
    difat, seen = struct.unpack_from("<I", data, 68)[0], set()
    while difat <= _MAX_SECTOR and difat < count and difat not in seen:
        seen.add(difat)
        entries = struct.unpack_from(f"<{size // 4}I", data, 512 + difat * size)
        fat_sectors += [s for s in entries[:-1] if s <= _MAX_SECTOR]
        difat = entries[-1]
    fat: list[int] = []
    for sector in fat_sectors:
        if sector >= count:
            raise IndexError(sector)
        fat += struct.unpack_from(f"<{size // 4}I", data, 512 + sector * size)
    return fat


def _ole_chain(fat: list[int], start: int, count: int) -> list[int] | None:
    """The sectors of the chain from ``start``; None if it loops or leaves the file."""
    chain: list[int] = []
    seen: set[int] = set()
    sector = start
    while sector != _END_OF_CHAIN:
        if sector >= count or sector >= len(fat) or sector in seen:
            return None
        seen.add(sector)
        chain.append(sector)
        sector = fat[sector]
    return chain


BIFF_ERRORS = {0x00: "#NULL!", 0x07: "#DIV/0!", 0x0F: "#VALUE!", 0x17: "#REF!", 0x1D: "#NAME?",
               0x24: "#NUM!", 0x2A: "#N/A", 0x2B: "#GETTING_DATA"}
"""The error codes of BIFF (and of .xlsb), as a spreadsheet shows them."""
_VALUE_RECORDS = {0x0203, 0x027E, 0x00BD, 0x00FD, 0x0204, 0x0205, 0x0006, 0x00D6}
"""NUMBER, RK, MULRK, LABELSST, LABEL, BOOLERR, FORMULA, RSTRING: cells with a value."""


def ole_stream(data: bytes, names: tuple[str, ...] = ("Workbook", "Book")) -> bytes | None:
    """The first of the named streams of an OLE file whose structure :func:`ole_damage`
    found sound (None when there is no such stream)."""
    import struct

    size = 1 << struct.unpack_from("<H", data, 30)[0]
    count = max(0, (len(data) - 512) // size)
    fat = _ole_fat(data, size, count)
    cutoff = struct.unpack_from("<I", data, 56)[0]
    entries = []
    for sector in _ole_chain(fat, struct.unpack_from("<I", data, 48)[0], count) or []:
        base = 512 + sector * size
        for off in range(base, base + size, 128):
            length = struct.unpack_from("<H", data, off + 64)[0]
            name = data[off:off + max(0, length - 2)].decode("utf-16-le", errors="replace")
            start, stream_size = struct.unpack_from("<IQ", data, off + 116)
            entries.append((name, data[off + 66], start, stream_size))
    root = next((e for e in entries if e[1] == 5), None)
    for name, kind, start, stream_size in entries:
        if kind != 2 or name not in names:
            continue
        if stream_size >= cutoff:
            chain = _ole_chain(fat, start, count) or []
            return b"".join(data[512 + s * size:512 + (s + 1) * size] for s in chain)[
                :stream_size]
        if root is None:
            return None
        mini = b"".join(data[512 + s * size:512 + (s + 1) * size]
                        for s in _ole_chain(fat, root[2], count) or [])
        minifat_chain = _ole_chain(fat, struct.unpack_from("<I", data, 60)[0], count) or []
        raw = b"".join(data[512 + s * size:512 + (s + 1) * size] for s in minifat_chain)
        minifat = list(struct.unpack_from(f"<{len(raw) // 4}I", raw))
        chain = _ole_chain(minifat, start, len(mini) // 64) or []
        return b"".join(mini[s * 64:(s + 1) * 64] for s in chain)[:stream_size]
    return None


def biff_error_cells(data: bytes, index: int) -> list[tuple[int, int, str]]:
    """The error cells of sheet ``index`` of an .xls file's bytes: ``(row, position in the
    used range, text)``, rows numbered as the sheet shows them. Empty when unsure."""
    import struct

    try:
        if ole_damage(data) is not None:
            return []
        stream = ole_stream(data)
        if stream is None:
            return []
        sheets = [struct.unpack_from("<I", stream, pos + 4)[0]
                  for kind, pos, _ in _records(stream, 0) if kind == 0x0085]
        if index >= len(sheets):
            return []
        found, first_col = [], 1 << 30
        for kind, pos, size in _records(stream, sheets[index]):
            if kind not in _VALUE_RECORDS or size < 6:
                continue
            row, col = struct.unpack_from("<HH", stream, pos + 4)
            first_col = min(first_col, col)
            shown = _biff_error(stream, kind, pos + 4, size)
            if shown is not None:
                found.append((row + 1, col, shown))
    except (struct.error, IndexError, ValueError):
        return []
    return [(r, c - first_col, t) for r, c, t in found]


def _biff_error(stream: bytes, kind: int, body: int, size: int) -> str | None:
    """The error a BOOLERR or FORMULA record shows, if it is an error."""
    if kind == 0x0205 and size >= 8 and stream[body + 7] == 1:
        return BIFF_ERRORS.get(stream[body + 6], "#ERROR")
    if kind == 0x0006 and size >= 14 and stream[body + 6] == 2 and \
            stream[body + 12:body + 14] == b"\xff\xff":
        return BIFF_ERRORS.get(stream[body + 8], "#ERROR")
    return None


def _records(stream: bytes, start: int) -> Iterator[tuple[int, int, int]]:
    """``(type, offset, size)`` of each BIFF record from the BOF at ``start`` to its EOF."""
    import struct

    pos, depth = start, 0
    while pos + 4 <= len(stream):
        kind, size = struct.unpack_from("<HH", stream, pos)
        yield kind, pos, size
        if kind in (0x0809, 0x0409, 0x0209, 0x0009):
            depth += 1
        elif kind == 0x000A:
            depth -= 1
            if depth <= 0:
                return
        pos += 4 + size


_PYTHON_ONLY_CODEPAGES = {10006: "mac_greek", 10029: "mac_latin2", 10079: "mac_iceland",
                          10081: "mac_turkish"}
"""Code pages of old Mac Excel files the reader does not know (Python does): Mac Central
European is the common one."""
_AS_READ = 1252


def foreign_codepage(data: bytes) -> tuple[bytes, str] | None:
    """For a BIFF5/8 workbook whose CODEPAGE the reader does not know: its bytes with the
    code page set to Windows-1252 (which the reader knows), and the Python codec to decode
    the text with afterwards (:func:`recode`). None when no such change is needed."""
    import struct

    try:
        if ole_damage(data) is not None:
            return None
        size = 1 << struct.unpack_from("<H", data, 30)[0]
        stream = ole_stream(data)
        if stream is None or len(stream) < struct.unpack_from("<I", data, 56)[0]:
            return None  # a stream in the mini stream: too small to matter
        for kind, pos, length in _records(stream, 0):
            if kind == 0x0042 and length >= 2:
                codec = _PYTHON_ONLY_CODEPAGES.get(struct.unpack_from("<H", stream, pos + 4)[0])
                if codec is None:
                    return None
                sector = _stream_sector(data, (pos + 4) // size)
                if sector is None:
                    return None
                at = 512 + sector * size + (pos + 4) % size
                patched = bytearray(data)
                struct.pack_into("<H", patched, at, _AS_READ)
                return bytes(patched), codec
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _stream_sector(data: bytes, nth: int) -> int | None:
    """The file sector holding sector ``nth`` of the Workbook/Book stream."""
    import struct

    size = 1 << struct.unpack_from("<H", data, 30)[0]
    count = max(0, (len(data) - 512) // size)
    fat = _ole_fat(data, size, count)
    for sector in _ole_chain(fat, struct.unpack_from("<I", data, 48)[0], count) or []:
        base = 512 + sector * size
        for off in range(base, base + size, 128):
            length = struct.unpack_from("<H", data, off + 64)[0]
            name = data[off:off + max(0, length - 2)].decode("utf-16-le", errors="replace")
            if data[off + 66] == 2 and name in ("Workbook", "Book"):
                chain = _ole_chain(fat, struct.unpack_from("<I", data, off + 116)[0], count)
                return chain[nth] if chain and nth < len(chain) else None
    return None


def _as_bytes(text: str) -> bytes:
    """Windows-1252 text back to its bytes (the five bytes it leaves undefined pass as is)."""
    out = bytearray()
    for ch in text:
        try:
            out += ch.encode("cp1252")
        except UnicodeEncodeError:
            out.append(ord(ch) if ord(ch) < 256 else 0x3F)
    return bytes(out)


def recode(frame: pl.DataFrame, codec: str) -> pl.DataFrame:
    """Text cells read as Windows-1252, decoded with the workbook's real code page."""
    import polars as pl

    def fix(text: str | None) -> str | None:
        if text is None or text.isascii():
            return text
        return _as_bytes(text).decode(codec, errors="replace")

    cols = [c for c, t in frame.schema.items() if t == pl.String]
    return frame.with_columns(pl.col(c).map_elements(fix, return_dtype=pl.String) for c in cols)
