"""History: the runs of this store (CLI and page), each run's page and files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from invsync.surfaces.web.downloads import run_file as send_run_file
from invsync.surfaces.web.state import page, page_user, web
from invsync.surfaces.web.uploads import UploadError

RUN_FILES = ("report.html", "report.json", "rejected.csv", "rejected.xlsx", "plan.csv",
             "summary.md")


def history_row(past: Any) -> dict[str, Any]:
    """A run as History lists it (who, from where, which file)."""
    row = past.row()
    origin = past.report.get("origin") or {}
    row["user"] = origin.get("user")
    row["source"] = origin.get("source") or "cli"
    row["file"] = origin.get("filename") or Path(str(row.get("file") or "")).name
    row["upload_id"] = origin.get("upload_id")
    return dict(row)


def _runs(request: Request) -> list[Any]:
    from invsync.state.history import list_runs

    settings = web(request).settings
    return list(list_runs(settings.reports, settings.store_hash))


def _find_run(request: Request, run_id: str) -> Any:
    for past in _runs(request):
        if past.run_id == run_id:
            return past
    raise UploadError(404, "no such run")


async def history(request: Request) -> Response:
    await page_user(request, changes_state=False)
    runs = await run_in_threadpool(_runs, request)
    # Previews change nothing: History lists what was sent (or tried).
    rows = [history_row(r) for r in runs if not _is_preview(r)][:500]
    portal = web(request).portal
    for row in rows:  # a page upload's run says what its page says
        if row.get("upload_id"):
            try:
                meta = portal.get(str(row["upload_id"]))
            except UploadError:
                continue
            if meta.get("run_id") == row["run_id"]:  # its latest apply
                row["upload_status"] = meta["status"]
                row.update(portal.page_counts(meta))
    return page(request, "history.html", runs=rows)


def _is_preview(past: Any) -> bool:
    report = past.report or {}
    return bool(report.get("status") == "dry_run" or report.get("command") == "plan")


async def run_view(request: Request) -> Response:
    await page_user(request, changes_state=False)
    from invsync.html.report_page import count_groups

    past = await run_in_threadpool(_find_run, request, request.path_params["run_id"])
    run, report = history_row(past), past.report
    if run.get("upload_id"):  # a page upload: in the words and counts of its page
        try:
            meta = web(request).portal.get(str(run["upload_id"]))
        except UploadError:
            meta = {}
        counts = web(request).portal.page_counts(meta)
        if counts and meta.get("run_id") == run["run_id"]:
            report = {**report, "counts": {**(report.get("counts") or {}), **counts}}
            if meta["status"] == "cancelled":
                run.update(upload_status="cancelled",
                           transactions=len(meta.get("transaction_ids") or []))
                report.update(error=None, counts={**report["counts"], **counts,
                                                  **meta["cancel_counts"]})
    return page(request, "run.html", run=run, report=report, groups=count_groups(report),
                files=[n for n in RUN_FILES if (past.folder / n).is_file()])


async def run_file(request: Request) -> Response:
    await page_user(request, changes_state=False)
    name = request.path_params["name"]
    if name not in RUN_FILES:
        raise UploadError(404, "no such file")
    past = await run_in_threadpool(_find_run, request, request.path_params["run_id"])
    path = past.folder / name
    if not path.is_file():
        raise UploadError(404, "no such file")
    return send_run_file(path)


ROUTES = [
    Route("/history", history, methods=["GET"]),
    Route("/runs/{run_id}", run_view, methods=["GET"]),
    Route("/runs/{run_id}/files/{name}", run_file, methods=["GET"]),
]
