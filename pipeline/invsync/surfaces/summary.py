"""The short human summary of a run printed to the terminal."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from invsync.html.report_page import biggest_moves, stopped_while_reading
from invsync.rules.messages import outcome_sentence, problem_groups
from invsync.stages.report import RunReport, rows_unchecked
from invsync.tables import goes_to_zero
from invsync.terminal import clean, safe
from invsync.terminal import console as new_console

if TYPE_CHECKING:  # the store's modules (and httpx) are not loaded for a dry run's summary
    from invsync.store.live import Comparison

_STYLE = {"succeeded": "green", "partial": "yellow", "failed": "red", "dry_run": "cyan",
          "interrupted": "red"}


def print_summary(report: RunReport, console: Console | None = None) -> None:
    """Print counts, rejections by reason and batches; end with the report folder."""
    console = console or new_console()
    style = _STYLE.get(report.status, "white")
    source = report.input.get("path", "?")
    console.print(f"[bold]invsync[/] run {safe(report.run_id)}: [{style}]{safe(report.status)}[/] "
                  f"({safe(source)})")
    if report.error:
        console.print(f"[red]error:[/] {safe(report.error)}")
    unchecked = rows_unchecked(report)
    if unchecked:
        console.print(f"rows read {unchecked:,}: the run stopped before checking them")
    elif stopped_while_reading(report.status, report.input):
        # "rows read 0" would say the file was empty.
        console.print("rows read: none, the run stopped while reading the file")
    else:
        _print_counts(report, console)
    groups = problem_groups(report.rejected_by_reason, report.rejected)
    if groups:
        console.print("problems, by kind (one example each):")
        for g in groups:
            example = f"row {g.example_row}: {g.example}" if g.example_row is not None \
                else g.example
            console.print(f"  {safe(g.kind)} ({g.count:,} {'row' if g.count == 1 else 'rows'}"
                          f", [dim]{safe(g.code)}[/]): {safe(example)}")
        listed = report.rejected_file or "rejected.csv"
        console.print(f"  every row and its fix is in {safe(listed)}")
    batches = [b for b in report.batches if b.get("transaction_id")]
    if batches:
        console.print(f"{len(report.batches)} batches, {len(report.transaction_ids)} "
                      f"transaction ids (first: {safe(report.transaction_ids[0])})")
    elif report.status == "dry_run" and report.batches:
        console.print(f"would send {len(report.batches)} batches")
    _print_sold_since(report, console)
    for note in report.notes:
        console.print(f"[dim]note:[/] {safe(note)}")
    console.print(f"report: {safe(report.report_dir)}" if report.report_dir
                  else "report: not written")


def _print_counts(report: RunReport, console: Console) -> None:
    """The run's counts as a table, and the sentence that sums them up."""
    c = report.counts
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
    console.print(safe(outcome_sentence(asdict(c), report.status, report.rejected_file)))


def _print_sold_since(report: RunReport, console: Console) -> None:
    """``--as-of``: what sold since, and per item "file 10 − 2 sold since 02:00 = 8"."""
    if not report.sold_since:
        return
    from invsync.html.sold_since import headline, sold_lines

    console.print(safe(headline(report.sold_since, report.started_at)))
    for line in sold_lines(report.sold_since, report.plan, report.started_at):
        console.print(f"  {safe(line)}")


def print_plan(report: RunReport, console: Console | None = None, top: int = 10) -> None:
    """The plan of a dry run: per location, the biggest drops and rises, items going to 0."""
    import polars as pl

    console = console or new_console()
    if report.by_location:
        table = Table(title="plan by location")
        for col in ("location", "new", "changed", "to zero", "unchanged"):
            table.add_column(col, justify="right")
        for loc, c in report.by_location.items():
            table.add_row(safe(loc), f"{c['new']:,}", f"{c['changed']:,}", f"{c['to_zero']:,}",
                          f"{c['unchanged']:,}")
        console.print(table)
    console.print(f"rejected rows: {report.counts.rejected:,}")
    plan_path = Path(report.report_dir) / "plan.csv"
    plan = report.plan  # the run's own plan frame: plan.csv is not read back
    if not report.report_dir or not plan_path.exists() or plan is None:
        return
    drops, rises = biggest_moves(plan, top)
    for title, frame in (("biggest drops", drops), ("biggest rises", rises)):
        if frame.height:
            t = Table(title=title)
            for col in ("location", "item", "before", "after", "delta"):
                t.add_column(col, justify="right" if col != "item" else "left")
            for r in frame.head(top).iter_rows(named=True):
                t.add_row(safe(r["location_id"]), safe(r["item"]), safe(r["before"]),
                          safe(r["after"]), f"{r['delta']:+,}")
            console.print(t)
    zero = plan.filter(goes_to_zero(pl.col("after"), pl.col("before")))
    if zero.height:
        items = ", ".join(safe(i) for i in zero["item"].head(top).to_list())
        more = f" and {zero.height - top:,} more" if zero.height > top else ""
        console.print(f"{zero.height:,} items would go to 0: {items}{more}")
    console.print(f"push exactly this plan with: invsync sync --plan-file {safe(plan_path)}")


def print_comparison(result: Comparison, what: str, quiet: bool, as_json: bool,
                     top: int = 20, repair: dict[str, Any] | None = None,
                     run_id: str | None = None) -> int:
    """``drift``/``verify``: what differs, as lines or one JSON event, and the ``repair``
    commands (even under ``-q``: they are what the operator acts on); exit code 0 or 1."""
    import json

    import click

    from invsync.clock import timestamp

    diff = result.differences
    if as_json:
        # One event name per command ("verify", not "verify <run id>"): the run is a field.
        name, _, named_run = what.partition(" ")
        extra: dict[str, Any] = {"repair": repair} if repair else {}
        if run_id or named_run:
            extra["run_id"] = run_id or named_run
        click.echo(json.dumps({"ts": timestamp(), "event": name, "checked": result.expected,
                               "matched": result.matched, "differences": diff.height,
                               "items": diff.head(1000).to_dicts(), **extra}))
    elif not quiet:
        click.echo(f"{clean(what)}: {result.expected:,} items checked, {result.matched:,} match, "
                   f"{diff.height:,} differ")
        for r in diff.head(top).iter_rows(named=True):
            live = "not listed" if r["live"] is None else f"{r['live']:,}"
            click.echo(f"  location {r['location_id']} {clean(r['identifier'])} "
                       f"{clean(r['item_key'])}: expected {r['expected']:,}, store has {live}")
        if diff.height > top:
            click.echo(f"  … {diff.height - top:,} more")
    if repair and not as_json:
        if repair.get("error"):
            click.echo(f"{what}: {clean(repair['error'])}", err=True)
        click.echo(f"{what}: to repair, run one of:")
        for command in repair["commands"]:
            why = ("  # put back the snapshot's levels on these items" if "--plan-file" in command
                   else "  # make the store equal to the file again (the periodic reconcile)")
            click.echo(f"  {clean(command)}{why}")
    return 0 if diff.height == 0 else 1


def print_runs(rows: list[dict[str, object]], where: Path,
               console: Console | None = None) -> None:
    """``invsync runs``: one line per past run, in 100 columns (``--json`` has every field)."""
    console = console or new_console()
    if not console.is_terminal or console.width > 100:
        console.width = 100  # cron mail, a pipe or a wide terminal: the same 100 columns
    if not rows:
        console.print(f"no runs under {safe(where)}")
        return
    table = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    widths = {"status": 12, "profile": 12, "file": 20}
    for col in ("run id", "command", "status", "profile", "file", "rows", "updated",
                "rejected"):
        numeric = col in ("rows", "updated", "rejected")
        table.add_column(col, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=col not in widths, max_width=widths.get(col))
    for r in rows:
        status = str(r["status"])
        shown = "interrupted, not yet resumed" if r.get("not_resumed") else status
        file = str(r["file"] or "-")
        file = file if len(file) <= 20 else "…" + file[-19:]  # the end names the file
        table.add_row(safe(r["run_id"]), safe(r["command"]),
                      f"[{_STYLE.get(status, 'white')}]{safe(shown)}[/]",
                      safe(r.get("profile") or "-"), safe(file),
                      f"{r['rows']:,}", f"{r['accepted']:,}", f"{r['rejected']:,}")
    console.print(table)


def print_revert_left(done: object, top: int = 20) -> None:
    """What ``invsync revert`` left as it was: items changed since the run, items it added."""
    import click

    from invsync.terminal import clean

    left = done.left  # type: ignore[attr-defined]
    past = done.past.run_id  # type: ignore[attr-defined]
    click.echo(f"revert of run {clean(past)}: {done.reverted:,} item(s) to put back, "  # type: ignore[attr-defined]
               f"{left.height:,} left as they are")
    why_text = {"changed_since": "changed since that run",
                "new_in_run": "new in that run: no earlier level"}
    for r in left.head(top).iter_rows(named=True):
        live = "" if r["why"] != "changed_since" else (
            ", store has " + ("nothing listed" if r["live"] is None else f"{r['live']:,}"))
        old = "" if r["old"] is None else f", before it {r['old']:,}"
        click.echo(f"  left: location {r['location_id']} {clean(r['identifier'])} "
                   f"{clean(r['item_key'])}: that run set {r['set']:,}{old}{live} "
                   f"({why_text.get(r['why'], r['why'])})")
    if left.height > top:
        click.echo(f"  … {left.height - top:,} more")
    if left.filter(left["why"] == "changed_since").height:
        click.echo("  revert --force puts back the items changed since that run too")
