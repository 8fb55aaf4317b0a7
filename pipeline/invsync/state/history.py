"""Past runs: every run folder under the report directory, newest first."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invsync.errors import UsageError


@dataclass(frozen=True)
class PastRun:
    """One run folder and its ``report.json``."""

    folder: Path
    report: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.report.get("run_id", self.folder.name))

    def row(self) -> dict[str, Any]:
        """The run as one line of ``invsync runs``."""
        r, counts = self.report, self.report.get("counts") or {}
        return {
            "run_id": self.run_id, "started_at": r.get("started_at"), "status": r.get("status"),
            "command": r.get("command", "sync"),
            "store": (r.get("store") or {}).get("store_hash"),
            "profile": (r.get("store") or {}).get("profile"),
            "file": (r.get("input") or {}).get("path"), "rows": counts.get("rows", 0),
            "changed": counts.get("changed", 0), "accepted": counts.get("accepted", 0),
            "rejected": counts.get("rejected", 0),
            "transactions": len(r.get("transaction_ids") or []),
            "exit_code": r.get("exit_code"), "folder": str(self.folder),
        }


def list_runs(report_dir: Path, store_hash: str | None = None, *,
              profile: str | None = None) -> list[PastRun]:
    """Every readable run under ``report_dir`` (optionally one store's or profile's), newest
    first."""
    runs = []
    for path in Path(report_dir).glob("*/report.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a run killed before writing its report leaves no report.json
        if store_hash and (report.get("store") or {}).get("store_hash") != store_hash:
            continue
        if profile and (report.get("store") or {}).get("profile") != profile:
            continue
        runs.append(PastRun(path.parent, report))
    return sorted(runs, key=lambda r: r.run_id, reverse=True)


def find_run(report_dir: Path, run_id: str, profile: str | None = None) -> PastRun:
    """The run whose id is ``run_id`` or starts with it (with ``profile``: among its runs).

    ``last`` is the newest run that read its file (one that failed before, e.g. on an
    unreadable file, has nothing to show or verify).
    """
    runs = list_runs(report_dir, profile=profile)
    if run_id == "last":
        read = [r for r in runs if (r.report.get("input") or {}).get("sha256")]
        if read:
            return read[0]
        raise UsageError(f"no run under {report_dir} has read a file yet")
    matches = [r for r in runs if r.run_id == run_id] or [
        r for r in runs if r.run_id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no run {run_id!r} under {report_dir}")
    raise UsageError(f"{run_id!r} matches {len(matches)} runs; give more of the id")
