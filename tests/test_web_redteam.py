"""Hostile tests of the upload page: each one reproduces a defect a red-team pass found.

Through starlette's TestClient (``test_web.py``'s fixtures) or a real ``invsync serve``
process (``browser.py``'s), always against a real sandbox store on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_web
from browser import PASSWORD as SERVE_PASSWORD
from browser import serve_process
from conftest import ROOT, env_for, lock_holder, wait_for, write_csv
from starlette.testclient import TestClient
from test_web import api_upload, csrf_of, login

from invsync.html.render import csp_hash, stylesheet
from invsync.run.config import Settings
from invsync.sandbox.process import SandboxProcess
from invsync.state.snapshot import store_dir

# test_web's fixtures, for this module's tests too.
settings, app_factory, client = test_web.settings, test_web.app_factory, test_web.client
STYLE = re.compile(r"<style>(.*?)</style>", re.S)
META_CSP = re.compile(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)">')


def _apply(http: TestClient, upload_id: str) -> Any:
    return http.post(f"/api/uploads/{upload_id}/apply", headers={"X-CSRF-Token": csrf_of(http)})


# --------------------------------------------------------------------------- report.html


def test_report_html_inline_style_is_the_one_its_csp_allows(client: TestClient) -> None:
    """report.html's stylesheet was HTML-escaped inside <style> (its quotes became &#34;),
    so it was neither valid CSS nor the text its own CSP hash allowed: every report
    (CLI and page alike) opened unstyled, in a browser that enforces the meta CSP."""
    login(client)
    upload_id = api_upload(client).json()["upload_id"]
    page = client.get(f"/uploads/{upload_id}/files/report.html")
    assert page.status_code == 200
    styles = STYLE.findall(page.text)
    assert styles == [stylesheet()]  # the stylesheet verbatim, not escaped
    meta = META_CSP.search(page.text)
    assert meta is not None
    policy = meta.group(1).replace("&#39;", "'")
    assert f"style-src {csp_hash(styles[0])};" in policy
    assert csp_hash(styles[0]) in page.headers["content-security-policy"]


def test_brake_warning_gives_no_command_line_advice(client: TestClient,
                                                   settings: Settings) -> None:
    """The page's safety-brake warning (and the API's) ended with the CLI's advice "pass
    --allow-zeroing to sync anyway": a merchant has no command line; here the override is
    the tick box (or ``override_brakes=yes``)."""
    from invsync.run.sync import sync_file

    first = settings.state_dir.parent / "first.csv"
    first.write_text("sku,quantity\nTOWEL-907-NAVY-SHEET,5\nTOWEL-907-BURG-BATH,6\n")
    assert sync_file(first, settings).status == "succeeded"
    login(client)
    body = api_upload(client, data=b"sku,quantity\nTOWEL-907-NAVY-SHEET,0\n"
                                   b"TOWEL-907-BURG-BATH,0\n").json()
    assert [b["name"] for b in body["brakes"]] == ["mass_zeroing"]
    assert "--allow" not in body["brakes"][0]["message"]
    assert "would drop to 0" in body["brakes"][0]["message"]
    page = client.get(f"/uploads/{body['upload_id']}").text
    assert "would drop to 0" in page and "--allow" not in page


def test_a_new_password_signs_out_the_old_sessions(client: TestClient,
                                                  settings: Settings) -> None:
    """Setting a new password (`invsync portal add-user NAME` again, typically because the
    old one leaked) left every session signed in with the old one valid for up to 12 hours,
    the attacker's included; only remove-user ended them."""
    from test_web import PASSWORD

    from invsync.surfaces.web.auth import Accounts

    login(client)
    assert client.get("/", follow_redirects=False).status_code == 200
    Accounts(settings.state_dir).add_user("merchant", "a brand new password")
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert client.get("/api/uploads/" + "0" * 32).status_code == 401
    assert login(client, "merchant", PASSWORD).status_code == 401  # the old one is refused
    assert login(client, "merchant", "a brand new password").status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 200


def test_the_upload_page_does_not_call_other_users_uploads_yours(
        client: TestClient, settings: Settings) -> None:
    """The upload page listed every user's uploads under "Your recent uploads"."""
    from invsync.surfaces.web.auth import Accounts

    key = Accounts(settings.state_dir).add_key("erp")
    assert api_upload(client, headers={"Authorization": f"Bearer {key}"}).status_code == 201
    login(client)
    page = client.get("/").text
    assert "stock.csv" in page and "Your recent uploads" not in page


def test_an_unreadable_upload_says_why_on_its_page(client: TestClient) -> None:
    """A file that could not be read (here a CSV with a stray quote) sent through the API was
    left in status "new", which the API does not document, and its page (listed on the
    upload page) was blank: no error, nothing to do."""
    login(client)
    # (A stray quote no longer makes a CSV unreadable: that row alone is rejected. A binary
    # file named .csv still cannot be read at all.)
    r = api_upload(client, data=b"\x00\x01<svg onload=alert(2)>\x00\xff\xfe" * 50,
                   name="broken.csv")
    assert r.status_code == 422 and "binary file" in r.json()["detail"], r.json()
    upload_id = r.json()["upload_id"]
    body = client.get(f"/api/uploads/{upload_id}").json()
    assert body["status"] == "failed" and "binary file" in body["error"]
    page = client.get(f"/uploads/{upload_id}").text
    assert "This file could not be used." in page and "binary file" in page
    assert "<svg" not in page


def test_describing_an_upload_never_blocks_the_event_loop(client: TestClient,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every upload page, its JSON and the apply answer read and sorted the whole plan.csv on
    the server's event loop: with a 1.5 million-row plan each took 6-7 s during which the
    server answered no one (other merchants' sign-in page timed out, and the page polls
    while applying). It now runs in a worker thread (and the sorted changes are cached)."""
    portal = client.app.state.portal  # type: ignore[attr-defined]
    real = portal.describe
    on_loop: list[bool] = []

    def spy(upload_id: str) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return real(upload_id)

    monkeypatch.setattr(portal, "describe", spy)
    login(client)
    upload_id = api_upload(client).json()["upload_id"]  # the 201 answer
    client.get(f"/uploads/{upload_id}")
    client.get(f"/api/uploads/{upload_id}")
    _apply(client, upload_id)
    portal.wait(upload_id, 60)
    client.post(f"/uploads/{upload_id}/apply", data={"csrf_token": csrf_of(client)})  # a 409 page
    assert len(on_loop) == 5 and not any(on_loop)


# --------------------------------------------------------------------------- the store's lock


def test_apply_waits_while_a_cli_run_holds_the_lock(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    """While a CLI run held the store's lock, an apply from the page failed at once with
    "the upload could not be applied: LockedError" (the page looked for the lock under the
    default API host, never the sandbox's or any other, and the lock error was not waited
    out), where the README promises that the progress view waits, then goes on."""
    from test_web import PASSWORD, make_settings

    from invsync.surfaces.web.app import Options, create_app
    from invsync.surfaces.web.auth import Accounts

    slow = sandbox_factory()
    s = make_settings(slow, tmp_path)
    Accounts(s.state_dir).add_user("merchant", PASSWORD)
    with TestClient(create_app(s, Options()), base_url="http://testserver") as web:
        login(web)
        created = api_upload(web, data=b"sku,quantity\nPOSTER-1755,11\n")
        assert created.status_code == 201, created.text
        upload_id = created.json()["upload_id"]
        slow.set_faults(latency_ms=1500)  # slow from here on: the CLI run holds the lock long
        big = write_csv(tmp_path / "big.csv", ["sku", "quantity"],
                        [["TOWEL-907-NAVY-SHEET", 3], ["TOWEL-907-BURG-BATH", 4]])
        cli = subprocess.Popen(
            [sys.executable, "-m", "invsync", "sync", str(big), "--state-dir", str(s.state_dir),
             "--batch-size", "1", "--concurrency", "1"],
            env=env_for(slow, tmp_path), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            lock = store_dir(s.state_dir, slow.url, slow.store_hash) / "lock"
            lock_holder(lock, cli, None, timeout=60)  # the CLI run has taken the lock
            assert _apply(web, upload_id).status_code == 202
            phases = []

            def applied() -> dict[str, Any] | None:
                body = web.get(f"/api/uploads/{upload_id}").json()
                if body["status"] != "applying":
                    return dict(body)
                phases.append((body.get("progress") or {}).get("phase"))
                return None

            body = wait_for(applied, timeout=180, every=0.2, message="the apply never ended")
            assert cli.wait(timeout=120) == 0
        finally:
            if cli.poll() is None:
                cli.kill()
            cli.wait()
        assert "waiting" in phases
        assert body["status"] == "succeeded", body.get("error")
        assert slow.levels()[(1, "POSTER-1755")] == 11


# --------------------------------------------------------------------------- a server stop


def test_server_killed_mid_apply_never_says_the_file_was_not_used(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    """A server killed while the store was applying the upload came back saying "This file
    could not be used." with `not_sent` counts and "see its run in the history" (there was
    none), though the store had in fact applied the changes."""
    slow = sandbox_factory()
    with serve_process(slow, tmp_path) as srv:
        http = _signed_in(srv.url)
        created = http.post("/api/uploads", files={"file": ("kill.csv", b"sku,quantity\n"
                                                   b"POSTER-1755,41\n", "text/csv")},
                            headers={"X-CSRF-Token": _csrf(http)})
        upload_id = created.json()["upload_id"]
        slow.set_faults(latency_ms=4000)  # slow from the apply on: the PUT is long in flight
        assert http.post(f"/api/uploads/{upload_id}/apply",
                         headers={"X-CSRF-Token": _csrf(http)}).status_code == 202
        wait_for(lambda: _put_sent(slow), every=0.05, message="the apply never reached the store")
        os.kill(srv.process.pid, signal.SIGKILL)  # the PUT is in flight
        srv.process.wait(timeout=10)
    wait_for(lambda: slow.levels().get((1, "POSTER-1755")) == 41, timeout=30, every=0.2,
             message="the store never applied the in-flight PUT")
    slow.set_faults(latency_ms=0)
    with serve_process(slow, tmp_path) as srv:
        http = _signed_in(srv.url)
        body = http.get(f"/api/uploads/{upload_id}").json()
        assert body["status"] == "failed" and body.get("interrupted") is True
        assert body["counts"]["not_sent"] == 0 and body["counts"]["unconfirmed"] == 1
        assert "may already be in the store" in body["error"]
        page = http.get(f"/uploads/{upload_id}").text
        assert "could not be used" not in page
        assert "may already be in the store" in page and 'id="preview-again"' in page
        # Preview again: the plan is made from the store's LIVE levels, read now, so the
        # item the killed apply did land (41) is seen as done, not sent a second time.
        again = http.post(f"/uploads/{upload_id}/preview", data={"csrf_token": _csrf(http)})
        assert again.status_code == 200
        fresh = http.get(f"/api/uploads/{upload_id}").json()
        assert fresh["status"] == "planned" and "interrupted" not in fresh
        assert fresh["counts"]["unchanged"] == 1 and fresh["changes"] == [], fresh
        assert "could not be used" not in http.get(f"/uploads/{upload_id}").text
        assert slow.levels().get((1, "POSTER-1755")) == 41
        http.close()


def test_ctrl_c_of_serve_lets_an_apply_in_progress_finish(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    """Ctrl-C of `invsync serve` while an upload was being applied exited at once, killing
    the apply mid-request (no report, the upload left "applying"). The server now lets it
    finish (for up to a minute; a second Ctrl-C stops waiting) and says so on stderr."""
    slow = sandbox_factory()
    with serve_process(slow, tmp_path) as srv:
        http = _signed_in(srv.url)
        created = http.post("/api/uploads", files={"file": ("c.csv", b"sku,quantity\n"
                                                   b"POSTER-1755,61\n", "text/csv")},
                            headers={"X-CSRF-Token": _csrf(http)})
        upload_id = created.json()["upload_id"]
        slow.set_faults(latency_ms=2500)  # slow from the apply on
        assert http.post(f"/api/uploads/{upload_id}/apply",
                         headers={"X-CSRF-Token": _csrf(http)}).status_code == 202
        http.close()
        wait_for(lambda: _put_sent(slow), every=0.05, message="the apply never reached the store")
        srv.process.send_signal(signal.SIGINT)
        srv.process.wait(timeout=90)
        log = "".join(srv.output)
        assert "being applied" in log
    assert slow.levels()[(1, "POSTER-1755")] == 61
    with serve_process(slow, tmp_path) as srv:
        http = _signed_in(srv.url)
        body = http.get(f"/api/uploads/{upload_id}").json()
        assert body["status"] == "succeeded" and body["transaction_ids"]
        http.close()


def _put_sent(sb: SandboxProcess) -> bool:
    """The store has received a whole PUT, its body too (its answer may still be on its
    way): a request is logged from its first line, and a client killed before it wrote the
    body leaves the store nothing to apply."""
    return any(r["method"] == "PUT" and r["body"] is not None for r in sb.requests())


def _signed_in(url: str) -> httpx.Client:
    http = httpx.Client(base_url=url, timeout=60, follow_redirects=True)
    page = http.get("/login").text
    token = re.search(r'name="login_csrf" value="([^"]+)"', page)
    assert token
    r = http.post("/login", data={"username": "merchant", "password": SERVE_PASSWORD,
                                  "login_csrf": token.group(1)})
    assert r.status_code == 200 and "Upload a stock file" in r.text, r.text[:300]
    return http


def _csrf(http: httpx.Client) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/").text)
    assert found
    return found.group(1)



def test_a_store_failing_during_the_preview_is_no_unreadable_file(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    """An upload whose preview failed because the store answered 500 to every read was
    answered 422 ``unreadable-file``, "The file cannot be read", though the file was fine:
    now 502 ``preview-failed``, the store's failure in ``detail``, the upload kept; and a
    file that truly cannot be read is still ``unreadable-file``."""
    from dataclasses import replace

    from test_web import PASSWORD, make_settings

    from invsync.store.limits import RetryPolicy
    from invsync.surfaces.web.app import Options, create_app
    from invsync.surfaces.web.auth import Accounts

    failing = sandbox_factory()
    s = replace(make_settings(failing, tmp_path),
                retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02))
    Accounts(s.state_dir).add_user("merchant", PASSWORD)
    with TestClient(create_app(s, Options()), base_url="http://testserver") as web:
        login(web)
        failing.set_faults(error_rate=1.0)
        answer = api_upload(web, data=b"sku,quantity\nPOSTER-1755,11\n")
        assert answer.status_code == 502, answer.text
        body = answer.json()
        assert body["type"] == "urn:invsync:problem:preview-failed"
        assert body["title"] == "The preview could not be made"
        assert "store" in body["detail"] and "cannot be read" not in body["detail"]
        assert answer.headers["Location"] == f"/api/uploads/{body['upload_id']}"
        # The same upload previews once the store answers again: the file was fine.
        failing.set_faults(error_rate=0.0)
        again = web.post(f"/uploads/{body['upload_id']}/preview",
                         data={"csrf_token": csrf_of(web)})
        assert again.status_code == 200, again.text
        upload = web.get(f"/api/uploads/{body['upload_id']}").json()
        assert upload["status"] == "planned", upload


def test_a_file_that_cannot_be_read_is_still_unreadable_file() -> None:
    from invsync.surfaces.web.errors import not_previewed

    data = {"upload_id": "u1", "status": "failed", "error": "row 3: a stray quote"}
    answer = not_previewed(data, at_store=False, location="/api/uploads/u1")
    assert answer.status_code == 422 and b"unreadable-file" in answer.body
    assert b"row 3: a stray quote" in answer.body
