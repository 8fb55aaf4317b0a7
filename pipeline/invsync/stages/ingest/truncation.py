"""A text file cut off mid-line by a failed transfer: its last row may hold a cut value.

``SKU-1,1,20`` is a valid row, but it may be the first bytes of ``SKU-1,1,200``. A file
that does not end with a newline is common (some programs never write the last one), so
the last line alone proves nothing; a source whose last run's file ended with one and
whose file now does not was most likely cut off.
"""

from __future__ import annotations

from pathlib import Path

from invsync.stages.ingest.table import StockTable, _with_problems
from invsync.tables import ROW

MAYBE_TRUNCATED = ("this is the file's last line and it is cut off mid-line (no line end), "
                   "while the last run of this file ended with a complete line: the file may "
                   "not have arrived whole — check it and send it again")


def previous_line_end(report_dir: Path, path: Path) -> bool | None:
    """Whether the newest run that read ``path`` (exit 0 or 1) found its last line complete;
    None when no such run recorded it."""
    from invsync.state.history import list_runs

    wanted = str(path)
    for past in list_runs(report_dir):
        read = past.report.get("input") or {}
        if read.get("path") != wanted or past.report.get("exit_code") not in (0, 1):
            continue
        complete = read.get("last_line_complete")
        if isinstance(complete, bool):
            return complete
    return None


def cut_off_end(table: StockTable, report_dir: Path) -> StockTable:
    """``table`` with its last row rejected as ``maybe_truncated`` when the file ends
    mid-line and the same source's last successful run ended with a complete line."""
    import polars as pl

    if table.last_line_complete is not False or table.frame.height == 0:
        return table
    if previous_line_end(report_dir, table.path) is not True:
        return table
    last = int(table.frame[ROW].max())  # type: ignore[arg-type]
    column = table.mapping.get("quantity")
    problem = pl.DataFrame(
        {ROW: [last], "column": [column], "value": [None], "reason": ["maybe_truncated"],
         "message": [MAYBE_TRUNCATED]},
        schema={ROW: pl.Int64, "column": pl.String, "value": pl.String, "reason": pl.String,
                "message": pl.String})
    return _with_problems(table, problem)
