"""invsync benchmarks: issue 26's targets, each ratio against its peer measured in the same run.

    .venv/bin/python bench/run.py                  # full spec (make bench), about 5 minutes
    BENCH_QUICK=1 .venv/bin/python bench/run.py    # ~30 s smoke run, smaller sizes

Environment:
    BENCH_QUICK=1        small sizes and single runs; results go to bench/out/, not bench/
    BENCH_RUNS=N         repetitions of every case (default 5 cheap / 3 heavy)
    BENCH_ONLY=a,b       only these groups: startup, dry, memory, xlsx, peer, live, quota,
                         reads, profile (results then also go to bench/out/)
    BENCH_PROFILE=1      add the profile group to a BENCH_ONLY selection (a full run has it)
    BENCH_STRICT=1       exit 1 when a target is missed (default: report FAIL, exit 0)

Every measurement is a fresh process started through ``bench/measure.py``, which reports
the wall time and the peak RSS (``wait4`` ru_maxrss) of exactly that process. Data is
generated deterministically into bench/data/ (cached); run folders and logs go to
bench/out/. See bench/README.md for the cases, the method and the findings.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import datagen  # noqa: E402

DATA = BENCH / "data"
OUT = BENCH / "out"
PY = sys.executable
BIN = Path(sys.executable).parent
STORE = "benchstore"
TOKEN = "bench-token"  # the sandbox's own token; nothing real
ITEMS_PER_REQUEST = 2000
PAGE_LIMIT = 1000
"""Items a page of ``GET /inventory/items`` can hold (the API's and the sandbox's maximum)."""
FILTER_BUDGET = 6000
"""Characters of one URL-encoded ``sku:in`` value: a filtered read's URL stays under 8 KiB."""
GROUPS = ("startup", "dry", "memory", "xlsx", "peer", "live", "quota", "reads", "profile")


# ---- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    quick: bool = False
    dry_rows: int = 1_000_000
    growth_rows: tuple[int, ...] = (100_000, 1_000_000, 5_000_000)
    xlsx_rows: int = 100_000
    runs: int = 5
    heavy_runs: int = 3
    help_runs: int = 10
    only: tuple[str, ...] = GROUPS
    peer_rows: int = 100_000
    """Night 1 / night 2 files against the plain script (bench/naive.py): rows 4-8."""
    latency_ms: int = 100
    opt_in_concurrency: int = 8
    quota: int = 10
    """Row 9's sandbox: 10 requests per 2 s window (5 a second, BigCommerce's own rate)."""
    window_ms: int = 2000
    quota_share: float = 0.8
    quota_latency_ms: int = 20
    reads_catalog: int = 100_000
    reads_named: int = 1_000

    @property
    def official(self) -> bool:
        """Whether this run writes bench/results.* (the full spec, every group)."""
        return not self.quick and set(self.only) == set(GROUPS)


def load_config() -> Config:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    cfg = Config()
    if quick:
        cfg = Config(quick=True, dry_rows=200_000, growth_rows=(50_000, 200_000),
                     xlsx_rows=20_000, runs=2, heavy_runs=1, help_runs=3, peer_rows=10_000,
                     quota=5, window_ms=1000, reads_catalog=20_000, reads_named=200)
    kw: dict[str, Any] = {}
    if os.environ.get("BENCH_RUNS"):
        text = os.environ["BENCH_RUNS"].strip()
        if not text.isdigit() or int(text) < 1:
            raise SystemExit(f"BENCH_RUNS must be a whole number of at least 1, not {text!r}")
        kw.update(runs=int(text), heavy_runs=int(text))
    if os.environ.get("BENCH_ONLY"):
        only = tuple(g.strip() for g in os.environ["BENCH_ONLY"].split(",") if g.strip())
        unknown = set(only) - set(GROUPS)
        if not only or unknown:
            what = f"unknown group(s) {sorted(unknown)}" if unknown else "no group named"
            raise SystemExit(f"BENCH_ONLY: {what}; choose from {', '.join(GROUPS)}")
        if os.environ.get("BENCH_PROFILE", "") not in ("", "0") and "profile" not in only:
            only = (*only, "profile")
        kw["only"] = only
    if kw:
        cfg = Config(**{**cfg.__dict__, **kw})
    return cfg


def label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


# ---- data -----------------------------------------------------------------------------------


@dataclass
class Data:
    stock_csv: dict[int, Path] = field(default_factory=dict)
    state_dir: dict[int, Path] = field(default_factory=dict)
    xlsx: Path | None = None
    night1: Path | None = None
    night2: Path | None = None
    peer_catalog: Path | None = None
    reads_csv: Path | None = None
    reads_catalog: Path | None = None


def _prep_dry(cfg: Config, cache: datagen.Cache, data: Data) -> None:
    sizes: set[int] = set()
    if {"dry", "memory", "profile"} & set(cfg.only):
        sizes.add(cfg.dry_rows)
    if "memory" in cfg.only:
        sizes.update(cfg.growth_rows)
    for rows in sorted(sizes):
        csv = DATA / f"stock_{label(rows)}.csv"
        state = DATA / f"state_{label(rows)}"
        snap = state / STORE / "snapshot.parquet"
        recipe = {"rows": rows, "seed": datagen.SEED, "store": STORE}
        if not cache.fresh(csv.name, recipe, csv, snap):
            t = time.perf_counter()
            night1, night2 = datagen.stock_nights(rows)
            night2.write_csv(csv)
            datagen.write_snapshot(state, STORE, night1)
            del night1, night2
            cache.done(csv.name, recipe)
            say(f"  generated {csv.name} + previous-night snapshot "
                f"({time.perf_counter() - t:.1f} s)")
        data.stock_csv[rows], data.state_dir[rows] = csv, state


def _prep_xlsx(cfg: Config, cache: datagen.Cache, data: Data) -> None:
    xlsx = DATA / f"stock_{label(cfg.xlsx_rows)}.xlsx"
    recipe = {"rows": cfg.xlsx_rows, "seed": datagen.SEED}
    if not cache.fresh(xlsx.name, recipe, xlsx):
        t = time.perf_counter()
        datagen.write_xlsx(xlsx, cfg.xlsx_rows)
        cache.done(xlsx.name, recipe)
        say(f"  generated {xlsx.name} ({time.perf_counter() - t:.1f} s)")
    data.xlsx = xlsx


def _catalog(cache: datagen.Cache, items: int) -> Path:
    path = DATA / f"catalog_{label(items)}.csv"
    recipe = {"items": items, "seed": datagen.SEED}
    if not cache.fresh(path.name, recipe, path):
        datagen.catalog(items).write_csv(path)
        cache.done(path.name, recipe)
    return path


def _prep_nights(cfg: Config, cache: datagen.Cache, data: Data) -> None:
    """Night 1 and night 2 of ``peer_rows`` rows and a catalog of exactly their items."""
    rows = cfg.peer_rows
    n1, n2 = DATA / f"night1_{label(rows)}.csv", DATA / f"night2_{label(rows)}.csv"
    recipe = {"rows": rows, "seed": datagen.SEED}
    if not cache.fresh(n2.name, recipe, n1, n2):
        night1, night2 = datagen.stock_nights(rows)
        night1.write_csv(n1)
        night2.write_csv(n2)
        cache.done(n2.name, recipe)
    data.night1, data.night2 = n1, n2
    data.peer_catalog = _catalog(cache, rows // len(datagen.LOCATIONS))


def _prep_reads(cfg: Config, cache: datagen.Cache, data: Data) -> None:
    import polars as pl

    items, named = cfg.reads_catalog, cfg.reads_named
    csv = DATA / f"reads_{label(named)}_of_{label(items)}.csv"
    recipe = {"items": items, "named": named, "seed": datagen.SEED}
    if not cache.fresh(csv.name, recipe, csv):
        # Every (items/named)-th item at location 1: spread over the whole catalog.
        pl.DataFrame({"i": pl.int_range(0, items, items // named, eager=True)}).select(
            sku=datagen.sku_expr(pl.col("i")), location_id=pl.lit(1, pl.Int64),
            quantity=(pl.col("i") % 50 + 1)).write_csv(csv)
        cache.done(csv.name, recipe)
    data.reads_csv, data.reads_catalog = csv, _catalog(cache, items)


def prepare(cfg: Config) -> Data:
    """Generate (or reuse) every file the chosen groups need."""
    # invsync's own modules compiled once, as installing a wheel does: with
    # PYTHONDONTWRITEBYTECODE set (base_env drops it) every run would compile them again.
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "pipeline" / "invsync")],
                   check=True)
    cache = datagen.Cache(DATA)
    data = Data()
    only = set(cfg.only)
    _prep_dry(cfg, cache, data)
    if "xlsx" in only:
        _prep_xlsx(cfg, cache, data)
    if {"peer", "live", "quota"} & only:
        _prep_nights(cfg, cache, data)
    if "reads" in only:
        _prep_reads(cfg, cache, data)
    return data


# ---- measuring ------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def base_env() -> dict[str, str]:
    """The caller's environment without any store settings that could leak into a run."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env.pop("POLARS_MAX_THREADS", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def invsync_cmd() -> list[str]:
    """The installed console script next to this interpreter, else ``python -m invsync``."""
    script = BIN / "invsync"
    return [str(script)] if script.exists() else [PY, "-m", "invsync"]


def measure(cmd: list[str], *, env: dict[str, str], log: Path,
            timeout_s: float = 900) -> dict[str, Any]:
    """Run ``cmd`` once through bench/measure.py; wall s, peak RSS MB, CPU s, exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([PY, str(BENCH / "measure.py"), str(log), str(timeout_s), "--", *cmd],
                          env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measure.py failed: {proc.stderr[-2000:]}")
    result = dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    if result["timed_out"]:
        raise RuntimeError(f"timed out after {timeout_s:.0f} s: {' '.join(cmd)}")
    return result


def log_tail(log: Path) -> str:
    text = ""
    for suffix in (".out", ".err"):
        with contextlib.suppress(OSError):
            text += Path(str(log) + suffix).read_text(errors="replace")[-1500:]
    return text


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_report(report_dir: Path) -> dict[str, Any]:
    found = sorted(report_dir.glob("*/report.json"))
    if len(found) != 1:
        raise RuntimeError(f"expected one run folder in {report_dir}, found {len(found)}")
    return dict(json.loads(found[0].read_text()))


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


@dataclass
class Case:
    """One measured thing: ``seconds`` is the timed metric of each run."""

    name: str
    description: str
    command: str
    timing: str = "whole process wall time"
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def add(self, seconds: float, m: dict[str, Any]) -> None:
        self.seconds.append(seconds)
        self.rss_mb.append(m["maxrss_mb"])
        self.cpu_s.append(m["cpu_s"])

    def note(self, key: str, value: Any) -> None:
        """Append ``value`` to this case's per-run list ``key``."""
        self.extra.setdefault(key, []).append(value)

    @property
    def ok(self) -> bool:
        return bool(self.seconds) and not self.error

    @property
    def median(self) -> float:
        return median(self.seconds)

    @property
    def peak_rss(self) -> float:
        return max(self.rss_mb) if self.rss_mb else float("nan")

    def to_dict(self) -> dict[str, Any]:
        ok = bool(self.seconds)
        return {
            "description": self.description, "command": self.command, "timing": self.timing,
            "runs": len(self.seconds),
            "median_s": round(self.median, 4) if ok else None,
            "min_s": round(min(self.seconds), 4) if ok else None,
            "max_s": round(max(self.seconds), 4) if ok else None,
            "peak_rss_mb": round(self.peak_rss, 1) if ok else None,
            "median_rss_mb": round(median(self.rss_mb), 1) if ok else None,
            "median_cpu_s": round(median(self.cpu_s), 3) if ok else None,
            "seconds": [round(s, 4) for s in self.seconds],
            "rss_mb": [round(r, 1) for r in self.rss_mb],
            **({"extra": self.extra} if self.extra else {}),
            **({"error": self.error} if self.error else {}),
        }


def progress(case: Case, i: int, runs: int, note: str = "") -> None:
    say(f"  {case.name:<28} run {i + 1}/{runs}: {case.seconds[-1]:7.3f} s  "
        f"{case.rss_mb[-1]:7.1f} MiB  (load {os.getloadavg()[0]:.1f}){note}")


@contextlib.contextmanager
def guarded(cases: list[Case]) -> Iterator[None]:
    """Record a failure in the cases of a group instead of stopping the whole benchmark."""
    try:
        yield
    except Exception as exc:  # a broken case must not hide the others' results
        message = f"{type(exc).__name__}: {exc}"
        say(f"  ERROR: {message}")
        traceback.print_exc()
        for case in cases:
            case.error = case.error or message


# ---- compute cases: start-up, dry run, memory, workbook ------------------------------------


def bench_startup(cfg: Config) -> Case:
    """Row 10: ``invsync --help``, whole process."""
    cmd = [*invsync_cmd(), "--help"]
    case = Case("startup_help", "`invsync --help`", "invsync --help")
    with guarded([case]):
        for _ in range(cfg.help_runs):
            m = measure(cmd, env=base_env(), log=OUT / "logs" / "help")
            if m["returncode"] != 0:
                raise RuntimeError(f"invsync --help exited {m['returncode']}")
            case.add(m["wall_s"], m)
        say(f"  {case.name:<28} {cfg.help_runs} runs: median {case.median:.3f} s")
    return case


def dry_run_cmd(csv: Path, state: Path, report_dir: Path) -> list[str]:
    return [PY, "-m", "invsync", "sync", str(csv), "--dry-run", "--baseline", "snapshot",
            "--state-dir", str(state), "--report-dir", str(report_dir)]


def dry_run_case(rows: int) -> Case:
    return Case(f"dry_run_{label(rows)}",
                f"`sync --dry-run --baseline snapshot`, {rows:,} rows, ~5% changed vs snapshot",
                f"python -m invsync sync stock_{label(rows)}.csv --dry-run --baseline snapshot "
                f"--state-dir D --report-dir R  (env BIGCOMMERCE_STORE_HASH, no token)")


def run_dry(case: Case, data: Data, rows: int, i: int) -> None:
    env = {**base_env(), "BIGCOMMERCE_STORE_HASH": STORE}
    report_dir = fresh_dir(OUT / "runs" / case.name / f"run{i}")
    log = OUT / "logs" / f"{case.name}-{i}"
    m = measure(dry_run_cmd(data.stock_csv[rows], data.state_dir[rows], report_dir),
                env=env, log=log)
    if m["returncode"] != 0:
        raise RuntimeError(f"dry run exited {m['returncode']}:\n{log_tail(log)}")
    report = run_report(report_dir)
    if report["status"] != "dry_run" or report["counts"]["rows"] != rows:
        raise RuntimeError(f"unexpected dry-run report: {report['status']} {report['counts']}")
    case.add(m["wall_s"], m)
    case.note("stage_s", report["timings"])
    case.note("changed", report["counts"]["changed"])
    case.note("outside_sync_file_s", round(m["wall_s"] - report["timings"]["total"], 4))


def summarise_stages(case: Case) -> None:
    runs = case.extra.get("stage_s") or []
    if runs:
        keys = list(runs[0])
        case.extra["stage_median_s"] = {k: round(median([r[k] for r in runs if k in r]), 4)
                                        for k in keys}
        case.extra["outside_sync_file_median_s"] = round(
            median(case.extra["outside_sync_file_s"]), 4)


def bench_dry(cfg: Config, data: Data) -> list[Case]:
    """Rows 1 and 2: the dry run vs a bare polars read of the same file, runs interleaved."""
    rows = cfg.dry_rows
    csv = data.stock_csv[rows]
    bare = Case(f"bare_read_{label(rows)}", f"bare `polars.read_csv`, {rows:,} rows (the peer)",
                f'python -c "import polars as pl; pl.read_csv(stock_{label(rows)}.csv)"')
    dry = dry_run_case(rows)
    bare_cmd = [PY, "-c", f"import polars as pl; pl.read_csv({str(csv)!r})"]
    with guarded([bare, dry]):
        for i in range(cfg.runs):
            m = measure(bare_cmd, env=base_env(), log=OUT / "logs" / bare.name)
            if m["returncode"] != 0:
                raise RuntimeError(f"bare read exited {m['returncode']}")
            bare.add(m["wall_s"], m)
            progress(bare, i, cfg.runs)
            run_dry(dry, data, rows, i)
            progress(dry, i, cfg.runs)
    summarise_stages(dry)
    return [bare, dry]


def bench_memory(cfg: Config, data: Data, done: dict[str, Case]) -> list[Case]:
    """Reference: the dry run at every size, each in its own process (reusing row 1's)."""
    cases = []
    for rows in cfg.growth_rows:
        name = f"dry_run_{label(rows)}"
        if name in done:
            continue
        case = dry_run_case(rows)
        with guarded([case]):
            for i in range(cfg.heavy_runs):
                run_dry(case, data, rows, i)
                progress(case, i, cfg.heavy_runs)
        summarise_stages(case)
        cases.append(case)
    return cases


def bench_xlsx(cfg: Config, data: Data) -> list[Case]:
    """Row 3: invsync's workbook read vs calamine (and openpyxl), in-process after imports."""
    assert data.xlsx is not None
    rows = cfg.xlsx_rows
    modes = {
        "invsync": "`invsync.stages.ingest.read_stock_file` (fastexcel + checks)",
        "calamine": '`polars.read_excel(path, engine="calamine")` (the peer)',
        "openpyxl": "openpyxl `read_only=True`, iterate values",
    }
    cases = {mode: Case(f"xlsx_{mode}_{label(rows)}", f"{what}, {rows:,}-row XLSX",
                        f"python bench/xlsx_read.py {mode} stock_{label(rows)}.xlsx",
                        timing="in-process read time after imports (own process)")
             for mode, what in modes.items()}
    with guarded(list(cases.values())):
        for i in range(cfg.runs):
            for mode, case in cases.items():
                if mode == "openpyxl" and i >= cfg.heavy_runs:
                    continue  # slow and only a point of reference
                log = OUT / "logs" / f"{case.name}-{i}"
                m = measure([PY, str(BENCH / "xlsx_read.py"), mode, str(data.xlsx)],
                            env=base_env(), log=log)
                if m["returncode"] != 0:
                    raise RuntimeError(f"{mode} read exited {m['returncode']}:\n{log_tail(log)}")
                result = json.loads(Path(str(log) + ".out").read_text().strip().splitlines()[-1])
                if result["rows"] != rows:
                    raise RuntimeError(f"{mode} read {result['rows']} rows, expected {rows}")
                case.add(result["seconds"], m)
                case.note("process_wall_s", round(m["wall_s"], 4))
                progress(case, i, cfg.runs if mode != "openpyxl" else cfg.heavy_runs)
    return list(cases.values())


# ---- store cases: a real sandbox process ----------------------------------------------------


class Store:
    """A running sandbox and the introspection calls the cases make."""

    def __init__(self, sb: Any) -> None:
        import psutil

        self.sb = sb
        self.proc = psutil.Process(sb.process.pid)
        self.env = {**base_env(), "BIGCOMMERCE_STORE_HASH": STORE,
                    "BIGCOMMERCE_ACCESS_TOKEN": TOKEN, "BIGCOMMERCE_API_URL": sb.url}

    def post(self, path: str, payload: Any = None) -> Any:
        data = b"" if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.sb.url + path, method="POST", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"null")

    def reset(self, *, levels: bool) -> None:
        """Clear the request log and stats (and, with ``levels``, every level: night 1)."""
        self.post("/_sandbox/reset" + ("?levels=1" if levels else ""))

    def latency(self, ms: int) -> None:
        self.post("/_sandbox/faults", {"latency_ms": ms})

    def cpu_s(self) -> float:
        return float(sum(self.proc.cpu_times()[:2]))

    def requests(self) -> list[dict[str, Any]]:
        return list(self.sb.get("/_sandbox/requests"))

    def stats(self) -> dict[str, Any]:
        return dict(self.sb.stats())


@contextlib.contextmanager
def sandbox(catalog: Path, *flags: str) -> Iterator[Store]:
    from invsync.sandbox.process import run_sandbox

    t = time.perf_counter()
    with run_sandbox(catalog, *flags, store_hash=STORE, token=TOKEN, env=base_env(),
                     startup_timeout_s=300) as sb:
        say(f"  sandbox {' '.join(flags)} up in {time.perf_counter() - t:.1f} s "
            f"({catalog.name})")
        yield Store(sb)


def request_kinds(log: list[dict[str, Any]]) -> dict[str, int]:
    """API requests by kind: item reads, location reads, writes, others."""
    kinds: Counter[str] = Counter()
    for r in log:
        path = r["path"].split("/v3", 1)[-1]
        if r["method"] == "PUT":
            kinds["writes"] += 1
        elif path.startswith("/inventory/items") or path.endswith("/items"):
            kinds["item_reads"] += 1
        elif path.startswith("/inventory/locations"):
            kinds["location_reads"] += 1
        else:
            kinds["other"] += 1
    return dict(kinds)


@dataclass
class Client:
    """One side of a store case: invsync with some flags, or the plain script."""

    case: Case
    flags: list[str] = field(default_factory=list)
    naive: bool = False

    def run(self, store: Store, csv: Path, i: int, *, state: Path | None = None,
            log_requests: bool = False) -> dict[str, Any]:
        """Run once against ``store`` (log and stats cleared by the caller); record it."""
        case = self.case
        log = OUT / "logs" / f"{case.name}-{i}"
        report_dir = fresh_dir(OUT / "runs" / case.name / f"run{i}")
        if self.naive:
            cmd = [PY, str(BENCH / "naive.py"), str(csv)]
        else:
            state = state or fresh_dir(OUT / "runs" / case.name / f"state{i}")
            cmd = [*invsync_cmd(), "sync", str(csv), "--state-dir", str(state),
                   "--report-dir", str(report_dir), *self.flags]
        cpu0 = store.cpu_s()
        m = measure(cmd, env=store.env, log=log)
        sandbox_cpu = store.cpu_s() - cpu0
        if m["returncode"] != 0:
            raise RuntimeError(f"{case.name} exited {m['returncode']}:\n{log_tail(log)}")
        stats = store.stats()
        case.add(m["wall_s"], m)
        case.note("requests", stats["requests"])
        case.note("http_429", stats["by_status"].get("429", 0))
        case.note("items_applied", stats["items_applied"])
        case.note("max_in_flight", stats["max_in_flight"])
        case.note("client_cpu_s", round(m["cpu_s"], 3))
        case.note("sandbox_cpu_s", round(sandbox_cpu, 3))
        out: dict[str, Any] = {"stats": stats, "wall_s": m["wall_s"]}
        if log_requests:
            out["log"] = store.requests()
            case.note("request_kinds", request_kinds(out["log"]))
        if self.naive:
            sent = json.loads(Path(str(log) + ".out").read_text().splitlines()[-1])
            case.note("submit_s", sent["send_s"])
        else:
            report = run_report(report_dir)
            out["report"] = report
            case.note("stage_s", report["timings"])
            case.note("submit_s", report["timings"].get("submit", 0.0))
            case.note("changed", report["counts"]["changed"])
            case.note("status", report["status"])
        case.note("outside_submit_s", round(m["wall_s"] - case.extra["submit_s"][-1], 4))
        return out


def _expect_applied(case: Case, out: dict[str, Any], items: int) -> None:
    applied = out["stats"]["items_applied"]
    if applied != items:
        raise RuntimeError(f"{case.name}: the sandbox applied {applied} items, expected {items}")


def peer_cases(cfg: Config) -> dict[str, Client]:
    """The clients of rows 4, 5, 7 and 8 (the naive night 1 at latency is 5's and 8's peer)."""
    lb, lat, c8 = label(cfg.peer_rows), cfg.latency_ms, cfg.opt_in_concurrency
    reqs = cfg.peer_rows // ITEMS_PER_REQUEST
    snap = ["--baseline", "snapshot"]

    def inv(name: str, what: str, flags: list[str]) -> Client:
        return Client(Case(name, f"`invsync sync {' '.join(flags)}`, {what}",
                           f"invsync sync FILE --state-dir D --report-dir R {' '.join(flags)}"),
                      flags)

    def naive(name: str, what: str) -> Client:
        return Client(Case(name, f"`bench/naive.py` (the peer), {what}",
                           "python bench/naive.py FILE"), naive=True)

    n1 = f"night 1 ({cfg.peer_rows:,} rows, all sent: {reqs} requests)"
    n2 = f"night 2 (same {cfg.peer_rows:,} rows, ~5% changed)"
    return {
        "n1_0": inv(f"night1_{lb}_0ms", f"{n1}, 0 ms", snap),
        "naive_n1_0": naive(f"naive_night1_{lb}_0ms", f"{n1}, 0 ms"),
        "n1_lat": inv(f"night1_{lb}_{lat}ms", f"{n1}, {lat} ms, default concurrency", snap),
        "naive_n1_lat": naive(f"naive_night1_{lb}_{lat}ms", f"{n1}, {lat} ms"),
        "n2_lat": inv(f"night2_{lb}_{lat}ms_snapshot", f"{n2}, after night 1, {lat} ms", snap),
        "naive_n2_lat": naive(f"naive_night2_{lb}_{lat}ms",
                              f"{n2}, {lat} ms (resends every row)"),
        "n1_c8": inv(f"night1_{lb}_{lat}ms_c{c8}", f"{n1}, {lat} ms",
                     [*snap, "--concurrency", str(c8)]),
    }


def bench_peer(cfg: Config, data: Data) -> list[Case]:
    """Rows 4, 5, 7, 8: invsync against the plain script on one sandbox, runs interleaved.

    Each round: night 1 at 0 ms (invsync, script); night 1 at the latency (invsync with
    the default concurrency, script); night 2 on that night-1 state (invsync, script, which
    resends everything); night 1 with ``--concurrency 8``. "Night 1" is a fresh state dir and
    a store with every level cleared; every client sends every row of night 1.
    """
    assert data.night1 and data.night2 and data.peer_catalog
    c = peer_cases(cfg)
    rows = cfg.peer_rows
    with guarded([x.case for x in c.values()]), sandbox(data.peer_catalog) as store:
        for i in range(cfg.heavy_runs):
            store.latency(0)
            for key in ("n1_0", "naive_n1_0"):
                store.reset(levels=True)
                _expect_applied(c[key].case, c[key].run(store, data.night1, i), rows)
                progress(c[key].case, i, cfg.heavy_runs)
            store.latency(cfg.latency_ms)
            store.reset(levels=True)
            state = fresh_dir(OUT / "runs" / c["n1_lat"].case.name / f"state{i}")
            _expect_applied(c["n1_lat"].case, c["n1_lat"].run(store, data.night1, i,
                                                              state=state), rows)
            progress(c["n1_lat"].case, i, cfg.heavy_runs)
            store.reset(levels=True)
            _expect_applied(c["naive_n1_lat"].case, c["naive_n1_lat"].run(
                store, data.night1, i), rows)
            progress(c["naive_n1_lat"].case, i, cfg.heavy_runs)
            # Night 2: the store and invsync's snapshot both hold night 1.
            store.reset(levels=False)
            out = c["n2_lat"].run(store, data.night2, i, state=state)
            _expect_applied(c["n2_lat"].case, out, out["report"]["counts"]["changed"])
            progress(c["n2_lat"].case, i, cfg.heavy_runs)
            store.reset(levels=False)
            _expect_applied(c["naive_n2_lat"].case, c["naive_n2_lat"].run(
                store, data.night2, i), rows)
            progress(c["naive_n2_lat"].case, i, cfg.heavy_runs)
            store.reset(levels=True)
            _expect_applied(c["n1_c8"].case, c["n1_c8"].run(store, data.night1, i), rows)
            progress(c["n1_c8"].case, i, cfg.heavy_runs)
    return [x.case for x in c.values()]


def filtered_reads(items: list[str], budget: int = FILTER_BUDGET) -> int:
    """Requests to name ``items`` in ``sku:in`` values of at most ``budget`` encoded chars."""
    count, size = 0, 0
    for sku in sorted(items):
        cost = len(quote(sku, safe="")) + (3 if size else 0)  # "," is "%2C"
        if size and size + cost > budget:
            count, size = count + 1, 0
            cost -= 3
        size += cost
    return count + (1 if size else 0)


def minimal_reads(catalog_items: int, file_skus: list[str]) -> dict[str, int]:
    """The fewest reads that give the levels of every item a file names, two ways."""
    listing = math.ceil(catalog_items / PAGE_LIMIT)
    filtered = filtered_reads(file_skus)
    # + the list of locations: whether the file's locations exist and are active (README)
    return {"listing_pages": listing, "filtered_reads": filtered,
            "minimal": 1 + min(listing, filtered)}


def bench_live(cfg: Config, data: Data) -> list[Case]:
    """Row 6: night 2 with the live baseline (the default) at the latency; requests counted.

    Each round: clear the store and run night 1 at 0 ms (not timed) into a fresh state dir,
    then night 2 at the latency on the same state dir, the request log cleared before it.
    """
    assert data.night1 and data.night2 and data.peer_catalog
    import polars as pl

    lb, lat = label(cfg.peer_rows), cfg.latency_ms
    case = Case(f"night2_{lb}_{lat}ms_live",
                f"`invsync sync` (live baseline, the default), night 2 ({cfg.peer_rows:,} rows, "
                f"~5% changed) after night 1, {lat} ms",
                "invsync sync night2.csv --state-dir D --report-dir R")
    prep = Client(Case(f"night1_{lb}_prep", "night 1 before row 6 (not a case)", ""),
                  ["--baseline", "snapshot"])
    live = Client(case)
    skus = pl.read_csv(data.night2, columns=["sku"])["sku"].unique().to_list()
    catalog_items = pl.read_csv(data.peer_catalog, columns=["sku"]).height
    case.extra["minimal_reads"] = minimal_reads(catalog_items, skus)
    with guarded([case]), sandbox(data.peer_catalog) as store:
        for i in range(cfg.heavy_runs):
            store.latency(0)
            store.reset(levels=True)
            state = fresh_dir(OUT / "runs" / case.name / f"state{i}")
            prep.run(store, data.night1, i, state=state)
            store.latency(lat)
            store.reset(levels=False)
            out = live.run(store, data.night2, i, state=state, log_requests=True)
            changed = out["report"]["counts"]["changed"]
            _expect_applied(case, out, changed)
            # BigCommerce's guide: group absolute adjustments by location, so the floor's
            # writes are ⌈changed / 2000⌉ at each location
            case.note("min_writes", sum(math.ceil(loc.get("changed", 0) / ITEMS_PER_REQUEST)
                                        for loc in out["report"]["by_location"].values()))
            kinds = case.extra["request_kinds"][-1]
            progress(case, i, cfg.heavy_runs,
                     f"  {out['stats']['requests']} requests ({kinds}), {changed} changed")
    return [case]


def quota_windows(log: list[dict[str, Any]], window_ms: int) -> list[int]:
    """Requests counted in each of the sandbox's fixed windows, in order (from the answers'
    ``X-Rate-Limit-Time-Reset-Ms``: a window ends at answer time + reset)."""
    ends: list[float] = []
    for r in log:
        reset = (r.get("answer_headers") or {}).get("x-rate-limit-time-reset-ms")
        if reset is not None and r.get("finished") is not None:
            ends.append(r["finished"] + int(reset) / 1000)
    if not ends:
        return []
    first = min(ends)
    counts = Counter(round((e - first) / (window_ms / 1000)) for e in ends)
    return [counts.get(k, 0) for k in range(max(counts) + 1)]


def bench_quota(cfg: Config, data: Data) -> list[Case]:
    """Row 9: night 1 (every row sent) against a rate-limited sandbox, ``quota_share = 0.8``."""
    assert data.night1 and data.peer_catalog
    flags = ["--quota", str(cfg.quota), "--window-ms", str(cfg.window_ms),
             "--latency-ms", str(cfg.quota_latency_ms)]
    config = OUT / "quota.toml"
    OUT.mkdir(parents=True, exist_ok=True)
    config.write_text(f"[store]\nquota_share = {cfg.quota_share}\n")
    case = Case("sync_quota", f"`invsync sync --baseline snapshot --config quota.toml` "
                              f"(quota_share {cfg.quota_share}), night 1 ({cfg.peer_rows:,} rows), "
                              f"sandbox {' '.join(flags)}",
                f"invsync sync night1_{label(cfg.peer_rows)}.csv --baseline snapshot "
                f"--config quota.toml")
    client = Client(case, ["--baseline", "snapshot", "--config", str(config)])
    with guarded([case]), sandbox(data.peer_catalog, *flags) as store:
        for i in range(cfg.heavy_runs):
            store.reset(levels=True)
            out = client.run(store, data.night1, i, log_requests=True)
            _expect_applied(case, out, cfg.peer_rows)
            windows = quota_windows(out["log"], cfg.window_ms)
            case.note("per_window", windows)
            progress(case, i, cfg.heavy_runs,
                     f"  requests per window {windows}, 429s {case.extra['http_429'][-1]}")
    return [case]


def bench_reads(cfg: Config, data: Data) -> list[Case]:
    """Reference: read requests of --baseline live, drift FILE and verify for a file naming
    ``reads_named`` items of a ``reads_catalog``-item catalog (counted in the sandbox's log)."""
    assert data.reads_csv is not None and data.reads_catalog is not None
    named, items = label(cfg.reads_named), label(cfg.reads_catalog)
    cmds = {"baseline_live": "sync --baseline live FILE", "drift": "drift FILE",
            "verify": "verify RUN"}
    cases = {k: Case(f"reads_{k}_{named}_of_{items}",
                     f"`invsync {c}`: GET requests for {cfg.reads_named:,} of "
                     f"{cfg.reads_catalog:,} items", f"invsync {c}",
                     timing="read requests (the median s column counts requests)")
             for k, c in cmds.items()}
    with guarded(list(cases.values())), sandbox(data.reads_catalog) as store:
        for i in range(cfg.heavy_runs):
            store.reset(levels=True)
            state = fresh_dir(OUT / "runs" / "reads" / f"state{i}")
            report_dir = fresh_dir(OUT / "runs" / "reads" / f"run{i}")
            flags = ["--state-dir", str(state), "--report-dir", str(report_dir)]
            run_id = ""
            for key, case in cases.items():
                if key == "baseline_live":
                    cmd = ["sync", "--baseline", "live", str(data.reads_csv), *flags]
                elif key == "drift":
                    cmd = ["drift", str(data.reads_csv), "--state-dir", str(state)]
                else:
                    cmd = ["verify", run_id, "--timeout", "0", *flags]
                before = len(store.requests())
                log = OUT / "logs" / f"{case.name}-{i}"
                m = measure([*invsync_cmd(), *cmd], env=store.env, log=log)
                if m["returncode"] != 0:
                    raise RuntimeError(f"{case.name} exited {m['returncode']}:\n"
                                       f"{log_tail(log)}")
                if key == "baseline_live":
                    run_id = run_report(report_dir)["run_id"]
                gets = [r for r in store.requests()[before:] if r["method"] == "GET"]
                case.add(float(len(gets)), m)
                case.note("wall_s", round(m["wall_s"], 3))
                say(f"  {case.name:<36} run {i + 1}: {len(gets)} read requests, "
                    f"{m['wall_s']:.2f} s")
    return list(cases.values())


def bench_profile(cfg: Config, data: Data) -> str:
    """Where the dry run's time goes: bench/profile_run.py; its markdown summary."""
    rows = cfg.dry_rows
    dest = OUT / f"profile_dry_{label(rows)}"
    log = OUT / "logs" / "profile"
    cmd = [PY, str(BENCH / "profile_run.py"), "--out", str(dest), str(data.stock_csv[rows])]
    try:
        m = measure(cmd, env=base_env(), log=log)
        if m["returncode"] != 0:
            raise RuntimeError(f"profile_run.py exited {m['returncode']}:\n{log_tail(log)}")
        text = Path(str(dest) + ".md").read_text()
        say(f"  wrote {dest}.txt and {dest}.md ({m['wall_s']:.1f} s)")
        return text
    except Exception as exc:  # the profile explains; it must not stop the benchmark
        say(f"  ERROR: profile failed: {exc}")
        return f"(the profile failed: {exc})\n"


# ---- ratios and output ----------------------------------------------------------------------


@dataclass
class Ratio:
    """One row of issue 26's table (or a reference row): the figure, its target, the peer's."""

    row: str
    name: str
    value: float | None
    unit: str
    target: str
    passed: bool | None
    ours: str = ""
    peer: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "name": self.name,
                "value": None if self.value is None else round(self.value, 4),
                "unit": self.unit, "target": self.target, "pass": self.passed,
                "invsync": self.ours, "peer": self.peer, "detail": self.detail}

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.passed]

    @property
    def shown(self) -> str:
        v = self.value
        if v is None or v != v:
            return "—"
        return {"x": f"{v:.2f}x", "MiB": f"{v:,.0f} MiB", "s": f"{v:.3f} s",
                "share": f"{v:.3f}", "count": f"{v:.0f}", "ms": f"{v:.1f} ms"}.get(
                    self.unit, f"{v:.3f}")

    @property
    def order(self) -> tuple[int, str]:
        digits = "".join(ch for ch in self.row if ch.isdigit())
        return (int(digits) if digits else 99, self.row[len(digits):])


def ratio(row: str, name: str, value: float | None, unit: str, target: str,
          check: Callable[[float], bool] | None, **text: str) -> Ratio:
    if value is None or value != value:  # missing or NaN: the case failed
        return Ratio(row, name, None, unit, target, False if check else None,
                     text.get("ours", ""), text.get("peer", ""),
                     text.get("detail") or "not measured")
    return Ratio(row, name, value, unit, target, check(value) if check else None, **text)


def secs(c: Case | None) -> str:
    return f"{c.median:.3f} s" if c and c.ok else "—"


class Found:
    """The cases measured, looked up by name (None when missing or broken)."""

    def __init__(self, cases: dict[str, Case]) -> None:
        self.cases = cases

    def __call__(self, name: str) -> Case | None:
        c = self.cases.get(name)
        return c if c and c.ok else None

    @staticmethod
    def div(a: Case | None, b: Case | None) -> float | None:
        return a.median / b.median if a and b and b.median else None


def _ratios_dry(cfg: Config, f: Found, out: list[Ratio]) -> None:
    lb = label(cfg.dry_rows)
    dry, bare = f(f"dry_run_{lb}"), f(f"bare_read_{lb}")
    out.append(ratio("1", f"{lb}-row dry run ÷ bare `polars.read_csv` (whole processes, "
                          "interleaved)", f.div(dry, bare), "x", "<= 3x", lambda v: v <= 3.0,
                     ours=secs(dry), peer=secs(bare)))
    out.append(ratio("2", "peak RSS of that dry run", dry.peak_rss if dry else None, "MiB",
                     "< 300 MiB", lambda v: v < 300,
                     ours=f"{dry.peak_rss:,.0f} MiB" if dry else "—",
                     peer=f"{bare.peak_rss:,.0f} MiB (bare read)" if bare else "—"))


def _ratios_memory(cfg: Config, f: Found, out: list[Ratio]) -> None:
    pts = [(n, f(f"dry_run_{label(n)}")) for n in cfg.growth_rows]
    pts2 = [(n, c.peak_rss) for n, c in pts if c]
    if len(pts2) >= 2:
        (n0, r0), (n1, r1) = pts2[-2], pts2[-1]
        slope = (r1 - r0) / ((n1 - n0) / 1_000_000)
        out.append(ratio("2a", f"RSS growth of the dry run {label(n0)} -> {label(n1)} "
                               "(MiB per 1M rows)", slope, "MiB", "(reference)", None,
                         detail=", ".join(f"{label(n)}: {r:,.0f} MiB" for n, r in pts2)))


def _ratios_xlsx(cfg: Config, f: Found, out: list[Ratio]) -> None:
    lb = label(cfg.xlsx_rows)
    inv, cal, opx = f(f"xlsx_invsync_{lb}"), f(f"xlsx_calamine_{lb}"), f(f"xlsx_openpyxl_{lb}")
    out.append(ratio("3", f"XLSX {lb} rows: `read_stock_file` ÷ bare calamine read "
                          "(in-process, own processes)", f.div(inv, cal), "x", "<= 1.5x",
                     lambda v: v <= 1.5, ours=secs(inv), peer=secs(cal)))
    out.append(ratio("3a", f"XLSX {lb} rows: `read_stock_file` ÷ openpyxl read_only",
                     f.div(inv, opx), "x", "(reference)", None, ours=secs(inv), peer=secs(opx)))


def _ratios_peer(cfg: Config, f: Found, out: list[Ratio]) -> None:
    c = {k: f(x.case.name) for k, x in peer_cases(cfg).items()}
    lat, c8 = cfg.latency_ms, cfg.opt_in_concurrency
    out.append(ratio("4", "night 1, zero-latency store, `--baseline snapshot`: invsync ÷ "
                          "plain script", f.div(c["n1_0"], c["naive_n1_0"]), "x", "<= 1.2x",
                     lambda v: v <= 1.2, ours=secs(c["n1_0"]), peer=secs(c["naive_n1_0"])))
    if c["n1_0"] and c["naive_n1_0"]:
        extra = median(c["n1_0"].extra["submit_s"]) - median(c["naive_n1_0"].extra["submit_s"])
        out.append(ratio("4a", "night 1 at 0 ms: invsync's submit stage minus the script's "
                               "send loop, per request", extra / (cfg.peer_rows / 2000) * 1000,
                         "ms", "(reference)", None,
                         detail="the rest of row 4 is fixed cost outside the sending"))
    out.append(ratio("5", f"night 1 at {lat} ms, one write in flight (default), `--baseline "
                          "snapshot`: invsync ÷ plain script (serial)",
                     f.div(c["n1_lat"], c["naive_n1_lat"]), "x", "<= 1.05x",
                     lambda v: v <= 1.05, ours=secs(c["n1_lat"]), peer=secs(c["naive_n1_lat"]),
                     detail=_max_in_flight(c["n1_lat"])))
    out.append(ratio("7", f"night 2 at {lat} ms, `--baseline snapshot`: plain script (resends "
                          "everything) ÷ invsync", f.div(c["naive_n2_lat"], c["n2_lat"]), "x",
                     ">= 15x", lambda v: v >= 15.0, ours=secs(c["n2_lat"]),
                     peer=secs(c["naive_n2_lat"]), detail=_requests(c["n2_lat"])))
    out.append(ratio("8", f"opt-in `--concurrency {c8}` at {lat} ms, night 1: plain script ÷ "
                          "invsync", f.div(c["naive_n1_lat"], c["n1_c8"]), "x", ">= 4x",
                     lambda v: v >= 4.0, ours=secs(c["n1_c8"]), peer=secs(c["naive_n1_lat"]),
                     detail=_max_in_flight(c["n1_c8"])))


def _max_in_flight(c: Case | None) -> str:
    return f"max in flight {max(c.extra['max_in_flight'])}" if c else ""


def _requests(c: Case | None) -> str:
    return f"{median(c.extra['requests']):.0f} requests" if c else ""


def _ratios_live(cfg: Config, f: Found, out: list[Ratio]) -> None:
    lat = cfg.latency_ms
    c = f(f"night2_{label(cfg.peer_rows)}_{lat}ms_live")
    expected = floor_s = None
    detail = wall_detail = ""
    if c:
        mr = c.extra["minimal_reads"]
        writes = int(max(c.extra["min_writes"]))
        expected = mr["minimal"] + writes
        floor_s = expected * lat / 1000
        kinds = c.extra["request_kinds"][-1]
        detail = (f"minimal: {mr['minimal']} reads (1 of locations + min of "
                  f"{mr['listing_pages']} listing pages "
                  f"of {PAGE_LIMIT} and {mr['filtered_reads']} `sku:in` reads of "
                  f"<= {FILTER_BUDGET} chars) + Σ ⌈changed at a location / 2000⌉ "
                  f"({median(c.extra['changed']):.0f} changed) = {writes} writes; measured: "
                  + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in sorted(kinds.items())))
        wall_detail = (f"{c.median:.2f} s vs {expected} × {lat} ms = {floor_s:.1f} s; "
                       f"submit stage {median(c.extra['submit_s']):.2f} s")
    worst = float(max(c.extra["requests"])) if c else None
    out.append(ratio("6", f"night 2 (5% changed) at {lat} ms, live baseline: requests (worst "
                          "run) == minimal reads + writes", worst, "count",
                     f"== {expected}" if expected is not None else "== minimal",
                     (lambda v: v == expected) if expected is not None else (lambda v: False),
                     ours=f"{worst:.0f}" if worst is not None else "—",
                     peer=f"{expected} (the floor)" if expected is not None else "—",
                     detail=detail))
    out.append(ratio("6b", "same: wall ÷ (minimal requests × latency)",
                     c.median / floor_s if c and floor_s else None, "x", "<= 1.1x",
                     lambda v: v <= 1.1, ours=secs(c),
                     peer=f"{floor_s:.3f} s (floor)" if floor_s else "—", detail=wall_detail))


def _ratios_quota(cfg: Config, f: Found, out: list[Ratio]) -> None:
    c = f("sync_quota")
    share = None
    detail = ""
    if c:
        # The first and last windows are partial (the run starts and ends inside them).
        inner = [n for w in c.extra["per_window"] for n in (w[1:-1] if len(w) > 2 else w)]
        share = sum(inner) / len(inner) / cfg.quota if inner else None
        detail = (f"quota {cfg.quota} per {cfg.window_ms} ms, quota_share {cfg.quota_share}; "
                  f"requests per window (run 1): {c.extra['per_window'][0]}")
    out.append(ratio("9", f"quota use with quota_share = {cfg.quota_share}: requests per full "
                          "window ÷ quota (mean)", share, "share", "0.75–0.80",
                     lambda v: 0.75 <= v <= 0.80 + 1e-9,
                     ours=f"{share * cfg.quota:.1f} a window" if share else "—",
                     peer=f"{cfg.quota} a window (quota)", detail=detail))
    n429 = float(sum(c.extra["http_429"])) if c else None
    out.append(ratio("9b", "same: requests answered 429 (all runs)", n429, "count", "== 0",
                     lambda v: v == 0,
                     detail=f"of {sum(c.extra['requests'])} requests" if c else ""))


def _ratios_startup(cfg: Config, f: Found, out: list[Ratio]) -> None:
    c = f("startup_help")
    out.append(ratio("10", "`invsync --help` (median wall)", c.median if c else None, "s",
                     "< 0.1 s", lambda v: v < 0.1))


def _ratios_reads(cfg: Config, f: Found, out: list[Ratio]) -> None:
    for key in ("baseline_live", "drift", "verify"):
        c = f(f"reads_{key}_{label(cfg.reads_named)}_of_{label(cfg.reads_catalog)}")
        worst = max(c.seconds) if c else None
        out.append(ratio("R", f"read requests, {key.replace('_', ' ')}: {cfg.reads_named:,} "
                              f"of {cfg.reads_catalog:,} items (worst run)", worst, "count",
                         "(reference)", None,
                         detail=f"a full read: {-(-cfg.reads_catalog // PAGE_LIMIT)} pages"))


_SECTIONS: list[tuple[str, Callable[[Config, Found, list[Ratio]], None]]] = [
    ("dry", _ratios_dry),
    ("memory", _ratios_memory),
    ("xlsx", _ratios_xlsx),
    ("peer", _ratios_peer),
    ("live", _ratios_live),
    ("quota", _ratios_quota),
    ("startup", _ratios_startup),
    ("reads", _ratios_reads),
]
"""Each part of the table: the group that shows it, and what it adds."""


def compute_ratios(cfg: Config, cases: dict[str, Case]) -> list[Ratio]:
    """The rows of the groups measured, in issue 26's order (reference rows after theirs)."""
    out: list[Ratio] = []
    f = Found(cases)
    for group, add in _SECTIONS:
        if group in cfg.only:
            add(cfg, f, out)
    return sorted(out, key=lambda r: r.order)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    commit, dirty = None, None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--", "pipeline", "schemas"],
                                cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        dirty = sorted(line[3:] for line in status.splitlines() if line.strip())
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "polars": version("polars"),
        "fastexcel": version("fastexcel"),
        "pandera": version("pandera"),
        "openpyxl": version("openpyxl"),
        "git_commit": commit,
        "uncommitted_code": dirty,
    }


def fmt(v: float | None, digits: int = 3) -> str:
    return "—" if v is None or v != v else f"{v:,.{digits}f}"



def _header(cfg: Config, info: dict[str, Any], meta: dict[str, Any]) -> str:
    return (
        f"Machine: {info['cpu_model']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Python {info['python']}, polars {info['polars']}, fastexcel {info['fastexcel']}, "
        f"pandera {info['pandera']}. Commit {info['git_commit'] or '?'}"
        + (f" + uncommitted changes to {len(info['uncommitted_code'])} file(s) in pipeline/"
           if info["uncommitted_code"] else "")
        + f", {meta['date']}; groups {', '.join(cfg.only)}; "
        f"benchmark took {meta['total_s']:.0f} s; load average "
        f"{meta['load_start'][0]:.1f} at start, {meta['load_end'][0]:.1f} at end"
        + (" (**quick mode: reduced sizes, not comparable with the targets**)"
           if cfg.quick else "") + ".")


def _md_ratios(ratios: list[Ratio]) -> list[str]:
    lines = ["| # | figure | measured | target | result | invsync | peer | detail |",
             "| --- | --- | ---: | --- | --- | ---: | ---: | --- |"]
    for r in ratios:
        lines.append(f"| {r.row} | {r.name} | {r.shown} | {r.target} | **{r.verdict}** | "
                     f"{r.ours} | {r.peer} | {r.detail} |")
    return lines


def _md_cases(cases: list[Case]) -> list[str]:
    lines = ["| case | what | timing | runs | median s | min s | max s | peak RSS MiB |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for c in cases:
        d = c.to_dict()
        timing = ("in-process" if c.timing.startswith("in-process") else "read requests"
                  if c.timing.startswith("read requests") else "process wall")
        what = c.description + (f" — ERROR: {c.error}" if c.error else "")
        lines.append(f"| `{c.name}` | {what} | {timing} | {d['runs']} | {fmt(d['median_s'])} | "
                     f"{fmt(d['min_s'])} | {fmt(d['max_s'])} | {fmt(d['peak_rss_mb'], 0)} |")
    return lines


def _md_stages(cases: list[Case]) -> list[str]:
    stage_cases = [c for c in cases if c.extra.get("stage_median_s")]
    if not stage_cases:
        return []
    stages = ["ingest", "validate", "diff", "plan"]
    lines = ["", "Dry-run stages (median s, from each run's report.json `timings`; "
                 "\"untimed\" = `sync_file` total minus the named stages; \"outside\" = "
                 "process wall minus that total: interpreter start, imports, writing the run "
                 "folder, the summary, exit):", "",
             "| case | " + " | ".join(stages) + " | untimed | total | outside | wall |",
             "| --- |" + " ---: |" * (len(stages) + 4)]
    for c in stage_cases:
        sm = c.extra["stage_median_s"]
        untimed = sm["total"] - sum(sm.get(s, 0.0) for s in stages)
        lines.append(f"| `{c.name}` | " + " | ".join(fmt(sm.get(s)) for s in stages)
                     + f" | {fmt(untimed)} | {fmt(sm['total'])} | "
                       f"{fmt(c.extra['outside_sync_file_median_s'])} | {fmt(c.median)} |")
    return lines


def _md_syncs(cases: list[Case]) -> list[str]:
    syncs = [c for c in cases if "submit_s" in c.extra and c.seconds]
    if not syncs:
        return []
    lines = ["", "Store runs (medians): whole process, the sending (invsync's `submit` stage, "
                 "the script's PUT loop) and everything outside it, requests, 429s, max in "
                 "flight, CPU seconds of the client and of the sandbox (same 2 cores):", "",
             "| case | wall s | submit s | outside submit s | requests | 429s | max in flight | "
             "client CPU s | sandbox CPU s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in syncs:
        x = c.extra
        lines.append(
            f"| `{c.name}` | {fmt(c.median)} | {fmt(median(x['submit_s']))} | "
            f"{fmt(median(x['outside_submit_s']))} | {median(x['requests']):.0f} | "
            f"{sum(x['http_429'])} | {max(x['max_in_flight'])} | "
            f"{fmt(median(x['client_cpu_s']), 2)} | {fmt(median(x['sandbox_cpu_s']), 2)} |")
    return lines


def markdown(cfg: Config, info: dict[str, Any], cases: list[Case], ratios: list[Ratio],
             meta: dict[str, Any]) -> str:
    lines = [_header(cfg, info, meta), "", *_md_ratios(ratios), "", *_md_cases(cases),
             *_md_stages(cases), *_md_syncs(cases)]
    if meta.get("profile"):
        lines += ["", "Where the time goes: one dry run profiled (`bench/profile_run.py`; "
                      "the full listing is in bench/out/):", "", meta["profile"].rstrip()]
    return "\n".join(lines) + "\n"


def console_table(cases: list[Case], ratios: list[Ratio]) -> str:
    rows = [f"{'case':<30} {'runs':>4} {'median s':>9} {'min s':>8} {'max s':>8} "
            f"{'peak RSS MiB':>12}"]
    for c in cases:
        d = c.to_dict()
        rows.append(f"{c.name:<30} {d['runs']:>4} {fmt(d['median_s']):>9} {fmt(d['min_s']):>8} "
                    f"{fmt(d['max_s']):>8} {fmt(d['peak_rss_mb'], 0):>12}"
                    + (f"  ERROR {c.error}" if c.error else ""))
    rows += ["", f"{'#':<3} {'figure':<78} {'measured':>10}  {'target':<11} result"]
    for r in ratios:
        peer = f"invsync {r.ours} vs peer {r.peer}" if r.ours and r.peer else ""
        rows.append(f"{r.row:<3} {r.name[:78]:<78} {r.shown:>10}  {r.target:<11} {r.verdict}"
                    + (f"  ({'; '.join(x for x in (peer, r.detail) if x)})"
                       if peer or r.detail else ""))
    return "\n".join(rows)


def run_groups(cfg: Config, data: Data, meta: dict[str, Any]) -> dict[str, Case]:
    done: dict[str, Case] = {}

    def keep(found: list[Case] | Case) -> None:
        for c in found if isinstance(found, list) else [found]:
            done[c.name] = c

    steps: list[tuple[str, str, Callable[[], list[Case] | Case]]] = [
        ("startup", "row 10: start-up", lambda: bench_startup(cfg)),
        ("dry", "rows 1, 2: dry run vs bare read", lambda: bench_dry(cfg, data)),
        ("xlsx", "row 3: XLSX read", lambda: bench_xlsx(cfg, data)),
        ("peer", "rows 4, 5, 7, 8: nights vs the plain script", lambda: bench_peer(cfg, data)),
        ("live", "row 6: night 2, live baseline, requests", lambda: bench_live(cfg, data)),
        ("quota", "row 9: quota use", lambda: bench_quota(cfg, data)),
        ("reads", "reference: live read requests", lambda: bench_reads(cfg, data)),
        ("memory", "reference: memory growth", lambda: bench_memory(cfg, data, done)),
    ]
    for group, title, step in steps:
        if group in cfg.only:
            say(title)
            keep(step())
    if "profile" in cfg.only:
        say("where the time goes: profiling one dry run")
        meta["profile"] = bench_profile(cfg, data)
    return done


def main() -> int:
    cfg = load_config()
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    info = machine_info()
    say(f"invsync bench: {'QUICK ' if cfg.quick else ''}groups {', '.join(cfg.only)}; "
        f"{info['cpu_model']}, {info['cores']} cores; load average {load_start[0]:.1f}")
    if load_start[0] > (info["cores"] or 1):
        say("  warning: the machine is busy (load average above the core count); "
            "timings will be noisy")
    OUT.mkdir(parents=True, exist_ok=True)
    say("preparing data ...")
    data = prepare(cfg)
    meta: dict[str, Any] = {}
    done = run_groups(cfg, data, meta)

    order = ["startup_help", f"bare_read_{label(cfg.dry_rows)}"]
    order += [f"dry_run_{label(n)}" for n in sorted({cfg.dry_rows, *cfg.growth_rows})]
    cases = [done[n] for n in order if n in done] + [c for n, c in done.items()
                                                      if n not in order]
    ratios = compute_ratios(cfg, done)
    total = time.perf_counter() - t_start
    load_end = os.getloadavg()
    meta.update(date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), total_s=total,
                load_start=load_start, load_end=load_end)
    results = {
        "version": 2,
        "generated_at": meta["date"],
        "quick": cfg.quick,
        "groups": list(cfg.only),
        "total_seconds": round(total, 1),
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in load_end],
        "machine": info,
        "config": dict(cfg.__dict__),
        "cases": {c.name: c.to_dict() for c in cases},
        "ratios": [r.to_dict() for r in ratios],
    }
    dest = BENCH if cfg.official else OUT
    (dest / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (dest / "results.md").write_text(markdown(cfg, info, cases, ratios, meta))
    say("")
    say(console_table(cases, ratios))
    if cfg.quick:
        say("\nQUICK mode: reduced sizes and single runs, a smoke test only; the ratios are "
            "not comparable with the targets")
    say(f"\ntotal {total:.0f} s; wrote {dest / 'results.json'} and {dest / 'results.md'}")
    if any(c.error for c in cases):
        say("some cases failed: see the errors above")
        return 2
    missed = [r.name for r in ratios if r.passed is False]
    return 1 if missed and os.environ.get("BENCH_STRICT", "") not in ("", "0") else 0


if __name__ == "__main__":
    sys.exit(main())
