"""``make demo``: a sandbox store, the sample_data/ files synced into it, and their reports.

Night 1 sends every level, night 2 only the few percent that changed; the merchant's
small workbook, offered as a complete list (``--zero-missing``), trips the brakes (it
would zero everything it leaves out), then goes through as what it is, a partial update
(no flag needed), and shows its rejected rows. The sandbox is stopped at the end.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from invsync.sandbox.process import run_sandbox

ROOT = Path(__file__).resolve().parents[3]  # the repository (the demo runs from a checkout)
SAMPLE = ROOT / "sample_data"
DEMO_TOKEN = "demo-token"  # the sandbox's own token, not a real credential


def _banner(text: str) -> None:
    print(f"\n\033[1m=== {text}\033[0m" if sys.stdout.isatty() else f"\n=== {text}", flush=True)


def main() -> int:
    """Run the demo; return 0 when every step did what it should."""
    work = ROOT / ".demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    with run_sandbox(SAMPLE / "catalog.csv", store_hash="demo", token=DEMO_TOKEN) as sb:
        print(f"sandbox store running at {sb.url}", flush=True)
        env = {**os.environ, "BIGCOMMERCE_STORE_HASH": "demo",
               "BIGCOMMERCE_ACCESS_TOKEN": DEMO_TOKEN, "BIGCOMMERCE_API_URL": sb.url}
        base = [sys.executable, "-m", "invsync", "sync", "--state-dir", str(work / "state"),
                "--report-dir", str(work / "reports"), "--reason", "invsync demo"]
        steps: list[tuple[str, Path, list[str], int]] = [
            ("Night 1: the warehouse export, first sync (every level is sent)",
             SAMPLE / "night1.csv", [], 0),
            ("Night 2: the next export (only the ~3% that changed is sent)",
             SAMPLE / "night2.csv", [], 0),
            ("The merchant's hand-edited workbook as a complete list (--zero-missing): 51 "
             "rows after a 3,114-row list would zero everything it leaves out, so the brakes "
             "trip and nothing is sent", SAMPLE / "merchant.xlsx", ["--zero-missing"], 3),
            ("The same workbook as what it is, a partial update: no flag needed (some rows "
             "are rejected)", SAMPLE / "merchant.xlsx", [], 1),
        ]
        ok = True
        for title, path, extra, expected in steps:
            _banner(title)
            before = len(sb.requests())
            proc = subprocess.run([*base, *extra, str(path)], env=env, text=True,
                                  capture_output=True)
            print(proc.stdout, end="")
            if proc.stderr.strip():
                print(proc.stderr, end="", file=sys.stderr)
            puts = [r for r in sb.requests()[before:] if r["method"] == "PUT"]
            items = sum(len(r.get("items") or []) for r in puts)
            print(f"(the store received {len(puts)} PUT requests carrying {items:,} items; "
                  f"exit code {proc.returncode})")
            ok &= proc.returncode == expected
            last_report = next((line.removeprefix("report: ").strip()
                                for line in reversed(proc.stdout.splitlines())
                                if line.startswith("report: ")), None)
        if last_report:
            _banner("rejected.csv of the workbook: fix these rows and upload the file again")
            with open(Path(last_report) / "rejected.csv", newline="", encoding="utf-8") as fh:
                for row in csv.reader(fh):
                    print("  " + " | ".join(row))
        _banner(f"Reports are in {work / 'reports'}")
    print("demo finished" + ("" if ok else " WITH UNEXPECTED EXIT CODES"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
