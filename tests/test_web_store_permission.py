"""The upload API when the store refuses what a preview needs (its access token, or a scope):
a 502 ``store-permission`` problem whose detail tells the merchant who can fix it, never a
422 "The file cannot be read" (the file is fine). The orders scope (an ``as_of`` upload) is
tested in test_web_as_of.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from misbehaving import Reply, Request, misbehaving_store
from test_web import PASSWORD, CheckedClient, api_upload, login, make_settings

from invsync.run.config import Secret, Settings
from invsync.sandbox.process import SandboxProcess
from invsync.surfaces.web.app import Options, create_app
from invsync.surfaces.web.auth import Accounts

FILE = b"sku,quantity\nTOWEL-907-NAVY-SHEET,5\n"


def _refused_preview(settings: Settings) -> tuple[Any, str]:
    """Upload ``FILE`` through the API with ``settings``: the answer, and the upload's page."""
    Accounts(settings.state_dir).add_user("merchant", PASSWORD)
    with CheckedClient(create_app(settings, Options()), base_url="http://testserver") as c:
        login(c)
        r = api_upload(c, data=FILE)
        view = c.get(r.headers["Location"].removeprefix("/api")).text \
            if "Location" in r.headers else ""
    return r, view


def _is_store_permission(r: Any, view: str) -> str:
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["type"] == "urn:invsync:problem:store-permission", body
    assert body["upload_id"] and body["upload_status"] == "failed", body
    assert "The file itself is fine" in body["detail"], body
    assert "ask whoever set up invsync" in body["detail"], body
    assert "The store did not let invsync read what the preview needs" in view
    assert "This file could not be used" not in view
    return str(body["detail"])


def test_a_token_the_store_refuses_is_a_store_permission_problem(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    settings = replace(make_settings(sandbox, tmp_path), token=Secret("not-the-token"))
    r, view = _refused_preview(settings)
    detail = _is_store_permission(r, view)
    assert "HTTP 401" in detail and "did not accept invsync's access token" in detail
    assert "not-the-token" not in r.text + view


def _forbid_locations() -> Callable[[Request], Reply | None]:
    def respond(req: Request) -> Reply | None:
        if req.method == "GET" and req.path == "/inventory/locations":
            return Reply.json(403, {"title": "You don't have a required scope"})
        return None

    return respond


def test_a_token_without_the_inventory_scope_is_a_store_permission_problem(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    with misbehaving_store(_forbid_locations(), sandbox.url) as store:
        settings = replace(make_settings(sandbox, tmp_path), api_url=store.url)
        r, view = _refused_preview(settings)
    detail = _is_store_permission(r, view)
    assert "HTTP 403" in detail and "store_locations_read_only" in detail
    assert "give the store's API account this permission" in detail
    assert "without an as_of time" not in detail  # no as_of: not the orders scope
