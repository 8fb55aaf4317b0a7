"""Stage 5: the run report, written as a folder per run.

``<report-dir>/<run_id>/report.json`` is the machine-readable record; ``rejected.csv``
holds the rejected rows with their original columns and cell text plus ``row``,
``reason`` and ``message``, ready to be fixed and uploaded again. Cells that a
spreadsheet program would evaluate as a formula are escaped.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from invsync.disk import write_atomic
from invsync.redact import redact_data
from invsync.stages.ingest import BLANKS, FORMULA, ROW, StockTable

REPORT_VERSION = 1
_NUMBER = re.compile(r"^[+-]?\d+(?:[.,]\d+)?$")
_FORMULA = re.compile(FORMULA)


@dataclass
class Counts:
    """Row and item counts of a run; they always add up (see :meth:`check`)."""

    rows: int = 0
    """Non-blank data rows read."""
    blank: int = 0
    valid: int = 0
    invalid: int = 0
    merged: int = 0
    unchanged: int = 0
    changed: int = 0
    submitted: int = 0
    accepted: int = 0
    refused: int = 0
    unconfirmed: int = 0
    not_sent: int = 0
    zeroed_missing: int = 0
    """Items in the snapshot but not in the file, set to 0 by ``--zero-missing``."""
    rejected: int = 0
    """Rows rejected: invalid ones plus those the store refused."""

    def check(self) -> None:
        """Raise if the counts do not add up (a bug, never a user error)."""
        problems = []
        if self.rows != self.valid + self.invalid:
            problems.append("rows != valid + invalid")
        if self.valid - self.merged != self.unchanged + self.changed:
            problems.append("valid - merged != unchanged + changed")
        if self.changed + self.zeroed_missing != self.submitted + self.not_sent:
            problems.append("changed + zeroed_missing != submitted + not_sent")
        if self.submitted != self.accepted + self.refused + self.unconfirmed:
            problems.append("submitted != accepted + refused + unconfirmed")
        if self.rejected != self.invalid + self.refused:
            problems.append("rejected != invalid + refused")
        if problems:
            raise AssertionError(f"run counts do not add up: {problems}: {self}")


@dataclass
class RunReport:
    """Everything about one run, as written to ``report.json``."""

    run_id: str
    status: str
    """``succeeded``, ``partial``, ``failed`` or ``dry_run``."""
    started_at: str
    finished_at: str = ""
    command: str = "sync"
    input: dict[str, Any] = field(default_factory=dict)
    store: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    brakes: list[dict[str, str]] = field(default_factory=list)
    by_location: dict[str, dict[str, int]] = field(default_factory=dict)
    resumed_from: str | None = None
    reverted_from: str | None = None
    """The run whose replaced levels this ``revert`` run put back."""
    error: str | None = None
    exit_code: int = 0
    report_dir: str = ""
    origin: dict[str, Any] = field(default_factory=dict)
    """Who started the run and from where (the upload page: ``source``, ``user``, ``filename``)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = REPORT_VERSION
        return data


def summary_line(report: RunReport) -> str:
    """The one line a run ends with, for cron mail and grep.

    ``invsync: partial run=ID rows=15 updated=10 unchanged=0 rejected=5 refused=1
    retries=3 (429: 2, 5xx: 1) in 1.2s report=FOLDER``
    """
    c = report.counts
    parts = [f"invsync: {report.status}", f"run={report.run_id}"]
    profile = (report.store or {}).get("profile")
    if profile:
        parts.append(f"profile={profile}")
    sent = c.changed + c.zeroed_missing
    parts += [f"rows={c.rows}",
              f"would_update={sent}" if report.status == "dry_run" else f"updated={c.accepted}",
              f"unchanged={c.unchanged}", f"rejected={c.rejected}", f"refused={c.refused}"]
    if (c.unconfirmed or c.not_sent) and report.status != "dry_run":
        parts += [f"unconfirmed={c.unconfirmed}", f"not_sent={c.not_sent}"]
    retries = int(report.requests.get("retries", 0))
    if retries:
        causes = ", ".join(f"{k.removeprefix('retries_')}: {v}" for k, v in report.requests.items()
                           if k.startswith("retries_"))
        parts.append(f"retries={retries} ({causes})")
    if report.exit_code:
        parts.append(f"exit={report.exit_code}")
    parts.append(f"in {float(report.timings.get('total', 0.0)):.1f}s")
    parts.append(f"report={report.report_dir}")
    return " ".join(parts)


def new_run_id(now: datetime | None = None) -> str:
    """A sortable, unique run id such as ``20261127T103512.345Z-4f9a1c`` (UTC, milliseconds)."""
    import secrets

    now = now or datetime.now(UTC)
    return f"{now.strftime('%Y%m%dT%H%M%S')}.{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def rejected_records(rejected: pl.DataFrame) -> list[dict[str, Any]]:
    """The rejected rows as JSON records (``row`` instead of the internal column)."""
    return rejected.rename({ROW: "row"}).sort("row").to_dicts()


PLAN_COLUMNS = ["location_id", "identifier", "item", "old", "new", "delta", "row", "status"]


def plan_frame(changes: pl.DataFrame, status: pl.Expr | str) -> pl.DataFrame:
    """The change set as ``plan.csv`` rows: location, item, old, new, delta, row, status.

    ``identifier``/``item`` name each item as the request does (as its row named it).
    """
    status_expr = pl.lit(status) if isinstance(status, str) else status
    return changes.select(
        pl.col("location_id"), pl.col("address").alias("identifier"),
        pl.col("address_key").alias("item"),
        pl.col("old_quantity").alias("old"), pl.col("quantity").alias("new"),
        (pl.col("quantity") - pl.col("old_quantity").fill_null(0)).alias("delta"),
        pl.col(ROW).alias("row"), status_expr.alias("status"),
    )


def write_run_folder(
    report: RunReport, folder: Path, table: StockTable | None, rejected: pl.DataFrame | None,
    plan: pl.DataFrame | None = None,
) -> Path:
    """Write ``report.json``, ``rejected.csv``, ``plan.csv`` and the human reports."""
    folder.mkdir(parents=True, exist_ok=True)
    report.report_dir = str(folder)
    if table is not None and rejected is not None:
        write_rejected_csv(folder / "rejected.csv", table, rejected)
        if table.format == "xlsx" and rejected.height:
            write_rejected_xlsx(folder / "rejected.xlsx", table, rejected)
    if plan is not None:
        tmp = folder / ".plan.csv.tmp"
        try:
            plan.with_columns(escape_formulas(pl.col(c)).alias(c)
                              for c in ("identifier", "item")).write_csv(tmp)
            tmp.replace(folder / "plan.csv")
        finally:
            tmp.unlink(missing_ok=True)
    data = redact_data(report.to_dict())  # the last pass: no credential is ever written
    write_atomic(folder / "report.json", json.dumps(data, indent=2, ensure_ascii=False).encode())
    try:
        from invsync.html.report_page import write_human_reports

        write_human_reports(folder, data, plan)
    except Exception as exc:  # the JSON report is the record; a page must never fail a run
        logging.getLogger("invsync.report").warning("report.html not written: %s", exc)
    return folder


def rejected_frame(table: StockTable, rejected: pl.DataFrame) -> pl.DataFrame:
    """Original columns with their original text, plus ``row``, ``reason``, ``message``."""
    ours = rejected.select(ROW, pl.col("reason").alias("__reason"),
                           pl.col("message").alias("__message"))
    originals = table.frame.join(ours, on=ROW, how="inner")
    # A file with its own row/reason/message column keeps it; ours get a prefix.
    name = {c: (f"invsync_{c}" if c in table.headers else c) for c in ("row", "reason", "message")}
    return originals.sort(ROW).select(
        *[pl.col(h) for h in table.headers],
        pl.col(ROW).alias(name["row"]),
        pl.col("__reason").alias(name["reason"]),
        pl.col("__message").alias(name["message"]),
    )


def is_formula(text: str | None) -> bool:
    """Would a spreadsheet evaluate ``text``? A formula sign after blanks, not a plain number."""
    return (text is not None and _FORMULA.match(text) is not None
            and not _NUMBER.match(text.strip(BLANKS)))


def escape_formula(text: str | None) -> str | None:
    """Prefix ``'`` to text a spreadsheet would evaluate (``=``, ``+``, ``-``, ``@``, ...)."""
    return "'" + text if text is not None and is_formula(text) else text


def escape_formulas(column: pl.Expr) -> pl.Expr:
    """Vectorised :func:`escape_formula` for a text column."""
    text = column.cast(pl.String)
    risky = text.str.contains(FORMULA) & ~text.str.strip_chars(BLANKS).str.contains(
        _NUMBER.pattern)
    return pl.when(risky).then(pl.lit("'") + text).otherwise(text)


def write_rejected_csv(path: Path, table: StockTable, rejected: pl.DataFrame) -> None:
    """Write the re-uploadable rejected rows as UTF-8 CSV, headers and cells formula-escaped."""
    import csv

    frame = rejected_frame(table, rejected)
    escaped = frame.select(escape_formulas(pl.col(c)).alias(c) for c in frame.columns)
    tmp = path.with_suffix(".csv.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            # The header row too: a file's header is its text, and may be hostile.
            csv.writer(fh, lineterminator="\n").writerow(
                escape_formula(c) for c in frame.columns)
            escaped.write_csv(fh, include_header=False, quote_style="necessary")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_rejected_xlsx(path: Path, table: StockTable, rejected: pl.DataFrame) -> None:
    """The rejected rows as a workbook: original columns, offending cells highlighted.

    Every cell is written as a string cell, so text such as ``=HYPERLINK(...)`` is shown,
    never evaluated.
    """
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.comments import Comment
    from openpyxl.styles import Font, PatternFill

    frame = rejected_frame(table, rejected)
    blamed = rejected.select(pl.col(ROW).alias("row"), pl.col("column").alias("_blamed"))
    frame = frame.join(blamed, left_on=frame.columns[len(table.headers)], right_on="row",
                       how="left") if frame.height else frame.with_columns(
        _blamed=pl.lit(None, pl.String))
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(table.sheet or "rejected")
    bold, fill = Font(bold=True), PatternFill("solid", start_color="FFF2A8", end_color="FFF2A8")
    columns = [c for c in frame.columns if c != "_blamed"]

    def cell(value: object, *, header: bool = False) -> WriteOnlyCell:
        text = None if value is None else str(value)
        c = WriteOnlyCell(ws, value=text)
        if text is not None:
            c.data_type = "s"  # a string cell: never a formula
            if is_formula(text):
                c.quotePrefix = True  # as Excel stores '=x: shown and kept as text when edited
        if header:
            c.font = bold
        return c

    ws.append([cell(c, header=True) for c in columns])
    message_col = columns[-1]
    for rec in frame.iter_rows(named=True):
        out = []
        for name in columns:
            c = cell(rec[name])
            if name == rec["_blamed"]:
                c.fill = fill
                c.comment = Comment(str(rec[message_col]), "invsync")
            out.append(c)
        ws.append(out)
    tmp = path.with_suffix(".xlsx.tmp")
    try:
        wb.save(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def report_from_dict(data: dict[str, Any]) -> RunReport:
    """Rebuild a :class:`RunReport` from ``report.json`` (unknown keys are ignored)."""
    fields = set(RunReport.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in fields}
    counts = values.pop("counts", {}) or {}
    report = RunReport(**values)
    report.counts = Counts(**{k: v for k, v in counts.items()
                              if k in Counts.__dataclass_fields__})
    return report
