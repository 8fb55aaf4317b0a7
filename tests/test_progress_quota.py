"""Progress output knows the store's quota (issue 12): the real CLI, a real sandbox with a
tight quota, plain (non-terminal) progress lines on stderr."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from conftest import SAMPLE, env_for, run_invsync

from invsync.sandbox.process import SandboxProcess
from invsync.surfaces.progress import QuotaEta

QUOTA, WINDOW_S = 4, 1.5
STATUS = re.compile(r"sent (\d+)/(\d+) batches .*?(?:, ETA ([\d,]+) s)?(?:;|$)")


def test_plain_progress_says_it_waits_and_counts_the_windows_to_come(
        sandbox_factory: object, tmp_path: Path) -> None:
    sb: SandboxProcess = sandbox_factory(  # type: ignore[operator]
        "--quota", str(QUOTA), "--window-ms", str(int(WINDOW_S * 1000)))
    env = {**env_for(sb, tmp_path), "INVSYNC_PROGRESS_EVERY_S": "0.2"}
    result = run_invsync(["sync", str(SAMPLE / "night1.csv"), "--batch-size", "150",
                          "--concurrency", "2"], env)
    assert result.returncode in (0, 1), result.stderr
    lines = result.stderr.splitlines()
    waits = [ln for ln in lines if "for the store's rate limit" in ln]
    assert waits, result.stderr
    assert all(re.search(r"; waiting \d+(\.\d)? s for the store's rate limit$", w)
               for w in waits), waits
    checked = 0
    for line in lines:
        m = STATUS.search(line)
        if not m or m.group(3) is None:
            continue
        done, total, eta = int(m.group(1)), int(m.group(2)), int(m.group(3).replace(",", ""))
        # At most QUOTA requests a window: the batches left need this many more windows.
        windows_to_come = math.ceil((total - done) / QUOTA) - 1
        assert eta >= windows_to_come * WINDOW_S - 1, (line, windows_to_come)
        checked += 1
    assert checked >= 3, result.stderr


def test_eta_counts_the_windows_to_come() -> None:
    eta = QuotaEta()
    # 100 items of 10 batches sent in 0.1 s: the rate alone says 9 s for the 900 left ...
    assert eta.eta(0.0, 0.1, 100, 1000, 90) == pytest.approx(0.9)
    # ... but 90 batches at 5 a 30 s window need 17 more windows after this one.
    eta.on_event("rate_limit", {"quota": 5, "window_s": 30.0})
    assert eta.eta(0.0, 0.1, 100, 1000, 90) == pytest.approx(17 * 30)
