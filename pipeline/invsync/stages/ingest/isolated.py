"""The Excel reader, run in a child process bounded in memory and time.

A workbook's bytes can make the reader loop (an OLE sector chain that points back on
itself grew one process to 21 GB), panic (Rust's own message goes straight to file
descriptor 2) or take forever. In a child process none of that reaches invsync: the
child's stderr is discarded, its memory is watched and it is killed past
:data:`READER_MEMORY_MB` or :data:`READER_SECONDS`, and the parent never redirects its own
file descriptors. The child writes the sheet's text cells as an Arrow IPC file and one
line of JSON on stdout saying what it found.

Run as ``python -m invsync.stages.ingest.isolated PATH SHEET OUT`` (the child side).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invsync.errors import InputFileError

if TYPE_CHECKING:
    import polars as pl

READER_MEMORY_MB = 512
"""Resident memory the reader's process may use (real exports need well under 150 MB)."""
READER_SECONDS = 25.0
"""Wall-clock time the reader may take (real exports take 1-2.5 s)."""
_POLL_S = 0.01

DAMAGED = ("the workbook is damaged ({why}); open it in its spreadsheet program and save "
           "it again as .xlsx, or export it as CSV")


@dataclass(frozen=True)
class LoadedSheet:
    """What the child read: the workbook's sheet names, the one chosen and its cells."""

    names: list[str]
    index: int
    frame: pl.DataFrame


def load_sheet(path: Path, sheet: str | None, *, shown: Path | None = None) -> LoadedSheet:
    """Read sheet ``sheet`` (a name, a 1-based number, or the first) of workbook ``path``.

    Every cell as text (``None`` for an empty one), row ``i`` of the frame being the sheet's
    row ``i + 1``. Raises :class:`InputFileError` for a damaged, looping or unreadable
    workbook, or a sheet it does not have.
    """
    import polars as pl

    with tempfile.TemporaryDirectory(prefix="invsync-read-") as tmp:
        out = Path(tmp) / "sheet.arrow"
        result = _run_child(path, sheet, out, shown or path)
        if "refused" in result:
            raise InputFileError(str(shown or path), str(result["refused"]))
        frame = pl.read_ipc(io.BytesIO(out.read_bytes()))
    return LoadedSheet(names=list(result["names"]), index=int(result["index"]), frame=frame)


def _child_env() -> dict[str, str]:
    """The child's environment: this invsync importable, no Rust backtraces."""
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}
    root = str(Path(__file__).resolve().parents[3])  # the folder holding invsync/
    env["INVSYNC_READER_PARENT"] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _run_child(path: Path, sheet: str | None, out: Path, shown: Path) -> dict[str, Any]:
    """Start the child, watch it, and return its JSON answer (or raise for a damaged file)."""
    args = [sys.executable, "-m", "invsync.stages.ingest.isolated", str(path), sheet or "",
            str(out)]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=_child_env())
    try:
        why = _watch(proc)
        answer = proc.stdout.read() if proc.stdout is not None else b""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if why is not None:
        raise InputFileError(str(shown), DAMAGED.format(why=why))
    try:
        result: dict[str, Any] = json.loads(answer.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        result = {}
    if proc.returncode != 0 or not result:
        raise InputFileError(str(shown), DAMAGED.format(why="the reader stopped on it"))
    return result


def _watch(proc: subprocess.Popen[bytes]) -> str | None:
    """Wait for the child; kill it past the time or memory budget and say which."""
    deadline = time.monotonic() + READER_SECONDS
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            return f"reading it took more than {READER_SECONDS:.0f} s"
        if _rss_mb(proc.pid) > READER_MEMORY_MB:
            proc.kill()
            return f"reading it needed more than {READER_MEMORY_MB} MB"
        time.sleep(_POLL_S)
    return None


def _rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (0 when it cannot be told)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        return _rss_mb_portable(pid)


def _rss_mb_portable(pid: int) -> float:
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss) / (1 << 20)
    except Exception:
        return 0.0


# ---- the child side -------------------------------------------------------------------


def _limit_self() -> None:
    """Bound the child's own CPU time and address space, where the platform allows."""
    try:
        import resource
    except ImportError:
        return
    cpu = int(READER_SECONDS) + 5
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    _die_with_parent()


def _die_with_parent() -> None:
    """On Linux, be killed when invsync is (a ``kill -9`` leaves no reader behind, growing
    unwatched)."""
    if not sys.platform.startswith("linux"):
        return
    parent = int(os.environ.get("INVSYNC_READER_PARENT", "0"))
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    if parent and os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def _child(path: str, sheet: str, out: str) -> dict[str, Any]:
    """Read the sheet into ``out``; the answer the parent gets as JSON."""
    import fastexcel

    from invsync.stages.ingest.workbook import pick_sheet, plain_reader_error
    from invsync.stages.ingest.xlsx import check_cell_text

    p = Path(path)
    try:
        reader = fastexcel.read_excel(path)
        names = list(reader.sheet_names)
    except Exception as exc:
        return {"refused": plain_reader_error(p, exc)}
    if not names:
        return {"refused": DAMAGED.format(why="it lists no sheets")}
    try:
        index = pick_sheet(p, names, sheet or None)
        check_cell_text(p, index)
    except InputFileError as exc:
        return {"refused": exc.detail}
    try:
        # skip_rows=0 keeps the empty rows above the data: row i is the sheet's row i+1
        # in every format (xlsx, xlsb, xls, ods).
        loaded = reader.load_sheet(index, header_row=None, dtypes="string", skip_rows=0)
        loaded.to_polars().write_ipc(out)
    except Exception as exc:
        return {"refused": plain_reader_error(p, exc, sheet=names[index])}
    return {"names": names, "index": index}


def main(argv: list[str]) -> int:
    """The child process: read one sheet, answer on stdout."""
    _limit_self()
    try:
        answer = _child(*argv[:3])
    except BaseException as exc:
        answer = {"refused": DAMAGED.format(why="the reader failed on it")
                  if type(exc).__name__ == "PanicException" else
                  DAMAGED.format(why="it could not be read")}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
