"""A sync killed (``kill -9``) before it wrote its run folder: the run that finishes it says
so (summary line, notes, report.json, the ``recovered`` event, ``show``), and never sends
anyone looking for a folder that does not exist. A run interrupted by SIGTERM wrote its
report: the run that finishes it names it plainly."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import (
    catalog_skus,
    confirmed_in_journal,
    env_for,
    kill_when,
    output,
    run_invsync,
    spawn,
    state_store_dir,
    write_stock,
)

from invsync.sandbox.process import SandboxProcess

NO_REPORT = "(it stopped before writing its report)"


def start_and_stop(sb: SandboxProcess, tmp_path: Path, children: list[Any],
                   sig: int) -> tuple[dict[str, str], Path, str]:
    """A sync of 200 items, 40 a batch, stopped by ``sig`` once a batch is confirmed: the
    environment, the file and the stopped run's id (from its journal)."""
    env = env_for(sb, tmp_path)
    stock = write_stock(tmp_path / "stock.csv", {(1, s): 7 for s in catalog_skus(200)})
    log = tmp_path / "stopped.log"
    proc = spawn(["sync", str(stock), "--batch-size", "40", "--concurrency", "1"], env, log,
                 children)
    kill_when(lambda: confirmed_in_journal(tmp_path / "state"), proc, log, sig=sig)
    journal = state_store_dir(tmp_path / "state") / "journal.jsonl"
    return env, stock, json.loads(journal.read_text().splitlines()[0])["run_id"]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_run_killed_before_its_report_is_named_as_such_by_the_run_that_finishes_it(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any]) -> None:
    sb = sandbox_factory("--latency-ms", "150")
    env, stock, killed = start_and_stop(sb, tmp_path, children, signal.SIGKILL)
    runs_dir = tmp_path / "state" / "invsync" / "runs"
    assert not (runs_dir / killed).exists()

    # Before it is finished: listed as interrupted, with no folder, said to have no report.
    listed = json_lines(run_invsync(["runs", "--json"], env).stdout)
    assert (listed[0]["run_id"], listed[0]["not_resumed"], listed[0]["folder"]) == (
        killed, True, None)
    assert listed[0]["journal"].endswith("journal.jsonl")
    shown = run_invsync(["show", "last"], env)
    assert shown.returncode == 0, output(shown)
    assert shown.stdout.startswith(f"run {killed}: interrupted, not yet resumed"), shown.stdout
    assert "it stopped before writing its report" in shown.stdout.splitlines()[0]

    dry = run_invsync(["sync", "--dry-run", str(stock)], env)  # replays it, finishes nothing
    assert dry.returncode == 0, output(dry)
    assert NO_REPORT not in dry.stdout and dry.report()["resumed_from_no_report"] is False

    finish = run_invsync(["--log-format", "json", "sync", str(stock)], env)
    assert finish.returncode == 0, output(finish)
    events = json_lines(finish.stdout)
    recovered = next(e for e in events if e["event"] == "recovered")
    assert (recovered["from_run"], recovered["from_report"]) == (killed, False)
    done = next(e for e in events if e["event"] == "run_finished")
    assert f"finished={killed} {NO_REPORT}" in done["summary"], done["summary"]
    report = json.loads((Path(done["report_dir"]) / "report.json").read_text())
    assert report["resumed_from"] == killed and report["resumed_from_no_report"] is True
    assert any(n.startswith(f"run {killed} stopped before writing its report")
               for n in report["notes"]), report["notes"]
    assert not (runs_dir / killed).exists()
    assert "stopped before writing its report" in (
        Path(done["report_dir"]) / "summary.md").read_text()

    # Its id leads to the run that finished it, not to "no run".
    by_id = run_invsync(["show", killed], env)
    assert by_id.returncode == 0, output(by_id)
    assert by_id.stdout.startswith(
        f"run {killed}: interrupted, it stopped before writing its report; run "
        f"{report['run_id']} finished it:"), by_id.stdout
    assert f"invsync run {report['run_id']}: succeeded" in by_id.stdout
    last = run_invsync(["show", "last"], env)
    assert f"run {killed} stopped before writing its report" in last.stdout, last.stdout


def test_a_run_killed_as_soon_as_it_holds_the_lock_is_named_as_such_too(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any]) -> None:
    """Killed at its earliest (its lock names it; a batch may or may not be out yet): the
    next sync takes over the lock and says the run left no report."""
    sb = sandbox_factory("--latency-ms", "150")
    env = env_for(sb, tmp_path)
    stock = write_stock(tmp_path / "stock.csv", {(1, s): 3 for s in catalog_skus(50)})
    log = tmp_path / "killed.log"
    proc = spawn(["sync", str(stock)], env, log, children)

    def locked() -> str | None:  # (the store's state folder is made by the run)
        lock = state_store_dir(tmp_path / "state") / "lock"
        try:
            return str(json.loads(lock.read_text() or "{}").get("run_id") or "") or None
        except (OSError, ValueError):
            return None

    kill_when(locked, proc, log)
    killed = locked()
    assert killed is not None
    finish = run_invsync(["sync", str(stock)], env)
    assert finish.returncode == 0, output(finish)
    summary = finish.stdout.splitlines()[-1]
    assert f"finished={killed} {NO_REPORT}" in summary, summary
    report = finish.report()
    assert report["resumed_from"] == killed and report["resumed_from_no_report"] is True
    notes = [n for n in report["notes"] if f"run {killed} stopped before writing" in n]
    assert len(notes) == 1, report["notes"]  # once, though its lock and journal name it
    shown = run_invsync(["show", killed[:20]], env)
    assert f"run {report['run_id']} finished it:" in shown.stdout, output(shown)
    # A prefix of a run that has a folder is that run, not a lead to another.
    assert run_invsync(["show", report["run_id"]], env).stdout.startswith(
        f"invsync run {report['run_id']}")


def test_a_run_interrupted_by_sigterm_wrote_its_report_and_is_named_plainly(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any]) -> None:
    sb = sandbox_factory("--latency-ms", "150")
    env, stock, stopped = start_and_stop(sb, tmp_path, children, signal.SIGTERM)
    assert (tmp_path / "state" / "invsync" / "runs" / stopped / "report.json").is_file()
    finish = run_invsync(["sync", str(stock)], env)
    assert finish.returncode == 0, output(finish)
    summary = finish.stdout.splitlines()[-1]
    assert f"finished={stopped} " in summary and NO_REPORT not in summary, summary
    assert finish.report()["resumed_from_no_report"] is False
