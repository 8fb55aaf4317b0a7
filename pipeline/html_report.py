"""Human-readable run reports: ``report.html`` and ``summary.md`` in the run folder.

``report.html`` is one self-contained page (inline CSS, no JavaScript, no external
resources) that opens from disk in any browser: the run's header, counts, rejections by
reason, batches, every rejected row (up to :data:`MAX_REJECTED_ROWS`) and the plan of
changes. ``summary.md`` is a compact Markdown summary to paste into a ticket.

Every value that came from the input file or the store is treated as hostile: it is
HTML-escaped in the page (which also carries a Content-Security-Policy that forbids
scripts, as a second line of defence) and Markdown-escaped in the summary.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.snapshot import write_atomic

MAX_REJECTED_ROWS = 5_000
"""Rejected rows shown in the HTML page; the rest are in ``rejected.csv``."""
TOP_MOVES = 20
"""How many of the biggest drops and rises the plan section lists."""
MD_TRANSACTION_IDS = 5
"""Transaction ids listed in ``summary.md`` (the total is always given)."""

PLAN_COLUMNS: dict[str, pl.DataType] = {
    "location_id": pl.Int64(), "identifier": pl.String(), "item": pl.String(),
    "old": pl.Int64(), "new": pl.Int64(), "delta": pl.Int64(), "row": pl.Int64(),
    "status": pl.String(),
}
PLAN_STATUSES = ("planned", "accepted", "refused", "unconfirmed", "not_sent")

_STATUS_CLASS = {
    "succeeded": "ok", "accepted": "ok",
    "partial": "warn", "unconfirmed": "warn",
    "failed": "bad", "refused": "bad",
    "dry_run": "info", "planned": "info",
    "not_sent": "muted", "pending": "muted",
}
_STATUS_LABEL = {"dry_run": "dry run", "not_sent": "not sent"}

_EXIT_CODES = {0: "OK", 1: "REJECTED_ROWS", 2: "RUN_FAILED", 3: "SAFETY_BRAKE", 4: "LOCKED",
               64: "USAGE", 65: "INPUT_FILE"}

# (group, [(key, label, is_a_problem_when_nonzero)])
_COUNT_GROUPS: list[tuple[str, list[tuple[str, str, bool]]]] = [
    ("File", [("rows", "rows read", False), ("blank", "blank rows skipped", False),
              ("valid", "valid rows", False), ("invalid", "invalid rows", True),
              ("merged", "duplicate rows merged", False)]),
    ("Changes", [("unchanged", "unchanged items", False), ("changed", "changed items", False),
                 ("zeroed_missing", "set to 0 (not in file)", False)]),
    ("Store", [("submitted", "submitted", False), ("accepted", "accepted", False),
               ("refused", "refused by the store", True),
               ("unconfirmed", "unconfirmed", True), ("not_sent", "not sent", True)]),
    ("Rejected", [("rejected", "rejected rows (invalid + refused)", True)]),
]
_MD_COUNTS = [("rows", "rows read", True), ("blank", "blank rows", False),
              ("valid", "valid", True), ("invalid", "invalid", False),
              ("merged", "merged duplicates", False), ("unchanged", "unchanged", True),
              ("changed", "changed", True), ("zeroed_missing", "set to 0 (not in file)", False),
              ("submitted", "submitted", True), ("accepted", "accepted", True),
              ("refused", "refused by store", True), ("unconfirmed", "unconfirmed", False),
              ("not_sent", "not sent", True), ("rejected", "rejected rows", True)]


# ---------------------------------------------------------------------------------------
# Public interface
# ---------------------------------------------------------------------------------------

def render_html(report: Mapping[str, Any], plan: pl.DataFrame | None,
                rejected: Sequence[Mapping[str, Any]]) -> str:
    """The whole self-contained ``report.html`` page for ``report`` (a report.json dict)."""
    run_id = _text(report.get("run_id"))
    status = _text(report.get("status"))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        # No script may run and nothing may be fetched, even if something slipped through.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>invsync run {_e(run_id)} \N{EM DASH} {_e(_status_label(status))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        _header(report),
        _counts_section(report),
        _reasons_section(report, rejected),
        _batches_section(report),
        _rejected_section(report, rejected),
        _plan_section(plan),
        _footer(report, plan),
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def render_markdown(report: Mapping[str, Any], plan: pl.DataFrame | None) -> str:
    """A compact Markdown summary of the run, to paste into a ticket."""
    counts: Mapping[str, Any] = report.get("counts") or {}
    exit_code = report.get("exit_code")
    title = (f"## invsync run {_md_code(report.get('run_id'))}: "
             f"**{_md(_status_label(_text(report.get('status'))))}**")
    if exit_code is not None:
        title += f" (exit code {_md(exit_code)})"
    lines = [title, ""]

    inp: Mapping[str, Any] = report.get("input") or {}
    store: Mapping[str, Any] = report.get("store") or {}
    facts = []
    if inp.get("path"):
        detail = ", ".join(_md(x) for x in (inp.get("format"), inp.get("sheet")) if x)
        sha = _text(inp.get("sha256"))
        if sha:
            detail += (", " if detail else "") + f"sha256 {_md_code(sha[:12])}…"
        facts.append(f"- Input: {_md_code(inp.get('path'))}" + (f" ({detail})" if detail else ""))
    if store.get("store_hash"):
        facts.append(f"- Store: {_md_code(store.get('store_hash'))}")
    if report.get("started_at"):
        when = _md(report.get("started_at"))
        if report.get("finished_at"):
            when += f" → {_md(report.get('finished_at'))}"
        facts.append(f"- Run: {when}")
    if report.get("resumed_from"):
        facts.append(f"- Resumed from run {_md_code(report.get('resumed_from'))}")
    if facts:
        lines += [*facts, ""]

    if report.get("error"):
        lines += [f"**Error:** {_md(report.get('error'))}", ""]
    brakes = report.get("brakes") or []
    if brakes:
        lines.append("**Safety brakes:**")
        lines += [f"- {_md_code(b.get('name'))}: {_md(b.get('message'))}" for b in brakes]
        lines.append("")

    lines += ["| Count | Value |", "| --- | ---: |"]
    for key, label, always in _MD_COUNTS:
        value = counts.get(key)
        if key == "not_sent" and report.get("status") == "dry_run":
            label = "not sent (dry run)"
        if always or value:
            lines.append(f"| {label} | {_md_cell(_num(value))} |")
    lines.append("")

    by_reason: Mapping[str, Any] = report.get("rejected_by_reason") or {}
    if by_reason:
        lines += ["### Rejected by reason", "", "| Reason | Rows |", "| --- | ---: |"]
        lines += [f"| {_md_cell(_md_code(reason))} | {_md_cell(_num(n))} |"
                  for reason, n in by_reason.items()]
        lines += ["", "Fix the rows listed in `rejected.csv` and upload it again.", ""]

    txids = [t for t in report.get("transaction_ids") or [] if t]
    if txids:
        shown = ", ".join(_md_code(t) for t in txids[:MD_TRANSACTION_IDS])
        more = len(txids) - MD_TRANSACTION_IDS
        tail = f", … and {more:,} more (all in report.json)" if more > 0 else ""
        lines += [f"**Transaction ids ({len(txids):,}):** {shown}{tail}", ""]

    if plan is not None:
        frame = _normalise_plan(plan)
        if frame.height:
            s = _plan_totals(frame)
            lines += [f"**Plan:** {s['items']:,} item(s) at {s['locations']:,} location(s): "
                      f"{s['new']:,} new, {s['changed']:,} changed, {s['to_zero']:,} to 0 "
                      f"(see `plan.csv`)", ""]
        else:
            lines += ["**Plan:** no changes.", ""]

    notes = [n for n in report.get("notes") or [] if n]
    if notes:
        lines += ["**Notes:**", *[f"- {_md(n)}" for n in notes], ""]

    folder = report.get("report_dir")
    if folder:
        lines.append(f"Report folder: {_md_code(folder)}")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_human_reports(folder: Path, report: Mapping[str, Any],
                        plan: pl.DataFrame | None) -> None:
    """Write ``folder/report.html`` and ``folder/summary.md``, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not report.get("report_dir"):
        report = {**report, "report_dir": str(folder)}
    rejected = report.get("rejected") or []
    page = render_html(report, plan, rejected)
    summary = render_markdown(report, plan)
    write_atomic(folder / "report.html", page.encode("utf-8"))
    write_atomic(folder / "summary.md", summary.encode("utf-8"))


# ---------------------------------------------------------------------------------------
# Escaping and formatting
# ---------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _e(value: Any) -> str:
    """HTML-escape anything (quotes included, so it is safe in attributes too)."""
    return html.escape(_text(value), quote=True)


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _text(value) if value is not None else "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return _text(value)


def _signed(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:+,}"
    return _num(value)


def _status_label(status: str) -> str:
    return _STATUS_LABEL.get(status, status) or "unknown"


def _badge(status: Any) -> str:
    text = _text(status)
    css = _STATUS_CLASS.get(text, "muted")  # never a raw value in an attribute
    return f'<span class="badge {css}">{_e(_status_label(text))}</span>'


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#!])")
_MD_LEADING = re.compile(r"^(\s*)([-+=>]|\d+[.)])")


def _oneline(value: Any) -> str:
    return " ".join(_text(value).split())


def _md(value: Any) -> str:
    """Markdown-escape text so that it renders as itself and on one line."""
    text = _MD_SPECIAL.sub(r"\\\1", _oneline(value))
    return _MD_LEADING.sub(lambda m: m.group(1) + "\\" + m.group(2), text)


def _md_code(value: Any) -> str:
    """Text as a Markdown code span, fenced with more backticks than it contains."""
    text = _oneline(value)
    runs = re.findall(r"`+", text)
    fence = "`" * (max((len(r) for r in runs), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_cell(text: str) -> str:
    """A table cell: a pipe would end the cell, even inside a code span."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


# ---------------------------------------------------------------------------------------
# HTML sections
# ---------------------------------------------------------------------------------------

def _table(table_id: str, headers: Sequence[tuple[str, bool]],
           rows: Iterable[Sequence[str]], *, caption: str = "") -> str:
    """A table; ``headers`` are (label, numeric); each row's cells are already HTML."""
    num_class = ' class="num"'
    head = "".join(f'<th scope="col"{num_class if num else ""}>{_e(label)}</th>'
                   for label, num in headers)
    body = []
    for cells in rows:
        tds = "".join(f'<td class="num">{c}</td>' if num else f"<td>{c}</td>"
                      for c, (_, num) in zip(cells, headers, strict=True))
        body.append(f"<tr>{tds}</tr>")
    cap = f"<caption>{caption}</caption>" if caption else ""
    return (f'<div class="scroll"><table id="{table_id}">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _header(report: Mapping[str, Any]) -> str:
    inp: Mapping[str, Any] = report.get("input") or {}
    store: Mapping[str, Any] = report.get("store") or {}
    timings: Mapping[str, Any] = report.get("timings") or {}
    meta: list[tuple[str, str]] = []

    if inp.get("path") is not None:
        meta.append(("Input", f'<code class="wrap">{_e(inp.get("path"))}</code>'))
    file_bits = []
    if inp.get("format"):
        file_bits.append(_e(_text(inp.get("format")).upper()))
    if inp.get("sheet"):
        file_bits.append(f"sheet <code>{_e(inp.get('sheet'))}</code>")
    if inp.get("encoding"):
        file_bits.append(f"encoding {_e(inp.get('encoding'))}")
    if inp.get("delimiter"):
        file_bits.append(f"delimiter <code>{_e(repr(inp.get('delimiter')))}</code>")
    if inp.get("rows") is not None:
        file_bits.append(f"{_e(_num(inp.get('rows')))} data rows")
    if file_bits:
        meta.append(("Format", ", ".join(file_bits)))
    if inp.get("sha256"):
        meta.append(("SHA-256", f'<code class="wrap">{_e(inp.get("sha256"))}</code>'))
    store_html = f"<code>{_e(store.get('store_hash') or '(none)')}</code>"
    if store.get("api_url"):
        store_html += f' <span class="muted">at {_e(store.get("api_url"))}</span>'
    meta.append(("Store", store_html))
    meta.append(("Started", _e(report.get("started_at") or "—")))
    finished = _e(report.get("finished_at") or "—")
    if isinstance(timings.get("total"), int | float):
        finished += f' <span class="muted">({_e(_num(timings["total"]))} s)</span>'
    meta.append(("Finished", finished))
    code = report.get("exit_code")
    code_html = _e(_num(code))
    if code in _EXIT_CODES:
        code_html += f' <span class="muted">{_e(_EXIT_CODES[code])}</span>'
    meta.append(("Exit code", code_html))
    if report.get("resumed_from"):
        meta.append(("Resumed from", f"<code>{_e(report.get('resumed_from'))}</code>"))
    if report.get("report_dir"):
        meta.append(("Report folder", f'<code class="wrap">{_e(report.get("report_dir"))}</code>'))

    rows = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in meta)
    out = [
        "<header>",
        f'<p class="kicker">invsync {_e(report.get("command") or "sync")} run</p>',
        f'<h1><span class="runid">{_e(report.get("run_id"))}</span> '
        f'{_badge(report.get("status"))}</h1>',
        f'<dl class="meta">{rows}</dl>',
    ]
    if report.get("error"):
        out.append(f'<div class="callout bad" id="error"><strong>Error</strong>'
                   f'<p class="pre">{_e(report.get("error"))}</p></div>')
    brakes = report.get("brakes") or []
    if brakes:
        items = "".join(f"<li><code>{_e(b.get('name'))}</code>: {_e(b.get('message'))}</li>"
                        for b in brakes)
        out.append(f'<div class="callout warn" id="brakes"><strong>Safety brakes tripped'
                   f"</strong><ul>{items}</ul></div>")
    notes = [n for n in report.get("notes") or [] if n]
    if notes:
        items = "".join(f'<li class="pre">{_e(n)}</li>' for n in notes)
        out.append(f'<div class="callout info" id="notes"><strong>Notes</strong>'
                   f"<ul>{items}</ul></div>")
    out.append(_details(report))
    out.append("</header>")
    return "\n".join(out)


def _details(report: Mapping[str, Any]) -> str:
    """Options, column mapping, timings and request counts, folded away."""
    blocks = []
    columns = (report.get("input") or {}).get("columns") or {}
    if columns:
        blocks.append(("Columns used", [(k, v) for k, v in columns.items()]))
    options = report.get("options") or {}
    if options:
        blocks.append(("Options", list(options.items())))
    timings = report.get("timings") or {}
    if timings:
        blocks.append(("Timings (s)", list(timings.items())))
    requests = report.get("requests") or {}
    if requests:
        blocks.append(("Requests", list(requests.items())))
    if not blocks:
        return ""
    html_blocks = []
    for title, pairs in blocks:
        rows = "".join(f"<dt>{_e(k)}</dt><dd><code class=\"wrap\">{_e(_plain(v))}</code></dd>"
                       for k, v in pairs)
        html_blocks.append(f"<div><h3>{_e(title)}</h3><dl class=\"meta small\">{rows}</dl></div>")
    return (f'<details id="run-details"><summary>Run details: options, columns, timings'
            f'</summary><div class="grid">{"".join(html_blocks)}</div></details>')


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "[]"
    if value is None:
        return "—"
    return _num(value)


def _counts_section(report: Mapping[str, Any]) -> str:
    counts: Mapping[str, Any] = report.get("counts") or {}
    known = {key for _, fields in _COUNT_GROUPS for key, _, _ in fields}
    groups = list(_COUNT_GROUPS)
    extra = [(k, k.replace("_", " "), False) for k in counts if k not in known]
    if extra:
        groups.append(("Other", extra))
    dry_run = report.get("status") == "dry_run"
    tables = []
    for group, fields in groups:
        rows = []
        for key, label, problem in fields:
            value = counts.get(key)
            if dry_run and key == "not_sent":
                label, problem = "not sent (dry run)", False
            flag = ' class="flag"' if problem and isinstance(value, int) and value > 0 else ""
            rows.append(f'<tr data-count="{_e(key)}"{flag}><th scope="row">{_e(label)}</th>'
                        f'<td class="num">{_e(_num(value))}</td></tr>')
        tables.append(f'<table class="counts" id="counts-{_e(group.lower())}">'
                      f"<caption>{_e(group)}</caption><tbody>{''.join(rows)}</tbody></table>")
    return (f'<section id="counts"><h2>Counts</h2><div class="grid">{"".join(tables)}'
            f"</div></section>")


def _reasons_section(report: Mapping[str, Any], rejected: Sequence[Mapping[str, Any]]) -> str:
    by_reason: Mapping[str, Any] = report.get("rejected_by_reason") or {}
    if not by_reason:
        return ('<section id="reasons"><h2>Rejected rows by reason</h2>'
                '<p class="empty">No rows were rejected.</p></section>')
    example: dict[str, Any] = {}
    for rec in rejected:
        example.setdefault(_text(rec.get("reason")), rec.get("message"))
    total = sum(n for n in by_reason.values() if isinstance(n, int))
    rows = []
    for reason, n in by_reason.items():
        share = f"{n / total:.0%}" if isinstance(n, int) and total else ""
        rows.append([f"<code>{_e(reason)}</code>", _e(_num(n)), _e(share),
                     _e(example.get(_text(reason), ""))])
    rows.append(["<strong>total</strong>", f"<strong>{_e(_num(total))}</strong>", "", ""])
    table = _table("rejected-by-reason", [("Reason", False), ("Rows", True), ("Share", True),
                                          ("Example message", False)], rows)
    return f'<section id="reasons"><h2>Rejected rows by reason</h2>{table}</section>'


def _batches_section(report: Mapping[str, Any]) -> str:
    batches: Sequence[Mapping[str, Any]] = report.get("batches") or []
    txids = [t for t in report.get("transaction_ids") or [] if t]
    intro = ""
    if report.get("status") == "dry_run" and batches:
        intro = '<p class="muted">Dry run: these batches were planned, nothing was sent.</p>'
    if not batches:
        body = '<p class="empty">No batches: nothing was sent to the store.</p>'
    else:
        with_error = any(b.get("error") for b in batches)
        headers = [("#", True), ("Location", True), ("Items", True), ("Status", False),
                   ("Attempts", True), ("Accepted", True), ("Refused", True),
                   ("Transaction ids", False)]
        if with_error:
            headers.append(("Error", False))
        rows = []
        for b in batches:
            ids = b.get("transaction_ids") or ([b["transaction_id"]]
                                               if b.get("transaction_id") else [])
            ids_html = "<br>".join(f"<code>{_e(t)}</code>" for t in ids) or \
                '<span class="muted">—</span>'
            cells = [_e(_num(b.get("index"))), _e(_num(b.get("location_id"))),
                     _e(_num(b.get("items"))), _badge(b.get("status")),
                     _e(_num(b.get("attempts"))), _e(_num(b.get("accepted"))),
                     _e(_num(b.get("refused"))), ids_html]
            if with_error:
                cells.append(_e(b.get("error") or ""))
            rows.append(cells)
        body = _table("batches", headers, rows)
    summary = ""
    if batches or txids:
        summary = (f'<p id="transaction-count">{len(batches):,} batch(es), {len(txids):,} '
                   f"transaction id(s) in total.</p>")
    listed = {t for b in batches for t in (b.get("transaction_ids") or [b.get("transaction_id")])}
    orphan = [t for t in txids if t not in listed]
    if orphan:
        summary += ('<p>Transaction ids: ' + ", ".join(f"<code>{_e(t)}</code>" for t in orphan)
                    + "</p>")
    return f'<section id="batches-section"><h2>Batches</h2>{intro}{body}{summary}</section>'


def _rejected_section(report: Mapping[str, Any],
                      rejected: Sequence[Mapping[str, Any]]) -> str:
    counts: Mapping[str, Any] = report.get("counts") or {}
    total = counts.get("rejected")
    total = total if isinstance(total, int) and total >= len(rejected) else len(rejected)
    head = f'<section id="rejected"><h2>Rejected rows <span class="count">{total:,}</span></h2>'
    if not rejected and not total:
        return head + '<p class="empty">No rows were rejected.</p></section>'
    shown = rejected[:MAX_REJECTED_ROWS]
    rows = []
    for rec in shown:
        value = rec.get("value")
        value_html = ('<span class="muted">(empty)</span>' if value is None or value == ""
                      else f'<span class="value">{_e(value)}</span>')
        rows.append([_e(_num(rec.get("row"))), _e(rec.get("column")), value_html,
                     f"<code>{_e(rec.get('reason'))}</code>", _e(rec.get("message"))])
    intro = ('<p>Row numbers are the lines of the input file. The same rows, with all their '
             'columns, are in <a href="rejected.csv">rejected.csv</a>: fix them there and '
             "upload that file again.</p>")
    table = _table("rejected-rows", [("Row", True), ("Column", False), ("Value", False),
                                     ("Reason", False), ("Message", False)], rows)
    more = total - len(shown)
    tail = ""
    if more > 0:
        tail = (f'<p class="more" id="rejected-more">Showing the first {len(shown):,} of '
                f"{total:,} rejected rows; {more:,} more are in "
                f'<a href="rejected.csv">rejected.csv</a>.</p>')
    return head + intro + table + tail + "</section>"


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------

def _normalise_plan(plan: pl.DataFrame) -> pl.DataFrame:
    """The plan with the expected columns and types (tolerates a plan.csv read back)."""
    exprs = [(pl.col(c).cast(t, strict=False) if c in plan.columns else pl.lit(None, t)).alias(c)
             for c, t in PLAN_COLUMNS.items()]
    frame = plan.select(exprs)
    return frame.with_columns(delta=pl.coalesce(pl.col("delta"), pl.col("new") - pl.col("old")))


_IS_NEW = pl.col("old").is_null()
_IS_CHANGED = pl.col("old").is_not_null() & (pl.col("new") != pl.col("old"))
_TO_ZERO = (pl.col("new") == 0) & pl.col("old").is_not_null() & (pl.col("old") != 0)


def _plan_totals(frame: pl.DataFrame) -> dict[str, int]:
    row = frame.select(
        items=pl.len(), locations=pl.col("location_id").n_unique(),
        new=_IS_NEW.sum(), changed=_IS_CHANGED.sum(), to_zero=_TO_ZERO.sum(),
    ).row(0, named=True)
    return {k: int(v or 0) for k, v in row.items()}


def _plan_by_location(frame: pl.DataFrame) -> list[dict[str, Any]]:
    per = frame.group_by("location_id").agg(
        items=pl.len(), new=_IS_NEW.sum(), changed=_IS_CHANGED.sum(), to_zero=_TO_ZERO.sum(),
        up=pl.col("delta").filter(_IS_CHANGED & (pl.col("delta") > 0)).sum(),
        down=pl.col("delta").filter(_IS_CHANGED & (pl.col("delta") < 0)).sum(),
        **{f"s_{s}": (pl.col("status") == s).sum() for s in PLAN_STATUSES},
        s_other=(~pl.col("status").is_in(list(PLAN_STATUSES))
                 | pl.col("status").is_null()).sum(),
    ).sort("location_id", nulls_last=True)
    return per.to_dicts()


def biggest_moves(plan: pl.DataFrame, n: int = TOP_MOVES) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The ``n`` biggest drops and rises among items with a known old level."""
    frame = _normalise_plan(plan).filter(_IS_CHANGED)
    drops = frame.filter(pl.col("delta") < 0).sort(
        ["delta", "location_id", "item"], descending=[False, False, False], nulls_last=True
    ).head(n)
    rises = frame.filter(pl.col("delta") > 0).sort(
        ["delta", "location_id", "item"], descending=[True, False, False], nulls_last=True
    ).head(n)
    return drops, rises


def _moves_table(table_id: str, frame: pl.DataFrame) -> str:
    rows = []
    for r in frame.iter_rows(named=True):
        rows.append([_e(_num(r["location_id"])), _e(r["identifier"]),
                     f'<span class="value">{_e(r["item"])}</span>', _e(_num(r["old"])),
                     _e(_num(r["new"])), _e(_signed(r["delta"])), _e(_num(r["row"])),
                     _badge(r["status"])])
    return _table(table_id, [("Location", True), ("Identifier", False), ("Item", False),
                             ("Old", True), ("New", True), ("Delta", True), ("Row", True),
                             ("Status", False)], rows)


def _plan_section(plan: pl.DataFrame | None) -> str:
    head = '<section id="plan"><h2>Plan of changes</h2>'
    if plan is None:
        return head + ('<p class="empty">No plan for this run (it stopped before the changes '
                       "were worked out).</p></section>")
    frame = _normalise_plan(plan)
    link = '<a href="plan.csv">plan.csv</a>'
    if frame.height == 0:
        return head + f'<p class="empty">No changes: every item already had the level in the ' \
                      f"file. ({link})</p></section>"
    t = _plan_totals(frame)
    out = [head, f"<p>{t['items']:,} item(s) at {t['locations']:,} location(s) differ from the "
                 f"last synced levels: {t['new']:,} new to the snapshot, {t['changed']:,} "
                 f"changed, of which {t['to_zero']:,} go to 0. Every item, with its old and new "
                 f"level and what became of it, is in {link}.</p>"]
    rows = []
    totals = {"items": 0, "new": 0, "changed": 0, "to_zero": 0, "up": 0, "down": 0}
    for loc in _plan_by_location(frame):
        for k in totals:
            totals[k] += int(loc[k] or 0)
        statuses = ", ".join(f"{_status_label(s)} {loc[f's_{s}']:,}" for s in PLAN_STATUSES
                             if loc[f"s_{s}"])
        if loc["s_other"]:
            statuses += (", " if statuses else "") + f"other {loc['s_other']:,}"
        rows.append([_e(_num(loc["location_id"])), _e(_num(loc["items"])), _e(_num(loc["new"])),
                     _e(_num(loc["changed"])), _e(_num(loc["to_zero"])),
                     _e(_signed(int(loc["up"] or 0))), _e(_signed(int(loc["down"] or 0))),
                     _e(statuses)])
    if len(rows) > 1:
        rows.append(["<strong>all</strong>"] + [
            f"<strong>{_e(_num(totals[k]))}</strong>" for k in ("items", "new", "changed",
                                                               "to_zero")
        ] + [f"<strong>{_e(_signed(totals[k]))}</strong>" for k in ("up", "down")] + [""])
    out.append("<h3>Per location</h3>")
    out.append(_table("plan-locations", [
        ("Location", True), ("Items", True), ("New", True), ("Changed", True), ("To 0", True),
        ("Units up", True), ("Units down", True), ("Status", False)], rows))
    drops, rises = biggest_moves(frame)
    note = ('<p class="muted">Only items with a known old level are ranked; items new to '
            "the snapshot are in plan.csv.</p>")
    out.append(f"<h3>Biggest drops <span class=\"count\">top {TOP_MOVES}</span></h3>")
    out.append(_moves_table("plan-drops", drops) if drops.height
               else '<p class="empty">No item went down.</p>')
    out.append(f"<h3>Biggest rises <span class=\"count\">top {TOP_MOVES}</span></h3>")
    out.append(_moves_table("plan-rises", rises) if rises.height
               else '<p class="empty">No item went up.</p>')
    out.append(note)
    out.append("</section>")
    return "\n".join(out)


def _footer(report: Mapping[str, Any], plan: pl.DataFrame | None) -> str:
    files = ['<a href="report.json">report.json</a>', '<a href="rejected.csv">rejected.csv</a>']
    if plan is not None:
        files.append('<a href="plan.csv">plan.csv</a>')
    files.append('<a href="summary.md">summary.md</a>')
    return (f"<footer>Files of this run: {', '.join(files)}. Report format version "
            f"{_e(report.get('version', '?'))}.</footer>")


_CSS = """
:root{color-scheme:light dark;--fg:#1f2328;--muted:#59636e;--bg:#fff;--panel:#f6f8fa;
--border:#d1d9e0;--zebra:#f6f8fa;--hover:#eef4ff;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;
--info:#0969da;--grey:#6e7781;--okbg:#dafbe1;--warnbg:#fff8c5;--badbg:#ffebe9;
--infobg:#ddf4ff}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;
--panel:#151b23;--border:#3d444d;--zebra:#151b23;--hover:#1c2a3f;--okbg:#12261e;
--warnbg:#272115;--badbg:#2d1517;--infobg:#121d2f;--ok:#3fb950;--warn:#d29922;
--bad:#f85149;--info:#4493f8}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,
"Segoe UI",Roboto,"Helvetica Neue","Noto Sans","Liberation Sans",Arial,sans-serif}
main{max-width:76rem;margin:0 auto;padding:1.5rem 1.25rem 3rem}
h1{font-size:1.6rem;margin:.1rem 0 .8rem;display:flex;flex-wrap:wrap;gap:.6rem;
align-items:center;font-weight:650}
h2{font-size:1.2rem;margin:2.2rem 0 .7rem;padding-bottom:.3rem;border-bottom:1px solid
var(--border)}
h3{font-size:1rem;margin:1.4rem 0 .5rem}
.kicker{margin:0;color:var(--muted);text-transform:uppercase;letter-spacing:.06em;
font-size:.75rem;font-weight:600}
.runid{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
code,.value{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",
monospace;font-size:.86em}
.wrap,.value{overflow-wrap:anywhere;word-break:break-word}
.value{white-space:pre-wrap}
.pre{white-space:pre-wrap;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.empty{color:var(--muted);font-style:italic}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1.2rem;margin:0}
dl.meta dt{color:var(--muted)}
dl.meta dd{margin:0;min-width:0}
dl.small{font-size:.85rem}
.badge{display:inline-block;padding:.12rem .6rem;border-radius:999px;font-size:.78rem;
font-weight:650;line-height:1.4;border:1px solid currentColor;white-space:nowrap;
font-family:system-ui,sans-serif}
h1 .badge{font-size:.95rem;padding:.2rem .8rem}
.badge.ok{color:var(--ok);background:var(--okbg)}
.badge.warn{color:var(--warn);background:var(--warnbg)}
.badge.bad{color:var(--bad);background:var(--badbg)}
.badge.info{color:var(--info);background:var(--infobg)}
.badge.muted{color:var(--grey);background:var(--panel)}
.callout{margin:1rem 0 0;padding:.7rem 1rem;border-left:4px solid;border-radius:6px}
.callout p,.callout ul{margin:.3rem 0 0}
.callout ul{padding-left:1.2rem}
.callout.bad{border-color:var(--bad);background:var(--badbg)}
.callout.warn{border-color:var(--warn);background:var(--warnbg)}
.callout.info{border-color:var(--info);background:var(--infobg)}
details{margin-top:1rem;border:1px solid var(--border);border-radius:6px;padding:.4rem .8rem}
summary{cursor:pointer;color:var(--muted);font-size:.9rem}
details h3{margin:.8rem 0 .3rem;font-size:.9rem}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:1rem;
align-items:start}
.scroll{overflow-x:auto;border:1px solid var(--border);border-radius:6px}
table{border-collapse:collapse;width:100%;font-size:.9rem}
caption{text-align:left;font-weight:650;padding:.2rem 0 .4rem}
th,td{padding:.38rem .7rem;text-align:left;vertical-align:top;border-bottom:1px solid
var(--border)}
tbody tr:last-child>*{border-bottom:0}
thead th{background:var(--panel);font-weight:600;white-space:nowrap;position:sticky;top:0}
tbody tr:nth-child(even){background:var(--zebra)}
tbody tr:hover{background:var(--hover)}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.counts{border:1px solid var(--border);border-radius:6px;border-collapse:separate;
border-spacing:0}
table.counts th{font-weight:400;color:var(--fg)}
table.counts tr.flag td{color:var(--bad);font-weight:700}
.count{font-size:.8rem;font-weight:600;color:var(--muted);background:var(--panel);
border:1px solid var(--border);border-radius:999px;padding:.05rem .5rem;vertical-align:middle}
.more{font-weight:600}
footer{margin-top:2.5rem;padding-top:.8rem;border-top:1px solid var(--border);
color:var(--muted);font-size:.85rem}
a{color:var(--info)}
""".strip()
