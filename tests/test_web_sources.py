"""'Fetch now' on the upload page and in the JSON API: a configured source's file lands as an
upload to preview; refusals are in plain words (handlers through TestClient, a real sandbox)."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from test_web import PASSWORD, CheckedClient, csrf_of, login, make_settings

from invsync.run.config import Settings
from invsync.sandbox.process import SandboxProcess
from invsync.sources import SourceState, check_sources, fetch, resolve
from invsync.surfaces.web import routes_sources
from invsync.surfaces.web.app import Options, create_app
from invsync.surfaces.web.auth import Accounts

CSV = b"sku,quantity\nTOWEL-907-NAVY-SHEET,5\nTOWEL-907-BURG-BATH,7\n"
SECRET = "s3cr3t-header-value-7f1c"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    folder = tmp_path / "drop-folder-private"
    folder.mkdir()
    (folder / "stock_0612.csv").write_bytes(CSV)
    return folder


@pytest.fixture
def settings(sandbox: SandboxProcess, tmp_path: Path, drop: Path) -> Settings:
    s = make_settings(sandbox, tmp_path)
    Accounts(s.state_dir).add_user("merchant", PASSWORD)
    sources = check_sources({
        "drop": {"url": f"{drop}/stock_*.csv", "pick": "newest", "settle_s": 0},
        "old": {"url": f"{drop}/old_*.csv", "settle_s": 0, "max_age": "1h"},
        "feed": {"url": f"http://127.0.0.1:{_closed_port()}/export?token={SECRET}",
                 "headers": {"Authorization": f"Bearer {SECRET}"}, "timeout_s": 2},
    })
    return replace(s, sources=sources)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with CheckedClient(create_app(settings, Options()), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def signed_in(client: TestClient) -> TestClient:
    assert login(client).status_code == 303
    return client


def _fetch_page(client: TestClient, name: str, **fields: str) -> Any:
    return client.post(f"/sources/{name}/fetch", data={"csrf_token": csrf_of(client), **fields},
                       follow_redirects=False)


def _fetch_api(client: TestClient, name: str, query: str = "") -> Any:
    return client.post(f"/api/sources/{name}/fetch{query}",
                       headers={"X-CSRF-Token": csrf_of(client)})


def _no_secrets(text: str, drop: Path) -> None:
    assert SECRET not in text
    assert str(drop) not in text and "drop-folder-private" not in text
    assert "127.0.0.1" not in text and "exit" not in text.lower()


def test_the_page_lists_sources_by_name_and_fetch_now_lands_a_previewed_upload(
        signed_in: TestClient, drop: Path) -> None:
    home = signed_in.get("/")
    assert re.search(r'<section id="sources"', home.text)
    for name in ("drop", "old", "feed"):
        assert f'action="/sources/{name}/fetch"' in home.text
    _no_secrets(home.text, drop)

    answer = _fetch_page(signed_in, "drop")
    assert answer.status_code == 303
    upload_id = answer.headers["location"].rsplit("/", 1)[-1]
    view = signed_in.get(answer.headers["location"])
    assert view.status_code == 200 and "stock_0612.csv" in view.text
    assert re.search(r'id="fetched-from">from the source <strong>drop</strong>', view.text)
    data = signed_in.get(f"/api/uploads/{upload_id}").json()
    assert data["status"] == "planned" and data["filename"] == "stock_0612.csv"
    assert data["uploaded_by"] == "merchant"
    assert {c["item"] for c in data["changes"]} <= {"TOWEL-907-NAVY-SHEET", "TOWEL-907-BURG-BATH"}
    assert data["source"]["name"] == "drop" and data["source"]["file"] == "stock_0612.csv"
    assert data["source"]["size"] == len(CSV)
    _no_secrets(str(data), drop)
    # A preview only: the file is still at the source, nothing was applied.
    assert (drop / "stock_0612.csv").exists() and "run_id" not in data


def test_fetch_now_needs_the_forms_csrf_token_and_a_sign_in(client: TestClient) -> None:
    assert client.post("/sources/drop/fetch", follow_redirects=False).status_code == 303  # login
    assert client.post("/api/sources/drop/fetch").status_code == 401
    login(client)
    refused = client.post("/sources/drop/fetch", data={"csrf_token": "wrong"},
                          follow_redirects=False)
    assert refused.status_code == 403
    assert client.post("/api/sources/drop/fetch").status_code == 403
    assert client.get("/api/uploads").json()["total"] == 0


def test_api_lists_names_and_fetch_answers_201_with_the_upload(signed_in: TestClient,
                                                               drop: Path) -> None:
    listed = signed_in.get("/api/sources")
    assert listed.json() == {"items": [{"name": "drop"}, {"name": "feed"}, {"name": "old"}]}
    _no_secrets(listed.text, drop)
    made = _fetch_api(signed_in, "drop")
    assert made.status_code == 201, made.text
    assert made.headers["location"] == f"/api/uploads/{made.json()['upload_id']}"
    assert made.json()["status"] == "planned" and made.json()["source"]["name"] == "drop"
    _no_secrets(made.text, drop)


def test_an_unchanged_file_says_since_when_and_force_fetches_it_anyway(
        signed_in: TestClient, settings: Settings, drop: Path) -> None:
    spec = resolve("drop", settings.sources)
    SourceState(settings.state_dir, spec).remember(fetch(spec, settings.state_dir),
                                                   "20261206T020000Z-nightly")
    page = _fetch_page(signed_in, "drop")
    assert page.status_code == 200
    assert "the file has not changed since the last run on" in page.text
    assert "Fetch it anyway" in page.text
    api = _fetch_api(signed_in, "drop")
    assert api.status_code == 200 and api.json()["status"] == "unchanged"
    assert api.json()["unchanged_since"] == "20261206T020000Z-nightly"
    assert signed_in.get("/api/uploads").json()["total"] == 0
    again = _fetch_page(signed_in, "drop", force="yes")
    assert again.status_code == 303
    assert _fetch_api(signed_in, "drop", "?force=true").status_code == 201
    assert signed_in.get("/api/uploads").json()["total"] == 2


def test_refusals_are_plain_words_with_problem_types(signed_in: TestClient, drop: Path) -> None:
    unknown = _fetch_api(signed_in, "nope")
    assert unknown.status_code == 404
    old = drop / "old_1.csv"
    old.write_bytes(CSV)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    stale = _fetch_api(signed_in, "old")
    assert stale.status_code == 422
    assert stale.json()["type"].endswith(":stale-file")
    assert "older than allowed" in stale.json()["detail"] and "old_1.csv" in stale.json()["detail"]
    page = _fetch_page(signed_in, "old")
    assert page.status_code == 422 and "the file is older than allowed" in page.text
    old.unlink()
    missing = _fetch_api(signed_in, "old")
    assert missing.status_code == 422 and "no file was found" in missing.json()["detail"]
    unreachable = _fetch_api(signed_in, "feed")
    assert unreachable.status_code == 502
    assert unreachable.json()["type"].endswith(":source-unreachable")
    page = _fetch_page(signed_in, "feed")
    assert page.status_code == 502 and "the server could not be reached" in page.text
    for answer in (stale, missing, unreachable, page):
        _no_secrets(answer.text, drop)
    assert signed_in.get("/api/uploads").json()["total"] == 0


def test_a_second_fetch_of_a_source_in_progress_is_refused(signed_in: TestClient,
                                                           settings: Settings) -> None:
    key = (str(settings.state_dir), resolve("drop", settings.sources).key)
    routes_sources._busy.add(key)
    try:
        busy = _fetch_api(signed_in, "drop")
    finally:
        routes_sources._busy.discard(key)
    assert busy.status_code == 409 and busy.json()["type"].endswith(":source-busy")
    assert _fetch_api(signed_in, "drop").status_code == 201


def test_a_feed_without_a_suffix_is_read_as_csv(signed_in: TestClient, settings: Settings,
                                                tmp_path: Path) -> None:
    """A Google Sheets link (…/pub?output=csv) names no .csv: the upload gets one."""
    feed = tmp_path / "pub"
    feed.write_bytes(CSV)
    w = signed_in.app.state.web  # type: ignore[attr-defined]
    w.settings = replace(w.settings, sources={**settings.sources, **check_sources(
        {"sheet": {"url": str(feed), "settle_s": 0}})})
    made = _fetch_api(signed_in, "sheet")
    assert made.status_code == 201, made.text
    assert made.json()["filename"] == "pub.csv"


def test_a_file_still_being_written_or_ambiguous_or_too_large_makes_no_upload(
        sandbox: SandboxProcess, tmp_path: Path, drop: Path) -> None:
    s = make_settings(sandbox, tmp_path)
    Accounts(s.state_dir).add_user("merchant", PASSWORD)
    (drop / "stock_0613.csv").write_bytes(CSV)
    s = replace(s, sources=check_sources({
        "marked": {"url": f"{drop}/stock_0612.csv", "marker": ".done", "settle_timeout_s": 0.3},
        "two": {"url": f"{drop}/stock_*.csv", "settle_s": 0},
        "big": {"url": f"{drop}/stock_0612.csv", "settle_s": 0},
        "<b>odd name</b>": {"url": f"{drop}/stock_0612.csv", "settle_s": 0},
    }))
    app = create_app(s, Options())
    with CheckedClient(app, base_url="http://testserver") as client:
        login(client)
        app.state.web.options.max_upload_bytes = 20  # what --max-upload-mb sets (in MB)
        home = client.get("/")
        assert "<b>odd name</b>" not in home.text and "&lt;b&gt;odd name&lt;/b&gt;" in home.text
        not_ready = _fetch_api(client, "marked")
        assert not_ready.status_code == 422
        assert not_ready.json()["type"].endswith(":file-not-ready")
        assert "still being written" in not_ready.json()["detail"]
        two = _fetch_page(client, "two")
        assert two.status_code == 422 and "several files match" in two.text
        assert "--pick" not in two.text
        big = _fetch_api(client, "big")
        assert big.status_code == 413 and big.json()["type"].endswith(":too-large")
        odd = _fetch_page(client, "%3Cb%3Eodd%20name%3C%2Fb%3E")
        assert odd.status_code == 413 and "<b>odd name</b>" not in odd.text
        for answer in (not_ready, two, big):
            _no_secrets(answer.text, drop)
        assert client.get("/api/uploads").json()["total"] == 0


def test_without_sources_the_page_has_no_section_and_says_why_a_fetch_fails(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    s = make_settings(sandbox, tmp_path)
    Accounts(s.state_dir).add_user("merchant", PASSWORD)
    with CheckedClient(create_app(s, Options()), base_url="http://testserver") as client:
        login(client)
        assert 'id="sources"' not in client.get("/").text
        assert client.get("/api/sources").json() == {"items": []}
        page = _fetch_page(client, "warehouse")
        assert page.status_code == 404 and "There is no source named" in page.text


def test_an_api_key_fetches_without_a_session(client: TestClient, settings: Settings) -> None:
    key = Accounts(settings.state_dir).add_key("erp")
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/sources", headers=auth).status_code == 200
    made = client.post("/api/sources/drop/fetch", headers=auth)
    assert made.status_code == 201 and made.json()["uploaded_by"] == "key:erp"
    wrong = client.post("/api/sources/drop/fetch", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_an_applied_fetch_is_the_sources_last_run(signed_in: TestClient, settings: Settings,
                                                  drop: Path) -> None:
    """Once applied, the same file is "unchanged" for the next fetch (and `sync NAME`)."""
    made = _fetch_api(signed_in, "drop").json()
    applied = signed_in.post(f"/api/uploads/{made['upload_id']}/apply",
                             headers={"X-CSRF-Token": csrf_of(signed_in)})
    assert applied.status_code == 202
    signed_in.app.state.portal.wait(made["upload_id"], 60)  # type: ignore[attr-defined]
    done = signed_in.get(f"/api/uploads/{made['upload_id']}").json()
    assert done["status"] in ("succeeded", "partial"), done
    again = _fetch_api(signed_in, "drop")
    assert again.status_code == 200 and again.json()["unchanged_since"] == done["run_id"]
    spec = resolve("drop", settings.sources)
    assert fetch(spec, settings.state_dir).unchanged_since == done["run_id"]
    assert (drop / "stock_0612.csv").exists()  # on_success is not the page's to apply
    # A new export is fetched again.
    (drop / "stock_0612.csv").write_bytes(CSV.replace(b",5\n", b",6\n"))
    assert _fetch_api(signed_in, "drop").status_code == 201


def test_a_fetched_file_with_unknown_columns_goes_to_the_map_step(
        signed_in: TestClient, settings: Settings, tmp_path: Path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_bytes(b"article,count\nTOWEL-907-NAVY-SHEET,5\n")
    w = signed_in.app.state.web  # type: ignore[attr-defined]
    w.settings = replace(w.settings, sources={**settings.sources, **check_sources(
        {"odd": {"url": str(odd), "settle_s": 0}})})
    api = _fetch_api(signed_in, "odd")
    assert api.status_code == 422 and api.json()["type"].endswith(":unmapped")
    assert api.headers["location"] == f"/api/uploads/{api.json()['upload_id']}"
    page = _fetch_page(signed_in, "odd", force="yes")
    assert page.status_code == 303 and page.headers["location"].endswith("/map")
