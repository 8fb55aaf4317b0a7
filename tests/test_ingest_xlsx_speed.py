"""Workbook reading made cheaper (issue: fast within the store's rules, row 3): each
shortcut is taken only where the pass over the workbook's parts proves it changes nothing,
and the text read stays what it was."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import xlsxwriter

from invsync.errors import InputFileError
from invsync.stages.ingest import isolated, read_stock_file, xlsx
from tests.conftest import ROOT, alive, outliving, wait_for


def workbook_with(path: Path, sku_xml: bytes, *, rows: int = 1) -> Path:
    """A workbook whose first SKU is the shared string ``sku_xml`` (raw XML text)."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    ws = wb.add_worksheet("Stock")
    ws.write_row(0, 0, ["sku", "quantity"])
    ws.write_row(1, 0, ["PLACEHOLDER", 5])
    for r in range(2, rows + 1):
        ws.write_row(r, 0, [f"SKU-{r}", r])
    wb.close()
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "xl/sharedStrings.xml":
                data = data.replace(b"PLACEHOLDER", sku_xml)
            out.writestr(item, data)
    return path


def test_utf16_text_behind_nul_escapes_is_still_decoded(tmp_path: Path) -> None:
    book = workbook_with(tmp_path / "esc.xlsx", b"D_x0000_a_x0000_y_x0000_")
    assert read_stock_file(book).frame.rows()[0][:2] == ("Day", "5")
    assert xlsx.may_hold_nul(book, 0)


def test_a_workbook_without_any_nul_skips_the_cell_search(tmp_path: Path) -> None:
    book = workbook_with(tmp_path / "plain.xlsx", b"A&amp;B")
    assert read_stock_file(book).frame.rows()[0][:2] == ("A&B", "5")
    assert not xlsx.may_hold_nul(book, 0)


def test_a_character_reference_counts_as_a_possible_nul(tmp_path: Path) -> None:
    book = workbook_with(tmp_path / "ref.xlsx", b"A&#x0A;B")
    assert read_stock_file(book).frame.rows()[0][:2] == ("A\nB", "5")
    assert xlsx.may_hold_nul(book, 0)


def with_part(book: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(book, "a") as zf:
        zf.writestr(name, data)
    return book


def test_a_picture_s_nul_bytes_are_its_own_any_other_part_s_count(tmp_path: Path) -> None:
    picture = with_part(workbook_with(tmp_path / "pic.xlsx", b"A"), "xl/media/image1.PNG",
                        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    read_stock_file(picture)
    assert not xlsx.may_hold_nul(picture, 0)
    odd = with_part(workbook_with(tmp_path / "odd.xlsx", b"A"), "xl/strings.txt", b"D_x0000_")
    read_stock_file(odd)
    assert xlsx.may_hold_nul(odd, 0)


def test_a_nul_escape_split_between_two_chunks_is_seen(tmp_path: Path) -> None:
    # A part is scanned a MiB at a time: put the escape across the boundary.
    probe = zipfile.ZipFile(workbook_with(tmp_path / "probe.xlsx", b"P")).read(
        "xl/sharedStrings.xml")
    start = probe.index(b">P<") + 1
    filler = b"x" * ((1 << 20) - 3 - start)
    book = workbook_with(tmp_path / "split.xlsx", filler + b"_x0000_")
    at = zipfile.ZipFile(book).read("xl/sharedStrings.xml").index(b"_x0000_")
    assert at < (1 << 20) < at + len(b"_x0000_")
    xlsx.WorkbookScan(book).finish()
    assert xlsx.may_hold_nul(book, 0)


def test_a_header_far_below_a_title_and_blank_rows_is_still_found(tmp_path: Path) -> None:
    # The rows holding anything are looked for in the top rows first: here the top
    # 1,000 rows hold one title only, and the header is row 1,502.
    path = tmp_path / "far.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Stock")
    ws.write(0, 0, "Stock on hand, all shops")
    ws.write_row(1501, 0, ["sku", "quantity"])
    for r in range(1502, 1530):
        ws.write_row(r, 0, [f"SKU-{r}", r])
    wb.close()
    table = read_stock_file(path)
    assert table.header_row == 1502
    assert table.rows == 28
    assert table.frame.rows()[0][:2] == ("SKU-1502", "1502")
    assert any("row 1502" in note for note in table.notes)


_PIECES = [b"_", b"&", b"#", b"0", b"x", b"X", b"_x0000_", b"&#0", b"&#x", b"&#X", b"_x00",
           b"<t>", b"a", b"&amp;", b"\x00", b"00_"]


@pytest.mark.parametrize("seed", range(20))
def test_the_nul_search_never_misses_a_needle(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        buf = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 300)))
        assert xlsx._nul_in(buf) == any(n in buf for n in xlsx._NUL_NEEDLES), buf


def stock_book(path: Path, rows: int) -> Path:
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Stock")
    ws.write_row(0, 0, ["sku", "location_id", "quantity"])
    for r in range(1, rows + 1):
        ws.write_row(r, 0, [f"SKU-{r}", 1, r % 50])
    wb.close()
    return path


def test_a_worker_says_it_is_done_before_it_exits_and_each_read_gets_its_own_answer(
        tmp_path: Path) -> None:
    books = [stock_book(tmp_path / f"{n}.xlsx", n) for n in (3, 7, 11)]
    assert read_stock_file(books[0]).rows == 3
    spawner = isolated._SPAWNER
    if spawner is None:
        pytest.skip("no reader process on this platform")
    assert spawner._status_due  # the worker's own word ended the wait, not its exit
    assert [read_stock_file(b).rows for b in (*books[1:], books[0])] == [7, 11, 3]
    assert isolated._SPAWNER is spawner  # no answer was taken for another's


def test_how_the_last_worker_ended_is_taken_in_before_the_next_request(
        tmp_path: Path) -> None:
    book = stock_book(tmp_path / "s.xlsx", 5)
    assert read_stock_file(book).rows == 5
    spawner = isolated._SPAWNER
    if spawner is None:
        pytest.skip("no reader process on this platform")
    spawner._settle()  # the status line of a worker already gone
    assert not spawner._status_due
    assert read_stock_file(book).rows == 5


_KILLED = """
import sys
from pathlib import Path
from invsync.stages.ingest import isolated, read_stock_file
print(read_stock_file(Path(sys.argv[1])).rows, flush=True)
print(isolated._SPAWNER.pid, flush=True)
sys.stdin.read()
"""


def _waiting_workers(spawner: int) -> list[int]:
    """The workers the reader's process ``spawner`` has forked, once it has one."""
    import psutil

    found = wait_for(lambda: psutil.Process(spawner).children(), timeout=20, every=0.05)
    return [child.pid for child in found]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc, prctl")
def test_the_worker_waiting_for_the_next_workbook_dies_with_invsync(tmp_path: Path) -> None:
    book = stock_book(tmp_path / "s.xlsx", 5)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(book)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "5"
        spawner = int(proc.stdout.readline())
        waiting = _waiting_workers(spawner)
        assert len(waiting) == 1  # one worker forked ahead, waiting for a workbook
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert not outliving([spawner, *waiting]), "a reader process outlived invsync"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_file_refused_by_what_it_says_of_itself_starts_no_reader(tmp_path: Path) -> None:
    numbers = tmp_path / "stock.xlsx"
    with zipfile.ZipFile(numbers, "w") as zf:
        zf.writestr("Index/Document.iwa", b"\x00\x01")
    isolated._drop_spawner()
    with pytest.raises(InputFileError, match="Apple Numbers"):
        read_stock_file(numbers)
    assert isolated._SPAWNER is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc")
def test_a_stopped_reader_ends_by_itself_and_its_waiting_worker_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_stock_file(stock_book(tmp_path / "s.xlsx", 4)).rows == 4
    spawner = isolated._SPAWNER
    if spawner is None:
        pytest.skip("no reader process on this platform")
    waiting = _waiting_workers(spawner.pid)
    killed: list[int] = []
    monkeypatch.setattr(isolated, "_STOP_GRACE_S", 20.0)
    monkeypatch.setattr(isolated, "_kill", killed.append)
    isolated._drop_spawner()
    assert killed == []  # the closed pipe ended the waiting worker, then the spawner
    assert waiting and not any(alive(pid) for pid in waiting)
    assert not alive(spawner.pid)


def _scratch_dirs() -> set[str]:
    """This process's read folders in memory (other test workers read workbooks meanwhile,
    each in folders named by its own process id)."""
    return {p.name for p in Path(isolated._SHM).glob(f"invsync-read-{os.getpid()}-*")} \
        if Path(isolated._SHM).is_dir() else set()


@pytest.mark.skipif(isolated._scratch() is None, reason="no room in a memory file system")
def test_the_cells_pass_through_memory_and_nothing_is_left_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _scratch_dirs()
    used: list[str | None] = []
    real = isolated._scratch

    def seen() -> str | None:
        used.append(real())
        return used[-1]

    monkeypatch.setattr(isolated, "_scratch", seen)
    assert read_stock_file(stock_book(tmp_path / "s.xlsx", 6)).rows == 6
    damaged = tmp_path / "damaged.xlsx"  # cut short: the reader refuses it
    damaged.write_bytes(stock_book(tmp_path / "d.xlsx", 6).read_bytes()[:-200])
    with pytest.raises(InputFileError):
        read_stock_file(damaged)
    assert used[0] == isolated._SHM
    assert _scratch_dirs() <= before


def test_without_room_in_memory_the_cells_go_to_the_temporary_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isolated, "_SHM_FREE", 1 << 62)
    assert isolated._scratch() is None
    assert read_stock_file(stock_book(tmp_path / "s.xlsx", 6)).rows == 6


@pytest.mark.skipif(isolated._scratch() is None, reason="no room in a memory file system")
def test_what_a_killed_read_left_in_memory_is_removed(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    left = Path(isolated._SHM) / f"invsync-read-{dead.pid}-test"
    mine = Path(isolated._SHM) / f"invsync-read-{os.getpid()}-test"
    for folder in (left, mine):
        folder.mkdir(exist_ok=True)
        (folder / "sheet.arrow").write_bytes(b"cells")
    try:
        monkeypatch.setattr(isolated, "_SWEPT", [])
        assert read_stock_file(stock_book(tmp_path / "s.xlsx", 2)).rows == 2
        assert not left.exists()
        assert mine.exists()  # a live process's read is its own
    finally:
        for folder in (left, mine):
            if folder.exists():
                (folder / "sheet.arrow").unlink()
                folder.rmdir()


def test_a_workbooks_sha256_is_of_its_bytes(tmp_path: Path) -> None:
    """The workbook is hashed while the reader reads: still of the file's bytes."""
    import hashlib

    path = stock_book(tmp_path / "s.xlsx", 3)
    assert read_stock_file(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_killed_reads_leftovers_are_swept_when_the_reader_is_done_before_a_look(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep is done while the reader works; a read over before the parent's first
    slice of its own work still sweeps (after the read)."""
    import tempfile

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    left = Path(tempfile.gettempdir()) / f"invsync-read-{dead.pid}-test"
    left.mkdir(exist_ok=True)
    (left / "sheet.arrow").write_bytes(b"cells")
    real = isolated._read_isolated
    seen: list[object] = []

    def no_slices(path: Path, sheet: str | None, out: Path, shown: Path,
                  meanwhile: object) -> dict[str, object]:
        seen.append(meanwhile)
        return real(path, sheet, out, shown, None)  # the parent never does a slice

    monkeypatch.setattr(isolated, "_SWEPT", [])
    monkeypatch.setattr(isolated, "_read_isolated", no_slices)
    try:
        assert read_stock_file(stock_book(tmp_path / "s.xlsx", 2)).rows == 2
        assert seen and not left.exists()
    finally:
        if left.exists():
            (left / "sheet.arrow").unlink()
            left.rmdir()


def test_the_workbook_is_hashed_after_its_read_is_asked_for(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashing is the parent's work while the reader reads, not a wait before it is asked."""
    import hashlib

    path = stock_book(tmp_path / "s.xlsx", 3)
    data = path.read_bytes()
    read_stock_file(path)  # the reader's process made: its start is not what is looked at
    events: list[str] = []
    real_read, real_sha = isolated._read_isolated, hashlib.sha256

    def read(*args: object) -> dict[str, object]:
        events.append("asked")
        return real_read(*args)  # type: ignore[arg-type]

    def sha(*args: bytes) -> object:
        if args and args[0] == data:
            events.append("hashed")
        return real_sha(*args)

    monkeypatch.setattr(isolated, "_read_isolated", read)
    monkeypatch.setattr(hashlib, "sha256", sha)
    table = read_stock_file(path)
    monkeypatch.undo()
    assert events == ["asked", "hashed"]
    assert table.sha256 == hashlib.sha256(data).hexdigest()


def test_a_read_over_before_the_parent_s_first_slice_still_has_the_file_s_hash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    path = stock_book(tmp_path / "s.xlsx", 4)
    real = isolated._read_isolated

    def no_slices(path: Path, sheet: str | None, out: Path, shown: Path,
                  meanwhile: object) -> dict[str, object]:
        return real(path, sheet, out, shown, None)  # the parent never does a slice

    monkeypatch.setattr(isolated, "_read_isolated", no_slices)
    table = read_stock_file(path)
    assert table.rows == 4
    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_reader_s_cells_outlive_its_answer(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker says it is done and ends without first freeing the sheet it read (that took
    a few milliseconds of every read); what it wrote is the whole sheet."""
    import polars as pl

    monkeypatch.setattr(isolated, "_HELD", [])
    out = tmp_path / "sheet.arrow"
    answer = isolated._child(str(stock_book(tmp_path / "s.xlsx", 5)), "", str(out))
    assert answer == {"names": ["Stock"], "index": 0}
    assert len(isolated._HELD) == 1
    held = isolated._HELD[0]
    assert isinstance(held, tuple) and held[-1].equals(pl.read_ipc(out))
    assert pl.read_ipc(out).height == 6


def test_the_warm_up_imports_what_matching_the_headers_needs() -> None:
    """Its first use (a few milliseconds) is paid while the reader reads, not after."""
    code = ("import sys\n"
            "from invsync.stages.ingest import workbook\n"
            "assert 'invsync.stages.layouts' not in sys.modules\n"
            "workbook._warm_up()\n"
            "print('invsync.stages.layouts' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"
