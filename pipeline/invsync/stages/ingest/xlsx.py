"""Office Open XML workbooks (.xlsx/.xlsm): the zip and XML checks made before the reader
sees the file, and the cell facts the reader does not give (uncalculated formulas,
identifiers stored as numbers)."""

from __future__ import annotations

import re
import zipfile
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING
from xml.etree import ElementTree
from xml.parsers import expat

from invsync.errors import InputFileError
from invsync.stages.ingest.table import StockTable, _first_line, _with_problems
from invsync.tables import ROW

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

MAX_XLSX_UNCOMPRESSED = 256 << 20
MAX_XLSX_RATIO = 200
MAX_XLSX_MEMBERS = 10_000
MAX_XLSX_CELL_TEXT = 64 << 20
"""Characters the Excel reader may materialise for one sheet: each cell's text, a shared
string counted once per cell that uses it (300,000 cells naming one 9,999-character string
are 3 GB of text from a 1.5 MB file)."""


def _reject_uncalculated(table: StockTable) -> StockTable:
    """Reject the rows whose used cell is a formula no spreadsheet program has calculated."""
    import polars as pl

    used = list(dict.fromkeys(table.mapping.values()))
    cols = {table.headers.index(h): h for h in used if h in table.headers}
    found = uncalculated_formulas(table.path, table.sheet_index or 0, cols)
    if not found:
        return table
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
        workbook = ElementTree.fromstring(_small_part(zf, "xl/workbook.xml"))
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
        with zipfile.ZipFile(path) as zf:
            return _sheet_may_hold(path, zf, index, "formula", _F_TAG)
    except (KeyError, StopIteration, IndexError, ValueError, zipfile.BadZipFile, OSError):
        return True


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


def _check_workbook(path: Path) -> None:
    """Refuse a zip bomb by what the workbook's directory says (part count, sizes, ratios),
    before any part is unpacked; :class:`WorkbookScan` then checks what it really holds."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except zipfile.BadZipFile as exc:
        raise InputFileError(str(path), f"not a readable workbook: {exc}") from None
    if len(members) > MAX_XLSX_MEMBERS:
        raise InputFileError(str(path), f"the workbook has {len(members):,} parts; "
                                        f"refusing it as a likely zip bomb")
    total = sum(m.file_size for m in members)
    if total > MAX_XLSX_UNCOMPRESSED:
        raise _bomb(path, f"the workbook says it unpacks to {total / (1 << 20):,.0f} MiB")
    for m in members:
        if m.file_size > (16 << 20) and m.file_size / max(m.compress_size, 1) > MAX_XLSX_RATIO:
            raise _bomb(path, f"part {m.filename} is compressed "
                              f"{m.file_size / max(m.compress_size, 1):,.0f}:1")


@dataclass(frozen=True)
class SheetFacts:
    """What one byte pass over a worksheet part found (True when unsure)."""

    formula: bool
    """It may hold a formula (``<f>``)."""
    error: bool
    """It may hold an error cell (``t="e"``)."""


@dataclass(frozen=True)
class WorkbookFacts:
    """What one byte pass over a workbook found: of each worksheet part, and of all."""

    sheets: dict[str, SheetFacts]
    nul: bool
    """A text part may hold a NUL character (the byte, an ``_x0000_`` escape or a character
    reference), which only then is looked for in every cell read."""


_FACTS: dict[tuple[str, int, int], WorkbookFacts] = {}
"""Facts of the workbooks scanned lately, by (path, size, modification time)."""
_FACTS_KEPT = 8


def _file_key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (str(path), st.st_size, st.st_mtime_ns)


class WorkbookScan:
    """One streaming pass over every part of a zipped workbook, a chunk per :meth:`step`.

    Counts the bytes each part really unpacks to (a zip whose sizes lie is refused past
    :data:`MAX_XLSX_UNCOMPRESSED`), refuses XML declaring a DTD or entities, and notes of
    each worksheet whether it may hold a formula or an error cell (the later searches
    skip the sheets that cannot). Stepped while the reader works in its own process.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._steps = self._walk()
        self._error: InputFileError | None = None
        self._done = False

    def step(self) -> bool:
        """Scan one more chunk; False once the whole workbook has been scanned. Raises
        :class:`InputFileError` for what the scan refuses (and again on each later call)."""
        if self._error is not None:
            raise self._error
        if self._done:
            return False
        try:
            next(self._steps)
        except StopIteration:
            self._done = True
        except InputFileError as exc:
            self._error = exc
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
                ValueError) as exc:
            self._error = InputFileError(str(self.path), f"not a readable workbook: {exc}")
        if self._error is not None:
            raise self._error
        return not self._done

    def finish(self) -> None:
        """Scan what is left; raise :class:`InputFileError` for what the scan refused."""
        while self.step():
            pass

    def _walk(self) -> Iterator[None]:
        seen = [0]
        facts: dict[str, SheetFacts] = {}
        nul = [False]
        with zipfile.ZipFile(self.path) as zf:
            for m in zf.infolist():
                with zf.open(m) as fh:
                    found = yield from self._part(m.filename, fh, seen, nul)
                if found is not None:
                    facts[m.filename] = found
        key = _file_key(self.path)
        if key is not None:
            while len(_FACTS) >= _FACTS_KEPT:
                del _FACTS[next(iter(_FACTS))]
            _FACTS[key] = WorkbookFacts(sheets=facts, nul=nul[0])

    def _part(self, name: str, fh: IO[bytes], seen: list[int], nul: list[bool]
              ) -> Generator[None, None, SheetFacts | None]:
        """Scan one part, a chunk per step; its facts when it is a worksheet (``nul[0]``
        set when an XML part may hold a NUL)."""
        sheet = name.startswith("xl/worksheets/") and name.endswith(".xml")
        xml = not name.lower().endswith(_BINARY_PARTS)  # (whatever its name, unless a picture)
        formula = error = False
        tail = b""
        first = True
        while chunk := fh.read(1 << 20):
            if first and name.endswith((".xml", ".rels")) and (
                    b"<!DOCTYPE" in chunk[:4096] or b"<!ENTITY" in chunk[:4096]):
                raise InputFileError(str(self.path), f"part {name} declares a DTD/entities, "
                                                     f"which spreadsheets never do; refusing "
                                                     f"it (XML bomb?)")
            if first and sheet and not _UTF8_HEAD.match(chunk):
                formula = error = True  # not UTF-8: a byte search proves nothing
            first = False
            seen[0] += len(chunk)
            if seen[0] > MAX_XLSX_UNCOMPRESSED:
                raise _bomb(self.path, f"the workbook unpacks to more than "
                                       f"{MAX_XLSX_UNCOMPRESSED >> 20} MiB")
            window = tail + chunk
            if sheet:
                formula = formula or _formula_in(window)
                error = error or _error_in(window)
            if xml and not nul[0]:
                nul[0] = _nul_in(window)
            tail = chunk[-64:]  # a tag split between two chunks
            yield
        return SheetFacts(formula=formula, error=error) if sheet else None


_BINARY_PARTS = (".bin", ".png", ".jpg", ".jpeg", ".jfif", ".gif", ".bmp", ".emf", ".wmf",
                 ".tif", ".tiff", ".wdp")
"""Parts never read as text (pictures, printer settings, macros): a NUL byte is their own."""
_NUL_NEEDLES = (b"\x00", b"_x0000_", b"_X0000_", b"&#0", b"&#x", b"&#X")
"""What may stand for a NUL in an XML part (a reference such as ``&#x0A;`` is a false
alarm: the cells are then only checked)."""


def _nul_in(buf: bytes) -> bool:
    """Whether ``buf`` holds one of :data:`_NUL_NEEDLES`: each ``_`` and ``&`` looked at (a
    one-byte search runs at memory speed), past :data:`_FEW` of them a search per needle."""
    if b"\x00" in buf:
        return True
    for lead, width in ((b"_", 7), (b"&", 3)):
        at, tries = buf.find(lead), 0
        while at != -1:
            if buf[at:at + width] in _NUL_NEEDLES:
                return True
            tries += 1
            if tries > _FEW:
                return any(n in buf for n in _NUL_NEEDLES if n.startswith(lead))
            at = buf.find(lead, at + 1)
    return False
_TAG_ENDS = (b" ", b"\t", b"\r", b"\n", b"/", b">", b"")
_FEW = 64
"""Up to this many occurrences of a letter, each is looked at (counting and finding one
byte run at memory speed); past it, a chunk is searched for longer literals."""


def _formula_in(buf: bytes) -> bool:
    """Whether ``buf`` may hold a formula tag (``<f>``, ``<x:f ...>``)."""
    at, tries = buf.find(b"f"), 0  # one byte: found at memory speed
    while at != -1 and tries <= _FEW:
        if buf[at - 1:at] in (b"<", b":") and buf[at + 1:at + 2] in _TAG_ENDS:
            return True
        at, tries = buf.find(b"f", at + 1), tries + 1
    if at == -1:
        return False
    return _literal_in(buf, b"<f", lambda at: buf[at + 2:at + 3] in _TAG_ENDS, _F_TAG) or (
        b":" in buf and _literal_in(buf, b":f", lambda at: buf[at + 2:at + 3] in _TAG_ENDS,
                                    _F_TAG))


def _error_in(buf: bytes) -> bool:
    """Whether ``buf`` may hold an error cell's type (``t="e"``): an attribute valued ``e``."""
    return _literal_in(buf, b'"e"', lambda at: _after_equals(buf, at), _ERROR_TYPE) or (
        b"'" in buf and _literal_in(buf, b"'e'", lambda at: _after_equals(buf, at),
                                    _ERROR_TYPE))


def _literal_in(buf: bytes, literal: bytes, confirm: Callable[[int], bool],
                pattern: re.Pattern[bytes]) -> bool:
    """Whether ``buf`` holds ``literal`` where ``confirm`` says it counts; past :data:`_FEW`
    near misses, whether ``pattern`` is found anywhere in ``buf``."""
    at, tries = buf.find(literal), 0
    while at != -1:
        if confirm(at):
            return True
        tries += 1
        if tries > _FEW:
            return pattern.search(buf) is not None
        at = buf.find(literal, at + len(literal))
    return False


def _after_equals(buf: bytes, at: int) -> bool:
    """Whether ``buf[at]`` (a quote) follows an ``=`` (or may: the window starts before it)."""
    before = buf[max(at - 64, 0):at].rstrip(b" \t\r\n")
    return not before or before.endswith(b"=")


def _sheet_may_hold(path: Path, zf: zipfile.ZipFile, index: int, what: str,
                    needle: re.Pattern[bytes]) -> bool:
    """Whether sheet ``index`` may hold ``what`` (a :class:`SheetFacts` field): from the
    workbook's scan when it was made, else by searching the sheet for ``needle``."""
    key = _file_key(path)
    facts = _FACTS.get(key) if key is not None else None
    if facts is not None:
        member = _sheet_member(zf, index)
        if member in facts.sheets:
            return bool(getattr(facts.sheets[member], what))
    return _may_hold(zf, index, needle)


def may_hold_nul(path: Path, index: int) -> bool:
    """Whether sheet ``index`` of the zipped workbook ``path`` may hold a NUL character, by
    the scan made of it (True when there was none, or the sheet is not an XML worksheet)."""
    key = _file_key(path)
    facts = _FACTS.get(key) if key is not None else None
    if facts is None or facts.nul:
        return True
    try:
        with zipfile.ZipFile(path) as zf:
            return _sheet_member(zf, index) not in facts.sheets
    except (KeyError, StopIteration, IndexError, ValueError, zipfile.BadZipFile, OSError,
            ElementTree.ParseError):
        return True


def _bomb(path: Path, why: str) -> InputFileError:
    return InputFileError(str(path), f"{why}; refusing it as a likely zip bomb (invsync reads "
                                     f"workbooks of up to {MAX_XLSX_UNCOMPRESSED >> 20} MiB "
                                     f"unpacked; save a large export as CSV)")


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


_MAX_BOOK_PART = 16 << 20
"""The workbook's own list of sheets and its links: a few KB in real files; past this a
part is not parsed whole into memory (a crafted one would take gigabytes)."""


def _small_part(zf: zipfile.ZipFile, name: str) -> bytes:
    """Part ``name`` whole; KeyError past :data:`_MAX_BOOK_PART` (reading stops at the size
    the zip states, so a lie about it is a read error, not more memory)."""
    if zf.getinfo(name).file_size > _MAX_BOOK_PART:
        raise KeyError(name)
    return zf.read(name)


def _sheet_member(zf: zipfile.ZipFile, index: int) -> str:
    """The zip member holding sheet number ``index`` (0-based, workbook order)."""
    workbook = ElementTree.fromstring(_small_part(zf, "xl/workbook.xml"))
    # Transitional or Strict OOXML: the same names under other namespaces.
    sheets = next((e for e in workbook if e.tag.rpartition("}")[2] == "sheets"), None)
    if sheets is None:
        raise KeyError("sheets")
    attrs = list(sheets)[index].attrib
    rel_id = attrs.get(f"{_NS_REL}id") or next(
        (v for k, v in attrs.items() if k.startswith("{") and k.endswith("}id")), None)
    rels = ElementTree.fromstring(_small_part(zf, "xl/_rels/workbook.xml.rels"))
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
        longest = max(longest, _widest_si_gap(data))
    return longest


_SI_ODD = re.compile(rb"<si(?![\s/>])")
"""A ``<si`` that does not start an ``<si>`` tag (another element's name, or the end)."""


def _widest_si_gap(data: bytes) -> int:
    """The widest gap between two ``<si>`` tags (the last one's: to the end). Split at
    C speed when every ``<si`` starts such a tag and none has a prefix; else tag by tag."""
    if b":si" not in data and not _SI_ODD.search(data):
        parts = data.split(b"<si")[1:]
        return max(map(len, parts), default=-3) + 3
    longest, last = 0, None
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


_SHARED_CELL_BYTES = len('<c t="s"><v>0</v></c>')
"""The fewest bytes of a sheet part that make one cell naming a shared string."""


def check_cell_text(path: Path, index: int) -> None:
    """Refuse a sheet whose cells would expand to more than :data:`MAX_XLSX_CELL_TEXT`.

    Shared strings are stored once but materialised once per cell that names them, so
    the unpacked size says nothing about the reader's memory. Cheap bounds (every cell
    naming the longest shared string, the cells counted from the part's size, then from
    its tags) clear ordinary workbooks; otherwise the sheet is streamed and each cell's
    real length added up, stopping at the budget. The part's declared size is the
    sender's word: this runs in the reader's bounded process, which a lie only stops
    later, by its memory budget.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            member = _sheet_member(zf, index)
            longest = _longest_shared_string(zf)
            lengths = None
            if longest is None:
                lengths = _shared_string_lengths(zf)
                longest = max(lengths, default=0)
            # Without unpacking: every cell naming a shared string takes at least
            # _SHARED_CELL_BYTES of the part (the part's own size counts its other text).
            declared = zf.getinfo(member).file_size
            if declared + declared // _SHARED_CELL_BYTES * longest <= MAX_XLSX_CELL_TEXT:
                return
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


def error_cells(path: Path, index: int) -> list[tuple[int, int, str]]:
    """The error cells (``#N/A``, ``#REF!``...) of sheet ``index``: ``(row, position in
    the used range, text)``. The reader reads them as empty; they are reported instead.
    A workbook that cannot be streamed so has none (reading it properly says why)."""
    found: list[tuple[int, int, str]] = []
    first_col = [1 << 30]
    state: dict[str, object] = {"ref": None, "error": False, "in_v": False, "text": []}

    def start(name: str, attrs: dict[str, str]) -> None:
        local = _local(name)
        if local == "c":
            ref = _REF.match(attrs.get("r", ""))
            state["ref"] = (int(ref.group(2)), _col_number(ref.group(1))) if ref else None
            state["error"] = attrs.get("t") == "e"
            state["text"] = []
        elif local == "v" and state["ref"] is not None:
            state["in_v"] = True

    def text(data: str) -> None:
        if state["in_v"] and state["error"]:
            parts = state["text"]
            assert isinstance(parts, list)
            if len(parts) < 8:
                parts.append(data)

    def end(name: str) -> None:
        local = _local(name)
        ref = state["ref"]
        if local == "v" and isinstance(ref, tuple):
            state["in_v"] = False
            first_col[0] = min(first_col[0], ref[1])
            if state["error"]:
                found.append((ref[0], ref[1], "".join(state["text"])[:16]))  # type: ignore[arg-type]
        elif local == "c":
            state["ref"] = None

    try:
        with zipfile.ZipFile(path) as zf:
            if not _sheet_may_hold(path, zf, index, "error", _ERROR_TYPE):
                return []
            with zf.open(_sheet_member(zf, index)) as fh:
                _scan_xml(fh, start=start, end=end, text=text)
    except (KeyError, StopIteration, IndexError, ValueError, zipfile.BadZipFile,
            ElementTree.ParseError, expat.ExpatError):
        return []
    return [(row, col - first_col[0], shown) for row, col, shown in found]


_ERROR_TYPE = re.compile(rb"""\st\s*=\s*["']e["']""")


def _may_hold(zf: zipfile.ZipFile, index: int, needle: re.Pattern[bytes]) -> bool:
    """Whether sheet ``index``'s bytes may match ``needle`` (True unless the sheet is UTF-8
    text without it)."""
    with zf.open(_sheet_member(zf, index)) as fh:
        tail = b""
        first = True
        while chunk := fh.read(1 << 20):
            if first and not _UTF8_HEAD.match(chunk):
                return True
            first = False
            if needle.search(tail + chunk):
                return True
            tail = chunk[-64:]  # a tag split between two chunks
    return False
