"""Stage 5: the run report, written as a folder per run.

``<report-dir>/<run_id>/report.json`` is the machine-readable record; ``rejected.csv``
holds the rejected rows with their original columns and cell text plus ``row``,
``reason`` and ``message``, ready to be fixed and uploaded again. Cells that a
spreadsheet program would evaluate as a formula are escaped.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as futures_wait
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import polars as pl

from invsync.disk import write_atomic
from invsync.errors import InternalError
from invsync.redact import redact_data
from invsync.stages.ingest import BLANKS, FORMULA, StockTable
from invsync.tables import PLAN_COLUMNS, READ_AT, ROW

REPORT_VERSION = 1
MAX_REPORT_CHANGES = 1000
"""Planned items listed in ``report.json`` (``changes``); ``plan.csv`` holds them all."""
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
    location_unchecked: int = 0
    """Valid rows kept out of an offline plan: they name their location, which only the
    store's list of locations can check."""
    unchecked: int = 0
    """Rows read that the run stopped before counting (interrupted, or failed at the store's
    locations, identity or live reads, or at the journal's start): every other figure is 0
    then; 0 on a run that counted its rows."""

    def check(self) -> None:
        """Raise :class:`~invsync.errors.InternalError` if the counts do not add up.

        Each figure is counted from its own source (the frames of each stage, the batch
        results), so a bug in any of them shows here as a broken identity.
        """
        problems = [f"{name} < 0" for name, value in asdict(self).items() if value < 0]
        if self.rows != self.valid + self.invalid + self.unchecked:
            problems.append("rows != valid + invalid + unchecked")
        if self.valid - self.merged != self.unchanged + self.changed + self.location_unchecked:
            problems.append("valid - merged != unchanged + changed + location_unchecked")
        if self.changed + self.zeroed_missing != self.submitted + self.not_sent:
            problems.append("changed + zeroed_missing != submitted + not_sent")
        if self.submitted != self.accepted + self.refused + self.unconfirmed:
            problems.append("submitted != accepted + refused + unconfirmed")
        if self.rejected != self.invalid + self.refused:
            problems.append("rejected != invalid + refused")
        if problems:
            raise InternalError(f"internal error: the run's counts do not add up "
                                f"({'; '.join(problems)}): {self}")


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
    """The interrupted (or killed) run this run finished: its journal or its lock."""
    resumed_from_no_report: bool = False
    """The run in ``resumed_from`` stopped before writing its report (``kill -9``, a power
    cut): no run folder holds it, this run's report is its record."""
    reverted_from: str | None = None
    """The run whose replaced levels this ``revert`` run put back."""
    error: str | None = None
    error_kind: str | None = None
    """What failed (see :attr:`invsync.errors.InvsyncError.kind`; ``interrupted`` for
    SIGINT/SIGTERM): ``store`` means the file may be fine and a later run may succeed."""
    exit_code: int = 0
    report_dir: str = ""
    origin: dict[str, Any] = field(default_factory=dict)
    """Who started the run and from where (the upload page: ``source``, ``user``, ``filename``)."""
    rejected_file: str | None = None
    """The rejected rows' file a person fixes (``rejected.xlsx`` or ``rejected.csv``)."""
    sold_since: dict[str, Any] | None = None
    """With an as-of time: when, orders read and counted, units subtracted, requests."""
    run_seq: int | None = None
    """This run's number among the runs of its store and profile (from 1, counted under
    the store's lock): what ``revert last`` and ``verify last`` order runs by."""
    baseline: str | None = None
    """What the plan was made against: ``live`` (the store's levels, read at
    ``read_at``), ``snapshot``, ``none`` (``--full``) or ``plan`` (a reviewed plan)."""
    read_at: str | None = None
    """When the live levels were read (UTC), if they were."""
    plan_binding: dict[str, Any] = field(default_factory=dict)
    """The store the plan is bound to: ``api_host`` (normalised), ``store_hash``,
    ``profile``, ``locations``. ``sync --plan-file`` refuses (exit 64) to push the
    plan.csv of this folder to any other."""
    changes: list[dict[str, Any]] = field(default_factory=list)
    """Per planned item (the first :data:`MAX_REPORT_CHANGES`; plan.csv holds every one):
    ``location_id``, ``identifier``, ``item``, ``before``, ``after``, ``read_at``,
    ``status``."""
    plan: pl.DataFrame | None = field(default=None, repr=False, compare=False)
    """The plan frame (what ``plan.csv`` holds), for the caller; not part of ``report.json``."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as ``report.json`` holds them (a new dict; its lists are the report's
        own, not deep copies: :func:`~invsync.redact.redact_data` copies them anyway)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "plan"}
        data["counts"] = asdict(self.counts)
        data["version"] = REPORT_VERSION
        return data


NO_REPORT = "(it stopped before writing its report)"
"""Follows ``finished=RUN_ID`` when that run has no run folder (it was killed)."""


def rows_unchecked(report: RunReport) -> int | None:
    """The file's rows, when the run stopped after reading the file but before checking its
    rows (the store failed at its first read, Ctrl-C): its counts are all 0 then, and
    "rows read 0" would say the file was empty."""
    if report.counts.unchecked:
        return report.counts.unchecked
    # A report written before ``counts.unchecked``: its counts are all 0 then.
    read = report.input.get("rows")
    if report.status not in ("failed", "interrupted") or not isinstance(read, int) or not read:
        return None
    return None if any(asdict(report.counts).values()) else read


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
    parts += [f"rows={rows_unchecked(report) or c.rows}",
              f"would_update={sent}" if report.status == "dry_run" else f"updated={c.accepted}",
              f"unchanged={c.unchanged}", f"rejected={c.rejected}", f"refused={c.refused}"]
    if (c.unconfirmed or c.not_sent) and report.status != "dry_run":
        parts += [f"unconfirmed={c.unconfirmed}", f"not_sent={c.not_sent}"]
    retries = int(report.requests.get("retries", 0))
    if retries:
        causes = ", ".join(f"{k.removeprefix('retries_')}: {v}" for k, v in report.requests.items()
                           if k.startswith("retries_"))
        parts.append(f"retries={retries} ({causes})")
    # The interrupted run it completed: one that failed or was stopped again completed
    # nothing (the journal is kept for the next run, which finishes it).
    if report.resumed_from and report.status in ("succeeded", "partial"):
        parts.append(f"finished={report.resumed_from}")
        if report.resumed_from_no_report:
            parts.append(NO_REPORT)
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


_warm: list[bool] = []
"""Set once the report page was warmed up in this process (a server runs many syncs)."""


def warm_up() -> None:
    """Import and compile what writing the run folder needs (the page templates, Jinja2),
    so that a run can do it in the background while the file is read or the store answers;
    a failure here only leaves the work for the report itself."""
    if _warm:
        return
    try:
        from invsync.html.report_page import warm_up as warm_page

        warm_page()
        _warm.append(True)
    except Exception as exc:  # never fails a run: the report compiles what it needs then
        logging.getLogger("invsync.report").debug("report warm-up skipped: %s", exc)


def rejected_records(rejected: pl.DataFrame) -> list[dict[str, Any]]:
    """The rejected rows as JSON records (``row`` instead of the internal column)."""
    return rejected.rename({ROW: "row"}).sort("row").to_dicts()


def plan_frame(changes: pl.DataFrame, status: pl.Expr | str) -> pl.DataFrame:
    """The change set as ``plan.csv`` rows: location, item, before, after, delta, row, status,
    read_at.

    ``identifier``/``item`` name each item as the request does (as its row named it).
    """
    status_expr = pl.lit(status) if isinstance(status, str) else status
    plan = changes.select(
        pl.col("location_id"), pl.col("address").alias("identifier"),
        pl.col("address_key").alias("item"),
        pl.col("old_quantity").alias("before"), pl.col("quantity").alias("after"),
        (pl.col("quantity") - pl.col("old_quantity").fill_null(0)).alias("delta"),
        pl.col(ROW).alias("row"), status_expr.alias("status"),
        (pl.col(READ_AT) if READ_AT in changes.columns
         else pl.lit(None, pl.String)).alias(READ_AT),
    )
    return plan.cast(PLAN_COLUMNS)  # type: ignore[arg-type]  # dict is invariant


def change_records(plan: pl.DataFrame) -> list[dict[str, Any]]:
    """The first :data:`MAX_REPORT_CHANGES` items of a plan frame, for ``report.json``."""
    return plan.head(MAX_REPORT_CHANGES).select(
        "location_id", "identifier", "item", "before", "after", READ_AT, "status").to_dicts()


@dataclass(frozen=True)
class PlanAhead:
    """A run folder's ``plan.csv`` being written ahead (:func:`write_plan_ahead`)."""

    plan: pl.DataFrame
    written: Future[None]


def write_plan_ahead(folder: Path, plan: pl.DataFrame) -> PlanAhead:
    """Start writing ``folder/plan.csv`` (making ``folder``) in a worker thread, as soon as
    the plan is made: its writing and syncing to disk go on while the rest of the report
    is made. Hand it to :func:`write_run_folder`, which waits for it."""
    from concurrent.futures import ThreadPoolExecutor

    def write() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _write_plan_csv(folder / "plan.csv", plan)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invsync-plan")
    written = pool.submit(write)
    pool.shutdown(wait=False)
    return PlanAhead(plan, written)


def write_run_folder(
    report: RunReport, folder: Path, table: StockTable | None, rejected: pl.DataFrame | None,
    plan: pl.DataFrame | None = None, *, ahead: PlanAhead | None = None,
) -> Path:
    """Write ``report.json``, ``rejected.csv``, ``plan.csv`` and the human reports.

    ``report.json`` is written once the row files are, the human reports after it (a
    folder with a ``report.json`` has its row files). The files are written (and synced
    to disk) in worker threads while the next one's text is made: every write is done, or
    has failed, when this returns or raises. ``ahead``: ``plan.csv`` written ahead (used
    if it is of this very ``plan``; else waited for, and written again).
    """
    if ahead is not None and ahead.plan is not plan:
        futures_wait([ahead.written])  # another plan's file: replaced below, never after
        ahead = None
    folder.mkdir(parents=True, exist_ok=True)
    report.report_dir = str(folder)
    named = report.rejected_file
    if table is not None and rejected is not None and rejected.height:
        report.rejected_file = "rejected.xlsx" if table.format == "xlsx" else "rejected.csv"
    writes = _Writes()
    try:
        facts = writes.make(_plan_facts, plan)  # the page's view of the plan, meanwhile
        if table is not None and rejected is not None:
            writes.add(write_rejected_csv, folder / "rejected.csv", table, rejected)
            if table.format == "xlsx" and rejected.height:
                writes.add(write_rejected_xlsx, folder / "rejected.xlsx", table, rejected)
        if ahead is not None:
            writes.track(ahead.written)
        elif plan is not None:
            writes.add(_write_plan_csv, folder / "plan.csv", plan)
        data = redact_data(report.to_dict())  # the last pass: no credential is ever written
        text = report_json(data)
        try:
            writes.done()
        except BaseException:
            report.rejected_file = named  # a rejected rows' file may not be there
            raise
        writes.add(write_atomic, folder / "report.json", text)
        pages = _human_reports(folder, data, plan, facts)
        writes.done()
        for name, page in pages.items():
            writes.add(write_atomic, folder / name, page)
        try:
            writes.done()
        except Exception as exc:  # the JSON report is the record; a page never fails a run
            logging.getLogger("invsync.report").warning("report.html not written: %s", exc)
    finally:
        writes.close()
        if ahead is not None:
            futures_wait([ahead.written])  # (a failure before it was tracked)
    return folder


def _write_plan_csv(path: Path, plan: pl.DataFrame) -> None:
    escaped = plan.with_columns(escape_formulas(pl.col(c)).alias(c)
                                for c in ("identifier", "item"))
    write_atomic(path, escaped.write_csv)


def _plan_facts(plan: pl.DataFrame | None) -> Any:
    from invsync.html.report_page import plan_facts

    return plan_facts(plan)


def _human_reports(folder: Path, data: dict[str, Any], plan: pl.DataFrame | None,
                   facts: Future[Any]) -> dict[str, bytes]:
    """``report.html`` and ``summary.md``'s bytes; none if they cannot be made."""
    try:
        from invsync.html.report_page import human_reports

        return human_reports(folder, data, plan, facts.result())
    except Exception as exc:  # the JSON report is the record; a page must never fail a run
        logging.getLogger("invsync.report").warning("report.html not written: %s", exc)
        return {}


class _Writes:
    """File writes done in worker threads (a file's fsync lets the interpreter go: the
    next file's text is made meanwhile)."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="invsync-write")
        self._pending: list[Future[None]] = []

    def add(self, write: Callable[..., None], *args: Any) -> None:
        """Write (``write(*args)``) in a worker thread; :meth:`done` waits for it."""
        self._pending.append(self._pool.submit(write, *args))

    def track(self, written: Future[None]) -> None:
        """A write already under way elsewhere: :meth:`done` waits for it too."""
        self._pending.append(written)

    def make(self, work: Callable[..., T], *args: Any) -> Future[T]:
        """``work(*args)`` in a worker thread (not one of the writes); its future."""
        return self._pool.submit(work, *args)

    def done(self) -> None:
        """Wait for every write so far; raise the first one's error (in the order added)."""
        pending, self._pending = self._pending, []
        futures_wait(pending)
        for future in pending:
            future.result()

    def close(self) -> None:
        """Wait for every write (none goes on once the caller has failed or returned)."""
        self._pool.shutdown(wait=True)


T = TypeVar("T")

_ONE_LINE_LISTS = ("changes", "rejected", "batches")
"""Lists of records in ``report.json`` written one record per line (up to thousands each)."""


def report_json(data: dict[str, Any]) -> bytes:
    """``report.json``'s text: indented like ``json.dumps(indent=2)``, except that each record
    of the long lists (:data:`_ONE_LINE_LISTS`) is one line. The same JSON, but encoded by the
    C encoder (an indented dump runs the pure-Python one: ~5x slower for 1,000 changes)."""
    parts = []
    for key, value in data.items():
        if key in _ONE_LINE_LISTS and isinstance(value, list) and value:
            lines = ",\n    ".join(json.dumps(v, ensure_ascii=False) for v in value)
            text = f"[\n    {lines}\n  ]"
        else:  # JSON strings hold no raw newline: re-indenting the lines is safe
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        parts.append(f"  {json.dumps(key, ensure_ascii=False)}: {text}")
    return ("{\n" + ",\n".join(parts) + "\n}").encode() if parts else b"{}"


def rejected_frame(table: StockTable, rejected: pl.DataFrame) -> pl.DataFrame:
    """Original columns with their original text, plus ``row``, ``reason``, ``message``."""
    ours = rejected.select(ROW, pl.col("reason").alias("__reason"),
                           pl.col("message").alias("__message"))
    # No rejected row (most runs): the file's rows are not joined to find none.
    frame = table.frame if rejected.height else table.frame.clear()
    originals = frame.join(ours, on=ROW, how="inner")
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
    """Write the re-uploadable rejected rows, headers and cells formula-escaped.

    In the input's delimiter and in UTF-8 with a BOM, so that a spreadsheet program opens
    it with the right columns and characters.
    """
    import csv

    frame = rejected_frame(table, rejected)
    escaped = frame.select(escape_formulas(pl.col(c)).alias(c) for c in frame.columns)
    delimiter = table.delimiter if table.delimiter and len(table.delimiter) == 1 else ","

    def write(fh: IO[bytes]) -> None:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        text.write("\ufeff")  # the BOM: Excel then reads UTF-8, not the local code page
        # The header row too: a file's header is its text, and may be hostile.
        csv.writer(text, delimiter=delimiter, lineterminator="\n").writerow(
            escape_formula(c) for c in frame.columns)
        text.flush()
        text.detach()
        escaped.write_csv(fh, include_header=False, quote_style="necessary",
                          separator=delimiter)

    write_atomic(path, write)


_PLAIN_NUMBER = r"^(?:-?[\d.]{1,16})$"
_PLAIN_NUMBER_SHAPE = r"^-?(?:0|[1-9]\d*)(?:\.\d+)?$"
"""Text a number cell gives back exactly: no leading zeros, no exponent, at most 15
digits (both patterns must match)."""
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}(?: 00:00:00)?$"
_ISO_DATETIME = r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$"
_XLSX_MAX_WIDTH = 60


def _typed(text: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(number, date, datetime) of a text column where the text is exactly that, else null."""
    shaped = text.str.contains(_PLAIN_NUMBER) & text.str.contains(_PLAIN_NUMBER_SHAPE) \
        & ~text.str.contains(r"^-0(?:\.0*)?$")  # "-0" would come back as 0
    number = pl.when(shaped).then(text.cast(pl.Float64, strict=False))
    date = pl.when(text.str.contains(_ISO_DATE)).then(
        text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
    stamp = pl.when(text.str.contains(_ISO_DATETIME) & ~text.str.contains(_ISO_DATE)).then(
        text.str.replace("T", " ").str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False))
    return number, date, stamp


def write_rejected_xlsx(path: Path, table: StockTable, rejected: pl.DataFrame) -> None:
    """The rejected rows as a workbook a person fixes and uploads again.

    A ``Problem`` column first ("row 11 of your file: ..."), then the original columns
    with the offending cell highlighted, then ``row`` and ``reason``. Numbers stay numbers
    and dates stay dates (identifier columns stay text: ``00123`` is a SKU, not 123); text
    a spreadsheet would evaluate is a string cell with a quote prefix, never a formula.
    Written in openpyxl's write-only mode, row by row, so memory stays flat.
    """
    from openpyxl import Workbook
    from openpyxl.cell import Cell, WriteOnlyCell
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    frame = rejected_frame(table, rejected)
    headers = list(table.headers)
    row_col, reason_col, message_col = frame.columns[len(headers):len(headers) + 3]
    problem = "invsync_problem" if "Problem" in headers else "Problem"
    blamed = rejected.select(pl.col(ROW).alias(row_col), pl.col("column").alias("__blamed"))
    frame = frame.join(blamed, on=row_col, how="left", maintain_order="left")
    text_only = {table.mapping[c] for c in ("sku",) if c in table.mapping}
    # Every cell's typed value, vectorised: one column per kind, picked per cell below.
    parts: list[pl.Expr] = [
        pl.format("row {} of your file: {}", pl.col(row_col), pl.col(message_col)).alias(problem),
    ]
    for i, name in enumerate(headers):
        text = pl.col(name)
        risky = text.str.contains(FORMULA) & ~text.str.strip_chars(BLANKS).str.contains(
            _NUMBER.pattern)
        parts.append(text.alias(f"t{i}"))
        parts.append(risky.fill_null(False).alias(f"f{i}"))
        if name not in text_only:
            number, date, stamp = _typed(text)
            parts += [number.alias(f"n{i}"), date.alias(f"d{i}"), stamp.alias(f"s{i}")]
    parts += [pl.col(row_col), pl.col(reason_col), pl.col("__blamed")]
    cells = frame.select(parts)

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(table.sheet or "rejected")
    columns = [problem, *headers, row_col, reason_col]
    sample = cells.head(200)
    for j, name in enumerate(columns):
        key = problem if j == 0 else (f"t{j - 1}" if 0 < j <= len(headers) else name)
        longest = sample.select(pl.col(key).cast(pl.String).str.len_chars().max()).item() or 0
        want = max(len(str(name)) + 2, min(int(longest) + 2, 18 if j else _XLSX_MAX_WIDTH))
        ws.column_dimensions[get_column_letter(j + 1)].width = min(want, _XLSX_MAX_WIDTH)
    bold = Font(bold=True)
    fill = PatternFill("solid", start_color="FFF2A8", end_color="FFF2A8")

    def text_cell(value: str, risky: bool) -> object:
        if not risky and not value.startswith("="):
            return value
        c = WriteOnlyCell(ws, value=value)
        c.data_type = "s"  # a string cell: never a formula
        c.quotePrefix = True  # as Excel stores '=x: shown and kept as text when edited
        return c

    header_cells = []
    for name in columns:
        c = WriteOnlyCell(ws, value=str(name))
        c.data_type = "s"
        c.quotePrefix = is_formula(str(name))
        c.font = bold
        header_cells.append(c)
    ws.append(header_cells)
    typed = [name not in text_only for name in headers]
    for rec in cells.iter_rows(named=True):
        out: list[object] = [rec[problem]]
        for i, name in enumerate(headers):
            value: object = rec[f"t{i}"]
            if value is not None:
                if typed[i] and rec[f"n{i}"] is not None:
                    number = rec[f"n{i}"]
                    value = int(number) if number.is_integer() and "." not in rec[f"t{i}"] \
                        else number
                elif typed[i] and rec[f"d{i}"] is not None:
                    value = rec[f"d{i}"]
                elif typed[i] and rec[f"s{i}"] is not None:
                    value = rec[f"s{i}"]
                else:
                    value = text_cell(str(value), rec[f"f{i}"])
            if name == rec["__blamed"]:
                c = value if isinstance(value, Cell) else WriteOnlyCell(ws, value=value)
                c.fill = fill
                value = c
            out.append(value)
        out += [rec[row_col], rec[reason_col]]
        ws.append(out)
    write_atomic(path, wb.save)


def report_from_dict(data: dict[str, Any]) -> RunReport:
    """Rebuild a :class:`RunReport` from ``report.json`` (unknown keys are ignored)."""
    fields = set(RunReport.__dataclass_fields__)
    values = {k: v for k, v in data.items() if k in fields}
    counts = values.pop("counts", {}) or {}
    report = RunReport(**values)
    report.counts = Counts(**{k: v for k, v in counts.items()
                              if k in Counts.__dataclass_fields__})
    return report
