"""invsync benchmarks: speed, memory and quota use, each ratio measured in the same run.

    .venv/bin/python bench/run.py          # full spec (make bench), about 6-8 minutes
    BENCH_QUICK=1 .venv/bin/python bench/run.py   # ~1 minute smoke run, smaller sizes

Environment:
    BENCH_QUICK=1        small sizes and single runs; results go to bench/out/, not bench/
    BENCH_RUNS=N         repetitions of every case (default 5 cheap / 3 heavy)
    BENCH_ONLY=a,b       only these groups: startup, dry, memory, xlsx, quota, latency
                         (results then also go to bench/out/)
    BENCH_STRICT=1       exit 1 when a target is missed (default: report it, exit 0)

Every measurement is a fresh process started through ``bench/measure.py``, which reports
the wall time and the peak RSS (``wait4`` ru_maxrss) of exactly that process. Data is
generated deterministically into bench/data/ (cached); run folders and logs go to
bench/out/. See bench/README.md for the method and the findings.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

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
GROUPS = ("startup", "dry", "memory", "xlsx", "quota", "latency", "peer", "reads")


# ---- configuration --------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    quick: bool = False
    dry_rows: int = 1_000_000
    growth_rows: tuple[int, ...] = (100_000, 1_000_000, 5_000_000)
    xlsx_rows: int = 100_000
    sync_batches: int = 400
    runs: int = 5
    heavy_runs: int = 3
    help_runs: int = 10
    only: tuple[str, ...] = GROUPS
    quota: int = 50
    window_ms: int = 2000
    quota_latency_ms: int = 50
    latency_ms: int = 100
    peer_rows: int = 100_000
    """First-night syncs against the naive peer script (bench/naive.py)."""
    peer_latencies_ms: tuple[int, ...] = (0, 100)
    reads_catalog: int = 100_000
    reads_named: int = 1_000

    @property
    def sync_rows(self) -> int:
        return self.sync_batches * ITEMS_PER_REQUEST

    @property
    def ceiling_items_per_s(self) -> float:
        return ITEMS_PER_REQUEST * self.quota / (self.window_ms / 1000)

    @property
    def official(self) -> bool:
        """Whether this run writes bench/results.* (the full spec, every group)."""
        return not self.quick and set(self.only) == set(GROUPS)


def load_config() -> Config:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    cfg = Config()
    if quick:
        cfg = Config(quick=True, dry_rows=200_000, growth_rows=(50_000, 200_000, 500_000),
                     xlsx_rows=20_000, sync_batches=40, runs=2, heavy_runs=1, help_runs=5,
                     peer_rows=20_000, reads_catalog=20_000, reads_named=200)
    kw: dict[str, Any] = {}
    if os.environ.get("BENCH_RUNS"):
        n = max(1, int(os.environ["BENCH_RUNS"]))
        kw.update(runs=n, heavy_runs=n)
    if os.environ.get("BENCH_ONLY"):
        only = tuple(g.strip() for g in os.environ["BENCH_ONLY"].split(",") if g.strip())
        unknown = set(only) - set(GROUPS)
        if unknown:
            raise SystemExit(f"BENCH_ONLY: unknown group(s) {sorted(unknown)}; "
                             f"choose from {', '.join(GROUPS)}")
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
    sync_csv: Path | None = None
    catalog: Path | None = None
    peer_csv: Path | None = None
    peer_catalog: Path | None = None
    reads_csv: Path | None = None
    reads_catalog: Path | None = None


def prepare(cfg: Config) -> Data:
    """Generate (or reuse) every file the chosen groups need."""
    cache = datagen.Cache(DATA)
    data = Data()
    sizes: set[int] = set()
    if {"dry", "memory"} & set(cfg.only):
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
    if "xlsx" in cfg.only:
        xlsx = DATA / f"stock_{label(cfg.xlsx_rows)}.xlsx"
        recipe = {"rows": cfg.xlsx_rows, "seed": datagen.SEED}
        if not cache.fresh(xlsx.name, recipe, xlsx):
            t = time.perf_counter()
            datagen.write_xlsx(xlsx, cfg.xlsx_rows)
            cache.done(xlsx.name, recipe)
            say(f"  generated {xlsx.name} ({time.perf_counter() - t:.1f} s)")
        data.xlsx = xlsx
    if {"quota", "latency"} & set(cfg.only):
        rows = cfg.sync_rows
        csv = DATA / f"sync_{label(rows)}.csv"
        catalog = DATA / f"catalog_{label(rows // len(datagen.LOCATIONS))}.csv"
        recipe = {"rows": rows, "seed": datagen.SEED}
        if not cache.fresh(csv.name, recipe, csv, catalog):
            t = time.perf_counter()
            datagen.stock_nights(rows)[1].write_csv(csv)
            datagen.catalog(rows // len(datagen.LOCATIONS)).write_csv(catalog)
            cache.done(csv.name, recipe)
            say(f"  generated {csv.name} + {catalog.name} ({time.perf_counter() - t:.1f} s)")
        data.sync_csv, data.catalog = csv, catalog
    if "peer" in cfg.only:
        rows = cfg.peer_rows
        csv = DATA / f"peer_{label(rows)}.csv"
        catalog = DATA / f"catalog_{label(rows // len(datagen.LOCATIONS))}.csv"
        recipe = {"rows": rows, "seed": datagen.SEED}
        if not cache.fresh(csv.name, recipe, csv, catalog):
            datagen.stock_nights(rows)[1].write_csv(csv)
            datagen.catalog(rows // len(datagen.LOCATIONS)).write_csv(catalog)
            cache.done(csv.name, recipe)
        data.peer_csv, data.peer_catalog = csv, catalog
    if "reads" in cfg.only:
        import polars as pl

        items, named = cfg.reads_catalog, cfg.reads_named
        csv = DATA / f"reads_{label(named)}_of_{label(items)}.csv"
        catalog = DATA / f"catalog_{label(items)}.csv"
        recipe = {"items": items, "named": named, "seed": datagen.SEED}
        if not cache.fresh(csv.name, recipe, csv, catalog):
            # Every (items/named)-th item at location 1: spread over the whole catalog.
            pl.DataFrame({"i": pl.int_range(0, items, items // named, eager=True)}).select(
                sku=datagen.sku_expr(pl.col("i")), location_id=pl.lit(1, pl.Int64),
                quantity=(pl.col("i") % 50 + 1)).write_csv(csv)
            datagen.catalog(items).write_csv(catalog)
            cache.done(csv.name, recipe)
        data.reads_csv, data.reads_catalog = csv, catalog
    return data


# ---- measuring ------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, flush=True)


def base_env() -> dict[str, str]:
    """The caller's environment without any store settings that could leak into a run."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env.pop("POLARS_MAX_THREADS", None)
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
    say(f"  {case.name:<22} run {i + 1}/{runs}: {case.seconds[-1]:7.3f} s  "
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


# ---- the cases ------------------------------------------------------------------------------


def bench_startup(cfg: Config) -> Case:
    cmd = [*invsync_cmd(), "--help"]
    case = Case("startup_help", "`invsync --help`", " ".join(["invsync", "--help"]))
    with guarded([case]):
        for _ in range(cfg.help_runs):
            m = measure(cmd, env=base_env(), log=OUT / "logs" / "help")
            if m["returncode"] != 0:
                raise RuntimeError(f"invsync --help exited {m['returncode']}")
            case.add(m["wall_s"], m)
        say(f"  {case.name:<22} {cfg.help_runs} runs: median {case.median:.3f} s")
    return case


def dry_run_cmd(csv: Path, state: Path, report_dir: Path) -> list[str]:
    return [PY, "-m", "invsync", "sync", str(csv), "--dry-run", "--state-dir", str(state),
            "--report-dir", str(report_dir)]


def dry_run_case(rows: int) -> Case:
    return Case(f"dry_run_{label(rows)}",
                f"`sync --dry-run`, {rows:,} rows, ~5% changed vs snapshot",
                f"python -m invsync sync stock_{label(rows)}.csv --dry-run --state-dir D "
                f"--report-dir R  (env BIGCOMMERCE_STORE_HASH, no token)")


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
    case.extra.setdefault("stage_s", []).append(report["timings"])
    case.extra.setdefault("changed", []).append(report["counts"]["changed"])
    case.extra.setdefault("outside_sync_file_s", []).append(
        round(m["wall_s"] - report["timings"]["total"], 4))


def summarise_stages(case: Case) -> None:
    runs = case.extra.get("stage_s") or []
    if runs:
        keys = list(runs[0])
        case.extra["stage_median_s"] = {k: round(median([r[k] for r in runs if k in r]), 4)
                                        for k in keys}
        case.extra["outside_sync_file_median_s"] = round(
            median(case.extra["outside_sync_file_s"]), 4)


def bench_dry(cfg: Config, data: Data) -> list[Case]:
    """Case 1: the dry run vs a bare polars read of the same file, runs interleaved."""
    rows = cfg.dry_rows
    csv = data.stock_csv[rows]
    bare = Case(f"bare_read_{label(rows)}", f"bare `polars.read_csv`, {rows:,} rows",
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
    """Case 5: the dry run at every size, each in its own process (reusing case 1's size)."""
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
    """Case 2: invsync's workbook read vs calamine and openpyxl, in-process time after import."""
    assert data.xlsx is not None
    rows = cfg.xlsx_rows
    modes = {
        "invsync": "`invsync.stages.ingest.read_stock_file` (fastexcel + checks)",
        "calamine": '`polars.read_excel(path, engine="calamine")`',
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
                case.extra.setdefault("process_wall_s", []).append(round(m["wall_s"], 4))
                progress(case, i, cfg.runs if mode != "openpyxl" else cfg.heavy_runs)
    return list(cases.values())


@dataclass
class SyncVariant:
    case: Case
    flags: list[str]


def bench_sync(cfg: Config, data: Data, sandbox_flags: list[str],
               variants: list[SyncVariant]) -> None:
    """Real `invsync sync --full` runs against one sandbox; the variants' runs interleaved."""
    import psutil

    from invsync.sandbox.process import run_sandbox

    assert data.sync_csv is not None and data.catalog is not None
    with guarded([v.case for v in variants]):
        t = time.perf_counter()
        with run_sandbox(data.catalog, *sandbox_flags, store_hash=STORE, token=TOKEN,
                         env=base_env(), startup_timeout_s=300) as sb:
            started = time.perf_counter() - t
            say(f"  sandbox {' '.join(sandbox_flags)} up in {started:.1f} s "
                f"({data.catalog.name})")
            proc = psutil.Process(sb.process.pid)
            env = {**base_env(), "BIGCOMMERCE_STORE_HASH": STORE,
                   "BIGCOMMERCE_ACCESS_TOKEN": TOKEN, "BIGCOMMERCE_API_URL": sb.url}
            for v in variants:
                v.case.extra["sandbox_flags"] = sandbox_flags
                v.case.extra["sandbox_start_s"] = round(started, 3)
            for i in range(cfg.heavy_runs):
                for v in variants:
                    run_sync(cfg, sb, proc, env, v, data, i)
                    progress(v.case, i, cfg.heavy_runs,
                             f"  submit {v.case.extra['submit_s'][-1]:.2f} s, "
                             f"429s {v.case.extra['http_429'][-1]}, "
                             f"overlaps {v.case.extra['item_overlaps'][-1]}")


def run_sync(cfg: Config, sb: Any, proc: Any, env: dict[str, str], v: SyncVariant,
             data: Data, i: int) -> None:
    case = v.case
    sb.post("/_sandbox/reset")  # clears the request log (it holds every item) and the stats
    state = fresh_dir(OUT / "runs" / case.name / f"state{i}")
    report_dir = fresh_dir(OUT / "runs" / case.name / f"run{i}")
    log = OUT / "logs" / f"{case.name}-{i}"
    cmd = [*invsync_cmd(), "sync", str(data.sync_csv), "--full", "--state-dir", str(state),
           "--report-dir", str(report_dir), *v.flags]
    cpu0 = sum(proc.cpu_times()[:2])
    m = measure(cmd, env=env, log=log)
    sandbox_cpu = sum(proc.cpu_times()[:2]) - cpu0
    if m["returncode"] != 0:
        raise RuntimeError(f"sync exited {m['returncode']}:\n{log_tail(log)}")
    stats = sb.stats()
    report = run_report(report_dir)
    accepted = report["counts"]["accepted"]
    if accepted != cfg.sync_rows or stats["items_applied"] != cfg.sync_rows:
        raise RuntimeError(f"expected {cfg.sync_rows} items accepted, report says {accepted}, "
                           f"sandbox applied {stats['items_applied']}")
    submit_s = report["timings"]["submit"]
    requests = stats["requests"]
    n429 = stats["by_status"].get("429", 0)
    case.add(m["wall_s"], m)
    x = case.extra
    x.setdefault("submit_s", []).append(submit_s)
    x.setdefault("stage_s", []).append(report["timings"])
    x.setdefault("items_per_s_submit", []).append(round(accepted / submit_s, 1))
    x.setdefault("items_per_s_wall", []).append(round(accepted / m["wall_s"], 1))
    x.setdefault("requests", []).append(requests)
    x.setdefault("http_429", []).append(n429)
    x.setdefault("share_429", []).append(round(n429 / requests, 5) if requests else 0.0)
    x.setdefault("item_overlaps", []).append(stats["item_overlaps"])
    x.setdefault("max_in_flight", []).append(stats["max_in_flight"])
    x.setdefault("client_cpu_s", []).append(round(m["cpu_s"], 3))
    x.setdefault("sandbox_cpu_s", []).append(round(sandbox_cpu, 3))


def bench_quota(cfg: Config, data: Data) -> list[Case]:
    """Case 3: quota use against a sandbox with a small quota."""
    case = Case("sync_quota", f"`invsync sync --full`, {cfg.sync_batches} batches of 2000, "
                              f"quota {cfg.quota}/{cfg.window_ms / 1000:g} s, "
                              f"latency {cfg.quota_latency_ms} ms",
                f"invsync sync sync_{label(cfg.sync_rows)}.csv --full (token env, sandbox)")
    flags = ["--quota", str(cfg.quota), "--window-ms", str(cfg.window_ms),
             "--latency-ms", str(cfg.quota_latency_ms)]
    bench_sync(cfg, data, flags, [SyncVariant(case, [])])
    return [case]


def bench_latency(cfg: Config, data: Data) -> list[Case]:
    """Case 4: no quota, 100 ms latency; default concurrency vs --concurrency 1."""
    what = (f"`invsync sync --full`, {cfg.sync_batches} batches of 2000, no quota, "
            f"latency {cfg.latency_ms} ms")
    base = f"invsync sync sync_{label(cfg.sync_rows)}.csv --full"
    default = Case("sync_latency_default", f"{what}, default concurrency", base)
    serial = Case("sync_latency_c1", f"{what}, `--concurrency 1`", base + " --concurrency 1")
    bench_sync(cfg, data, ["--latency-ms", str(cfg.latency_ms)],
               [SyncVariant(default, []), SyncVariant(serial, ["--concurrency", "1"])])
    return [default, serial]


def bench_peer(cfg: Config, data: Data) -> list[Case]:
    """Cases 7/8: a first-night sync (no snapshot: every row sent) vs the naive script.

    One sandbox per latency; invsync (default settings) and ``bench/naive.py`` alternate.
    """
    import psutil

    from invsync.sandbox.process import run_sandbox

    assert data.peer_csv is not None and data.peer_catalog is not None
    rows, lb = cfg.peer_rows, label(cfg.peer_rows)
    out: list[Case] = []
    for latency in cfg.peer_latencies_ms:
        what = f"first night, {rows:,} rows ({rows // ITEMS_PER_REQUEST} requests), " \
               f"latency {latency} ms"
        inv = Case(f"first_night_{lb}_{latency}ms", f"`invsync sync`, {what}, default settings",
                   f"invsync sync peer_{lb}.csv --state-dir EMPTY --report-dir R")
        naive = Case(f"naive_{lb}_{latency}ms", f"`bench/naive.py` (the peer), {what}",
                     f"python bench/naive.py peer_{lb}.csv")
        out += [inv, naive]
        with guarded([inv, naive]), run_sandbox(
                data.peer_catalog, "--latency-ms", str(latency), store_hash=STORE, token=TOKEN,
                env=base_env(), startup_timeout_s=300) as sb:
            proc = psutil.Process(sb.process.pid)
            env = {**base_env(), "BIGCOMMERCE_STORE_HASH": STORE,
                   "BIGCOMMERCE_ACCESS_TOKEN": TOKEN, "BIGCOMMERCE_API_URL": sb.url}
            for i in range(cfg.heavy_runs):
                for case, is_naive in ((inv, False), (naive, True)):
                    sb.post("/_sandbox/reset?levels=1")
                    log = OUT / "logs" / f"{case.name}-{i}"
                    if is_naive:
                        cmd = [PY, str(BENCH / "naive.py"), str(data.peer_csv)]
                    else:
                        state = fresh_dir(OUT / "runs" / case.name / f"state{i}")
                        report_dir = fresh_dir(OUT / "runs" / case.name / f"run{i}")
                        cmd = [*invsync_cmd(), "sync", str(data.peer_csv), "--state-dir",
                               str(state), "--report-dir", str(report_dir)]
                    cpu0 = sum(proc.cpu_times()[:2])
                    m = measure(cmd, env=env, log=log)
                    sandbox_cpu = sum(proc.cpu_times()[:2]) - cpu0
                    if m["returncode"] != 0:
                        raise RuntimeError(f"{case.name} exited {m['returncode']}:\n"
                                           f"{log_tail(log)}")
                    stats = sb.stats()
                    if stats["items_applied"] != rows:
                        raise RuntimeError(f"{case.name}: the sandbox applied "
                                           f"{stats['items_applied']} items, expected {rows}")
                    case.add(m["wall_s"], m)
                    x = case.extra
                    x.setdefault("requests", []).append(stats["requests"])
                    x.setdefault("client_cpu_s", []).append(round(m["cpu_s"], 3))
                    x.setdefault("sandbox_cpu_s", []).append(round(sandbox_cpu, 3))
                    if is_naive:
                        sent = json.loads(Path(str(log) + ".out").read_text().splitlines()[-1])
                        x.setdefault("submit_s", []).append(sent["send_s"])
                        x.setdefault("outside_submit_s", []).append(
                            round(m["wall_s"] - sent["send_s"], 4))
                    else:
                        report = run_report(report_dir)
                        x.setdefault("stage_s", []).append(report["timings"])
                        x.setdefault("submit_s", []).append(report["timings"]["submit"])
                        x.setdefault("outside_submit_s", []).append(
                            round(m["wall_s"] - report["timings"]["submit"], 4))
                    progress(case, i, cfg.heavy_runs)
    return out


def bench_reads(cfg: Config, data: Data) -> list[Case]:
    """Case 9: read requests of --baseline live, drift FILE and verify for a file naming
    ``reads_named`` items of a ``reads_catalog``-item catalog (counted in the sandbox's log)."""
    from invsync.sandbox.process import run_sandbox

    assert data.reads_csv is not None and data.reads_catalog is not None
    named, items = label(cfg.reads_named), label(cfg.reads_catalog)
    cmds = {"baseline_live": "sync --baseline live FILE", "drift": "drift FILE",
            "verify": "verify RUN"}
    cases = {k: Case(f"reads_{k}_{named}_of_{items}",
                     f"`invsync {c}`: GET requests for {cfg.reads_named:,} of "
                     f"{cfg.reads_catalog:,} items", f"invsync {c}",
                     timing="read requests (the median s column counts requests)")
             for k, c in cmds.items()}
    with guarded(list(cases.values())), run_sandbox(
            data.reads_catalog, store_hash=STORE, token=TOKEN, env=base_env(),
            startup_timeout_s=300) as sb:
        env = {**base_env(), "BIGCOMMERCE_STORE_HASH": STORE,
               "BIGCOMMERCE_ACCESS_TOKEN": TOKEN, "BIGCOMMERCE_API_URL": sb.url}
        for i in range(cfg.heavy_runs):
            sb.post("/_sandbox/reset?levels=1")
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
                before = len(sb.get("/_sandbox/requests"))
                log = OUT / "logs" / f"{case.name}-{i}"
                m = measure([*invsync_cmd(), *cmd], env=env, log=log)
                if m["returncode"] != 0:
                    raise RuntimeError(f"{case.name} exited {m['returncode']}:\n"
                                       f"{log_tail(log)}")
                if key == "baseline_live":
                    run_id = run_report(report_dir)["run_id"]
                gets = [r for r in sb.get("/_sandbox/requests")[before:] if r["method"] == "GET"]
                case.add(float(len(gets)), m)
                case.extra.setdefault("wall_s", []).append(round(m["wall_s"], 3))
                case.extra.setdefault("paths", []).append(
                    sorted({r["path"].split("/v3", 1)[-1] for r in gets}))
                say(f"  {case.name:<36} run {i + 1}: {len(gets)} read requests, "
                    f"{m['wall_s']:.2f} s")
    return list(cases.values())


# ---- ratios and output ----------------------------------------------------------------------


@dataclass
class Ratio:
    name: str
    value: float | None
    target: str
    passed: bool | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": None if self.value is None else round(self.value, 4),
                "target": self.target, "pass": self.passed, "detail": self.detail}

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "info"}[self.passed]


def ratio(name: str, value: float | None, target: str,
          check: Callable[[float], bool] | None, detail: str = "") -> Ratio:
    if value is None or value != value:  # missing or NaN: the case failed
        return Ratio(name, None, target, False if check else None, detail or "not measured")
    return Ratio(name, value, target, check(value) if check else None, detail)


class _Medians:
    """The cases measured, with the two helpers every ratio uses."""

    def __init__(self, cases: dict[str, Case]) -> None:
        self.cases = cases

    def med(self, name: str) -> float | None:
        c = self.cases.get(name)
        return c.median if c and c.seconds and not c.error else None

    @staticmethod
    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

def _ratios_dry(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    lb = label(cfg.dry_rows)
    r = m.div(m.med(f"dry_run_{lb}"), m.med(f"bare_read_{lb}"))
    out.append(ratio(f"1. dry run {lb} / bare polars.read_csv (whole processes)", r,
                     "<= 4x", lambda v: v <= 4.0,
                     "" if r is None else f"ambition <= 3x {'met' if r <= 3 else 'not met'}"))


def _ratios_xlsx(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    lb = label(cfg.xlsx_rows)
    inv = m.med(f"xlsx_invsync_{lb}")
    out.append(ratio(f"2. XLSX {lb}: read_stock_file / polars calamine (in-process)",
                     m.div(inv, m.med(f"xlsx_calamine_{lb}")), "<= 2x", lambda v: v <= 2.0))
    out.append(ratio(f"2b. XLSX {lb}: read_stock_file / openpyxl read_only",
                     m.div(inv, m.med(f"xlsx_openpyxl_{lb}")), "(reference)", None))


def _ratios_quota(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    c = cases.get("sync_quota")
    x = c.extra if c is not None and c.seconds and not c.error else None
    ips = median(x["items_per_s_submit"]) if x else None
    use = m.div(ips, cfg.ceiling_items_per_s)
    out.append(ratio("3. quota use: items/s (submit stage) / quota ceiling", use, ">= 0.95",
                     lambda v: v >= 0.95,
                     f"{ips:,.0f} items/s vs {cfg.ceiling_items_per_s:,.0f}" if ips else ""))
    share = max(x["share_429"]) if x else None
    out.append(ratio("3b. requests answered 429 (worst run)", share, "<= 1%",
                     lambda v: v <= 0.01,
                     f"{sum(x['http_429'])} of {sum(x['requests'])} requests" if x else ""))


def _ratios_latency(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    d, s = cases.get("sync_latency_default"), cases.get("sync_latency_c1")
    out.append(ratio("4. latency-bound: wall --concurrency 1 / default", m.div(
        m.med("sync_latency_c1"), m.med("sync_latency_default")), ">= 3x", lambda v: v >= 3.0))
    sub = None
    if d and s and d.seconds and s.seconds and not (d.error or s.error):
        sub = m.div(median(s.extra["submit_s"]), median(d.extra["submit_s"]))
    out.append(ratio("4a. same, submit stage only", sub, "(reference)", None))
    overlaps = None
    if d and s and d.seconds and s.seconds:
        overlaps = float(sum(d.extra["item_overlaps"]) + sum(s.extra["item_overlaps"]))
    out.append(ratio("4b. sandbox item_overlaps (all runs)", overlaps, "== 0",
                     lambda v: v == 0))


def _ratios_dry_memory(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    c = cases.get(f"dry_run_{label(cfg.dry_rows)}")
    peak = c.peak_rss if c and c.seconds else None
    out.append(ratio(f"5. peak RSS, dry run {label(cfg.dry_rows)} (MiB)", peak, "< 400",
                     lambda v: v < 400))


def _ratios_memory(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    pts = [(n, cases.get(f"dry_run_{label(n)}")) for n in cfg.growth_rows]
    pts2 = [(n, c.peak_rss) for n, c in pts if c and c.seconds]
    if len(pts2) >= 2:
        (n0, r0), (n1, r1) = pts2[-2], pts2[-1]
        slope = (r1 - r0) / ((n1 - n0) / 1_000_000)
        out.append(ratio(f"5b. RSS growth {label(n0)} -> {label(n1)} (MiB per 1M rows)",
                         slope, "(reference)", None,
                         ", ".join(f"{label(n)}: {r:,.0f} MiB" for n, r in pts2)))


def _ratios_startup(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    out.append(ratio("6. `invsync --help` median wall (s)", m.med("startup_help"), "< 0.3 s",
                     lambda v: v < 0.3))


def _ratios_peer(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    lb = label(cfg.peer_rows)
    for latency in cfg.peer_latencies_ms:
        inv, naive = m.med(f"first_night_{lb}_{latency}ms"), m.med(f"naive_{lb}_{latency}ms")
        if latency == 0:
            out.append(ratio(f"7. first night {lb}, zero latency: invsync / naive script "
                             "(whole processes)", m.div(inv, naive), "<= 1.3x",
                             lambda v: v <= 1.3,
                             "" if inv is None or naive is None
                             else f"{inv:.2f} s vs {naive:.2f} s"))
            c = cases.get(f"first_night_{lb}_{latency}ms")
            n = cases.get(f"naive_{lb}_{latency}ms")
            if c and n and c.seconds and n.seconds and not (c.error or n.error):
                extra = median(c.extra["submit_s"]) - median(n.extra["submit_s"])
                batches = cfg.peer_rows / ITEMS_PER_REQUEST
                out.append(ratio("7a. per batch beyond the network: invsync's submit stage "
                                 "minus the naive send loop, ÷ batches (ms)",
                                 extra / batches * 1000, "(reference)", None))
        else:
            out.append(ratio(f"8. first night {lb}, latency {latency} ms: naive script / "
                             "invsync (whole processes)", m.div(naive, inv), ">= 3x",
                             lambda v: v >= 3.0,
                             "" if inv is None or naive is None
                             else f"{naive:.2f} s vs {inv:.2f} s"))


def _ratios_reads(cfg: Config, cases: dict[str, Case], m: _Medians, out: list[Ratio]) -> None:
    for key in ("baseline_live", "drift", "verify"):
        c = cases.get(f"reads_{key}_{label(cfg.reads_named)}_of_{label(cfg.reads_catalog)}")
        worst = max(c.seconds) if c and c.seconds and not c.error else None
        out.append(ratio(f"9. read requests, {key.replace('_', ' ')}: "
                         f"{cfg.reads_named:,} of {cfg.reads_catalog:,} items (worst run)",
                         worst, "<= 5", lambda v: v <= 5,
                         f"a full read: {-(-cfg.reads_catalog // 1000)} pages"))


_SECTIONS: list[tuple[tuple[str, ...], Any]] = [
    (("dry",), _ratios_dry),
    (("xlsx",), _ratios_xlsx),
    (("quota",), _ratios_quota),
    (("latency",), _ratios_latency),
    (("dry", "memory"), _ratios_dry_memory),
    (("memory",), _ratios_memory),
    (("startup",), _ratios_startup),
    (("peer",), _ratios_peer),
    (("reads",), _ratios_reads),
]
"""Each part of the table: the ``--only`` names that show it, and what it adds."""


def compute_ratios(cfg: Config, cases: dict[str, Case]) -> list[Ratio]:
    """The ratios of the cases measured, part by part (see ``_SECTIONS``)."""
    out: list[Ratio] = []
    m = _Medians(cases)
    for only, add in _SECTIONS:
        if any(name in cfg.only for name in only):
            add(cfg, cases, m, out)
    return out


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


def fmt_ratio(r: Ratio) -> str:
    if r.value is None:
        return "—"
    if "(ms)" in r.name:
        return fmt(r.value, 1)
    if "read requests" in r.name:
        return f"{r.value:.0f}"
    if "%" in r.target:
        return f"{r.value:.2%}"
    if "MiB" in r.name or "wall (s)" in r.name:
        return fmt(r.value, 1 if "MiB" in r.name else 3)
    if "overlaps" in r.name:
        return f"{r.value:.0f}"
    return f"{r.value:.2f}" + ("x" if "x" in r.target or r.target == "(reference)" else "")


def markdown(cfg: Config, info: dict[str, Any], cases: list[Case], ratios: list[Ratio],
             meta: dict[str, Any]) -> str:
    lines = [
        f"Machine: {info['cpu_model']}, {info['cores']} cores, {info['memory_gib']} GiB; "
        f"Python {info['python']}, polars {info['polars']}, fastexcel {info['fastexcel']}, "
        f"pandera {info['pandera']}. Commit {info['git_commit'] or '?'}"
        + (f" + uncommitted changes to {len(info['uncommitted_code'])} file(s) in pipeline/"
           if info["uncommitted_code"] else "")
        + f", {meta['date']}; "
        f"benchmark took {meta['total_s']:.0f} s; load average "
        f"{meta['load_start'][0]:.1f} at start, {meta['load_end'][0]:.1f} at end"
        + (" (**quick mode: reduced sizes**)" if cfg.quick else "") + ".",
        "",
        "| case | what | timing | runs | median s | min s | max s | peak RSS MiB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cases:
        d = c.to_dict()
        timing = ("in-process" if c.timing.startswith("in-process") else "read requests"
                  if c.timing.startswith("read requests") else "process wall")
        what = c.description + (f" — ERROR: {c.error}" if c.error else "")
        lines.append(f"| `{c.name}` | {what} | {timing} | {d['runs']} | {fmt(d['median_s'])} | "
                     f"{fmt(d['min_s'])} | {fmt(d['max_s'])} | {fmt(d['peak_rss_mb'], 0)} |")
    lines += ["", "| ratio | measured | target | result | detail |",
              "| --- | ---: | --- | --- | --- |"]
    for r in ratios:
        lines.append(f"| {r.name} | {fmt_ratio(r)} | {r.target} | **{r.verdict}** | "
                     f"{r.detail} |")
    stage_cases = [c for c in cases if c.extra.get("stage_median_s")]
    if stage_cases:
        stages = ["ingest", "validate", "diff", "plan"]
        lines += ["", "Dry-run stages (median s, from each run's report.json `timings`; "
                      "\"untimed\" = `sync_file` total minus the named stages (by-location "
                      "counts, brakes, filling the report); \"outside\" = process wall minus "
                      "that total: interpreter start, imports, writing the run folder, the "
                      "summary, exit):", "",
                  "| case | " + " | ".join(stages) + " | untimed | total | outside | wall |",
                  "| --- |" + " ---: |" * (len(stages) + 4)]
        for c in stage_cases:
            sm = c.extra["stage_median_s"]
            untimed = sm["total"] - sum(sm.get(s, 0.0) for s in stages)
            lines.append(f"| `{c.name}` | " + " | ".join(fmt(sm.get(s)) for s in stages)
                         + f" | {fmt(untimed)} | {fmt(sm['total'])} | "
                           f"{fmt(c.extra['outside_sync_file_median_s'])} | {fmt(c.median)} |")
    sync_cases = [c for c in cases if "items_per_s_submit" in c.extra and c.seconds]
    if sync_cases:
        lines += ["", "Sync runs (medians): submit stage, items/s, requests, 429s, "
                      "max in flight, CPU seconds of the CLI and of the sandbox:", "",
                  "| case | submit s | items/s (submit) | requests | 429s | max in flight | "
                  "item overlaps | CLI CPU s | sandbox CPU s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in sync_cases:
            x = c.extra
            lines.append(
                f"| `{c.name}` | {fmt(median(x['submit_s']), 2)} | "
                f"{fmt(median(x['items_per_s_submit']), 0)} | {median(x['requests']):.0f} | "
                f"{sum(x['http_429'])} | {max(x['max_in_flight'])} | "
                f"{sum(x['item_overlaps'])} | {fmt(median(x['client_cpu_s']), 1)} | "
                f"{fmt(median(x['sandbox_cpu_s']), 1)} |")
    peer_cases = [c for c in cases if c.name.startswith(("first_night_", "naive_")) and c.seconds]
    if peer_cases:
        lines += ["", "First night vs the naive script (medians): whole process, the "
                      "sending (invsync's submit stage, the script's PUT loop) and everything "
                      "outside it, CPU seconds of the client and "
                      "of the sandbox:", "",
                  "| case | wall s | submit s | outside submit s | requests | client CPU s | "
                  "sandbox CPU s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for c in peer_cases:
            x = c.extra
            lines.append(
                f"| `{c.name}` | {fmt(c.median)} | "
                f"{fmt(median(x['submit_s']))} | "
                f"{fmt(median(x['outside_submit_s']))} | "
                f"{median(x['requests']):.0f} | {fmt(median(x['client_cpu_s']), 2)} | "
                f"{fmt(median(x['sandbox_cpu_s']), 2)} |")
    return "\n".join(lines) + "\n"


def console_table(cases: list[Case], ratios: list[Ratio]) -> str:
    rows = [f"{'case':<24} {'runs':>4} {'median s':>9} {'min s':>8} {'max s':>8} "
            f"{'peak RSS MiB':>12}"]
    for c in cases:
        d = c.to_dict()
        rows.append(f"{c.name:<24} {d['runs']:>4} {fmt(d['median_s']):>9} {fmt(d['min_s']):>8} "
                    f"{fmt(d['max_s']):>8} {fmt(d['peak_rss_mb'], 0):>12}"
                    + (f"  ERROR {c.error}" if c.error else ""))
    rows += ["", f"{'ratio':<62} {'measured':>10}  {'target':<12} result"]
    for r in ratios:
        rows.append(f"{r.name:<62} {fmt_ratio(r):>10}  {r.target:<12} {r.verdict}"
                    + (f"  ({r.detail})" if r.detail else ""))
    return "\n".join(rows)


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

    done: dict[str, Case] = {}

    def keep(found: list[Case] | Case) -> None:
        for c in found if isinstance(found, list) else [found]:
            done[c.name] = c

    if "startup" in cfg.only:
        say("case 6: start-up")
        keep(bench_startup(cfg))
    if "dry" in cfg.only or "memory" in cfg.only:
        say("case 1: dry run vs bare read")
        keep(bench_dry(cfg, data))
    if "xlsx" in cfg.only:
        say("case 2: XLSX read")
        keep(bench_xlsx(cfg, data))
    if "quota" in cfg.only:
        say("case 3: quota use")
        keep(bench_quota(cfg, data))
    if "latency" in cfg.only:
        say("case 4: latency-bound, concurrency")
        keep(bench_latency(cfg, data))
    if "peer" in cfg.only:
        say("cases 7, 8: first night vs the naive script")
        keep(bench_peer(cfg, data))
    if "reads" in cfg.only:
        say("case 9: live read requests")
        keep(bench_reads(cfg, data))
    if "memory" in cfg.only:
        say("case 5: memory growth")
        keep(bench_memory(cfg, data, done))

    order = ["startup_help", f"bare_read_{label(cfg.dry_rows)}"]
    order += [f"dry_run_{label(n)}" for n in sorted({cfg.dry_rows, *cfg.growth_rows})]
    cases = [done[n] for n in order if n in done] + [c for n, c in done.items()
                                                      if n not in order]
    ratios = compute_ratios(cfg, done)
    total = time.perf_counter() - t_start
    load_end = os.getloadavg()
    meta: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "total_s": total,
                            "load_start": load_start, "load_end": load_end}
    results = {
        "version": 1,
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
            "not comparable with the targets (e.g. 40 requests fit in one quota window)")
    say(f"\ntotal {total:.0f} s; wrote {dest / 'results.json'} and {dest / 'results.md'}")
    if any(c.error for c in cases):
        say("some cases failed: see the errors above")
        return 2
    missed = [r.name for r in ratios if r.passed is False]
    return 1 if missed and os.environ.get("BENCH_STRICT", "") not in ("", "0") else 0


if __name__ == "__main__":
    sys.exit(main())
