"""The workbook reader's process (one per invsync process, a worker per workbook) and the
one pass over a workbook's parts that runs beside the read (issue: fast within the store's
rules, workbook reading).

Reading a workbook must stay bounded exactly as before (a worker past its memory or time
is killed, a kill -9 of invsync leaves no reader behind), while a second workbook costs no
new interpreter; the byte pass must find every formula and error cell the full pattern
finds, wherever the sheet's chunks split it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from invsync.errors import InputFileError
from invsync.stages.ingest import ROW, isolated, read_stock_file, xlsx
from tests.conftest import ROOT, outliving

HOSTILE = ROOT / "tests" / "data" / "hostile"


def stock_workbook(path: Path, rows: int, *, last: list[Any] | None = None) -> Path:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Stock")
    ws.append(["sku", "location_id", "quantity"])
    for i in range(rows):
        ws.append([f"SKU-{i}", 1, i % 50])
    if last is not None:
        ws.append(last)
    wb.save(path)
    return path


# ---- the byte pass ------------------------------------------------------------------


_PIECES = [b"<", b">", b"/", b" ", b"\t", b"\n", b"=", b'"', b"'", b"f", b"e", b"t", b"x:",
           b"<f", b"<c", b"t=", b'"e"', b"'e'", b"inlineStr", b"<firstHeader>", b"ff", b"ee"]


@pytest.mark.parametrize("seed", range(40))
def test_the_byte_pass_never_misses_what_the_full_pattern_finds(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        buf = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 400)))
        if xlsx._F_TAG.search(buf):
            assert xlsx._formula_in(buf), buf
        if xlsx._ERROR_TYPE.search(buf):
            assert xlsx._error_in(buf), buf


@pytest.mark.parametrize(("text", "formula", "error"), [
    (b'<c r="A1" t="e"><v>#N/A</v></c>', False, True),
    (b"<c r='A1' t = 'e'><v>#REF!</v></c>", False, True),
    (b'<x:c r="A1" t="e"><x:v>#N/A</x:v></x:c>', False, True),
    (b"<c><f>SUM(A1:A2)</f><v>3</v></c>", True, False),
    (b'<c><f t="shared" si="0"/></c>', True, False),
    (b"<x:c><x:f>1+1</x:f></x:c>", True, False),
    (b'<headerFooter><firstHeader>x</firstHeader></headerFooter><c r="A1"><v>1</v></c>',
     False, False),
    (b'<c r="A1" t="inlineStr"><is><t>a "e" of coffee</t></is></c>' * 100, False, False),
])
def test_the_byte_pass_tells_formulas_and_error_cells(text: bytes, formula: bool, error: bool
                                                      ) -> None:
    assert xlsx._formula_in(text) is formula
    assert xlsx._error_in(text) is error


def test_an_error_cell_and_a_formula_past_the_first_megabyte_are_found(tmp_path: Path) -> None:
    path = stock_workbook(tmp_path / "late.xlsx", 25_000, last=["SKU-late", 1, "#N/A"])
    wb = openpyxl.load_workbook(path)
    ws = wb["Stock"]
    ws.cell(row=ws.max_row + 1, column=1, value="SKU-formula")
    ws.cell(row=ws.max_row, column=2, value=1)
    ws.cell(row=ws.max_row, column=3, value="=1+1")  # never calculated: no cached value
    wb.save(path)

    table = read_stock_file(path)

    assert table.problems is not None
    found = set(table.problems.select("reason", ROW).iter_rows())
    assert ("error_cell", 25_002) in found
    assert ("formula_not_calculated", 25_003) in found


def test_the_parent_unpacks_a_plain_sheet_once(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No formula and no error cell: the one pass says so, and no later search reads the
    sheet again (each used to unpack it for itself)."""
    path = stock_workbook(tmp_path / "plain.xlsx", 30_000)
    again: list[str] = []
    for name in ("_may_hold", "_scan_xml"):
        real = getattr(xlsx, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            again.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(xlsx, name, counted)
    table = read_stock_file(path)
    assert table.rows == 30_000
    assert again == []


# ---- the reader's process -------------------------------------------------------------


def _lone_children(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    started: list[list[str]] = []
    real = subprocess.Popen.__init__

    def watched(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        if isinstance(args, list) and "invsync.stages.ingest.isolated" in args:
            started.append([str(a) for a in args])
        real(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", watched)
    return started


def test_a_second_workbook_starts_no_new_interpreter(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first = stock_workbook(tmp_path / "a.xlsx", 10)
    second = stock_workbook(tmp_path / "b.xlsx", 20)
    assert read_stock_file(first).rows == 10  # the reader's process exists from here on
    started = _lone_children(monkeypatch)

    assert read_stock_file(second).rows == 20
    assert read_stock_file(HOSTILE / "error-cells-libreoffice.xls").rows == 5
    assert started == []


def test_a_worker_past_its_memory_is_stopped_and_the_next_read_works(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Memory is watched while the worker runs: a read long enough to be seen (a 2,000-row
    # one could end, on a loaded machine, before its first look).
    path = stock_workbook(tmp_path / "s.xlsx", 20_000)
    read_stock_file(path)
    spawner = isolated._SPAWNER
    monkeypatch.setattr(isolated, "READER_MEMORY_MB", 1)
    with pytest.raises(InputFileError, match="needed more than 1 MB"):
        read_stock_file(path)
    monkeypatch.undo()
    assert read_stock_file(path).rows == 20_000
    assert isolated._SPAWNER is spawner  # the reader's process outlived its worker


def test_a_worker_past_its_time_is_stopped(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = stock_workbook(tmp_path / "s.xlsx", 20_000)
    read_stock_file(path)
    monkeypatch.setattr(isolated, "READER_SECONDS", 0.0)
    with pytest.raises(InputFileError, match="took more than 0 s"):
        read_stock_file(path)


def test_a_reader_process_that_died_is_replaced(tmp_path: Path) -> None:
    path = stock_workbook(tmp_path / "s.xlsx", 10)
    read_stock_file(path)
    assert isolated._SPAWNER is not None
    os.kill(isolated._SPAWNER.pid, signal.SIGKILL)
    time.sleep(0.2)
    assert read_stock_file(path).rows == 10
    assert isolated._SPAWNER is not None and isolated._SPAWNER.alive()


def test_two_workbooks_read_at_once_from_two_threads(tmp_path: Path) -> None:
    paths = [stock_workbook(tmp_path / f"{i}.xlsx", 1_000 * (i + 1)) for i in range(4)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(lambda p: read_stock_file(p).rows, paths))
    assert counts == [1_000, 2_000, 3_000, 4_000]


_FORKED = """
import fcntl, os, sys, time
from pathlib import Path
from invsync.stages.ingest import isolated, read_stock_file
held = open(sys.argv[2], "w")
fcntl.flock(held, fcntl.LOCK_EX)  # a lock invsync holds while it reads
print(read_stock_file(Path(sys.argv[1])).rows, flush=True)
spawner = isolated._SPAWNER
print(spawner.pid, spawner.proc is None, flush=True)
print(sorted(int(fd) for fd in os.listdir(f"/proc/{spawner.pid}/fd")), flush=True)
fcntl.flock(held, fcntl.LOCK_UN)
held.close()
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc, prctl")
def test_the_forked_reader_holds_no_file_of_invsync_and_dies_with_it(tmp_path: Path) -> None:
    """The reader's process forked from invsync keeps none of its files (a lock released
    by invsync is released), and a ``kill -9`` of invsync ends it."""
    import fcntl

    path = stock_workbook(tmp_path / "s.xlsx", 100)
    lock = tmp_path / "lock"
    proc = subprocess.Popen([sys.executable, "-c", _FORKED, str(path), str(lock)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "100"
        pid_text, forked = proc.stdout.readline().split()
        spawner = int(pid_text)
        assert forked == "True"  # a fork of invsync: nothing imported again
        assert proc.stdout.readline().strip() == "[0, 1, 2]"
        time.sleep(0.5)  # invsync has let the lock go by now
        with lock.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the reader held it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not outliving([spawner]), "the reader's process outlived invsync"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- parts read whole in invsync's own process ---------------------------------------------


def test_an_opendocument_manifest_bomb_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """700 MiB of manifest in a 0.7 MB file: only its head is read (it was read whole,
    1.5 GB, before the zip's sizes were checked)."""
    import zipfile

    from tests.test_hostile_files import offline_env
    from tests.test_resilience import MAX_RSS, run_measured

    path = tmp_path / "manifest.ods"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet",
                    compress_type=zipfile.ZIP_STORED)
        zf.writestr("content.xml", "<x/>")
        with zf.open("META-INF/manifest.xml", "w", force_zip64=True) as fh:
            for _ in range(700):
                fh.write(b" " * (1 << 20))

    run = run_measured(["plan", str(path)], offline_env(tmp_path))

    assert run.guard is None, run.guard
    assert run.returncode == 65, run.output[-2000:]
    assert "zip bomb" in run.output
    assert run.peak_rss < MAX_RSS, f"peak RSS {run.peak_rss >> 20} MiB"


def test_an_oversized_sheet_list_is_not_parsed_whole(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The workbook's sheet list is parsed whole in invsync's own process: past a bound
    (a crafted one would take gigabytes) it is not, and the reader's answer stands."""
    import zipfile

    path = stock_workbook(tmp_path / "s.xlsx", 10, last=["SKU-x", 1, "#N/A"])
    monkeypatch.setattr(xlsx, "_MAX_BOOK_PART", 64)
    with zipfile.ZipFile(path) as zf, pytest.raises(KeyError):
        xlsx._sheet_member(zf, 0)
    assert read_stock_file(path).rows == 11


def _widest_gap_tag_by_tag(data: bytes) -> int:
    longest, last = 0, None
    for m in xlsx._SI_TAG.finditer(data):
        if last is not None:
            longest = max(longest, m.start() - last)
        last = m.start()
    return max(longest, len(data) - last) if last is not None else longest


@pytest.mark.parametrize("seed", range(10))
def test_the_longest_shared_string_bound_is_the_tag_by_tag_one(seed: int) -> None:
    """The split at C speed gives exactly the widest gap the tag-by-tag scan gives (the
    bound that lets a workbook skip counting its cells' text)."""
    rng = random.Random(seed)
    pieces = [b"<si>", b"<si/>", b"<si ", b"<si\t", b"<sig>", b"<x:si>", b"</si>", b"<t>",
              b"abc", b"\n", b"<si"]
    for _ in range(500):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert xlsx._widest_si_gap(data) == _widest_gap_tag_by_tag(data), data
