"""`make demo` is the front door: the demo module it runs must work end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT


def test_the_demo_runs_end_to_end() -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    proc = subprocess.run([sys.executable, "-m", "invsync.sandbox.demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    sent = [(int(items.replace(",", "")), int(code)) for items, code in re.findall(
        r"the store received \d+ PUT requests carrying ([\d,]+) items; exit code (\d+)", out)]
    # Night 1 sends what the store does not hold yet (all but its 246 zeros); night 2 only
    # what changed; the braked workbook nothing; the partial update its valid rows (one
    # refused by the store: exit 1).
    assert sent[0] == (3114 - 246, 0)
    assert sent[1][1] == 0 and 0 < sent[1][0] < 3114 * 0.1
    assert sent[2] == (0, 3)
    assert sent[3][1] == 1 and sent[3][0] > 0
    assert proc.stdout.rstrip().endswith("demo finished")
    # Orders placed after the file was made: the store ends at file − sold since as-of.
    held = re.search(r"the store now holds (\d+) of \S+: file (\d+) − 2 sold since [\d:]+ = "
                     r"(\d+); exit code 0", out)
    assert held and int(held[1]) == int(held[2]) - 2 == int(held[3]), out[-2000:]
