"""Shared fixtures: a real sandbox process on 127.0.0.1 and a way to run the real CLI."""

from __future__ import annotations

import csv
import inspect
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import polars as pl
import pytest
from contracts import check_events, check_outputs_under
from hypothesis import settings as hypothesis_settings

from invsync.sandbox.process import SandboxProcess, run_sandbox
from invsync.stages.ingest import ROW
from invsync.state.journal import ENV_LOCK_DIR
from invsync.state.snapshot import store_dir

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
TOKEN = "test-token-4f1d9c"
T = TypeVar("T")

# ---- tiers: markers by what a test uses ---------------------------------------------------

# Property tests: `make test` runs them derandomized (the same examples every run, no example
# database shared between workers); `make soak` explores (INVSYNC_HYPOTHESIS=soak, a random
# seed each run, SOAK_FACTOR times the examples, failures kept in .hypothesis/).
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("soak", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("INVSYNC_HYPOTHESIS", "ci"))
SOAK_FACTOR = 10 if os.environ.get("INVSYNC_HYPOTHESIS") == "soak" else 1


def budget(examples: int) -> int:
    """A property test's number of examples: as given, or ``SOAK_FACTOR`` times in a soak."""
    return examples * SOAK_FACTOR


PROCESS_FIXTURES = {"sandbox", "own_sandbox", "shared_sandbox", "sandbox_factory", "cli_env",
                    "children", "tmpfs"}
"""Fixtures that start processes (a sandbox server, the CLI, a mount)."""
BROWSER_FIXTURES = {"browser", "served"}
PACKAGE_FIXTURES = {"wheel"}
PROCESS_CALLS = ("run_sandbox(", "run_invsync(", "spawn(", "subprocess.", "Popen(",
                 "misbehaving_store(", "sandbox_factory(", "run_measured(")
"""Calls in a test's (or its fixtures') source that start a process or a server."""


def _sources(item: pytest.Item) -> list[str]:
    """The source of the test function, of each fixture it uses from its module, and of the
    module's functions and classes these name (transitively)."""
    module = getattr(item, "module", None)
    if module is None:
        return []
    todo: list[Any] = [getattr(item, "function", None)]
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        todo += [d.func for d in defs if d.func.__module__ == module.__name__]
    seen: set[int] = set()
    out = []
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        source = _source(obj)
        if source is None:
            continue
        out.append(source)
        code = getattr(obj, "__code__", None)
        names = _names(code) if code else set(vars(obj))
        todo += [v for n in names if (v := getattr(module, n, None)) is not None
                 and (inspect.isfunction(v) or inspect.isclass(v))
                 and getattr(v, "__module__", None) == module.__name__]
    return out


_SOURCES: dict[int, str | None] = {}


def _source(obj: Any) -> str | None:
    """``inspect.getsource(obj)``, once per object."""
    if id(obj) not in _SOURCES:
        try:
            _SOURCES[id(obj)] = inspect.getsource(obj)
        except (TypeError, OSError):
            _SOURCES[id(obj)] = None
    return _SOURCES[id(obj)]


def _names(code: Any) -> set[str]:
    """The global names a code object (and the functions nested in it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it uses: ``integration`` (processes: a sandbox server, the
    CLI), ``browser`` (a real browser), ``package`` (builds and installs the wheel),
    ``property`` (hypothesis).

    ``make test-fast`` runs the rest, in-process; a test there that starts a process anyway
    fails (see :func:`in_process_only`), so a miss here cannot hide.
    """
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        browser = bool(used & BROWSER_FIXTURES)
        package = bool(used & PACKAGE_FIXTURES)
        starts = browser or package or bool(used & PROCESS_FIXTURES) or any(
            call in src for src in _sources(item) for call in PROCESS_CALLS)
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False) or any(
                "@given(" in src or "run_state_machine_as_test(" in src
                for src in _sources(item)[:1]):
            item.add_marker(pytest.mark.property)
        if browser:
            item.add_marker(pytest.mark.browser)
        if package:
            item.add_marker(pytest.mark.package)
        if starts:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def in_process_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the fast tier (``INVSYNC_TIER=fast``) a test that starts a process fails, naming
    itself: it needs one of the markers above (add what it uses to their lists)."""
    if os.environ.get("INVSYNC_TIER") != "fast":
        return

    start = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        # The workbook reader's own child is part of reading a file, not a test's process.
        if isinstance(args, list) and "invsync.stages.ingest.isolated" in args:
            start(self, args, *rest, **kwargs)
            return
        raise AssertionError(f"{request.node.nodeid} starts a process in the fast tier: "
                             "tests/conftest.py should have marked it integration")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)



@dataclass
class CliResult:
    """What one ``invsync`` process did."""

    returncode: int
    stdout: str
    stderr: str

    def report(self) -> dict[str, Any]:
        """The report.json of the run, found from the summary's last line."""
        folder = self.report_dir()
        return dict(json.loads((folder / "report.json").read_text()))

    def report_dir(self) -> Path:
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("report: "):
                return Path(line.removeprefix("report: ").strip())
        raise AssertionError(f"no report line in output:\n{self.stdout}\n{self.stderr}")


def run_invsync(args: list[str], env: dict[str, str], timeout: float = 240) -> CliResult:
    """Run ``python -m invsync ARGS`` as a child process and capture everything.

    With ``--log-format json`` every JSON line it printed is checked against the events
    contract (schemas/events.schema.json).
    """
    proc = subprocess.run([sys.executable, "-m", "invsync", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if "json" in args and ("--log-format" in args or "--log-format=json" in args):
        check_events(proc.stdout, f"invsync {' '.join(args[:2])}")
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


class Printed(Protocol):
    """A finished process's captured text: a :class:`CliResult` or a text-mode
    ``subprocess.CompletedProcess``."""

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...


def output(result: Printed) -> str:
    """Everything a run printed, stdout then stderr (for assertion messages and searches)."""
    return result.stdout + result.stderr


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    """CLI processes started in the background; any still alive at teardown is killed."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def spawn(args: list[str], env: dict[str, str], log: Path,
          children: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Start ``python -m invsync ARGS`` in the background, output into ``log``.

    The process joins ``children`` (the fixture), so teardown kills it if it still runs.
    """
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "invsync", *args], env=env, cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT)
    children.append(proc)
    return proc


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., Path]]:
    """Mount small tmpfs file systems (root only); each is unmounted at teardown.

    ``tmpfs(where, size="64k", *options)`` mounts one at ``where`` (``"ro"``: read-only)
    and returns ``where``; without root the test is skipped.
    """
    mounted: list[Path] = []

    def mount(where: Path, size: str = "64k", *options: str) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        opts = ",".join([f"size={size}", *options])
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture(autouse=True)
def outputs_keep_their_contracts(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, every run folder written under its ``tmp_path`` (report.json,
    plan.csv, rejected.csv) must validate against ``schemas/``."""
    root = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if root is not None and not request.node.get_closest_marker("breaks_contracts"):
        check_outputs_under(root)


@pytest.fixture(autouse=True)
def private_lock_dir(tmp_path_factory: pytest.TempPathFactory,
                     monkeypatch: pytest.MonkeyPatch) -> Path:
    """Host-wide store locks in a folder of this test's own (parallel runs never collide).

    Set in ``os.environ``, so every CLI started with :func:`env_for` inherits it.
    """
    folder = tmp_path_factory.mktemp("locks")
    monkeypatch.setenv(ENV_LOCK_DIR, str(folder))
    return folder


@pytest.fixture(autouse=True)
def own_redaction_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets a test registers for redaction stay that test's: a registered word such as
    'token' would otherwise change what a later test in the same worker sees redacted."""
    from invsync import redact

    monkeypatch.setattr(redact, "_secrets", set(redact._secrets))
    monkeypatch.setattr(redact, "_pattern", redact._pattern)


def state_store_dir(state_home: Path, store_hash: str = "sandbox",
                    api_url: str | None = None) -> Path:
    """The state folder of one store under ``XDG_STATE_HOME`` = ``state_home``.

    Without ``api_url``: the one folder for ``store_hash`` whatever its API host (it must
    be unique), or where it would be for an unknown host when there is none yet.
    """
    base = state_home / "invsync"
    if api_url is not None:
        return store_dir(base, api_url, store_hash)
    found = sorted((base / "stores").glob(f"*/{store_hash}"))
    assert len(found) <= 1, f"several API hosts for store {store_hash}: {found}"
    return found[0] if found else base / "stores" / "(none)" / store_hash


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxProcess]]:
    """Start sandboxes with chosen flags; every one is stopped at teardown."""
    stack: list[Any] = []

    def start(*args: str, catalog: Path = SAMPLE / "catalog.csv",
              token: str = TOKEN) -> SandboxProcess:
        cm = run_sandbox(catalog, *args, token=token)
        sb = cm.__enter__()
        stack.append(cm)
        return sb

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


class SharedSandbox:
    """The session's sandbox process (one per xdist worker), started on first use and
    started again if a test ended it."""

    def __init__(self) -> None:
        self._cm: Any = None
        self._sb: SandboxProcess | None = None
        self.starts = 0

    def get(self) -> SandboxProcess:
        """The running shared sandbox, as it is (not reset)."""
        if self._sb is None or self._sb.process.poll() is not None:
            self.close()
            self._cm = run_sandbox(SAMPLE / "catalog.csv", token=TOKEN)
            self._sb = self._cm.__enter__()
            self.starts += 1
        assert self._sb is not None
        return self._sb

    def close(self) -> None:
        """Stop the process (if any)."""
        cm, self._cm, self._sb = self._cm, None, None
        if cm is not None:
            cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def shared_sandbox() -> Iterator[SharedSandbox]:
    """The one sandbox process of this session (per xdist worker); stopped at the end.

    Tests take it through :func:`sandbox`, which resets it first.
    """
    holder = SharedSandbox()
    yield holder
    holder.close()


@pytest.fixture
def sandbox(shared_sandbox: SharedSandbox) -> SandboxProcess:
    """A sandbox store with the sample catalog and no faults, as if fresh: the session's
    process, reset before this test (``POST /_sandbox/reset?all=1``: no levels, orders or
    logged requests, default faults, a new quota window).

    A test that needs startup flags, another catalog or token, or that stops the process,
    takes :func:`own_sandbox` or :func:`sandbox_factory` instead.
    """
    sb = shared_sandbox.get()
    sb.reset()
    return sb


@pytest.fixture
def own_sandbox(sandbox_factory: Callable[..., SandboxProcess]) -> SandboxProcess:
    """A sandbox process of this test's own (sample catalog, no faults)."""
    return sandbox_factory()


@pytest.fixture
def cli_env(sandbox: SandboxProcess, tmp_path: Path) -> dict[str, str]:
    """Environment pointing the CLI at ``sandbox``, with private state dirs."""
    return env_for(sandbox, tmp_path)


def env_for(sb: SandboxProcess, tmp_path: Path, token: str = TOKEN) -> dict[str, str]:
    # The developer's own INVSYNC_CONFIG / INVSYNC_PROFILE must not steer the tests.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_")) or k == ENV_LOCK_DIR}
    env.update({
        "BIGCOMMERCE_STORE_HASH": sb.store_hash,
        "BIGCOMMERCE_ACCESS_TOKEN": token,
        "BIGCOMMERCE_API_URL": sb.url,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "COLUMNS": "200",
    })
    return env


def env_at(url: str, tmp_path: Path, sb: SandboxProcess, token: str = TOKEN) -> dict[str, str]:
    """:func:`env_for` with the API URL pointing at ``url`` (a misbehaving proxy of ``sb``)."""
    env = env_for(sb, tmp_path, token=token)
    env["BIGCOMMERCE_API_URL"] = url
    return env


def wait_for(what: Callable[[], T], proc: subprocess.Popen[Any] | None = None,
             log: Path | None = None, timeout: float = 60, *, every: float = 0.02,
             message: str | Callable[[], str] = "timed out", give_up: bool = False) -> T:
    """Poll ``what`` every ``every`` s until it returns something true, and return that.

    The one wait loop of the tests. It fails naming the run's ``log`` if ``proc`` ends
    first, and after ``timeout`` s with ``message`` (or what it returns) and the log;
    with ``give_up`` it returns the last (false) answer at the timeout instead.
    """
    deadline = time.monotonic() + timeout
    while not (answer := what()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended early: {log.read_text() if log else ''}")
        if time.monotonic() >= deadline:
            if give_up:
                return answer
            said = message() if callable(message) else message
            raise AssertionError(f"{said}\n{log.read_text()}" if log else said)
        time.sleep(every)
    return answer


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (one that ended, a zombie not yet reaped, does not)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def outliving(pids: Iterable[int], timeout: float = 20) -> list[int]:
    """Which of ``pids`` still run ``timeout`` s on (each then killed, so that no test leaves
    one behind): what outlived the invsync process a test killed."""
    pids = list(pids)
    wait_for(lambda: not any(alive(p) for p in pids), timeout=timeout, every=0.05,
             give_up=True)
    left = [p for p in pids if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def quiet_log(sb: SandboxProcess, timeout: float = 20, every: float = 0.15
              ) -> list[dict[str, Any]]:
    """The sandbox's request log once every request it received has been answered: two
    looks ``every`` s apart see the same requests, all answered."""
    last: list[list[dict[str, Any]]] = []  # the previous look

    def quiet() -> bool:  # (an empty log is quiet too: so not the log itself as the answer)
        log = sb.requests()
        done = bool(last) and len(log) == len(last[0]) and all(
            r["status"] is not None for r in log)
        last[:] = [log]
        return done

    wait_for(quiet, timeout=timeout, every=every, message="the sandbox never went quiet")
    return last[0]


def kill_when(ready: Callable[[], object], proc: subprocess.Popen[Any], log: Path | None,
              sig: int = signal.SIGKILL, timeout: float = 60) -> int:
    """Wait until ``ready`` (failing if ``proc`` ends first), send ``proc`` the signal
    ``sig`` (kill -9 by default) and return its exit code once it has ended."""
    wait_for(ready, proc, log, timeout)
    proc.send_signal(sig)
    return proc.wait(timeout=60)


def confirmed_in_journal(state_home: Path) -> bool:
    """The running sync has a batch the store confirmed: ``"confirmed"`` is in the journal
    of the one store under ``XDG_STATE_HOME`` = ``state_home`` (false until it exists)."""
    try:
        return '"confirmed"' in (state_store_dir(state_home) / "journal.jsonl").read_text()
    except OSError:
        return False


@pytest.fixture(name="browser")
def browser_fixture(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium (selenium) with a profile of this test's own; always quit.

    The test is skipped where there is no Chromium (see tests/browser.py).
    """
    from browser import chromium  # (tests/browser.py imports this module)

    with chromium(tmp_path / "profile") as driver:
        yield driver


def lock_holder(lock: Path, proc: subprocess.Popen[Any], log: Path | None,
                timeout: float = 30) -> dict[str, Any]:
    """Wait until the run ``proc`` holds the store lock file ``lock``; what the lock says."""
    holder: dict[str, Any] = {}

    def taken() -> bool:
        try:
            holder.update(json.loads(lock.read_text()))
        except (OSError, ValueError):
            return False
        return True

    wait_for(taken, proc, log, timeout)
    return holder


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No store, token, API URL, config or profile from the environment (the developer's
    own must not steer a test), state under ``tmp_path``; the monkeypatch, to set some."""
    from invsync.run.config import (
        ENV_API_URL,
        ENV_CONFIG,
        ENV_PROFILE,
        ENV_STORE_HASH,
        ENV_TOKEN,
    )

    for name in (ENV_STORE_HASH, ENV_TOKEN, ENV_API_URL, ENV_CONFIG, ENV_PROFILE):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    return monkeypatch


@pytest.fixture
def config_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], Path]:
    """Writes TOML text as ``tmp_path/invsync.toml`` (each call replaces it), in a clean
    environment (:func:`clean_env`), and returns its path."""
    def write(text: str) -> Path:
        path = tmp_path / "invsync.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def retry_config(tmp_path: Path, **retry: float) -> Path:
    """A new TOML config file whose [retry] section makes retries fast and bounded
    (``retry`` overrides the defaults here); the one writer of [retry] configs in tests."""
    section = {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05,
               "max_total_s": 5.0, "timeout_s": 5.0, **retry}
    path = tmp_path / f"invsync-{uuid.uuid4().hex[:8]}.toml"
    path.write_text("[retry]\n" + "".join(f"{k} = {v!r}\n" for k, v in section.items()))
    return path


def stocked(levels: dict[tuple[int, str], int]) -> dict[tuple[int, str], int]:
    """The levels above 0: an item never set reads 0 in the store, as one set to 0 does.

    Plans are made against the store's live levels, so an item the file puts at 0 that
    the store already holds at 0 is not sent (the sandbox lists only levels it was sent).
    """
    return {k: v for k, v in levels.items() if v}


def catalog_skus(n: int) -> list[str]:
    """The first ``n`` SKUs of the sample catalog that track stock."""
    with (SAMPLE / "catalog.csv").open(encoding="utf-8") as fh:
        return [r["sku"] for r in csv.DictReader(fh) if r["tracking"] != "none"][:n]


def write_stock(path: Path, levels: dict[tuple[int, str], int]) -> Path:
    """A stock CSV (sku, location_id, quantity) setting ``levels`` ((location, sku) -> qty)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sku", "location_id", "quantity"])
        for (loc, sku), qty in levels.items():
            w.writerow([sku, loc, qty])
    return path


def write_csv(path: Path, header: list[str], rows: Iterable[list[Any]]) -> Path:
    """Write a CSV file with ``header`` and ``rows``; return its path."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def item_frame(items: list[tuple[int, str, str, int]], *, with_old: bool = False) -> pl.DataFrame:
    """Valid (or, ``with_old``, changed) rows from (location_id, identifier, item_key, qty)."""
    rows = [{
        ROW: i + 2, "location_id": loc, "identifier": ident, "item_key": key,
        "sku": key if ident == "sku" else None,
        "product_id": int(key) if ident == "product_id" else None,
        "variant_id": int(key) if ident == "variant_id" else None,
        "quantity": qty, "address": ident, "address_key": key,
    } for i, (loc, ident, key, qty) in enumerate(items)]
    schema = {ROW: pl.Int64, "location_id": pl.Int64, "identifier": pl.String,
              "item_key": pl.String, "sku": pl.String, "product_id": pl.Int64,
              "variant_id": pl.Int64, "quantity": pl.Int64, "address": pl.String,
              "address_key": pl.String}
    frame = pl.DataFrame(rows, schema=schema)
    return frame.with_columns(old_quantity=pl.lit(None, pl.Int64)) if with_old else frame
