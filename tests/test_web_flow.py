"""The upload's one state machine, its store, cancel, a server stop, sessions, the sign-in
throttle and the JSON API's answers (each checked against the OpenAPI document)."""

from __future__ import annotations

import io
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from test_web import PASSWORD, CheckedClient, api_upload, csrf_of, login, make_settings

from invsync.run.config import Settings
from invsync.sandbox.process import SandboxProcess
from invsync.surfaces.web.app import Options, create_app
from invsync.surfaces.web.auth import Accounts, Throttle
from invsync.surfaces.web.problems import PREFIX
from invsync.surfaces.web.uploads import Portal

ITEMS = ["TOWEL-907-NAVY-SHEET", "TOWEL-907-BURG-BATH", "POSTER-1755", "CAP-681-YELLOW"]


def _client(s: Settings, **options: Any) -> CheckedClient:
    return CheckedClient(create_app(s, Options(**options)), base_url="http://testserver")


def _settings(sb: SandboxProcess, tmp_path: Path, **changes: Any) -> Settings:
    from dataclasses import replace

    s = replace(make_settings(sb, tmp_path), **changes)
    if not Accounts(s.state_dir).users():
        Accounts(s.state_dir).add_user("merchant", PASSWORD)
    return s


@pytest.fixture
def settings(sandbox: SandboxProcess, tmp_path: Path) -> Settings:
    return _settings(sandbox, tmp_path)


def _csv(levels: dict[str, int]) -> bytes:
    return ("sku,quantity\n" + "".join(f"{k},{v}\n" for k, v in levels.items())).encode()


def _wait(client: CheckedClient, upload_id: str, until: Callable[[dict[str, Any]], bool],
          timeout: float = 120) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def done() -> dict[str, Any] | None:
        last.clear()
        last.update(client.get(f"/api/uploads/{upload_id}").json())
        return dict(last) if until(last) else None

    return wait_for(done, timeout=timeout, every=0.1, message=lambda: str(last))


def _post(client: CheckedClient, path: str, **kwargs: Any) -> Any:
    return client.post(path, headers={"X-CSRF-Token": csrf_of(client)}, **kwargs)


# --------------------------------------------------------------------------- cancel, states


def test_cancel_during_apply_sends_nothing_more_and_keeps_what_the_store_confirmed(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    slow = sandbox_factory("--latency-ms", "600")
    s = _settings(slow, tmp_path, batch_size=1, concurrency=1)
    with _client(s) as client:
        login(client)
        levels = {sku: 20 + i for i, sku in enumerate(ITEMS)}
        created = api_upload(client, data=_csv(levels))
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"/api/uploads/{created.json()['upload_id']}"
        upload_id = created.json()["upload_id"]
        assert _post(client, f"/api/uploads/{upload_id}/apply").status_code == 202
        body = _wait(client, upload_id,
                     lambda b: (b.get("progress") or {}).get("items_done", 0) >= 1)
        assert body["progress"]["items_total"] == len(ITEMS)
        # The merchant's second tab: a re-preview and a second apply are refused in words.
        again = _post(client, f"/api/uploads/{upload_id}/apply")
        assert again.status_code == 409 and again.json()["type"] == PREFIX + "upload-state"
        assert "being applied" in again.json()["detail"]
        page = client.post(f"/uploads/{upload_id}/preview",
                           data={"csrf_token": csrf_of(client)})
        assert page.status_code == 409 and "being applied right now" in page.text.lower()
        cancelled = _post(client, f"/api/uploads/{upload_id}/cancel")
        assert cancelled.status_code == 202
        done = _wait(client, upload_id, lambda b: b["status"] not in ("applying", "cancelling"))
    assert done["status"] == "cancelled", done
    sent = slow.levels()
    assert 1 <= len(sent) < len(ITEMS)  # what was confirmed stays; the rest was not sent
    assert all(sent[(1, sku)] == levels[sku] for _, sku in sent)
    assert done["counts"]["accepted"] == len(sent)
    with _client(s) as client:
        login(client)
        view = client.get(f"/uploads/{upload_id}").text
        assert "Cancelled." in view and "the rest were not sent" in view
        assert _post(client, f"/api/uploads/{upload_id}/cancel").status_code == 409
        # Preview again: what is left to do.
        client.post(f"/uploads/{upload_id}/preview", data={"csrf_token": csrf_of(client)})
        fresh = client.get(f"/api/uploads/{upload_id}").json()
        assert fresh["status"] == "planned"


def test_an_upload_moves_only_along_its_states(settings: Settings, sandbox: SandboxProcess
                                               ) -> None:
    with _client(settings) as client:
        login(client)
        upload_id = api_upload(client).json()["upload_id"]
        portal: Portal = client.app.state.portal  # type: ignore[attr-defined]
        portal._update(upload_id, status="applying")  # as while a thread applies it
        for action in (lambda: portal.plan(upload_id), lambda: portal.discard(upload_id),
                       lambda: portal.apply(upload_id)):
            with pytest.raises(Exception, match="being applied right now"):
                action()
        assert portal.get(upload_id)["status"] == "applying"  # never flipped to planned
        deleted = client.delete(f"/api/uploads/{upload_id}",
                                headers={"X-CSRF-Token": csrf_of(client)})
        assert deleted.status_code == 409 and deleted.json()["upload_status"] == "applying"


# --------------------------------------------------------------------------- two stores


def test_store_b_never_lists_or_applies_store_a_upload(
        sandbox: SandboxProcess, sandbox_factory: Callable[..., SandboxProcess],
        tmp_path: Path) -> None:
    a, b = sandbox, sandbox_factory()  # the session's sandbox and one of this test's own
    sa, sb = _settings(a, tmp_path), _settings(b, tmp_path)  # one state folder, two stores
    assert sa.state_dir == sb.state_dir
    with _client(sa) as ca:
        login(ca)
        upload_id = api_upload(ca, data=_csv({"POSTER-1755": 9})).json()["upload_id"]
    with _client(sb) as cb:
        login(cb)
        assert cb.get("/api/uploads").json()["items"] == []
        assert upload_id not in cb.get("/").text
        r = cb.post(f"/api/uploads/{upload_id}/apply", headers={"X-CSRF-Token": csrf_of(cb)})
        assert r.status_code == 409 and r.json()["type"] == PREFIX + "other-store"
        assert cb.get(f"/api/uploads/{upload_id}").status_code == 409
    assert a.levels() == {} and b.levels() == {}


# --------------------------------------------------------------------------- a server stop


@pytest.mark.parametrize(("sent", "status"), [(False, "not_applied"), (True, "failed")])
def test_a_server_stop_while_an_upload_only_waited_leaves_it_not_applied(
        settings: Settings, sandbox: SandboxProcess, sent: bool, status: str) -> None:
    with _client(settings) as client:
        login(client)
        upload_id = api_upload(client).json()["upload_id"]
        portal: Portal = client.app.state.portal  # type: ignore[attr-defined]
        portal._update(upload_id, status="applying", sending_started=sent)
    with _client(settings) as client:  # the server again, after the stop
        login(client)
        body = client.get(f"/api/uploads/{upload_id}").json()
        page = client.get(f"/uploads/{upload_id}").text
    assert body["status"] == status
    if not sent:
        assert "nothing was changed in the store" in body["error"]
        assert "Not applied." in page and "may already be in the store" not in page
    else:
        assert body["interrupted"] is True and "may already be in the store" in page


# --------------------------------------------------------------------------- sessions, throttle


def test_sessions_survive_a_restart_and_are_kept_privately(settings: Settings) -> None:
    with _client(settings) as first:
        login(first)
        cookie = first.cookies.get("invsync_session")
        assert cookie and first.get("/", follow_redirects=False).status_code == 200
    path = settings.state_dir / "portal" / "sessions.json"
    assert os.stat(path).st_mode & 0o077 == 0
    assert cookie not in path.read_text()  # only a hash of the session id is kept
    with _client(settings) as second:
        second.cookies.set("invsync_session", cookie)
        assert second.get("/", follow_redirects=False).status_code == 200
        second.post("/logout", data={"csrf_token": csrf_of(second)})
    with _client(settings) as third:
        third.cookies.set("invsync_session", cookie)
        r = third.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?again=1"
        assert "Sign in again: your uploads are kept" in third.get("/login?again=1").text


def test_the_sign_in_throttle_counts_parallel_guesses_before_checking_them() -> None:
    throttle = Throttle()
    allowed = []
    barrier = threading.Barrier(30)

    def guess() -> None:
        barrier.wait()
        allowed.append(throttle.begin("merchant", "10.0.0.1") == 0)

    threads = [threading.Thread(target=guess) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == throttle.limit


def test_300_parallel_wrong_passwords_get_at_most_5_password_checks(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    checks = []
    original = Accounts.check_password

    def counting(self: Accounts, name: str, password: str) -> bool:
        checks.append(name)
        return original(self, name, password)

    monkeypatch.setattr(Accounts, "check_password", counting)
    with _client(settings) as client:
        token = client.get("/login").text.split('name="login_csrf" value="')[1].split('"')[0]
        codes: list[int] = []

        def guess(i: int) -> None:
            r = client.post("/login", data={"username": "merchant", "password": f"guess{i}",
                                            "login_csrf": token}, follow_redirects=False)
            codes.append(r.status_code)

        threads = [threading.Thread(target=guess, args=(i,)) for i in range(300)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # (Answers replace the shared sign-in form cookie, so some guesses fail its check: 403.)
    assert len(checks) <= 5 and len(codes) == 300 and set(codes) <= {401, 403, 429}
    # How many guesses beat the form check is the scheduler's (3 got 429 under load): every
    # guess past it beyond the five checks is refused 429 without a password check.
    assert codes.count(401) <= 5
    assert codes.count(429) >= 1 or codes.count(401) + codes.count(429) <= 5


# --------------------------------------------------------------------------- the JSON API


def test_api_lists_pages_deletes_and_answers_problems(settings: Settings,
                                                      sandbox: SandboxProcess) -> None:
    key = Accounts(settings.state_dir).add_key("erp")
    auth = {"Authorization": f"Bearer {key}"}
    with _client(settings) as client:
        ids = []
        for i in range(3):
            r = client.post("/api/uploads", headers=auth, files={
                "file": (f"s{i}.csv", io.BytesIO(_csv({"POSTER-1755": i})), "text/csv")})
            assert r.status_code == 201, r.text
            ids.append(r.json()["upload_id"])
        page = client.get("/api/uploads?limit=2", headers=auth)
        assert page.json()["total"] == 3 and len(page.json()["items"]) == 2
        assert page.json()["next"] == "/api/uploads?offset=2&limit=2"
        rest = client.get(page.json()["next"], headers=auth).json()
        assert {i["upload_id"] for i in page.json()["items"] + rest["items"]} == set(ids)
        assert client.get("/api/uploads?limit=0", headers=auth).json()["field"] == "limit"
        assert client.delete(f"/api/uploads/{ids[0]}", headers=auth).status_code == 204
        assert client.get(f"/api/uploads/{ids[0]}", headers=auth).json()["status"] == "discarded"
        gone = client.delete(f"/api/uploads/{ids[0]}", headers=auth)
        assert gone.status_code == 409 and gone.headers["content-type"] == \
            "application/problem+json"
        # A wrong key and a missing key say different things.
        wrong = client.get("/api/uploads", headers={"Authorization": "Bearer isk_x_y"})
        missing = client.get("/api/uploads")
        assert wrong.json()["type"] == PREFIX + "wrong-key"
        assert missing.json()["type"] == PREFIX + "no-credentials"
        # Not multipart: 415 naming the field; a wrong method: a JSON 405.
        r = client.post("/api/uploads", headers={**auth, "Content-Type": "application/json"},
                        content=json.dumps({"file": "x"}))
        assert r.status_code == 415 and r.json()["field"] == "file"
        r = client.put(f"/api/uploads/{ids[1]}", headers=auth)
        assert r.status_code == 405 and r.json()["type"] == PREFIX + "method-not-allowed"
        # A location the store does not have: 422 naming the field; a name works.
        r = client.post("/api/uploads", headers=auth, data={"location_id": "Moon base"},
                        files={"file": ("s.csv", io.BytesIO(_csv({"POSTER-1755": 1})),
                                        "text/csv")})
        assert r.status_code == 422 and r.json()["field"] == "location_id"
        assert "East warehouse" in r.json()["detail"]
        r = client.post("/api/uploads", headers=auth, data={"location_id": "east WAREHOUSE"},
                        files={"file": ("s.csv", io.BytesIO(_csv({"POSTER-1755": 1})),
                                        "text/csv")})
        assert r.status_code == 201 and r.json()["location_id"] == 2
        served = client.get("/api/openapi.json")
        from invsync.contracts import load

        assert served.json() == load("upload-api.openapi.json")


def test_serve_without_the_web_extra_names_it(tmp_path: Path) -> None:
    """`pip install invsync` has no web stack: `invsync serve` says which extra to add."""
    import subprocess
    import sys

    from conftest import ROOT

    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('starlette', 'uvicorn', 'multipart'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Block())\n")
    env = {**os.environ, "PYTHONPATH": str(blocker), "BIGCOMMERCE_STORE_HASH": "s",
           "BIGCOMMERCE_ACCESS_TOKEN": "t", "XDG_STATE_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "invsync", "serve", "--port", "0"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 64, done.stderr
    assert "pip install 'invsync[web]'" in done.stderr and "Traceback" not in done.stderr
    # The CLI itself still works without it.
    assert subprocess.run([sys.executable, "-m", "invsync", "--help"], env=env, cwd=ROOT,
                          capture_output=True, timeout=120).returncode == 0


def test_items_the_store_does_not_have_are_found_at_preview_with_did_you_mean(
        settings: Settings, sandbox: SandboxProcess) -> None:
    data = b"sku,quantity\nTOWEL-907-NAVY-SHEET,5\nCAP-681-YELOW,3\nNO-SUCH-THING-AT-ALL,4\n"
    with _client(settings) as client:
        login(client)
        r = api_upload(client, data=data)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["changes_total"] == 1
        assert [c["item"] for c in body["changes"]] == ["TOWEL-907-NAVY-SHEET"]
        unknown = {x["value"]: x for x in body["rejected"] if x["reason"] == "unknown_item"}
        assert set(unknown) == {"CAP-681-YELOW", "NO-SUCH-THING-AT-ALL"}
        assert unknown["CAP-681-YELOW"]["row"] == 3
        assert "Did you mean 'CAP-681-YELLOW'?" in unknown["CAP-681-YELOW"]["action"]
        page = client.get(f"/uploads/{body['upload_id']}").text
        assert "Did you mean &#39;CAP-681-YELLOW&#39;?" in page or \
            "Did you mean 'CAP-681-YELLOW'?" in page
        # The rejected-rows download holds them, as the merchant's own rows.
        rows = client.get(f"/uploads/{body['upload_id']}/files/rejected.csv").text
        lines = rows.lstrip("\ufeff").splitlines()
        assert lines[0] == "sku,quantity,row,reason,message"
        assert lines[1].startswith("CAP-681-YELOW,3,3,unknown_item,")
        assert "did you mean CAP-681-YELLOW?" in lines[1]
        assert lines[2].startswith("NO-SUCH-THING-AT-ALL,4,4,unknown_item,")
        assert _post(client, f"/api/uploads/{body['upload_id']}/apply").status_code == 202
        done = _wait(client, body["upload_id"], lambda b: b["status"] != "applying")
    assert sandbox.levels() == {(1, "TOWEL-907-NAVY-SHEET"): 5}  # the unknown were not sent
    assert done["status"] in ("succeeded", "partial") and done["counts"]["refused"] == 0


def test_a_file_of_only_unknown_items_never_reaches_apply(settings: Settings,
                                                          sandbox: SandboxProcess) -> None:
    data = ("sku,quantity\n" + "".join(f"GHOST-{i},1\n" for i in range(50))).encode()
    with _client(settings) as client:
        login(client)
        body = api_upload(client, data=data).json()
        assert body["changes_total"] == 0 and len(body["rejected"]) == 50
        assert 'id="apply"' not in client.get(f"/uploads/{body['upload_id']}").text
        r = _post(client, f"/api/uploads/{body['upload_id']}/apply")
        assert r.status_code == 409 and "none of this file's items" in r.json()["detail"]
    assert sandbox.levels() == {}


def test_an_apply_from_the_page_sends_the_configured_notifications(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    import http.server

    received: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        s = _settings(sandbox, tmp_path, notify={"urls": [url], "on": ["succeeded"]})
        with _client(s) as client:
            login(client)
            upload_id = api_upload(client, data=_csv({"POSTER-1755": 6})).json()["upload_id"]
            assert _post(client, f"/api/uploads/{upload_id}/apply").status_code == 202
            done = _wait(client, upload_id, lambda b: b["status"] != "applying")
            assert done["status"] == "succeeded"
            # After apply, plan.csv says what became of each item (not "planned").
            plan = client.get(f"/api/uploads/{upload_id}/files/plan.csv").text
            assert "accepted" in plan and "planned" not in plan
            wait_for(lambda: received, every=0.1, message="no notification")
    finally:
        server.shutdown()
    assert json.loads(received[0])["run_id"] == done["run_id"]


def test_a_stuck_apply_says_why_within_seconds(sandbox: SandboxProcess, tmp_path: Path) -> None:
    import urllib.request

    from invsync.store.limits import RetryPolicy

    def faults(**values: float) -> None:
        req = urllib.request.Request(sandbox.url + "/_sandbox/faults", method="POST",
                                     data=json.dumps(values).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=30).close()

    s = _settings(sandbox, tmp_path, retry=RetryPolicy(max_attempts=6, base_delay_s=0.5,
                                                       max_delay_s=1.0, max_total_s=20))
    with _client(s) as client:
        login(client)
        upload_id = api_upload(client, data=_csv({"POSTER-1755": 2})).json()["upload_id"]
        faults(error_rate=1.0)  # the store now answers every request with an error
        try:
            assert _post(client, f"/api/uploads/{upload_id}/apply").status_code == 202
            body = _wait(client, upload_id, lambda b: b["status"] != "applying"
                         or bool((b.get("progress") or {}).get("slowed")), timeout=60)
            assert body["progress"]["slowed"] == \
                "the store is not answering properly: trying again"
            page = client.get(f"/uploads/{upload_id}").text
            assert "the store is not answering properly" in page
        finally:
            faults(error_rate=0.0)
        _wait(client, upload_id, lambda b: b["status"] != "applying", timeout=120)


def test_a_damaged_sessions_file_only_signs_people_out(settings: Settings) -> None:
    (settings.state_dir / "portal").mkdir(parents=True, exist_ok=True)
    (settings.state_dir / "portal" / "sessions.json").write_text("{not json")
    with _client(settings) as client:
        assert client.get("/", follow_redirects=False).status_code == 303
        assert login(client).status_code == 303  # signing in works, and rewrites the file
        assert client.get("/", follow_redirects=False).status_code == 200
    assert json.loads((settings.state_dir / "portal" / "sessions.json").read_text())


def test_cancel_while_waiting_for_the_store_sends_nothing(settings: Settings,
                                                          sandbox: SandboxProcess) -> None:
    from invsync.state.journal import StoreLock
    from invsync.state.snapshot import SnapshotStore

    s = settings
    held = StoreLock(SnapshotStore(s.state_dir, s.store_hash or "", s.api_url, s.profile)
                     .store_dir, s.store_hash or "")
    held.acquire("another-run", 0, state_dir=str(s.state_dir))  # as a CLI run would
    try:
        with _client(s) as client:
            login(client)
            upload_id = api_upload(client, data=_csv({"POSTER-1755": 4})).json()["upload_id"]
            assert _post(client, f"/api/uploads/{upload_id}/apply").status_code == 202
            _wait(client, upload_id, lambda b: (b.get("progress") or {}).get("phase")
                  == "waiting")
            assert _post(client, f"/api/uploads/{upload_id}/cancel").status_code == 202
            done = _wait(client, upload_id, lambda b: b["status"] not in ("applying",
                                                                          "cancelling"))
            assert done["status"] == "cancelled" and "run_id" not in done
            assert "Nothing was sent." in client.get(f"/uploads/{upload_id}").text
    finally:
        held.release()
    assert sandbox.levels() == {}
