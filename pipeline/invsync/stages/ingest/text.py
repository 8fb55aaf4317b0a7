"""CSV and other delimited text: encoding, delimiter, header row and the careful reader."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from invsync.errors import InputFileError, UsageError
from invsync.stages.ingest.columns import HEADER_SEARCH_ROWS, _header_index
from invsync.stages.ingest.table import (
    MAX_COLUMNS,
    StockTable,
    UnclearEncoding,
    _finish,
    _unique_headers,
)
from invsync.tables import ROW

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import polars as pl


_CSV_DELIMITERS = (",", ";", "\t", "|")


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


_MULTI_BYTE = frozenset({"cp932", "shift_jis", "euc_jp", "gb18030", "big5", "euc_kr"})
"""Encodings in which a non-ASCII byte may swallow the ASCII byte after it (a delimiter):
a guess among them could move cell boundaries, not just letters."""


def _detect_encoding(path: Path, data: bytes) -> tuple[str, tuple[str, ...]]:
    """The encoding of text that is not UTF-8, and the other readings it could not be told
    apart from (empty when it is certain), or a refusal naming the candidates.

    charset-normalizer ranks the candidates; one is taken when it alone reads as a
    language, or when all the plausible ones read the file the same, or when Windows-1252
    (by far the most common) is among them. Otherwise the readings are too close to call:
    when they are all one byte per character (cells and rows are the same in each, only
    letters differ) the file is read as Windows-1252 if it can be, else the likeliest, and
    the candidates are returned for :func:`invsync.stages.ingest.columns.check_doubtful_encoding`;
    else the file is refused, naming them (Windows-1252 whenever the bytes read as it).
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
        return band[0].encoding, ()
    fluent = sorted((m for m in band if m.coherence > 0.1), key=lambda m: -m.coherence)
    if any(m.encoding == "cp1252" for m in fluent):
        return "cp1252", ()  # by far the most common: a Western European Excel's "CSV"
    if len(fluent) == 1 or (len(fluent) > 1 and fluent[0].coherence - fluent[1].coherence >= 0.3):
        return fluent[0].encoding, ()
    if not fluent and any(m.encoding == "cp1252" for m in band):
        return "cp1252", ()
    candidates = [m.encoding for m in (fluent or band)]
    if _reads_as(data, "cp1252"):
        candidates = ["cp1252", *(c for c in candidates if c != "cp1252")]
    if not _MULTI_BYTE.intersection(candidates):
        return candidates[0], tuple(candidates)
    raise UnclearEncoding(
        str(path), f"the file is not UTF-8 and its encoding is unclear (it could be "
                   f"{encoding_names(candidates)}); save it as UTF-8, or name the encoding "
                   f"with --encoding")


def encoding_names(codecs: Iterable[str], most: int = 5) -> str:
    """The encodings ``codecs`` as people name them, the first ``most`` of them."""
    names = [_ENCODING_NAMES.get(c, c) for c in codecs]
    return ", ".join(names[:most]) + (" …" if len(names) > most else "")


def _reads_as(data: bytes, codec: str) -> bool:
    try:
        data.decode(codec)
    except UnicodeDecodeError:
        return False
    return True


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


def _decode(path: Path, data: bytes, forced: str | None = None
            ) -> tuple[bytes, str, tuple[str, ...]]:
    """Return UTF-8 bytes without BOM, the encoding the file was in, and the encodings it
    could not be told apart from (empty when the reading is certain)."""
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
        return text.lstrip("\ufeff").encode("utf-8"), name, ()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16").encode("utf-8"), "utf-16", ()
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
                return data.decode(utf16).encode("utf-8"), utf16, ()
            except UnicodeDecodeError:
                pass
        raise InputFileError(str(path), "this is a binary file, not CSV text")
    if data.isascii():  # far cheaper than decoding a copy of the whole file to check it
        return data, encoding, ()
    try:
        data.decode("utf-8")
        return data, encoding, ()
    except UnicodeDecodeError:
        pass
    detected, doubt = ("cp1252", ()) if thin_western(data) else _detect_encoding(path, data)
    try:
        text = data.decode(detected)
    except UnicodeDecodeError as exc:
        raise InputFileError(str(path), f"the file looks like {detected} text but byte "
                                        f"{exc.start:,} is not; save it as UTF-8, or name the "
                                        f"encoding with --encoding") from None
    return (text.encode("utf-8"), _ENCODING_NAMES.get(detected, detected),
            tuple(_ENCODING_NAMES.get(c, c) for c in doubt))


_WESTERN = frozenset("©®°±²³µ·¹º»¼½¾×÷€™‘’“”–—…•§¶¢£¥¤«¬¯´¸¨"
                     + "".join(map(chr, range(0xC0, 0x100))))
"""Characters a Windows-1252 reading of a few stray bytes may show in a Western file."""


def thin_western(data: bytes) -> bool:
    """Whether the only non-ASCII bytes are a few (at most 4 distinct) that read as common
    Western characters in Windows-1252 (a ``©`` or an ``é``): evidence too thin to tell
    code pages apart, so the Western one, by far the most common, is taken."""
    sample = data[:_DETECT_SAMPLE]
    high = {b for b in set(sample) if b >= 0x80}
    if not high or len(high) > 4:
        return False
    try:
        shown = bytes(sorted(high)).decode("cp1252")
    except UnicodeDecodeError:
        return False
    return all(ch in _WESTERN for ch in shown)


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

    data, encoding, doubtful = _decode(path, raw, encoding)
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
    # One chunk per column (the reader makes one per thread's block): every frame made from
    # these columns later shares their buffers, where a column of another chunk layout
    # beside them would have them all copied into one chunk (again in each such frame).
    frame = frame.rechunk()
    notes = []
    if encoding not in ("utf-8", "utf-8-sig") and not doubtful:
        notes.append(_encoding_note(raw, encoding))
    if skip:
        notes.append(f"the header is on row {first_row}; the {skip} row(s) above it were "
                     f"skipped")
    trimmed = frozenset(frame.columns) - {ROW} if problems is None and \
        _no_edge_space(data, delimiter) else frozenset()
    # (polars reads an empty cell as null; a file without quotes has no quoted "" either.)
    plain = trimmed if trimmed and b"'" not in data else frozenset()
    table = _finish(frame, path, "csv", digest, encoding=encoding, delimiter=delimiter,
                    notes=notes, header_row=first_row, doubtful_encodings=doubtful,
                    last_line_complete=data.endswith((b"\n", b"\r")), trimmed=trimmed,
                    plain=plain)
    if problems is not None and problems.height:
        table = StockTable(**{**table.__dict__, "problems": problems})
    return table


_EDGE_SPACE = (b" ", b"\t", b"\x0b", b"\x0c")


def _no_edge_space(data: bytes, delimiter: str) -> bool:
    """Whether no cell of this CSV text can start or end with whitespace, as its bytes alone
    show: ASCII without a space, tab, vertical tab or form feed (but the delimiter), without
    quotes (a quoted cell may hold a line break), and with carriage returns, if any, only in
    line breaks. Each test is one byte search, far cheaper than trimming every cell."""
    if not data.isascii() or b'"' in data:
        return False
    sep = delimiter.encode()
    if any(space in data for space in _EDGE_SPACE if space != sep):
        return False
    returns = data.count(b"\r") if b"\r" in data else 0  # (a search is far cheaper)
    return returns == 0 or returns == data.count(b"\r\n")


def _encoding_note(raw: bytes, encoding: str) -> str:
    """The note saying which encoding a file that is not UTF-8 was read as."""
    shown = encoding.replace("windows", "Windows").replace("utf", "UTF").upper() \
        if not encoding.startswith("windows") else encoding.replace("windows", "Windows")
    if encoding == "windows-1252" and thin_western(raw):
        chars = "".join(sorted({chr(b) for b in raw[:_DETECT_SAMPLE] if b >= 0x80}))
        shown_chars = bytes(map(ord, chars)).decode("cp1252")
        return (f"the file is not UTF-8; its only non-ASCII characters ({shown_chars}) were read "
                f"as Windows-1252 (Western European), the most common; if they look wrong, "
                f"name the encoding with --encoding")
    return f"the file is not UTF-8; it was read as {shown}"


MAX_ROW_CELLS = 2 * MAX_COLUMNS
"""Cells of one line read as cells: the rest of a wider line is cut off (its row is rejected
anyway) so that a line of millions of delimiters never becomes millions of strings."""


def _bounded_lines(lines: Iterable[str], delimiter: str, cut: set[int]) -> Iterator[str]:
    """``lines``, each cut after :data:`MAX_ROW_CELLS` delimiters (its number put in ``cut``;
    quotes in a cut line are dropped so that it cannot swallow the lines after it)."""
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_ROW_CELLS and line.count(delimiter) > MAX_ROW_CELLS:
            at = -1
            for _ in range(MAX_ROW_CELLS):
                at = line.find(delimiter, at + 1)
            cut.add(number)
            line = line[:at].replace('"', "") + "\n"
        yield line


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
    del data
    cut: set[int] = set()
    reader = csv.reader(_bounded_lines(io.StringIO(text, newline=""), delimiter, cut),
                        delimiter=delimiter)
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
                cells = f"more than {MAX_ROW_CELLS:,}" if reader.line_num in cut else \
                    f"{len(record):,}"
                bad_msgs.append(f"this row has {cells} cells but the header has {width}{hint}")
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
