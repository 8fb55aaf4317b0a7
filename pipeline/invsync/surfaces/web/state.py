"""What every route of the upload page shares (kept on ``app.state.web``), and the helpers
that tell who is asking: the signed-in session, the API key, the CSRF token."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from invsync.html.render import render
from invsync.run.config import Settings
from invsync.surfaces.web.auth import Accounts, Session, Sessions, Throttle
from invsync.surfaces.web.messages import (
    brake_text,
    plain_run_error,
    reason_text,
    run_word,
    upload_word,
)
from invsync.surfaces.web.uploads import ENCODINGS, Portal, UploadError, encoding_label

COOKIE = "invsync_session"
_RETURN = re.compile(r"^/(?:uploads/[0-9a-f]{32}|history|runs/[A-Za-z0-9.\-]{1,64})(?=/|$)")


def return_path(path: str | None) -> str:
    """Where signing in again leads: the upload, history or run page ``path`` was about
    (an apply's POST -> its upload's page), else ``/``; never anywhere off this site."""
    found = _RETURN.match(path or "")
    return found.group(0) if found else "/"
PRE_LOGIN = "invsync_login"


class Options:
    """How the page is served (from ``invsync serve`` flags)."""

    def __init__(self, *, behind_https: bool = False, max_upload_mb: float = 50,
                 idle_minutes: float = 30, max_hours: float = 12) -> None:
        self.behind_https = behind_https
        self.max_upload_bytes = int(max_upload_mb * 1024 * 1024)
        self.idle_s = idle_minutes * 60
        self.max_s = max_hours * 3600


class Unauthorized(Exception):
    """No session and no valid API key (``reason``: why, for the API's answer)."""

    def __init__(self, reason: str = "missing") -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfFailed(Exception):
    pass


@dataclass
class WebState:
    """The app's one store, its accounts, sessions, sign-in throttle and uploads."""

    settings: Settings
    options: Options
    accounts: Accounts
    sessions: Sessions
    throttle: Throttle
    portal: Portal

    @property
    def max_mb(self) -> int:
        return self.options.max_upload_bytes // (1024 * 1024)


def web(request: Request) -> WebState:
    """The shared state of the app serving ``request``."""
    state: WebState = request.app.state.web
    return state


def session_of(request: Request) -> tuple[str, Session] | None:
    """The request's live session (and its id), or None."""
    w = web(request)
    sid = request.cookies.get(COOKIE)
    session = w.sessions.get(sid)
    if session is None:
        return None
    # Removed (invsync portal remove-user) or given a new password since this sign-in
    # (add-user again, e.g. after a leak): either way this session is over.
    if w.accounts.password_stamp(session.user) != session.stamp:
        w.sessions.end(sid)
        return None
    return sid or "", session


def api_user(request: Request, *, changes_state: bool) -> str:
    """Who calls the API: an API key's name, or the signed-in user (CSRF checked)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        name = web(request).accounts.check_key(auth[7:].strip())
        if name is None:
            raise Unauthorized("wrong_key")
        return name
    if auth:
        raise Unauthorized("wrong_scheme")
    found = session_of(request)
    if found is None:
        raise Unauthorized("missing")
    if changes_state and not same(request.headers.get("x-csrf-token"), found[1].csrf):
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
        if not same(text(form.get("csrf_token")), found[1].csrf):
            raise CsrfFailed()
    return found[1], form


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """A page rendered from ``template`` for the request's user."""
    found = session_of(request)
    html = render(template, user=found[1].user if found else None,
                  csrf=found[1].csrf if found else "",
                  settings_store=web(request).settings.store_hash,
                  reason_text=reason_text, brake_text=brake_text, encodings=ENCODINGS,
                  encoding_label=encoding_label, upload_word=upload_word,
                  run_word=run_word, plain_run_error=plain_run_error, **context)
    return HTMLResponse(html, status_code=status)


def text(value: Any) -> str:
    """A form field as text ("" for a file or a missing field)."""
    return value if isinstance(value, str) else ""


def reading_fields(form: Any) -> tuple[str | None, int | None]:
    """The ``encoding`` and ``header_row`` form fields (empty or absent: automatic)."""
    encoding = text(form.get("encoding")).strip() or None
    row = text(form.get("header_row")).strip()
    # ASCII digits only: int() would also read '1_0' as 10 and a full-width '３' as 3.
    if row and not (row.isascii() and row.isdigit() and len(row) <= 18):
        raise UploadError(400, f"the header row must be a row number, not {row[:40]!r}",
                          field="header_row", kind="bad-field")
    return encoding, int(row) if row else None


def same(given: str | None, expected: str | None) -> bool:
    """Constant-time equality of two tokens; never equal when either is missing."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def set_cookie(response: Response, name: str, value: str, options: Options,
               max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="lax", secure=options.behind_https)
