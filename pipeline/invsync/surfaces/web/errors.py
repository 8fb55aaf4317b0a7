"""How errors are answered: a page in plain words, or a problem (RFC 9457) for the API."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from invsync.surfaces.web.middleware import TooLarge, too_large_response
from invsync.surfaces.web.problems import problem
from invsync.surfaces.web.state import COOKIE, CsrfFailed, Unauthorized, page, return_path, web
from invsync.surfaces.web.uploads import UploadError

log = logging.getLogger("invsync.web")


def is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def upload_problem(exc: UploadError, upload_id: str | None = None) -> Response:
    """An :class:`UploadError` as the API's problem answer."""
    extra = dict(exc.extra)
    kind = extra.pop("kind", None)
    return problem(exc.http, str(exc), kind=kind, upload_id=extra.pop("upload_id", upload_id),
                   upload_status=extra.pop("status", None), **extra)


def not_previewed(data: dict[str, Any], *, at_store: bool, location: str,
                  refused: bool = False, internal: bool = False) -> Response:
    """The problem answer for an upload kept but not previewed (``data``: its API shape):
    ``store-permission`` (502) when the store ``refused`` the access token or a scope the
    preview needs, ``preview-failed`` (502) when the store kept failing while the plan was
    made (the file may be fine, and a new preview may work), ``internal`` (500) when the
    server could not keep the preview (its disk), else ``unreadable-file`` (422)."""
    kind, status = ("store-permission", 502) if refused else \
        ("preview-failed", 502) if at_store else \
        ("internal", 500) if internal else ("unreadable-file", 422)
    return problem(status, data.get("error") or "the file could not be previewed", kind=kind,
                   upload_id=data["upload_id"], upload_status=data["status"],
                   http_headers={"Location": location})


def csrf_failed(request: Request) -> Response:
    if is_api(request):
        return problem(403, "missing or wrong CSRF token: send the X-CSRF-Token header of "
                            "the signed-in page, or an API key", kind="csrf",
                       field="X-CSRF-Token")
    return page(request, "error.html", status=403, title="Please try again",
                message="This form has expired or did not come from this page. Go back, "
                        "reload the page and try again.")


async def on_unauthorized(request: Request, exc: Exception) -> Response:
    reason = exc.reason if isinstance(exc, Unauthorized) else "missing"
    if is_api(request):
        if reason == "wrong_key":
            return problem(401, "the API key is not valid (removed, or mistyped)",
                           kind="wrong-key", field="Authorization",
                           http_headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        detail = ("the Authorization header must be 'Bearer <API key>'"
                  if reason == "wrong_scheme" else
                  "sign in, or send an API key as 'Authorization: Bearer <key>'")
        return problem(401, detail, kind="no-credentials", field="Authorization",
                       http_headers={"WWW-Authenticate": "Bearer"})
    # A session that ended while the merchant worked: say so; uploads are kept on disk.
    # Back to the upload after signing in again (its page, whatever the request was).
    back = return_path(request.url.path)
    again = "?again=1" if request.cookies.get(COOKIE) else ""
    if again and back != "/":
        again += "&" + urlencode({"next": back})
    return RedirectResponse(f"/login{again}", status_code=303)


async def on_csrf(request: Request, exc: Exception) -> Response:
    return csrf_failed(request)


async def on_upload_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UploadError)
    if is_api(request):
        return upload_problem(exc, request.path_params.get("upload_id"))
    return page(request, "error.html", status=exc.http, title="Not possible",
                message=sentence(str(exc)))


async def on_http(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if is_api(request):
        if status == 405:
            return problem(405, f"{request.method} is not allowed here",
                           kind="method-not-allowed",
                           http_headers=dict(getattr(exc, "headers", None) or {}))
        return problem(status, "there is no such address in the API")
    if status == 405:
        return page(request, "error.html", status=405, title="Not possible",
                    message="This address cannot be used that way. Go back to the upload page.")
    return page(request, "error.html", status=404, title="Not found",
                message="There is no such page.")


async def on_error(request: Request, exc: Exception) -> Response:
    log.exception("request failed: %s %s", request.method, request.url.path)
    if is_api(request):
        return problem(500, "the request failed; the server log has the details",
                       kind="internal")
    return page(request, "error.html", status=500, title="Something went wrong",
                message="The page could not be shown. The server log has the details.")


async def on_too_large(request: Request, exc: Exception) -> Response:
    return too_large_response(request.url.path, web(request).max_mb)


def sentence(message: str) -> str:
    message = message.strip()
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


HANDLERS = {Unauthorized: on_unauthorized, CsrfFailed: on_csrf, UploadError: on_upload_error,
            TooLarge: on_too_large, HTTPException: on_http, 404: on_http, 405: on_http,
            Exception: on_error}
