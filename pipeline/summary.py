"""The short human summary of a run printed to the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pipeline.report import RunReport

_STYLE = {"succeeded": "green", "partial": "yellow", "failed": "red", "dry_run": "cyan"}


def print_summary(report: RunReport, console: Console | None = None) -> None:
    """Print counts, rejections by reason and batches; end with the report folder."""
    console = console or Console(highlight=False, soft_wrap=True)
    c = report.counts
    style = _STYLE.get(report.status, "white")
    source = report.input.get("path", "?")
    console.print(f"[bold]invsync[/] run {report.run_id}: [{style}]{report.status}[/] ({source})")
    if report.error:
        console.print(f"[red]error:[/] {report.error}")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="dim")
    table.add_column(justify="right")
    rows = [("rows read", c.rows), ("valid", c.valid), ("rejected", c.rejected),
            ("unchanged", c.unchanged), ("changed", c.changed)]
    if report.status == "dry_run":
        rows.append(("would send", c.changed))
    else:
        rows += [("submitted", c.submitted), ("accepted", c.accepted),
                 ("refused by store", c.refused)]
        if c.unconfirmed or c.not_sent:
            rows += [("unconfirmed", c.unconfirmed), ("not sent", c.not_sent)]
    for label, value in rows:
        table.add_row(label, f"{value:,}")
    console.print(table)
    if report.rejected_by_reason:
        reasons = ", ".join(f"{k} {v:,}" for k, v in report.rejected_by_reason.items())
        console.print(f"rejected by reason: {reasons}")
        for rec in report.rejected[:5]:
            console.print(f"  row {rec['row']}: {rec['reason']}: {rec['message']}")
        if len(report.rejected) > 5:
            console.print(f"  … {len(report.rejected) - 5:,} more in rejected.csv")
    batches = [b for b in report.batches if b.get("transaction_id")]
    if batches:
        console.print(f"{len(report.batches)} batches, {len(report.transaction_ids)} "
                      f"transaction ids (first: {report.transaction_ids[0]})")
    elif report.status == "dry_run" and report.batches:
        console.print(f"would send {len(report.batches)} batches")
    for note in report.notes:
        console.print(f"[dim]note:[/] {note}")
    console.print(f"report: {report.report_dir}")
