"""Integration tests of the operator commands: plan, --plan-file, --log-format json, progress,
runs, show, --baseline live, drift, verify, resume and the Makefile runbook targets.

Every test runs the real CLI (``python -m invsync ...`` or ``make``) as a child process
against a real sandbox process on 127.0.0.1 and checks what really happened: the requests
the sandbox received, the levels it holds, the files in the run folders and the output.
Expected values are computed here from the sample files with the csv module, never taken
from invsync.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    SAMPLE,
    TOKEN,
    CliResult,
    env_for,
    retry_config,
    run_invsync,
    stocked,
    wait_for,
    write_csv,
)
from conftest import output as out

from invsync.sandbox.process import SandboxProcess, run_sandbox

NIGHT1 = SAMPLE / "night1.csv"
NIGHT2 = SAMPLE / "night2.csv"
MERCHANT = SAMPLE / "merchant.xlsx"
PLAN_COLUMNS = ["location_id", "identifier", "item", "before", "after", "delta", "row", "status",
                "read_at"]
RUN_ID = re.compile(r"\b\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{6}\b")
SHOWN_FILES = ("report.json", "report.html", "summary.md", "rejected.csv", "rejected.xlsx",
               "plan.csv", "verify.json")
IN_STOCK = 3114 - 246
"""night1's items above 0: planned against the store, the other 246 (0, as the sandbox
holds them already) are not sent."""
# Items a merchant edits by hand in the control panel, behind the snapshot's back.
EDITED = [(1, "00123"), (2, "BOTTLE-6209"), (2, "077272763681")]

Level = tuple[int, str]
Factory = Callable[..., SandboxProcess]


# ---- reading the inputs independently of invsync -------------------------------------------


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def csv_levels(path: Path) -> dict[Level, int]:
    return {(int(r["location_id"]), r["sku"]): int(r["quantity"]) for r in csv_rows(path)}


def night_diff() -> dict[Level, tuple[int, int, int]]:
    """(location, sku) -> (old, new, file row) for every item night2 changes against night1."""
    old = csv_levels(NIGHT1)
    out = {}
    for i, r in enumerate(csv_rows(NIGHT2)):
        key, new = (int(r["location_id"]), r["sku"]), int(r["quantity"])
        if old[key] != new:
            out[key] = (old[key], new, i + 2)  # the header is line 1
    return out


def read_plan(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# ---- looking at what the sandbox saw -------------------------------------------------------


def puts(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["method"] == "PUT"]


def put_items(requests: list[dict[str, Any]]) -> Counter[tuple[int, str, int]]:
    """(location, sku, quantity) of every item the store accepted, with multiplicity."""
    return Counter((it["location_id"], it["sku"], it["quantity"])
                   for r in puts(requests) if r["status"] == 200 for it in r["items"])


def edit_behind_the_back(sb: SandboxProcess, levels: dict[Level, int]) -> None:
    """Set levels straight through the store's API, as a merchant in the control panel."""
    body = {"reason": "edited by hand in the control panel",
            "items": [{"location_id": loc, "sku": sku, "quantity": q}
                      for (loc, sku), q in levels.items()]}
    req = urllib.request.Request(
        f"{sb.url}/stores/{sb.store_hash}/v3/inventory/adjustments/absolute", method="PUT",
        data=json.dumps(body).encode(),
        headers={"X-Auth-Token": TOKEN, "Content-Type": "application/json",
                 "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["transaction_id"]
    for key, q in levels.items():
        assert sb.levels()[key] == q


def edited_levels() -> dict[Level, int]:
    night1 = csv_levels(NIGHT1)
    return {key: night1[key] + 777 for key in EDITED}


# ---- looking at what invsync did -----------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as JSON (fails on the first line that is not)."""
    events = []
    for line in text.splitlines():
        if line.strip():
            try:
                events.append(json.loads(line))
            except ValueError:
                pytest.fail(f"not a JSON line: {line!r}\nin:\n{text}")
    return events


def table_rows(text: str) -> list[list[str]]:
    """The data rows of the rich tables in ``text``, as lists of stripped cells."""
    return [[c.strip() for c in line.split("│")[1:-1]]
            for line in text.splitlines() if line.count("│") >= 2]


def assert_human_reports(folder: Path) -> None:
    """report.html and summary.md are written next to report.json (content tested elsewhere)."""
    for name in ("report.json", "report.html", "summary.md"):
        assert (folder / name).is_file(), f"{folder} has no {name}"
        assert (folder / name).stat().st_size > 0, f"{folder / name} is empty"


def wait_for_next_second(previous_run_id: str) -> None:
    """Run ids have a resolution of one second: make the next run's id sort after this one."""
    stamp = previous_run_id.split("-")[0]
    wait_for(lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) > stamp, timeout=10,
             every=0.05)


# ---- 1. plan, then sync --plan-file ---------------------------------------------------------


@dataclass
class Planned:
    sb: SandboxProcess
    env: dict[str, str]
    tmp: Path
    first: CliResult
    plan: CliResult
    requests_before_plan: int
    requests_after_plan: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plan_csv(self) -> Path:
        return self.plan.report_dir() / "plan.csv"


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planned]:
    """A store synced with night1, and a plan for night2 (shared: made once per module)."""
    tmp = tmp_path_factory.mktemp("planned")
    with run_sandbox(SAMPLE / "catalog.csv", token=TOKEN) as sb:
        env = env_for(sb, tmp)
        first = run_invsync(["sync", str(NIGHT1)], env)
        assert first.returncode == 0, out(first)
        before = len(sb.requests())
        plan = run_invsync(["plan", str(NIGHT2)], env)
        assert plan.returncode == 0, out(plan)
        yield Planned(sb, env, tmp, first, plan, before, sb.requests())


def test_plan_sends_nothing_and_plan_csv_is_exactly_the_diff(planned: Planned) -> None:
    assert puts(planned.requests_after_plan[planned.requests_before_plan:]) == []
    assert stocked(planned.sb.levels()) == stocked(csv_levels(NIGHT1))

    header, rows = read_plan(planned.plan_csv)
    assert header == PLAN_COLUMNS
    got = sorted((int(r["location_id"]), r["identifier"], r["item"], int(r["before"]),
                  int(r["after"]), int(r["delta"]), int(r["row"]), r["status"]) for r in rows)
    want = sorted((loc, "sku", sku, old, new, new - old, row, "planned")
                  for (loc, sku), (old, new, row) in night_diff().items())
    assert len(want) == 93
    assert got == want

    report = planned.plan.report()
    assert report["status"] == "dry_run"
    assert report["counts"]["changed"] == 93
    assert report["counts"]["submitted"] == report["counts"]["accepted"] == 0
    assert_human_reports(planned.plan.report_dir())


def test_plan_prints_per_location_counts_and_the_biggest_moves(planned: Planned) -> None:
    text = planned.plan.stdout
    diff = night_diff()
    night2 = csv_levels(NIGHT2)
    rows = table_rows(text)
    for loc in (1, 2):
        changed = [k for k in diff if k[0] == loc]
        to_zero = [k for k in changed if diff[k][1] == 0 and diff[k][0] != 0]
        total = sum(1 for k in night2 if k[0] == loc)
        expected = [str(loc), "0", f"{len(changed):,}", f"{len(to_zero):,}",
                    f"{total - len(changed):,}"]
        assert expected in rows, f"no per-location row {expected} in:\n{text}"

    assert "biggest drops" in text and "biggest rises" in text
    drops_part = text.split("biggest drops", 1)[1].split("biggest rises", 1)[0]
    rises_part = text.split("biggest rises", 1)[1]
    by_delta = sorted(diff.items(), key=lambda kv: kv[1][1] - kv[1][0])
    (drop_loc, drop_sku), (d_old, d_new, _) = by_delta[0]
    (rise_loc, rise_sku), (r_old, r_new, _) = by_delta[-1]
    drop_rows, rise_rows = table_rows(drops_part), table_rows(rises_part)
    assert drop_rows[0] == [str(drop_loc), drop_sku, str(d_old), str(d_new),
                            f"{d_new - d_old:+,}"], drops_part
    assert rise_rows[0] == [str(rise_loc), rise_sku, str(r_old), str(r_new),
                            f"{r_new - r_old:+,}"], rises_part
    assert all(int(r[4]) < 0 for r in drop_rows) and all(int(r[4]) > 0 for r in rise_rows)
    zeroed = sum(1 for old, new, _ in diff.values() if new == 0 and old != 0)
    assert f"{zeroed:,} items would go to 0" in text
    assert f"invsync sync --plan-file {planned.plan_csv}" in text


def test_plan_file_pushes_exactly_the_plan_and_is_refused_once_stale(planned: Planned) -> None:
    sb, env = planned.sb, planned.env
    _, plan_rows = read_plan(planned.plan_csv)

    # A plan whose old levels were edited no longer matches the snapshot: refused, nothing sent.
    edited = planned.tmp / "edited-plan.csv"
    rows = [dict(r) for r in plan_rows]
    rows[0]["before"] = str(int(rows[0]["before"]) + 1)
    write_csv(edited, PLAN_COLUMNS, [[r[c] for c in PLAN_COLUMNS] for r in rows])
    n = len(sb.requests())
    refused = run_invsync(["sync", "--plan-file", str(edited)], env)
    assert refused.returncode == 3, out(refused)
    assert "the store changed since the preview: preview again" in out(refused)
    assert rows[0]["item"] in out(refused)
    assert puts(sb.requests()[n:]) == []
    assert stocked(sb.levels()) == stocked(csv_levels(NIGHT1))

    # The reviewed plan goes through: exactly its items, each once, at its new levels.
    n = len(sb.requests())
    pushed = run_invsync(["sync", "--plan-file", str(planned.plan_csv)], env)
    assert pushed.returncode == 0, out(pushed)
    sent = sb.requests()[n:]
    assert all(r["status"] == 200 for r in puts(sent))
    assert put_items(sent) == Counter((int(r["location_id"]), r["item"], int(r["after"]))
                                      for r in plan_rows)
    assert stocked(sb.levels()) == stocked(csv_levels(NIGHT2))
    report = pushed.report()
    assert report["status"] == "succeeded"
    assert report["counts"]["accepted"] == len(plan_rows) == 93
    assert sorted(report["transaction_ids"]) == sorted(
        r["transaction_id"] for r in puts(sent) if r["status"] == 200)
    assert_human_reports(pushed.report_dir())

    # The same plan again: the snapshot has moved since it was made.
    n = len(sb.requests())
    again = run_invsync(["sync", "--plan-file", str(planned.plan_csv)], env)
    assert again.returncode == 3, out(again)
    assert "the store changed since the preview: preview again" in out(again)
    assert puts(sb.requests()[n:]) == []
    assert stocked(sb.levels()) == stocked(csv_levels(NIGHT2))
    assert again.report()["status"] == "failed"


# ---- 2. --log-format json -------------------------------------------------------------------


@dataclass
class JsonRun:
    result: CliResult
    events: list[dict[str, Any]]
    requests: list[dict[str, Any]]


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonRun]:
    """night1 synced with -v --log-format json into a store failing 30% of requests."""
    tmp = tmp_path_factory.mktemp("json")
    with run_sandbox(SAMPLE / "catalog.csv", "--error-rate", "0.3", "--seed", "3",
                     token=TOKEN) as sb:
        env = env_for(sb, tmp)
        config = retry_config(tmp, max_attempts=8, max_total_s=10.0)
        result = run_invsync(["-v", "--log-format", "json", "sync", "--config", str(config),
                              "--batch-size", "500", str(NIGHT1)], env)
        assert result.returncode == 0, out(result)
        assert stocked(sb.levels()) == stocked(csv_levels(NIGHT1))
        yield JsonRun(result, json_lines(result.stdout), sb.requests())


def test_json_log_format_is_one_event_per_line_with_real_transaction_ids(
        json_run: JsonRun) -> None:
    events, requests = json_run.events, json_run.requests
    assert events, "no events on stdout"
    for e in events:
        assert isinstance(e.get("event"), str) and isinstance(e.get("ts"), str), e
        assert e["event"] != "log", f"a log record on stdout: {e}"
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished", names
    assert names.count("run_started") == names.count("run_finished") == 1
    assert "locations" in names
    assert names.index("submit_started") < names.index("batch")

    started, finished = events[0], events[-1]
    assert started["input"] == str(NIGHT1) and started["dry_run"] is False
    assert finished["run_id"] == started["run_id"]
    assert finished["status"] == "succeeded" and finished["exit_code"] == 0
    assert finished["error"] is None
    counts = finished["counts"]
    assert counts["rows"] == 3114
    assert counts["changed"] == counts["accepted"] == IN_STOCK
    assert counts["rejected"] == counts["refused"] == counts["not_sent"] == 0
    folder = Path(finished["report_dir"])
    report = json.loads((folder / "report.json").read_text())
    assert report["run_id"] == started["run_id"] and report["status"] == "succeeded"
    assert_human_reports(folder)

    # One batch event per batch, carrying the transaction id the store really answered.
    batches = [e for e in events if e["event"] == "batch"]
    submit = next(e for e in events if e["event"] == "submit_started")
    per_location = Counter(loc for loc, _ in stocked(csv_levels(NIGHT1)))
    expected_batches = sum(math.ceil(n / 500) for n in per_location.values())
    assert submit["batches"] == len(batches) == len(report["batches"]) == expected_batches
    assert submit["items"] == sum(b["items"] for b in batches) == IN_STOCK
    assert sorted(b["index"] for b in batches) == list(range(expected_batches))
    by_txid = {r["transaction_id"]: r for r in puts(requests) if r["status"] == 200}
    assert sorted(b["transaction_id"] for b in batches) == sorted(by_txid)
    for b in batches:
        assert b["status"] == "accepted" and b["transaction_ids"] == [b["transaction_id"]]
        sent = by_txid[b["transaction_id"]]["items"]
        assert len(sent) == b["items"] == b["accepted"]
        assert {it["location_id"] for it in sent} == {b["location_id"]}
    assert finished["transactions"] == len(by_txid) == len(report["transaction_ids"])


def test_json_log_format_reports_retries_and_logs_go_to_stderr(json_run: JsonRun) -> None:
    events, requests = json_run.events, json_run.requests
    failed_puts = [r for r in puts(requests) if r["status"] >= 500]
    assert failed_puts, "the seeded sandbox failed no write: the test proves nothing"
    retries = [e for e in events if e["event"] == "retry"]
    put_retries = [e for e in retries if e["method"] == "PUT"]
    assert sorted(e["status"] for e in put_retries) == sorted(r["status"] for r in failed_puts)
    for e in put_retries:
        assert e["path"].endswith("/inventory/adjustments/absolute")
        assert e["attempt"] >= 1 and 0 <= e["wait_s"] <= 0.05
    assert any(e["attempts"] > 1 for e in events if e["event"] == "batch")
    # -v logs go to stderr, as JSON too; stdout held only events (checked above).
    logs = json_lines(json_run.result.stderr)
    assert logs, "-v logged nothing"
    assert all(e["event"] == "log" and {"level", "logger", "message"} <= set(e) for e in logs)
    assert not any(line.startswith("invsync: ") for line in json_run.result.stderr.splitlines())


def test_json_log_format_reports_every_retried_request(json_run: JsonRun) -> None:
    """Reads are retried too (the locations list, live levels): a log shipper watching
    `retry` events must see those as well, not only retried writes."""
    failed = [r for r in json_run.requests if r["status"] >= 500 or r["status"] == 429]
    retries = [e for e in json_run.events if e["event"] == "retry"]
    assert sorted((e["method"], e["status"]) for e in retries) == sorted(
        (r["method"], r["status"]) for r in failed), (
        "requests the sandbox failed: "
        f"{[(r['method'], r['path'], r['status']) for r in failed]}; retry events: "
        f"{[(e['method'], e['path'], e['status']) for e in retries]}")


# ---- 3. progress when not a terminal, --quiet ---------------------------------------------


def test_progress_is_plain_lines_on_stderr_and_quiet_prints_nothing(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_invsync(["sync", "--batch-size", "500", str(NIGHT1)], cli_env)
    assert result.returncode == 0, out(result)
    per_location = Counter(loc for loc, _ in stocked(csv_levels(NIGHT1)))
    batches = sum(math.ceil(n / 500) for n in per_location.values())
    # The live read's lines come first; then the submit's.
    stamped = [line for line in result.stderr.splitlines() if " invsync: read" not in line]
    assert "\x1b" not in result.stderr and "\r" not in result.stderr, repr(result.stderr)
    # Not a terminal: each line starts with a UTC timestamp.
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
    assert stamped and all(stamp.match(line) for line in stamped), stamped
    lines = [stamp.sub("", line, count=1) for line in stamped]
    assert all(line.startswith("invsync: ") for line in lines), lines
    assert lines[0] == f"invsync: sending {IN_STOCK:,} items in {batches} batches"
    progress = re.compile(rf"invsync: sent (\d+)/{batches} batches "
                          rf"\(([\d,]+)/{IN_STOCK:,} items\), "
                          r"[\d,]+ items/s(, ETA [\d,]+ s)?")
    sent = [m for m in map(progress.fullmatch, lines[1:]) if m]
    assert sent and len(sent) == len(lines) - 1, lines
    assert sent[-1].group(1) == str(batches) and sent[-1].group(2) == f"{IN_STOCK:,}"
    assert "succeeded" in result.stdout

    n = len(sandbox.requests())
    quiet = run_invsync(["--quiet", "sync", str(NIGHT2)], cli_env)
    assert quiet.returncode == 0, out(quiet)
    assert quiet.stdout == "" and quiet.stderr == ""
    assert sum(put_items(sandbox.requests()[n:]).values()) == 93
    assert stocked(sandbox.levels()) == stocked(csv_levels(NIGHT2))

    failing = run_invsync(["--quiet", "sync", str(tmp_path / "missing.csv")], cli_env)
    assert failing.returncode == 66  # EX_NOINPUT
    # -q still prints the summary line of a run that did not exit 0, and nothing else.
    assert failing.stdout.startswith("invsync: failed run=")
    assert len(failing.stdout.splitlines()) == 1 and " exit=66 " in failing.stdout
    assert failing.stderr.startswith("invsync: ") and "missing.csv" in failing.stderr


# ---- 4. runs and show ------------------------------------------------------------------------


@dataclass
class Run:
    kind: str
    result: CliResult
    report: dict[str, Any]
    transactions: int
    """Writes the sandbox answered 200 during this run."""


@dataclass
class History:
    sb: SandboxProcess
    env: dict[str, str]
    runs: list[Run]
    missing: Path

    def by_kind(self, kind: str) -> Run:
        return next(r for r in self.runs if r.kind == kind)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Five runs, oldest first: success, partial, plan, dry run, failed reading its input."""
    tmp = tmp_path_factory.mktemp("history")
    missing = tmp / "missing.csv"
    plans: list[tuple[str, list[str], int]] = [
        ("success", ["sync", str(NIGHT1)], 0),
        ("partial", ["sync", "--allow-shrink", str(MERCHANT)], 1),
        ("plan", ["plan", str(NIGHT2)], 0),
        ("dry_run", ["sync", "--dry-run", str(NIGHT2)], 0),
        ("failed", ["sync", str(missing)], 66),  # EX_NOINPUT
    ]
    with run_sandbox(SAMPLE / "catalog.csv", token=TOKEN) as sb:
        env = env_for(sb, tmp)
        runs: list[Run] = []
        for kind, args, code in plans:
            if runs:
                wait_for_next_second(runs[-1].report["run_id"])
            n = len(sb.requests())
            result = run_invsync(args, env)
            assert result.returncode == code, (kind, out(result))
            txns = sum(1 for r in puts(sb.requests()[n:]) if r["status"] == 200)
            runs.append(Run(kind, result, result.report(), txns))
        yield History(sb, env, runs, missing)


def test_runs_lists_every_run_newest_first_with_status_and_counts(history: History) -> None:
    newest_first = list(reversed(history.runs))
    expected_status = {"success": "succeeded", "partial": "partial", "plan": "dry_run",
                       "dry_run": "dry_run", "failed": "failed"}
    partial = history.by_kind("partial").report["counts"]
    assert partial["rejected"] == 9 and partial["refused"] == 1 and partial["accepted"] == 42
    assert history.by_kind("success").transactions >= 2
    assert history.by_kind("partial").transactions >= 1

    listed = run_invsync(["runs"], history.env)
    assert listed.returncode == 0, out(listed)
    # 100 columns at most (cron mail, a terminal): --json has every field.
    assert max(map(len, listed.stdout.splitlines())) <= 100, listed.stdout
    rows = [r for r in map(str.split, listed.stdout.splitlines()) if r and RUN_ID.fullmatch(r[0])]
    assert [r[0] for r in rows] == [run.report["run_id"] for run in newest_first], listed.stdout
    for row, run in zip(rows, newest_first, strict=True):
        c = run.report["counts"]
        assert row[1] == ("plan" if run.kind == "plan" else "sync"), row
        assert row[2] == expected_status[run.kind], row
        assert row[-3:] == [f"{c['rows']:,}", f"{c['accepted']:,}", f"{c['rejected']:,}"], (
            run.kind, row)

    as_json = run_invsync(["runs", "--json"], history.env)
    assert as_json.returncode == 0, out(as_json)
    lines = json_lines(as_json.stdout)
    assert [r["run_id"] for r in lines] == [run.report["run_id"] for run in newest_first]
    for line, run in zip(lines, newest_first, strict=True):
        c = run.report["counts"]
        assert line["status"] == expected_status[run.kind], line
        assert (line["rows"], line["changed"], line["accepted"], line["rejected"]) == (
            c["rows"], c["changed"], c["accepted"], c["rejected"]), line
        assert line["transactions"] == run.transactions, line
        assert line["exit_code"] == run.result.returncode, line
        assert line["store"] == history.sb.store_hash
        assert Path(line["folder"]) == run.result.report_dir()

    # Independent expectations for the counts themselves.
    levels_now = history.sb.levels()
    night2 = csv_levels(NIGHT2)
    would_change = sum(1 for k, q in night2.items() if levels_now.get(k, 0) != q)
    by_kind = {run.kind: line for line, run in zip(lines, newest_first, strict=True)}
    assert (by_kind["success"]["accepted"], by_kind["success"]["rows"]) == (IN_STOCK, 3114)
    assert by_kind["dry_run"]["changed"] == by_kind["plan"]["changed"] == would_change
    assert by_kind["dry_run"]["accepted"] == by_kind["dry_run"]["transactions"] == 0
    assert by_kind["failed"]["rows"] == by_kind["failed"]["transactions"] == 0

    limited = run_invsync(["runs", "--json", "-n", "2"], history.env)
    assert [r["run_id"] for r in json_lines(limited.stdout)] == [
        run.report["run_id"] for run in newest_first[:2]]


def _shown_paths(text: str) -> set[Path]:
    return {Path(line.strip()) for line in text.splitlines() if line.startswith("  /")}


def test_show_by_id_prefix_and_last_prints_summary_and_existing_files(history: History) -> None:
    success, partial, dry_run, failed = (history.by_kind(k) for k in (
        "success", "partial", "dry_run", "failed"))
    prefix = partial.report["run_id"][:-2]
    assert sum(r.report["run_id"].startswith(prefix) for r in history.runs) == 1
    # `last` is the newest run that read its file: the newer run that could not read its
    # input is passed over (it is still shown by its id).
    for ref, run in ((success.report["run_id"], success), (prefix, partial), ("last", dry_run),
                     (failed.report["run_id"], failed)):
        shown = run_invsync(["show", ref], history.env)
        assert shown.returncode == 0, out(shown)
        rid, folder = run.report["run_id"], run.result.report_dir()
        assert f"invsync run {rid}: {run.report['status']}" in shown.stdout
        assert shown.report_dir() == folder
        rows_read = next(line.split() for line in shown.stdout.splitlines()
                         if line.startswith("rows read"))
        assert rows_read[-1] == f"{run.report['counts']['rows']:,}"
        existing = {folder / name for name in SHOWN_FILES if (folder / name).exists()}
        assert _shown_paths(shown.stdout) == existing, (ref, shown.stdout)
        assert all(p.exists() for p in existing)
        assert {folder / "report.json", folder / "report.html"} <= existing
        if run is not failed:
            assert {folder / "rejected.csv", folder / "plan.csv"} <= existing
        else:
            assert "cannot read file" in shown.stdout
    ambiguous = run_invsync(["show", history.runs[0].report["run_id"][:4]], history.env)
    assert ambiguous.returncode == 64 and "matches 5 runs" in ambiguous.stderr
    unknown = run_invsync(["show", "19990101T000000Z"], history.env)
    assert unknown.returncode == 64 and "no run" in unknown.stderr


def test_every_run_folder_has_report_html_and_summary_md(history: History) -> None:
    folders = {run.result.report_dir() for run in history.runs}
    runs_dir = next(iter(folders)).parent
    assert folders == {p.parent for p in runs_dir.glob("*/report.json")}
    for folder in folders:
        assert_human_reports(folder)


def test_runs_records_which_command_made_the_run(history: History) -> None:
    """`invsync plan` is recorded as command "plan" in report.json and `runs --json`."""
    plan = history.by_kind("plan")
    assert plan.report["command"] == "plan", (
        f"report.json of the plan run {plan.report['run_id']} says command "
        f"{plan.report['command']!r}")
    lines = json_lines(run_invsync(["runs", "--json"], history.env).stdout)
    assert {r["run_id"]: r["command"] for r in lines}[plan.report["run_id"]] == "plan"


def test_run_that_failed_reading_its_input_still_names_the_file(history: History) -> None:
    """`runs` and `show` must say which file a failed run could not read."""
    failed = history.by_kind("failed")
    assert failed.report["input"].get("path") == str(history.missing), (
        f"report.json input is {failed.report['input']!r}; the summary says: "
        f"{failed.result.stdout.splitlines()[0]!r}")
    lines = json_lines(run_invsync(["runs", "--json"], history.env).stdout)
    assert {r["run_id"]: r["file"] for r in lines}[failed.report["run_id"]] == str(
        history.missing)
    assert f"failed ({history.missing})" in failed.result.stdout


# ---- 5. --baseline live ---------------------------------------------------------------------


def test_baseline_live_sees_and_restores_edits_made_behind_the_snapshots_back(
        sandbox: SandboxProcess, cli_env: dict[str, str]) -> None:
    # A store synced with --baseline snapshot is blind to edits; the live baseline (the
    # default) sees and restores them.
    first = run_invsync(["sync", "--baseline", "snapshot", str(NIGHT1)], cli_env)
    assert first.returncode == 0, out(first)
    night1 = csv_levels(NIGHT1)
    edits = edited_levels()
    edit_behind_the_back(sandbox, edits)

    n = len(sandbox.requests())
    blind = run_invsync(["sync", "--dry-run", "--baseline", "snapshot", str(NIGHT1)], cli_env)
    assert blind.returncode == 0, out(blind)
    assert blind.report()["counts"]["changed"] == 0
    assert read_plan(blind.report_dir() / "plan.csv")[1] == []

    live = run_invsync(["sync", "--dry-run", "--baseline", "live", str(NIGHT1)], cli_env)
    assert live.returncode == 0, out(live)
    assert live.report()["counts"]["changed"] == len(edits)
    assert live.report()["counts"]["unchanged"] == len(night1) - len(edits)
    rows = read_plan(live.report_dir() / "plan.csv")[1]
    assert sorted((int(r["location_id"]), r["item"], int(r["before"]), int(r["after"]))
                  for r in rows) == sorted((loc, sku, q, night1[(loc, sku)])
                                           for (loc, sku), q in edits.items())
    assert puts(sandbox.requests()[n:]) == []
    assert all(sandbox.levels()[k] == q for k, q in edits.items())

    restore = run_invsync(["sync", "--baseline", "live", str(NIGHT1)], cli_env)
    assert restore.returncode == 0, out(restore)
    assert put_items(sandbox.requests()[n:]) == Counter(
        (loc, sku, night1[(loc, sku)]) for loc, sku in edits)
    assert sandbox.levels() == night1
    assert restore.report()["status"] == "succeeded"
    assert restore.report()["options"]["baseline"] == "live"
    for result in (blind, live, restore):
        assert_human_reports(result.report_dir())


# ---- 6. drift ---------------------------------------------------------------------------------


DRIFT_LINE = re.compile(r"\s+location (\d+) (\w+) (\S+): expected ([\d,]+), store has "
                        r"([\d,]+|not listed)")


def drift_items(text: str) -> set[tuple[int, str, int, int]]:
    return {(int(m[1]), m[3], int(m[4].replace(",", "")), int(m[5].replace(",", "")))
            for m in map(DRIFT_LINE.fullmatch, text.splitlines()) if m and m[2] == "sku"}


def test_drift_reports_exactly_the_items_edited_behind_the_snapshots_back(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # The sandbox shows a write to reads at once: drift need not re-read what differs for
    # verify_lag_s (30 s) after invsync's own write before calling it drift.
    (tmp_path / "no-lag.toml").write_text("verify_lag_s = 0\n")
    cli_env["INVSYNC_CONFIG"] = str(tmp_path / "no-lag.toml")
    # Drift compares the snapshot: synced with --baseline snapshot, it holds every item.
    first = run_invsync(["sync", "--baseline", "snapshot", str(NIGHT1)], cli_env)
    assert first.returncode == 0, out(first)
    night1 = csv_levels(NIGHT1)

    clean = run_invsync(["drift"], cli_env)
    assert clean.returncode == 0, out(clean)
    held = len(night1)
    assert f"{held:,} items checked, {held:,} match, 0 differ" in clean.stdout

    edits = edited_levels()
    edit_behind_the_back(sandbox, edits)
    n = len(sandbox.requests())
    found = run_invsync(["--log-format", "json", "drift"], cli_env)
    assert found.returncode == 1, out(found)
    (event,) = [e for e in json_lines(found.stdout) if e["event"] == "drift"]  # after read events
    assert event["event"] == "drift" and event["checked"] == held
    assert event["differences"] == len(edits) and event["matched"] == held - len(edits)
    assert sorted((i["location_id"], i["identifier"], i["item_key"], i["expected"], i["live"])
                  for i in event["items"]) == sorted(
        (loc, "sku", sku, night1[(loc, sku)], q) for (loc, sku), q in edits.items())

    # drift FILE: only the file's items are checked.
    edited_in_file = EDITED[:2]
    untouched = [k for k in night1 if k not in edits][:10]
    subset = write_csv(tmp_path / "subset.csv", ["sku", "location_id", "quantity"],
                       [[sku, loc, 1] for loc, sku in [*edited_in_file, *untouched]])
    restricted = run_invsync(["drift", str(subset)], cli_env)
    assert restricted.returncode == 1, out(restricted)
    assert "12 items checked, 10 match, 2 differ" in restricted.stdout
    assert drift_items(restricted.stdout) == {
        (loc, sku, night1[(loc, sku)], edits[(loc, sku)]) for loc, sku in edited_in_file}

    calm = write_csv(tmp_path / "calm.csv", ["sku", "location_id", "quantity"],
                     [[sku, loc, 1] for loc, sku in untouched])
    quiet_file = run_invsync(["drift", str(calm)], cli_env)
    assert quiet_file.returncode == 0, out(quiet_file)
    assert "10 items checked, 10 match, 0 differ" in quiet_file.stdout
    assert puts(sandbox.requests()[n:]) == [], "drift must only read"


# ---- 7. verify ----------------------------------------------------------------------------------


def test_verify_confirms_a_run_and_names_levels_changed_after_it(
        sandbox: SandboxProcess, cli_env: dict[str, str]) -> None:
    run = run_invsync(["sync", str(NIGHT1)], cli_env)
    assert run.returncode == 0, out(run)
    run_id, folder = run.report()["run_id"], run.report_dir()
    accepted = run.report()["counts"]["accepted"]

    ok = run_invsync(["verify", run_id], cli_env)
    assert ok.returncode == 0, out(ok)
    verify = json.loads((folder / "verify.json").read_text())
    assert verify["run_id"] == run_id
    assert verify["matched"] == verify["checked"] == accepted == IN_STOCK
    assert verify["differences"] == []
    assert f"{accepted:,} items checked, {accepted:,} match, 0 differ" in ok.stdout

    loc, sku = EDITED[0]
    night1 = csv_levels(NIGHT1)
    edit_behind_the_back(sandbox, {(loc, sku): 7})
    changed = run_invsync(["verify", run_id, "--timeout", "1"], cli_env)
    assert changed.returncode == 1, out(changed)
    assert drift_items(changed.stdout) == {(loc, sku, night1[(loc, sku)], 7)}
    verify = json.loads((folder / "verify.json").read_text())
    assert verify["matched"] == accepted - 1
    assert [(d["location_id"], d["item_key"], d["expected"], d["live"])
            for d in verify["differences"]] == [(loc, sku, night1[(loc, sku)], 7)]


def test_verify_waits_for_writes_that_land_late(sandbox_factory: Factory,
                                                tmp_path: Path) -> None:
    sb = sandbox_factory("--apply-delay-ms", "1500")
    env = env_for(sb, tmp_path)
    run = run_invsync(["sync", str(NIGHT1)], env)
    assert run.returncode == 0, out(run)
    n = len(sb.requests())
    ok = run_invsync(["verify", "last", "--timeout", "10"], env)
    assert ok.returncode == 0, out(ok)
    verify = json.loads((run.report_dir() / "verify.json").read_text())
    # Everything matched (a verify that gave up at its timeout would list differences).
    assert verify["matched"] == verify["checked"] == run.report()["counts"]["accepted"] == \
        IN_STOCK
    assert verify["reads"] >= 1
    assert puts(sb.requests()[n:]) == [], "verify must only read"


# ---- 8. resume ----------------------------------------------------------------------------------


def test_resume_with_nothing_to_resume_is_a_usage_error(sandbox: SandboxProcess,
                                                        cli_env: dict[str, str]) -> None:
    result = run_invsync(["resume"], cli_env)
    assert result.returncode == 64, out(result)
    assert "nothing to resume" in result.stderr
    assert sandbox.store_hash in result.stderr
    assert result.stdout == ""
    assert sandbox.requests() == []


# ---- 9. the Makefile runbook targets ----------------------------------------------------------


def _make(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_plan_and_sync_runbook_targets(sandbox: SandboxProcess,
                                            cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    extra: list[str] = []
    stamp = ".venv/.installed-stamp"
    if subprocess.run(["make", "-q", stamp], cwd=ROOT, env=env).returncode != 0:
        # Never reinstall the shared venv from a test: treat the install step as done.
        warnings.warn("make would reinstall the venv (stamp older than pyproject.toml); "
                      "running the targets with -o " + stamp, stacklevel=1)
        extra = ["-o", stamp]

    plan = _make([*extra, "plan", "FILE=sample_data/night2.csv"], env)
    assert plan.returncode == 0, out(plan)
    assert "pip install" not in plan.stdout, "make plan reinstalled the venv"
    assert "plan by location" in plan.stdout and "push exactly this plan with" in plan.stdout
    assert "dry_run" in plan.stdout

    sync = _make([*extra, "sync", "FILE=sample_data/night2.csv", "DRY_RUN=1"], env)
    assert sync.returncode == 0, out(sync)
    assert "--dry-run" in sync.stdout and ": dry_run (" in sync.stdout
    assert "would send" in sync.stdout
    assert puts(sandbox.requests()) == []
    assert sandbox.levels() == {}

    for target in ("sync", "plan"):
        usage = _make([*extra, target], env)
        assert usage.returncode != 0
        assert f"usage: make {target} FILE=path" in out(usage)
    assert puts(sandbox.requests()) == []


def test_plan_file_levels_are_final_quantity_rules_are_not_applied_twice(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    """A plan made with a buffer holds final levels: pushing it (with the same config, so the
    same buffer in force) must send exactly them, not the buffer subtracted a second time."""
    stock = write_csv(tmp_path / "stock.csv", ["sku", "quantity"],
                      [["TOWEL-907-NAVY-SHEET", 10], ["POSTER-1755", 7]])
    config = tmp_path / "invsync.toml"
    config.write_text("[quantity]\nbuffer = 2\n")
    plan = run_invsync(["plan", str(stock), "--config", str(config)], cli_env)
    assert plan.returncode == 0, out(plan)
    _, rows = read_plan(plan.report_dir() / "plan.csv")
    final = [("POSTER-1755", 5), ("TOWEL-907-NAVY-SHEET", 8)]
    assert sorted((r["item"], int(r["after"])) for r in rows) == final
    pushed = run_invsync(["sync", "--plan-file", str(plan.report_dir() / "plan.csv"),
                          "--config", str(config)], cli_env)
    assert pushed.returncode == 0, out(pushed)
    sent = sorted((it["sku"], it["quantity"]) for r in puts(sandbox.requests())
                  for it in r["items"])
    assert sent == final
