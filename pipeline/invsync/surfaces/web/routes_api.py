"""The JSON API (the same code path as the page): uploads created, listed, previewed,
applied, cancelled, discarded; errors as problems; the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from invsync.errors import UsageError
from invsync.run.as_of import resolve_as_of
from invsync.surfaces.web.errors import not_previewed, upload_problem
from invsync.surfaces.web.problems import problem
from invsync.surfaces.web.routes_pages import create_from_form, send_upload_file
from invsync.surfaces.web.state import api_user, text, web
from invsync.surfaces.web.uploads import UploadError

YES = ("1", "true", "yes")
PAGE_MAX = 100


def _is_form(request: Request) -> bool:
    kind = request.headers.get("content-type", "").lower()
    return kind.startswith(("multipart/form-data", "application/x-www-form-urlencoded"))


async def create(request: Request) -> Response:
    user = api_user(request, changes_state=True)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return problem(415, "send the file as multipart/form-data, in a field named 'file'",
                       kind="unsupported-media-type", field="file")
    portal = web(request).portal
    form = await request.form(max_files=1, max_fields=200)
    try:
        as_of = _as_of(form.get("as_of"), portal.settings.max_as_of_age_s)
        meta = await create_from_form(request, form, user)
    except UploadError as exc:
        return upload_problem(exc)
    upload_id = meta["upload_id"]
    await run_in_threadpool(portal.keep_as_of, upload_id, as_of)
    try:
        await run_in_threadpool(portal.plan, upload_id)
    except UploadError as exc:
        return upload_problem(exc, upload_id)
    data = await run_in_threadpool(portal.describe, upload_id)
    location = f"/api/uploads/{upload_id}"
    if data["status"] != "planned":  # kept, but not previewed: it says why
        failure = await run_in_threadpool(portal.preview_failure, upload_id)
        return not_previewed(data, at_store=failure == "store", refused=failure == "auth",
                             internal=failure == "internal", location=location)
    return JSONResponse(data, status_code=201, headers={"Location": location})


def _as_of(value: Any, max_age_s: float) -> str | None:
    """The upload's ``as_of`` field, checked before the file is kept: a time with an offset
    that is neither in the future nor older than ``max_as_of_age`` (else a 422 naming it)."""
    given = text(value).strip()
    if not given:
        return None
    if given.lower() == "mtime":  # an upload's modification time is when it was uploaded
        raise UploadError(422, "as_of cannot be 'mtime' for an upload (the file's time here is "
                               "when it was uploaded): give the time the file was true, in "
                               "ISO 8601 with an offset, such as 2026-12-06T02:00:00+01:00",
                          field="as_of", kind="invalid-field")
    try:
        resolve_as_of(given, Path(), max_age_s)
    except UsageError as exc:
        detail = str(exc).replace("--as-of ", "as_of ").replace("; nothing was sent", "")
        raise UploadError(422, detail, field="as_of", kind="invalid-field") from None
    return given


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise UploadError(400, f"{name} must be a whole number from {low} to {high}",
                          field=name, kind="bad-field")
    return int(raw)


async def list_uploads(request: Request) -> Response:
    api_user(request, changes_state=False)
    limit = _int_param(request, "limit", 20, 1, PAGE_MAX)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    items, total = await run_in_threadpool(web(request).portal.page_of, offset, limit)
    body: dict[str, Any] = {"items": items, "total": total, "offset": offset, "limit": limit}
    headers = {}
    if offset + limit < total:
        body["next"] = f"/api/uploads?offset={offset + limit}&limit={limit}"
        headers["Link"] = f'<{body["next"]}>; rel="next"'
    return JSONResponse(body, headers=headers)


async def get(request: Request) -> Response:
    api_user(request, changes_state=False)
    upload_id = request.path_params["upload_id"]
    return JSONResponse(await run_in_threadpool(web(request).portal.describe, upload_id))


async def delete(request: Request) -> Response:
    api_user(request, changes_state=True)
    upload_id = request.path_params["upload_id"]
    await run_in_threadpool(web(request).portal.discard, upload_id)
    return Response(status_code=204)


async def apply(request: Request) -> Response:
    api_user(request, changes_state=True)
    upload_id = request.path_params["upload_id"]
    allow = request.query_params.get("override_brakes") in YES
    if _is_form(request):
        form = await request.form(max_files=0, max_fields=10)
        allow = allow or text(form.get("override_brakes")) in YES
    portal = web(request).portal
    portal.apply(upload_id, override_brakes=allow)
    return JSONResponse(await run_in_threadpool(portal.describe, upload_id), status_code=202,
                        headers={"Location": f"/api/uploads/{upload_id}"})


async def cancel(request: Request) -> Response:
    api_user(request, changes_state=True)
    upload_id = request.path_params["upload_id"]
    portal = web(request).portal
    portal.cancel(upload_id)
    return JSONResponse(await run_in_threadpool(portal.describe, upload_id), status_code=202)


async def file(request: Request) -> Response:
    api_user(request, changes_state=False)
    return send_upload_file(request)


async def openapi(request: Request) -> Response:
    """The API's OpenAPI 3.1 document (the one kept in the repository's schemas/)."""
    from invsync.contracts import load

    return JSONResponse(load("upload-api.openapi.json"))


ROUTES = [
    Route("/api/openapi.json", openapi, methods=["GET"]),
    Route("/api/uploads", list_uploads, methods=["GET"]),
    Route("/api/uploads", create, methods=["POST"]),
    Route("/api/uploads/{upload_id}", get, methods=["GET"]),
    Route("/api/uploads/{upload_id}", delete, methods=["DELETE"]),
    Route("/api/uploads/{upload_id}/apply", apply, methods=["POST"]),
    Route("/api/uploads/{upload_id}/cancel", cancel, methods=["POST"]),
    Route("/api/uploads/{upload_id}/files/{name}", file, methods=["GET"]),
]
