"""``make demo``: a sandbox store, the sample_data/ files synced into it, and their reports.

Night 1 sends every level, night 2 only the few percent that changed; the merchant's
small workbook, offered as a complete list (``--zero-missing``), trips the brakes (it
would zero everything it leaves out), then goes through as what it is, a partial update
(no flag needed), and shows its rejected rows. Last, orders placed after a file was made:
``--as-of`` subtracts what sold since. The sandbox is stopped at the end.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from invsync.sandbox.process import SandboxProcess, run_sandbox

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
        ok &= _sold_since_step(sb, env, base, work)
        _banner(f"Reports are in {work / 'reports'}")
    print("demo finished" + ("" if ok else " WITH UNEXPECTED EXIT CODES"))
    return 0 if ok else 1


def _sold_since_step(sb: SandboxProcess, env: dict[str, str], base: list[str],
                     work: Path) -> bool:
    """Orders placed after the file was made: ``--as-of`` subtracts what sold since."""
    import json
    import urllib.request
    from datetime import UTC, datetime, timedelta

    levels = sb.levels()
    sku = next(s for (loc, s), q in sorted(levels.items()) if loc == 1 and q >= 5)
    now = datetime.now(UTC).replace(microsecond=0)
    as_of = now - timedelta(hours=1)
    file_level = levels[(1, sku)] + 10  # a delivery came in: the warehouse counts 10 more

    def order(quantity: int, when: datetime) -> None:
        body = json.dumps({"items": [{"sku": sku, "quantity": quantity}],
                           "date_created": when.isoformat()}).encode()
        req = urllib.request.Request(sb.url + "/_sandbox/orders", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).close()

    _banner(f"Orders placed after the file was made: the warehouse counted {file_level} of "
            f"{sku} at {as_of:%H:%M} UTC; the storefront sold 1 before that and 2 after; "
            f"sync --as-of subtracts the 2 sold since")
    order(1, as_of - timedelta(minutes=20))  # the warehouse's count already knows this one
    order(2, as_of + timedelta(minutes=30))
    night3 = work / "night3.csv"
    night3.write_text(f"sku,location_id,quantity\n{sku},1,{file_level}\n", encoding="utf-8")
    proc = subprocess.run([*base, "--as-of", as_of.isoformat(), str(night3)], env=env,
                          text=True, capture_output=True)
    print(proc.stdout, end="")
    if proc.stderr.strip():
        print(proc.stderr, end="", file=sys.stderr)
    now_level = sb.levels()[(1, sku)]
    print(f"(the store now holds {now_level} of {sku}: file {file_level} − 2 sold since "
          f"{as_of:%H:%M} = {file_level - 2}; exit code {proc.returncode})")
    return proc.returncode == 0 and now_level == file_level - 2


if __name__ == "__main__":
    sys.exit(main())
