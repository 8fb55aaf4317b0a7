"""The JSON API's ``as_of`` upload field (issue 21): checked when the file arrives, used for
the upload's preview (file − sold since as-of), never for the apply, which pushes the plan."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_orders import iso, place, put_levels
from test_web import PASSWORD, CheckedClient, api_upload, csrf_of, login, make_settings, wait_done

from invsync.sandbox.process import SandboxProcess
from invsync.surfaces.web.app import Options, create_app
from invsync.surfaces.web.auth import Accounts


@pytest.fixture
def client(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[CheckedClient]:
    settings = make_settings(sandbox, tmp_path)
    Accounts(settings.state_dir).add_user("merchant", PASSWORD)
    with CheckedClient(create_app(settings, Options()), base_url="http://testserver") as c:
        yield c


NOW = datetime.now(UTC)
SKU = "TOWEL-907-NAVY-SHEET"


@pytest.mark.parametrize(("value", "words"), [
    ("mtime", "cannot be 'mtime' for an upload"),
    ("2026-12-06T02:00:00", "no time zone offset"),
    ("yesterday", "is not a time"),
    (iso(NOW + timedelta(hours=2)), "is in the future"),
    (iso(NOW - timedelta(hours=49)), "older than max_as_of_age"),
], ids=["mtime", "no-offset", "not-a-time", "future", "too-old"])  # stable ids: xdist workers
def test_a_bad_as_of_is_a_422_naming_the_field_and_keeps_nothing(
        client: CheckedClient, value: str, words: str) -> None:
    login(client)
    r = api_upload(client, as_of=value)
    assert r.status_code == 422, r.text
    body = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert body["field"] == "as_of" and words in body["detail"], body
    assert "--as-of" not in body["detail"] and "nothing was sent" not in body["detail"]
    assert client.get("/api/uploads").json()["total"] == 0  # refused before it was kept


def test_as_of_preview_subtracts_what_sold_and_apply_pushes_that_plan(
        client: CheckedClient, sandbox: SandboxProcess) -> None:
    put_levels(sandbox, [{"location_id": 1, "sku": SKU, "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    place(sandbox, [{"sku": SKU, "quantity": 2}], as_of + timedelta(minutes=5))  # 20 -> 18
    place(sandbox, [{"sku": SKU, "quantity": 3}], as_of - timedelta(minutes=5))  # in the file
    login(client)
    r = api_upload(client, data=f"sku,quantity\n{SKU},10\n".encode(), location_id="1",
                   as_of=iso(as_of))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["as_of"] == iso(as_of)
    assert [(c["item"], c["new"]) for c in body["changes"]] == [(SKU, 8)]
    assert len(body["sold_since"]) == 1, body["sold_since"]
    assert re.fullmatch(rf"{SKU} at location 1: file 10 − 2 sold since [\d: -]+ = 8",
                        body["sold_since"][0]), body["sold_since"]
    page = client.get(f"/uploads/{body['upload_id']}").text
    assert 'id="sold-since"' in page and "file 10 − 2 sold since" in page
    assert sandbox.levels()[(1, SKU)] == 15  # the preview sent nothing
    applied = client.post(f"/api/uploads/{body['upload_id']}/apply",
                          headers={"X-CSRF-Token": csrf_of(client)})
    assert applied.status_code == 202, applied.text
    done = wait_done(client, body["upload_id"])
    assert done["status"] == "succeeded", done
    assert sandbox.levels()[(1, SKU)] == 8


def test_without_as_of_the_upload_is_as_before(client: CheckedClient,
                                              sandbox: SandboxProcess) -> None:
    put_levels(sandbox, [{"location_id": 1, "sku": SKU, "quantity": 20}])
    place(sandbox, [{"sku": SKU, "quantity": 2}], NOW - timedelta(minutes=5))
    login(client)
    body = api_upload(client, data=f"sku,quantity\n{SKU},10\n".encode()).json()
    assert body["as_of"] is None and body["sold_since"] == []
    assert [(c["item"], c["new"]) for c in body["changes"]] == [(SKU, 10)]


def test_a_token_without_the_orders_scope_says_so_and_sends_nothing(
        sandbox_factory: Any, tmp_path: Path) -> None:
    sb = sandbox_factory("--no-orders-scope")
    put_levels(sb, [{"location_id": 1, "sku": SKU, "quantity": 20}])
    settings = make_settings(sb, tmp_path)
    Accounts(settings.state_dir).add_user("merchant", PASSWORD)
    with CheckedClient(create_app(settings, Options()), base_url="http://testserver") as c:
        login(c)
        r = api_upload(c, data=f"sku,quantity\n{SKU},10\n".encode(),
                       as_of=iso(NOW - timedelta(hours=1)))
        # Not "the file cannot be read": the file is fine, the store refused a scope.
        assert r.status_code == 502, r.text
        body = r.json()
        assert body["type"] == "urn:invsync:problem:store-permission", body
        assert body["title"] == "The store refused what invsync needs"
        detail = body["detail"]
        assert "cannot read orders" in detail
        assert "an as_of time needs the scope" in detail and "Orders: read-only" in detail
        assert "The file itself is fine" in detail and "ask whoever set up invsync" in detail
        assert "without an as_of time" in detail
        assert "--" not in detail
        upload_id = body["upload_id"]
        assert r.headers["Location"] == f"/api/uploads/{upload_id}"
        # The page says the same to the merchant, and offers to preview again.
        view = c.get(f"/uploads/{upload_id}").text
        assert "The store did not let invsync read what the preview needs" in view
        assert "This file could not be used" not in view
        assert 'id="preview-again"' in view
    assert sb.levels()[(1, SKU)] == 20
