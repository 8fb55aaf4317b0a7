"""On call (issue 22): every bad night is visible, alerted and one command from repair.

Real processes throughout: the CLI as a child process, sandbox store processes, webhook
receiver processes (one drips its answer), runs killed with SIGTERM and kill -9, make and
sh running the docs' own lines. Every process started here is stopped here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    SAMPLE,
    TOKEN,
    CliResult,
    confirmed_in_journal,
    env_for,
    output,
    run_invsync,
    spawn,
    state_store_dir,
    stocked,
    wait_for,
    write_csv,
)
from test_production import Receiver, night1_rows, out, receiver_factory, summary_of

from invsync.sandbox.process import SandboxProcess, run_sandbox, wait_for_listening

pytestmark = pytest.mark.integration
__all__ = ["receiver_factory"]  # the fixture, shared with test_production

NIGHT1 = SAMPLE / "night1.csv"
NIGHT2 = SAMPLE / "night2.csv"
HEADER = ["sku", "location_id", "quantity"]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def export(path: Path, share: float = 1.0) -> Path:
    """The nightly export at ``path``: the first ``share`` of night 1's rows."""
    rows = night1_rows()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(path, HEADER, rows[:max(1, int(len(rows) * share))])


def brake_names(result: CliResult) -> list[str]:
    return [b["name"] for b in result.report().get("brakes") or []]


# ---- the shrunken-file brake follows the source ---------------------------------------------


def test_shrunken_file_brake_follows_the_source_whatever_zero_missing_says(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    nightly = export(tmp_path / "exports" / "stock.csv")
    first = run_invsync(["sync", str(nightly)], cli_env)
    assert first.returncode == 0, out(first)

    # A 401 (a run that fails before reading its file) and a braked header-only file
    # change nothing: the comparison stays with the last successful run.
    bad_token = {**cli_env, "BIGCOMMERCE_ACCESS_TOKEN": "wrong-token-123"}
    assert run_invsync(["sync", str(nightly)], bad_token).returncode == 2
    write_csv(nightly, HEADER, [])
    assert run_invsync(["sync", str(nightly)], cli_env).returncode == 3

    # Truncated, without --zero-missing: braked, nothing sent.
    export(nightly, 0.1)
    puts_before = len([r for r in sandbox.requests() if r["method"] == "PUT"])
    truncated = run_invsync(["sync", str(nightly)], cli_env)
    assert truncated.returncode == 3, out(truncated)
    assert brake_names(truncated) == ["shrunken_file"], truncated.report()["brakes"]
    message = truncated.report()["brakes"][0]["message"]
    assert "311 rows" in message and "3,114" in message and "last successful" in message
    assert len([r for r in sandbox.requests() if r["method"] == "PUT"]) == puts_before

    # A 20-row correction is another source: not compared, sent.
    correction = export(tmp_path / "correction.csv", 20 / 3114)
    fixed = run_invsync(["sync", str(correction)], cli_env)
    assert fixed.returncode == 0, out(fixed)

    # --allow-shrink overrides; a configured `source` name joins two paths into one source.
    assert run_invsync(["sync", str(nightly), "--allow-shrink"], cli_env).returncode == 0
    config = tmp_path / "named.toml"
    config.write_text('source = "warehouse-nightly"\n')
    full = export(tmp_path / "monday.csv")
    assert run_invsync(["sync", "--config", str(config), str(full)], cli_env).returncode == 0
    small = export(tmp_path / "tuesday.csv", 0.2)
    named = run_invsync(["sync", "--config", str(config), str(small)], cli_env)
    assert named.returncode == 3 and brake_names(named) == ["shrunken_file"], out(named)


# ---- notifications ------------------------------------------------------------------------


def hooks_config(path: Path, hooks: list[dict[str, Any]], **notify: Any) -> Path:
    lines = ["[notify]"] + [f"{k} = {json.dumps(v)}" for k, v in notify.items()]
    for hook in hooks:
        lines += ["[[notify.hooks]]"] + [f"{k} = {json.dumps(v)}" for k, v in hook.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def events(rx: Receiver) -> list[str]:
    return [r["body"]["event"] for r in rx.bodies()]


def test_per_hook_routing_and_alert_text_with_numbers_why_and_link(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        receiver_factory: Callable[..., Receiver]) -> None:
    failures, heartbeat = receiver_factory(), receiver_factory()
    config = hooks_config(
        tmp_path / "invsync.toml",
        [{"url": failures.url, "on": ["failed", "brake", "interrupted", "volume_drop"]},
         {"url": heartbeat.url + "/ping-uuid", "on": ["succeeded"]}],
        report_base_url="https://reports.example.com/invsync/", volume_drop=0.8)
    nightly = export(tmp_path / "stock.csv")
    ok = run_invsync(["sync", "--config", str(config), str(nightly)], cli_env)
    assert ok.returncode == 0, out(ok)
    assert events(heartbeat) == ["succeeded"] and events(failures) == []

    export(nightly, 6734 / 150000)  # the truncated export, to scale
    braked = run_invsync(["sync", "--config", str(config), str(nightly)], cli_env)
    assert braked.returncode == 3, out(braked)
    assert events(heartbeat) == ["succeeded"], "the heartbeat heard of a failure"
    assert events(failures) == ["brake"]
    body = failures.bodies()[-1]["body"]
    text = body["text"]
    run_id = braked.report()["run_id"]
    assert text.startswith("invsync brake (store sandbox): failed, exit 3"), text
    assert "139 rows" in text and "last good run 3,114 rows" in text, text
    assert "why: a safety brake tripped" in text and "shrunken_file" not in text
    assert "detail: the file has 139 rows" in text, text
    link = f"https://reports.example.com/invsync/{run_id}/report.html"
    assert text.endswith(f"report: {link}") and body["report_url"] == link
    assert body["last_good_rows"] == 3114
    assert TOKEN not in failures.log.read_text() + heartbeat.log.read_text()


def test_status_changed_and_volume_drop_ignore_runs_that_failed_before_reading(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        receiver_factory: Callable[..., Receiver]) -> None:
    rx = receiver_factory()
    config = hooks_config(tmp_path / "invsync.toml", [], urls=[rx.url],
                          on=["status_changed"], volume_drop=0.8)
    (tmp_path / "invsync.toml").write_text(config.read_text() + "[brakes]\nmin_rows_ratio = 0.0\n")
    nightly = export(tmp_path / "stock.csv")
    sync = ["sync", "--config", str(config), str(nightly)]
    assert run_invsync(sync, cli_env).returncode == 0
    outage = {**cli_env, "BIGCOMMERCE_ACCESS_TOKEN": "revoked-token-1"}
    assert run_invsync(sync, outage).returncode == 2  # a 401 before the file is read
    assert run_invsync(sync, cli_env).returncode == 0
    # status_changed: the failed run told (succeeded -> failed), the next success compared
    # with the last success (no false "changed"); no volume_drop from the 0-row failure.
    assert events(rx) == ["status_changed"], [r["body"]["events"] for r in rx.bodies()]
    assert rx.bodies()[0]["body"]["status"] == "failed"
    export(nightly, 0.5)
    dropped = run_invsync(sync, cli_env)
    assert dropped.returncode == 0, out(dropped)
    assert events(rx)[-1] == "volume_drop"


def test_a_dripping_receiver_is_bounded_per_attempt_and_the_url_path_is_never_logged(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        receiver_factory: Callable[..., Receiver]) -> None:
    rx = receiver_factory(200, "drip")
    secret_url = rx.url + "/T000/B000/s3cr3t-webhook-path"
    config = hooks_config(tmp_path / "invsync.toml", [{"url": secret_url, "on": ["succeeded"]}],
                          timeout_s=1, attempts=2)
    started = time.monotonic()
    result = run_invsync(["-vv", "sync", "--config", str(config), str(NIGHT1)], cli_env,
                         timeout=120)
    took = time.monotonic() - started
    assert result.returncode == 0, out(result)
    assert took < 60, f"a dripping receiver held the run {took:.0f} s"  # 2 x 1 s + backoff
    assert rx.bodies(), "the receiver was never asked"
    note = [n for n in result.report()["notes"] if n.startswith("notification")]
    host = rx.url.removesuffix("/hook")
    assert note == [f"notification (succeeded) to {host} failed: no answer within 1 s "
                    f"after 2 attempt(s)"], note
    # -vv logs every HTTP request: the webhook's only by host.
    everything = out(result) + json.dumps(result.report())
    assert "s3cr3t-webhook-path" not in everything and "/T000/B000" not in everything
    assert host.removeprefix("http://") in result.stderr


# ---- signals and kill -9 ------------------------------------------------------------------


def slow_sandbox(sandbox_factory: Callable[..., SandboxProcess]) -> SandboxProcess:
    return sandbox_factory("--latency-ms", "150")


def start_slow_sync(env: dict[str, str], tmp_path: Path, file: Path, children: list[Any],
                    *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"run-{len(children)}.log"
    proc = spawn(["sync", str(file), "--batch-size", "40", "--concurrency", "1", *extra],
                 env, log, children)
    wait_for(lambda: confirmed_in_journal(tmp_path / "state"), proc, log)
    return proc, log


def test_sigterm_notifies_interrupted_and_the_next_run_notifies_resumed(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any], receiver_factory: Callable[..., Receiver]) -> None:
    sb = slow_sandbox(sandbox_factory)
    env = env_for(sb, tmp_path)
    rx = receiver_factory()
    config = hooks_config(tmp_path / "invsync.toml", [], url=rx.url)  # the default `on`
    proc, log = start_slow_sync(env, tmp_path, NIGHT1, children, "--config", str(config))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, log.read_text()
    assert events(rx) == ["interrupted"], rx.bodies()
    body = rx.bodies()[0]["body"]
    assert body["status"] == "interrupted" and body["exit_code"] == 143
    assert "interrupted by SIGTERM" in body["text"]

    again = run_invsync(["sync", "--config", str(config), str(NIGHT1)], env)
    assert again.returncode == 0, out(again)
    assert events(rx) == ["interrupted", "resumed"]
    assert rx.bodies()[1]["body"]["resumed_from"] == body["run_id"]
    assert f"finished={body['run_id']}" in summary_of(again).group(0)


def test_kill_9_shows_as_interrupted_not_yet_resumed_until_a_run_finishes_it(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any]) -> None:
    sb = slow_sandbox(sandbox_factory)
    env = env_for(sb, tmp_path)
    first = run_invsync(["sync", str(NIGHT1)], env)
    assert first.returncode == 0, out(first)
    proc, log = start_slow_sync(env, tmp_path, NIGHT2, children)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    del log  # the text log names no id: the lock and the journal do
    journal = state_store_dir(tmp_path / "state") / "journal.jsonl"
    killed = json.loads(journal.read_text().splitlines()[0])["run_id"]

    listed = run_invsync(["runs"], env)
    assert listed.returncode == 0, out(listed)
    lines = listed.stdout.splitlines()
    assert max(map(len, lines)) <= 100, listed.stdout
    rows = [line for line in lines if re.match(r"\d{8}T", line)]
    assert rows[0].startswith(killed) and rows[1].startswith(first.report()["run_id"])
    assert "interrupted," in rows[0] and "not yet" in listed.stdout, listed.stdout
    as_json = json_lines(run_invsync(["runs", "--json"], env).stdout)
    assert (as_json[0]["run_id"], as_json[0]["status"], as_json[0]["not_resumed"]) == (
        killed, "interrupted", True)
    assert as_json[0]["file"] == str(NIGHT2)
    assert as_json[1]["status"] == "succeeded"

    shown = run_invsync(["show", "last"], env)
    assert shown.returncode == 0, out(shown)
    first_line = shown.stdout.splitlines()[0]
    assert first_line.startswith(f"run {killed}: interrupted, not yet resumed"), shown.stdout
    by_id = run_invsync(["show", killed[:22]], env)
    assert by_id.returncode == 0 and by_id.stdout.startswith(f"run {killed}: interrupted")

    finish = run_invsync(["sync", str(NIGHT2)], env)
    assert finish.returncode == 0, out(finish)
    assert f"finished={killed}" in summary_of(finish).group(0)
    after = json_lines(run_invsync(["runs", "--json"], env).stdout)
    assert killed not in [r["run_id"] for r in after]
    assert after[0]["run_id"] == finish.report()["run_id"]


def test_json_log_format_makes_every_stderr_line_json(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any]) -> None:
    sb = slow_sandbox(sandbox_factory)
    env = env_for(sb, tmp_path)
    # A signal while waiting for the lock (before any run): its message is JSON too.
    holder, _ = start_slow_sync(env, tmp_path, NIGHT1, children)
    err, events_out = tmp_path / "waiter.err", tmp_path / "waiter.out"
    with err.open("wb") as fh_err, events_out.open("wb") as fh_out:
        waiter = subprocess.Popen([sys.executable, "-m", "invsync", "--log-format", "json",
                                   "sync", str(NIGHT1), "--wait-lock", "120"],
                                  env=env, cwd=ROOT, stdout=fh_out, stderr=fh_err)
    children.append(waiter)
    wait_for(lambda: "lock_wait" in events_out.read_text(), waiter, events_out)
    waiter.send_signal(signal.SIGTERM)
    assert waiter.wait(timeout=60) == 143
    parsed = [json.loads(line) for line in err.read_text().splitlines()]
    assert [p["message"] for p in parsed] == ["interrupted by SIGTERM"], parsed
    assert holder.poll() is None, "the run holding the lock was disturbed"
    assert holder.wait(timeout=120) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("bogus_key = 1\n")
    for args in (["--log-format", "json", "sync", "--config", str(bad), str(NIGHT1)],
                 ["sync", "--no-such-flag", "--log-format", "json", str(NIGHT1)],
                 ["--log-format", "json", "-vv", "sync", str(NIGHT2)]):
        result = run_invsync(args, env)
        assert result.returncode in (0, 64), out(result)
        assert result.stderr.strip(), out(result)
        for line in result.stderr.splitlines():
            assert json.loads(line)["event"] == "log", line


def test_drift_and_verify_events_carry_run_id(sandbox: SandboxProcess,
                                              cli_env: dict[str, str]) -> None:
    ok = run_invsync(["sync", str(NIGHT1)], cli_env)
    assert ok.returncode == 0, out(ok)
    run_id = ok.report()["run_id"]
    verify = run_invsync(["verify", "last", "--log-format", "json"], cli_env)
    assert verify.returncode == 0, out(verify)
    evs = json_lines(verify.stdout)
    assert evs and all(e.get("run_id") == run_id for e in evs), evs
    drift = run_invsync(["drift", "--log-format", "json"], cli_env)
    assert drift.returncode == 0, out(drift)
    evs = json_lines(drift.stdout)
    assert {e["event"] for e in evs} >= {"read_started", "drift"}, evs
    ids = {e.get("run_id") for e in evs}
    assert len(ids) == 1 and str(ids.pop()).startswith("drift-"), evs


# ---- doctor -------------------------------------------------------------------------------


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, str]]:
    result = run_invsync(["doctor", *args], env, timeout=60)
    lines = {}
    for line in result.stdout.splitlines():
        m = re.match(r"^(ok|FAIL)\s+([^:]+): ", line)
        if m:
            lines[m.group(2)] = m.group(1)
    assert "Traceback" not in out(result)
    return result.returncode, lines


def test_doctor_passes_a_good_setup_and_names_each_fault_with_its_fix(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    code, lines = doctor(cli_env)
    assert code == 0, lines
    assert set(lines) >= {"state folder", "report folder", "lock folder", "token accepted",
                          "inventory write scope", "locations", "quota headers", "clock"}
    assert set(lines.values()) == {"ok"}
    assert sandbox.levels() == {}, "the doctor changed the store"

    code, lines = doctor({**cli_env, "BIGCOMMERCE_ACCESS_TOKEN": "not-the-token"})
    assert code == 2 and lines["token accepted"] == "FAIL", lines
    disabled = run_invsync(["doctor", "--location-id", "3"], cli_env)
    assert disabled.returncode == 2 and "location 3 is disabled" in disabled.stdout
    assert "fix: enable it" in disabled.stdout

    open_dir = tmp_path / "state" / "invsync"
    os.chmod(open_dir, 0o777)
    code, lines = doctor(cli_env)
    assert code == 2 and lines["state folder"] == "FAIL", lines
    os.chmod(open_dir, 0o700)


def test_doctor_catches_a_read_only_token(tmp_path: Path) -> None:
    with run_sandbox(SAMPLE / "catalog.csv", token=TOKEN,
                     env={"INVSYNC_SANDBOX_READ_ONLY_TOKEN": "read-only-token-9"}) as sb:
        env = env_for(sb, tmp_path, token="read-only-token-9")
        code, lines = doctor(env)
    assert code == 2, lines
    assert lines["token accepted"] == "ok" and lines["inventory write scope"] == "FAIL", lines


# ---- prune --------------------------------------------------------------------------------


def age_run(folder: Path, days: int) -> Path:
    """A copy of run ``folder`` as if it ran ``days`` ago (run ids carry their UTC time)."""
    from datetime import UTC, datetime, timedelta

    when = datetime.now(UTC) - timedelta(days=days)
    old_id = when.strftime("%Y%m%dT%H%M%S.") + f"{when.microsecond // 1000:03d}Z-a{days:05d}"
    copy = folder.parent / old_id
    shutil.copytree(folder, copy)
    report = json.loads((copy / "report.json").read_text())
    report["run_id"] = old_id
    (copy / "report.json").write_text(json.dumps(report))
    return copy


def test_prune_keeps_the_last_success_of_each_source_and_open_journals(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    ok = run_invsync(["sync", str(NIGHT1)], cli_env)
    assert ok.returncode == 0, out(ok)
    failed = run_invsync(["sync", str(tmp_path / "missing.csv")], cli_env)
    old_ok = age_run(ok.report_dir(), 200)
    old_failed = age_run(failed.report_dir(), 120)
    recent = age_run(ok.report_dir(), 10)
    # The only success of another source, long ago: kept.
    other = age_run(ok.report_dir(), 300)
    report = json.loads((other / "report.json").read_text())
    report["input"]["path"] = str(tmp_path / "other.csv")
    (other / "report.json").write_text(json.dumps(report))

    dry = run_invsync(["prune", "--keep", "90d", "--dry-run"], cli_env)
    assert dry.returncode == 0, out(dry)
    assert old_ok.exists() and old_failed.exists()
    done = run_invsync(["prune", "--keep", "90d"], cli_env)
    assert done.returncode == 0, out(done)
    assert not old_ok.exists() and not old_failed.exists()
    assert recent.exists() and other.exists() and ok.report_dir().exists()
    assert f"kept {other}: the last successful run of its source" in done.stdout

    # `retention` in the config prunes after each run.
    config = tmp_path / "retention.toml"
    config.write_text('retention = "30d"\n')
    stale = age_run(failed.report_dir(), 45)
    assert run_invsync(["sync", "--config", str(config), str(NIGHT1)], cli_env).returncode == 0
    assert not stale.exists() and recent.exists()
    bad = run_invsync(["prune"], cli_env)
    assert bad.returncode == 64 and "--keep" in bad.stderr


def test_prune_never_removes_a_run_with_an_open_journal(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any]) -> None:
    sb = slow_sandbox(sandbox_factory)
    env = env_for(sb, tmp_path)
    proc, _ = start_slow_sync(env, tmp_path, NIGHT1, children, "--log-format", "json")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    folder = next((tmp_path / "state" / "invsync" / "runs").iterdir())
    journal = state_store_dir(tmp_path / "state") / "journal.jsonl"
    assert journal.exists()
    # Pretend the interrupted run is old: its folder's name is its id.
    old = age_run(folder, 400)
    shutil.rmtree(folder)
    header = json.loads(journal.read_text().splitlines()[0])
    lines = journal.read_text().splitlines()
    header["run_id"] = old.name
    journal.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    done = run_invsync(["prune", "--keep", "1d"], env)
    assert done.returncode == 0, out(done)
    assert old.exists() and "its journal is open" in done.stdout


# ---- exit codes and config values ---------------------------------------------------------


def test_a_missing_or_unreadable_file_is_66_not_65(sandbox: SandboxProcess,
                                                   cli_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    for path in (tmp_path / "nope.csv", tmp_path):
        result = run_invsync(["sync", str(path)], cli_env)
        assert result.returncode == 66, out(result)
    notstock = tmp_path / "x.csv"
    notstock.write_text("a,b\n1,2\n")
    assert run_invsync(["sync", str(notstock)], cli_env).returncode == 65


@pytest.mark.parametrize(("text", "key"), [
    ("brakes = [1, 2]\n", "brakes"),
    ("[profiles.p]\nquantity = [\"x\"]\n", "profiles.p.quantity"),
    ("batch_size = 1e400\n", "batch_size"),
    ("[quantity]\nbuffer = 1e400\n", "quantity.buffer"),
    ("[brakes]\nmin_rows_ratio = nan\n", "brakes.min_rows_ratio"),
    ('state_dir = "/tmp/a\\u0000b"\n', "state_dir"),
    ('[notify]\nurl = "http://127.0.0.1:9/x"\nattempts = 1.5\n', "attempts"),
    ('[notify]\nurl = "http://127.0.0.1:9/x"\ntimeout_s = nan\n', "timeout_s"),
    ('[notify]\nhooks = {url = "http://127.0.0.1:9/x"}\n', "hooks"),
    ('retention = "forever"\n', "retention"),
])
def test_bad_config_values_exit_64_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVSYNC_", "BIGCOMMERCE_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    profile = ["--profile", "p"] if "profiles.p" in text else []
    result = run_invsync(["sync", "--dry-run", "--config", str(config), *profile,
                          str(NIGHT1)], env)
    assert result.returncode == 64, out(result)
    assert key in result.stderr and "unexpected" not in out(result), out(result)


# ---- installs and runbooks ----------------------------------------------------------------


def test_sandbox_runs_outside_the_repository(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVSYNC_")}
    env["INVSYNC_SANDBOX_TOKEN"] = TOKEN
    proc = subprocess.Popen([sys.executable, "-m", "invsync", "sandbox", "--port", "0"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    child = wait_for_listening(proc, "the sandbox")
    try:
        import httpx

        answer = httpx.get(f"{child.url}/stores/sandbox/v3/inventory/items",
                           headers={"X-Auth-Token": TOKEN}, params={"limit": 5})
        assert answer.status_code == 200 and len(answer.json()["data"]) == 5
    finally:
        child.stop()
    shown = subprocess.run([sys.executable, "-m", "invsync", "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    where = re.search(r"installed with the package.*?\n\n  (\S+)\n", shown.stdout, re.S)
    assert where and (Path(where.group(1)) / "operations.md").is_file(), shown.stdout


def make(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in env.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_runbook_targets_use_an_installed_invsync_and_install_nothing(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # A stand-in for /opt/invsync/bin/invsync: a wrapper script outside the checkout.
    installed = tmp_path / "opt" / "bin" / "invsync"
    installed.parent.mkdir(parents=True)
    installed.write_text(f"#!/bin/sh\nexec {sys.executable} -m invsync \"$@\"\n")
    installed.chmod(0o755)
    inv = f"INVSYNC={installed}"
    steps = [(["sync", f"FILE={NIGHT1}"], 0), (["runs"], 0), (["show"], 0),
             (["verify"], 0), (["drift"], 0), (["sync", f"FILE={NIGHT2}"], 0),
             (["revert", "RUN=last", "DRY_RUN=1"], 0), (["resume"], 2)]
    for args, code in steps:
        done = make([*args, inv], cli_env)
        text = output(done)
        assert "pip install" not in text and "venv" not in text, text
        assert str(installed) in done.stdout, text
        assert (done.returncode == 0) == (code == 0), (args, text)
    assert "nothing to resume" in text


# ---- the docs, as written -----------------------------------------------------------------


def docs_block(page: str, lang: str, marker: str) -> str:
    text = (ROOT / "docs" / page).read_text()
    for block in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S):
        if marker in block:
            return str(block)
    raise AssertionError(f"no ```{lang} block with {marker!r} in {page}")


def test_the_docs_cron_line_runs_as_written(sandbox: SandboxProcess, cli_env: dict[str, str],
                                            tmp_path: Path) -> None:
    block = docs_block("operations.md", "cron", "invsync")
    line = next(x for x in block.splitlines() if x and not x.startswith("#"))
    command = line.split(None, 5)[5]
    assert "BIGCOMMERCE_ACCESS_TOKEN=\"$(cat /etc/invsync/token)\"" in command, command
    token = tmp_path / "etc" / "token"
    token.parent.mkdir()
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    config = tmp_path / "etc" / "invsync.toml"
    config.write_text(f'[profiles.production]\nstore_hash = "{sandbox.store_hash}"\n'
                      f'api_url = "{sandbox.url}"\n')
    stock = tmp_path / "srv" / "stock.csv"
    stock.parent.mkdir()
    shutil.copy(NIGHT1, stock)
    wrapper = tmp_path / "opt" / "bin" / "invsync"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m invsync \"$@\"\n")
    wrapper.chmod(0o755)
    command = (command.replace("/etc/invsync/", f"{token.parent}/")
               .replace("/opt/invsync/bin/invsync", str(wrapper))
               .replace("/srv/exports/stock.csv", str(stock)))
    env = {k: v for k, v in cli_env.items() if not k.startswith("BIGCOMMERCE_")}
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, output(done)
    assert done.stdout == "" and done.stderr == "", "cron would mail a good night"
    # The store holds the file's levels (its 0s are what the store already held: not sent).
    assert sandbox.levels() == stocked(night1_levels())


def night1_levels() -> dict[tuple[int, str], int]:
    """(location, sku) -> level of every row of night1.csv (all 3,114 valid)."""
    levels = {(int(loc), sku): int(qty) for sku, loc, qty in night1_rows()}
    assert len(levels) == 3114
    return levels


def unit(page: str, name: str) -> dict[str, list[str]]:
    """The ``Key=value`` lines of the systemd unit ``name`` shown in docs/``page``."""
    text = (ROOT / "docs" / page).read_text()
    block = next(u for u in re.findall(r"```ini\n(.*?)```", text, flags=re.S)
                 if f"/etc/systemd/system/{name}" in u)
    keys: dict[str, list[str]] = {}
    for line in block.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


def test_the_systemd_units_share_one_lock_folder_and_the_service_runs_as_written(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    import shlex

    timer_service = unit("operations.md", "invsync.service")
    page_service = unit("upload-page.md", "invsync-serve.service")

    def lock_dir(keys: dict[str, list[str]]) -> str:
        env = dict(item.split("=", 1) for value in keys["Environment"]
                   for item in shlex.split(value))
        return env["INVSYNC_LOCK_DIR"]

    # Both units use /run/invsync (their RuntimeDirectory, kept while either runs).
    assert lock_dir(timer_service) == lock_dir(page_service) == "/run/invsync/locks"
    for keys in (timer_service, page_service):
        assert keys["RuntimeDirectory"] == ["invsync"]
        assert keys["RuntimeDirectoryPreserve"] == ["yes"]

    # The timer's service, run by hand as written (paths moved under tmp_path).
    moved = {"/etc/invsync/": f"{tmp_path}/etc/", "/run/invsync/": f"{tmp_path}/run/",
             "/opt/invsync/bin/invsync": f"{tmp_path}/opt/bin/invsync",
             "/srv/exports/stock.csv": str(NIGHT1)}

    def here(text: str) -> str:
        for old, new in moved.items():
            text = text.replace(old, new)
        return text

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "invsync.toml").write_text(
        f'[profiles.production]\nstore_hash = "{sandbox.store_hash}"\n'
        f'api_url = "{sandbox.url}"\n')
    token_env = Path(here(timer_service["EnvironmentFile"][0]))
    token_env.write_text(f"BIGCOMMERCE_ACCESS_TOKEN={TOKEN}\n")
    token_env.chmod(0o600)
    wrapper = tmp_path / "opt" / "bin" / "invsync"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m invsync \"$@\"\n")
    wrapper.chmod(0o755)
    env = {k: v for k, v in cli_env.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    for value in timer_service["Environment"]:
        env.update(item.split("=", 1) for item in shlex.split(here(value)))
    env.update(line.split("=", 1) for line in token_env.read_text().splitlines())
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)  # what RuntimeDirectory= with RuntimeDirectoryMode=0700 makes
    done = subprocess.run(shlex.split(here(timer_service["ExecStart"][0])), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, output(done)
    assert sandbox.levels() == stocked(night1_levels())
    assert list((run_dir / "locks").glob("*.lock")), "the lock was not in INVSYNC_LOCK_DIR"


def test_the_on_call_runbook_runs_as_written_after_a_kill_9(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[Any]) -> None:
    sb = slow_sandbox(sandbox_factory)
    env = env_for(sb, tmp_path)
    assert run_invsync(["sync", str(NIGHT1)], env).returncode == 0
    proc, _ = start_slow_sync(env, tmp_path, NIGHT2, children)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    block = docs_block("operations.md", "sh", "invsync show last")
    wrapper = tmp_path / "bin" / "invsync"
    wrapper.parent.mkdir()
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m invsync \"$@\"\n")
    wrapper.chmod(0o755)
    env = {**env, "PATH": f"{wrapper.parent}:{env['PATH']}"}
    seen = []
    for line in block.splitlines():
        command = line.split("#")[0].strip()
        if not command.startswith("invsync"):
            continue
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert "Traceback" not in output(done)
        seen.append((command, done.returncode))
    codes = dict(seen)
    assert codes["invsync runs"] == 0 and codes["invsync show last"] == 0, seen
    assert codes["invsync resume"] == 0, seen
    assert codes["invsync verify last"] == 0, seen
    assert sb.levels() == {k: v for k, v in sb.levels().items()}
    assert run_invsync(["drift"], env).returncode == 0


# ---- doctor: the checks no sandbox can fake -----------------------------------------------


def test_doctor_clock_quota_and_orders_checks() -> None:
    from email.utils import format_datetime
    from types import SimpleNamespace

    import httpx

    from invsync.redact import Secret
    from invsync.run.config import Settings
    from invsync.run.doctor import _clock, _orders_scope, _quota, _Store

    def answer(**headers: str) -> httpx.Response:
        return httpx.Response(200, headers=headers, json={"data": []})

    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    assert _clock(answer(date=format_datetime(now, usegmt=True))).ok
    late = _clock(answer(date=format_datetime(now - timedelta(hours=1), usegmt=True)))
    # The Date header has whole seconds: the skew read is 3,600 s and a fraction.
    assert not late.ok and re.search(r"\+3,60[01] s off", late.detail) and "NTP" in late.fix
    assert not _clock(answer()).ok
    assert not _quota(answer()).ok
    ok = _quota(answer(**{"x-rate-limit-requests-quota": "150",
                          "x-rate-limit-time-window-ms": "30000",
                          "x-rate-limit-requests-left": "149"}))
    assert ok.ok and ok.detail == "150 requests per 30 s (149 left now)"

    settings = Settings(store_hash="abc", token=Secret("t0ken-for-doctor"))
    store = _Store(settings, 5)
    store.client = httpx.Client(transport=httpx.MockTransport(
        lambda request: httpx.Response(403 if "/v2/orders" in request.url.path else 200)))
    assert _orders_scope(store, settings) is None  # no as_of: orders are never read
    with_as_of = SimpleNamespace(**{**settings.__dict__, "as_of": "2026-12-01T00:00:00Z"})
    check = _orders_scope(store, with_as_of)  # type: ignore[arg-type]
    assert check is not None and not check.ok and "Orders read-only" in check.fix
