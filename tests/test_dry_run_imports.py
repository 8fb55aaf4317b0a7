"""A dry run of a local CSV file against the snapshot loads only what that path needs: no
HTTP client, no event loop, no TLS or remote-source modules and no workbook readers (their
imports are a large share of a short run's time). Run in a child process, so that what
other tests imported does not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import write_csv

_PROBE = """
import json, sys
from invsync.surfaces.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(
    m for m in ("httpx", "asyncio", "invsync.store.client", "invsync.stages.ingest.workbook",
                "invsync.stages.ingest.xls", "fastexcel", "openpyxl", "ssl",
              "invsync.sources.remote", "invsync.sources.fetching")
    if m in sys.modules)}))
"""


def _dry_run(tmp_path: Path, *extra: str) -> dict[str, object]:
    stock = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                      [["A-1", 1, 5], ["B-2", 1, 0], ["C-3", 2, 7]])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env.update({"BIGCOMMERCE_STORE_HASH": "drystore", "XDG_STATE_HOME": str(tmp_path / "xdg")})
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "-q", "sync", str(stock), "--dry-run",
         "--baseline", "snapshot", "--state-dir", str(tmp_path / "state"),
         "--report-dir", str(tmp_path / "runs"), *extra],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_a_dry_run_of_a_csv_file_loads_no_http_client_loop_or_workbook_reader(
        tmp_path: Path) -> None:
    result = _dry_run(tmp_path)
    assert result == {"code": 0, "loaded": []}
    # The run did write its report (plan.csv of the three new items).
    (folder,) = (tmp_path / "runs").iterdir()
    assert (folder / "plan.csv").read_text().count("\n") == 4
