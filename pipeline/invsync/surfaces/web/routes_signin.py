"""Signing in and out (the only pages seen without a session)."""

from __future__ import annotations

import logging
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from invsync.surfaces.web.errors import csrf_failed
from invsync.surfaces.web.state import (
    COOKIE,
    PRE_LOGIN,
    page,
    page_user,
    return_path,
    same,
    set_cookie,
    text,
    web,
)

log = logging.getLogger("invsync.web")


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    again = request.query_params.get("again") == "1"
    response = page(request, "login.html", status=status, login_csrf=token, error=error,
                    again=again, next=return_path(request.query_params.get("next")))
    set_cookie(response, PRE_LOGIN, token, web(request).options, max_age=3600)
    return response


async def login_form(request: Request) -> Response:
    return _login_page(request)


async def login(request: Request) -> Response:
    w = web(request)
    form = await request.form(max_files=0, max_fields=10)
    if not same(text(form.get("login_csrf")), request.cookies.get(PRE_LOGIN)):
        return csrf_failed(request)
    user = text(form.get("username")).strip()
    password = text(form.get("password"))
    address = request.client.host if request.client else "?"
    # Checked and counted in one step: parallel guesses cannot all pass the check first.
    wait = w.throttle.begin(user, address)
    if wait > 0:
        response = _login_page(request, 429, f"Too many attempts. Wait {int(wait) + 1} "
                                              f"seconds and try again.")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    ok = await run_in_threadpool(w.accounts.check_password, user, password)
    if not ok:
        log.warning("failed sign-in for %r from %s", user[:64], address)
        return _login_page(request, 401, "Wrong user name or password.")
    w.throttle.succeeded(user, address)
    w.sessions.end(request.cookies.get(COOKIE))
    sid, _ = w.sessions.create(user, stamp=w.accounts.password_stamp(user))
    response = RedirectResponse(return_path(text(form.get("next"))), status_code=303)
    set_cookie(response, COOKIE, sid, w.options)
    response.delete_cookie(PRE_LOGIN, path="/")
    return response


async def logout(request: Request) -> Response:
    await page_user(request, changes_state=True)
    web(request).sessions.end(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


ROUTES = [
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
]
