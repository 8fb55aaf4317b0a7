"""Sources without servers: SOURCE resolution, config checks, redaction, picking, settling,
freshness, after-processing of a local drop folder, and the CLI's plain refusals."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxProcess, catalog_skus, env_for, output, run_invsync, write_stock

from invsync.errors import UsageError
from invsync.redact import redact
from invsync.sources import (
    NotReadyError,
    RemoteFile,
    SourceSpec,
    StaleFileError,
    check_sources,
    is_source,
    resolve,
)
from invsync.sources.fetching import check_fresh, pick, wait_settled
from invsync.sources.remote import LocalRemote, sha256_fingerprint


def test_a_url_password_is_taken_out_and_never_shown() -> None:
    spec = resolve("sftp://bob:Pa55-word%2Fx@files.example:2222/out/stock.csv", {})
    assert spec.password is not None and spec.password.reveal() == "Pa55-word/x"
    assert spec.display == "sftp://bob@files.example:2222/out/stock.csv"
    assert (spec.host, spec.port, spec.username, spec.path) == \
        ("files.example", 2222, "bob", "/out/stock.csv")
    assert "Pa55" not in repr(spec)
    # Registered: any text that carries it later is cleaned.
    assert "Pa55-word/x" not in redact("error: login Pa55-word/x refused")


def test_redact_removes_url_passwords_and_secret_query_values_only() -> None:
    text = ("fetch sftp://u:hunter2@h/x failed; see https://s.example/f.csv?output=csv"
            "&token=abc123&X-Amz-Signature=ff00 and https://api.example/v3?page=2")
    out = redact(text)
    assert "hunter2" not in out and "abc123" not in out and "ff00" not in out
    assert "output=csv" in out and "page=2" in out and "sftp://u:[redacted]@h/x" in out


@pytest.mark.parametrize("word", ["token", "sftp", "x-auth-token", "Basic", "redacted", "u"])
def test_a_registered_secret_that_is_a_common_word_breaks_no_other_rule(
        word: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered secrets are global: one test's (or a config's) short token such as
    # "token" or "sftp" must not change a header or URL so that its value survives.
    import invsync.redact as redaction
    monkeypatch.setattr(redaction, "_secrets", set(redaction._secrets))
    monkeypatch.setattr(redaction, "_pattern", redaction._pattern)
    redaction.register(word)
    text = ("fetch sftp://u:hunter2@h/x?token=abc123 x-auth-token=zzz "
            "Authorization: Basic QWxhZGRpbg== {'X-Auth-Token': 'other-token-1'}")
    once = redact(text)
    for secret in ("hunter2", "abc123", "zzz", "QWxhZGRpbg==", "other-token-1"):
        assert secret not in once, once
    assert redact(once) == once


def test_a_url_takes_its_credentials_from_the_table_of_its_host() -> None:
    sources = check_sources({
        "a": {"url": "sftp://h.example/out/", "password": "one-pass-1", "pick": "newest"},
        "b": {"url": "sftp://h.example/out/eu/*.csv", "password": "two-pass-2"},
        "c": {"url": "sftp://other.example/out/", "password": "three-pass-3"},
    })
    spec = resolve("sftp://u@h.example/out/eu/stock_1.csv", sources)
    assert spec.name == "b" and spec.password is not None and spec.password.reveal() == \
        "two-pass-2"
    spec = resolve("sftp://u@h.example/out/x.csv", sources, pick="oldest")
    assert spec.name == "a" and spec.pick == "oldest"
    assert resolve("sftp://u@h.example:2200/out/x.csv", sources).password is None


def test_plain_paths_stay_plain_and_names_are_not_ambiguous(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    sources = {"warehouse": {"url": "/srv/x.csv"}}
    monkeypatch.chdir(tmp_path)
    assert not is_source("stock.csv", sources)
    assert is_source("warehouse", sources) and is_source("drop/*.csv", sources)
    assert is_source("s3://b/k.csv", sources)
    (tmp_path / "warehouse").write_text("x")
    with pytest.raises(UsageError, match=r"write \./warehouse"):
        resolve("warehouse", sources)
    assert resolve("../x", {"../x": {"url": "/x"}}).key == "_x"  # stays in sources/


@pytest.mark.parametrize(("table", "message"), [
    ({"url": "/x", "pasword": "typo"}, "unknown key"),
    ({"pick": "newest"}, "give url"),
    ({"url": "/x", "pick": "latest"}, "pick must be"),
    ({"url": "/x", "on_success": "move:../up/"}, "on_success must be"),
    ({"url": "/x", "on_success": "move:/etc/"}, "on_success must be"),
    ({"url": "/x", "on_failure": "delete"}, "on_failure must be"),
    ({"url": "/x", "max_age": "soon"}, "max_age must be"),
    ({"url": "/x", "host_key": "ab:cd"}, "host_key must be"),
    ({"url": "/x", "settle_s": -1}, "settle_s must be"),
    ({"url": "/x", "headers": {"A": 1}}, "headers must be"),
])
def test_a_bad_source_table_is_refused_at_start(table: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_sources({"w": table})


def test_pick_and_freshness() -> None:
    spec = SourceSpec(url="/d/*.csv", path="/d/*.csv")
    files = [RemoteFile("/d/a.csv", 1, 100.0), RemoteFile("/d/b.csv", 1, 300.0),
             RemoteFile("/d/c.csv", 1, 200.0)]
    with pytest.raises(UsageError, match="3 files match"):
        pick(spec, files)
    assert pick(SourceSpec(url="x", pick="newest"), files).path == "/d/b.csv"
    assert pick(SourceSpec(url="x", pick="oldest"), files).path == "/d/a.csv"
    with pytest.raises(StaleFileError, match="no file matches"):
        pick(spec, [])
    fresh = SourceSpec(url="x", max_age_s=3600)
    check_fresh(fresh, RemoteFile("/d/a.csv", 1, 10_000.0), now=10_000.0 + 3599)
    with pytest.raises(StaleFileError, match="older than max_age"):
        check_fresh(fresh, RemoteFile("/d/a.csv", 1, 10_000.0), now=10_000.0 + 3601)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_settling_waits_for_a_growing_file_and_gives_up_on_one_that_never_stops(
        tmp_path: Path) -> None:
    path = tmp_path / "stock.csv"
    path.write_text("a\n")
    clock = FakeClock()
    spec = SourceSpec(url=str(path), path=str(path), settle_s=1.0, settle_timeout_s=30)
    remote = LocalRemote(spec)
    grown = []

    def sleep_and_grow(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now < 5:  # written to for 5 s, then left alone
            with path.open("a") as fh:
                fh.write("b\n")
            os.utime(path, (time.time(), time.time() + clock.now))
            grown.append(clock.now)

    settled = wait_settled(remote, remote.list()[0], sleep=sleep_and_grow, clock=clock)
    assert settled.size == path.stat().st_size and clock.now >= grown[-1] + 1.0

    def always_growing(seconds: float) -> None:
        clock.sleep(seconds)
        with path.open("a") as fh:
            fh.write("c\n")

    clock.now = 0.0
    with pytest.raises(NotReadyError, match="still being written"):
        wait_settled(remote, remote.list()[0], sleep=always_growing, clock=clock)
    marked = SourceSpec(url=str(path), path=str(path), marker=".done", settle_timeout_s=3)
    clock.now = 0.0
    with pytest.raises(NotReadyError, match=r"no marker file stock\.csv\.done"):
        wait_settled(LocalRemote(marked), remote.list()[0], sleep=clock.sleep, clock=clock)


def test_host_key_fingerprints_are_openssh_s() -> None:
    # `ssh-keygen -lf` prints SHA256 of the key blob, base64 without padding.
    assert sha256_fingerprint(b"") == "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"


def test_local_drop_folder_moves_on_success_and_failure(sandbox: SandboxProcess,
                                                       tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    write_stock(drop / "stock_a.csv", {(1, s): 5 for s in catalog_skus(2)})
    (drop / "done").mkdir()
    write_stock(drop / "done" / "stock_a.csv", {})  # a name already taken in done/
    cfg = source_config(tmp_path, "drop", url=f"{drop}/stock_*.csv", settle_s=0.1,
                        on_success="move:done/", on_failure="move:failed/")
    env = env_for(sandbox, tmp_path)
    ok = run_invsync(["sync", "drop", "--config", str(cfg)], env)
    assert ok.returncode == 0, output(ok)
    assert len(list((drop / "done").glob("stock_a*.csv"))) == 2  # both kept
    (drop / "stock_b.csv").write_text("this is not a stock file\n")
    bad = run_invsync(["sync", "drop", "--config", str(cfg)], env)
    assert bad.returncode == 65, output(bad)
    assert (drop / "failed" / "stock_b.csv").exists()
    missing = run_invsync(["sync", "drop", "--config", str(cfg)], env)
    assert missing.returncode == 3 and "no file matches" in missing.stderr, output(missing)


def test_the_cli_refuses_plainly(sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    stock = write_stock(tmp_path / "stock.csv", {(1, s): 1 for s in catalog_skus(1)})
    result = run_invsync(["sync", str(stock), "--max-age", "26h"], env)
    assert result.returncode == 64 and "apply to a SOURCE" in result.stderr, output(result)
    cfg = source_config(tmp_path, "w", url="sftp://h/x.csv", onsuccess="delete")  # a typo
    result = run_invsync(["sync", "w", "--config", str(cfg)], env)
    assert result.returncode == 64 and "unknown key(s) onsuccess" in result.stderr
    result = run_invsync(["sync", "gopher://h/x.csv"], env)
    assert result.returncode == 64 and "unknown source scheme" in result.stderr
    result = run_invsync(["sync", f"{tmp_path}/*.csv", "--max-age", "0"], env)
    assert result.returncode == 64 and "--max-age must be" in result.stderr
    for r in (result,):
        assert "Traceback" not in output(r)


def test_a_store_failure_leaves_the_file_where_it_is(sandbox: SandboxProcess,
                                                     tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    stock = write_stock(drop / "stock.csv", {(1, s): 5 for s in catalog_skus(2)})
    cfg = source_config(tmp_path, "drop", url=f"{drop}/*.csv", settle_s=0.1,
                        on_success="delete", on_failure="move:failed/")
    result = run_invsync(["sync", "drop", "--config", str(cfg)],
                         env_for(sandbox, tmp_path, token="not-the-token-1"))
    assert result.returncode == 2, output(result)
    assert stock.exists() and not (drop / "failed").exists()  # run again once the store works
    result = run_invsync(["sync", "drop", "--config", str(cfg)], env_for(sandbox, tmp_path))
    assert result.returncode == 0, output(result)
    assert not stock.exists()


def test_every_secret_of_a_source_table_is_redacted_and_kept_out_of_repr() -> None:
    from invsync.run.config import Settings

    table = {"url": "s3://b/k.csv", "secret_access_key": "s3cr3t-Value-9",
             "session_token": "sess-Token-77", "headers": {"X-Api-Key": "hdr-Key-555"}}
    settings = Settings(sources=check_sources({"b": table}))
    for secret in ("s3cr3t-Value-9", "sess-Token-77", "hdr-Key-555"):
        assert secret not in redact(f"boto said {secret}!")
        assert secret not in repr(settings)


def test_redacting_twice_changes_nothing_more() -> None:
    once = redact("https://h/x.csv?token=abc: refused; sftp://u:pw@h/x: refused")
    assert redact(once) == once
    assert once == "https://h/x.csv?token=[redacted]: refused; sftp://u:[redacted]@h/x: refused"


def test_password_env_names_a_variable_that_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = check_sources({"w": {"url": "sftp://u@h/x.csv", "password_env": "W_PASS"}})
    monkeypatch.delenv("W_PASS", raising=False)
    with pytest.raises(UsageError, match="W_PASS is not set"):
        resolve("w", sources)
    monkeypatch.setenv("W_PASS", "from-the-env-42")
    spec = resolve("w", sources)
    assert spec.password is not None and spec.password.reveal() == "from-the-env-42"
    assert "from-the-env-42" not in redact("x from-the-env-42 y")


@pytest.mark.parametrize(("key", "value"), [
    ("anonymous", "false"), ("verify_tls", "no"), ("tls", 1), ("timeout_s", 0),
    ("marker", 5), ("url", 5), ("key_file", 5), ("username", ["a"]), ("password", 123),
    ("on_success", True),
])
def test_a_source_value_of_the_wrong_type_is_refused_naming_its_key(key: str,
                                                                     value: object) -> None:
    # anonymous = "false" must not read as true (a string is not a boolean), nor a number
    # as a file name: the config is refused (exit 64) and the message names the key.
    table = {"url": "s3://bucket/stock.csv", key: value}
    with pytest.raises(UsageError, match=rf"\[sources\.w\] {key}\b") as refused:
        check_sources({"w": table})
    assert "123" not in str(refused.value)  # a password of the wrong type is not shown


def test_an_http_redirect_to_another_host_carries_none_of_the_sources_headers(
        tmp_path: Path) -> None:
    # httpx drops only Authorization on a cross-origin redirect: a token in X-Api-Key (or
    # any configured header) must not reach the host the feed redirects to.
    from invsync.sources.remote import HttpRemote

    seen: list[dict[str, str]] = []
    body = b"sku,location_id,qty\nA,1,5\n"

    def other(req: BaseHTTPRequestHandler) -> None:
        seen.append({k.lower(): v for k, v in req.headers.items()})
        answer(req, body, content_type=None)

    with http_server(other) as other_url:
        def redirect(req: BaseHTTPRequestHandler) -> None:
            answer(req, b"", 302, {"Location": f"{other_url}/x.csv"}, content_type=None)

        with http_server(redirect) as feed_url:
            spec = resolve(f"{feed_url}/stock.csv", check_sources({
                "feed": {"url": f"{feed_url}/stock.csv",
                         "headers": {"X-Api-Key": "k-51d2-secret",
                                     "Authorization": "Bearer t-9"}},
            }))
            remote = HttpRemote(spec)
            file = remote.list()[0]
            done = remote.download(file, tmp_path / "x.csv")
            assert done.size == len(body)
    assert seen, "the redirect was not followed"
    for headers in seen:
        assert "x-api-key" not in headers and "authorization" not in headers, headers


def source_config(tmp_path: Path, name: str, **keys: str | float) -> Path:
    """A config file whose ``[sources.NAME]`` table holds ``keys`` (strings quoted)."""
    path = tmp_path / "invsync.toml"
    path.write_text(f"[sources.{name}]\n" + "".join(
        f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v!r}\n" for k, v in keys.items()))
    return path


@contextmanager
def http_server(handle: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 (in threads) whose every GET and HEAD ``handle``
    answers; yields its base URL and is always shut down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            handle(self)

        do_HEAD = do_GET

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def answer(req: BaseHTTPRequestHandler, body: bytes, status: int = 200,
           headers: dict[str, str] | None = None,
           content_type: str | None = "text/csv") -> None:
    """Answer ``req`` with ``body`` and its length (no body to a HEAD)."""
    req.send_response(status)
    for name, value in {**({"Content-Type": content_type} if content_type else {}),
                        **(headers or {}), "Content-Length": str(len(body))}.items():
        req.send_header(name, value)
    req.end_headers()
    if req.command == "GET":
        req.wfile.write(body)


def serving(body: bytes, content_type: str = "text/csv") -> Any:
    """:func:`http_server` answering every GET with ``body``."""
    return http_server(lambda req: answer(req, body, content_type=content_type))


def test_a_token_in_a_feed_urls_query_is_stored_and_shown_nowhere(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    # A Google Sheets-style link with its key in the query: the key must not reach the run
    # folder (report.json, source.json), last.json, the JSON events or `runs`/`show`.
    stock = write_stock(tmp_path / "feed.csv", {(1, s): 7 for s in catalog_skus(2)})
    secret = "SeKrEt-feed-key-0912"
    env = env_for(sandbox, tmp_path)
    with serving(stock.read_bytes()) as base:
        url = f"{base}/pub?output=csv&token={secret}"
        results = [run_invsync(["--log-format", "json", "sync", url], env),
                   run_invsync(["-vv", "sync", url, "--force"], env),
                   run_invsync(["runs"], env), run_invsync(["show", "last"], env)]
    assert [r.returncode for r in results] == [0, 0, 0, 0], output(results[0])
    for result in results:
        assert secret not in output(result)
    stored = [p for p in (tmp_path / "state").rglob("*") if p.is_file()
              and p.suffix in (".json", ".jsonl", ".md", ".html", ".csv")]
    assert any(p.name == "source.json" for p in stored)
    for path in stored:
        assert secret not in path.read_text(encoding="utf-8", errors="replace"), path


def test_a_server_that_drips_bytes_is_given_up_on(sandbox: SandboxProcess,
                                                  tmp_path: Path) -> None:
    # Every read gets a byte within timeout_s, so a per-read timeout alone never fires: the
    # download must give up on a server that sends next to nothing (exit 2), not hang.
    stop = threading.Event()

    def drip(req: BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "text/csv")
        req.end_headers()
        if req.command == "HEAD":
            return
        req.wfile.write(b"sku,location_id,quantity\n")
        while not stop.wait(0.2):  # a byte every 0.2 s, for ever: the point of the test
            try:
                req.wfile.write(b"A")
                req.wfile.flush()
            except OSError:
                return

    with http_server(drip) as base:
        cfg = source_config(tmp_path, "feed", url=f"{base}/stock.csv", timeout_s=1)
        try:
            result = run_invsync(["sync", "feed", "--config", str(cfg)],
                                 env_for(sandbox, tmp_path), timeout=120)
        finally:
            stop.set()
    assert result.returncode == 2, output(result)
    assert "too slowly" in result.stderr and "Traceback" not in output(result)


def test_a_file_replaced_during_the_run_is_not_deleted_unread(sandbox: SandboxProcess,
                                                               tmp_path: Path) -> None:
    # The next export lands under the same name while the run sends the one it read:
    # on_success = "delete" must not delete bytes no run has read.
    from conftest import env_at
    from misbehaving import misbehaving_store

    drop = tmp_path / "drop"
    drop.mkdir()
    skus = catalog_skus(3)
    stock = write_stock(drop / "stock.csv", {(1, s): 5 for s in skus})
    os.utime(stock, (time.time() - 60, time.time() - 60))
    cfg = source_config(tmp_path, "drop", url=f"{drop}/stock*.csv", settle_s=0.1,
                        on_success="delete")

    def respond(request: Any) -> None:
        if request.method == "PUT" and stock.read_text().count(",5\n"):
            write_stock(stock, {(1, s): 77 for s in skus})  # the next night's file arrives
        return None

    with misbehaving_store(respond, sandbox.url) as store:
        result = run_invsync(["sync", "drop", "--config", str(cfg)],
                             env_at(store.url, tmp_path, sandbox))
    assert result.returncode == 0, output(result)
    assert stock.exists(), "the new file was deleted without being read"
    assert ",77" in stock.read_text()
    assert "changed at the source" in output(result)


def test_a_feed_answering_200_with_an_html_page_is_a_source_error(sandbox: SandboxProcess,
                                                                    tmp_path: Path) -> None:
    # A login or error page sent as 200 OK is the server failing (exit 2, run again next
    # time), not an unusable stock file (exit 65) reported with a garbled column list.
    page = b"<!DOCTYPE html>\n<html><body><h1>Session expired</h1>, please log in</body></html>"
    with serving(page, "text/html; charset=utf-8") as base:
        result = run_invsync(["sync", f"{base}/stock.csv"], env_for(sandbox, tmp_path))
    assert result.returncode == 2, output(result)
    assert "web page" in result.stderr and "Traceback" not in output(result)
    assert not list((tmp_path / "state").rglob("report.json"))  # nothing was run


def test_a_drop_folder_named_by_its_path_is_its_configured_source(tmp_path: Path) -> None:
    # `watch drop` and a cron `sync /srv/drop/stock_*.csv` are the same source: one state
    # folder (ledger, last run, watch lock), or the cron run processes each file again.
    sources = check_sources({"drop": {"url": f"{tmp_path}/drop/stock_*.csv", "pick": "newest",
                                      "on_success": "move:done/"}})
    by_name = resolve("drop", sources)
    for arg in (f"{tmp_path}/drop/stock_*.csv", f"{tmp_path}/drop/../drop/stock_*.csv"):
        by_path = resolve(arg, sources)
        assert by_path.key == by_name.key and by_path.on_success == "move:done/"
    assert resolve(f"{tmp_path}/other/stock_*.csv", sources).key != by_name.key


@pytest.mark.parametrize("url", [
    "ftp://u:pa/ss-9Kq@127.0.0.1:1/x.csv",     # a '/' in a password not %-encoded
    "sftp://u:pa/ss-9Kq@[::1/x.csv",            # and a broken IPv6 host
    "gopher://u:pa/ss-9Kq@h/x.csv",
])
def test_a_malformed_url_is_refused_as_usage_without_its_password(url: str) -> None:
    with pytest.raises(UsageError) as refused:
        resolve(url, {"w": {"url": "sftp://h/out/"}})
    assert "ss-9Kq" not in str(refused.value)
    with pytest.raises(UsageError):
        resolve("sftp://[::1/x.csv", {})
    with pytest.raises(UsageError) as refused:  # in the config: refused when it is read
        check_sources({"w": {"url": url}})
    assert "ss-9Kq" not in str(refused.value)


def test_an_http_source_logs_in_with_its_user_name_and_password(sandbox: SandboxProcess,
                                                                 tmp_path: Path) -> None:
    # username/password are the login of every scheme (docs/sources.md): for http(s) they
    # are Basic auth, not silently dropped (a 401 and "check the headers").
    import base64

    body = write_stock(tmp_path / "feed.csv", {(1, s): 3 for s in catalog_skus(2)}).read_bytes()
    want = "Basic " + base64.b64encode(b"shop:pw-Basic-551").decode()

    def login_first(req: BaseHTTPRequestHandler) -> None:
        if req.headers.get("Authorization") != want:
            answer(req, b"", 401, {"WWW-Authenticate": 'Basic realm="feed"'}, content_type=None)
        else:
            answer(req, body, content_type=None)

    env = env_for(sandbox, tmp_path)
    with http_server(login_first) as base:
        cfg = source_config(tmp_path, "feed", url=base.replace("http://", "http://shop@")
                            + "/f.csv", password="pw-Basic-551")
        result = run_invsync(["sync", "feed", "--config", str(cfg)], env)
    assert result.returncode == 0, output(result)
    assert "pw-Basic-551" not in output(result)


def test_watch_of_a_feed_without_last_modified_sees_each_change_once(
        sandbox: SandboxProcess, tmp_path: Path, children: list) -> None:
    # A published sheet answers with no Last-Modified: the same URL and size is no sign that
    # nothing changed. Each new content is run once, an unchanged one never again.
    import json
    import signal

    from conftest import spawn, wait_for

    skus = catalog_skus(2)
    feed = {"body": write_stock(tmp_path / "v1.csv", {(1, s): 11 for s in skus}).read_bytes()}
    ledger = tmp_path / "state" / "invsync" / "sources" / "sheet" / "ledger.jsonl"
    runs = tmp_path / "state" / "invsync" / "runs"

    def entries() -> list[dict[str, Any]]:
        text = ledger.read_text() if ledger.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    log = tmp_path / "watch.log"
    # A published sheet: no Last-Modified, whatever the body is now.
    with http_server(lambda req: answer(req, feed["body"])) as base:
        cfg = source_config(tmp_path, "sheet", url=f"{base}/pub.csv", interval_s=0.2)
        proc = spawn(["watch", "sheet", "--config", str(cfg)], env_for(sandbox, tmp_path), log,
                     children)
        try:
            wait_for(lambda: len(entries()) == 1, proc, log)
            feed["body"] = write_stock(tmp_path / "v2.csv",
                                       {(1, s): 22 for s in skus}).read_bytes()
            wait_for(lambda: len(entries()) == 2, proc, log)
            # Sleeps that are the point: the watch looks again and again (every 0.2 s) at a
            # feed that did not change, and must process nothing twice.
            time.sleep(1.5)
            feed["body"] = (tmp_path / "v1.csv").read_bytes()  # back to the first content
            wait_for(lambda: len(entries()) == 3, proc, log)
            time.sleep(1.0)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    assert [e["status"] for e in entries()] == ["processed"] * 3, log.read_text()
    assert len(list(runs.glob("*/report.json"))) == 3
    assert log.read_text().count("unchanged since") == 0, log.read_text()


def test_an_unusable_source_file_is_named_by_where_it_came_from(sandbox: SandboxProcess,
                                                                 tmp_path: Path) -> None:
    # A zero-byte export: the message names the file at the source, not the state folder's
    # internal copy of it.
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "stock_1.csv").write_bytes(b"")
    result = run_invsync(["sync", f"{drop}/stock_*.csv", "--settle", "0.1"],
                         env_for(sandbox, tmp_path))
    assert result.returncode == 65, output(result)
    assert f"{drop}/stock_1.csv: the file is empty" in result.stderr, output(result)
    assert "/sources/" not in result.stderr
    assert f"{drop}/stock_1.csv" in result.report()["error"]


def test_a_glob_that_also_matches_marker_files_reads_the_export(tmp_path: Path) -> None:
    # url = ".../stock_*" with marker = ".done": the marker (newer than its file) is never
    # the file read; sync picks among the exports as watch does.
    from invsync.sources.fetching import fetch

    drop = tmp_path / "drop"
    drop.mkdir()
    old = time.time() - 100
    (drop / "stock_1.csv").write_text("sku,location_id,quantity\nA,1,5\n")
    os.utime(drop / "stock_1.csv", (old, old))
    (drop / "stock_1.csv.done").write_text("")
    spec = resolve(f"{drop}/stock_*", {}, pick="newest", marker=".done")
    fetched = fetch(spec, tmp_path / "state", sleep=lambda _s: None)
    assert fetched.file.name == "stock_1.csv"


def test_a_download_left_by_a_killed_run_is_cleaned_up(tmp_path: Path) -> None:
    # kill -9 mid-download leaves .incoming-<pid>-<name>.part (up to 2 GiB) in the state
    # folder: the next fetch removes it once that process is gone; a live one's is kept.
    import subprocess
    import sys

    from invsync.sources.fetching import fetch

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "stock.csv").write_text("sku,location_id,quantity\nA,1,5\n")
    downloads = tmp_path / "state" / "sources"
    spec = resolve(f"{drop}/stock*.csv", {"d": {"url": f"{drop}/stock*.csv"}}, settle_s=0.0)
    fetched_dir = downloads / spec.key / "fetched"
    fetched_dir.mkdir(parents=True)
    left = fetched_dir / f".incoming-{dead.pid}-stock.csv.part"
    left.write_bytes(b"x" * 1000)
    live = fetched_dir / f".incoming-{os.getpid()}-other.csv.part"  # a live download
    live.write_bytes(b"y")
    fetch(spec, tmp_path / "state", sleep=lambda _s: None)
    assert not left.exists() and live.exists()


def test_max_age_that_cannot_be_checked_says_so(sandbox: SandboxProcess, tmp_path: Path) -> None:
    # A feed without Last-Modified: max_age cannot guard it; the run must not look guarded.
    stock = write_stock(tmp_path / "feed.csv", {(1, s): 4 for s in catalog_skus(2)})
    with serving(stock.read_bytes()) as base:
        result = run_invsync(["sync", f"{base}/f.csv", "--max-age", "26h"],
                             env_for(sandbox, tmp_path))
    assert result.returncode == 0, output(result)
    assert any("max_age could not be checked" in n for n in result.report()["notes"])
    assert "max_age could not be checked" in result.stdout
