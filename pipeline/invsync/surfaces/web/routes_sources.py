"""Fetch now: the configured sources (``[sources.NAME]``) on the upload page and the API.

A fetch takes the source's file through :func:`invsync.sources.fetch` (picked, settled,
checked for freshness, downloaded with its sha256) and lands it as a normal upload, which
is previewed and then applied (or not) like any other: nothing is sent to the store and
nothing is moved or deleted at the source. Only the sources' names are ever shown, never
their URLs, paths or credentials; what went wrong is said in plain words (the server log
has the details).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from invsync.errors import UsageError
from invsync.redact import redact
from invsync.run.config import Settings
from invsync.sources import (
    CopyNotKeptError,
    Fetched,
    NotReadyError,
    RemoteFile,
    SourceError,
    SourceState,
    StaleFileError,
    fetch,
    resolve,
)
from invsync.surfaces.web.errors import not_previewed, sentence, upload_problem
from invsync.surfaces.web.problems import problem
from invsync.surfaces.web.routes_pages import _after_upload, _upload_form
from invsync.surfaces.web.state import WebState, api_user, page_user, text, web
from invsync.surfaces.web.uploads import SUFFIXES, UploadError

log = logging.getLogger("invsync.web")

YES = ("1", "true", "yes")
_STALE = re.compile(r": (?P<file>[^:]+) is (?P<age>.+?) old, older than max_age \((?P<max>[^)]+)\)")

_busy: set[tuple[str, str]] = set()
_busy_lock = threading.Lock()


@dataclass
class Refused(Exception):
    """A fetch that made no upload: the HTTP status, problem type and plain words."""

    http: int
    kind: str
    message: str
    unchanged_since: str | None = None
    last_run_at: str | None = None

    def __str__(self) -> str:
        return self.message


def source_names(w: WebState) -> list[str]:
    """The configured sources' names (never their settings)."""
    return sorted(w.settings.sources)


def _plain(exc: Exception) -> tuple[int, str, str]:
    """What went wrong, for the merchant: (HTTP status, problem type, plain words)."""
    said = str(exc)
    if isinstance(exc, StaleFileError):
        found = _STALE.search(said)
        if found:
            return 422, "stale-file", (
                f"the file is older than allowed: {found['file']} is {found['age']} old, and "
                f"this source accepts files up to {found['max']} old. The export may have "
                f"stopped arriving; nothing was fetched")
        if "no file matches" in said:
            return 422, "stale-file", ("no file was found at the source: the export may not "
                                       "have arrived yet")
        return 422, "stale-file", "the file is older than allowed: nothing was fetched"
    if isinstance(exc, NotReadyError):
        return 422, "file-not-ready", ("the file is still being written at the source (or is "
                                       "not marked as complete yet): try again in a few minutes")
    if isinstance(exc, CopyNotKeptError):  # this server's disk, not the source's
        return 500, "internal", ("the server's disk has no room for the file: nothing was "
                                 "fetched or sent; ask whoever runs invsync to make room, "
                                 "then fetch again")
    if isinstance(exc, SourceError | OSError):
        return 502, "source-unreachable", ("the server could not be reached, or it did not hand "
                                           "over the file: try again later; if it keeps "
                                           "happening, the server log has the details")
    if "files match" in said:
        return 422, "source-config", ("several files match at the source and its settings do "
                                      "not say which one to read: ask whoever set up the "
                                      "source to choose (newest or oldest)")
    return 422, "source-config", ("this source cannot be fetched as it is set up: the server "
                                  "log has the details")


def _upload_name(fetched: Fetched) -> str:
    """The upload's file name: the fetched file's, with a suffix the page reads."""
    name = fetched.file.name or "download"
    if Path(name).suffix.lower() in SUFFIXES:
        return name
    with fetched.local.open("rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"  # a feed URL without .csv/.xlsx in its name
    return f"{name}{'.xlsx' if zipped else '.csv'}"


def _when(mtime: float | None) -> str | None:
    if mtime is None:
        return None
    return datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fetch_into_upload(w: WebState, name: str, user: str, *, force: bool = False) -> str:
    """Fetch source ``name``'s file and store it as a new upload (not yet previewed); return
    its id. Blocking (a worker thread). Raises :class:`Refused` when no upload is made."""
    if name not in w.settings.sources:
        raise Refused(404, "not-found", f"there is no source named {name!r}")
    try:
        spec = resolve(name, w.settings.sources)
    except UsageError as exc:  # e.g. password_env names a variable that is not set
        log.warning("fetch now: source %s: %s", name, redact(str(exc)))
        raise Refused(*_plain(exc)) from None
    key = (str(w.settings.state_dir), spec.key)
    with _busy_lock:
        if key in _busy:
            raise Refused(409, "source-busy", "this source is being fetched already: wait for "
                                              "that fetch to finish")
        _busy.add(key)
    try:
        try:
            fetched = fetch(spec, w.settings.state_dir, force=force)
        except (StaleFileError, NotReadyError, SourceError, UsageError, OSError) as exc:
            log.warning("fetch now: source %s: %s", name, redact(str(exc)))
            raise Refused(*_plain(exc)) from None
        if fetched.unchanged_since:
            last = SourceState(w.settings.state_dir, spec).last()
            raise Refused(200, "unchanged", "the file has not changed since the last run",
                          unchanged_since=fetched.unchanged_since,
                          last_run_at=str(last.get("fetched_at") or "") or None)
        if fetched.size > w.options.max_upload_bytes:  # what the upload form would refuse
            raise Refused(413, "too-large", f"the file is larger than the page accepts "
                                            f"({w.max_mb} MB): no upload was made")
        with fetched.local.open("rb") as data:
            meta = w.portal.create(user=user, filename=_upload_name(fetched), data=data,
                                   location_id=None, sheet=None, duplicates=None, column_map={})
    finally:
        with _busy_lock:
            _busy.discard(key)
    info = {"name": name, "file": fetched.file.name, "size": fetched.size,
            "sha256": fetched.sha256, "modified": _when(fetched.file.mtime),
            "fetched_at": fetched.fetched_at}
    w.portal._update(meta["upload_id"], source=info, source_record=fetched.record())
    return str(meta["upload_id"])


def remember_applied(settings: Settings, meta: dict[str, Any], run_id: str) -> None:
    """A fetched upload applied with success is the source's last successful run, as if
    ``invsync sync NAME`` had run it: the same file is then "unchanged" for the next
    fetch, ``sync`` and ``watch``. Never moves the file (``on_success`` is not applied)."""
    record = meta.get("source_record") or {}
    name = (meta.get("source") or {}).get("name")
    if meta.get("status") not in ("succeeded", "partial") or name not in settings.sources:
        return
    try:
        spec = resolve(str(name), settings.sources)
        file = RemoteFile(path=str(record["path"]), size=record.get("size"),
                          mtime=record.get("mtime"), etag=record.get("etag"))
        fetched = Fetched(spec=spec, file=file, local=Path(), sha256=str(record["sha256"]),
                          size=int(record["size"]), etag=record.get("etag"),
                          last_modified=record.get("last_modified"),
                          fetched_at=str(record.get("fetched_at") or ""))
        SourceState(settings.state_dir, spec).remember(fetched, run_id)
    except (KeyError, TypeError, ValueError, UsageError, OSError) as exc:
        log.warning("source %s: its last run could not be recorded: %s", name, redact(str(exc)))


# --- the page ----------------------------------------------------------------------------


async def fetch_page(request: Request) -> Response:
    """The "Fetch now" button: a new upload, previewed; or the home page saying why not."""
    session, form = await page_user(request, changes_state=True)
    name = request.path_params["name"]
    w = web(request)
    try:
        upload_id = await run_in_threadpool(fetch_into_upload, w, name, session.user,
                                            force=text(form.get("force")) in YES)
    except Refused as exc:
        outcome = {"name": name, "text": exc.message, "unchanged": exc.kind == "unchanged",
                   "last_run_at": exc.last_run_at, "bad": exc.kind != "unchanged"}
        # No Sources section to say it in (no source configured): the page's error box.
        error = None if w.settings.sources else sentence(exc.message)
        return await _upload_form(request, exc.http, error, source_outcome=outcome)
    except UploadError as exc:
        return await _upload_form(request, exc.http, source_outcome={
            "name": name, "text": str(exc), "bad": True})
    return await _after_upload(request, upload_id)


# --- the API -----------------------------------------------------------------------------


async def list_sources(request: Request) -> Response:
    api_user(request, changes_state=False)
    return JSONResponse({"items": [{"name": n} for n in source_names(web(request))]})


async def fetch_api(request: Request) -> Response:
    user = api_user(request, changes_state=True)
    name = request.path_params["name"]
    force = request.query_params.get("force") in YES
    w = web(request)
    try:
        upload_id = await run_in_threadpool(fetch_into_upload, w, name, user, force=force)
    except Refused as exc:
        if exc.http == 200:
            return JSONResponse({"source": name, "status": "unchanged",
                                 "unchanged_since": exc.unchanged_since,
                                 "last_run_at": exc.last_run_at,
                                 "detail": f"{exc.message}: no upload was made (force=true "
                                           f"fetches it anyway)"})
        return problem(exc.http, exc.message, kind=exc.kind, field=None)
    location = f"/api/uploads/{upload_id}"
    try:
        await run_in_threadpool(w.portal.plan, upload_id)
    except UploadError as exc:  # kept (e.g. its columns to choose): say where it is
        answer = upload_problem(exc, upload_id)
        answer.headers["Location"] = location
        return answer
    data: dict[str, Any] = await run_in_threadpool(w.portal.describe, upload_id)
    if data["status"] != "planned":  # kept, but not previewed: it says why
        failure = await run_in_threadpool(w.portal.preview_failure, upload_id)
        return not_previewed(data, at_store=failure == "store", refused=failure == "auth",
                             internal=failure == "internal", location=location)
    return JSONResponse(data, status_code=201, headers={"Location": location})


ROUTES = [
    Route("/sources/{name:path}/fetch", fetch_page, methods=["POST"]),
    Route("/api/sources", list_sources, methods=["GET"]),
    Route("/api/sources/{name:path}/fetch", fetch_api, methods=["POST"]),
]
