"""Sources: the real CLI fetching its file from real servers on 127.0.0.1 (SFTP: asyncssh's
server; FTP: pyftpdlib; S3: moto in server mode; HTTPS with a test CA: trustme) and from a
watched drop folder, into a real sandbox store. Every server is a process the test starts
and stops."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    SandboxProcess,
    catalog_skus,
    env_for,
    output,
    run_invsync,
    spawn,
    wait_for,
    write_stock,
)

asyncssh = pytest.importorskip("asyncssh")
pytest.importorskip("paramiko")
pytest.importorskip("fsspec")

pytestmark = pytest.mark.integration

USER, PASSWORD = "merchant", "pw-7Hq2-sekret"
Start = Callable[..., int]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Start]:
    """``start(kind, *args)`` runs ``source_servers.py KIND ARGS``; returns its port."""
    procs: list[subprocess.Popen[str]] = []

    def start(kind: str, *args: Any) -> int:
        log = (tmp_path / f"server-{kind}-{len(procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "source_servers.py"), kind, *map(str, args)],
            stdout=subprocess.PIPE, stderr=log, text=True)
        procs.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, f"the {kind} server did not start"
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), f"{kind} server: {line!r}"
        return int(line.split()[1])

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def levels() -> dict[tuple[int, str], int]:
    return {(1, sku): 40 + i for i, sku in enumerate(catalog_skus(3))}


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def config(tmp_path: Path, name: str, url: str, **keys: Any) -> Path:
    """A config file with one ``[sources.NAME]`` table (and any ``[notify]`` given)."""
    notify = keys.pop("notify", None)
    lines = [f"[sources.{name}]", f"url = {json.dumps(url)}"]
    for key, value in keys.items():
        lines.append(f"{key} = {toml(value)}")
    if notify:
        lines += ["", "[notify]", f"url = {json.dumps(notify)}", 'on = ["stale_file", "failed"]',
                  "attempts = 1"]
    path = tmp_path / "invsync.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- SFTP --------------------------------------------------------------------------------


class Sftp:
    def __init__(self, root: Path, port: int, fingerprint: str) -> None:
        self.root, self.port, self.fingerprint = root, port, fingerprint

    def url(self, path: str, user: str = USER) -> str:
        return f"sftp://{user}@127.0.0.1:{self.port}/{path}"


@pytest.fixture
def sftp(servers: Start, tmp_path: Path) -> Sftp:
    root = tmp_path / "sftp-root"
    (root / "out").mkdir(parents=True)
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "host_key"
    key.write_private_key(str(key_file))
    port = servers("sftp", root, USER, PASSWORD, key_file)
    return Sftp(root, port, key.get_fingerprint("sha256"))


def sftp_config(tmp_path: Path, server: Sftp, path: str = "out/stock.csv", **keys: Any) -> Path:
    keys.setdefault("host_key", server.fingerprint)
    keys.setdefault("password", PASSWORD)
    keys.setdefault("settle_s", 0.3)
    keys.setdefault("timeout_s", 10)
    return config(tmp_path, "warehouse", server.url(path), **keys)


def test_sftp_sync_then_unchanged_file_is_a_no_op(sftp: Sftp, sandbox: SandboxProcess,
                                                   tmp_path: Path, levels: dict) -> None:
    write_stock(sftp.root / "out" / "stock.csv", levels)
    cfg = sftp_config(tmp_path, sftp)
    env = env_for(sandbox, tmp_path)
    first = run_invsync(["sync", "warehouse", "--config", str(cfg)], env)
    assert first.returncode == 0, output(first)
    report = first.report()
    assert report["counts"]["accepted"] == len(levels)
    assert report["origin"]["source"]["source"] == sftp.url("out/stock.csv")
    assert report["input"]["path"] == sftp.url("out/stock.csv")  # where it came from
    assert Path(report["input"]["fetched"]).read_bytes() == \
        (sftp.root / "out" / "stock.csv").read_bytes()
    kept = first.report_dir() / "fetched" / "stock.csv"
    assert kept.read_bytes() == (sftp.root / "out" / "stock.csv").read_bytes()
    source = json.loads((first.report_dir() / "source.json").read_text())
    import hashlib
    assert source["sha256"] == hashlib.sha256(kept.read_bytes()).hexdigest()

    again = run_invsync(["sync", "warehouse", "--config", str(cfg)], env)
    assert again.returncode == 0, output(again)
    assert f"unchanged since run {report['run_id']}" in again.stdout
    assert "report: " not in again.stdout  # no run
    forced = run_invsync(["sync", "warehouse", "--config", str(cfg), "--force"], env)
    assert forced.returncode == 0, output(forced)
    assert forced.report()["run_id"] != report["run_id"]
    for result in (first, again, forced):
        assert PASSWORD not in output(result)
    assert PASSWORD not in (first.report_dir() / "report.json").read_text()


def test_sftp_file_still_growing_is_read_only_once_whole(
        sftp: Sftp, sandbox: SandboxProcess, tmp_path: Path) -> None:
    skus = catalog_skus(30)
    target = sftp.root / "out" / "stock.csv"
    target.write_text("sku,location_id,quantity\n")

    def grow() -> None:
        for i, sku in enumerate(skus):
            with target.open("a") as fh:
                fh.write(f"{sku},1,{i + 1}\n")
            time.sleep(0.05)

    writer = threading.Thread(target=grow)
    writer.start()
    cfg = sftp_config(tmp_path, sftp, settle_s=1.5)  # the writer pauses 0.05 s at a time
    try:
        result = run_invsync(["sync", "warehouse", "--config", str(cfg)],
                             env_for(sandbox, tmp_path))
    finally:
        writer.join()
    assert result.returncode == 0, output(result)
    assert result.report()["counts"]["rows"] == len(skus)


def test_sftp_marker_file(sftp: Sftp, sandbox: SandboxProcess, tmp_path: Path,
                          levels: dict) -> None:
    write_stock(sftp.root / "out" / "stock.csv", levels)
    cfg = sftp_config(tmp_path, sftp, marker=".done", settle_timeout_s=1)
    env = env_for(sandbox, tmp_path)
    waiting = run_invsync(["sync", "warehouse", "--config", str(cfg)], env)
    assert waiting.returncode == 3, output(waiting)
    assert "no marker file stock.csv.done" in waiting.stderr
    (sftp.root / "out" / "stock.csv.done").write_text("")
    cfg = sftp_config(tmp_path, sftp, marker=".done", on_success="move:done/")
    done = run_invsync(["sync", "warehouse", "--config", str(cfg)], env)
    assert done.returncode == 0, output(done)
    # After the outcome was recorded: the file and its marker moved to done/.
    assert sorted(p.name for p in (sftp.root / "out" / "done").iterdir()) == \
        ["stock.csv", "stock.csv.done"]
    assert not (sftp.root / "out" / "stock.csv").exists()
    assert any("moved stock.csv" in n for n in done.report()["notes"])


def test_sftp_stale_file_exit_3_and_notification(sftp: Sftp, sandbox: SandboxProcess,
                                                  tmp_path: Path, levels: dict) -> None:
    stock = write_stock(sftp.root / "out" / "stock.csv", levels)
    old = time.time() - 30 * 3600
    os.utime(stock, (old, old))
    hooks = tmp_path / "hooks.jsonl"
    receiver = subprocess.Popen([sys.executable, str(ROOT / "tests" / "webhook_receiver.py"),
                                 str(hooks)], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        url = receiver.stdout.readline().split()[-1]
        cfg = sftp_config(tmp_path, sftp, max_age="26h", notify=url,
                          on_failure="move:failed/")
        result = run_invsync(["sync", "warehouse", "--config", str(cfg)],
                             env_for(sandbox, tmp_path))
    finally:
        receiver.kill()
        receiver.wait()
    assert result.returncode == 3, output(result)
    assert "older than max_age" in result.stderr
    body = json.loads(hooks.read_text().splitlines()[0])["body"]
    assert body["event"] == "stale_file"
    assert "stock.csv" in body["text"] and PASSWORD not in hooks.read_text()
    assert stock.exists()  # a refused file is not a failed run: left where it is


def test_sftp_wrong_host_key_is_refused_before_the_password_is_sent(
        sftp: Sftp, sandbox: SandboxProcess, tmp_path: Path, levels: dict) -> None:
    write_stock(sftp.root / "out" / "stock.csv", levels)
    other = asyncssh.generate_private_key("ssh-ed25519").get_fingerprint("sha256")
    cfg = sftp_config(tmp_path, sftp, host_key=other)
    result = run_invsync(["sync", "warehouse", "--config", str(cfg)], env_for(sandbox, tmp_path))
    assert result.returncode == 2, output(result)
    assert f"host key is {sftp.fingerprint}" in result.stderr and "refused" in result.stderr
    assert PASSWORD not in output(result)
    # Without any host_key the key is not trusted either; the message says what to set.
    unknown = config(tmp_path, "warehouse", sftp.url("out/stock.csv"), password=PASSWORD)
    result = run_invsync(["sync", "warehouse", "--config", str(unknown)],
                         env_for(sandbox, tmp_path))
    assert result.returncode == 2, output(result)
    assert f'host_key = "{sftp.fingerprint}"' in result.stderr


def test_sftp_wrong_password_exit_2_and_no_secret_printed(
        sftp: Sftp, sandbox: SandboxProcess, tmp_path: Path, levels: dict) -> None:
    write_stock(sftp.root / "out" / "stock.csv", levels)
    wrong = "wrong-Zx81-passphrase"
    cfg = sftp_config(tmp_path, sftp, password=wrong)
    env = env_for(sandbox, tmp_path)
    result = run_invsync(["--log-format", "json", "sync", "warehouse", "--config", str(cfg)],
                         env)
    assert result.returncode == 2, output(result)
    assert "refused the login" in output(result)
    assert wrong not in output(result)
    # A password in the URL itself is never shown either (nor kept in the state folder).
    url = f"sftp://{USER}:{wrong}@127.0.0.1:{sftp.port}/out/stock.csv"
    cfg = config(tmp_path, "warehouse", f"sftp://127.0.0.1:{sftp.port}/out/",
                 host_key=sftp.fingerprint)
    result = run_invsync(["-vv", "sync", url, "--config", str(cfg)], env)
    assert result.returncode == 2, output(result)
    assert wrong not in output(result)
    assert "refused the login" in result.stderr
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert wrong.encode() not in path.read_bytes(), path


def test_a_server_that_never_answers_is_bounded(servers: Start, sandbox: SandboxProcess,
                                                tmp_path: Path) -> None:
    port = servers("hang")
    env = env_for(sandbox, tmp_path)
    for url in (f"sftp://u@127.0.0.1:{port}/stock.csv", f"https://127.0.0.1:{port}/stock.csv"):
        cfg = config(tmp_path, "slow", url, password=PASSWORD, timeout_s=1,
                     host_key="SHA256:x")
        started = time.monotonic()
        result = run_invsync(["sync", "slow", "--config", str(cfg)], env, timeout=60)
        assert result.returncode == 2, output(result)
        assert "no answer within 1 s" in result.stderr, output(result)
        assert time.monotonic() - started < 50  # bounded (10x and more the timeout)


# --- FTP ---------------------------------------------------------------------------------


def test_ftp_glob_with_three_files_and_pick_newest(servers: Start, sandbox: SandboxProcess,
                                                   tmp_path: Path) -> None:
    pytest.importorskip("pyftpdlib")
    root = tmp_path / "ftp-root"
    (root / "exports").mkdir(parents=True)
    skus = catalog_skus(3)
    now = time.time()
    for age_h, qty in ((30, 1), (2, 7), (10, 3)):
        name = f"stock_{qty}.csv"
        write_stock(root / "exports" / name, {(1, s): qty for s in skus})
        os.utime(root / "exports" / name, (now - age_h * 3600, now - age_h * 3600))
    port = servers("ftp", root, USER, PASSWORD)
    url = f"ftp://{USER}@127.0.0.1:{port}/exports/stock_*.csv"
    cfg = config(tmp_path, "supplier", url, password=PASSWORD, settle_s=0.2, timeout_s=10)
    env = env_for(sandbox, tmp_path)
    several = run_invsync(["plan", "supplier", "--config", str(cfg)], env)
    assert several.returncode == 64, output(several)
    assert "3 files match" in several.stderr and "--pick newest" in several.stderr
    newest = run_invsync(["sync", "supplier", "--config", str(cfg), "--pick", "newest"], env)
    assert newest.returncode == 0, output(newest)
    assert newest.report()["origin"]["source"]["path"].endswith("stock_7.csv")
    bad = config(tmp_path, "supplier", url, password="not-it-91", timeout_s=10)
    refused = run_invsync(["sync", "supplier", "--config", str(bad), "--pick", "newest"], env)
    assert refused.returncode == 2, output(refused)
    assert "refused the login" in refused.stderr and "not-it-91" not in output(refused)


# --- S3 ----------------------------------------------------------------------------------


def test_s3_bucket_sync_unchanged_by_etag_then_delete(servers: Start, sandbox: SandboxProcess,
                                                      tmp_path: Path, levels: dict) -> None:
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    pytest.importorskip("moto")
    port = servers("s3")
    endpoint = f"http://127.0.0.1:{port}"
    secret = "s3-secret-Qq81"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIATEST",
                      aws_secret_access_key=secret, region_name="us-east-1")
    s3.create_bucket(Bucket="exports")
    body = write_stock(tmp_path / "stock.csv", levels).read_bytes()
    s3.put_object(Bucket="exports", Key="nightly/stock.csv", Body=body)
    keys = {"endpoint_url": endpoint, "access_key_id": "AKIATEST", "secret_access_key": secret,
            "region": "us-east-1", "timeout_s": 10}
    cfg = config(tmp_path, "bucket", "s3://exports/nightly/stock.csv", **keys)
    env = env_for(sandbox, tmp_path)
    first = run_invsync(["sync", "bucket", "--config", str(cfg)], env)
    assert first.returncode == 0, output(first)
    assert first.report()["origin"]["source"]["etag"]
    again = run_invsync(["sync", "bucket", "--config", str(cfg)], env)
    assert again.returncode == 0 and "unchanged since run" in again.stdout, output(again)
    cfg = config(tmp_path, "bucket", "s3://exports/nightly/stock.csv", on_success="delete",
                 **keys)
    forced = run_invsync(["sync", "bucket", "--config", str(cfg), "--force"], env)
    assert forced.returncode == 0, output(forced)
    assert s3.list_objects_v2(Bucket="exports").get("KeyCount") == 0
    assert forced.report()["input"]["path"] == "s3://exports/nightly/stock.csv"
    assert secret not in output(first) + output(again) + output(forced)


def make_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A test CA's server certificate for 127.0.0.1: (cert chain, key, CA) files."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return cert_file, key_file, ca_file


def test_ftps_checks_the_server_certificate_before_the_password_goes(
        servers: Start, sandbox: SandboxProcess, tmp_path: Path, levels: dict) -> None:
    pytest.importorskip("OpenSSL")  # pyftpdlib's TLS handler
    cert_file, key_file, ca_file = make_ca(tmp_path)
    root = tmp_path / "ftps-root"
    root.mkdir()
    write_stock(root / "stock.csv", levels)
    port = servers("ftp", root, USER, PASSWORD, cert_file, key_file)
    url = f"ftps://{USER}@127.0.0.1:{port}/stock.csv"
    env = env_for(sandbox, tmp_path)
    untrusted = config(tmp_path, "secure", url, password=PASSWORD, timeout_s=10)
    refused = run_invsync(["sync", "secure", "--config", str(untrusted)], env)
    assert refused.returncode == 2, output(refused)
    assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr and PASSWORD not in output(refused)
    cfg = config(tmp_path, "secure", url, password=PASSWORD, timeout_s=10, settle_s=0.2,
                 ca_file=str(ca_file))
    result = run_invsync(["sync", "secure", "--config", str(cfg)], env)
    assert result.returncode == 0, output(result)
    assert result.report()["counts"]["accepted"] == len(levels)


# --- HTTPS -------------------------------------------------------------------------------


def test_https_with_a_test_ca_token_header_and_304(servers: Start, sandbox: SandboxProcess,
                                                   tmp_path: Path, levels: dict) -> None:
    cert_file, key_file, ca_file = make_ca(tmp_path)
    root = tmp_path / "web"
    root.mkdir()
    write_stock(root / "feed.csv", levels)
    token = "feed-token-55Ab"
    log = tmp_path / "https.log"
    port = servers("https", root, cert_file, key_file, log, token)
    url = f"https://127.0.0.1:{port}/feed.csv"
    env = env_for(sandbox, tmp_path)
    untrusted = config(tmp_path, "feed", url, headers={"Authorization": f"Bearer {token}"})
    result = run_invsync(["sync", "feed", "--config", str(untrusted)], env)
    assert result.returncode == 2 and "CERTIFICATE" in result.stderr.upper(), output(result)
    cfg = config(tmp_path, "feed", url, ca_file=str(ca_file),
                 headers={"Authorization": f"Bearer {token}"})
    first = run_invsync(["sync", "feed", "--config", str(cfg)], env)
    assert first.returncode == 0, output(first)
    again = run_invsync(["sync", url, "--config", str(cfg)], env)  # the URL finds the table
    assert again.returncode == 0 and "unchanged since run" in again.stdout, output(again)
    # Not downloaded again: the HEAD's ETag (or a conditional GET's 304) said so.
    assert log.read_text().count("GET /feed.csv 200") == 1
    write_stock(root / "feed.csv", {k: v + 1 for k, v in levels.items()})  # a new feed
    changed = run_invsync(["sync", "feed", "--config", str(cfg)], env)
    assert changed.returncode == 0, output(changed)
    assert changed.report()["input"]["path"] == url
    assert changed.report()["counts"]["accepted"] == len(levels)
    assert token not in output(first) + output(again)
    assert token not in (first.report_dir() / "report.json").read_text()


# --- watch -------------------------------------------------------------------------------


def test_watch_processes_two_arrivals_and_stops_cleanly_on_sigterm(
        sandbox: SandboxProcess, tmp_path: Path, children: list) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    skus = catalog_skus(3)
    env = env_for(sandbox, tmp_path)
    ledger = tmp_path / "state" / "invsync" / "sources" / "drop" / "ledger.jsonl"
    cfg = config(tmp_path, "drop", str(drop / "stock_*.csv"), settle_s=0.2, interval_s=0.2,
                 on_success="move:done/")

    def processed() -> list[dict[str, Any]]:
        if not ledger.exists():
            return []
        return [json.loads(line) for line in ledger.read_text().splitlines()]

    log = tmp_path / "watch1.log"
    proc = spawn(["watch", "drop", "--config", str(cfg)], env, log, children)
    write_stock(drop / "stock_1.csv", {(1, s): 11 for s in skus})
    wait_for(lambda: len(processed()) == 1, proc, log)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()
    assert "watch stopped" in log.read_text()
    # Arrives while no watch runs; the restarted watch takes it, and only it.
    write_stock(drop / "stock_2.csv", {(1, s): 22 for s in skus})
    log2 = tmp_path / "watch2.log"
    proc = spawn(["watch", "drop", "--config", str(cfg)], env, log2, children)
    wait_for(lambda: len(processed()) == 2, proc, log2)
    # A second watch of the same source is refused (its own lock).
    second = run_invsync(["watch", "drop", "--config", str(cfg)], env)
    assert second.returncode == 4, output(second)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log2.read_text()
    entries = processed()
    assert [Path(e["path"]).name for e in entries] == ["stock_1.csv", "stock_2.csv"]
    assert all(e["status"] == "processed" and e["run_id"] for e in entries)
    assert sorted(p.name for p in (drop / "done").iterdir()) == ["stock_1.csv", "stock_2.csv"]
    runs = [json.loads(p.read_text()) for p in (tmp_path / "state" / "invsync" / "runs")
            .glob("*/report.json")]
    assert len(runs) == 2 and all(r["exit_code"] == 0 for r in runs)


# --- plain messages ----------------------------------------------------------------------


def test_a_missing_extra_is_named(sandbox: SandboxProcess, tmp_path: Path) -> None:
    fake = tmp_path / "no-s3fs"
    fake.mkdir()
    (fake / "s3fs.py").write_text("raise ImportError('not installed')\n")
    env = {**env_for(sandbox, tmp_path), "PYTHONPATH": str(fake)}
    result = run_invsync(["sync", "s3://bucket/stock.csv"], env)
    assert result.returncode == 64, output(result)
    assert "pip install 'invsync[s3]'" in result.stderr
    assert "Traceback" not in output(result)


def test_sftp_glob_picks_the_newest_and_a_bad_file_moves_to_failed(
        sftp: Sftp, sandbox: SandboxProcess, tmp_path: Path) -> None:
    skus = catalog_skus(2)
    now = time.time()
    for age_h, qty in ((5, 1), (1, 2), (3, 3)):
        path = write_stock(sftp.root / "out" / f"stock_{qty}.csv", {(1, s): qty for s in skus})
        os.utime(path, (now - age_h * 3600, now - age_h * 3600))
    cfg = sftp_config(tmp_path, sftp, "out/stock_*.csv", pick="newest",
                      on_failure="move:failed/")
    env = env_for(sandbox, tmp_path)
    result = run_invsync(["sync", "warehouse", "--config", str(cfg)], env)
    assert result.returncode == 0, output(result)
    assert result.report()["origin"]["source"]["path"] == "/out/stock_2.csv"
    (sftp.root / "out" / "stock_9.csv").write_text("no stock here\n")
    bad = run_invsync(["sync", "warehouse", "--config", str(cfg)], env)
    assert bad.returncode == 65, output(bad)
    assert (sftp.root / "out" / "failed" / "stock_9.csv").exists()
    assert any("moved stock_9.csv" in n for n in bad.report()["notes"])


def test_watch_json_stale_and_duplicate_bytes(sandbox: SandboxProcess, tmp_path: Path,
                                              children: list) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    skus = catalog_skus(2)
    old = write_stock(drop / "stock_0.csv", {(1, s): 3 for s in skus})
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cfg = config(tmp_path, "drop", str(drop / "*.csv"), settle_s=0.2, interval_s=0.2,
                 max_age="1h")
    log = tmp_path / "watch.log"
    proc = spawn(["--log-format", "json", "watch", "drop", "--config", str(cfg)],
                 env_for(sandbox, tmp_path), log, children)

    def events() -> list[dict[str, Any]]:
        out = []
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def named(name: str) -> list[dict[str, Any]]:
        return [e for e in events() if e.get("event") == name]

    wait_for(lambda: bool(named("watch_problem")), proc, log)
    assert "older than max_age" in named("watch_problem")[0]["error"]
    fresh = write_stock(drop / "stock_1.csv", {(1, s): 4 for s in skus})
    wait_for(lambda: len(named("run_finished")) == 1, proc, log)
    (drop / "stock_2.csv").write_bytes(fresh.read_bytes())  # the same bytes again
    wait_for(lambda: bool(named("source_unchanged")), proc, log)
    time.sleep(1)  # several more looks: nothing is processed twice
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()
    assert len(named("run_finished")) == 1 and len(named("watch_problem")) == 1
    assert named("source_unchanged")[0]["unchanged_since"] == \
        named("run_finished")[0]["run_id"]


def test_watch_stops_at_once_on_sigterm_while_a_file_settles(
        sandbox: SandboxProcess, tmp_path: Path, children: list) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    cfg = config(tmp_path, "drop", str(drop / "*.csv"), settle_s=120, interval_s=0.2)
    log = tmp_path / "watch.log"
    proc = spawn(["watch", "drop", "--config", str(cfg)], env_for(sandbox, tmp_path), log,
                 children)
    wait_for(lambda: "watching" in log.read_text(), proc, log)
    stock = write_stock(drop / "stock.csv", {(1, s): 1 for s in catalog_skus(1)})
    time.sleep(1.5)  # found, and waiting for it to settle (120 s)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()  # well before the 120 s
    assert "watch stopped" in log.read_text()
    assert stock.exists()
    assert not (tmp_path / "state" / "invsync" / "sources" / "drop" / "ledger.jsonl").exists()
    assert not (tmp_path / "state" / "invsync" / "runs").exists() or \
        not list((tmp_path / "state" / "invsync" / "runs").glob("*/report.json"))
