"""Red-team findings against a run's plumbing: one loop and one client per run, counts from
independent sources, signals at every stage, full disks, a store that misbehaves.

The real CLI (a child process) against a real sandbox process on 127.0.0.1, with the small
misbehaving server (``tests/misbehaving.py``) in front of it where the attack needs one.
Each test guards a fix made after this hunt (it failed before the fix), or is marked
``xfail(strict=True)`` with the defect it shows.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    catalog_skus,
    env_at,
    kill_when,
    output,
    retry_config,
    run_invsync,
    spawn,
    wait_for,
    write_stock,
)
from misbehaving import HoldPuts, Reply, Request, misbehaving_store

from invsync.sandbox.process import SandboxProcess

Factory = Callable[..., SandboxProcess]


def fast_retry_config(tmp_path: Path, **retry: float) -> Path:
    return retry_config(tmp_path, **{"max_attempts": 5, "base_delay_s": 0.05,
                                     "max_delay_s": 0.2, "max_total_s": 30.0,
                                     "timeout_s": 10.0, **retry})


def with_headers(headers: dict[str, str]) -> Callable[[Request], Reply | None]:
    """Forward every request, with ``headers`` set on every answer (reads and writes)."""

    def respond(req: Request) -> Reply | None:
        def alter(reply: Reply) -> Reply:
            for name, value in headers.items():
                reply.set_header(name, value)
            return reply

        req.alter = alter
        return None

    return respond


# ---- 1. a quota window the store states absurdly long or negative ---------------------


@pytest.mark.parametrize("window_ms", ["1000000000", "-1000", "0"])
def test_a_nonsense_quota_window_is_waited_at_most_max_wait_s(
        sandbox: SandboxProcess, tmp_path: Path, window_ms: str) -> None:
    """Every answer (reads, then writes) says: 1 request per window, none left, reset in
    10 ms. An 11-day window failed the run (a wait the store asks for is at most
    max_wait_s); a window of -1000 ms made the limiter open a 'new window' that ended before
    it began, over and over, never yielding to the loop: the run spun at 100% CPU forever
    (a hang shows as subprocess.TimeoutExpired: the child is killed)."""
    respond = with_headers({"X-Rate-Limit-Requests-Quota": "1",
                            "X-Rate-Limit-Time-Window-Ms": window_ms,
                            "X-Rate-Limit-Requests-Left": "0",
                            "X-Rate-Limit-Time-Reset-Ms": "10"})
    levels = {(1, sku): 5 + i for i, sku in enumerate(catalog_skus(30))}
    path = write_stock(tmp_path / "stock.csv", levels)
    config = fast_retry_config(tmp_path, max_wait_s=1.0)
    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        result = run_invsync(["sync", str(path), "--config", str(config), "--batch-size", "5"],
                             env, timeout=180)
    assert "Traceback" not in output(result)
    assert result.returncode == 0, output(result)
    assert {k: v for k, v in sandbox.levels().items() if k in levels} == levels


# ---- 2. SIGINT/SIGTERM mid-submit: the report keeps what the store confirmed ------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_submit_reports_the_batches_the_store_confirmed(
        sandbox: SandboxProcess, tmp_path: Path, children: list[subprocess.Popen[bytes]],
        sig: int, code: int) -> None:
    """The first batch lands and is confirmed, the second is held by the store; then the
    operator presses Ctrl-C (or systemd stops the job). The report said rows=0 updated=0,
    no transaction id: as if nothing had been sent, while the store holds the first batch."""
    hold = HoldPuts(let=1)

    levels = {(1, sku): 7 + i for i, sku in enumerate(catalog_skus(10))}
    path = write_stock(tmp_path / "stock.csv", levels)
    reports = tmp_path / "reports"
    with misbehaving_store(hold, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        log = tmp_path / "run.log"
        proc = spawn(["sync", str(path), "--batch-size", "5", "--concurrency", "1",
                      "--report-dir", str(reports)], env, log, children)
        try:
            wait_for(hold.held.is_set, proc, log, timeout=120)
            time.sleep(0.3)  # the point: the signal lands while the second batch is held
            proc.send_signal(sig)
            proc.wait(timeout=60)
            landed = [k for k, v in levels.items() if sandbox.levels().get(k) == v]
        finally:
            hold.stop()
        # The next run finishes: the store ends equal to the file.
        done = run_invsync(["resume", "--report-dir", str(reports)], env)
    text = log.read_text()
    assert proc.returncode == code, text
    assert "Traceback" not in text
    report = json.loads(sorted(reports.glob("*/report.json"))[0].read_text())
    assert report["status"] == "interrupted", report
    counts = report["counts"]
    # The store applied the first batch and confirmed it with a transaction id.
    assert len(landed) == 5, sandbox.levels()
    assert counts["rows"] == 10, counts
    assert counts["accepted"] == 5, counts
    assert counts["submitted"] == counts["accepted"] + counts["refused"] \
        + counts["unconfirmed"], counts
    assert counts["changed"] == counts["submitted"] + counts["not_sent"], counts
    assert len(report["transaction_ids"]) == 1, report
    assert "updated=0 " not in text, text
    assert done.returncode == 0, output(done)
    assert {k: v for k, v in sandbox.levels().items() if k in levels} == levels


# ---- 3. an encoding Python knows that is no text encoding ---------------------------------


@pytest.mark.parametrize(("encoding", "code"), [("base64", 64), ("rot13", 64), ("zlib", 64),
                                                ("undefined", 65), ("punycode", 65)])
def test_a_codec_that_is_not_a_text_encoding_is_bad_usage_not_an_unexpected_error(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        encoding: str, code: int) -> None:
    """``--encoding base64`` passed codecs.lookup, then decoding raised LookupError: exit 2,
    'unexpected error'. A codec of bytes is no text encoding (64); a text codec that cannot
    read the file makes it unusable (65), as for any other encoding."""
    path = write_stock(tmp_path / "stock.csv", {(1, catalog_skus(1)[0]): 5})
    result = run_invsync(["sync", str(path), "--encoding", encoding], cli_env)
    assert "Traceback" not in output(result)
    assert "unexpected error" not in output(result), output(result)
    assert result.returncode == code, output(result)
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


def test_the_upload_api_answers_400_for_a_codec_that_is_not_a_text_encoding(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """POST /api/uploads with ``encoding=base64`` (a name Python knows) was a 500."""
    import test_web
    from starlette.testclient import TestClient
    from test_web import api_upload, login

    from invsync.surfaces.web.app import Options, create_app
    from invsync.surfaces.web.auth import Accounts

    settings = test_web.make_settings(sandbox, tmp_path)
    Accounts(settings.state_dir).add_user("merchant", test_web.PASSWORD)
    with TestClient(create_app(settings, Options()), raise_server_exceptions=False) as http:
        login(http)
        for encoding in ("base64", "rot13", "zlib", "utf-8\x00"):
            answer = api_upload(http, encoding=encoding)
            assert answer.status_code == 400, (encoding, answer.text)
            assert "encoding" in answer.json()["error"], answer.text
        for encoding in ("undefined", "punycode"):  # text codecs that cannot read the file
            answer = api_upload(http, encoding=encoding)
            assert answer.status_code == 422, (encoding, answer.text)
            assert "not valid" in answer.json()["error"], answer.text
        # Python's int() reads these as 10 and 3: not 'a whole number' as the API says.
        for row in ("1_0", "\uff13", "-0", "1e3", "9" * 5000):
            answer = api_upload(http, header_row=row)
            assert answer.status_code == 400, (row[:20], answer.text)
            assert "header row" in answer.json()["error"], answer.text


# ---- 4. Ctrl-C while the report is written ----------------------------------------------


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_the_report_is_written_leaves_the_run_in_history(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        children: list[subprocess.Popen[bytes]], sig: int, code: int) -> None:
    """The stock was sent and the snapshot recorded; then, while 150,000 rejected rows were
    written, the operator pressed Ctrl-C. The folder kept rejected.csv and plan.csv but no
    report.json: `runs` and `show last` did not see the run (and `revert last` / `verify
    last` would pick the run before it), and no summary line was printed."""
    good = {(1, sku): 5 + i for i, sku in enumerate(catalog_skus(50))}
    rows = [[sku, loc, qty] for (loc, sku), qty in good.items()]
    rows += [[f"BAD-{i}", 1, "x"] for i in range(150_000)]
    path = tmp_path / "stock.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "location_id", "quantity"])
        writer.writerows(rows)
    reports = tmp_path / "reports"
    log = tmp_path / "run.log"
    proc = spawn(["sync", str(path), "--report-dir", str(reports)], cli_env, log, children)
    # The rejected rows' (temporary) file: the report is being written (plan.csv may be
    # written earlier, from the moment the plan is made, while the stock is sent).
    wait_for(lambda: [p for p in reports.glob("*/*") if "rejected" in p.name], proc, log,
             timeout=180, every=0.005)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    text = log.read_text()
    assert "Traceback" not in text
    assert proc.returncode == code, text
    assert {k: v for k, v in sandbox.levels().items() if k in good} == good
    folder = next(reports.iterdir())
    report = json.loads((folder / "report.json").read_text())
    assert (report["status"], report["exit_code"]) == ("interrupted", code), report
    assert report["counts"]["accepted"] == 50, report["counts"]
    assert "the stock was sent and the snapshot recorded" in report["error"], report["error"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], list(folder.iterdir())
    assert f"run={folder.name}" in text, text  # the summary line
    shown = run_invsync(["show", "last", "--report-dir", str(reports)], cli_env)
    assert shown.returncode == 0 and folder.name in shown.stdout, output(shown)


# ---- 5. drift FILE of a bin-level export ------------------------------------------------


def test_drift_of_a_file_compares_items_listed_in_several_rows(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    """A bin-level warehouse export (one row per bin) is synced with --duplicates sum; then
    someone edits one of its items in the control panel. `drift FILE` validated the file
    with the default duplicate policy (reject), so every item listed in several rows was
    dropped from the comparison: 'the snapshot holds no items to compare', exit 0."""
    skus = catalog_skus(3)
    rows = [[sku, 1, 2] for sku in skus] + [[sku, 1, 3] for sku in skus]  # two bins each
    path = tmp_path / "bins.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "location_id", "quantity"])
        writer.writerows(rows)
    synced = run_invsync(["sync", str(path), "--duplicates", "sum"], cli_env)
    assert synced.returncode == 0, output(synced)
    assert {k: v for k, v in sandbox.levels().items() if k[1] in skus} == \
        {(1, sku): 5 for sku in skus}
    body = json.dumps([{"location_id": 1, "sku": skus[0], "quantity": 99}]).encode()
    urllib.request.urlopen(urllib.request.Request(
        sandbox.url + "/_sandbox/levels", data=body, method="POST",
        headers={"Content-Type": "application/json"}), timeout=30).read()
    # The sandbox shows a write to reads at once: drift need not re-read what differs for
    # verify_lag_s (30 s) after invsync's own write before calling it drift.
    (tmp_path / "no-lag.toml").write_text("verify_lag_s = 0\n")
    drift = run_invsync(["drift", str(path), "--config", str(tmp_path / "no-lag.toml")],
                        cli_env)
    assert "Traceback" not in output(drift)
    assert drift.returncode == 1, output(drift)
    assert skus[0] in drift.stdout, drift.stdout
    assert skus[1] not in drift.stdout, drift.stdout


# ---- 6. every JSON event is a documented, typed event name -------------------------------


def test_every_json_event_of_a_revert_is_a_typed_event_name(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    """`revert --log-format json` printed a `revert_left` event that invsync.events.EventName
    (the documented list) did not have: a log shipper filtering on it never sees it."""
    from invsync.events import EVENT_NAMES

    skus = catalog_skus(4)
    first = run_invsync(["sync", str(write_stock(tmp_path / "a.csv",
                                                 {(1, s): 5 for s in skus}))], cli_env)
    assert first.returncode == 0, output(first)
    second = run_invsync(["sync", str(write_stock(tmp_path / "b.csv",
                                                  {(1, s): 9 for s in skus}))], cli_env)
    assert second.returncode == 0, output(second)
    result = run_invsync(["--log-format", "json", "revert", "last"], cli_env)
    assert result.returncode == 0, output(result)
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()
              if line.startswith("{")]
    assert "run_finished" in events, result.stdout
    assert set(events) <= set(EVENT_NAMES), set(events) - set(EVENT_NAMES)


# ---- 7. a fractional or boolean number in the config --------------------------------------


@pytest.mark.parametrize("line", ["location_id = 2.5", "location_id = true",
                                  "header_row = 1.5", "batch_size = true"])
def test_a_fractional_or_boolean_number_in_the_config_is_a_bad_config(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path, line: str) -> None:
    """``location_id = 2.5`` was truncated to 2: the file's rows went to location 2."""
    config = tmp_path / "invsync.toml"
    config.write_text(line + "\n")
    path = write_stock(tmp_path / "stock.csv", {(1, catalog_skus(1)[0]): 5})
    plain = path.read_text().replace(",1,", ",,")  # rows without a location of their own
    path.write_text(plain)
    reports = tmp_path / "reports"
    result = run_invsync(["sync", str(path), "--config", str(config),
                          "--report-dir", str(reports)], cli_env)
    assert "Traceback" not in output(result)
    assert result.returncode == 64, output(result)
    assert line.split()[0] in result.stderr, output(result)
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


# ---- 8. kill -9 of a --plan-file run, then resume -----------------------------------------


def test_resume_finishes_a_killed_plan_file_run(
        sandbox: SandboxProcess, tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    """A reviewed plan is pushed (`sync --plan-file`, which `revert` uses too); the first batch
    is confirmed, the process is killed while the second is in flight. `invsync resume`
    replays the journal, then finds the plan's old levels no longer match the snapshot (the
    confirmed batch moved them): 'the snapshot moved since this plan was made', exit 3."""
    hold = HoldPuts(let=1, armed=False)

    skus = catalog_skus(10)
    before = {(1, s): 5 for s in skus}
    after = {(1, s): 20 + i for i, s in enumerate(skus)}
    reports = tmp_path / "reports"
    with misbehaving_store(hold, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        first = run_invsync(["sync", str(write_stock(tmp_path / "a.csv", before))], env)
        assert first.returncode == 0, output(first)
        plan = run_invsync(["plan", str(write_stock(tmp_path / "b.csv", after)),
                            "--report-dir", str(reports)], env)
        assert plan.returncode == 0, output(plan)
        plan_file = plan.report_dir() / "plan.csv"
        hold.armed = True
        log = tmp_path / "killed.log"
        proc = spawn(["sync", "--plan-file", str(plan_file), "--batch-size", "5",
                      "--concurrency", "1", "--report-dir", str(reports)], env, log, children)
        try:
            kill_when(hold.held.is_set, proc, log, timeout=120)
        finally:
            hold.stop()
        done = run_invsync(["resume", "--report-dir", str(reports)], env)
    assert "Traceback" not in output(done)
    assert done.returncode == 0, output(done)
    assert {k: v for k, v in sandbox.levels().items() if k in after} == after


# ---- 9. a run stopped before it sends counts no rows ---------------------------------------


def test_a_run_interrupted_during_its_live_read_counts_the_rows_it_read(
        sandbox: SandboxProcess, tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    release = threading.Event()
    held = threading.Event()

    def respond(req: Request) -> Reply | None:
        if req.method == "GET" and req.path == "/inventory/items":
            held.set()
            release.wait(timeout=120)
            return Reply.json(503, {"title": "held by the test"})
        return None

    levels = {(1, sku): 3 for sku in catalog_skus(12)}
    path = write_stock(tmp_path / "stock.csv", levels)
    reports = tmp_path / "reports"
    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        log = tmp_path / "run.log"
        proc = spawn(["sync", str(path), "--baseline", "live", "--report-dir", str(reports)],
                     env, log, children)
        try:
            wait_for(held.is_set, proc, log, timeout=120)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        finally:
            release.set()
    assert proc.returncode == 130, log.read_text()
    report = json.loads(next(reports.glob("*/report.json")).read_text())
    assert report["status"] == "interrupted"
    assert report["input"]["rows"] == 12
    assert report["counts"]["rows"] == report["input"]["rows"], report["counts"]
    # Its rows were never counted: all unchecked, nothing else counted, the identity kept.
    counts = report["counts"]
    assert counts["unchecked"] == 12, counts
    assert counts["rows"] == counts["valid"] + counts["invalid"] + counts["unchecked"]
    assert {k: v for k, v in counts.items() if v} == {"rows": 12, "unchecked": 12}, counts
    text = log.read_text()
    assert "rows read 12: the run stopped before checking them" in text, text
    line = next(x for x in text.splitlines() if x.startswith("invsync: interrupted run="))
    assert " rows=12 " in line, line
