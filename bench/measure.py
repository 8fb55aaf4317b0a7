"""Run one command in a fresh process; print its wall time, CPU time and peak RSS as JSON.

    python bench/measure.py LOG_PREFIX TIMEOUT_S -- COMMAND...

The command's stdout and stderr go to ``LOG_PREFIX.out`` / ``LOG_PREFIX.err``. Peak RSS is
``ru_maxrss`` from ``wait4`` of exactly that child. This launcher stays small on purpose:
``subprocess`` uses ``vfork``, and a child's ``ru_maxrss`` starts at its parent's RSS, so
measuring straight from a big parent (one that generated data with polars, say) would
report the parent's memory for every small child. Only the standard library is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 64
    prefix, timeout_s, cmd = argv[0], float(argv[1]), argv[3:]
    with open(prefix + ".out", "wb") as out, open(prefix + ".err", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({
        "wall_s": wall,
        "maxrss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "returncode": proc.returncode,
        "timed_out": timed_out.is_set(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
