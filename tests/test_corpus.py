"""Every file of the real-world corpus through the real CLI (skipped without the corpus).

The corpus (``../shared/corpus`` beside the repository: workbooks and CSV files other
programs wrote, and files that crashed other readers) is not part of the repository. Each
file runs as ``invsync sync --dry-run`` in a process of its own, with no store: read and
plan only. Every run must end in a documented exit code with a run folder and a report,
never a traceback, within bounded time and memory; the files its README table names must
do what the table expects.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The shared corpus beside the clone (INVSYNC_CORPUS_DIR elsewhere, e.g. from a worktree).
CORPUS = Path(os.environ.get("INVSYNC_CORPUS_DIR") or ROOT.parent / "shared" / "corpus")
FILES = sorted(p for p in CORPUS.glob("*/*") if p.is_file()) if CORPUS.is_dir() else []

TIME_LIMIT_S = 120
"""Generous: the files take a second or two each, but a loaded test machine is slow."""
MEMORY_LIMIT_MB = 1_500

# The file is not a stock file: which of its columns stand for the SKU and the quantity.
MAPS: dict[str, dict[str, str]] = {
    "lo_temperature-in-middle.ods": {"label": "sku", "value": "quantity"},
    "lo_temperature-in-middle.xls": {"label": "sku", "value": "quantity"},
    "cal_temperature-in-middle.xlsx": {"label": "sku", "value": "quantity"},
    "cal_issue_271.xls": {"name": "sku", "sex": "quantity"},
    "sj_apachepoi_12561-1.xlsb": {"作業NO": "sku", "予想作業日数": "quantity"},
    "cal_strict_iso_paths.xlsx": {"Item": "sku", "GoldenRun": "quantity"},
    "fx_null-bytes-in-columns-names.xls": {"Day": "sku", "Hour": "quantity"},
    "cal_header-row.xlsx": {"Column A": "sku", "Column B": "quantity"},
    "fr_skip-rows.xlsx": {"A": "sku", "B": "quantity"},
    "fx_fixture-changing-header-location.xlsx": {"Month": "sku", "Year": "quantity"},
    "sj_large_strings.xlsx": {"a": "sku", "b": "quantity"},
    "fr_defective-rows.csv": {"id": "sku", "age": "quantity"},
    "fr_structure-errors.csv": {"id": "sku", "age": "quantity"},
    "fr_skip-rows-before-headers.csv": {"id": "sku", "name": "quantity"},
    "fr_matrix-with-comment.csv": {"f1": "sku", "f2": "quantity"},
    "fr_escaping.csv": {"ID": "sku", "Test": "quantity"},
    "w3c_test-utf16.csv": {"test text": "sku", "test number": "quantity"},
    "w3c_test-utf16-bom.csv": {"test text": "sku", "test number": "quantity"},
    "fr_table-infer-iso-8859-7.csv": {"name": "sku", "age": "quantity"},
}


def run(path: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str] | None, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env.update({"BIGCOMMERCE_STORE_HASH": "corpus", "BIGCOMMERCE_API_URL": "http://127.0.0.1:9",
                "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"})
    args = [sys.executable, "-m", "invsync", "sync", str(path), "--dry-run"]
    for header, column in MAPS.get(path.name, {}).items():
        args += ["--map", f"{header}={column}"]
    start = time.monotonic()
    try:
        proc = subprocess.run(args, env=env, capture_output=True, text=True, cwd=ROOT,
                              timeout=TIME_LIMIT_S)
    except subprocess.TimeoutExpired:
        return None, time.monotonic() - start  # subprocess.run killed it
    return proc, time.monotonic() - start


def report_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("report: "):
            folder = Path(line.removeprefix("report: ").strip())
            return dict(json.loads((folder / "report.json").read_text()))
    raise AssertionError(f"no run folder:\n{proc.stdout}\n{proc.stderr}")


def rejected_rows(report: dict[str, Any]) -> dict[int, str]:
    return {r["row"]: r["reason"] for r in report["rejected"]}


# file -> (expected exit codes, a check of the report and output)
def _damaged(report: dict[str, Any], out: str) -> None:
    assert "the workbook is damaged" in out


def _temperature(report: dict[str, Any], out: str) -> None:
    # The sheet shows the header on row 4 and 22.2222 on row 5.
    assert rejected_rows(report) == {5: "quantity_not_whole"}
    assert report["input"]["header_row"] == 4


def _issue_271(report: dict[str, Any], out: str) -> None:
    assert report["input"]["header_row"] == 3
    assert 5 in rejected_rows(report)


def _xlsb(report: dict[str, Any], out: str) -> None:
    assert report["input"]["header_row"] == 3
    assert min(rejected_rows(report)) == 4


def _strict(report: dict[str, Any], out: str) -> None:
    assert "date_in_column" not in rejected_rows(report).values()
    assert report["counts"]["valid"] >= 70
    # Numeric SKU cells are noted as in other workbooks (Strict OOXML namespaces).
    assert any("stored as numbers" in n for n in report["notes"])


def _null_bytes(report: dict[str, Any], out: str) -> None:
    assert report["input"]["columns"] == {"sku": "Day", "quantity": "Hour"}
    assert report["input"]["header_row"] == 5


def _password(report: dict[str, Any], out: str) -> None:
    assert "password-protected" in out and "without a password" in out


def _numbers(report: dict[str, Any], out: str) -> None:
    assert "Apple Numbers file" in out and "Export To" in out


def _xml_spreadsheet(report: dict[str, Any], out: str) -> None:
    assert "XML Spreadsheet 2003" in out and ".xlsx" in out


def _header(row: int) -> Any:
    def check(report: dict[str, Any], out: str) -> None:
        assert report["input"]["header_row"] == row
    return check


def _rows_rejected(rows: dict[int, str], valid: int) -> Any:
    def check(report: dict[str, Any], out: str) -> None:
        assert rejected_rows(report) == rows
        assert report["input"]["header_row"] == 1
        assert report["counts"]["valid"] == valid  # the rest of the file is read
    return check


def _escaping(report: dict[str, Any], out: str) -> None:
    assert report["input"]["rows"] == 3  # read as the csv module reads it


def _utf16(report: dict[str, Any], out: str) -> None:
    assert report["input"]["encoding"] in ("utf-16-le", "utf-16")
    assert report["input"]["rows"] == 3


def _greek(report: dict[str, Any], out: str) -> None:
    if "encoding is unclear" in out:
        assert "windows-1253" in out
    elif "missing required column" in out:
        # Its Greek is only in 'name', a column invsync does not use: the encoding blocks
        # nothing, and the file is refused for what it lacks (an identifier, a quantity).
        assert "'id', 'age', 'name'" in out
    else:
        assert report["input"]["encoding"] in ("windows-1253", "iso-8859-7")


EXPECTED: dict[str, tuple[set[int], Any]] = {
    "cal_ptgexp-truncated-operand.xls": ({65}, _damaged),
    "lo_temperature-in-middle.ods": ({1}, _temperature),
    "lo_temperature-in-middle.xls": ({1}, _temperature),
    "cal_temperature-in-middle.xlsx": ({1}, _temperature),
    "cal_issue_271.xls": ({1}, _issue_271),
    "sj_apachepoi_12561-1.xlsb": ({1}, _xlsb),
    "cal_strict_iso_paths.xlsx": ({0, 1}, _strict),
    "fx_null-bytes-in-columns-names.xls": ({0, 1}, _null_bytes),
    "cal_pass_protected.xlsx": ({65}, _password),
    "sj_password_2002_40_xor.xls": ({65}, _password),
    "sj_Attendance.numbers": ({65}, _numbers),
    "sj_LONumbers_spreadsheetml.xls": ({65}, _xml_spreadsheet),
    "cal_header-row.xlsx": ({0}, _header(9)),
    "fr_skip-rows.xlsx": ({1}, _header(2)),
    "fx_fixture-changing-header-location.xlsx": ({0}, _header(2)),
    "fr_defective-rows.csv": ({1}, _rows_rejected({2: "missing_quantity",
                                                   3: "unreadable_row"}, valid=0)),
    "fr_structure-errors.csv": ({1}, _rows_rejected({5: "unreadable_row"}, valid=2)),
    "fr_skip-rows-before-headers.csv": ({1}, _header(2)),
    "fr_matrix-with-comment.csv": ({0}, _header(2)),
    "fr_escaping.csv": ({1}, _escaping),
    "w3c_test-utf16.csv": ({1}, _utf16),
    "fr_table-infer-iso-8859-7.csv": ({0, 65}, _greek),
}


Run = tuple[subprocess.CompletedProcess[str] | None, float]


class Runs(dict[Path, Run]):
    """Corpus file -> its run; a file not run yet is run when its test looks it up."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        super().__init__()
        self.tmp = tmp_path_factory

    def __missing__(self, path: Path) -> Run:
        self[path] = done = run(path, self.tmp.mktemp(path.stem[:40]))
        return done


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The corpus files' runs, a process per file.

    Under pytest-xdist each file runs when its test does: a worker cannot know which of
    the tests it will be given, and running every selected file in each worker did the
    whole corpus once per worker. Alone, the selected files run a few at a time up front
    (most of a run is the interpreter starting).
    """
    from concurrent.futures import ThreadPoolExecutor

    done = Runs(tmp_path_factory)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return done
    selected = [item.callspec.params["path"] for item in request.session.items
                if getattr(item, "originalname", "") == "test_corpus_file"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {p: pool.submit(run, p, tmp_path_factory.mktemp(p.stem[:40]))
                   for p in selected}
        done.update({p: f.result() for p, f in futures.items()})
    return done


@pytest.mark.skipif(not FILES, reason="the corpus (../shared/corpus) is not beside the repository")
# Alone, the first test waits for the whole batch of runs (about a minute; more on a busy
# machine).
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_file(path: Path, runs: dict[Path, Any]) -> None:
    proc, took = runs[path]
    assert proc is not None, f"no result within {TIME_LIMIT_S} s"
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert "panicked" not in out, out
    assert proc.returncode in (0, 1, 65), out
    report = report_of(proc)  # a run folder and its report every time
    assert took < TIME_LIMIT_S
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < MEMORY_LIMIT_MB, f"a corpus run peaked at {peak_mb:,.0f} MB"
    if proc.returncode == 65:
        # A refusal says what is wrong: the file named, on one line, no internals.
        assert path.name in out
    expected = EXPECTED.get(path.name)
    if expected is not None:
        codes, check = expected
        assert proc.returncode in codes, out
        check(report, out)
