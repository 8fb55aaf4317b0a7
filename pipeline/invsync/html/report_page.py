"""Human-readable run reports: ``report.html`` and ``summary.md`` in the run folder.

``report.html`` is one self-contained page (the project's stylesheet inline, allowed by its
hash; no JavaScript, no external resources) that opens from disk in any browser: the run's
header, counts, rejections by reason, batches, every rejected row (up to
:data:`MAX_REJECTED_ROWS`) and the plan of changes. ``summary.md`` is a compact Markdown
summary to paste into a ticket.

Every value that came from the input file or the store is treated as hostile: it is
HTML-escaped in the page by the shared Jinja2 templates of :mod:`invsync.html.render`
(autoescape; the page also carries a Content-Security-Policy that forbids scripts, as a
second line of defence) and Markdown-escaped in the summary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from invsync.disk import write_atomic
from invsync.tables import LEGACY_PLAN_COLUMNS, PLAN_COLUMNS, PLAN_STATUSES, goes_to_zero

MAX_REJECTED_ROWS = 5_000
"""Rejected rows shown in the HTML page; the rest are in ``rejected.csv``."""
TOP_MOVES = 20
"""How many of the biggest drops and rises the plan section lists."""
MD_TRANSACTION_IDS = 5
"""Transaction ids listed in ``summary.md`` (the total is always given)."""


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
    """The whole self-contained ``report.html`` page for ``report`` (a report.json dict).

    Rendered from ``pipeline/html/templates/report.html`` with the upload page's look.
    """
    from invsync.html.render import csp_hash, render, stylesheet

    status = _text(report.get("status"))
    css = stylesheet()
    return render("report.html", **_page_context(report, plan, rejected), r=report,
                  run_id=_text(report.get("run_id")), status=status, css=css,
                  style_hash=csp_hash(css))


def render_markdown(report: Mapping[str, Any], plan: pl.DataFrame | None) -> str:
    """A compact Markdown summary of the run, to paste into a ticket."""
    counts: Mapping[str, Any] = report.get("counts") or {}
    exit_code = report.get("exit_code")
    title = (f"## invsync run {_md_code(report.get('run_id'))}: "
             f"**{_md(_status_label(_text(report.get('status'))))}**")
    if exit_code is not None:
        title += f" (exit code {_md(exit_code)})"
    lines = [title, ""]
    from invsync.rules.messages import outcome_sentence

    rejected_file = _text(report.get("rejected_file")) or None
    lines += [_md(outcome_sentence(counts, _text(report.get("status")), rejected_file)), ""]

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


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _text(value) if value is not None else "—"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return _text(value)


def _status_label(status: str) -> str:
    return _STATUS_LABEL.get(status, status) or "unknown"


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
# What report.html shows (the markup is in the template)
# ---------------------------------------------------------------------------------------

def _page_context(report: Mapping[str, Any], plan: pl.DataFrame | None,
                  rejected: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    inp: Mapping[str, Any] = report.get("input") or {}
    timings: Mapping[str, Any] = report.get("timings") or {}
    file_bits: list[tuple[str, Any]] = []
    for key in ("format", "sheet", "encoding"):
        if inp.get(key):
            file_bits.append((key, _text(inp.get(key))))
    if inp.get("delimiter"):
        file_bits.append(("delimiter", repr(inp.get("delimiter"))))
    if inp.get("rows") is not None:
        file_bits.append(("rows", inp.get("rows")))
    code = report.get("exit_code")
    total = timings.get("total")
    counts: Mapping[str, Any] = report.get("counts") or {}
    rejected_total = counts.get("rejected")
    if not (isinstance(rejected_total, int) and rejected_total >= len(rejected)):
        rejected_total = len(rejected)
    shown = list(rejected[:MAX_REJECTED_ROWS])
    batches = _batches(report)
    txids = [t for t in report.get("transaction_ids") or [] if t]
    listed = {t for b in batches for t in b["ids"]}
    reasons, reasons_total = _reasons(report, rejected)
    from invsync.rules.messages import outcome_sentence

    rejected_file = _text(report.get("rejected_file")) or None
    if rejected_file not in (None, "rejected.xlsx", "rejected.csv"):
        rejected_file = None
    return {
        "inp": inp, "store": report.get("store") or {}, "origin": report.get("origin") or {},
        "file_bits": file_bits,
        "total_s": total if isinstance(total, int | float) else None,
        "exit_name": _EXIT_CODES.get(code) if isinstance(code, int) else None,
        "brakes": report.get("brakes") or [],
        "notes": [n for n in report.get("notes") or [] if n],
        "details": _details(report), "count_groups": count_groups(report),
        "reasons": reasons, "reasons_total": reasons_total,
        "rejected_file": rejected_file or "rejected.csv",
        "has_xlsx": rejected_file == "rejected.xlsx",
        "outcome": outcome_sentence(counts, _text(report.get("status")), rejected_file),
        "dry_run": report.get("status") == "dry_run",
        "batches": batches, "with_error": any(b.get("error") for b in batches),
        "txids": txids, "orphan_txids": [t for t in txids if t not in listed],
        "rejected": shown, "rejected_total": rejected_total,
        "rejected_more": rejected_total - len(shown),
        "plan": plan_context(plan), "top": TOP_MOVES,
    }


def _details(report: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Options, column mapping, timings and request counts, folded away in the page."""
    blocks = []
    for title, value in (("Columns used", (report.get("input") or {}).get("columns")),
                         ("Options", report.get("options")), ("Timings (s)", report.get("timings")),
                         ("Requests", report.get("requests"))):
        if value:
            blocks.append((title, [(_text(k), _plain(v)) for k, v in value.items()]))
    return blocks


def _plain(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items()) or "{}"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "[]"
    if value is None:
        return "—"
    return _num(value)


def count_groups(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The counts as labelled groups; a problem count above 0 is flagged."""
    counts: Mapping[str, Any] = report.get("counts") or {}
    known = {key for _, fields in _COUNT_GROUPS for key, _, _ in fields}
    groups = list(_COUNT_GROUPS)
    extra = [(k, k.replace("_", " "), False) for k in counts if k not in known]
    if extra:
        groups.append(("Other", extra))
    dry_run = report.get("status") == "dry_run"
    out = []
    for group, fields in groups:
        rows = []
        for key, label, problem in fields:
            value = counts.get(key)
            if dry_run and key == "not_sent":
                label, problem = "not sent (dry run)", False
            rows.append({"key": key, "label": label, "value": value,
                         "flag": problem and isinstance(value, int) and value > 0})
        out.append({"name": group, "rows": rows})
    return out


def _reasons(report: Mapping[str, Any], rejected: Sequence[Mapping[str, Any]]
             ) -> tuple[list[tuple[str, Any, str, Any, str]], int]:
    """(reason code, rows, share, example "row N: message", kind of problem) per kind."""
    from invsync.rules.messages import problem_groups

    by_reason: Mapping[str, Any] = report.get("rejected_by_reason") or {}
    total = sum(n for n in by_reason.values() if isinstance(n, int))
    rows = []
    for g in problem_groups({_text(k): v for k, v in by_reason.items()}, rejected):
        n = by_reason.get(g.code)
        share = f"{n / total:.0%}" if isinstance(n, int) and total else ""
        example = g.example if g.example_row is None else f"row {_num(g.example_row)}: {g.example}"
        rows.append((g.code, n, share, example, g.kind))
    return rows, total


def _batches(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for b in report.get("batches") or []:
        ids = b.get("transaction_ids") or ([b["transaction_id"]] if b.get("transaction_id")
                                           else [])
        out.append({**b, "ids": [t for t in ids if t]})
    return out


# ---------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------

def _normalise_plan(plan: pl.DataFrame) -> pl.DataFrame:
    """The plan with the expected columns and types (tolerates a plan.csv read back)."""
    plan = plan.rename({k: v for k, v in LEGACY_PLAN_COLUMNS.items()
                        if k in plan.columns and v not in plan.columns})
    exprs = [(pl.col(c).cast(t, strict=False) if c in plan.columns else pl.lit(None, t)).alias(c)
             for c, t in PLAN_COLUMNS.items()]
    frame = plan.select(exprs)
    return frame.with_columns(delta=pl.coalesce(pl.col("delta"),
                                                 pl.col("after") - pl.col("before")))


_IS_NEW = pl.col("before").is_null()
_IS_CHANGED = pl.col("before").is_not_null() & (pl.col("after") != pl.col("before"))
_TO_ZERO = goes_to_zero(pl.col("after"), pl.col("before"))


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


def plan_context(plan: pl.DataFrame | None) -> dict[str, Any] | None:
    """What the page shows of a plan: totals, per location, the biggest drops and rises."""
    if plan is None:
        return None
    frame = _normalise_plan(plan)
    if frame.height == 0:
        return {"items": 0}
    out: dict[str, Any] = dict(_plan_totals(frame))
    rows = []
    totals = {"items": 0, "new": 0, "changed": 0, "to_zero": 0, "up": 0, "down": 0}
    for loc in _plan_by_location(frame):
        for k in totals:
            totals[k] += int(loc[k] or 0)
        statuses = ", ".join(f"{_status_label(s)} {loc[f's_{s}']:,}" for s in PLAN_STATUSES
                             if loc[f"s_{s}"])
        if loc["s_other"]:
            statuses += (", " if statuses else "") + f"other {loc['s_other']:,}"
        rows.append({**loc, "up": int(loc["up"] or 0), "down": int(loc["down"] or 0),
                     "statuses": statuses})
    out["by_location"] = rows
    out["all"] = totals if len(rows) > 1 else None
    drops, rises = biggest_moves(frame)
    # The page's tables still name the levels old/new (the template's words).
    legacy = [pl.col("before").alias("old"), pl.col("after").alias("new")]
    out["drops"] = drops.with_columns(legacy).to_dicts()
    out["rises"] = rises.with_columns(legacy).to_dicts()
    return out
