"""The upload's rejected-rows download holds every row that did not make it: the rows the
preview refused, the items the store does not have (found at preview) and the items the
store refused on Apply, each as the merchant's own row, in the layout of their file."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import polars as pl

from invsync.tables import ROW

NAME = "rejected.csv"


def extra_rows(unknown: list[dict[str, Any]], run_report: dict[str, Any] | None,
               plan_csv: Path | None) -> list[tuple[int, str, str]]:
    """(row, reason, message) of the rows beyond the preview's own rejected ones."""
    out = [(int(u["row"]), "unknown_item", f"the store has no item {u['item']}"
            + (f" — did you mean {u['suggestion']}?" if u.get("suggestion") else ""))
           for u in unknown if u.get("row") is not None]
    refused = [r for r in (run_report or {}).get("rejected") or []
               if r.get("reason") == "refused_by_store"]
    if refused and plan_csv is not None and plan_csv.is_file():
        plan = pl.read_csv(plan_csv, infer_schema=False).select("item", "row")
        rows = {item: row for item, row in plan.iter_rows() if row}
        for rec in refused:
            row = rows.get(str(rec.get("value")))
            if row and row.isdigit():
                out.append((int(row), "refused_by_store", str(rec.get("message") or "")))
    return out


def write_merged(table: Any, preview_csv: Path | None, extra: list[tuple[int, str, str]],
                 target: Path) -> None:
    """``preview_csv`` (the preview's rejected rows) plus ``extra`` rows of ``table`` (the
    file as read), sorted by row, as ``target``."""
    from invsync.disk import write_atomic

    header = [*table.headers, "row", "reason", "message"]
    records: list[list[str]] = []
    if preview_csv is not None and preview_csv.is_file():
        with preview_csv.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            found = next(reader, None)
            if found:
                header = found
            records.extend(reader)
    wanted = {row: (reason, message) for row, reason, message in extra}
    picked = table.frame.filter(pl.col(ROW).is_in(list(wanted)))
    for rec in picked.iter_rows(named=True):
        reason, message = wanted[int(rec[ROW])]
        values = {**{h: rec.get(h) for h in table.headers}, "row": str(rec[ROW]),
                  "reason": reason, "message": message}
        records.append(["" if values.get(h) is None else str(values.get(h)) for h in header])
    at = header.index("row") if "row" in header else None
    if at is not None:
        records.sort(key=lambda r: int(r[at]) if r[at].isdigit() else 0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(records)
    write_atomic(target, ("\ufeff" + out.getvalue()).encode("utf-8"))
    if table.format == "xlsx":  # a workbook's rows go back as a workbook too
        write_atomic(target.with_suffix(".xlsx"), lambda fh: _workbook(header, records, fh))


def _workbook(header: list[str], records: list[list[str]], fh: Any) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("Rejected")
    sheet.append(header)
    for rec in records:
        # Text cells stay text; a leading "=" is not made a formula.
        sheet.append([("'" + v) if v.startswith(("=", "+", "-", "@")) and not
                      v.lstrip("+-").replace(".", "", 1).isdigit() else v for v in rec])
    book.save(fh)
