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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from invsync.disk import write_atomic
from invsync.errors import ExitCode
from invsync.tables import LEGACY_PLAN_COLUMNS, PLAN_COLUMNS, PLAN_STATUSES, goes_to_zero

MAX_REJECTED_ROWS = 5_000
"""Rejected rows shown in the HTML page; the rest are in ``rejected.csv``."""
TOP_MOVES = 20
"""How many of the biggest drops and rises the plan section lists."""
MD_TRANSACTION_IDS = 5
"""Transaction ids listed in ``summary.md`` (the total is always given)."""


# (group, [(key, label, is_a_problem_when_nonzero)])
_COUNT_GROUPS: list[tuple[str, list[tuple[str, str, bool]]]] = [
    ("File", [("rows", "rows read", False), ("blank", "blank rows skipped", False),
              ("valid", "valid rows", False), ("invalid", "invalid rows", True),
              ("merged", "duplicate rows merged", False),
              ("location_unchecked", "rows kept for the store to check their location", False),
              ("unchecked", "rows not checked (the run stopped first)", True)]),
    ("Changes", [("unchanged", "unchanged items", False), ("changed", "changed items", False),
                 ("zeroed_missing", "set to 0 (not in file)", False)]),
    ("Store", [("submitted", "submitted", False), ("accepted", "accepted", False),
               ("refused", "refused by the store", True),
               ("unconfirmed", "unconfirmed", True), ("not_sent", "not sent", True)]),
    ("Rejected", [("rejected", "rejected rows (invalid + refused)", True)]),
]
_MD_COUNTS = [("rows", "rows read", True), ("blank", "blank rows", False),
              ("valid", "valid", True), ("invalid", "invalid", False),
              ("merged", "merged duplicates", False),
              ("location_unchecked", "kept for the store to check their location", False),
              ("unchecked", "not checked (the run stopped first)", False),
              ("unchanged", "unchanged", True),
              ("changed", "changed", True), ("zeroed_missing", "set to 0 (not in file)", False),
              ("submitted", "submitted", True), ("accepted", "accepted", True),
              ("refused", "refused by store", True), ("unconfirmed", "unconfirmed", False),
              ("not_sent", "not sent", True), ("rejected", "rejected rows", True)]


# ---------------------------------------------------------------------------------------
# Public interface
# ---------------------------------------------------------------------------------------

def render_html(report: Mapping[str, Any], plan: pl.DataFrame | None,
                rejected: Sequence[Mapping[str, Any]], facts: PlanFacts | None = None) -> str:
    """The whole self-contained ``report.html`` page for ``report`` (a report.json dict).

    Rendered from ``pipeline/html/templates/report.html`` with the upload page's look;
    ``facts`` are ``plan``'s (:func:`plan_facts`), if made already.
    """
    from invsync.html.render import csp_hash, render, stylesheet

    status = _text(report.get("status"))
    css = stylesheet()
    facts = facts or plan_facts(plan)
    return render("report.html", **_page_context(report, plan, rejected, facts), r=report,
                  run_id=_text(report.get("run_id")), status=status, css=css,
                  style_hash=csp_hash(css))


def render_markdown(report: Mapping[str, Any], plan: pl.DataFrame | None,
                    facts: PlanFacts | None = None) -> str:
    """A compact Markdown summary of the run, to paste into a ticket (``summary.md``)."""
    from invsync.html.render import render
    from invsync.rules.messages import outcome_sentence

    counts: Mapping[str, Any] = report.get("counts") or {}
    status = _text(report.get("status"))
    by_reason: Mapping[str, Any] = report.get("rejected_by_reason") or {}
    mid_read = stopped_while_reading(status, report.get("input"))
    text = render(
        "summary.md", r=report, facts=_summary_facts(report),
        outcome=outcome_sentence(counts, status, _text(report.get("rejected_file")) or None),
        counts=[(READ_CUT_SHORT, None) if key == "rows" and mid_read
                else (label, counts.get(key)) for key, label, always in _md_counts(status)
                if always or counts.get(key)],
        by_reason=list(by_reason.items()),
        txids=[t for t in report.get("transaction_ids") or [] if t],
        shown_txids=MD_TRANSACTION_IDS,
        plan=(facts or plan_facts(plan)).totals,
        sold=_sold_context(report, plan),
        notes=[n for n in report.get("notes") or [] if n])
    return text.rstrip("\n") + "\n"


def warm_up() -> None:
    """Load and compile the page's templates and the macros they import (Jinja2 keeps
    them for the run's own page) by rendering an empty report, which is thrown away."""
    render_html({}, None, [])
    render_markdown({}, None)


READ_CUT_SHORT = "rows read (none: the run stopped while reading the file)"
"""The rows-read line of a run interrupted before its file was read ("0" would say the
file was empty)."""


def stopped_while_reading(status: object, read: Mapping[str, Any] | None) -> bool:
    """Whether a run (its ``status`` and report's ``input``) was interrupted while its file
    was still being read: its report's input has no rows then."""
    return status == "interrupted" and "rows" not in (read or {})


def _md_counts(status: str) -> list[tuple[str, str, bool]]:
    """(key, label, always shown) of the summary's counts; a dry run sends nothing."""
    if status != "dry_run":
        return _MD_COUNTS
    return [(k, "not sent (dry run)" if k == "not_sent" else label, always)
            for k, label, always in _MD_COUNTS]


def _summary_facts(report: Mapping[str, Any]) -> list[str]:
    """The summary's Markdown list of where the run came from (input, store, when)."""
    from invsync.html.render import md, md_code

    inp: Mapping[str, Any] = report.get("input") or {}
    store: Mapping[str, Any] = report.get("store") or {}
    facts = []
    if inp.get("path"):
        detail = ", ".join(md(x) for x in (inp.get("format"), inp.get("sheet")) if x)
        sha = _text(inp.get("sha256"))
        if sha:
            detail += (", " if detail else "") + f"sha256 {md_code(sha[:12])}…"
        facts.append(f"- Input: {md_code(inp.get('path'))}" + (f" ({detail})" if detail else ""))
    if store.get("store_hash"):
        facts.append(f"- Store: {md_code(store.get('store_hash'))}")
    if report.get("started_at"):
        when = md(report.get("started_at"))
        if report.get("finished_at"):
            when += f" → {md(report.get('finished_at'))}"
        facts.append(f"- Run: {when}")
    if report.get("resumed_from"):
        facts.append(f"- Resumed from run {md_code(report.get('resumed_from'))}"
                     + (" (it stopped before writing its report)"
                        if report.get("resumed_from_no_report") else ""))
    return facts


def exit_name(code: Any) -> str | None:
    """The name of an exit code (``INTERRUPTED`` for 130), from :class:`ExitCode`."""
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    try:
        return ExitCode(code).name
    except ValueError:
        return None


def write_human_reports(folder: Path, report: Mapping[str, Any],
                        plan: pl.DataFrame | None) -> None:
    """Write ``folder/report.html`` and ``folder/summary.md``, each atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in human_reports(folder, report, plan).items():
        write_atomic(folder / name, text)


def human_reports(folder: Path, report: Mapping[str, Any], plan: pl.DataFrame | None,
                  facts: PlanFacts | None = None) -> dict[str, bytes]:
    """The bytes of ``report.html`` and ``summary.md`` for the run folder ``folder``;
    ``facts`` are ``plan``'s (:func:`plan_facts`), if made already."""
    if not report.get("report_dir"):
        report = {**report, "report_dir": str(folder)}
    rejected = report.get("rejected") or []
    facts = facts or plan_facts(plan)
    page = render_html(report, plan, rejected, facts)
    summary = render_markdown(report, plan, facts)
    return {"report.html": page.encode("utf-8"), "summary.md": summary.encode("utf-8")}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------
# What report.html shows (the markup is in the template)
# ---------------------------------------------------------------------------------------

def _page_context(report: Mapping[str, Any], plan: pl.DataFrame | None,
                  rejected: Sequence[Mapping[str, Any]], facts: PlanFacts) -> dict[str, Any]:
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
        "exit_name": exit_name(code),
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
        "plan": facts.context, "top": TOP_MOVES,
        **_sold_context(report, plan),
    }


def _sold_context(report: Mapping[str, Any], plan: pl.DataFrame | None) -> dict[str, Any]:
    """What sold since the as-of time (``--as-of``), for the page: a headline and lines."""
    from invsync.html.sold_since import headline, sold_lines

    sold = report.get("sold_since")
    if not isinstance(sold, Mapping):
        return {"sold_headline": None, "sold_lines": []}
    started = _text(report.get("started_at"))
    return {"sold_headline": headline(sold, started),
            "sold_lines": sold_lines(sold, plan, started)}


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
    from invsync.html.render import num

    return num(value)


def count_groups(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The counts as labelled groups; a problem count above 0 is flagged."""
    counts: Mapping[str, Any] = report.get("counts") or {}
    known = {key for _, fields in _COUNT_GROUPS for key, _, _ in fields}
    groups = list(_COUNT_GROUPS)
    extra = [(k, k.replace("_", " "), False) for k in counts if k not in known]
    if extra:
        groups.append(("Other", extra))
    dry_run = report.get("status") == "dry_run"
    mid_read = stopped_while_reading(report.get("status"), report.get("input"))
    out = []
    for group, fields in groups:
        rows = []
        for key, label, problem in fields:
            value = counts.get(key)
            if dry_run and key == "not_sent":
                label, problem = "not sent (dry run)", False
            if mid_read and key == "rows":
                label, value = READ_CUT_SHORT, None
            rows.append({"key": key, "label": label, "value": value,
                         "flag": problem and isinstance(value, int) and value > 0})
        out.append({"name": group, "rows": rows})
    return out


def _reasons(report: Mapping[str, Any], rejected: Sequence[Mapping[str, Any]]
             ) -> tuple[list[tuple[str, Any, str, Any, str]], int]:
    """(reason code, rows, share, example "row N: message", kind of problem) per kind."""
    from invsync.html.render import num
    from invsync.rules.messages import problem_groups

    by_reason: Mapping[str, Any] = report.get("rejected_by_reason") or {}
    total = sum(n for n in by_reason.values() if isinstance(n, int))
    rows = []
    for g in problem_groups({_text(k): v for k, v in by_reason.items()}, rejected):
        n = by_reason.get(g.code)
        share = f"{n / total:.0%}" if isinstance(n, int) and total else ""
        example = g.example if g.example_row is None else f"row {num(g.example_row)}: {g.example}"
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
    return _biggest_moves(_normalise_plan(plan), n)


def _biggest_moves(normal: pl.DataFrame, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """:func:`biggest_moves` of a plan :func:`_normalise_plan` made."""
    frame = normal.filter(_IS_CHANGED)
    delta = pl.col("delta")
    drops = frame.filter(delta < 0)
    rises = frame.filter(delta > 0)
    if n > 0:  # only the rows that can make the top n are sorted, not the whole plan
        if drops.height > n:
            drops = drops.filter(delta <= drops["delta"].bottom_k(n).max())
        if rises.height > n:
            rises = rises.filter(delta >= rises["delta"].top_k(n).min())
    drops = drops.sort(["delta", "location_id", "item"], descending=[False, False, False],
                       nulls_last=True).head(n)
    rises = rises.sort(["delta", "location_id", "item"], descending=[True, False, False],
                       nulls_last=True).head(n)
    return drops, rises


@dataclass(frozen=True)
class PlanFacts:
    """What the run's pages show of its plan (:func:`plan_facts`)."""

    context: dict[str, Any] | None
    """The page's plan section (:func:`plan_context`)."""
    totals: dict[str, int] | None
    """``summary.md``'s plan line: items, locations, new, changed, to zero."""


def plan_facts(plan: pl.DataFrame | None) -> PlanFacts:
    """What the pages show of ``plan``, the plan read once (it needs no report: it can be
    made while the report is)."""
    if plan is None:
        return PlanFacts(None, None)
    frame = _normalise_plan(plan)
    totals = _plan_totals(frame)
    return PlanFacts(_plan_context(frame, totals), totals)


def plan_context(plan: pl.DataFrame | None) -> dict[str, Any] | None:
    """What the page shows of a plan: totals, per location, the biggest drops and rises."""
    return plan_facts(plan).context


def _plan_context(frame: pl.DataFrame, totals: dict[str, int]) -> dict[str, Any]:
    """:func:`plan_context` of a plan :func:`_normalise_plan` made, whose
    :func:`_plan_totals` are ``totals``."""
    if frame.height == 0:
        return {"items": 0}
    from invsync.html.render import status_label

    out: dict[str, Any] = dict(totals)
    rows = []
    totals = {"items": 0, "new": 0, "changed": 0, "to_zero": 0, "up": 0, "down": 0}
    for loc in _plan_by_location(frame):
        for k in totals:
            totals[k] += int(loc[k] or 0)
        statuses = ", ".join(f"{status_label(s)} {loc[f's_{s}']:,}" for s in PLAN_STATUSES
                             if loc[f"s_{s}"])
        if loc["s_other"]:
            statuses += (", " if statuses else "") + f"other {loc['s_other']:,}"
        rows.append({**loc, "up": int(loc["up"] or 0), "down": int(loc["down"] or 0),
                     "statuses": statuses})
    out["by_location"] = rows
    out["all"] = totals if len(rows) > 1 else None
    drops, rises = _biggest_moves(frame, TOP_MOVES)
    # The page's tables still name the levels old/new (the template's words).
    legacy = [pl.col("before").alias("old"), pl.col("after").alias("new")]
    out["drops"] = drops.with_columns(legacy).to_dicts()
    out["rises"] = rises.with_columns(legacy).to_dicts()
    return out
