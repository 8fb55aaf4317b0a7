"""Security headers on every answer, and the upload size limit counted as bytes arrive."""

from __future__ import annotations

from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from invsync.html.render import render
from invsync.surfaces.web.problems import problem

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


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


class TooLarge(Exception):
    """A request body went over the upload limit while it was read."""


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
            # Refused before any of the body is read.
            response = too_large_response(scope.get("path", ""), self.limit / (1024 * 1024))

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


def too_large_response(path: str, mb: float) -> Response:
    """413 for the page (a page in words) or the API (a problem)."""
    text = f"The file is too large: at most {mb:,.0f} MB can be uploaded."
    if path.startswith("/api/"):
        response: Response = problem(413, text, kind="too-large", field="file")
    else:
        response = HTMLResponse(render("error.html", user=None, csrf="", settings_store=None,
                                       title="File too large", message=text),
                                status_code=413)
    response.headers["Connection"] = "close"
    return response
