"""What invsync writes and prints is safe, and every run ends with a report (issue 9: 17, 18, 20).

17. Spreadsheet formula injection: headers and cells of rejected.csv, rejected.xlsx and
    plan.csv that a spreadsheet would evaluate are escaped; re-uploading reads them back.
18. Terminal injection: file text is printed as data (no rich markup, no control codes).
20. Never a traceback: unwritable folders are refused before anything is sent; a full disk,
    an unexpected error, SIGINT and SIGTERM end with one line, an exit code and a report.

Every test runs the real CLI as a subprocess against a real sandbox process on 127.0.0.1.
"""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from conftest import (
    ROOT,
    SAMPLE,
    CliResult,
    env_at,
    env_for,
    output,
    run_invsync,
    wait_for,
    write_csv,
)

from invsync.sandbox.process import SandboxProcess

Factory = Callable[..., SandboxProcess]


def puts(sb: SandboxProcess) -> list[dict[str, Any]]:
    return [r for r in sb.requests() if r["method"] == "PUT"]


def no_traceback(result: CliResult) -> None:
    assert "Traceback" not in output(result), output(result)


def one_error_line(result: CliResult) -> str:
    """With ``-q`` invsync prints nothing but the error: exactly one line on stderr."""
    no_traceback(result)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("invsync: "), result.stderr
    # stdout: nothing, or (a run that ended with exit != 0) its one summary line.
    out = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(out) <= 1, result.stdout
    assert not out or (out[0].startswith("invsync: ") and " run=" in out[0]), result.stdout
    return lines[0]


def report_of(folder: Path) -> dict[str, Any]:
    """The only run's report.json under ``folder``."""
    found = sorted(folder.glob("*/report.json"))
    assert len(found) == 1, found
    return dict(json.loads(found[0].read_text(encoding="utf-8")))


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.reader(fh))


# ---- 17. formula injection ---------------------------------------------------------------------

EVIL_HEADER = "=cmd|' /C calc'!A0"


def test_hostile_headers_and_blank_prefixed_formulas_are_escaped_and_read_back(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_csv(tmp_path / "hostile.csv", ["sku", "quantity", EVIL_HEADER], [
        ["MUG-4916", "five", " =1+2"],                    # row 2: rejected
        ["LAMP-9823", "\u00a0@SUM(1)", "\u3000-x"],       # row 3: rejected
        ["NB-8084", "x", " -5"],                          # row 4: rejected; " -5" a number
        ["\ufeff@BOM-SKU", "4", "\ufeff+A1"],              # row 5: refused (unknown SKU)
        ["POSTER-1755", "3", "fine"],                     # row 6: accepted
    ])
    first = run_invsync(["sync", str(path)], cli_env)
    assert first.returncode == 1, output(first)
    rows = read_csv(first.report_dir() / "rejected.csv")
    # The header row is file text too: escaped like any cell.
    assert rows[0] == ["sku", "quantity", "'" + EVIL_HEADER, "row", "reason", "message"]
    body = {r[3]: r[:3] for r in rows[1:]}
    assert body["2"] == ["MUG-4916", "five", "' =1+2"]
    assert body["3"] == ["LAMP-9823", "'\u00a0@SUM(1)", "'\u3000-x"]
    assert body["4"] == ["NB-8084", "x", " -5"]
    assert body["5"][2] == "'\ufeff+A1"
    # plan.csv: an item that starts with a formula sign after a BOM is escaped too.
    plan = read_csv(first.report_dir() / "plan.csv")
    items = [r[plan[0].index("item")] for r in plan[1:]]
    assert "POSTER-1755" in items
    assert [i for i in items if "BOM-SKU" in i] == ["'\ufeff@BOM-SKU"]

    # Uploaded again as it is, rejected.csv reads the original cell text back.
    original = {r["row"]: r["value"] for r in first.report()["rejected"]}
    again = tmp_path / "again.csv"
    again.write_bytes((first.report_dir() / "rejected.csv").read_bytes())
    second = run_invsync(["sync", str(again)], cli_env)
    assert second.returncode == 1, output(second)
    values = [r["value"] for r in sorted(second.report()["rejected"], key=lambda r: r["row"])]
    assert values == [original[k] for k in sorted(original)]
    # ... and writes the same escaped cells again (no double escaping).
    assert [r[:3] for r in read_csv(second.report_dir() / "rejected.csv")[1:]] == \
        [r[:3] for r in rows[1:]]


def test_rejected_xlsx_holds_hostile_headers_and_cells_as_quoted_text(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Stock"
    ws.append(["SKU", "Quantity", "placeholder"])
    ws.append(["MUG-4916", "five", " =1+2"])
    ws.append(["LAMP-9823", "\u00a0@SUM(1)", "ok"])
    ws["C1"].value = EVIL_HEADER
    ws["C1"].data_type = "s"  # a text cell in the input, as a hostile file would hold it
    path = tmp_path / "hostile.xlsx"
    wb.save(path)
    result = run_invsync(["sync", str(path)], cli_env)
    assert result.returncode == 1, output(result)
    out = result.report_dir() / "rejected.xlsx"
    with zipfile.ZipFile(out) as z:
        sheet = next(n for n in z.namelist() if n.startswith("xl/worksheets/sheet"))
        assert b"<f>" not in z.read(sheet) and b"<f " not in z.read(sheet)
    cells = {c.coordinate: c for row in openpyxl.load_workbook(out)["Stock"].iter_rows()
             for c in row}
    # Shown as the text it is and kept as text when edited, as Excel stores a typed '=x.
    # (Column A is the Problem column: the file's columns start at B.)
    for coordinate, text in (("D1", EVIL_HEADER), ("D2", " =1+2"), ("C3", "\u00a0@SUM(1)")):
        cell = cells[coordinate]
        assert (cell.value, cell.data_type, cell.quotePrefix) == (text, "s", True), coordinate
    assert cells["B2"].quotePrefix is False


# ---- 18. terminal injection --------------------------------------------------------------------

ESC_CELL = "\x1b[31mred\x1b]0;pwned\x07"
HOSTILE_SKU = "ESC-\x1b[2J-[/x]-\u009b1m"


@pytest.fixture
def hostile_store(sandbox_factory: Factory, tmp_path: Path) -> SandboxProcess:
    """A store whose catalog holds a SKU with markup and control characters."""
    catalog = tmp_path / "catalog.csv"
    text = (SAMPLE / "catalog.csv").read_text(encoding="utf-8")
    catalog.write_text(text + f'"{HOSTILE_SKU}",9000,9001,product\n', encoding="utf-8")
    return sandbox_factory(catalog=catalog)


def assert_printed_as_data(result: CliResult) -> None:
    """No escape sequence reaches the terminal; markup shows as the text it is."""
    no_traceback(result)
    shown = output(result)
    for raw in ("\x1b", "\x07", "\u009b"):
        assert raw not in shown, repr(shown)


def test_markup_and_escape_sequences_in_paths_and_cells_are_printed_as_data(
        hostile_store: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(hostile_store, tmp_path)
    folder = tmp_path / "in[/b]"  # a folder "in[" holding "b]": the path reads "in[/b]"
    for name in ("ok", "bad"):
        (folder / f"{name}[").mkdir(parents=True)
    good = write_csv(folder / "ok[/b].csv", ["sku", "quantity"],
                     [["MUG-4916", "3"], [HOSTILE_SKU, "4"]])
    # A fully successful run at a path with markup in it: exit 0, the path shown as it is.
    ok = run_invsync(["sync", str(good)], env)
    assert ok.returncode == 0, output(ok)
    assert_printed_as_data(ok)
    assert f"({good})" in ok.stdout
    assert ok.report()["exit_code"] == 0
    assert hostile_store.levels()[(1, HOSTILE_SKU)] == 4

    # The summary shows one example per kind of problem: each hostile cell is its kind's.
    bad = write_csv(folder / "bad[/b].csv", ["sku", "quantity", "note", "location"],
                    [["MUG-4916", "[/x]", "a", ""], ["LAMP-9823", "1", "b", ESC_CELL],
                     ["NB-8084", "1", "[bold]x[/bold]", ""]])
    rejected = run_invsync(["sync", str(bad)], env)
    assert rejected.returncode == 1, output(rejected)
    assert rejected.report()["exit_code"] == 1
    assert_printed_as_data(rejected)
    assert "the quantity '[/x]' is not a number" in rejected.stdout
    assert "\\x1b[31mred\\x1b]0;pwned\\x07" in rejected.stdout  # visible, inert

    # The same file through plan, runs, show, drift and verify, with -v logging on.
    for args, code in ((["-v", "plan", str(good)], 0), (["runs"], 0), (["show", "last"], 0),
                       (["drift"], 0)):
        result = run_invsync(args, env)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert_printed_as_data(result)
    assert "[/b]" in run_invsync(["runs"], env).stdout
    hostile_store.post("/_sandbox/reset?levels=1")  # someone emptied the store
    # The sandbox shows a write to reads at once: drift need not re-read what differs for
    # verify_lag_s (30 s) after invsync's own write before calling it drift.
    (tmp_path / "no-lag.toml").write_text("verify_lag_s = 0\n")
    drift = run_invsync(["drift", "--config", str(tmp_path / "no-lag.toml")], env)
    assert drift.returncode == 1, output(drift)
    assert_printed_as_data(drift)
    assert "ESC-\\x1b[2J-[/x]-\\x9b1m" in drift.stdout
    verify = run_invsync(["verify", ok.report()["run_id"], "--timeout", "0.5"], env)
    assert verify.returncode == 1, output(verify)
    assert_printed_as_data(verify)


# ---- 20. never a traceback, always a report ----------------------------------------------------


def big_file(tmp_path: Path, n: int = 3000) -> tuple[Path, dict[tuple[int, str], int]]:
    """A valid stock file of ``n`` catalog items at location 1, and the levels it sets."""
    skus = [r["sku"] for r in csv.DictReader(io.StringIO(
        (SAMPLE / "catalog.csv").read_text(encoding="utf-8"))) if r["tracking"] != "none"][:n]
    levels = {(1, sku): (i % 50) + 1 for i, sku in enumerate(skus)}
    path = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                     [[sku, loc, qty] for (loc, sku), qty in levels.items()])
    return path, levels


def test_report_dir_that_is_a_file_is_refused_before_anything_is_sent(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    not_a_folder = tmp_path / "reports"
    not_a_folder.write_text("a file", encoding="utf-8")
    path, _ = big_file(tmp_path, 10)
    for command in ("sync", "plan"):
        result = run_invsync(["-q", command, str(path), "--report-dir", str(not_a_folder)],
                             cli_env)
        assert result.returncode == 64, output(result)
        line = one_error_line(result)
        assert str(not_a_folder) in line and "not a folder" in line, line
    assert puts(sandbox) == []


def test_read_only_state_dir_is_refused_before_anything_is_sent(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        tmpfs: Callable[..., Path]) -> None:
    state = tmpfs(tmp_path / "ro-state", "64k", "ro")
    reports = tmp_path / "reports"
    path, _ = big_file(tmp_path, 10)
    result = run_invsync(["-q", "sync", str(path), "--state-dir", str(state),
                          "--report-dir", str(reports)], cli_env)
    assert result.returncode == 64, output(result)
    line = one_error_line(result)
    assert str(state) in line and "Read-only file system" in line, line
    assert puts(sandbox) == []
    # Refused before it started, like a run refused by the lock: not a run, no run folder.
    assert not list(reports.glob("*/report.json"))


def test_full_report_dir_after_a_successful_sync_says_so_and_leaves_no_temp_files(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        tmpfs: Callable[..., Path]) -> None:
    reports = tmpfs(tmp_path / "full-reports", "64k")
    path, levels = big_file(tmp_path)
    result = run_invsync(["-q", "sync", str(path), "--report-dir", str(reports)], cli_env)
    assert result.returncode == 2, output(result)
    line = one_error_line(result)
    assert "report could not be written" in line and str(reports) in line, line
    assert "the stock was sent and the snapshot recorded" in line, line
    # The stock was sent ...
    assert {k: v for k, v in sandbox.levels().items() if k in levels} == levels
    # ... no temporary or half-written file is left (at most a bare report.json) ...
    left = sorted(str(p.relative_to(reports)) for p in reports.rglob("*") if p.is_file())
    assert all(p.endswith("/report.json") for p in left), left
    # ... and the snapshot was recorded: the same file again sends nothing.
    again = run_invsync(["sync", str(path), "--report-dir", str(tmp_path / "reports")], cli_env)
    assert again.returncode == 0, output(again)
    assert again.report()["counts"]["unchanged"] == len(levels)
    assert again.report()["counts"]["submitted"] == 0


def test_full_state_dir_fails_with_a_report_and_resume_finishes(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        tmpfs: Callable[..., Path]) -> None:
    state = tmpfs(tmp_path / "full-state", "64k")
    reports = tmp_path / "reports"
    path, levels = big_file(tmp_path)
    result = run_invsync(["-q", "sync", str(path), "--state-dir", str(state),
                          "--report-dir", str(reports), "--batch-size", "200"], cli_env)
    assert result.returncode == 2, output(result)
    line = one_error_line(result)
    assert "No space left on device" in line and "invsync resume" in line, line
    report = report_of(reports)
    assert (report["status"], report["exit_code"]) == ("failed", 2)
    assert list(state.rglob("journal.jsonl")), "the journal must be kept for resume"
    # Room again: resume finishes the run, and the store ends equal to the file.
    subprocess.run(["mount", "-o", "remount,size=16m", str(state)], check=True)
    done = run_invsync(["resume", "--state-dir", str(state), "--report-dir", str(reports)],
                       cli_env)
    assert done.returncode == 0, output(done)
    assert {k: v for k, v in sandbox.levels().items() if k in levels} == levels


class HtmlStore(BaseHTTPRequestHandler):
    """A 'store' that answers every request with a 200 HTML page (a captive portal)."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome to the hotel wifi</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_an_unusable_store_answer_is_one_line_exit_2_and_a_failed_report(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HtmlStore)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = env_at(f"http://127.0.0.1:{server.server_port}", tmp_path, sandbox)
        path, _ = big_file(tmp_path, 10)
        reports = tmp_path / "reports"
        result = run_invsync(["-q", "sync", str(path), "--report-dir", str(reports)], env)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2, output(result)
    one_error_line(result)
    report = report_of(reports)
    assert (report["status"], report["exit_code"]) == ("failed", 2)


@pytest.mark.parametrize(("sig", "code", "name"), [(signal.SIGINT, 130, "SIGINT"),
                                                   (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_mid_run_ends_interrupted_with_the_lock_released_and_resume_finishing(
        sandbox_factory: Factory, tmp_path: Path, sig: int, code: int, name: str) -> None:
    sb = sandbox_factory("--latency-ms", "150")
    env = env_for(sb, tmp_path)
    path, levels = big_file(tmp_path)
    reports = tmp_path / "reports"
    proc = subprocess.Popen(
        [sys.executable, "-m", "invsync", "sync", str(path), "--report-dir", str(reports),
         "--batch-size", "100", "--concurrency", "2"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(r["method"] == "PUT" for r in sb.requests()), proc, None)
        time.sleep(0.5)  # the point: the signal lands mid-run, with batches in flight
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    result = CliResult(proc.returncode, out, err)
    assert result.returncode == code, out + err
    no_traceback(result)
    assert f"interrupted by {name}" in out and "invsync resume" in out, out
    report = result.report()
    assert (report["status"], report["exit_code"]) == ("interrupted", code)
    assert list((tmp_path / "state").rglob("journal.jsonl")), "the journal must be kept"
    # Released, not just freed by the kernel at exit: the lock file no longer names the run.
    assert all(p.stat().st_size == 0 for p in (tmp_path / "state").rglob("lock"))
    assert len(levels) > sum(len(r["items"]) for r in puts(sb)), "the run had finished"
    # The lock was released cleanly and resume finishes the run: the store equals the file.
    done = run_invsync(["resume", "--report-dir", str(reports)], env)
    assert done.returncode == 0, output(done)
    assert {k: v for k, v in sb.levels().items() if k in levels} == levels


def test_one_line_is_one_clean_line_without_the_token() -> None:
    from invsync.terminal import clean, one_line

    token = "tok-4f1d9c-secret"
    exc = ValueError(f"Illegal header value b'{token}\\r'\nsecond line \x1b[2J")
    line = one_line(exc, token + "\r")
    assert line == "ValueError: Illegal header value b'[token]\\r' second line \\x1b[2J"
    assert one_line(OSError(28, "No space left on device", "/state/journal.jsonl")) == \
        "/state/journal.jsonl: No space left on device"
    assert clean("a\nb\tc\x9b\u202ed") == "a\\nb\\tc\\x9b\\u202ed"
