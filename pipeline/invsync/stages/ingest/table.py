"""What every reader of ingest shares: the :class:`StockTable`, header normalising, the
limits on untrusted cells and the finishing of a read frame."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from invsync.errors import InputFileError
from invsync.tables import ROW

if TYPE_CHECKING:
    import polars as pl

# Limits for untrusted files: far above any real stock file, far below what hurts.
MAX_COLUMNS = 1_000
MAX_CELL_CHARS = 10_000
"""Characters of a cell in a column invsync uses; a longer cell rejects its row."""
MAX_ANY_CELL_CHARS = 1_000_000
"""Characters of any cell (a description nobody reads may be long); past it, the file is
refused. The whole file's text is bounded by the readers' own budgets."""


class UnclearEncoding(InputFileError):
    """A text file whose encoding cannot be told where it matters: name one to read it."""


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
    header_row: int = 1
    """The header's row number in the file (rows above it were a title or notes)."""
    layout: str | None = None
    """A recognised export layout (see :mod:`invsync.stages.layouts`), by its name."""
    problems: pl.DataFrame | None = None
    """Rows that could not be read (rejected as they are): ``ROW, column, value, reason,
    message``; the rows stay in ``frame`` so the rejected file keeps them."""
    sheets: tuple[str, ...] = ()
    """A workbook's sheet names, in order (read in the bounded reader: no need to open the
    workbook again to list them)."""
    error_cells: pl.DataFrame | None = None
    """A workbook's error cells (``#N/A``...), read as empty: ``ROW, column, value``."""
    doubtful_encodings: tuple[str, ...] = ()
    """A text file whose encoding could not be told apart among these (the first is the one
    read): the reading stands only while no used cell holds a non-ASCII character (see
    :func:`invsync.stages.ingest.columns.check_doubtful_encoding`)."""
    last_line_complete: bool | None = None
    """A text file's last line ends with a newline (None for a workbook): a file cut off
    mid-line by a failed transfer does not (see :func:`invsync.stages.ingest.cut_off_end`)."""
    trimmed: frozenset[str] = frozenset()
    """Columns none of whose cells starts or ends with whitespace, as the reader knows from
    the file's bytes (validation then does not copy them to trim them). Whatever writes new
    cell text into a column must take it out of this set."""
    plain: frozenset[str] = frozenset()
    """:attr:`trimmed` columns whose cells are also never empty text (an empty cell reads as
    null) nor start with the quote mark of an escaped formula (the file has no ``'``):
    validation takes them as they are, without looking at their cells. Whatever writes new
    cell text into a column must take it out of this set."""
    longest_cell: int | None = None
    """A text file's longest cell in bytes, as read (None when not known): a bound for every
    cell of a frame made of the file's cells, so that the used columns' cells need not be
    measured again (see :func:`invsync.stages.ingest.columns._check_long_cells`)."""

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
    """Lower-case a header, trim it, and treat spaces and punctuation (``-/.()?:#``) as
    underscores: ``Product Code/SKU`` is ``product_code_sku``, ``On hand (new)``
    ``on_hand_new``."""
    text = name.replace("\ufeff", "").replace("\x00", "").replace("\xa0", " ").lower()
    return re.sub(r"[\s\-_/.()\[\]?:#]+", "_", text).strip("_")


def _with_problems(table: StockTable, found: pl.DataFrame) -> StockTable:
    """``table`` with ``found`` added to its problem rows (one per row: the first kept)."""
    import polars as pl

    merged = found if table.problems is None else pl.concat([table.problems, found])
    merged = merged.unique(ROW, keep="first", maintain_order=True).sort(ROW)
    return replace(table, problems=merged)


def _check_cells(path: Path, frame: pl.DataFrame, longest: int | None = None) -> None:
    """Refuse absurdly long cells (naming the first one) instead of carrying them along.

    ``longest``: the frame's longest cell in bytes, if already measured."""
    import polars as pl

    cols = [c for c in frame.columns if c != ROW]
    if not cols or frame.height == 0:
        return
    if longest is None:
        # Bytes first (a length read, no decoding): a cell has at most as many characters.
        longest = frame.select(pl.max_horizontal(pl.col(cols).str.len_bytes().max())).item()
    if (longest or 0) <= MAX_ANY_CELL_CHARS:
        return
    for c in cols:
        hit = frame.filter(pl.col(c).str.len_chars() > MAX_ANY_CELL_CHARS).head(1)
        if hit.height:
            raise InputFileError(
                str(path), f"row {hit[ROW][0]}, column {c!r}: a cell of "
                           f"{len(hit[c][0]):,} characters (the limit is {MAX_ANY_CELL_CHARS:,}); "
                           f"is this really a stock file?")


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
    trimmed = extra.get("trimmed")
    trimmed = trimmed if isinstance(trimmed, frozenset) else frozenset()
    # One pass over the frame for the longest cell and whether any row may be blank.
    longest, maybe_blank = _cell_facts(frame, headers, trimmed)
    _check_cells(path, frame, longest)
    total = frame.height
    is_blank = _blank_rows(frame, headers, trimmed) if maybe_blank else None
    if is_blank is not None:  # copying a million rows to drop none is not free
        frame = frame.filter(~is_blank)
    if frame.schema[ROW] != pl.Int64:
        frame = frame.with_columns(pl.col(ROW).cast(pl.Int64))
    return StockTable(
        frame=frame, path=path, format=fmt, sha256=digest, mapping={}, headers=headers,
        blank_rows=total - frame.height,
        longest_cell=longest if fmt == "csv" else None,
        **extra,  # type: ignore[arg-type]
    )


def _cell_facts(frame: pl.DataFrame, headers: list[str], trimmed: frozenset[str]
                ) -> tuple[int | None, bool]:
    """The frame's longest cell in bytes (None without cells) and whether a row may be
    blank (its first cell is), in one query."""
    import polars as pl

    if not headers or frame.height == 0:
        return None, frame.height > 0
    longest, first_blank = frame.select(
        pl.max_horizontal(pl.col(headers).str.len_bytes().max()).alias("longest"),
        _blank_cell(headers[0], trimmed).any().alias("blank")).row(0)
    return longest, bool(first_blank)


def _blank_cell(column: str, trimmed: frozenset[str]) -> pl.Expr:
    """A cell that is empty or whitespace (a ``trimmed`` column's cells are not copied)."""
    import polars as pl

    cell = pl.col(column)
    text = cell if column in trimmed else cell.str.strip_chars()
    return cell.is_null() | (text.str.len_bytes() == 0)


def _blank_rows(frame: pl.DataFrame, headers: list[str],
                trimmed: frozenset[str] = frozenset()) -> pl.Series | None:
    """Which rows are blank (every cell empty or whitespace: skipped, never rejected);
    None when none is.

    Only a row whose first cell is blank can be: the other cells are looked at for those
    rows alone, so a file without blank rows pays for one column, not all of them. A
    ``trimmed`` column (no cell starts or ends with whitespace) is blank where empty: its
    cells are not copied to trim them.
    """
    import polars as pl

    if not headers:
        return pl.repeat(True, frame.height, eager=True) if frame.height else None
    first = frame.select(_blank_cell(headers[0], trimmed)).to_series()
    if not first.any():
        return None
    if len(headers) > 1:
        rest = frame.filter(first).select(
            pl.all_horizontal([_blank_cell(c, trimmed) for c in headers[1:]]))
        first = first.scatter(first.arg_true(), rest.to_series())
    return first if first.any() else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def set_cells(frame: pl.DataFrame, cells: pl.DataFrame, *, empty: bool = False
                ) -> pl.DataFrame:
    """``frame`` with the cells at (``ROW``, ``column``) set to ``value`` (or emptied)."""
    import polars as pl

    for (column,), part in cells.group_by("column"):
        name = str(column)
        if name not in frame.columns:
            continue
        hit = part.select(ROW, pl.col("value").alias("__set"), pl.lit(True).alias("__hit"))
        frame = frame.join(hit, on=ROW, how="left", maintain_order="left").with_columns(
            pl.when(pl.col("__hit")).then(pl.lit(None, pl.String) if empty else pl.col("__set"))
            .otherwise(pl.col(name)).alias(name)).drop("__set", "__hit")
    return frame
