"""A run that read its file but stopped before counting its rows says how many it read.

``counts.unchecked`` (docs/reports.md): the rows read that the run stopped before counting,
with ``rows = valid + invalid + unchecked`` and every other count 0. The summary, its last
line, report.json and the ``run_finished`` event agree. The real CLI against a sandbox
process, behind the small misbehaving server where the store must misbehave.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import (
    catalog_skus,
    env_at,
    env_for,
    kill_when,
    output,
    retry_config,
    run_invsync,
    spawn,
    write_stock,
)
from contracts import check_events
from misbehaving import Reply, Request, misbehaving_store

from invsync.sandbox.process import SandboxProcess

ROWS = 12


def _stock(tmp_path: Path, rows: int = ROWS) -> Path:
    return write_stock(tmp_path / "stock.csv", {(1, sku): 3 for sku in catalog_skus(rows)})


def _locations_answer(reply: Reply) -> Callable[[Request], Reply | None]:
    """Answer every read of the store's locations with ``reply``; forward the rest."""

    def respond(req: Request) -> Reply | None:
        if req.method == "GET" and req.path == "/inventory/locations":
            return reply
        return None

    return respond


def _unchecked_everywhere(text: str, report: dict[str, Any], status: str,
                          rows: int = ROWS) -> None:
    """The summary, its last line and report.json all say ``rows`` rows read, unchecked."""
    counts = report["counts"]
    assert report["status"] == status, report
    assert report["input"]["rows"] == rows
    assert {k: v for k, v in counts.items() if v} == {"rows": rows, "unchecked": rows}, counts
    assert counts["rows"] == counts["valid"] + counts["invalid"] + counts["unchecked"]
    assert f"rows read {rows:,}: the run stopped before checking them" in text, text
    assert "rows read         0" not in text
    line = next(x for x in text.splitlines() if x.startswith(f"invsync: {status} run="))
    assert f" rows={rows} " in line, line
    assert "Traceback" not in text


def _finished_event(stdout: str) -> dict[str, Any]:
    events = [e for e in check_events(stdout) if e["event"] == "run_finished"]
    assert len(events) == 1, stdout
    return events[0]


def test_a_run_the_store_failed_at_its_locations_counts_its_rows_unchecked(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    path = _stock(tmp_path)
    config = retry_config(tmp_path, max_attempts=2)
    with misbehaving_store(_locations_answer(Reply.json(503, {"title": "down"})),
                           sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        result = run_invsync(["sync", str(path), "--config", str(config)], env)
        events = run_invsync(["sync", str(path), "--config", str(config),
                              "--log-format", "json"], env)
    assert result.returncode == 2, output(result)
    report = result.report()
    _unchecked_everywhere(output(result), report, "failed")
    assert report["error_kind"] == "store"
    # The run_finished event carries the same counts as report.json.
    assert events.returncode == 2, output(events)
    finished = _finished_event(events.stdout)
    again = json.loads((Path(finished["report_dir"]) / "report.json").read_text())
    assert finished["counts"] == again["counts"]
    assert finished["counts"]["unchecked"] == ROWS
    assert f" rows={ROWS} " in finished["summary"]


def test_a_dry_run_stopped_by_a_bad_locations_answer_counts_its_rows_unchecked(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    path = _stock(tmp_path)
    nonsense = Reply.json(200, {"data": "not a list of locations"})
    with misbehaving_store(_locations_answer(nonsense), sandbox.url) as store:
        result = run_invsync(["sync", str(path), "--dry-run"],
                             env_at(store.url, tmp_path, sandbox))
    assert result.returncode == 2, output(result)
    report = result.report()
    _unchecked_everywhere(output(result), report, "failed")
    assert not [r for r in store.requests if r.method == "PUT"]


def test_a_run_that_counted_its_rows_has_none_unchecked(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    path = _stock(tmp_path)
    result = run_invsync(["sync", str(path), "--log-format", "json"],
                         env_for(sandbox, tmp_path))
    assert result.returncode == 0, output(result)
    counts = _finished_event(result.stdout)["counts"]
    assert counts["unchecked"] == 0 and counts["rows"] == counts["valid"] == ROWS, counts


def test_sigterm_while_the_locations_read_is_retried_keeps_the_rows_already_read(
        sandbox: SandboxProcess, tmp_path: Path,
        children: list[subprocess.Popen[bytes]]) -> None:
    """The file is read in a worker thread while the store's locations are read; a signal
    during the locations' retries dropped the file's read: the run said "rows read 0"."""
    path = _stock(tmp_path)
    # Retried for a long while, slowly: the signal comes during the retries.
    config = retry_config(tmp_path, max_attempts=100, base_delay_s=0.3, max_delay_s=0.3,
                          max_total_s=120.0)
    reports = tmp_path / "reports"
    log = tmp_path / "run.log"
    with misbehaving_store(_locations_answer(Reply.json(503, {"title": "busy"})),
                           sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        proc = spawn(["sync", str(path), "--config", str(config), "--report-dir",
                      str(reports)], env, log, children)
        code = kill_when(lambda: store.paths("GET").count("/inventory/locations") >= 3, proc, log,
                         sig=signal.SIGTERM, timeout=120)
    text = log.read_text()
    assert code == 143, text
    report = json.loads(next(reports.glob("*/report.json")).read_text())
    _unchecked_everywhere(text, report, "interrupted")
    assert report["error_kind"] == "interrupted"
    assert report["input"]["sha256"], report["input"]


def test_a_full_state_disk_at_the_journal_start_counts_the_rows_unchecked(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    """The journal's first record (500 items a batch) does not fit an 8 KiB state disk:
    nothing is sent, and the rows, checked and compared but never counted, are unchecked."""
    state = tmpfs(tmp_path / "state", "8k")
    skus = catalog_skus(2000)
    levels = {(loc, s): 1 + (i + loc) % 9 for loc in (1, 2) for i, s in enumerate(skus)}
    path = write_stock(tmp_path / "big.csv", levels)
    args = ["sync", str(path), "--batch-size", "500", "--report-dir", str(tmp_path / "reports")]
    env = env_for(sandbox, tmp_path)
    result = run_invsync(args, env)
    assert result.returncode == 2, output(result)
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]
    report = result.report()
    _unchecked_everywhere(output(result), report, "failed", rows=len(levels))
    # It says what failed and what to do: nothing was sent, nothing was confirmed to resume.
    assert "could not be started" in report["error"], report["error"]
    assert "nothing was sent" in report["error"] and "run the same command again" in \
        report["error"]
    assert "confirmed are kept" not in report["error"]
    subprocess.run(["mount", "-o", "remount,size=4m", str(state)], check=True)
    again = run_invsync(args, env)
    assert again.returncode == 0, output(again)
    assert "recovered" not in output(again)  # no empty journal left to "recover"
    assert sandbox.levels() == levels


def test_counts_keep_their_identity_with_unchecked_rows() -> None:
    import pytest

    from invsync.errors import InternalError
    from invsync.rules.messages import outcome_sentence
    from invsync.stages.report import Counts, RunReport, rows_unchecked

    Counts(rows=3, blank=1, unchecked=3).check()
    Counts(rows=3, valid=2, invalid=1, rejected=1, changed=2, submitted=2, accepted=2).check()
    with pytest.raises(InternalError, match="unchecked"):
        Counts(rows=3).check()
    with pytest.raises(InternalError, match="unchecked"):
        Counts(rows=3, valid=3, changed=3, submitted=3, accepted=3, unchecked=1).check()
    stopped = RunReport(run_id="r", status="interrupted", started_at="t",
                        input={"rows": 3}, counts=Counts(rows=3, unchecked=3))
    assert rows_unchecked(stopped) == 3
    # A report written before counts.unchecked: all 0, the rows in input.rows only.
    legacy = RunReport(run_id="r", status="failed", started_at="t", input={"rows": 3})
    assert rows_unchecked(legacy) == 3
    done = RunReport(run_id="r", status="succeeded", started_at="t", input={"rows": 3},
                     counts=Counts(rows=3, valid=3, unchanged=3))
    assert rows_unchecked(done) is None
    assert outcome_sentence({"rows": 3, "unchecked": 3}, "interrupted") == \
        "3 rows: 3 not checked (the run stopped first)"


def test_a_state_disk_too_full_for_the_lock_is_refused_naming_the_folder(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    """A state disk with room for the writability probe but not for the lock file: the run
    said "unexpected error: OSError: No space left on device", naming nothing."""
    state = tmpfs(tmp_path / "state", "4k")
    result = run_invsync(["sync", str(_stock(tmp_path)), "--report-dir",
                          str(tmp_path / "reports")], env_for(sandbox, tmp_path))
    text = output(result)
    assert result.returncode == 64, text
    assert "unexpected error" not in text and "Traceback" not in text
    assert "state folder" in text and str(state) in text and "nothing was sent" in text, text
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]
