"""The Excel reader, run in a child process bounded in memory and time.

A workbook's bytes can make the reader loop (an OLE sector chain that points back on
itself grew one process to 21 GB), panic (Rust's own message goes straight to file
descriptor 2) or take forever. In a child process none of that reaches invsync: the
child's stderr is discarded, its memory is watched and it is killed past
:data:`READER_MEMORY_MB` or :data:`READER_SECONDS`, and the parent never redirects its own
file descriptors. The child writes the sheet's text cells as an Arrow IPC file and its
answer (what it found) as one line of JSON.

Starting a fresh interpreter for each workbook costs about half a second (importing the
reader and polars), so the reader's process is made once per invsync process and kept
(the *spawner*): it never reads a workbook itself, it keeps one short-lived worker forked
ahead, every import done, waiting for the next workbook (the fork and the worker's start
are paid between reads, not during one); the worker takes the request, says its id and,
its answer written, that it is done; the spawner says how it ended and forks the next.
The reader's process is started once the file is not refused by what it says of itself,
so its start overlaps the rest of the preparation; the frame is read from the worker's
Arrow file where it lies (in memory when there is room), and the parent's first use of the
data frame library is paid while the worker reads. The spawner is a fork of invsync itself
while invsync is still one thread (nothing to re-import), else a fresh interpreter
(imports paid once). Each worker is watched and bounded exactly as a lone child was, and
a read the spawner cannot serve (busy in another thread, gone) runs in a lone child.

Run as ``python -m invsync.stages.ingest.isolated PATH SHEET OUT`` (a lone child) or
``python -m invsync.stages.ingest.isolated --serve`` (a spawner reading requests on stdin).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from invsync.errors import InputFileError

try:  # (imported with this module: not paid between forking the spawner and its worker)
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import polars as pl

READER_MEMORY_MB = 512
"""Resident memory the reader's process may use (real exports need well under 150 MB)."""
READER_SECONDS = 25.0
"""Wall-clock time the reader may take (real exports take 1-2.5 s)."""
_POLL_S = 0.01

DAMAGED = ("the workbook is damaged ({why}); open it in its spreadsheet program and save "
           "it again as .xlsx, or export it as CSV")

Meanwhile = Callable[[], bool]
"""The parent's own work, done a slice at a time while the reader works; False when done."""


@dataclass(frozen=True)
class LoadedSheet:
    """What the child read: the workbook's sheet names, the one chosen and its cells."""

    names: list[str]
    index: int
    frame: pl.DataFrame


def load_sheet(path: Path, sheet: str | None, *, shown: Path | None = None,
               meanwhile: Meanwhile | None = None) -> LoadedSheet:
    """Read sheet ``sheet`` (a name, a 1-based number, or the first) of workbook ``path``.

    Every cell as text (``None`` for an empty one), row ``i`` of the frame being the sheet's
    row ``i + 1``. Raises :class:`InputFileError` for a damaged, looping or unreadable
    workbook, or a sheet it does not have. ``meanwhile`` is called, a slice at a time,
    while the reader works (the parent's own checks of the file run beside the read).
    """
    import polars as pl

    scratch = _scratch()
    with tempfile.TemporaryDirectory(prefix=f"invsync-read-{os.getpid()}-",
                                     dir=scratch) as tmp:
        out = Path(tmp) / "sheet.arrow"
        result = _read_isolated(path, sheet, out, shown or path, _sweeping(meanwhile, scratch))
        _sweep_once(scratch)  # (when the reader was done before the parent looked)
        if "refused" in result:
            raise InputFileError(str(shown or path), str(result["refused"]))
        # Read where it lies (no copy of the file's bytes first); elsewhere than Linux the
        # file must not be held open when its folder is removed.
        frame = pl.read_ipc(out) if sys.platform.startswith("linux") else \
            pl.read_ipc(io.BytesIO(out.read_bytes()))
    return LoadedSheet(names=list(result["names"]), index=int(result["index"]), frame=frame)


_SHM = "/dev/shm"
_SHM_FREE = 1 << 30
"""Free space the memory file system must have to hold a sheet's cells (a container's may
be 64 MB: a large sheet must not fail there for want of room)."""


def _scratch() -> str | None:
    """Where the worker writes the cells: in memory when the system has room there (no disk
    writes, and removing the file costs nothing), else the usual temporary folder."""
    try:
        st = os.statvfs(_SHM)
        roomy = st.f_bavail * st.f_frsize >= _SHM_FREE and os.access(_SHM, os.W_OK | os.X_OK)
    except (OSError, AttributeError):
        roomy = False
    return _SHM if roomy else None


_SWEPT: list[bool] = []


def _sweep_once(scratch: str | None) -> None:
    """Sweep what killed runs left (see :func:`_sweep`), once per process."""
    if not _SWEPT:
        _SWEPT.append(True)
        _sweep(Path(tempfile.gettempdir()))  # the read's own folder is there (workbook.py)
        if scratch is not None:
            _sweep(Path(scratch))


def _sweeping(meanwhile: Meanwhile | None, scratch: str | None) -> Meanwhile:
    """``meanwhile``, after the first slice sweeps what killed runs left: done while the
    reader works, not before it is asked."""
    def step() -> bool:
        if not _SWEPT:
            _sweep_once(scratch)
            return True
        return meanwhile() if meanwhile is not None else False

    return step


def _sweep(folder: Path) -> None:
    """Remove what reads of invsync processes that were killed left in ``folder`` (it
    would hold memory until the machine restarts), once per process."""
    import shutil

    for left in folder.glob("invsync-read-*-*"):
        pid = left.name.split("-")[2]
        try:
            if not pid.isdigit() or left.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(left, ignore_errors=True)
        except (OSError, AttributeError):
            continue


def start_reader() -> None:
    """Start this process's reader (if it has none yet), so that its start, and the
    worker it forks ahead, overlap the preparation of a workbook's read."""
    if _SPAWNER_LOCK.acquire(blocking=False):
        try:
            _spawner()
        finally:
            _SPAWNER_LOCK.release()


def _read_isolated(path: Path, sheet: str | None, out: Path, shown: Path,
                   meanwhile: Meanwhile | None) -> dict[str, Any]:
    """The reader's answer, from a worker of the spawner when it can serve, else a lone child."""
    if _SPAWNER_LOCK.acquire(blocking=False):
        try:
            spawner = _spawner()
            if spawner is not None:
                try:
                    return spawner.read(path, sheet, out, shown, meanwhile)
                except _SpawnerGone:
                    _drop_spawner()
        finally:
            _SPAWNER_LOCK.release()
    return _run_child(path, sheet, out, shown, meanwhile)


def _child_env() -> dict[str, str]:
    """The child's environment: this invsync importable, no Rust backtraces."""
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LIB_BACKTRACE")}
    root = str(Path(__file__).resolve().parents[3])  # the folder holding invsync/
    env["INVSYNC_READER_PARENT"] = str(os.getpid())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _run_child(path: Path, sheet: str | None, out: Path, shown: Path,
               meanwhile: Meanwhile | None = None) -> dict[str, Any]:
    """Start a lone child, watch it, and return its JSON answer (or raise for a damaged file)."""
    args = [sys.executable, "-m", "invsync.stages.ingest.isolated", str(path), sheet or "",
            str(out)]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=_child_env())

    def finished(wait: float) -> bool:
        if proc.poll() is None and wait:
            time.sleep(wait)
        return proc.poll() is not None

    try:
        why = _watch(proc.pid, finished, meanwhile)
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


def _watch(pid: int, finished: Callable[[float], bool], meanwhile: Meanwhile | None
           ) -> str | None:
    """Wait for the reader ``pid``; kill it past the time or memory budget and say which.

    ``finished(wait)`` tells whether the reader is done, waiting up to ``wait`` seconds
    for it; between two looks the parent does a slice of ``meanwhile``. What ``meanwhile``
    raises (the parent's own checks refusing the file) stops the reader and is raised.
    """
    deadline = time.monotonic() + READER_SECONDS
    busy = meanwhile is not None
    while not finished(0.0 if busy else _POLL_S):
        if time.monotonic() > deadline:
            _kill(pid)
            return f"reading it took more than {READER_SECONDS:.0f} s"
        if _rss_mb(pid) > READER_MEMORY_MB:
            _kill(pid)
            return f"reading it needed more than {READER_MEMORY_MB} MB"
        if busy and meanwhile is not None:
            busy = meanwhile()
    return None


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


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


# ---- the spawner: one reader process per invsync process, one worker per workbook -------


class _SpawnerGone(Exception):
    """The spawner stopped answering (it died, or its pipe broke)."""


class _Spawner:
    """The parent's side of the spawner: requests out, worker ids and outcomes back."""

    def __init__(self, pid: int, to_fd: int, from_fd: int,
                 proc: subprocess.Popen[bytes] | None = None) -> None:
        self.pid, self.to_fd, self.from_fd, self.proc = pid, to_fd, from_fd, proc
        self.owner = os.getpid()
        self._buffer = b""
        self._status_due = False
        """A worker said it was done; how it ended is still to come."""

    def read(self, path: Path, sheet: str | None, out: Path, shown: Path,
             meanwhile: Meanwhile | None) -> dict[str, Any]:
        """Have a worker read the sheet; its answer (or raise for a damaged file)."""
        request = {"path": str(path), "sheet": sheet or "", "out": str(out)}
        self._settle()
        try:
            os.write(self.to_fd, json.dumps(request).encode() + b"\n")
        except OSError:
            raise _SpawnerGone from None
        # A fresh interpreter may still be importing: the whole budget, not a poll.
        started = self._line(READER_SECONDS)
        if started is None or not isinstance(started.get("pid"), int):
            raise _SpawnerGone
        worker = int(started["pid"])
        outcome: list[dict[str, Any]] = []

        def finished(wait: float) -> bool:
            if not outcome:
                line = self._line(wait)
                if line is not None:
                    outcome.append(line)
                    # Said by the worker itself, its answer written, before it exits.
                    self._status_due = "done" in line
            return bool(outcome)

        try:
            why = _watch(worker, finished, meanwhile)
        finally:
            if not finished(0.0):  # stopped: the spawner still says how the worker ended
                _kill(worker)
                if not finished(READER_SECONDS):
                    raise _SpawnerGone
        if why is not None:
            raise InputFileError(str(shown), DAMAGED.format(why=why))
        try:
            result: dict[str, Any] = json.loads(Path(f"{out}.json").read_text("utf-8"))
        except (OSError, ValueError):
            result = {}
        if (outcome and outcome[0].get("status", outcome[0].get("done")) != 0) or not result:
            raise InputFileError(str(shown), DAMAGED.format(why="the reader stopped on it"))
        return result

    def _settle(self) -> None:
        """Take in how the last worker ended (it said it was done a moment before), so the
        next answer read is the next worker's."""
        while self._status_due:
            line = self._line(READER_SECONDS)
            if line is None:
                raise _SpawnerGone
            self._status_due = "status" not in line

    def _line(self, wait: float) -> dict[str, Any] | None:
        """The spawner's next answer, waiting up to ``wait`` s (None: not yet); raises
        :class:`_SpawnerGone` when its pipe closed."""
        deadline = time.monotonic() + wait
        while b"\n" not in self._buffer:
            left = max(deadline - time.monotonic(), 0.0)
            ready, _, _ = select.select([self.from_fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.from_fd, 65536)
            if not chunk:
                raise _SpawnerGone
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except ValueError:
            raise _SpawnerGone from None
        if not isinstance(answer, dict):
            raise _SpawnerGone
        return answer

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        try:
            return os.waitpid(self.pid, os.WNOHANG) == (0, 0)
        except ChildProcessError:
            return False

    def stop(self) -> None:
        """End the spawner and reap it. Its requests pipe closed, the worker waiting for a
        workbook ends and the spawner reaps it and ends; one that does not within
        :data:`_STOP_GRACE_S` is killed (a worker dies with it)."""
        pipes = [self.proc.stdin, self.proc.stdout] if self.proc is not None else []
        for pipe in pipes:
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if self.proc is None:
            for fd in (self.to_fd, self.from_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
        deadline = time.monotonic() + _STOP_GRACE_S
        while not self._ended() and time.monotonic() < deadline:
            time.sleep(0.002)
        if not self._ended():
            _kill(self.pid)
            if self.proc is not None:
                self.proc.wait()
            else:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)

    def _ended(self) -> bool:
        """Whether the spawner has ended (and is reaped)."""
        if self.proc is not None:
            return self.proc.poll() is not None
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            return True


_STOP_GRACE_S = 0.2
"""How long a spawner told to stop has to end by itself before it is killed."""

_SPAWNER: _Spawner | None = None
_SPAWNER_LOCK = threading.Lock()
_STOP_AT_EXIT: list[bool] = []


def _spawner() -> _Spawner | None:
    """The live spawner of this process, started if need be (None where there is no fork)."""
    global _SPAWNER
    if _SPAWNER is not None and _SPAWNER.alive() and _SPAWNER.owner == os.getpid():
        return _SPAWNER
    if _SPAWNER is not None:
        _drop_spawner()
    if not hasattr(os, "fork") or not sys.platform.startswith("linux"):
        return None
    try:
        _SPAWNER = _fork_spawner() if _fork_is_safe() else _exec_spawner()
    except OSError:
        return None
    if not _STOP_AT_EXIT:
        # Ended and reaped at exit (not only killed with invsync), so what its workers
        # used is counted in invsync's own resource use.
        atexit.register(_drop_spawner)
        _STOP_AT_EXIT.append(True)
    return _SPAWNER


def _drop_spawner() -> None:
    global _SPAWNER
    spawner, _SPAWNER = _SPAWNER, None
    if spawner is not None and spawner.owner == os.getpid():
        spawner.stop()


_SAFE_THREADS = frozenset({"jemalloc_bg_thd", "polars-ooc-clea"})
"""Threads that may run beside the main one when invsync forks its spawner: the
allocator's own (fork-safe) and an idle clean-up thread. Any other (a Python thread, the
data frame library's worker pool once started) could hold a lock the fork would copy
locked, so the spawner is then a fresh interpreter instead."""


def _fork_is_safe() -> bool:
    """Whether this process may fork its spawner: the main thread and known-idle ones only,
    and small (a worker's memory counts what it shares with invsync)."""
    me = os.getpid()
    if _rss_mb(me) > READER_MEMORY_MB / 4:
        return False
    try:
        tasks = [int(t) for t in os.listdir("/proc/self/task")]
        names = {t: Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in tasks}
    except (OSError, ValueError):
        return False
    return threading.active_count() == 1 and all(
        name in _SAFE_THREADS for t, name in names.items() if t != me)


def _fork_spawner() -> _Spawner:
    """The spawner as a fork of this process (every import already done)."""
    import fastexcel  # noqa: F401  # imported once, here, not in every worker
    import polars  # noqa: F401

    from invsync.stages.ingest import workbook, xlsx  # noqa: F401

    requests_r, requests_w = os.pipe()
    answers_r, answers_w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the spawner's side, seen through its answers
        try:
            os.dup2(requests_r, 0)
            os.dup2(answers_w, 1)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.closerange(3, _fd_limit())  # the parent's files, sockets and locks
            _become_spawner(parent)
            serve(0, 1)
        finally:
            os._exit(1)
    os.close(requests_r)
    os.close(answers_w)
    return _Spawner(pid, requests_w, answers_r)


def _fd_limit() -> int:
    try:
        return min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 1 << 16)
    except (AttributeError, OSError, ValueError):
        return 1024


def _exec_spawner() -> _Spawner:
    """The spawner as a fresh interpreter (its imports paid once, for every later read)."""
    proc = subprocess.Popen([sys.executable, "-m", "invsync.stages.ingest.isolated", "--serve"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=_child_env(),
                            start_new_session=True)
    assert proc.stdin is not None and proc.stdout is not None
    return _Spawner(proc.pid, proc.stdin.fileno(), proc.stdout.fileno(), proc)


def _become_spawner(parent: int) -> None:
    """In the spawner: none of invsync's signal handlers, no collector closing copied files,
    gone with invsync."""
    import gc

    gc.disable()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a Ctrl-C at the terminal is for invsync, which then ends it
    _die_with_parent(parent)


def serve(requests: int, answers: int) -> NoReturn:
    """The spawner's loop: keep one worker forked ahead, waiting for the next request (so
    neither the fork nor its start is paid when a workbook comes), then say how it ended.
    Never reads a workbook itself, nor a request: the waiting worker takes it."""
    import fastexcel  # noqa: F401  # every import done before the first fork
    import polars  # noqa: F401

    from invsync.stages.ingest import workbook, xlsx  # noqa: F401

    while True:
        pid = os.fork()
        if pid == 0:
            _work(spawner=os.getppid(), fds=(requests, answers))
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == _NO_REQUEST:
            os._exit(0)  # invsync closed the requests pipe: nothing more to read
        os.write(answers, json.dumps({"status": status}).encode() + b"\n")


_NO_REQUEST = 3
"""A waiting worker's exit code when the requests pipe closed (invsync ended)."""


def _request(fd: int) -> tuple[str, str, str] | None:
    """The next request line on ``fd``: (path, sheet, out); None at its end. Exits the
    worker for a line that is not a request."""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)  # byte by byte: nothing past the line is taken from the pipe
        if not chunk:
            return None
        line += chunk
    try:
        request = json.loads(line)
        return (str(request["path"]), str(request["sheet"]), str(request["out"]))
    except (ValueError, KeyError, TypeError):
        os._exit(1)


def _work(*, spawner: int, fds: tuple[int, int]) -> NoReturn:
    """A worker: wait for a request, say its id, read the sheet, its answer beside the
    cells, say it is done, and end."""
    code = 1
    try:
        _limit_self(spawner)  # gone with the spawner even while it waits
        job = _request(fds[0])
        if job is None:
            os._exit(_NO_REQUEST)
        os.write(fds[1], json.dumps({"pid": os.getpid()}).encode() + b"\n")
        # The spawner's pipes are not the reader's to use; nor may a file the reader
        # opens take their numbers (anything printed would land in it). The answers pipe
        # is kept under another number, to say "done" on before the exit (ending a
        # process of this size takes a few milliseconds that nobody waits for then).
        done = os.dup(fds[1])
        null = os.open(os.devnull, os.O_RDWR)
        for fd in fds:
            os.dup2(null, fd)
        os.close(null)
        path, sheet, out = job
        Path(f"{out}.json").write_text(json.dumps(_answer(path, sheet, out)), "utf-8")
        code = 0
        os.write(done, json.dumps({"done": 0}).encode() + b"\n")
    finally:
        os._exit(code)


# ---- the reading side (a worker, or a lone child) ----------------------------------------


def _limit_self(parent: int | None = None) -> None:
    """Bound the reader's own CPU time and address space, where the platform allows."""
    if resource is None:  # pragma: no cover - not on Windows
        return
    cpu = int(READER_SECONDS) + 5
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    _die_with_parent(parent)


def _die_with_parent(parent: int | None = None) -> None:
    """On Linux, be killed when the parent is (a ``kill -9`` of invsync leaves no reader
    behind, growing unwatched)."""
    if not sys.platform.startswith("linux"):
        return
    if parent is None:
        parent = int(os.environ.get("INVSYNC_READER_PARENT", "0"))
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        return
    if parent and os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


_HELD: list[object] = []
"""What the reader read, kept until the process ends: freeing a sheet's cells takes a few
milliseconds that a worker (which ends by ``os._exit``) would otherwise spend before it
says it is done."""


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
        frame = loaded.to_polars()
        frame.write_ipc(out)
        # Freed when the process ends, after its answer: a worker never frees them at all.
        _HELD.append((reader, loaded, frame))
    except Exception as exc:
        return {"refused": plain_reader_error(p, exc, sheet=names[index])}
    return {"names": names, "index": index}


def _answer(path: str, sheet: str, out: str) -> dict[str, Any]:
    """:func:`_child`'s answer, a panic or any other failure being a damaged workbook."""
    try:
        return _child(path, sheet, out)
    except BaseException as exc:
        return {"refused": DAMAGED.format(why="the reader failed on it")
                if type(exc).__name__ == "PanicException" else
                DAMAGED.format(why="it could not be read")}


def main(argv: list[str]) -> int:
    """A lone child (read one sheet, answer on stdout) or, with ``--serve``, the spawner."""
    if argv[:1] == ["--serve"]:
        _become_spawner(int(os.environ.get("INVSYNC_READER_PARENT", "0")))
        serve(0, 1)
    _limit_self()
    sys.stdout.write(json.dumps(_answer(*argv[:3])) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
