"""``invsync serve``: the merchant upload page and its JSON API (one code path for both).

Pages are rendered on the server from the shared templates (autoescaped); the only
JavaScript is the project's own ``static/invsync.js`` (drag and drop, progress polling).
Every state-changing request needs the session's CSRF token (a form field, or the
``X-CSRF-Token`` header for the API), or an API key in ``Authorization: Bearer``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invsync.html.render import csp_hash, render, static_dir
from invsync.run.config import Settings
from invsync.surfaces.web.auth import Accounts, Session, Sessions, Throttle
from invsync.surfaces.web.messages import brake_text, reason_text
from invsync.surfaces.web.uploads import ENCODINGS, Portal, UploadError, encoding_label

log = logging.getLogger("invsync.web")

COOKIE = "invsync_session"
PRE_LOGIN = "invsync_login"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
RUN_FILES = ("report.html", "report.json", "rejected.csv", "rejected.xlsx", "plan.csv",
             "summary.md")
MEDIA = {".html": "text/html; charset=utf-8", ".json": "application/json",
         ".csv": "text/csv; charset=utf-8", ".md": "text/markdown; charset=utf-8",
         ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


class Options:
    """How the page is served (from ``invsync serve`` flags)."""

    def __init__(self, *, behind_https: bool = False, max_upload_mb: float = 50,
                 idle_minutes: float = 30, max_hours: float = 12) -> None:
        self.behind_https = behind_https
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.idle_s = idle_minutes * 60
        self.max_s = max_hours * 3600


class Unauthorized(Exception):
    pass


class CsrfFailed(Exception):
    pass


def create_app(settings: Settings, options: Options | None = None) -> Starlette:
    """The ASGI app for one store (``settings``); state lives under its state dir."""
    options = options or Options()
    accounts = Accounts(settings.state_dir)
    sessions = Sessions(idle_s=options.idle_s, max_s=options.max_s)
    throttle = Throttle()
    portal = Portal(settings)

    # -- who is asking ----------------------------------------------------------------
    def session_of(request: Request) -> tuple[str, Session] | None:
        sid = request.cookies.get(COOKIE)
        session = sessions.get(sid)
        if session is None:
            return None
        # Removed (invsync portal remove-user) or given a new password since this sign-in
        # (add-user again, e.g. after a leak): either way this session is over.
        if accounts.password_stamp(session.user) != session.stamp:
            sessions.end(sid)
            return None
        return sid or "", session

    def api_user(request: Request, *, changes_state: bool) -> str:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            name = accounts.check_key(auth[7:].strip())
            if name is None:
                raise Unauthorized()
            return name
        found = session_of(request)
        if found is None:
            raise Unauthorized()
        if changes_state and not _same(request.headers.get("x-csrf-token"), found[1].csrf):
            raise CsrfFailed()
        return found[1].user

    async def page_user(request: Request, *, changes_state: bool) -> tuple[Session, Any]:
        """The signed-in session (and the form, for a POST, its CSRF token checked)."""
        found = session_of(request)
        if found is None:
            raise Unauthorized()
        form = None
        if changes_state:
            form = await request.form(max_files=1, max_fields=200)
            if not _same(_text(form.get("csrf_token")), found[1].csrf):
                raise CsrfFailed()
        return found[1], form

    def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        found = session_of(request)
        html = render(template, user=found[1].user if found else None,
                      csrf=found[1].csrf if found else "", settings_store=settings.store_hash,
                      reason_text=reason_text, brake_text=brake_text, encodings=ENCODINGS,
                      encoding_label=encoding_label, **context)
        return HTMLResponse(html, status_code=status)

    # -- sign in ----------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        token = secrets.token_urlsafe(24)
        response = page(request, "login.html", login_csrf=token, error=None)
        _cookie(response, PRE_LOGIN, token, options, max_age=3600)
        return response

    async def login(request: Request) -> Response:
        form = await request.form(max_files=0, max_fields=10)
        if not _same(_text(form.get("login_csrf")), request.cookies.get(PRE_LOGIN)):
            return _csrf_failed(request)
        user = _text(form.get("username")).strip()
        password = _text(form.get("password"))
        address = request.client.host if request.client else "?"
        wait = throttle.blocked(user, address)
        if wait > 0:
            token = secrets.token_urlsafe(24)
            response = page(request, "login.html", status=429, login_csrf=token,
                            error=f"Too many attempts. Wait {int(wait) + 1} seconds and try "
                                  f"again.")
            _cookie(response, PRE_LOGIN, token, options, max_age=3600)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        ok = await run_in_threadpool(accounts.check_password, user, password)
        if not ok:
            throttle.failed(user, address)
            log.warning("failed sign-in for %r from %s", user[:64], address)
            token = secrets.token_urlsafe(24)
            response = page(request, "login.html", status=401, login_csrf=token,
                            error="Wrong user name or password.")
            _cookie(response, PRE_LOGIN, token, options, max_age=3600)
            return response
        throttle.succeeded(user, address)
        sessions.end(request.cookies.get(COOKIE))
        sid, session = sessions.create(user)
        session.stamp = accounts.password_stamp(user)
        response = RedirectResponse("/", status_code=303)
        _cookie(response, COOKIE, sid, options)
        response.delete_cookie(PRE_LOGIN, path="/")
        return response

    async def logout(request: Request) -> Response:
        await page_user(request, changes_state=True)
        sessions.end(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    # -- pages --------------------------------------------------------------------------
    async def home(request: Request) -> Response:
        await page_user(request, changes_state=False)
        return page(request, "upload.html", default_location=settings.location_id,
                    max_mb=options.max_upload_bytes // (1024 * 1024), error=None,
                    recent=portal.recent(10))

    async def upload_page(request: Request) -> Response:
        session, form = await page_user(request, changes_state=True)
        try:
            meta = await _create(form, session.user)
        except UploadError as exc:
            return page(request, "upload.html", status=exc.http,
                        default_location=settings.location_id,
                        max_mb=options.max_upload_bytes // (1024 * 1024), error=str(exc),
                        recent=portal.recent(10))
        return await _after_upload(request, meta["upload_id"])

    async def _create(form: Any, user: str) -> dict[str, Any]:
        file = form.get("file")
        if not isinstance(file, UploadFile) or not file.filename:
            raise UploadError(400, "choose a file to upload")
        location = _text(form.get("location_id")).strip()
        try:
            location_id = int(location) if location else None
        except ValueError:
            raise UploadError(400, "the location must be a whole number") from None
        column_map = {}
        for pair in form.getlist("map"):
            header, sep, column = _text(pair).partition("=")
            if not sep or not header.strip():
                raise UploadError(400, f"map takes HEADER=column, not {_text(pair)!r}")
            column_map[header.strip()] = column.strip()
        encoding, header_row = _reading_fields(form)
        return await run_in_threadpool(
            portal.create, user=user, filename=file.filename, data=file.file,
            location_id=location_id, sheet=_text(form.get("sheet")).strip() or None,
            duplicates=_text(form.get("duplicates")).strip() or None, column_map=column_map,
            encoding=encoding, header_row=header_row)

    async def _after_upload(request: Request, upload_id: str) -> Response:
        try:
            await run_in_threadpool(portal.plan, upload_id)
        except UploadError as exc:
            if exc.extra.get("status") == "unmapped":
                return RedirectResponse(f"/uploads/{upload_id}/map", status_code=303)
            portal.failed(upload_id, str(exc))
        return RedirectResponse(f"/uploads/{upload_id}", status_code=303)

    async def map_form(request: Request) -> Response:
        await page_user(request, changes_state=False)
        upload_id = request.path_params["upload_id"]
        meta = portal.get(upload_id)
        inspection = await run_in_threadpool(portal.inspect, meta)
        return page(request, "map.html", upload=meta, inspection=inspection, error=None)

    async def map_submit(request: Request) -> Response:
        _, form = await page_user(request, changes_state=True)
        upload_id = request.path_params["upload_id"]
        meta = portal.get(upload_id)
        headers = form.getlist("header")
        choices = form.getlist("column")
        column_map = {_text(h): (_text(c) or "ignore") for h, c in zip(headers, choices,
                                                                       strict=False)}
        try:
            await run_in_threadpool(portal.set_map, upload_id, column_map)
        except UploadError as exc:
            inspection = await run_in_threadpool(portal.inspect, meta)
            return page(request, "map.html", status=exc.http, upload=meta,
                        inspection=inspection, error=str(exc))
        return await _after_upload(request, upload_id)

    async def upload_view(request: Request) -> Response:
        await page_user(request, changes_state=False)
        upload_id = request.path_params["upload_id"]
        data = await run_in_threadpool(portal.describe, upload_id)
        if data["status"] == "unmapped":
            return RedirectResponse(f"/uploads/{upload_id}/map", status_code=303)
        return page(request, "upload_view.html", u=data, lock_holder=portal.lock_holder())

    async def apply_page(request: Request) -> Response:
        _, form = await page_user(request, changes_state=True)
        upload_id = request.path_params["upload_id"]
        try:
            portal.apply(upload_id, override_brakes=_text(form.get("override_brakes")) == "yes")
        except UploadError as exc:
            data = await run_in_threadpool(portal.describe, upload_id)
            return page(request, "upload_view.html", status=exc.http, u=data,
                        lock_holder=portal.lock_holder(), error=str(exc))
        return RedirectResponse(f"/uploads/{upload_id}", status_code=303)

    async def replan_page(request: Request) -> Response:
        _, form = await page_user(request, changes_state=True)
        upload_id = request.path_params["upload_id"]
        sheet = _text(form.get("sheet"))
        if sheet:
            portal.choose_sheet(upload_id, sheet)
        if "encoding" in form or "header_row" in form:  # the "read it again" choices
            portal.choose_reading(upload_id, *_reading_fields(form))
        return await _after_upload(request, upload_id)

    async def discard_page(request: Request) -> Response:
        await page_user(request, changes_state=True)
        upload_id = request.path_params["upload_id"]
        portal.discard(upload_id)
        return RedirectResponse(f"/uploads/{upload_id}", status_code=303)

    async def upload_file(request: Request) -> Response:
        await page_user(request, changes_state=False)
        return _send_upload_file(request)

    def _send_upload_file(request: Request) -> Response:
        upload_id, name = request.path_params["upload_id"], request.path_params["name"]
        path = portal.file(upload_id, name)
        if name == "original":
            meta = portal.get(upload_id)
            return _download(path, meta["filename"])
        return _run_file(path)

    async def history(request: Request) -> Response:
        await page_user(request, changes_state=False)
        from invsync.state.history import list_runs

        runs = await run_in_threadpool(list_runs, settings.reports, settings.store_hash)
        return page(request, "history.html", runs=[_history_row(r) for r in runs[:500]])

    async def run_view(request: Request) -> Response:
        await page_user(request, changes_state=False)
        past = _find_run(request.path_params["run_id"])
        from invsync.html.report_page import count_groups

        return page(request, "run.html", run=_history_row(past), report=past.report,
                    groups=count_groups(past.report),
                    files=[n for n in RUN_FILES if (past.folder / n).is_file()])

    async def run_file(request: Request) -> Response:
        await page_user(request, changes_state=False)
        name = request.path_params["name"]
        if name not in RUN_FILES:
            raise UploadError(404, "no such file")
        past = _find_run(request.path_params["run_id"])
        path = past.folder / name
        if not path.is_file():
            raise UploadError(404, "no such file")
        return _run_file(path)

    def _find_run(run_id: str) -> Any:
        from invsync.state.history import list_runs

        for past in list_runs(settings.reports, settings.store_hash):
            if past.run_id == run_id:
                return past
        raise UploadError(404, "no such run")

    # -- JSON API -----------------------------------------------------------------------
    async def api_create(request: Request) -> Response:
        user = api_user(request, changes_state=True)
        form = await request.form(max_files=1, max_fields=200)
        try:
            meta = await _create(form, user)
        except UploadError as exc:
            return _json_error(exc)
        try:
            await run_in_threadpool(portal.plan, meta["upload_id"])
        except UploadError as exc:
            return _json_error(exc, upload_id=meta["upload_id"])
        data = await run_in_threadpool(portal.describe, meta["upload_id"])
        code = 201 if data["status"] == "planned" else 422
        return JSONResponse(data, status_code=code)

    async def api_get(request: Request) -> Response:
        api_user(request, changes_state=False)
        upload_id = request.path_params["upload_id"]
        return JSONResponse(await run_in_threadpool(portal.describe, upload_id))

    async def api_apply(request: Request) -> Response:
        api_user(request, changes_state=True)
        upload_id = request.path_params["upload_id"]
        allow = request.query_params.get("override_brakes") in ("1", "true", "yes")
        if request.headers.get("content-type", "").startswith(("multipart/", "application/x")):
            form = await request.form(max_files=0, max_fields=10)
            allow = allow or _text(form.get("override_brakes")) in ("1", "true", "yes")
        try:
            portal.apply(upload_id, override_brakes=allow)
        except UploadError as exc:
            return _json_error(exc, upload_id=upload_id)
        return JSONResponse(await run_in_threadpool(portal.describe, upload_id), status_code=202)

    async def api_file(request: Request) -> Response:
        api_user(request, changes_state=False)
        return _send_upload_file(request)

    # -- errors -------------------------------------------------------------------------
    def _csrf_failed(request: Request) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
        return page(request, "error.html", status=403, title="Please try again",
                    message="This form has expired or did not come from this page. Go back, "
                            "reload the page and try again.")

    async def on_unauthorized(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "sign in or give an API key"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return RedirectResponse("/login", status_code=303)

    async def on_csrf(request: Request, exc: Exception) -> Response:
        return _csrf_failed(request)

    async def on_upload_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UploadError)
        if request.url.path.startswith("/api/"):
            return _json_error(exc)
        return page(request, "error.html", status=exc.http, title="Not possible",
                    message=str(exc))

    async def on_not_found(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "not found"}, status_code=404)
        return page(request, "error.html", status=404, title="Not found",
                    message="There is no such page.")

    async def on_error(request: Request, exc: Exception) -> Response:
        log.exception("request failed: %s %s", request.method, request.url.path)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "internal error"}, status_code=500)
        return page(request, "error.html", status=500, title="Something went wrong",
                    message="The page could not be shown. The server log has the details.")

    routes = [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", home, methods=["GET"]),
        Route("/uploads", upload_page, methods=["POST"]),
        Route("/uploads/{upload_id}", upload_view, methods=["GET"]),
        Route("/uploads/{upload_id}/map", map_form, methods=["GET"]),
        Route("/uploads/{upload_id}/map", map_submit, methods=["POST"]),
        Route("/uploads/{upload_id}/apply", apply_page, methods=["POST"]),
        Route("/uploads/{upload_id}/preview", replan_page, methods=["POST"]),
        Route("/uploads/{upload_id}/discard", discard_page, methods=["POST"]),
        Route("/uploads/{upload_id}/files/{name}", upload_file, methods=["GET"]),
        Route("/history", history, methods=["GET"]),
        Route("/runs/{run_id}", run_view, methods=["GET"]),
        Route("/runs/{run_id}/files/{name}", run_file, methods=["GET"]),
        Route("/api/uploads", api_create, methods=["POST"]),
        Route("/api/uploads/{upload_id}", api_get, methods=["GET"]),
        Route("/api/uploads/{upload_id}/apply", api_apply, methods=["POST"]),
        Route("/api/uploads/{upload_id}/files/{name}", api_file, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=str(static_dir())), name="static"),
    ]
    async def on_too_large(request: Request, exc: Exception) -> Response:
        mb = options.max_upload_bytes / (1024 * 1024)
        return _too_large_response(request.url.path, mb)

    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders),
                    Middleware(BodyLimit, limit=options.max_upload_bytes)],
        exception_handlers={Unauthorized: on_unauthorized, CsrfFailed: on_csrf,
                            UploadError: on_upload_error, TooLarge: on_too_large,
                            404: on_not_found, Exception: on_error})
    app.state.portal = portal
    app.state.sessions = sessions
    return app


def _history_row(past: Any) -> dict[str, Any]:
    row = past.row()
    origin = past.report.get("origin") or {}
    row["user"] = origin.get("user")
    row["source"] = origin.get("source") or "cli"
    row["file"] = origin.get("filename") or Path(str(row.get("file") or "")).name
    row["upload_id"] = origin.get("upload_id")
    return dict(row)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _reading_fields(form: Any) -> tuple[str | None, int | None]:
    """The ``encoding`` and ``header_row`` form fields (empty or absent: automatic)."""
    encoding = _text(form.get("encoding")).strip() or None
    row = _text(form.get("header_row")).strip()
    # ASCII digits only: int() would also read '1_0' as 10 and a full-width '３' as 3.
    if row and not (row.isascii() and row.isdigit() and len(row) <= 18):
        raise UploadError(400, f"the header row must be a row number, not {row[:40]!r}")
    return encoding, int(row) if row else None


def _same(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two tokens; never equal when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _cookie(response: Response, name: str, value: str, options: Options,
            max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="lax", secure=options.behind_https)


def _json_error(exc: UploadError, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": str(exc), **extra, **exc.extra}, status_code=exc.http)


def _download(path: Path, filename: str) -> Response:
    ascii_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in filename)
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Content-Disposition": disposition})


def _run_file(path: Path) -> Response:
    """A run's file; report.html gets a CSP allowing exactly its own inline style."""
    media = MEDIA.get(path.suffix, "application/octet-stream")
    if path.suffix == ".html":
        import re

        page = path.read_text(encoding="utf-8")
        styles = re.findall(r"<style>(.*?)</style>", page, flags=re.S)
        style_src = " ".join(csp_hash(s) for s in styles) or "'none'"
        return HTMLResponse(page, headers={
            "Content-Security-Policy": f"default-src 'none'; style-src {style_src}; "
                                       "img-src data:; base-uri 'none'; form-action 'none'; "
                                       "frame-ancestors 'none'"})
    headers = {}
    if path.suffix in (".csv", ".xlsx", ".md"):
        headers["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return FileResponse(path, media_type=media, headers=headers)


class SecurityHeaders:
    """CSP (no inline script or style), no sniffing, no framing, no referrer, no caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                extra = {b"content-security-policy": CSP.encode(),
                         b"x-content-type-options": b"nosniff",
                         b"x-frame-options": b"DENY", b"referrer-policy": b"no-referrer",
                         b"cache-control": b"no-cache" if static else b"no-store"}
                headers += [(k, v) for k, v in extra.items() if k not in names]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuse request bodies above ``limit`` bytes with 413, counted as they arrive."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = _too_large_response(scope.get("path", ""), self.limit / (1024 * 1024))

            async def nothing() -> Message:
                return {"type": "http.disconnect"}

            await response(scope, nothing, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge()  # the app's handler answers 413
            return message

        await self.app(scope, counting, send)


class TooLarge(Exception):
    """A request body went over the upload limit while it was read."""


def _too_large_response(path: str, mb: float) -> Response:
    text = f"The file is too large: at most {mb:,.0f} MB can be uploaded."
    if path.startswith("/api/"):
        response: Response = JSONResponse({"error": text}, status_code=413)
    else:
        response = HTMLResponse(render("error.html", user=None, csrf="", settings_store=None,
                                       title="File too large", message=text),
                                status_code=413)
    response.headers["Connection"] = "close"
    return response


