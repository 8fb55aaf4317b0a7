"""A run's tail (from the last answer to the exit): what it no longer does there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import budget
from hypothesis import example, given, settings
from hypothesis import strategies as st


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


def test_the_summary_does_not_load_the_http_stack() -> None:
    # A dry run prints its summary without ever loading httpx (~0.05 s) for it.
    code = ("import sys, invsync.surfaces.cli; import invsync.surfaces.summary; "
            "print('httpx' in sys.modules, 'invsync.store.live' in sys.modules)")
    assert _python(code) == "False False"


def test_the_summary_console_is_imported_ahead_once_batches_are_out() -> None:
    code = """
import sys, threading
from invsync.surfaces import cli
seen = []
emit = cli._summary_ahead(lambda name, data: seen.append(name))
emit("run_started", {"dry_run": False})
before = "rich.console" in sys.modules
emit("submit_started", {"batches": 1, "items": 1})
emit("batch", {})
for t in threading.enumerate():
    if t.name == "invsync-console":
        t.join(60)
print(before, "rich.console" in sys.modules, "rich.table" in sys.modules, seen)
"""
    assert _python(code) == ("False True True "
                             "['run_started', 'submit_started', 'batch']")


def test_a_dry_runs_summary_console_is_imported_as_it_starts() -> None:
    code = """
import sys, threading
from invsync.surfaces import cli
emit = cli._summary_ahead(lambda name, data: None)
emit("run_started", {"dry_run": True})
for t in threading.enumerate():
    if t.name == "invsync-console":
        t.join(60)
print("rich.console" in sys.modules)
"""
    assert _python(code) == "True"


_PIECES = ["x-auth-token", "X_AUTH_TOKEN", "Authorization", "ACCESS-token", ":", "=", " ",
           "'", '"', ",", "Bearer ", "basic ", "sftp://", "HTTPS://", "user:", "pw@", "/",
           "?", "&", "token=", "X-Amz-Signature=", "key=", "#", "s3cr3tLONGvalue", "tok",
           "xtok", "[redacted]", "[redacted", "é", "SKU-001", "12", "auth", "acc"]


@settings(max_examples=budget(400), deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(_PIECES) | st.text(max_size=4), max_size=14))
@example(["https://example.com/f.csv", "?", "token=", "12"])
@example(["f.csv", "?", "sig=", "12"])
@example(["sftp://", "user:", "pw@", "host/"])
@example(["X_AUTH_TOKEN", "=", "12"])
@example(["Authorization", ":", " ", "Bearer ", "12"])
@example(["ACCESS-token", "=", "'", "12"])
@example(["SKU ", "s3cr3tLONGvalue", "x"])
@example(["a ", "tok", " b"])
def test_the_quick_look_never_changes_what_is_redacted(pieces: list[str]) -> None:
    # redact() skips text with no clue of a secret in one scan; the full rules, run on
    # every text, give the same result.
    import re

    import invsync.redact as redaction

    text = "".join(pieces)
    saved = (set(redaction._secrets), redaction._pattern, redaction._clue)
    try:
        redaction.register("s3cr3tLONGvalue")
        redaction.register("tok")  # short: only as a whole word
        quick = redaction.redact(text)
        clue, redaction._clue = redaction._clue, re.compile("")  # every text: the full rules
        try:
            full = redaction.redact(text)
        finally:
            redaction._clue = clue
        assert quick == full
        assert redaction.redact_data({"a": [text, 1, None, (text,)]}) == \
            {"a": [full, 1, None, (full,)]}
    finally:
        redaction._secrets, redaction._pattern, redaction._clue = saved


def _folder_parts() -> tuple[Any, Any]:
    import polars as pl

    from invsync.stages.report import Counts, RunReport, new_run_id, plan_frame
    from invsync.tables import ROW

    report = RunReport(run_id=new_run_id(), status="succeeded",
                       started_at="2026-12-06T10:00:00Z",
                       counts=Counts(rows=1, valid=1, changed=1, submitted=1, accepted=1),
                       store={"store_hash": "abc", "api_url": "http://x", "profile": None})
    changes = pl.DataFrame({"location_id": [1], "address": ["sku"], "address_key": ["A-1"],
                            "old_quantity": [None], "quantity": [5], ROW: [2]},
                           schema_overrides={"old_quantity": pl.Int64})
    return report, plan_frame(changes, "accepted")


def _recording_writes(monkeypatch: pytest.MonkeyPatch, *, slow: str = "",
                      fails: str = "") -> list[str]:
    """Patch the report stage's file writes: each file's name once written (``slow``
    takes a while, ``fails`` fails as a full disk does)."""
    import time

    import invsync.stages.report as stage

    done: list[str] = []
    real = stage.write_atomic

    def write(path: Path, data: Any, **kwargs: Any) -> None:
        if path.name == slow:
            time.sleep(0.3)
        if path.name == fails:
            raise OSError(28, "No space left on device", str(path))
        real(path, data, **kwargs)
        done.append(path.name)

    monkeypatch.setattr(stage, "write_atomic", write)
    monkeypatch.setattr("invsync.html.report_page.write_atomic", write)
    return done


def test_report_json_is_written_once_the_plan_is_and_the_pages_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.stages.report import write_run_folder

    done = _recording_writes(monkeypatch, slow="plan.csv")
    report, plan = _folder_parts()
    write_run_folder(report, tmp_path / "run", None, None, plan)
    assert done[:2] == ["plan.csv", "report.json"]
    assert sorted(done[2:]) == ["report.html", "summary.md"]  # written side by side
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == \
        ["plan.csv", "report.html", "report.json", "summary.md"]


def test_a_plan_that_cannot_be_written_fails_the_folder_before_report_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.stages.report import write_run_folder

    done = _recording_writes(monkeypatch, fails="plan.csv")
    report, plan = _folder_parts()
    with pytest.raises(OSError, match="No space left"):
        write_run_folder(report, tmp_path / "run", None, None, plan)
    assert done == []
    assert list((tmp_path / "run").iterdir()) == []


def test_the_pages_read_the_plan_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # report.html's plan section and summary.md's plan line come from one reading of the
    # plan (it was normalised three times, its totals made twice, for a million rows).
    import invsync.html.report_page as page

    report, plan = _folder_parts()
    data = {**report.to_dict(), "report_dir": str(tmp_path)}
    before = page.render_markdown(data, plan)
    before_html = page.render_html(data, plan, [])
    reads: list[int] = []
    real = page._normalise_plan

    def counted(frame: Any) -> Any:
        reads.append(frame.height)
        return real(frame)

    monkeypatch.setattr(page, "_normalise_plan", counted)
    pages = page.human_reports(tmp_path, report.to_dict(), plan)
    assert reads == [1]
    assert pages["summary.md"].decode() == before
    assert pages["report.html"].decode() == before_html


def _picked(items: list[int], flags: list[bool]) -> list[int]:
    return [s for s, f in zip(items, flags, strict=False) if f]


@settings(max_examples=budget(200), deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["accepted", "partial", "refused", "failed",
                                           "not_sent"]),
                          st.lists(st.booleans(), max_size=6),
                          st.lists(st.booleans(), max_size=6),
                          st.lists(st.booleans(), max_size=6)), max_size=5))
def test_a_results_counts_are_its_lists_lengths(
        shape: list[tuple[str, list[bool], list[bool], list[bool]]]) -> None:
    # The counts a run reports are counted without building its lists of 100,000 items.
    from invsync.stages.submit import BatchResult, SubmitResult

    batches, seqs, seq = [], [], 0
    for i, (status, acc, ref, unapplied) in enumerate(shape):
        items = list(range(seq, seq + max(len(acc), len(ref), len(unapplied))))
        seq += len(items) + 1
        batches.append(BatchResult(index=i, location_id=1, items=len(items), status=status,
                                   accepted=_picked(items, acc),
                                   refused=[(s, "no") for s in _picked(items, ref)],
                                   not_applied=_picked(items, unapplied)))
        seqs.append(items)
    result = SubmitResult(batches=batches, batch_seqs=seqs)
    assert result.sent_count == len(result.sent)
    assert result.accepted_count == len(result.accepted)
    assert result.refused_count == len(result.refused)


def test_a_page_that_cannot_be_written_does_not_fail_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from invsync.stages.report import write_run_folder

    done = _recording_writes(monkeypatch, fails="report.html")
    report, plan = _folder_parts()
    write_run_folder(report, tmp_path / "run", None, None, plan)
    assert sorted(done) == ["plan.csv", "report.json", "summary.md"]
    assert "report.html not written" in caplog.text


def test_a_signal_while_the_folder_is_written_leaves_no_write_going_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIGINT (KeyboardInterrupt) while report.json's text is made: the run then removes
    # the folder and writes a bare report.json; no worker may still be writing into it.
    import invsync.stages.report as stage

    done = _recording_writes(monkeypatch, slow="plan.csv")

    def interrupted(data: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "redact_data", interrupted)
    report, plan = _folder_parts()
    with pytest.raises(KeyboardInterrupt):
        stage.write_run_folder(report, tmp_path / "run", None, None, plan)
    assert done == ["plan.csv"]  # finished before the interruption was raised
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["plan.csv"]


def test_a_rejected_file_that_cannot_be_written_is_not_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The run then writes a bare report.json from this report: it must not point at a
    # rejected.csv that is not there.
    import polars as pl

    from invsync.stages.ingest import read_stock_file
    from invsync.stages.report import write_run_folder
    from invsync.tables import ROW

    stock = tmp_path / "stock.csv"
    stock.write_text("sku,quantity\nA-1,5\nB-2,x\n")
    table = read_stock_file(stock)
    rejected = pl.DataFrame({ROW: [3], "column": ["quantity"], "value": ["x"],
                             "reason": ["quantity_not_a_number"], "message": ["not a number"]},
                            schema_overrides={ROW: table.frame.schema[ROW]})
    _recording_writes(monkeypatch, fails="rejected.csv")
    report, plan = _folder_parts()
    with pytest.raises(OSError, match="No space left"):
        write_run_folder(report, tmp_path / "run", table, rejected, plan)
    assert report.rejected_file is None


def test_a_plan_written_ahead_is_written_once_and_before_report_json(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.stages.report import write_plan_ahead, write_run_folder

    done = _recording_writes(monkeypatch, slow="plan.csv")
    report, plan = _folder_parts()
    ahead = write_plan_ahead(tmp_path / "run", plan)
    write_run_folder(report, tmp_path / "run", None, None, plan, ahead=ahead)
    assert done[:2] == ["plan.csv", "report.json"] and done.count("plan.csv") == 1
    assert "A-1" in (tmp_path / "run" / "plan.csv").read_text()


def test_a_plan_written_ahead_for_another_plan_is_replaced_never_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run interrupted once its plan was made makes it again (the items confirmed so
    # far): the first plan's file, written ahead, must not land over the second's.
    from invsync.stages.report import write_plan_ahead, write_run_folder

    done = _recording_writes(monkeypatch, slow="plan.csv")
    report, plan = _folder_parts()
    ahead = write_plan_ahead(tmp_path / "run", plan)
    again = plan.with_columns(status=pl.lit("not_sent"))
    write_run_folder(report, tmp_path / "run", None, None, again, ahead=ahead)
    assert done[:3] == ["plan.csv", "plan.csv", "report.json"]
    assert "not_sent" in (tmp_path / "run" / "plan.csv").read_text()


def test_a_plan_that_could_not_be_written_ahead_fails_the_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.stages.report import write_plan_ahead, write_run_folder

    done = _recording_writes(monkeypatch, fails="plan.csv")
    report, plan = _folder_parts()
    ahead = write_plan_ahead(tmp_path / "run", plan)
    with pytest.raises(OSError, match="No space left"):
        write_run_folder(report, tmp_path / "run", None, None, plan, ahead=ahead)
    assert done == [] and list((tmp_path / "run").iterdir()) == []
