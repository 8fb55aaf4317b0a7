"""The upload page's handlers through starlette's TestClient, against a real sandbox store."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from conftest import ROOT, SAMPLE, TOKEN, output
from starlette.testclient import TestClient

from invsync.contracts import load
from invsync.run.config import Secret, Settings
from invsync.sandbox.process import SandboxProcess, wait_for_listening
from invsync.surfaces.web.app import Options, create_app
from invsync.surfaces.web.auth import Accounts

PASSWORD = "correct horse battery"
OPENAPI = load("upload-api.openapi.json")


def _operation(method: str, path: str) -> dict[str, Any] | None:
    for template, item in OPENAPI["paths"].items():
        pattern = "^" + re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return dict(item[method.lower()])
    return None


def check_api_answer(method: str, path: str, response: Any) -> None:
    """Every answer of the JSON API is one the OpenAPI document describes, in its shape."""
    if not path.startswith("/api/"):
        return
    status = str(response.status_code)
    op = _operation(method, path)
    if op is None:  # an unknown address or method: still a problem in the documented shape
        assert status in ("404", "405"), (method, path, status)
        spec: dict[str, Any] = {"content": {"application/problem+json": {
            "schema": {"$ref": "#/components/schemas/Problem"}}}}
    else:
        assert status in op["responses"], f"{method} {path} answered {status}: undocumented"
        spec = op["responses"][status]
    content = spec.get("content") or {}
    if not content:
        assert not response.content
        return
    if "*/*" in content:
        return
    media = response.headers["content-type"].split(";")[0].strip()
    assert media in content, (method, path, status, media)
    schema = {**content[media]["schema"], "components": OPENAPI["components"]}
    jsonschema.Draft202012Validator(schema).validate(response.json())
    for header in spec.get("headers") or {}:
        assert header.lower() in response.headers, (method, path, header)


class CheckedClient(TestClient):
    """A TestClient that checks every API answer against the OpenAPI document."""

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        response = super().request(method, url, *args, **kwargs)
        check_api_answer(method, urlsplit(str(url)).path, response)
        return response
CSV = b"sku,quantity\nTOWEL-907-NAVY-SHEET,5\nTOWEL-907-BURG-BATH,7\nNOPE-1,abc\n"


def make_settings(sb: SandboxProcess, tmp_path: Path) -> Settings:
    return Settings(store_hash=sb.store_hash, token=Secret(TOKEN), api_url=sb.url,
                    state_dir=tmp_path / "state")


@pytest.fixture
def settings(sandbox: SandboxProcess, tmp_path: Path) -> Settings:
    s = make_settings(sandbox, tmp_path)
    Accounts(s.state_dir).add_user("merchant", PASSWORD)
    return s


@pytest.fixture
def app_factory(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**options: Any) -> TestClient:
        scheme = "https" if options.get("behind_https") else "http"
        client = CheckedClient(create_app(settings, Options(**options)),
                            base_url=f"{scheme}://testserver")
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def client(app_factory: Callable[..., TestClient]) -> TestClient:
    return app_factory()


def login(client: TestClient, user: str = "merchant", password: str = PASSWORD) -> Any:
    page = client.get("/login")
    token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert token
    return client.post("/login", data={"username": user, "password": password,
                                       "login_csrf": token.group(1)}, follow_redirects=False)


def csrf_of(client: TestClient) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/").text)
    assert found
    return found.group(1)


def api_upload(client: TestClient, data: bytes = CSV, name: str = "stock.csv",
               headers: dict[str, str] | None = None, **fields: Any) -> Any:
    return client.post("/api/uploads", files={"file": (name, io.BytesIO(data), "text/csv")},
                       data=fields, headers=headers or {"X-CSRF-Token": csrf_of(client)})


def wait_done(client: TestClient, upload_id: str) -> dict[str, Any]:
    client.app.state.portal.wait(upload_id, 60)  # type: ignore[attr-defined]
    return dict(client.get(f"/api/uploads/{upload_id}").json())


# --------------------------------------------------------------------------- sign-in


def test_pages_and_api_need_a_sign_in(client: TestClient) -> None:
    for path in ("/", "/history", "/uploads/" + "0" * 32):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login"
    r = client.get("/api/uploads/" + "0" * 32)
    assert r.status_code == 401
    r = client.post("/api/uploads", files={"file": ("a.csv", io.BytesIO(CSV), "text/csv")})
    assert r.status_code == 401


def test_login_sets_a_safe_cookie_and_errors_are_generic(
        app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(behind_https=True)
    wrong_user = login(client, "nobody", PASSWORD)
    wrong_password = login(client, "merchant", "not the password")
    assert wrong_user.status_code == wrong_password.status_code == 401
    assert "Wrong user name or password." in wrong_user.text
    assert wrong_user.text.count("Wrong") == wrong_password.text.count("Wrong") == 1
    ok = login(client)
    assert ok.status_code == 303
    cookie = next(v for k, v in ok.headers.multi_items()
                  if k == "set-cookie" and v.startswith("invsync_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    plain = app_factory()
    cookie = next(v for k, v in login(plain).headers.multi_items()
                  if k == "set-cookie" and v.startswith("invsync_session="))
    assert "Secure" not in cookie


def test_login_is_throttled_after_five_failures(client: TestClient) -> None:
    codes = [login(client, "merchant", f"wrong-{i}").status_code for i in range(5)]
    assert codes == [401] * 5
    blocked = login(client)  # even the right password waits now
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    assert "Too many attempts" in blocked.text


def test_login_form_needs_its_csrf_token(client: TestClient) -> None:
    client.get("/login")
    r = client.post("/login", data={"username": "merchant", "password": PASSWORD},
                    follow_redirects=False)
    assert r.status_code == 403
    assert "invsync_session" not in r.headers.get("set-cookie", "")


def test_sessions_expire_when_idle(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(idle_minutes=0.0001)  # 6 ms
    assert login(client).status_code == 303
    import time

    time.sleep(0.05)  # the point: idle for longer than the session may be
    assert client.get("/", follow_redirects=False).status_code == 303


def test_removed_user_is_signed_out(client: TestClient, settings: Settings) -> None:
    login(client)
    assert client.get("/", follow_redirects=False).status_code == 200
    Accounts(settings.state_dir).remove_user("merchant")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_users_file_is_private_and_holds_no_password(settings: Settings) -> None:
    path = settings.state_dir / "portal" / "users.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in path.read_text()
    assert Accounts(settings.state_dir).check_password("merchant", PASSWORD)
    assert not Accounts(settings.state_dir).check_password("merchant", PASSWORD + "x")


def test_portal_cli_reads_password_from_stdin_and_keys_are_shown_once(tmp_path: Path) -> None:
    state = str(tmp_path / "st")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "invsync", "portal", *args,
                               "--state-dir", state], input=stdin, capture_output=True,
                              text=True, cwd=ROOT, timeout=60)

    added = run("add-user", "alice", stdin="s3cret-pass\n")
    assert added.returncode == 0, added.stderr
    assert "s3cret-pass" not in output(added)
    assert run("add-user", "bob", stdin="short\n").returncode == 64
    listed = run("list-users")
    assert listed.stdout.split()[0] == "alice"
    key = run("add-key", "erp").stdout.strip()
    assert key.startswith("isk_")
    assert key not in (tmp_path / "st" / "portal" / "keys.json").read_text()
    assert Accounts(tmp_path / "st").check_key(key) == "key:erp"
    assert Accounts(tmp_path / "st").check_key(key[:-1] + "x") is None
    assert run("remove-user", "alice").returncode == 0
    assert run("remove-user", "alice").returncode == 64
    assert run("list-users").stdout.strip() == ""


# --------------------------------------------------------------------------- CSRF


def test_state_changing_requests_need_the_csrf_token(client: TestClient) -> None:
    login(client)
    files = {"file": ("stock.csv", io.BytesIO(CSV), "text/csv")}
    assert client.post("/api/uploads", files=files).status_code == 403
    assert client.post("/api/uploads", files=files,
                       headers={"X-CSRF-Token": "forged"}).status_code == 403
    r = client.post("/uploads", files={"file": ("stock.csv", io.BytesIO(CSV), "text/csv")},
                    data={"csrf_token": "forged"})
    assert r.status_code == 403
    r = client.post("/logout", data={}, follow_redirects=False)
    assert r.status_code == 403
    portal = client.app.state.portal  # type: ignore[attr-defined]
    assert portal.recent() == []  # nothing was stored
    created = api_upload(client)
    assert created.status_code == 201
    upload_id = created.json()["upload_id"]
    assert client.post(f"/api/uploads/{upload_id}/apply").status_code == 403
    assert client.post(f"/uploads/{upload_id}/apply", data={"csrf_token": "x"}).status_code == 403
    assert client.get(f"/api/uploads/{upload_id}").json()["status"] == "planned"


# --------------------------------------------------------------------------- API


def test_api_upload_preview_apply_and_result(client: TestClient,
                                             sandbox: SandboxProcess) -> None:
    login(client)
    r = api_upload(client, location_id="1")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "planned"
    assert re.fullmatch(r"[0-9a-f]{32}", body["upload_id"])
    assert body["counts"]["rows"] == 3 and body["counts"]["invalid"] == 1
    assert body["changes_total"] == 2, body["changes"]
    assert {(c["location_id"], c["item"], c["new"]) for c in body["changes"]} == {
        (1, "TOWEL-907-NAVY-SHEET", 5), (1, "TOWEL-907-BURG-BATH", 7)}
    assert all(c["old"] in (0, None) for c in body["changes"])  # live "Now" (or none)
    assert [(x["row"], x["reason"]) for x in body["rejected"]] == [(4, "quantity_not_whole")]
    assert body["rejected"][0]["message"] and body["rejected"][0]["action"]
    assert body["brakes"] == [] and "run_id" not in body
    assert sandbox.levels() == {}  # a preview sends nothing
    upload_id = body["upload_id"]
    for name in ("plan.csv", "rejected.csv", "report.html"):
        assert client.get(f"/api/uploads/{upload_id}/files/{name}").status_code == 200
    assert client.get(f"/api/uploads/{upload_id}/files/rejected.xlsx").status_code == 404
    applied = client.post(f"/api/uploads/{upload_id}/apply",
                          headers={"X-CSRF-Token": csrf_of(client)})
    assert applied.status_code == 202
    assert applied.json()["status"] in ("applying", "succeeded", "partial")
    done = wait_done(client, upload_id)
    assert done["status"] == "partial"  # the bad row stays rejected
    assert done["run_id"] and len(done["transaction_ids"]) == 1
    assert done["counts"]["accepted"] == 2
    assert sandbox.levels() == {(1, "TOWEL-907-NAVY-SHEET"): 5, (1, "TOWEL-907-BURG-BATH"): 7}
    again = client.post(f"/api/uploads/{upload_id}/apply",
                        headers={"X-CSRF-Token": csrf_of(client)})
    assert again.status_code == 409 and again.json()["upload_status"] == "partial"
    # The run is in the history with who uploaded it and the file's own name.
    history = client.get("/history").text
    assert "merchant" in history and "stock.csv" in history
    assert "applied, some rows left out" in history  # the words of the upload's own page
    report = json.loads(Path(client.app.state.portal.get(upload_id)["run_dir"],  # type: ignore
                             "report.json").read_text())
    assert report["origin"] == {"source": "portal", "user": "merchant", "filename": "stock.csv",
                                "upload_id": upload_id}


def test_api_key_works_without_csrf_and_a_bad_key_does_not(
        client: TestClient, settings: Settings) -> None:
    key = Accounts(settings.state_dir).add_key("erp")
    r = api_upload(client, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201
    bad = api_upload(client, headers={"Authorization": f"Bearer {key}x"})
    assert bad.status_code == 401


def test_stale_plan_is_refused_with_409(client: TestClient, sandbox: SandboxProcess,
                                        settings: Settings, tmp_path: Path) -> None:
    login(client)
    upload_id = api_upload(client).json()["upload_id"]
    # The preview (its live read) is done before the store changes, or there is no race.
    assert wait_done(client, upload_id)["status"] == "planned"
    # Meanwhile a CLI run sets one of the planned items.
    from invsync.run.sync import sync_file

    other = tmp_path / "nightly.csv"
    other.write_text("sku,quantity\nTOWEL-907-NAVY-SHEET,9\n")
    assert sync_file(other, settings).status == "succeeded"
    before = len(sandbox.requests())
    r = client.post(f"/api/uploads/{upload_id}/apply", headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 202
    done = wait_done(client, upload_id)
    assert done["status"] == "stale"
    assert [q for q in sandbox.requests()[before:] if q["method"] == "PUT"] == []
    again = client.post(f"/api/uploads/{upload_id}/apply",
                        headers={"X-CSRF-Token": csrf_of(client)})
    assert again.status_code == 409 and again.json()["upload_status"] == "stale"
    # Preview again: a fresh plan from the current levels, which can then be applied.
    r = client.post(f"/uploads/{upload_id}/preview", data={"csrf_token": csrf_of(client)})
    assert r.status_code == 200
    fresh = client.get(f"/api/uploads/{upload_id}").json()
    assert fresh["status"] == "planned" and "run_id" not in fresh
    assert {(c["item"], c["old"]) for c in fresh["changes"]} >= {("TOWEL-907-NAVY-SHEET", 9)}


def test_an_ods_upload_previews_like_any_spreadsheet(client: TestClient) -> None:
    # The page takes .ods as the docs say (a LibreOffice file made for the ingest tests).
    login(client)
    data = (ROOT / "tests" / "data" / "hostile" / "no-mimetype.ods").read_bytes()
    r = client.post("/api/uploads", files={"file": ("Lager.ods", io.BytesIO(data),
                                                    "application/vnd.oasis.opendocument.spreadsheet")},
                    headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 201, r.text
    done = wait_done(client, r.json()["upload_id"])
    assert done["status"] in ("planned", "partial"), done.get("error")
    assert done["counts"]["rows"] == 3


CORPUS_XLSB = ROOT.parent / "shared" / "corpus" / "xl" / "cal_issues.xlsb"


@pytest.mark.skipif(not CORPUS_XLSB.is_file(), reason="the shared corpus is not beside the clone")
def test_an_xlsb_upload_is_read_as_a_workbook(client: TestClient) -> None:
    # No program here writes .xlsb; a real one from the shared corpus (not a stock file:
    # the page must read it and ask for its columns, never refuse it as an unknown kind).
    login(client)
    r = client.post("/api/uploads", files={"file": ("export.xlsb", io.BytesIO(
        CORPUS_XLSB.read_bytes()), "application/vnd.ms-excel.sheet.binary.macroEnabled.12")},
        headers={"X-CSRF-Token": csrf_of(client)})
    # Read as a workbook: its columns are not a stock file's, so the API asks for the map.
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"] == "urn:invsync:problem:unmapped", body
    text = json.dumps(body).lower()
    assert "not csv or excel" not in text and "calamine" not in text


def test_upload_size_limit(app_factory: Callable[..., TestClient]) -> None:
    client = app_factory(max_upload_mb=0.01)  # about 10 KB
    login(client)
    big = b"sku,quantity\n" + b"".join(b"SKU-%06d,1\n" % i for i in range(2000))
    r = api_upload(client, data=big)
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert client.app.state.portal.recent() == []  # type: ignore[attr-defined]


def test_files_need_auth_and_ids_are_not_paths(client: TestClient) -> None:
    login(client)
    upload_id = api_upload(client).json()["upload_id"]
    stored = list((client.app.state.portal.dir / upload_id).iterdir())  # type: ignore
    assert sorted(p.name for p in stored) == ["meta.json", "upload.csv"]
    assert client.get(f"/uploads/{upload_id}/files/original").content == CSV
    anonymous = TestClient(client.app)
    for path in (f"/uploads/{upload_id}/files/original", f"/api/uploads/{upload_id}/files/plan.csv",
                 f"/uploads/{upload_id}/files/report.html"):
        assert anonymous.get(path, follow_redirects=False).status_code in (303, 401)
    assert client.get("/api/uploads/..%2F..%2Fetc/files/plan.csv").status_code == 404
    assert client.get(f"/api/uploads/{upload_id}/files/meta.json").status_code == 404
    assert client.get(f"/api/uploads/{upload_id}/files/..%2Fmeta.json").status_code == 404


def test_unrecognised_columns_ask_for_a_map_and_it_is_remembered(client: TestClient) -> None:
    login(client)
    data = b"Artikel,Bestand\nTOWEL-907-NAVY-SHEET,3\n"
    r = api_upload(client, data=data, name="lager.csv")
    assert r.status_code == 422 and r.json()["upload_status"] == "unmapped"
    assert r.json()["headers"] == ["Artikel", "Bestand"]
    upload_id = r.json()["upload_id"]
    page = client.get(f"/uploads/{upload_id}/map")
    assert "TOWEL-907-NAVY-SHEET" in page.text  # sample values are shown
    r = client.post(f"/uploads/{upload_id}/map",
                    data={"csrf_token": csrf_of(client), "header": ["Artikel", "Bestand"],
                          "column": ["sku", "quantity"]})
    assert r.status_code == 200 and client.get(f"/api/uploads/{upload_id}").json()[
        "status"] == "planned"
    # The same layout again: no map step.
    again = api_upload(client, data=data, name="lager2.csv")
    assert again.status_code == 201 and again.json()["changes_total"] == 1
    # The API can map too.
    mapped = api_upload(client, data=b"Code;Menge\nTOWEL-907-BURG-BATH;4\n", name="x.csv",
                        map=["Code=sku", "Menge=quantity"])
    assert mapped.status_code == 201, mapped.text


def test_hostile_file_is_refused_in_words(client: TestClient) -> None:
    login(client)
    r = api_upload(client, data=b"PK\x03\x04not really a zip", name="stock.csv")
    assert r.status_code == 422
    assert "stock.csv" in r.json()["detail"] and "upload.csv" not in r.json()["detail"]
    r = api_upload(client, data=CSV, name="stock.exe")
    assert r.status_code == 400


def test_pages_escape_file_content_and_send_security_headers(client: TestClient) -> None:
    login(client)
    evil = "<script>alert(1)</script>"
    data = f'sku,quantity\n"{evil}",5\nTOWEL-907-BURG-BATH,"{evil}"\n'.encode()
    evil_name = "<img src=x onerror=alert(1)>.csv"
    upload_id = api_upload(client, data=data, name=evil_name).json()["upload_id"]
    page = client.get(f"/uploads/{upload_id}")
    assert page.status_code == 200
    assert evil not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    csp = page.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert "<script src=\"/static/invsync.js\"" in page.text
    assert not re.search(r"<script(?![^>]*src=\"/static/)", page.text)  # no inline script
    assert "http://" not in page.text.replace("http://testserver", "")  # nothing third-party
    report = client.get(f"/uploads/{upload_id}/files/report.html")
    assert "unsafe-inline" not in report.headers["content-security-policy"]
    assert "'sha256-" in report.headers["content-security-policy"]
    assert evil not in report.text
    assert "<img" not in page.text and "&lt;img src=x" in page.text
    history = client.get("/history").text
    assert "<img" not in history and "onerror" not in history  # a preview is not a run


def test_token_never_in_pages_or_answers(client: TestClient, sandbox: SandboxProcess) -> None:
    login(client)
    body = api_upload(client)
    upload_id = body.json()["upload_id"]
    client.post(f"/api/uploads/{upload_id}/apply", headers={"X-CSRF-Token": csrf_of(client)})
    wait_done(client, upload_id)
    seen = [body.text]
    for path in ("/", "/history", f"/uploads/{upload_id}", f"/api/uploads/{upload_id}",
                 f"/uploads/{upload_id}/files/report.html"):
        seen.append(client.get(path).text)
    assert all(TOKEN not in text for text in seen)


def test_discard_and_apply_of_discarded(client: TestClient) -> None:
    login(client)
    upload_id = api_upload(client).json()["upload_id"]
    r = client.post(f"/uploads/{upload_id}/discard", data={"csrf_token": csrf_of(client)})
    assert r.status_code == 200
    assert client.get(f"/api/uploads/{upload_id}").json()["status"] == "discarded"
    r = client.post(f"/api/uploads/{upload_id}/apply", headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 409


def test_history_lists_cli_runs_too(client: TestClient, settings: Settings) -> None:
    from invsync.run.sync import sync_file

    sync_file(SAMPLE / "night1.csv", settings)
    login(client)
    page = client.get("/history").text
    assert "night1.csv" in page and "command line" in page
    run_id = re.search(r'href="/runs/([^"]+)"', page)
    assert run_id
    assert client.get(f"/runs/{run_id.group(1)}").status_code == 200
    assert client.get(f"/runs/{run_id.group(1)}/files/report.json").status_code == 200
    assert client.get(f"/runs/{run_id.group(1)}/files/journal").status_code == 404


def test_workbook_upload_offers_rejected_xlsx(client: TestClient) -> None:
    login(client)
    data = (SAMPLE / "merchant.xlsx").read_bytes()
    r = client.post("/api/uploads", headers={"X-CSRF-Token": csrf_of(client)},
                    files={"file": ("merchant.xlsx", io.BytesIO(data), "application/vnd.ms-excel")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["rejected"] and "rejected.xlsx" in body["files"]
    got = client.get(f"/api/uploads/{body['upload_id']}/files/rejected.xlsx")
    assert got.status_code == 200 and got.content.startswith(b"PK")
    from openpyxl import load_workbook

    # Every row that did not make it, the items the store does not have included.
    sheet = load_workbook(io.BytesIO(got.content), read_only=True).worksheets[0]
    assert len(list(sheet.iter_rows(min_row=2))) == len(body["rejected"])
    page = client.get(f"/uploads/{body['upload_id']}").text
    assert "Download rejected.xlsx" in page


def test_every_reason_code_and_brake_has_plain_words() -> None:
    from invsync.rules.messages import FALLBACK, kind_of
    from invsync.rules.stock import REASONS as CODES
    from invsync.surfaces.web.messages import BRAKES, reason_text

    # One place for a reason's words: the page says what the reports say.
    for code in CODES:
        assert kind_of(code) != FALLBACK, code
        what, todo = reason_text(code)
        assert what == CODES[code].kind + "." and todo.endswith("."), code
        assert todo[:-1].lower() == CODES[code].fix.lower(), code
    assert set(BRAKES) == {"empty_file", "shrunken_file", "mass_zeroing"}


def test_another_sheet_of_a_workbook_can_be_previewed(client: TestClient,
                                                      tmp_path: Path) -> None:
    import xlsxwriter

    path = tmp_path / "two.xlsx"
    book = xlsxwriter.Workbook(str(path))
    for name, qty in (("Notes", None), ("Stock", 6)):
        sheet = book.add_worksheet(name)
        sheet.write_row(0, 0, ["sku", "quantity"] if qty else ["just", "notes"])
        sheet.write_row(1, 0, ["POSTER-1755", qty] if qty else ["a", "b"])
    book.close()
    login(client)
    r = api_upload(client, data=path.read_bytes(), name="two.xlsx")
    upload_id = r.json()["upload_id"]
    assert r.status_code == 422 and r.json()["upload_status"] == "unmapped"  # the first sheet
    assert 'id="sheet-form"' in client.get(f"/uploads/{upload_id}/map").text
    r = api_upload(client, data=path.read_bytes(), name="two.xlsx", sheet="Stock")
    assert r.status_code == 201 and r.json()["sheets"] == ["Notes", "Stock"]
    planned = r.json()["upload_id"]
    page = client.get(f"/uploads/{planned}").text
    assert 'id="sheet-form"' in page
    r = client.post(f"/uploads/{planned}/preview", data={"csrf_token": csrf_of(client),
                                                         "sheet": "Nope"})
    assert r.status_code == 400
    r = client.post(f"/uploads/{planned}/preview", data={"csrf_token": csrf_of(client),
                                                         "sheet": "Notes"})
    assert client.get(f"/api/uploads/{planned}").json()["status"] == "unmapped"
    # From the map step, the right sheet is one choice away.
    client.post(f"/uploads/{upload_id}/preview", data={"csrf_token": csrf_of(client),
                                                       "sheet": "Stock"})
    assert client.get(f"/api/uploads/{upload_id}").json()["status"] == "planned"


def test_sessions_end_after_the_absolute_time_even_when_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.surfaces.web import auth

    now = [1000.0]
    monkeypatch.setattr(auth.time, "time", lambda: now[0])
    sessions = auth.Sessions(idle_s=600, max_s=3600)
    sid, _ = sessions.create("anna")
    for _ in range(6):  # used just under every 10 minutes: never idle
        now[0] += 599
        assert sessions.get(sid) is not None
    now[0] += 599  # still not idle, but past the hour since sign-in
    assert sessions.get(sid) is None
    assert sessions.get(sid) is None  # and it stays ended


def test_serve_off_localhost_says_tls_belongs_in_front(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BIGCOMMERCE_")},
           "BIGCOMMERCE_STORE_HASH": "s", "BIGCOMMERCE_ACCESS_TOKEN": TOKEN,
           "XDG_STATE_HOME": str(tmp_path)}
    # 127.0.0.2 is still this machine, but not the default address: the warning path.
    proc = subprocess.Popen([sys.executable, "-m", "invsync", "serve", "--host", "127.0.0.2",
                             "--port", "0"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    child = wait_for_listening(proc, "invsync serve --host 127.0.0.2", 60, host="127.0.0.2")
    try:
        text = child.text()
        assert "HTTPS reverse proxy" in text and "--behind-https" in text
        assert "no users yet" in text and TOKEN not in text
    finally:
        child.stop()


def test_serve_needs_the_store_token(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BIGCOMMERCE_")},
           "BIGCOMMERCE_STORE_HASH": "s", "XDG_STATE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "invsync", "serve", "--port", "0"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 64 and "no access token" in done.stderr


# --------------------------------------------------------------------------- encoding, header row

# Short Greek names read as Cyrillic, Hebrew or Thai just as well: the encoding is unclear.
# Under "name" (a column invsync does not use) that blocks nothing; under "sku" it asks.
GREEK_SKUS = "sku,quantity\nΛεωνιδας,4\nΑλεξανδρος,6\nΜυρων,2\n".encode("iso-8859-7")
GREEK = ("sku,quantity,name\nPOSTER-1755,4,Λεωνιδας\nTOWEL-907-BURG-BATH,6,Αλεξανδρος\n"
         "TOWEL-907-SAND-HAND,2,Μυρων\n").encode("iso-8859-7")
NOTES_FIRST = ("Stock count, warehouse 2\n" + "".join(f"note {i}\n" for i in range(22))
               + "sku,quantity\nPOSTER-1755,9\n").encode()
"""The column names on row 24: below the rows searched for a header."""


def test_an_unclear_encoding_says_it_can_be_picked_and_the_pick_reads_it(
        client: TestClient, settings: Settings) -> None:
    login(client)
    r = api_upload(client, data=GREEK, name="names.csv")
    assert r.status_code == 201, r.text  # only the unused "name" column is in doubt
    r = api_upload(client, data=GREEK_SKUS, name="greek.csv")
    assert r.status_code == 422, r.text
    error = r.json()["detail"]
    assert "encoding is unclear" in error and "greek.csv" in error
    assert 'pick its text encoding under "Text encoding and header row"' in error
    assert "--encoding" not in error
    upload_id = r.json()["upload_id"]
    page = client.get(f"/uploads/{upload_id}").text
    assert "pick its text encoding under &#34;Text encoding and header row&#34;" in page
    assert 'id="reading-form"' in page and '<details id="reading" open>' in page
    # Picking it on the page reads the file again: a preview, nothing sent.
    r = client.post(f"/uploads/{upload_id}/preview",
                    data={"csrf_token": csrf_of(client), "encoding": "iso-8859-7",
                          "header_row": ""})
    assert r.status_code == 200
    body = client.get(f"/api/uploads/{upload_id}").json()
    assert body["status"] == "planned", body
    assert body["encoding"] == "iso-8859-7" and body["header_row"] is None
    assert body["encoding_used"] == "iso8859-7"
    assert '<dd id="read-as">Greek (ISO-8859-7) text</dd>' in r.text  # row 1: not said
    # The API takes it as a form field, and the preview's run records it like --encoding.
    r = api_upload(client, data=GREEK, name="greek.csv", encoding="iso-8859-7")
    assert r.status_code == 201, r.text
    report = json.loads(Path(client.app.state.portal.get(r.json()["upload_id"])  # type: ignore
                             ["plan_dir"], "report.json").read_text())
    assert report["input"]["encoding"] == "iso8859-7"
    assert report["options"]["encoding"] == "iso-8859-7"
    # An encoding that does not exist is refused before anything is stored.
    r = api_upload(client, data=GREEK, name="greek.csv", encoding="klingon")
    assert r.status_code == 400 and r.json()["detail"] == "unknown text encoding 'klingon'"


def test_a_header_below_the_searched_rows_says_the_row_can_be_given(
        client: TestClient, sandbox: SandboxProcess) -> None:
    login(client)
    r = api_upload(client, data=NOTES_FIRST, name="count.csv")
    assert r.status_code == 422 and r.json()["upload_status"] == "unmapped"
    assert r.json()["headers"] == ["Stock count", " warehouse 2"]
    assert ('give the number of their row under "Text encoding and header row"'
            in r.json()["detail"])
    upload_id = r.json()["upload_id"]
    page = client.get(f"/uploads/{upload_id}/map").text
    assert 'id="header-hint"' in page and 'id="reading-form"' in page
    # Given on the map step: read again, no map needed, and applied from that preview.
    r = client.post(f"/uploads/{upload_id}/preview",
                    data={"csrf_token": csrf_of(client), "encoding": "", "header_row": "24"})
    assert r.status_code == 200
    body = client.get(f"/api/uploads/{upload_id}").json()
    assert body["status"] == "planned" and body["header_row"] == 24, body
    assert body["header_row_used"] == 24
    assert [(c["item"], c["new"], c["row"]) for c in body["changes"]] == [("POSTER-1755", 9, 25)]
    applied = client.post(f"/api/uploads/{upload_id}/apply",
                          headers={"X-CSRF-Token": csrf_of(client)})
    assert applied.status_code == 202
    assert wait_done(client, upload_id)["status"] == "succeeded"
    assert sandbox.levels() == {(1, "POSTER-1755"): 9}
    # The upload form and the API take it too; a row that is not there is named plainly.
    r = client.post("/uploads", data={"csrf_token": csrf_of(client), "header_row": "24"},
                    files={"file": ("count.csv", io.BytesIO(NOTES_FIRST), "text/csv")})
    assert r.status_code == 200 and "Nothing has been sent yet" in r.text
    r = api_upload(client, data=NOTES_FIRST, name="count.csv", header_row="99")
    assert r.status_code == 422
    assert "header row 99: the file has no such row" in r.json()["detail"]
    assert "--header-row" not in r.json()["detail"]
    for bad in ("0", "two"):
        r = api_upload(client, data=NOTES_FIRST, name="count.csv", header_row=bad)
        assert r.status_code == 400, r.text


def test_the_upload_form_offers_encoding_and_header_row_as_automatic(
        client: TestClient) -> None:
    login(client)
    page = client.get("/").text
    advanced = page[page.index('<details id="advanced">'):page.index("</details>")]
    assert '<option value="" selected>Automatic</option>' in advanced
    assert 'name="header_row"' in advanced and 'value=""' in advanced
    assert '<option value="shift_jis">' in advanced
    # Left automatic, an upload records no choice (the file is read as before).
    r = api_upload(client, encoding="", header_row="")
    assert r.status_code == 201
    assert r.json()["encoding"] is None and r.json()["header_row"] is None
    assert r.json()["encoding_used"] == "utf-8" and r.json()["header_row_used"] == 1
    # A plain UTF-8 file with the names on row 1: the preview does not dwell on it.
    assert 'id="read-as"' not in client.get(f"/uploads/{r.json()['upload_id']}").text
    # A file whose header is found further down says where it was found.
    notes = b"Stock count\n\nsku,quantity\nPOSTER-1755,3\n"
    r = api_upload(client, data=notes, name="notes.csv")
    assert r.status_code == 201 and r.json()["header_row_used"] == 3
    page = client.get(f"/uploads/{r.json()['upload_id']}").text
    assert '<dd id="read-as">column names on row 3 (found automatically)</dd>' in page
