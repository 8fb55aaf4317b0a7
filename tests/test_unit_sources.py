"""Sources without servers: SOURCE resolution, config checks, redaction, picking, settling,
freshness, after-processing of a local drop folder, and the CLI's plain refusals."""

from __future__ import annotations

import os
import time
from pathlib import Path

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
from invsync.sources.fetch import check_fresh, pick, wait_settled
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
    cfg = tmp_path / "invsync.toml"
    cfg.write_text(f'[sources.drop]\nurl = "{drop}/stock_*.csv"\nsettle_s = 0.1\n'
                   f'on_success = "move:done/"\non_failure = "move:failed/"\n')
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
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[sources.w]\nurl = "sftp://h/x.csv"\nonsuccess = "delete"\n')
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
    cfg = tmp_path / "invsync.toml"
    cfg.write_text(f'[sources.drop]\nurl = "{drop}/*.csv"\nsettle_s = 0.1\n'
                   f'on_success = "delete"\non_failure = "move:failed/"\n')
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
