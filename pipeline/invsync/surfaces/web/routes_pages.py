"""The upload page: upload, map columns, preview, apply, cancel, discard, download."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from invsync.surfaces.web.downloads import download, run_file
from invsync.surfaces.web.errors import sentence as _sentence
from invsync.surfaces.web.state import page, page_user, reading_fields, text, web
from invsync.surfaces.web.uploads import UploadError


def _upload_form_sync(request: Request, status: int = 200,
                      error: str | None = None, **extra: Any) -> Response:
    w = web(request)
    return page(request, "upload.html", status=status,
                default_location=w.settings.location_id, locations=w.portal.locations(),
                max_mb=w.max_mb, error=error, recent=w.portal.recent(10),
                sources=sorted(w.settings.sources), **extra)


async def _upload_form(request: Request, status: int = 200,
                       error: str | None = None, **extra: Any) -> Response:
    """The upload form (in a worker thread: it may read the store's locations)."""
    return await run_in_threadpool(_upload_form_sync, request, status, error, **extra)


async def home(request: Request) -> Response:
    await page_user(request, changes_state=False)
    return await _upload_form(request)


async def create_from_form(request: Request, form: Any, user: str) -> dict[str, Any]:
    """Store the form's file as a new upload (shared by the page and the API)."""
    portal = web(request).portal
    file = form.get("file")
    if not isinstance(file, UploadFile) or not file.filename:
        raise UploadError(400, "choose a file to upload", field="file", kind="bad-field")
    location_id = await run_in_threadpool(portal.resolve_location,
                                          text(form.get("location_id")).strip())
    column_map = {}
    for pair in form.getlist("map"):
        header, sep, column = text(pair).partition("=")
        if not sep or not header.strip():
            raise UploadError(400, f"map takes HEADER=column, not {text(pair)!r}",
                              field="map", kind="bad-field")
        column_map[header.strip()] = column.strip()
    encoding, header_row = reading_fields(form)
    return await run_in_threadpool(
        portal.create, user=user, filename=file.filename, data=file.file,
        location_id=location_id, sheet=text(form.get("sheet")).strip() or None,
        duplicates=text(form.get("duplicates")).strip() or None, column_map=column_map,
        encoding=encoding, header_row=header_row)


async def upload(request: Request) -> Response:
    session, form = await page_user(request, changes_state=True)
    try:
        meta = await create_from_form(request, form, session.user)
    except UploadError as exc:
        return await _upload_form(request, exc.http, str(exc))
    return await _after_upload(request, meta["upload_id"])


async def _after_upload(request: Request, upload_id: str) -> Response:
    portal = web(request).portal
    try:
        await run_in_threadpool(portal.plan, upload_id)
    except UploadError as exc:
        if exc.extra.get("status") == "unmapped":
            return RedirectResponse(f"/uploads/{upload_id}/map", status_code=303)
        if exc.http == 409:  # a refused re-preview leaves the upload as it was, and says why
            return await run_in_threadpool(_view, request, upload_id, 409, _sentence(str(exc)))
        portal.failed(upload_id, str(exc))
    return RedirectResponse(f"/uploads/{upload_id}", status_code=303)


async def map_form(request: Request) -> Response:
    await page_user(request, changes_state=False)
    portal = web(request).portal
    meta = portal.get(request.path_params["upload_id"])
    inspection = await run_in_threadpool(portal.inspect, meta)
    return page(request, "map.html", upload=meta, inspection=inspection, error=None)


async def map_submit(request: Request) -> Response:
    _, form = await page_user(request, changes_state=True)
    portal = web(request).portal
    upload_id = request.path_params["upload_id"]
    meta = portal.get(upload_id)
    headers = form.getlist("header")
    choices = form.getlist("column")
    column_map = {text(h): (text(c) or "ignore") for h, c in zip(headers, choices,
                                                                 strict=False)}
    try:
        await run_in_threadpool(portal.set_map, upload_id, column_map)
    except UploadError as exc:
        inspection = await run_in_threadpool(portal.inspect, meta)
        return page(request, "map.html", status=exc.http, upload=meta,
                    inspection=inspection, error=str(exc))
    return await _after_upload(request, upload_id)


def _view(request: Request, upload_id: str, status: int = 200,
          error: str | None = None) -> Response:
    portal = web(request).portal
    data = portal.describe(upload_id)
    names = {loc.id: loc.label or loc.code for loc in portal.locations()}
    # A preview the store refused (token, scope): the file is fine, the store's account is not.
    failure = portal.preview_failure(upload_id) \
        if data["status"] == "failed" and not data.get("run_id") else None
    # The store kept failing (down, errors, nonsense): the file may be fine, not "unusable".
    return page(request, "upload_view.html", status=status, u=data, error=error,
                location_names=names, refused_by_store=failure == "auth",
                store_failed=failure == "store", not_kept=failure == "internal")


async def upload_view(request: Request) -> Response:
    await page_user(request, changes_state=False)
    upload_id = request.path_params["upload_id"]
    if web(request).portal.get(upload_id)["status"] == "unmapped":
        return RedirectResponse(f"/uploads/{upload_id}/map", status_code=303)
    return await run_in_threadpool(_view, request, upload_id)


async def apply(request: Request) -> Response:
    _, form = await page_user(request, changes_state=True)
    upload_id = request.path_params["upload_id"]
    try:
        web(request).portal.apply(upload_id,
                                  override_brakes=text(form.get("override_brakes")) == "yes")
    except UploadError as exc:
        return await run_in_threadpool(_view, request, upload_id, exc.http, _sentence(str(exc)))
    return RedirectResponse(f"/uploads/{upload_id}", status_code=303)


async def cancel(request: Request) -> Response:
    await page_user(request, changes_state=True)
    upload_id = request.path_params["upload_id"]
    try:
        web(request).portal.cancel(upload_id)
    except UploadError as exc:
        return await run_in_threadpool(_view, request, upload_id, exc.http, _sentence(str(exc)))
    return RedirectResponse(f"/uploads/{upload_id}", status_code=303)


async def replan(request: Request) -> Response:
    _, form = await page_user(request, changes_state=True)
    portal = web(request).portal
    upload_id = request.path_params["upload_id"]
    try:
        sheet = text(form.get("sheet"))
        if sheet:
            portal.choose_sheet(upload_id, sheet)
        if "encoding" in form or "header_row" in form:  # the "read it again" choices
            portal.choose_reading(upload_id, *reading_fields(form))
    except UploadError as exc:
        return await run_in_threadpool(_view, request, upload_id, exc.http, _sentence(str(exc)))
    return await _after_upload(request, upload_id)


async def discard(request: Request) -> Response:
    await page_user(request, changes_state=True)
    upload_id = request.path_params["upload_id"]
    try:
        web(request).portal.discard(upload_id)
    except UploadError as exc:
        return await run_in_threadpool(_view, request, upload_id, exc.http, _sentence(str(exc)))
    return RedirectResponse(f"/uploads/{upload_id}", status_code=303)


def send_upload_file(request: Request) -> Response:
    """One of an upload's files (its original, or a file of its preview or apply)."""
    portal = web(request).portal
    upload_id, name = request.path_params["upload_id"], request.path_params["name"]
    path = portal.file(upload_id, name)
    if name == "original":
        return download(path, portal.get(upload_id)["filename"])
    return run_file(path)


async def upload_file(request: Request) -> Response:
    await page_user(request, changes_state=False)
    return send_upload_file(request)


ROUTES = [
    Route("/", home, methods=["GET"]),
    Route("/uploads", upload, methods=["POST"]),
    Route("/uploads/{upload_id}", upload_view, methods=["GET"]),
    Route("/uploads/{upload_id}/map", map_form, methods=["GET"]),
    Route("/uploads/{upload_id}/map", map_submit, methods=["POST"]),
    Route("/uploads/{upload_id}/apply", apply, methods=["POST"]),
    Route("/uploads/{upload_id}/cancel", cancel, methods=["POST"]),
    Route("/uploads/{upload_id}/preview", replan, methods=["POST"]),
    Route("/uploads/{upload_id}/discard", discard, methods=["POST"]),
    Route("/uploads/{upload_id}/files/{name}", upload_file, methods=["GET"]),
]
