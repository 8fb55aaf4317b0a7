"""Round 9 red team: what a careless operator, a merchant on the upload page or a refusing
or failing store did to this round's changes (``counts.unchecked``, the upload API's
``store-permission`` problem, a state disk too full for the lock or the journal's start),
kept as tests."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    catalog_skus,
    env_at,
    env_for,
    kill_when,
    output,
    retry_config,
    run_invsync,
    spawn,
    wait_for,
    write_stock,
)
from contracts import check_events
from misbehaving import Reply, Request, misbehaving_store
from test_web import PASSWORD, CheckedClient, api_upload, csrf_of, login, make_settings

from invsync.run.config import Secret, Settings
from invsync.sandbox.process import SandboxProcess
from invsync.store.limits import RetryPolicy
from invsync.surfaces.web.app import Options, create_app
from invsync.surfaces.web.auth import Accounts

FILE = b"sku,quantity\nTOWEL-907-NAVY-SHEET,5\n"
FAST = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05, max_total_s=5.0,
                   timeout_s=5.0)


def _words(html: str) -> str:
    """A page's text as the merchant reads it."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _client(settings: Settings) -> Iterator[CheckedClient]:
    Accounts(settings.state_dir).add_user("merchant", PASSWORD)
    with CheckedClient(create_app(settings, Options()), base_url="http://testserver") as c:
        login(c)
        yield c


def _locations(mode: dict[str, int | None]) -> Callable[[Request], Reply | None]:
    """The store's locations answered with HTTP ``mode["status"]`` (None: forwarded)."""

    def respond(req: Request) -> Reply | None:
        status = mode["status"]
        if status is not None and req.method == "GET" and req.path == "/inventory/locations":
            return Reply.json(status, {"title": "no"})
        return None

    return respond


def test_a_refused_token_is_told_to_the_merchant_without_an_environment_variable(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    # Before: "the store refused the access token (HTTP 401): check BIGCOMMERCE_ACCESS_TOKEN
    # and the store hash. The file itself is fine: the store did not accept invsync's
    # access token; ..." -- the CLI's words, naming a variable the merchant never sees.
    settings = replace(make_settings(sandbox, tmp_path), token=Secret("not-the-token"))
    for c in _client(settings):
        r = api_upload(c, data=FILE)
        assert r.status_code == 502, r.text
        body: dict[str, Any] = r.json()
        assert body["type"] == "urn:invsync:problem:store-permission", body
        page = _words(c.get(f"/uploads/{body['upload_id']}").text)
    for said in (body["detail"], page):
        assert "BIGCOMMERCE_" not in said, said
        assert "HTTP 401" in said and "access token" in said, said
        assert "The file itself is fine" in said and "ask whoever set up invsync" in said
    assert "not-the-token" not in r.text + page


def test_a_store_failing_at_the_preview_does_not_call_the_file_unusable(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    # The API says preview-failed (502: the file may be fine), but the upload's page said
    # "This file could not be used." and offered only to read the file another way; once
    # the store recovers, "Preview again" makes the preview.
    mode: dict[str, int | None] = {"status": 500}
    with misbehaving_store(_locations(mode), sandbox.url) as store:
        settings = replace(make_settings(sandbox, tmp_path), api_url=store.url, retry=FAST)
        for c in _client(settings):
            r = api_upload(c, data=FILE)
            assert r.status_code == 502, r.text
            assert r.json()["type"] == "urn:invsync:problem:preview-failed", r.text
            upload_id = r.json()["upload_id"]
            page = c.get(f"/uploads/{upload_id}").text
            words = _words(page)
            assert "This file could not be used" not in words, words
            assert "The store kept failing" in words and "The file may be fine" in words
            assert 'id="preview-again"' in page
            mode["status"] = None  # the store recovers
            again = c.post(f"/uploads/{upload_id}/preview",
                           data={"csrf_token": csrf_of(c)}, follow_redirects=True)
            assert again.status_code == 200, again.text
            assert c.get(f"/api/uploads/{upload_id}").json()["status"] == "planned"


def test_a_file_the_page_cannot_read_still_says_so(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    # The page's new "the store kept failing" words are for store failures only.
    for c in _client(make_settings(sandbox, tmp_path)):
        r = api_upload(c, data=b"sku,quantity\n" + b"\xff\xfe\x00garbage\x00" * 3)
        if r.status_code != 422:
            pytest.skip(f"this file was read after all: {r.status_code}")
        words = _words(c.get(f"/uploads/{r.json()['upload_id']}").text) \
            if r.json().get("upload_id") else ""
    assert "The store kept failing" not in words


def test_a_report_folder_too_full_names_no_missing_folder_in_run_finished(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    # The stock is sent, the report folder (8 KiB) cannot hold the run folder: it is
    # removed, and the summary says "report=" (none). run_finished still named the removed
    # folder as its report_dir, so a script following it found nothing there.
    reports = tmpfs(tmp_path / "reports", "8k")
    levels = {(1, sku): 3 for sku in catalog_skus(300)}
    path = write_stock(tmp_path / "stock.csv", levels)
    result = run_invsync(["sync", str(path), "--report-dir", str(reports),
                          "--log-format", "json"], env_for(sandbox, tmp_path))
    assert result.returncode == 2, output(result)
    assert sandbox.levels() == levels  # the stock was sent
    finished = [e for e in check_events(result.stdout) if e["event"] == "run_finished"]
    assert len(finished) == 1, result.stdout
    event = finished[0]
    assert "the stock was sent" in event["error"], event
    folder = event["report_dir"]
    assert folder == "" or (Path(folder) / "report.json").is_file(), (folder, event)
    assert event["summary"].endswith(f"report={folder}"), event


def test_a_journal_start_cut_mid_record_leaves_nothing_to_recover(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    # A long --reason makes the journal's first record longer than the one page the state
    # disk has left: the page was written, the rest was not. The run said "nothing was
    # sent, run the same command again", but the torn journal stayed (only an empty one was
    # removed): the next run "recovered 0 confirmed levels ... from interrupted run ?", and
    # closing it at the run's end failed again ("could not close the journal").
    state = tmpfs(tmp_path / "state", "12k")
    levels = {(1, sku): 3 for sku in catalog_skus(12)}
    path = write_stock(tmp_path / "stock.csv", levels)
    args = ["sync", str(path), "--reason", "stock count " * 500,
            "--report-dir", str(tmp_path / "reports")]
    env = env_for(sandbox, tmp_path)
    first = run_invsync(args, env)
    text = output(first)
    assert first.returncode == 2, text
    assert "could not be started" in text and "nothing was sent" in text, text
    assert "could not close the journal" not in text, text
    assert not list(state.rglob("journal.jsonl")), [str(p) for p in state.rglob("*")]
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]
    subprocess.run(["mount", "-o", "remount,size=4m", str(state)], check=True)
    again = run_invsync(args, env)
    assert again.returncode == 0, output(again)
    assert "recovered" not in output(again) and "finished=" not in again.stdout
    assert sandbox.levels() == levels


def test_a_full_host_lock_folder_is_named_not_the_state_folder(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    # The host-wide lock lives in its own folder (INVSYNC_LOCK_DIR, else the system temp
    # dir). That folder full, the run said "the state folder ... is not writable (No space
    # left on device)": the operator made room on the wrong disk.
    locks = tmpfs(tmp_path / "locks", "4k", "mode=0700")
    (locks / "filler").write_bytes(b"x" * 4096)
    levels = {(1, sku): 3 for sku in catalog_skus(12)}
    path = write_stock(tmp_path / "stock.csv", levels)
    env = {**env_for(sandbox, tmp_path), "INVSYNC_LOCK_DIR": str(locks)}
    result = run_invsync(["sync", str(path), "--report-dir", str(tmp_path / "reports")], env)
    text = output(result)
    assert result.returncode == 64, text
    assert "Traceback" not in text and "unexpected error" not in text, text
    assert str(locks) in text and "nothing was sent" in text, text
    assert "state folder" not in text, text
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


@pytest.mark.parametrize(("status", "kind", "words"), [
    (403, "store-permission", "The store did not let invsync read what the preview needs"),
    (401, "store-permission", "The store did not let invsync read what the preview needs"),
    (500, "preview-failed", "The store kept failing while the preview was made"),
])
def test_fetch_now_of_a_source_the_store_refuses_or_fails(
        sandbox: SandboxProcess, tmp_path: Path, status: int, kind: str, words: str) -> None:
    """'Fetch now' (API and page) when the store refuses or fails the preview's reads."""
    from invsync.sources import check_sources

    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "stock_1.csv").write_bytes(FILE)
    mode: dict[str, int | None] = {"status": status}
    with misbehaving_store(_locations(mode), sandbox.url) as store:
        settings = replace(make_settings(sandbox, tmp_path), api_url=store.url, retry=FAST,
                           sources=check_sources({"drop": {"url": f"{drop}/stock_*.csv",
                                                           "settle_s": 0}}))
        for c in _client(settings):
            r = c.post("/api/sources/drop/fetch", headers={"X-CSRF-Token": csrf_of(c)})
            assert r.status_code == 502, r.text
            body = r.json()
            assert body["type"] == f"urn:invsync:problem:{kind}", body
            assert body["upload_id"] and r.headers["Location"].endswith(body["upload_id"])
            assert "BIGCOMMERCE_" not in body["detail"], body
            page = c.post("/sources/drop/fetch", data={"csrf_token": csrf_of(c), "force": "true"},
                          follow_redirects=True)
            assert words in _words(page.text), _words(page.text)[-1500:]
            assert "This file could not be used" not in page.text
            mode["status"] = None  # the store answers again: Preview again works
            again = c.post(f"/uploads/{body['upload_id']}/preview",
                           data={"csrf_token": csrf_of(c)}, follow_redirects=True)
            assert again.status_code == 200, again.text
            assert c.get(f"/api/uploads/{body['upload_id']}").json()["status"] == "planned"


def test_a_state_disk_too_full_for_a_sources_copy_names_the_state_folder(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    # A source's file is copied into the state folder before it is read. That disk full,
    # the run said "stock_*.csv: reading .../drop/stock_1.csv: OSError: [Errno 28] No space
    # left on device": a Python class name, and the wrong disk (the drop folder is fine).
    drop = tmp_path / "drop"
    drop.mkdir()
    write_stock(drop / "stock_1.csv",
                {(loc, sku): 3 for loc in (1, 2) for sku in catalog_skus(1500)})
    state = tmpfs(tmp_path / "state", "32k")
    result = run_invsync(["sync", str(drop / "stock_*.csv"), "--settle", "0",
                          "--report-dir", str(tmp_path / "reports")], env_for(sandbox, tmp_path))
    text = output(result)
    assert result.returncode == 2, text
    assert "OSError" not in text and "Errno" not in text and "Traceback" not in text, text
    assert "state folder" in text and str(state) in text and "nothing was sent" in text, text
    assert not list(state.rglob("*.part"))
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


def test_an_upload_the_state_disk_cannot_hold_is_refused_in_words(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path]) -> None:
    # The uploads are kept in the state folder. That disk full, the API answered 500 "the
    # request failed; the server log has the details" and the page "Something went wrong",
    # and half the file stayed behind in an upload folder with no record.
    import io

    state = tmpfs(tmp_path / "state", "24k", "mode=0700")
    data = ("sku,quantity\n" + "".join(f"{s},5\n" for s in catalog_skus(1500))).encode()
    for c in _client(make_settings(sandbox, tmp_path)):
        r = api_upload(c, data=data)
        assert r.status_code == 500, r.text
        assert "could not keep the file" in r.json()["detail"], r.text
        assert "nothing was kept or sent" in r.json()["detail"], r.text
        page = c.post("/uploads", files={"file": ("s.csv", io.BytesIO(data), "text/csv")},
                      data={"csrf_token": csrf_of(c)}, follow_redirects=True)
        assert "could not keep the file" in _words(page.text), _words(page.text)[:600]
        assert "Something went wrong" not in page.text
    assert not [p for p in state.rglob("upload.csv")], list(state.rglob("*"))
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


@pytest.mark.parametrize("size", ["40k", "96k"])
def test_a_preview_the_state_disk_cannot_keep_is_not_planned(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path], size: str) -> None:
    # The file fits the state disk, the preview's run folder does not. 40k: the upload was
    # answered 201 "planned" with no counts and no changes, and Apply then failed with
    # "plan.csv: cannot read file: No such file or directory". 96k: the upload's record
    # could not be saved, and the API said 500 "the server log has the details".
    tmpfs(tmp_path / "state", size, "mode=0700")
    data = ("sku,quantity\n" + "".join(f"{s},5\n" for s in catalog_skus(300))).encode()
    for c in _client(make_settings(sandbox, tmp_path)):
        r = api_upload(c, data=data)
        assert r.status_code == 500, r.text
        body = r.json()
        assert "the preview could not be kept" in body["detail"], body
        assert "Nothing was sent" in body["detail"] and "make room" in body["detail"], body
        upload_id = body.get("upload_id")
        if body.get("upload_status"):  # 96k: not even the upload's record could be saved
            assert body["upload_status"] == "failed", body
            upload = c.get(f"/api/uploads/{upload_id}").json()
            assert upload["status"] == "failed", upload
            refused = c.post(f"/api/uploads/{upload_id}/apply",
                             headers={"X-CSRF-Token": csrf_of(c)})
            assert refused.status_code == 409, refused.text
            words = _words(c.get(f"/uploads/{upload_id}").text)
            assert "The server could not keep the preview" in words, words[-800:]
            assert "This file could not be used" not in words
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_store_that_refuses_only_the_write_tells_the_merchant_who_can_fix_it(
        sandbox: SandboxProcess, tmp_path: Path, status: int) -> None:
    # A good preview, then the store refuses the PUT. The page and the API said the CLI's
    # words: "the store refused the access token (HTTP 401): check BIGCOMMERCE_ACCESS_TOKEN
    # and the store hash", naming nobody the merchant can ask.
    from test_web import wait_done

    def respond(req: Request) -> Reply | None:
        if req.method == "PUT":
            return Reply.json(status, {"title": "no"})
        return None

    with misbehaving_store(respond, sandbox.url) as store:
        settings = replace(make_settings(sandbox, tmp_path), api_url=store.url, retry=FAST)
        for c in _client(settings):
            r = api_upload(c, data=FILE)
            assert r.status_code == 201, r.text
            upload_id = r.json()["upload_id"]
            applied = c.post(f"/api/uploads/{upload_id}/apply",
                             headers={"X-CSRF-Token": csrf_of(c)})
            assert applied.status_code == 202, applied.text
            upload = wait_done(c, upload_id)
            words = _words(c.get(f"/uploads/{upload_id}").text)
    assert upload["status"] == "failed", upload
    for said in (upload["error"], words):
        assert "BIGCOMMERCE_" not in said, said
        assert f"HTTP {status}" in said and "ask whoever set up invsync" in said, said
    assert sandbox.levels() == {}  # nothing was applied


def test_a_run_stopped_while_its_file_is_read_does_not_say_it_read_0_rows(
        sandbox: SandboxProcess, tmp_path: Path,
        children: list[subprocess.Popen[bytes]]) -> None:
    # SIGTERM while a big file is still being read: the summary said "rows read 0", as
    # for an empty file (report.json: no input.rows, every count 0).
    path = tmp_path / "big.csv"
    with path.open("w") as fh:
        fh.write("sku,location_id,quantity\n")
        fh.writelines(f"SKU-{i},1,{i % 7}\n" for i in range(3_000_000))
    env = env_for(sandbox, tmp_path)
    del env["BIGCOMMERCE_ACCESS_TOKEN"]  # offline: the file is read in the main thread
    reports, log = tmp_path / "reports", tmp_path / "run.log"
    proc = spawn(["sync", str(path), "--dry-run", "--report-dir", str(reports)], env, log,
                 children)
    # The report folder is proven writable just before the run begins (then the file is
    # read, for about a second).
    wait_for(reports.exists, proc, log, timeout=60)
    time.sleep(0.15)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 143, text
    written = list(reports.glob("*/report.json"))
    if not written:
        pytest.skip("the signal came before the run began (no run then)")
    report = json.loads(written[0].read_text())
    if "rows" in report["input"]:
        pytest.skip("the file was read before the signal came")
    assert "rows read 0" not in text and "rows read         0" not in text, text
    assert "rows read: none, the run stopped while reading the file" in text, text
    assert "Traceback" not in text


def test_a_resume_the_store_fails_does_not_say_it_finished_the_killed_run(
        sandbox: SandboxProcess, tmp_path: Path,
        children: list[subprocess.Popen[bytes]]) -> None:
    # A run killed (-9) with batches out; `invsync resume` then fails at the store's
    # locations (HTTP 500): nothing sent, its rows unchecked, the journal kept. Its summary
    # line said "finished=<killed run> (it stopped before writing its report)", though the
    # next resume is the one that finishes it (and says so too).
    from misbehaving import HoldPuts

    levels = {(1, sku): 3 for sku in catalog_skus(40)}
    path = write_stock(tmp_path / "stock.csv", levels)
    hold = HoldPuts(let=1)
    failing = {"on": False}

    def respond(req: Request) -> Reply | None:
        if failing["on"] and req.path == "/inventory/locations":
            return Reply.json(500, {"title": "down"})
        return hold(req)

    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        log = tmp_path / "killed.log"
        proc = spawn(["sync", str(path), "--batch-size", "10"], env, log, children)
        kill_when(hold.held.is_set, proc, log)  # kill -9 with a batch out
        hold.stop()
        failing["on"] = True
        config = retry_config(tmp_path, max_attempts=2)
        failed = run_invsync(["resume", "--config", str(config), "--log-format", "json"], env)
        failing["on"] = False
        done = run_invsync(["resume"], env)
    assert failed.returncode == 2, output(failed)
    event = next(e for e in check_events(failed.stdout) if e["event"] == "run_finished")
    assert event["counts"]["unchecked"] == 40, event
    assert "finished=" not in event["summary"], event["summary"]
    assert done.returncode == 0, output(done)
    killed = done.report()["resumed_from"]
    assert killed and f"finished={killed}" in done.stdout.splitlines()[-1], output(done)
    assert sandbox.levels() == levels


@pytest.mark.parametrize("size", ["24k", "40k"])
def test_fetch_now_onto_a_full_state_disk_blames_the_disk_not_the_source(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path], size: str) -> None:
    # 24k: the fetched copy does not fit; the API said 502 source-unreachable, "the server
    # could not be reached, or it did not hand over the file" (the source was fine).
    # 40k: the copy fits, its preview does not (see the upload test above).
    from invsync.sources import check_sources

    drop = tmp_path / "drop"
    drop.mkdir()
    rows = 1500 if size == "24k" else 300
    (drop / "stock_1.csv").write_bytes(
        ("sku,quantity\n" + "".join(f"{s},5\n" for s in catalog_skus(rows))).encode())
    tmpfs(tmp_path / "state", size, "mode=0700")
    settings = replace(make_settings(sandbox, tmp_path), sources=check_sources(
        {"drop": {"url": f"{drop}/stock_*.csv", "settle_s": 0}}))
    for c in _client(settings):
        r = c.post("/api/sources/drop/fetch", headers={"X-CSRF-Token": csrf_of(c)})
        assert r.status_code == 500, r.text
        body = r.json()
        assert body["type"] == "urn:invsync:problem:internal", body
        assert "disk has no room" in body["detail"] and "could not be reached" not in r.text
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]
