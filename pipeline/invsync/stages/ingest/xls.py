"""Legacy Excel workbooks (.xls, BIFF in an OLE compound file): the container's facts
(streams, encryption) and the 8-bit strings some writers fill with UTF-16."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
