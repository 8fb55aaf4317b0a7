"""Read a workbook one way and print the in-process read time as JSON (imports excluded).

    python bench/xlsx_read.py {invsync|calamine|openpyxl} PATH

Every library a mode needs is imported before the clock starts, so the number compares
the reads themselves; each mode runs in its own process so its peak RSS is its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(mode: str, path: str) -> None:
    if mode == "invsync":
        import fastexcel  # read_stock_file imports it lazily: keep that off the clock
        import polars  # noqa: F401

        import invsync.stages.ingest.workbook  # noqa: F401  # imported on first use: off the clock
        from invsync.stages.ingest import read_stock_file

        t0 = time.perf_counter()
        rows = read_stock_file(Path(path)).rows
    elif mode == "calamine":
        import fastexcel  # noqa: F401
        import polars as pl

        t0 = time.perf_counter()
        rows = pl.read_excel(path, engine="calamine").height
    elif mode == "openpyxl":
        import openpyxl

        t0 = time.perf_counter()
        wb = openpyxl.load_workbook(path, read_only=True)
        rows = sum(1 for _ in wb.worksheets[0].iter_rows(values_only=True)) - 1
        wb.close()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps({"seconds": time.perf_counter() - t0, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
