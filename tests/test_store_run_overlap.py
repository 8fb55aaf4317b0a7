"""A store run's fixed cost: the locations read overlaps the file read, and the snapshot is
built while the batches are out, without changing what a run reports when either fails.

The real CLI against a real sandbox (through ``tests/misbehaving.py`` where the store must
misbehave), and the library entry point where the order of events inside a run matters.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import (
    SAMPLE,
    TOKEN,
    env_at,
    env_for,
    output,
    retry_config,
    run_invsync,
    spawn,
    state_store_dir,
    wait_for,
    write_csv,
)
from misbehaving import Reply, Request, misbehaving_store

import invsync
import invsync.run.store_access as store_access
import invsync.run.sync as sync_module
from invsync.sandbox.process import SandboxProcess
from invsync.state.snapshot import SnapshotStore

NIGHT1 = SAMPLE / "night1.csv"
LOCATIONS = "/inventory/locations"
PATIENT = {"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2, "max_total_s": 900.0,
           "timeout_s": 600.0}
"""A retry policy that waits ten minutes for an answer: a run held up by the store hangs."""


def _forbidden() -> Reply:
    return Reply.json(403, {"status": 403, "title": "You don't have a required scope to "
                                                    "access the endpoint"})


def _config(tmp_path: Path, url: str, sb: SandboxProcess) -> Path:
    config = tmp_path / "invsync.toml"
    config.write_text(f'store_hash = "{sb.store_hash}"\napi_url = "{url}"\n'
                      f'access_token = "{TOKEN}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'report_dir = "{tmp_path / "runs"}"\n')
    return config


def test_the_locations_read_goes_out_while_the_file_is_still_being_read(
        sandbox: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked = threading.Event()

    def respond(req: Request) -> Reply | None:
        if req.method == "GET" and req.path == LOCATIONS:
            asked.set()
        return None

    real_read = sync_module.read_stock_file
    seen_while_reading: list[bool] = []

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        # The file is read only once the store has been asked for its locations: a run
        # that asks only after reading the file never gets here in time.
        seen_while_reading.append(asked.wait(timeout=30))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(sync_module, "read_stock_file", slow_read)
    with misbehaving_store(respond, sandbox.url) as store:
        settings = invsync.Settings.from_config(_config(tmp_path, store.url, sandbox))
        report = invsync.sync_file(NIGHT1, settings)

    assert seen_while_reading == [True]
    assert (report.status, report.exit_code) == ("succeeded", 0), report.error
    assert store.paths("GET").count(LOCATIONS) == 1  # one read, shared with the submit
    assert report.input["rows"] > 0 and "ingest" in report.timings


def test_a_locations_read_refused_with_403_fails_the_run_as_before(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    def respond(req: Request) -> Reply | None:
        return _forbidden() if req.path == LOCATIONS else None

    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        for args in (["sync", str(NIGHT1)], ["sync", str(NIGHT1), "--dry-run"]):
            result = run_invsync(args, env)
            assert result.returncode == 2, (args, output(result))
            assert "Traceback" not in output(result)
            assert "lacks a scope" in result.stderr, output(result)
            report = result.report()
            assert report["status"] == "failed" and "HTTP 403" in report["error"]
            # The file was read and recorded before the store's refusal ended the run.
            assert report["input"]["rows"] > 0 and report["input"]["sha256"]
        assert store.paths("PUT") == []
    assert not (state_store_dir(tmp_path / "state", sandbox.store_hash, store.url)
                / "snapshot.parquet").exists()


def test_the_files_error_wins_over_a_refused_locations_read_and_leaves_no_stray_error(
        sandbox: SandboxProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # --zero-missing refuses a file whose rows a stray quote swallowed: an error found once
    # the file is read, while the store refuses the locations read (403).
    def respond(req: Request) -> Reply | None:
        return _forbidden() if req.path == LOCATIONS else None

    stock = tmp_path / "swallowed.csv"
    stock.write_text('sku,location_id,quantity\nPOSTER-1755,1,5\nPOSTER-1756,1,"6\n'
                     "POSTER-1757,1,7\n", encoding="utf-8")
    with misbehaving_store(respond, sandbox.url) as store:
        settings = invsync.Settings.from_config(_config(tmp_path, store.url, sandbox),
                                                zero_missing=True)
        report = invsync.sync_file(stock, settings)
        gc.collect()  # a store's error nobody looked at would be logged as it goes
    assert report.exit_code == 65 and "never closed" in (report.error or ""), report.error
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    assert store.paths("PUT") == []


def _holding_locations(held: threading.Event) -> Callable[[Request], Reply | None]:
    """A store that answers the locations read with an endless trickle (``held`` set once
    it is asked) and leaves every other request to the sandbox."""
    def respond(req: Request) -> Reply | None:
        if req.path == LOCATIONS:
            held.set()
            return Reply(200, b"", {"Content-Type": "application/json"}, drip_s=0.2,
                         endless=True)
        return None

    return respond


def test_a_bad_file_exits_65_without_waiting_for_a_store_that_does_not_answer(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    held = threading.Event()
    respond = _holding_locations(held)

    bad = write_csv(tmp_path / "bad.csv", ["sku", "location_id", "count_me"],
                    [["00123", "1", "5"], ["123", "1", "6"]])
    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        config = ["--config", str(retry_config(tmp_path, **PATIENT))]
        # The store holds the locations read for ten minutes; the run is given one.
        result = run_invsync(["sync", str(bad), *config], env, timeout=60)
        assert result.returncode == 65, output(result)
        assert "Traceback" not in output(result)
        assert "quantity" in result.report()["error"]
        assert result.report()["error_kind"] == "file"

        # A store that refuses the token changes nothing either: the file's error wins.
        denied = run_invsync(["sync", str(bad)], env_at(store.url, tmp_path, sandbox,
                                                        token="not-the-" + TOKEN))
        assert denied.returncode == 65, output(denied)
        assert store.paths("PUT") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_locations_read_is_held_ends_the_run_cleanly(
        sandbox: SandboxProcess, tmp_path: Path, children: list[subprocess.Popen[bytes]],
        sig: signal.Signals) -> None:
    held = threading.Event()
    respond = _holding_locations(held)

    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        config = ["--config", str(retry_config(tmp_path, **PATIENT))]
        log = tmp_path / "run.log"
        proc = spawn(["sync", str(NIGHT1), *config], env, log, children)
        assert held.wait(timeout=60), log.read_text()
        proc.send_signal(sig)
        code = proc.wait(timeout=60)  # the store would hold the read for ten minutes
        text = log.read_text()
        assert code == (130 if sig == signal.SIGINT else 143), text
        assert "Traceback" not in text and "interrupted" in text, text
        assert store.paths("PUT") == []


def test_a_missing_file_contacts_no_store(sandbox: SandboxProcess, tmp_path: Path) -> None:
    result = run_invsync(["sync", str(tmp_path / "nope.csv")], env_for(sandbox, tmp_path))
    assert result.returncode == 66, output(result)
    assert sandbox.requests() == []


def test_a_run_with_a_refused_item_keeps_the_snapshot_to_what_was_confirmed(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    # The snapshot built ahead (every item confirmed) is not the one written: one item is
    # refused, so the snapshot holds the others only.
    rows = [["POSTER-1755", "1", "3"], ["NO-SUCH-SKU-XYZ", "1", "4"]]
    stock = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"], rows)
    env = env_for(sandbox, tmp_path)
    result = run_invsync(["sync", str(stock)], env)
    assert result.returncode == 1, output(result)
    state = state_store_dir(tmp_path / "state", sandbox.store_hash, sandbox.url)
    snapshot = pl.read_parquet(state / "snapshot.parquet")
    assert snapshot.select("item_key", "quantity").rows() == [("POSTER-1755", 3)]
    last = pl.read_parquet(state / "last_write.parquet")
    assert last["item_key"].to_list() == ["POSTER-1755"]


def test_the_snapshot_is_built_ahead_once_the_first_batches_are_out(
        sandbox: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Built as the run starts sending, it would hold up the first requests: it is built
    # once the first `concurrency` batches are recorded as sending, and still written.
    recorded_then: list[int] = []
    real = sync_module._files_ahead

    def files_ahead(run: Any, items: pl.DataFrame) -> Any:
        text = run.journal.path.read_text()
        recorded_then.append(text.count('"type":"sending"'))
        return real(run, items)

    monkeypatch.setattr(sync_module, "_files_ahead", files_ahead)
    config = _config(tmp_path, sandbox.url, sandbox)
    settings = invsync.Settings.from_config(config)
    # Every item sent (a fresh snapshot), whatever an earlier test left in the store.
    settings = replace(settings, concurrency=3, batch_size=500, baseline="snapshot")
    report = invsync.sync_file(NIGHT1, settings)
    assert (report.status, report.exit_code) == ("succeeded", 0), report.error
    assert len(report.batches) > 3
    # (More when batches went out and were answered before a group of them: a fast store.)
    assert len(recorded_then) == 1 and recorded_then[0] >= 3
    snapshot = SnapshotStore(settings.state_dir, sandbox.store_hash, settings.store_host)
    assert snapshot.load().height == report.counts.changed


def test_the_report_templates_are_compiled_once_the_runs_client_is_made(
        sandbox: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Both are Python work that shares the GIL, and the store's locations read waits for
    # the client: the templates wait for it instead.
    made = threading.Event()
    real_client = store_access._warm_client

    def slow_client(*args: Any, **kwargs: Any) -> Any:
        made.wait(timeout=0.3)  # a slow import, bounded
        client = real_client(*args, **kwargs)
        made.set()
        return client

    seen: list[bool] = []
    real_warm_up = sync_module.warm_up

    def warm_up() -> None:
        seen.append(made.is_set())
        real_warm_up()

    monkeypatch.setattr(store_access, "_warm_client", slow_client)
    monkeypatch.setattr(sync_module, "warm_up", warm_up)
    settings = invsync.Settings.from_config(_config(tmp_path, sandbox.url, sandbox))
    report = invsync.sync_file(NIGHT1, replace(settings, dry_run=True))
    assert report.exit_code == 0, report.error
    wait_for(lambda: seen, timeout=30, message="the templates were never compiled")
    assert seen == [True]
