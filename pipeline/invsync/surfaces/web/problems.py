"""The JSON API's errors as ``application/problem+json`` (RFC 9457), with stable types.

Every error answer has ``type`` (one of :data:`TYPES`, stable: clients branch on it),
``title`` (the type in words), ``status`` (the HTTP status) and ``detail`` (this case in
words); ``field`` names the request field at fault when there is one, ``upload_id`` and
``upload_status`` the upload concerned. ``error`` repeats ``detail`` for clients of the
API before problems (deprecated).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

PREFIX = "urn:invsync:problem:"
MEDIA_TYPE = "application/problem+json"

TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "The request is not valid"),
    "bad-field": (400, "A field of the request is not valid"),
    "no-credentials": (401, "Sign in or give an API key"),
    "wrong-key": (401, "The API key is not valid"),
    "csrf": (403, "Missing or wrong CSRF token"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "upload-state": (409, "Not possible in the upload's current state"),
    "other-store": (409, "The upload belongs to another store"),
    "store-changed": (409, "The store changed since the preview"),
    "safety-check": (409, "A safety check needs confirming"),
    "store-busy": (409, "The store is busy with another run"),
    "too-large": (413, "The file is too large"),
    "unsupported-media-type": (415, "Send the file as multipart/form-data"),
    "unreadable-file": (422, "The file cannot be read"),
    "preview-failed": (502, "The preview could not be made"),
    "store-permission": (502, "The store refused what invsync needs"),
    "unmapped": (422, "The file's columns are not recognised"),
    "invalid-field": (422, "A field's value is not allowed"),
    "source-busy": (409, "The source is being fetched already"),
    "stale-file": (422, "The source's file is too old, or missing"),
    "file-not-ready": (422, "The source's file is still being written"),
    "source-config": (422, "The source cannot be fetched as it is set up"),
    "source-unreachable": (502, "The source's server could not be reached"),
    "internal": (500, "Internal error"),
}
"""Problem type (after :data:`PREFIX`) -> (HTTP status, title)."""

_BY_STATUS = {400: "bad-request", 401: "no-credentials", 403: "csrf", 404: "not-found",
              405: "method-not-allowed", 409: "upload-state", 413: "too-large",
              415: "unsupported-media-type", 422: "unreadable-file", 500: "internal"}


def kind_for(status: int, kind: str | None = None) -> str:
    """The problem type for an HTTP status (``kind`` when given and known)."""
    if kind in TYPES:
        return str(kind)
    return _BY_STATUS.get(status, "bad-request" if status < 500 else "internal")


def problem(status: int, detail: str, *, kind: str | None = None,
            http_headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An ``application/problem+json`` answer."""
    name = kind_for(status, kind)
    body: dict[str, Any] = {"type": PREFIX + name, "title": TYPES[name][1], "status": status,
                            "detail": detail, "error": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=http_headers)
