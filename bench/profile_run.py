"""Where does an invsync run spend its time? Profile one CLI run in-process.

    .venv/bin/python bench/profile_run.py [FILE] [-- extra sync flags]
    .venv/bin/python bench/profile_run.py --sandbox "--latency-ms 100" [FILE] [-- flags]

Defaults to the dry run of case 1 (bench/data/stock_1m.csv against its previous-night
snapshot; run ``make bench`` or ``BENCH_ONLY=dry bench/run.py`` once to generate it).
With ``--sandbox FLAGS`` it starts a sandbox with those flags and the case 3/4 catalog
and runs a real ``sync --full`` of bench/data/sync_800k.csv against it instead.
Prints the import time, the invsync functions by cumulative time and every function by
own time (cProfile), so a slow stage can be narrowed down to the call that is slow.
Extra flags after ``--`` go to ``invsync sync``.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import shlex
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    sandbox_flags: list[str] | None = None
    if argv[:1] == ["--sandbox"]:
        sandbox_flags, argv = shlex.split(argv[1]), argv[2:]
    default = "sync_800k.csv" if sandbox_flags is not None else "stock_1m.csv"
    path = Path(argv[0]) if argv else BENCH / "data" / default
    if not path.exists():
        print(f"{path} does not exist: run `.venv/bin/python bench/run.py` first",
              file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    for key in [k for k in os.environ if k.startswith(("BIGCOMMERCE_", "INVSYNC_"))]:
        del os.environ[key]
    os.environ["BIGCOMMERCE_STORE_HASH"] = "benchstore"
    with contextlib.ExitStack() as stack:
        if sandbox_flags is not None:
            from invsync.sandbox.process import run_sandbox

            rows = sum(1 for _ in path.open()) - 1
            catalog = BENCH / "data" / f"catalog_{rows // 2 // 1000}k.csv"
            sb = stack.enter_context(run_sandbox(catalog, *sandbox_flags, store_hash="benchstore",
                                                 token="bench-token", startup_timeout_s=300))
            os.environ.update({"BIGCOMMERCE_ACCESS_TOKEN": "bench-token",
                               "BIGCOMMERCE_API_URL": sb.url})
            state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            extra = ["--full", "--state-dir", str(state), *extra]
        else:
            state = BENCH / "data" / f"state_{path.stem.removeprefix('stock_')}"
            extra = extra or ["--dry-run", "--state-dir", str(state)]
        return profile(path, extra)


def profile(path: Path, extra: list[str]) -> int:

    t0 = time.perf_counter()
    from invsync.surfaces.cli import main as cli_main

    t1 = time.perf_counter()
    import invsync.run.sync  # noqa: F401  (what `invsync sync` imports inside the command)

    t2 = time.perf_counter()
    print(f"import invsync.surfaces.cli {t1 - t0:.3f} s; + invsync.run.sync and its imports "
          f"{t2 - t1:.3f} s")

    with tempfile.TemporaryDirectory() as reports:
        args = ["-q", "sync", str(path), "--report-dir", reports, *extra]
        profile = cProfile.Profile()
        t3 = time.perf_counter()
        profile.enable()
        try:
            cli_main(args)
        except SystemExit as exc:
            code = exc.code
        profile.disable()
        wall = time.perf_counter() - t3
    print(f"invsync {' '.join(args)}\n  exit {code}, {wall:.3f} s in-process (profiled, so "
          f"a little slower than unprofiled)\n")
    stats = pstats.Stats(profile)
    rows = []
    for (filename, line, func), (_, ncalls, _tt, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        if f"{os.sep}pipeline{os.sep}" in filename or f"{os.sep}schemas{os.sep}" in filename:
            rel = Path(filename).relative_to(ROOT) if filename.startswith(str(ROOT)) else filename
            rows.append((cumtime, ncalls, f"{rel}:{line} {func}"))
    rows.sort(reverse=True)
    print(f"{'cumulative s':>12} {'calls':>7}  invsync function")
    for cumtime, ncalls, where in rows[:30]:
        print(f"{cumtime:12.3f} {ncalls:7d}  {where}")
    print(f"\n{'own s':>12} {'calls':>7}  any function (top 15 by own time)")
    own = sorted(((tt, n, f"{Path(f).name}:{ln} {fn}") for (f, ln, fn), (_, n, tt, _c, _)
                  in stats.stats.items()), reverse=True)  # type: ignore[attr-defined]
    for tt, ncalls, where in own[:15]:
        print(f"{tt:12.3f} {ncalls:7d}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
