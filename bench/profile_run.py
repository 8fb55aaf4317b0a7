"""Where does an invsync run spend its time? Profile one CLI run.

    .venv/bin/python bench/profile_run.py [--out PREFIX] [--top N] [FILE] [-- extra sync flags]
    .venv/bin/python bench/profile_run.py --cprofile [FILE] [-- flags]
    .venv/bin/python bench/profile_run.py --sandbox "--latency-ms 100" [FILE] [-- flags]

Defaults to the dry run of row 1 (bench/data/stock_1m.csv against its previous-night
snapshot, ``--baseline snapshot``; run ``BENCH_ONLY=dry bench/run.py`` once to generate it).

With py-spy installed in the venv (``.venv/bin/pip install py-spy``) the run is a separate,
unmodified process sampled by py-spy (wall clock: idle samples included, so time the main
thread spends waiting for polars' threads counts where it was spent). Without it, or with
``--cprofile``, the run is profiled in-process with cProfile (slower, and polars' own work
shows as the Python call that started it). Either way the run's own stage timings
(report.json ``timings``) are printed beside the profile.

``--out PREFIX`` writes ``PREFIX.txt`` (the full listing) and ``PREFIX.md`` (the top entries
as a markdown table, which ``bench/run.py`` puts into results.md). With ``--sandbox FLAGS``
it starts a sandbox with those flags and the night files' catalog and profiles a real
``sync --full`` of bench/data/night1_100k.csv (every row sent) against it instead.
Extra flags after ``--`` go to ``invsync sync``.
"""

from __future__ import annotations

import contextlib
import cProfile
import json
import os
import pstats
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
STORE = "benchstore"


def parse(argv: list[str]) -> dict[str, Any]:
    opts: dict[str, Any] = {"extra": [], "sandbox": None, "out": None, "top": 15,
                            "cprofile": False, "file": None}
    if "--" in argv:
        opts["extra"] = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = iter(argv)
    for arg in args:
        if arg == "--sandbox":
            opts["sandbox"] = shlex.split(next(args))
        elif arg == "--out":
            opts["out"] = Path(next(args))
        elif arg == "--top":
            opts["top"] = int(next(args))
        elif arg == "--cprofile":
            opts["cprofile"] = True
        else:
            opts["file"] = Path(arg)
    return opts


def main(argv: list[str]) -> int:
    try:
        opts = parse(argv)
    except (StopIteration, ValueError):
        print(__doc__, file=sys.stderr)
        return 64
    default = "night1_100k.csv" if opts["sandbox"] is not None else "stock_1m.csv"
    path: Path = opts["file"] or BENCH / "data" / default
    if not path.exists():
        print(f"{path} does not exist: run `.venv/bin/python bench/run.py` first",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    for key in [k for k in os.environ if k.startswith(("BIGCOMMERCE_", "INVSYNC_"))]:
        del os.environ[key]
    os.environ["BIGCOMMERCE_STORE_HASH"] = STORE
    extra: list[str] = opts["extra"]
    with contextlib.ExitStack() as stack:
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if opts["sandbox"] is not None:
            from invsync.sandbox.process import run_sandbox

            rows = sum(1 for _ in path.open()) - 1
            catalog = BENCH / "data" / f"catalog_{rows // 2 // 1000}k.csv"
            sb = stack.enter_context(run_sandbox(catalog, *opts["sandbox"], store_hash=STORE,
                                                 token="bench-token", startup_timeout_s=300))
            os.environ.update({"BIGCOMMERCE_ACCESS_TOKEN": "bench-token",
                               "BIGCOMMERCE_API_URL": sb.url})
            extra = ["--full", "--state-dir", str(state), *extra]
        else:
            # A copy: the dry run changes no snapshot, but a flag after `--` might.
            src = BENCH / "data" / f"state_{path.stem.removeprefix('stock_')}"
            if src.exists():
                shutil.copytree(src, state, dirs_exist_ok=True)
            extra = extra or ["--dry-run", "--baseline", "snapshot", "--state-dir", str(state)]
        reports = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        args = ["sync", str(path), "--report-dir", str(reports), *extra]
        spy = Path(sys.executable).parent / "py-spy"
        if spy.exists() and not opts["cprofile"]:
            lines, table = with_py_spy(spy, args, opts["top"])
        else:
            lines, table = with_cprofile(args, opts["top"])
        timings = stage_timings(reports)
    lines = [*timings, "", *lines]
    print("\n".join(lines))
    if opts["out"] is not None:
        out: Path = opts["out"]
        out.parent.mkdir(parents=True, exist_ok=True)
        Path(str(out) + ".txt").write_text("\n".join(lines) + "\n")
        Path(str(out) + ".md").write_text("\n".join([*timings, "", *table]) + "\n")
    return 0


def shown(args: list[str]) -> str:
    """The profiled command line without its temporary folders (report and state dirs)."""
    out: list[str] = []
    for arg in args:
        if out and out[-1] in ("--report-dir", "--state-dir"):
            out[-1] = f"{out[-1]} {'R' if out[-1] == '--report-dir' else 'D'}"
            continue
        out.append(Path(arg).name if arg.endswith((".csv", ".xlsx")) else arg)
    return " ".join(out)


def stage_timings(reports: Path) -> list[str]:
    found = sorted(reports.glob("*/report.json"))
    if not found:
        return ["(no report.json: the run failed)"]
    report = json.loads(found[0].read_text())
    timings = report.get("timings") or {}
    return ["Stage timings of the profiled run (report.json, seconds): "
            + ", ".join(f"{k} {v:.3f}" for k, v in timings.items())]


def _where(frame: str) -> str:
    """``func (path/to/file.py:12)`` shortened to the path inside the package or library."""
    for marker in (f"{os.sep}pipeline{os.sep}", f"site-packages{os.sep}"):
        if marker in frame:
            head, _, tail = frame.partition("(")
            return f"{head}({tail.split(marker, 1)[1]}"
    return frame


def main_thread(raw: str) -> list[tuple[int, list[str]]]:
    """The main thread's stacks of py-spy's raw output (``--threads``): (samples, frames)."""
    by_thread: dict[str, list[tuple[int, list[str]]]] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # "thread (ID)", later "thread (ID): MainThread" once the thread has a name.
        thread = frames[0].split(")", 1)[0] if frames[0].startswith("thread (") else ""
        frames = [_where(f) for f in frames if not f.startswith("thread (")]
        if frames:
            by_thread.setdefault(thread, []).append((int(count), frames))
    for stacks in by_thread.values():
        if any("_run_module_as_main" in fs[0] for _, fs in stacks):
            return stacks
    return [s for stacks in by_thread.values() for s in stacks]


def with_py_spy(spy: Path, args: list[str], top: int) -> tuple[list[str], list[str]]:
    """Sample ``invsync ARGS`` with py-spy (raw stacks of the main thread, idle included).

    Each sample is charged to an import (a stack inside ``_find_and_load``) or else to the
    deepest invsync function on the stack: that function's own code plus the library calls
    (polars, Jinja, the standard library) it made.
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.txt"
        cmd = [str(spy), "record", "--idle", "--threads", "-r", "200", "-f", "raw",
               "-o", str(raw), "--", sys.executable, "-m", "invsync", "-q", *args]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not raw.exists():
            print(f"py-spy failed ({proc.returncode}): {proc.stderr[-1500:]}; "
                  "falling back to cProfile", file=sys.stderr)
            return with_cprofile(args, top)
        stacks = main_thread(raw.read_text())
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    charged: Counter[str] = Counter()
    samples = 0
    for n, frames in stacks:
        samples += n
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
        charged[_charge(frames)] += n
    samples = max(samples, 1)
    head = [f"py-spy (200 samples/s of the main thread, idle included) of "
            f"`invsync -q {shown(args)}`: {samples} samples, "
            f"{wall:.2f} s under the sampler (exit {proc.returncode})"]
    lines = [*head, "", f"{'%':>6}  charged to (imports, else the deepest invsync function)"]
    lines += [f"{100 * n / samples:6.1f}  {w}" for w, n in charged.most_common(top * 2)]
    lines += ["", f"{'total %':>8}  invsync function (inclusive)"]
    mine = [kv for kv in total.most_common() if "invsync/" in kv[0]]
    lines += [f"{100 * n / samples:8.1f}  {w}" for w, n in mine[:top * 2]]
    lines += ["", f"{'own %':>8}  any function (leaf frames)"]
    lines += [f"{100 * n / samples:8.1f}  {w}" for w, n in own.most_common(top)]
    table = [*head, "", "| % of samples | charged to (imports, else the deepest invsync "
                        "function with the library calls under it) |", "| ---: | --- |"]
    table += [f"| {100 * n / samples:.1f} | `{w}` |" for w, n in charged.most_common(top)]
    return lines, table


def _charge(frames: list[str]) -> str:
    if any(f.startswith("_find_and_load (") for f in frames):
        # Charged to the first library whose module body runs (its own imports included).
        for frame in frames:
            if frame.startswith("<module> (") and "invsync/" not in frame:
                inner = frame[len("<module> ("):].rstrip(")").rsplit(":", 1)[0]
                where = inner.split("/", 1)[0].removesuffix(".py")
                return f"imports: {where}"
        return "imports: invsync's own modules"
    for frame in reversed(frames):
        if "invsync/" in frame:
            return re.sub(r":\d+\)$", ")", frame)  # one row per function, not per line
    return frames[-1]


def with_cprofile(args: list[str], top: int) -> tuple[list[str], list[str]]:
    """Run ``invsync ARGS`` in this process under cProfile."""
    t0 = time.perf_counter()
    from invsync.surfaces.cli import main as cli_main

    t1 = time.perf_counter()
    import invsync.run.sync  # noqa: F401  (what `invsync sync` imports inside the command)

    t2 = time.perf_counter()
    head = [f"cProfile (in-process) of `invsync -q {shown(args)}`;"
            f" import invsync.surfaces.cli {t1 - t0:.3f} s, + invsync.run.sync {t2 - t1:.3f} s"]
    profile = cProfile.Profile()
    code: Any = 0
    t3 = time.perf_counter()
    profile.enable()
    try:
        cli_main(["-q", *args])
    except SystemExit as exc:
        code = exc.code
    profile.disable()
    head[0] += f"; exit {code}, {time.perf_counter() - t3:.3f} s profiled"
    stats = pstats.Stats(profile)
    items = stats.stats.items()  # type: ignore[attr-defined]
    mine = sorted(((cum, n, _where(f"{fn} ({f}:{ln})")) for (f, ln, fn), (_, n, _tt, cum, _)
                   in items if f"{os.sep}pipeline{os.sep}" in f), reverse=True)
    own = sorted(((tt, n, _where(f"{fn} ({f}:{ln})")) for (f, ln, fn), (_, n, tt, _c, _)
                  in items), reverse=True)
    lines = [*head, "", f"{'cumulative s':>12} {'calls':>7}  invsync function"]
    lines += [f"{cum:12.3f} {n:7d}  {where}" for cum, n, where in mine[:top]]
    lines += ["", f"{'own s':>12} {'calls':>7}  any function (top {top} by own time)"]
    lines += [f"{tt:12.3f} {n:7d}  {where}" for tt, n, where in own[:top]]
    table = [*head, "", "| cumulative s | calls | invsync function |", "| ---: | ---: | --- |"]
    table += [f"| {cum:.3f} | {n} | `{where}` |" for cum, n, where in mine[:min(top, 12)]]
    return lines, table


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
