"""Red-team findings against the CLI: each test reproduces one defect found by attacking the
README's guarantees (the store ends equal to the file or the run says loudly that it did not;
never a traceback; never the token in any output).

The real CLI (a child process) against a real sandbox process on 127.0.0.1, with a small
misbehaving server (``tests/misbehaving.py``) in front of it where the attack needs one.
Each test guards a fix made after this hunt (it failed before the fix).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

from conftest import (
    catalog_skus,
    confirmed_in_journal,
    env_at,
    kill_when,
    output,
    retry_config,
    run_invsync,
    spawn,
    wait_for,
    write_stock,
)
from misbehaving import HoldPuts, misbehaving_store

from invsync.sandbox.process import SandboxProcess
from invsync.state.journal import ENV_LOCK_DIR

Factory = Callable[..., SandboxProcess]


# ---- helpers -----------------------------------------------------------------------------


# ---- 2. the host-wide lock is not host-wide when XDG_RUNTIME_DIR differs -----------------


def test_second_run_with_another_state_dir_and_no_xdg_runtime_dir_is_locked_out(
        sandbox: SandboxProcess, tmp_path: Path,
        children: list[subprocess.Popen[bytes]]) -> None:
    hold = HoldPuts(let=0)  # the first run's first PUT is held: it holds its locks

    skus = catalog_skus(20)
    night_a = write_stock(tmp_path / "a.csv", {(1, s): 10 + i for i, s in enumerate(skus)})
    night_b = write_stock(tmp_path / "b.csv", {(1, s): 50 + i for i, s in enumerate(skus)})
    shared_tmp = tmp_path / "tmp"
    shared_tmp.mkdir()
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    with misbehaving_store(hold, sandbox.url) as store:
        base = env_at(store.url, tmp_path, sandbox)
        base.pop(ENV_LOCK_DIR, None)
        base["TMPDIR"] = str(shared_tmp)       # both see the same system temp dir
        shell = {**base, "XDG_RUNTIME_DIR": str(runtime)}
        cron = {k: v for k, v in base.items() if k != "XDG_RUNTIME_DIR"}
        log = tmp_path / "first.log"
        first = spawn(["sync", str(night_a), "--state-dir", str(tmp_path / "sd-a")], shell,
                      log, children)
        try:
            wait_for(hold.held.is_set, first, log)    # the first run holds its locks and sends
            second = run_invsync(["sync", str(night_b), "--state-dir", str(tmp_path / "sd-b")],
                                 cron, timeout=120)
        finally:
            hold.stop()
        first.wait(timeout=120)
    assert second.returncode == 4, output(second)
    assert "Traceback" not in output(second)


# ---- 3. drift after kill -9 calls the killed run's own confirmed writes manual edits -----


def test_drift_after_kill_9_does_not_report_the_killed_runs_confirmed_writes(
        sandbox: SandboxProcess, tmp_path: Path,
        children: list[subprocess.Popen[bytes]]) -> None:
    hold = HoldPuts(let=1, armed=False)

    skus = catalog_skus(10)
    before = {(1, s): 10 + i for i, s in enumerate(skus)}
    after = {(1, s): 100 + i for i, s in enumerate(skus)}
    with misbehaving_store(hold, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        first = run_invsync(["sync", str(write_stock(tmp_path / "before.csv", before))], env)
        assert first.returncode == 0, output(first)
        hold.armed = True
        log = tmp_path / "killed.log"
        args = ["sync", str(write_stock(tmp_path / "after.csv", after)),
                "--batch-size", "5", "--concurrency", "1"]
        killed = spawn(args, env, log, children)
        try:  # kill -9 once a batch is confirmed and the next one is in flight
            kill_when(lambda: confirmed_in_journal(tmp_path / "state") and hold.held.is_set(),
                      killed, log)
        finally:
            hold.stop()
        # The first batch landed and was confirmed; the second never reached the store.
        landed = sandbox.levels()
        applied = [k for k in after if landed.get(k) == after[k]]
        assert len(applied) == 5, landed
        drift = run_invsync(["drift"], env)
    assert "Traceback" not in output(drift)
    for _, sku in applied:
        assert sku not in drift.stdout, drift.stdout
    assert drift.returncode == 0, output(drift)
    # It says why: the killed run's journal was read, and the batch in flight is unknown.
    assert "interrupted run" in drift.stdout and "unknown level" in drift.stdout, drift.stdout


# ---- 4. a full state disk mid-send: the report keeps what the store confirmed ----------


def test_full_state_disk_mid_send_reports_what_the_store_confirmed(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        tmpfs: Callable[..., Path]) -> None:
    state = tmpfs(tmp_path / "full-state", "64k")
    reports = tmp_path / "reports"
    levels = {(1, sku): (i % 50) + 1 for i, sku in enumerate(catalog_skus(3000))}
    path = write_stock(tmp_path / "stock.csv", levels)
    result = run_invsync(["-q", "sync", str(path), "--state-dir", str(state),
                          "--report-dir", str(reports), "--batch-size", "200"], cli_env)
    assert result.returncode == 2, output(result)
    assert "Traceback" not in output(result)
    accepted_puts = [r for r in sandbox.requests() if r["method"] == "PUT"
                     and r["status"] == 200]
    assert accepted_puts, "the store confirmed batches before the disk filled up"
    report = json.loads(next(reports.glob("*/report.json")).read_text())
    counts = report["counts"]
    assert counts["rows"] == report["input"]["rows"] == len(levels), counts
    # Items the store confirmed are not reported as 'nothing updated'.
    confirmed = sum(len(r["items"]) for r in accepted_puts)
    assert counts["accepted"] + counts["unconfirmed"] >= confirmed, counts
    assert len(report["transaction_ids"]) >= len(accepted_puts) - 1, report["transaction_ids"]
    assert "could not be" in report["error"] and "No space left" in report["error"], report
    assert "updated=0 " not in result.stdout, result.stdout


# ---- 5. a stray bare CR in a CRLF file ---------------------------------------------------


def test_mixed_line_endings_are_read_or_the_error_names_the_row(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    a, b, c = catalog_skus(3)
    path = tmp_path / "mixed.csv"
    path.write_bytes(f"sku,location_id,quantity\r\n{a},1,11\r{b},1,12\n{c},2,13\r\n".encode())
    result = run_invsync(["sync", str(path)], cli_env)
    assert "Traceback" not in output(result)
    if result.returncode == 0:
        assert {k: v for k, v in sandbox.levels().items()
                if k in {(1, a), (1, b), (2, c)}} == {(1, a): 11, (1, b): 12, (2, c): 13}
    else:
        assert result.returncode == 65, output(result)
        error = [ln for ln in result.stderr.splitlines() if ln.startswith("invsync: ")][-1]
        assert "Schema" not in error and "row" in error, error


# ---- 6. bad numbers the options and the config accept ------------------------------------


def test_verify_timeout_nan_is_refused_not_a_hang(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    levels = {(1, sku): 5 + i for i, sku in enumerate(catalog_skus(3))}
    first = run_invsync(["sync", str(write_stock(tmp_path / "stock.csv", levels))], cli_env)
    assert first.returncode == 0, output(first)
    (loc, sku), _ = next(iter(levels.items()))
    body = json.dumps([{"location_id": loc, "sku": sku, "quantity": 999}]).encode()
    urllib.request.urlopen(urllib.request.Request(
        sandbox.url + "/_sandbox/levels", data=body, method="POST",
        headers={"Content-Type": "application/json"}), timeout=30).read()
    # A hang shows as subprocess.TimeoutExpired (the child is killed).
    result = run_invsync(["verify", "last", "--timeout", "nan"], cli_env, timeout=30)
    assert result.returncode == 64, output(result)
    assert "Traceback" not in output(result)


def test_a_negative_retry_timeout_in_the_config_is_a_bad_config(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    config = retry_config(tmp_path, max_attempts=2, max_delay_s=0.02, timeout_s=-1)
    path = write_stock(tmp_path / "stock.csv", {(1, catalog_skus(1)[0]): 5})
    result = run_invsync(["sync", str(path), "--config", str(config)], cli_env, timeout=120)
    assert "Traceback" not in output(result)
    assert result.returncode == 64, output(result)
    assert "timeout_s" in result.stderr, output(result)
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]


def test_an_api_url_with_the_store_path_is_bad_usage(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    path = write_stock(tmp_path / "stock.csv", {(1, catalog_skus(1)[0]): 5})
    env = env_at(f"{sandbox.url}/stores/{sandbox.store_hash}/v3", tmp_path, sandbox)
    result = run_invsync(["sync", str(path)], env)
    assert "Traceback" not in output(result)
    assert result.returncode == 64, output(result)
    assert "report:" not in result.stdout
