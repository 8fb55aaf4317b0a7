"""Every hostile or odd file of ``tests/data/hostile/`` through the real CLI, each under a
memory and time bound, and what each one must say (issue: files nobody here has seen).

The files are made by ``tests/data/make_hostile.py``; the 40 MB CSV with one very wide row
is made here, in a temporary folder. The runs have no store (an offline ``plan``): reading
the file is what is tested.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest

from invsync.errors import InputFileError
from invsync.stages.ingest import read_stock_file
from tests.conftest import ROOT, outliving, output, run_invsync
from tests.test_resilience import MAX_RSS, run_measured

# The shared corpus beside the clone (INVSYNC_CORPUS_DIR elsewhere, e.g. from a worktree).
CORPUS = Path(os.environ.get("INVSYNC_CORPUS_DIR") or ROOT.parent / "shared" / "corpus")
HOSTILE = ROOT / "tests" / "data" / "hostile"
BOUND_S = 60.0
"""Generous (a file takes a second or two): a reader that loops is what this catches."""

# file -> (exit code, words the output must hold)
EXPECTED: dict[str, tuple[int, list[str]]] = {
    "looping-ole-chain.xls": (65, ["the workbook is damaged", "loops"]),
    "no-sheets.xlsx": (65, ["the workbook is damaged", "lists no sheets"]),
    "truncated.xlsx": (65, ["the workbook is damaged"]),
    "garbage-sheet.xlsx": (65, ["the workbook is damaged"]),
    "first-sheet-empty.xlsx": (65, ["sheet 'Notes' is empty", "'Stock', 'Archive'",
                                    "--sheet 'Stock'"]),
    "error-cells.xlsx": (1, ["error_cell", "the cell shows #N/A"]),
    "error-cells-libreoffice.xls": (1, ["error_cell", "the cell shows #N/A"]),
    "error-cells-libreoffice.ods": (1, ["error_cell", "the cell shows #N/A"]),
    "xls-ending-with-a-zip.xls": (1, ["error_cell", "the cell shows #N/A"]),
    "odd-cells.ods": (1, ["error_cell", "the cell shows #N/A"]),
    "no-mimetype.ods": (1, ["error_cell", "the cell shows #N/A"]),
    "password.ods": (65, ["password-protected", "without a password"]),
    "unknown-types-only.ods": (0, ["1 would be"]),
    "sylk-named.csv": (65, ["SYLK file", "save it as .xlsx"]),
    "utf32.csv": (65, ["UTF-32 text", "save it as .xlsx"]),
    "excel4.xls": (65, ["Excel 4 worksheet", "save it as .xlsx"]),
    "latin1-copyright.csv": (0, ["read as Windows-1252"]),
    "shopify-products.csv": (0, ["Shopify products export"]),
    "shopify-inventory-old.csv": (65, ["older inventory export",
                                       "--map 'Shop location=quantity' --location-id"]),
    "headers-without-names.csv": (65, ["missing required column(s)",
                                       "--map 'Artikel=sku' --map 'Anzahl=quantity'"]),
}


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No token, a store address nothing listens on: only the file is read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env.update({"BIGCOMMERCE_STORE_HASH": "hostile", "BIGCOMMERCE_API_URL": "http://127.0.0.1:9",
                "XDG_STATE_HOME": str(tmp_path / "state"), "COLUMNS": "200"})
    return env


def test_every_hostile_file_has_an_expectation() -> None:
    assert sorted(p.name for p in HOSTILE.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_file_is_read_or_refused_plainly_within_bounds(name: str, tmp_path: Path) -> None:
    code, words = EXPECTED[name]
    run = run_measured(["plan", str(HOSTILE / name)], offline_env(tmp_path))
    assert run.guard is None, f"{name}: {run.guard}"
    assert run.returncode == code, (name, run.output[-2000:])
    assert run.seconds < BOUND_S
    assert run.peak_rss < MAX_RSS, f"{name}: peak RSS {run.peak_rss >> 20} MiB"
    for word in words:
        assert word in run.output, (word, run.output[-2000:])
    for never in ("Traceback", "panicked", "calamine", "column_2", "__UNNAMED__", "_duplicated_"):
        assert never not in run.output, (never, run.output[-2000:])


def test_a_40_mb_csv_with_one_very_wide_row_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    with path.open("w") as fh:
        fh.write("sku,quantity\n")
        fh.writelines(f"S-{i},{i}\n" for i in range(100))
        fh.write("W-1,1," + "ab," * 13_000_000 + "\n")  # 39 MB on one line
        fh.write("S-last,5\n")
    run = run_measured(["plan", str(path)], offline_env(tmp_path))
    assert run.guard is None, run.guard
    assert run.returncode == 1, run.output[-2000:]
    assert run.peak_rss < MAX_RSS, f"peak RSS {run.peak_rss >> 20} MiB"
    assert run.seconds < BOUND_S
    assert "this row has more than 2,000 cells but the header has 2" in run.output


def rejected(result: Any) -> list[dict[str, str]]:
    with (result.report_dir() / "rejected.csv").open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", ["error-cells.xlsx", "error-cells-libreoffice.xls",
                                  "error-cells-libreoffice.ods", "xls-ending-with-a-zip.xls"])
def test_error_cells_read_as_empty_in_every_workbook_format(name: str) -> None:
    table = read_stock_file(HOSTILE / name)
    assert table.problems is not None
    assert table.problems.select("__row", "column", "reason", "value").rows() == [
        (3, "quantity", "error_cell", "#N/A"), (4, "sku", "error_cell", "#REF!"),
        (5, "quantity", "error_cell", "#DIV/0!")]
    assert table.frame.select("sku", "quantity", "active").rows() == [
        ("OK-1", "5", "TRUE"), ("NA-1", None, "FALSE"), (None, "7", None), ("DIV-1", None, None),
        ("OK-2", "9", None)]


def test_xlsb_error_cells_are_found(tmp_path: Path) -> None:
    """No program here writes .xlsb: a corpus file's number cell is made an error cell."""
    from invsync.stages.ingest.xlsb import _sheet_member, records, xlsb_error_cells

    source = CORPUS / "xl" / "cal_issues.xlsb"
    if not source.exists():
        pytest.skip("the corpus is absent")
    import zipfile

    with zipfile.ZipFile(source) as zf:
        member = _sheet_member(zf, 0)
        parts = {i.filename: zf.read(i) for i in zf.infolist()}
    data = parts[member]
    _, pos, size = [r for r in records(data) if r[0] == 2][-1]  # a number (RK) cell
    head = pos - 2  # one byte of type, one of size, for a short record
    assert data[head] == 2 and data[head + 1] == size
    parts[member] = data[:head] + bytes([3, 9]) + data[pos:pos + 8] + b"\x2a" + \
        data[pos + size:]
    path = tmp_path / "errors.xlsb"
    with zipfile.ZipFile(path, "w") as zf:
        for name, body in parts.items():
            zf.writestr(name, body)
    found = xlsb_error_cells(path, 0)
    assert [t for _, _, t in found] == ["#N/A"]
    row, position, _ = found[0]
    from invsync.stages.ingest import read_unmapped

    plain = read_unmapped(source)
    cut = read_unmapped(path)
    header = plain.headers[position]
    assert plain.frame.filter(plain.frame["__row"] == row)[header].item() is not None
    assert cut.error_cells is not None
    assert cut.error_cells.rows() == [(row, header, "#N/A")]
    assert cut.frame.filter(cut.frame["__row"] == row)[header].item() is None


def test_error_cells_are_their_own_reason_and_read_as_empty(tmp_path: Path) -> None:
    table = read_stock_file(HOSTILE / "error-cells.xlsx")
    assert table.problems is not None
    found = {(r["__row"], r["reason"], r["value"]) for r in table.problems.to_dicts()}
    assert found == {(3, "error_cell", "#N/A"), (4, "error_cell", "#REF!"),
                     (5, "error_cell", "#DIV/0!")}
    by_row = {r["__row"]: r for r in table.frame.to_dicts()}
    assert by_row[3]["quantity"] is None and by_row[4]["sku"] is None
    assert by_row[6]["active"] is None  # #NAME? in a column invsync does not use: just empty
    assert [by_row[2]["active"], by_row[3]["active"]] == ["TRUE", "FALSE"]
    assert table.sheets == ("Stock",)

    result = run_invsync(["plan", str(HOSTILE / "error-cells.xlsx")], offline_env(tmp_path))
    assert result.returncode == 1
    rows = {r["row"]: r for r in rejected(result)}
    assert {k: v["reason"] for k, v in rows.items()} == {"3": "error_cell", "4": "error_cell",
                                                         "5": "error_cell"}
    assert "the cell shows #REF!" in rows["4"]["message"]
    assert result.report()["counts"]["valid"] == 2


@pytest.mark.parametrize("name", ["odd-cells.ods", "no-mimetype.ods"])
def test_ods_cells_read_as_libreoffice_shows_them(name: str) -> None:
    table = read_stock_file(HOSTILE / name)
    rows = {r["__row"]: (r["sku"], r["quantity"], r["active"]) for r in table.frame.to_dicts()}
    assert rows == {2: ("A-1", "5", "TRUE"), 3: ("A-2", None, "FALSE"), 4: ("A-3", "7", None)}
    assert table.problems is not None
    assert table.problems.select("__row", "reason", "value").rows() == [(3, "error_cell", "#N/A")]


def test_a_sheet_of_unknown_value_types_is_read_as_text() -> None:
    table = read_stock_file(HOSTILE / "unknown-types-only.ods")
    assert table.frame.select("sku", "quantity", "__row").rows() == [("X-1", "4", 2)]


def test_reading_a_workbook_never_swaps_file_descriptor_2(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    swapped: list[tuple[object, ...]] = []
    real = os.dup2

    def watched(*args: Any, **kwargs: Any) -> Any:
        swapped.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(os, "dup2", watched)
    table = read_stock_file(HOSTILE / "error-cells.xlsx")
    with pytest.raises(InputFileError, match="the workbook is damaged"):
        read_stock_file(HOSTILE / "garbage-sheet.xlsx")
    monkeypatch.undo()
    assert table.rows == 5
    assert swapped == []


def test_a_file_cut_off_mid_line_rejects_its_last_row(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    feed = tmp_path / "feed.csv"
    feed.write_bytes(b"sku,quantity\nSKU-1,5\nSKU-2,200\n")
    first = run_invsync(["plan", str(feed)], env)
    assert first.returncode == 0, output(first)
    assert first.report()["input"]["last_line_complete"] is True

    feed.write_bytes(b"sku,quantity\nSKU-1,5\nSKU-2,20")  # the transfer stopped mid-line
    cut = run_invsync(["plan", str(feed)], env)
    assert cut.returncode == 1, output(cut)
    assert cut.report()["input"]["last_line_complete"] is False
    [row] = rejected(cut)
    assert (row["row"], row["reason"]) == ("3", "maybe_truncated")
    assert "cut off mid-line" in row["message"] and "arrived whole" in row["message"]
    assert cut.report()["counts"]["valid"] == 1


def test_a_source_that_never_ends_with_a_newline_is_not_suspect(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    feed = tmp_path / "feed.csv"
    for content in (b"sku,quantity\nSKU-1,5\nSKU-2,200", b"sku,quantity\nSKU-1,5\nSKU-2,20"):
        feed.write_bytes(content)
        result = run_invsync(["plan", str(feed)], env)
        assert result.returncode == 0, output(result)
    # Another file cut the same way, with no run of its own before: nothing to compare.
    other = tmp_path / "other.csv"
    other.write_bytes(b"sku,quantity\nSKU-1,5\nSKU-2,20")
    assert run_invsync(["plan", str(other)], env).returncode == 0


def test_a_mac_central_european_biff5_workbook_reads_its_letters(tmp_path: Path) -> None:
    """An old Mac Excel file names code page 10029, which the Excel reader does not know.
    No program here writes BIFF5: a corpus BIFF5 file is given that code page and a word."""
    import struct

    from invsync.stages.ingest import read_unmapped
    from invsync.stages.ingest.xls import _records, ole_stream

    source = CORPUS / "xl" / "cal_biff5_write.xls"
    if not source.exists():
        pytest.skip("the corpus is absent")
    data = bytearray(source.read_bytes())
    stream = ole_stream(bytes(data))
    assert stream is not None
    [pos] = [p for kind, p, _ in _records(stream, 0) if kind == 0x0042]
    at = data.find(stream[:512]) + pos + 4  # the stream's first sector is stored in one piece
    struct.pack_into("<H", data, at, 10029)
    word = "Žluťouč".encode("mac_latin2")
    i = data.find(b"sheetjs")
    data[i:i + len(word)] = word
    path = tmp_path / "mac.xls"
    path.write_bytes(bytes(data))

    table = read_unmapped(path)
    assert "Žluťouč" in table.frame.select(table.headers[3]).to_series().to_list()


def test_the_reader_process_dies_with_invsync(tmp_path: Path) -> None:
    """A ``kill -9`` of invsync must not leave a workbook reader running unwatched."""
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "from invsync.stages.ingest.isolated import _child_env\n"
        "child = subprocess.Popen([sys.executable, '-c', 'from invsync.stages.ingest.isolated "
        "import _limit_self; _limit_self(); import time; time.sleep(120)'], env=_child_env())\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        time.sleep(1.0)  # the child has set its parent-death signal by now
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        assert not outliving([child]), "the reader outlived invsync"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


@pytest.mark.parametrize(("name", "renamed"), [
    ("error-cells-libreoffice.xls", "stock.xlsx"), ("error-cells.xlsx", "stock.xls"),
    ("odd-cells.ods", "stock.xlsx"), ("error-cells.xlsx", "stock.ods")])
def test_a_workbook_under_another_workbook_name_is_read_by_its_content(
        name: str, renamed: str, tmp_path: Path) -> None:
    path = tmp_path / renamed
    path.write_bytes((HOSTILE / name).read_bytes())
    table = read_stock_file(path)
    assert table.frame.height >= 3
    assert table.problems is not None and "error_cell" in table.problems["reason"].to_list()
