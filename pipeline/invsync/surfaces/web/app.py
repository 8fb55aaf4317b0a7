"""``invsync serve``: the merchant upload page and its JSON API (one code path for both).

Pages are rendered on the server from the shared templates (autoescaped); the only
JavaScript is the project's own ``static/invsync.js`` (drag and drop, progress polling).
Every state-changing request needs the session's CSRF token (a form field, or the
``X-CSRF-Token`` header for the API), or an API key in ``Authorization: Bearer``.

The routes live in ``routes_*`` modules and share :class:`~.state.WebState` through
``app.state.web``.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from invsync.html.render import static_dir
from invsync.run.config import Settings
from invsync.surfaces.web import (
    routes_api,
    routes_history,
    routes_pages,
    routes_signin,
    routes_sources,
)
from invsync.surfaces.web.auth import Accounts, Sessions, Throttle
from invsync.surfaces.web.errors import HANDLERS
from invsync.surfaces.web.middleware import BodyLimit, SecurityHeaders
from invsync.surfaces.web.state import Options, WebState
from invsync.surfaces.web.uploads import Portal

__all__ = ["Options", "create_app"]


def create_app(settings: Settings, options: Options | None = None) -> Starlette:
    """The ASGI app for one store (``settings``); state lives under its state dir."""
    options = options or Options()
    state = WebState(settings=settings, options=options, accounts=Accounts(settings.state_dir),
                     sessions=Sessions(settings.state_dir, idle_s=options.idle_s,
                                       max_s=options.max_s),
                     throttle=Throttle(), portal=Portal(settings))
    routes: list[BaseRoute] = [
        *routes_signin.ROUTES, *routes_pages.ROUTES, *routes_history.ROUTES,
        *routes_api.ROUTES, *routes_sources.ROUTES,
        Mount("/static", app=StaticFiles(directory=str(static_dir())), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders),
                    Middleware(BodyLimit, limit=options.max_upload_bytes)],
        exception_handlers=dict(HANDLERS))
    app.state.web = state
    app.state.portal = state.portal
    app.state.sessions = state.sessions
    return app
