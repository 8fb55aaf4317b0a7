"""Running invsync unattended (issue 12): notifications, profiles, config from the
environment, global options anywhere, cron-friendly output, the lock wait.

Everything runs the real CLI as a child process against real sandbox processes, and the
webhook receiver is a real HTTP server process (``webhook_receiver.py``) on 127.0.0.1.
Every process started here is stopped here.
"""

from __future__ import annotations

import csv
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    SAMPLE,
    TOKEN,
    CliResult,
    env_for,
    retry_config,
    run_invsync,
    state_store_dir,
    write_csv,
)
from conftest import output as out

from invsync.events import EVENT_NAMES
from invsync.run.notify import EVENTS
from invsync.sandbox.process import Listening, SandboxProcess, wait_for_listening

NIGHT1 = SAMPLE / "night1.csv"
NIGHT2 = SAMPLE / "night2.csv"
SUMMARY = re.compile(
    r"^invsync: (?P<status>\w+) run=(?P<run>\S+)(?: profile=(?P<profile>\S+))? "
    r"rows=(?P<rows>\d+) (?:updated|would_update)=(?P<updated>\d+) unchanged=(?P<unchanged>\d+) "
    r"rejected=(?P<rejected>\d+) refused=(?P<refused>\d+)(?P<rest>.*) in [\d.]+s "
    r"report=(?P<report>\S+)$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def night1_rows() -> list[list[str]]:
    with NIGHT1.open(newline="", encoding="utf-8") as fh:
        return [row[:3] for row in list(csv.reader(fh))[1:]]


def partial_file(path: Path) -> Path:
    """15 rows: 10 good, 4 invalid quantities, 1 SKU the store does not know (refused)."""
    good = [[sku, loc, str(int(qty) + 1000)] for sku, loc, qty in night1_rows()[:10]]
    bad = [[sku, loc, "abc"] for sku, loc, _ in night1_rows()[10:14]]
    return write_csv(path, ["sku", "location_id", "quantity"],
                     [*good, *bad, ["NO-SUCH-SKU-1", "1", "5"]])


def summary_of(result: CliResult) -> re.Match[str]:
    last = result.stdout.rstrip("\n").splitlines()[-1]
    m = SUMMARY.match(last)
    assert m, f"the last stdout line is not the summary line: {last!r}\n{out(result)}"
    return m


# ---- the webhook receiver ---------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    log: Path
    process: subprocess.Popen[str]

    def bodies(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def receiver_factory(tmp_path: Path) -> Iterator[Callable[..., Receiver]]:
    """Start webhook receivers (``status`` = what they answer); all stopped at teardown."""
    started: list[Listening] = []

    def start(status: int = 200, *mode: str) -> Receiver:
        log = tmp_path / f"received-{len(started)}.jsonl"
        proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "webhook_receiver.py"),
                                 str(log), str(status), *mode], stdout=subprocess.PIPE,
                                text=True)
        started.append(wait_for_listening(proc, "the webhook receiver"))
        return Receiver(started[-1].url + "/hook", log, proc)

    yield start
    for child in started:
        child.stop()


def notify_config(path: Path, url: str | list[str], **extra: Any) -> Path:
    urls = [url] if isinstance(url, str) else url
    lines = ["[notify]", f"urls = {json.dumps(urls)}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    # Small files after the full catalog: the shrink brake is not what these tests are about.
    lines += ["[brakes]", "min_rows_ratio = 0.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- notifications ------------------------------------------------------------------------


def test_notifications_fire_on_failed_brake_partial_not_on_success(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        receiver_factory: Callable[..., Receiver]) -> None:
    rx = receiver_factory()
    config = notify_config(tmp_path / "invsync.toml", rx.url, on=["failed", "brake", "partial"])
    sync = ["sync", "--config", str(config)]

    ok = run_invsync([*sync, str(NIGHT1)], cli_env)
    assert ok.returncode == 0, out(ok)
    assert rx.bodies() == [], "a successful run notified although `on` does not ask for it"

    partial = run_invsync([*sync, str(partial_file(tmp_path / "partial.csv"))], cli_env)
    assert partial.returncode == 1, out(partial)
    empty = run_invsync([*sync, str(write_csv(tmp_path / "empty.csv",
                                              ["sku", "location_id", "quantity"], []))], cli_env)
    assert empty.returncode == 3, out(empty)
    missing = run_invsync([*sync, str(tmp_path / "missing.csv")], cli_env)
    assert missing.returncode == 66, out(missing)  # EX_NOINPUT: missing, not unusable

    got = [r["body"] for r in rx.bodies()]
    assert [b["event"] for b in got] == ["partial", "brake", "failed"], got
    assert all(r["path"] == "/hook" and r["content_type"] == "application/json"
               for r in rx.bodies())
    p = got[0]
    report = partial.report()
    assert (p["run_id"], p["status"], p["exit_code"]) == (report["run_id"], "partial", 1)
    assert p["counts"] == report["counts"]
    assert (p["counts"]["rows"], p["counts"]["accepted"], p["counts"]["rejected"],
            p["counts"]["refused"]) == (15, 10, 5, 1)
    assert p["report_dir"] == str(partial.report_dir())
    assert p["profile"] is None
    # Slack/Teams read `text`: what fired, the numbers, why, the summary line, the report.
    lines = p["text"].splitlines()
    assert lines[0] == "invsync partial (store sandbox): partial, exit 1", p["text"]
    assert lines[1].startswith("15 rows, 10 updated, 5 rejected, 1 refused"), p["text"]
    assert "why: some rows were rejected" in lines, p["text"]
    assert summary_of(partial).group(0) in lines, p["text"]
    assert lines[-1] == f"report: {partial.report_dir() / 'report.html'}", p["text"]
    assert (got[1]["status"], got[1]["exit_code"]) == ("failed", 3)
    assert (got[2]["status"], got[2]["exit_code"]) == ("failed", 66)
    assert "missing.csv" in got[2]["text"]
    assert TOKEN not in rx.log.read_text(), "the access token went into a notification"
    assert report["notes"] == [n for n in report["notes"] if "notification" not in n]


def test_status_changed_and_succeeded_when_asked(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        receiver_factory: Callable[..., Receiver]) -> None:
    rx = receiver_factory()
    config = notify_config(tmp_path / "invsync.toml", rx.url, on=["status_changed"])
    partial = partial_file(tmp_path / "partial.csv")
    codes = []
    for path in (NIGHT1, NIGHT1, partial, partial, NIGHT2):
        result = run_invsync(["sync", "--config", str(config), str(path)], cli_env)
        codes.append(result.returncode)
    assert codes == [0, 0, 1, 1, 0]
    got = [r["body"] for r in rx.bodies()]
    # The first run has no previous one; only the two changes are told.
    assert [(b["event"], b["status"]) for b in got] == [
        ("status_changed", "partial"), ("status_changed", "succeeded")], got

    config = notify_config(tmp_path / "ok.toml", rx.url, on=["succeeded"])
    ok = run_invsync(["sync", "--config", str(config), str(NIGHT1)], cli_env)
    assert ok.returncode == 0, out(ok)
    assert rx.bodies()[-1]["body"]["event"] == "succeeded"
    assert rx.bodies()[-1]["body"]["run_id"] == ok.report()["run_id"]


def test_thresholds_rejected_share_and_volume_drop(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        receiver_factory: Callable[..., Receiver]) -> None:
    rx = receiver_factory()
    config = notify_config(tmp_path / "invsync.toml", rx.url, on=[], rejected_share=0.2,
                           volume_drop=0.8)
    rows = night1_rows()
    source = tmp_path / "export.csv"
    header = ["sku", "location_id", "quantity"]
    write_csv(source, header, rows)
    assert run_invsync(["sync", "--config", str(config), str(source)], cli_env).returncode == 0
    # 60% of the rows (above the 50% shrink brake, below the 80% volume alert).
    write_csv(source, header, rows[:len(rows) * 6 // 10])
    shrunk = run_invsync(["sync", "--config", str(config), str(source)], cli_env)
    assert shrunk.returncode == 0, out(shrunk)
    # 5 of 15 rows rejected (33%) against 20% allowed; 1 of 15 (7%) is not reported.
    few = write_csv(tmp_path / "few.csv", header,
                    [*rows[:14], [rows[14][0], rows[14][1], "abc"]])
    assert run_invsync(["sync", "--config", str(config), str(few)], cli_env).returncode == 1
    many = run_invsync(["sync", "--config", str(config),
                        str(partial_file(tmp_path / "partial.csv"))], cli_env)
    assert many.returncode == 1
    got = [r["body"] for r in rx.bodies()]
    assert [(b["event"], b["run_id"]) for b in got] == [
        ("volume_drop", shrunk.report()["run_id"]), ("rejected_share", many.report()["run_id"])]


def test_a_dead_or_failing_receiver_never_changes_the_outcome(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
        receiver_factory: Callable[..., Receiver]) -> None:
    failing = receiver_factory(status=503)
    dead = f"http://127.0.0.1:{free_port()}/hook?token=webhook-secret"
    config = notify_config(tmp_path / "invsync.toml", [dead, failing.url], on=["partial"],
                           attempts=2, timeout_s=3)
    result = run_invsync(["sync", "--config", str(config),
                          str(partial_file(tmp_path / "partial.csv"))], cli_env)
    assert result.returncode == 1, out(result)
    report = result.report()
    assert (report["status"], report["exit_code"]) == ("partial", 1)
    assert summary_of(result).group("status") == "partial"
    # Bounded retries: the failing receiver was asked exactly `attempts` times.
    assert len(failing.bodies()) == 2
    notes = [n for n in report["notes"] if n.startswith("notification")]
    host = dead.split("/hook")[0]
    assert notes == [f"notification (partial) to {host} failed: ConnectError after 2 attempt(s)",
                     f"notification (partial) to {failing.url.removesuffix('/hook')} failed: "
                     f"HTTP 503 after 2 attempt(s)"], report["notes"]
    assert all(n in result.stderr for n in notes), out(result)
    # A webhook URL can be a secret too: only its host is ever written.
    assert "webhook-secret" not in out(result) + json.dumps(report)

    # With --log-format json the failure is an event on stdout, after run_finished.
    as_json = run_invsync(["sync", "--config", str(config), "--log-format", "json",
                           str(partial_file(tmp_path / "partial2.csv"))], cli_env)
    assert as_json.returncode == 1, out(as_json)
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    tail = [(e["event"], e["run_id"]) for e in events[-3:]]
    run_id = events[0]["run_id"]
    assert tail == [("run_finished", run_id), ("notify_failed", run_id),
                    ("notify_failed", run_id)], tail


def test_bad_notify_section_is_a_usage_error_before_anything_runs(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    config = notify_config(tmp_path / "invsync.toml", "http://127.0.0.1:9/x", on=["sometimes"])
    result = run_invsync(["sync", "--config", str(config), str(NIGHT1), "--log-format", "json"],
                         cli_env)
    assert result.returncode == 64, out(result)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(e["event"], e["exit_code"]) for e in events] == [("error", 64)]
    assert "unknown event(s) sometimes" in events[0]["error"]
    assert not (tmp_path / "state" / "invsync" / "runs").exists()


# ---- profiles and configuration from the environment --------------------------------------


def test_profiles_never_share_a_snapshot_and_are_recorded(
        sandbox: SandboxProcess, sandbox_factory: Callable[..., SandboxProcess],
        tmp_path: Path) -> None:
    rehearsal, real = sandbox_factory(), sandbox  # this test's own, and the session's
    env = env_for(real, tmp_path)
    del env["BIGCOMMERCE_API_URL"], env["BIGCOMMERCE_STORE_HASH"]  # the config says
    config = tmp_path / "invsync.toml"
    config.write_text(f'store_hash = "sandbox"\nreason = "nightly"\n'
                      f'[brakes]\nmin_rows_ratio = 0.4\n'
                      f'[profiles.staging]\napi_url = "{rehearsal.url}"\n'
                      f'[profiles.production]\napi_url = "{real.url}"\n'
                      f'[profiles.production.brakes]\nmax_zero_share = 0.2\n')
    staged = run_invsync(["sync", str(NIGHT1), "--config", str(config), "--profile", "staging"],
                         env)
    assert staged.returncode == 0, out(staged)
    # Planned against the store: the 246 rows at 0 are what it holds already.
    assert len(rehearsal.levels()) == 3114 - 246 and real.levels() == {}
    # The same store hash, chosen through the environment this time: the production run
    # must not believe the rehearsal's snapshot, so it sends every row.
    prod_env = {**env, "INVSYNC_CONFIG": str(config), "INVSYNC_PROFILE": "production"}
    prod = run_invsync(["sync", str(NIGHT1)], prod_env)
    assert prod.returncode == 0, out(prod)
    assert summary_of(prod).group("profile") == "production"
    assert prod.report()["counts"]["accepted"] == 3114 - 246
    assert real.levels() == rehearsal.levels()

    report = prod.report()
    assert report["store"]["profile"] == report["options"]["profile"] == "production"
    assert report["options"]["reason"] == "nightly"  # inherited from the top level
    assert report["options"]["brakes"]["min_rows_ratio"] == 0.4  # table keys merged
    assert report["options"]["brakes"]["max_zero_share"] == 0.2
    assert staged.report()["options"]["brakes"]["max_zero_share"] == 0.3
    runs = run_invsync(["runs", "--json"], env)
    assert [r["profile"] for r in map(json.loads, runs.stdout.splitlines())] == [
        "production", "staging"]
    only = run_invsync(["runs", "--json", "--profile", "staging", "--config", str(config)], env)
    assert [r["run_id"] for r in map(json.loads, only.stdout.splitlines())] == [
        staged.report()["run_id"]]
    shown = run_invsync(["show", "last", "--profile", "staging", "--config", str(config)], env)
    assert shown.returncode == 0 and staged.report()["run_id"] in shown.stdout, out(shown)
    table = run_invsync(["runs"], env)
    assert "profile" in table.stdout and "production" in table.stdout
    # A profile's own snapshot; one lock per store for every profile.
    for profile, sb in (("staging", rehearsal), ("production", real)):
        store_dir = state_store_dir(tmp_path / "state", api_url=sb.url)
        assert {p.name for p in store_dir.iterdir() if p.is_dir()} == {f"profile-{profile}"}
    unknown = run_invsync(["sync", str(NIGHT1), "--profile", "nope"], prod_env)
    assert unknown.returncode == 64 and "no profile 'nope'" in unknown.stderr, out(unknown)


def test_config_from_environment_and_global_options_after_the_command(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    reports = tmp_path / "elsewhere"
    config = tmp_path / "invsync.toml"
    config.write_text(f'report_dir = "{reports}"\n')
    env = {**cli_env, "INVSYNC_CONFIG": str(config)}
    result = run_invsync(["sync", str(NIGHT1), "--log-format", "json", "-v"], env)
    assert result.returncode == 0, out(result)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    run_id = events[0]["run_id"]
    assert all(e["run_id"] == run_id for e in events), "an event lacks the run id"
    assert {e["event"] for e in events} <= set(EVENT_NAMES)  # only the documented names
    assert events[-1]["event"] == "run_finished"
    assert events[-1]["summary"].startswith(f"invsync: succeeded run={run_id} rows=3114")
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert logs and all(e["event"] == "log" for e in logs)  # -v after the command counted
    assert (reports / run_id / "report.json").exists()
    # Every command reads the config: `runs` and `show` find the runs where it put them.
    listed = run_invsync(["runs", "--json"], env)
    assert [json.loads(line)["run_id"] for line in listed.stdout.splitlines()] == [run_id]
    shown = run_invsync(["show", "last", "--config", str(config)], cli_env)
    assert shown.returncode == 0 and run_id in shown.stdout, out(shown)
    for cmd in ("sync", "plan", "runs", "show", "drift", "verify", "resume"):
        helped = run_invsync([cmd, "--help"], cli_env)
        assert "--config" in helped.stdout and "--profile" in helped.stdout, cmd
    bad = run_invsync(["runs", "--config", str(tmp_path / "nope.toml"), "--log-format=json"],
                      cli_env)
    assert bad.returncode == 64
    assert [json.loads(line)["event"] for line in bad.stdout.splitlines()] == ["error"]


# ---- output made for cron -----------------------------------------------------------------


def test_summary_line_quiet_and_retries_only_at_verbose(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    sb = sandbox_factory("--error-rate", "0.3", "--seed", "3")
    env = env_for(sb, tmp_path)
    # Fast retries, the defaults' time bounds (a 30% error rate must not exhaust them).
    config = retry_config(tmp_path, max_attempts=8, max_total_s=300.0, timeout_s=60.0)
    result = run_invsync(["sync", str(NIGHT1), "--config", str(config), "--batch-size", "200"],
                         env)
    assert result.returncode == 0, out(result)
    failed = [r for r in sb.requests() if r["status"] >= 500]
    assert failed, "the seeded sandbox failed nothing: the test proves nothing"
    m = summary_of(result)
    assert (m.group("status"), m.group("rows"), m.group("updated")) == ("succeeded", "3114",
                                                                         "2868")
    assert m.group("rest") == f" retries={len(failed)} (5xx: {len(failed)})", m.group(0)
    assert m.group("report") == str(result.report_dir())
    assert "retrying" not in result.stderr, "retries are logged at the default level"
    for line in result.stderr.splitlines():  # not a terminal: every line is stamped
        assert TIMESTAMP.match(line), line
    assert result.report()["requests"]["retries"] == len(failed)

    verbose = run_invsync(["sync", str(NIGHT2), "--config", str(config), "-v", "--full",
                           "--batch-size", "200"], env)
    assert verbose.returncode == 0, out(verbose)
    retried = [line for line in verbose.stderr.splitlines() if "retrying" in line]
    assert len(retried) == int(verbose.report()["requests"].get("retries", 0)) > 0
    assert all(TIMESTAMP.match(line) for line in retried)

    quiet_ok = run_invsync(["sync", str(NIGHT1), "-q"], env)
    assert (quiet_ok.returncode, quiet_ok.stdout) == (0, ""), out(quiet_ok)
    quiet_bad = run_invsync(["-q", "sync", str(partial_file(tmp_path / "p.csv")),
                             "--allow-shrink"], env)
    assert quiet_bad.returncode == 1
    assert len(quiet_bad.stdout.splitlines()) == 1
    m = summary_of(quiet_bad)
    assert (m.group("status"), m.group("rows"), m.group("updated"), m.group("rejected"),
            m.group("refused")) == ("partial", "15", "10", "5", "1")
    assert " exit=1 " in m.group(0)


# ---- the lock -------------------------------------------------------------------------------


def test_lock_refusal_leaves_no_run_and_wait_lock_waits(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> None:
    sb = sandbox_factory("--latency-ms", "250")
    env = env_for(sb, tmp_path)
    runs_dir = tmp_path / "state" / "invsync" / "runs"
    args = ["sync", str(NIGHT1), "--batch-size", "100", "--concurrency", "1"]
    first = subprocess.Popen([sys.executable, "-m", "invsync", *args, "--log-format", "json"],
                             env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert first.stdout is not None
        started = json.loads(first.stdout.readline())  # emitted once the lock is held
        assert started["event"] == "run_started", started
        holder = started["run_id"]

        refused = run_invsync(args, env)
        assert refused.returncode == 4, out(refused)
        assert f"run {holder}" in refused.stderr
        timed_out = run_invsync([*args, "--wait-lock", "0.5"], env)
        assert timed_out.returncode == 4 and "after waiting 0.5 s" in timed_out.stderr
        assert first.poll() is None, "the first run ended too early: the test proves nothing"
        assert not runs_dir.exists() or not list(runs_dir.iterdir()), "a refused run left a folder"

        waited = run_invsync([*args, "--wait-lock", "120"], env)
        _rest, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    assert first.returncode == 0
    assert waited.returncode == 0, out(waited)
    assert f"waiting up to 120 s for the lock held by run {holder}" in waited.stderr
    # It ran after the first one finished: everything was already in the snapshot.
    counts = waited.report()["counts"]
    assert (counts["unchanged"], counts["accepted"]) == (3114, 0)
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(
        [holder, waited.report()["run_id"]])
    shown = run_invsync(["show", "last"], env)
    assert waited.report()["run_id"] in shown.stdout


# ---- units: which events a run raises, how profiles merge --------------------------------


def _report(status: str, **kw: Any) -> Any:
    from invsync.stages.report import Counts, RunReport

    counts = kw.pop("counts", {})
    return RunReport(run_id="20261129T000000.000Z-aaaaaa", status=status, started_at="",
                     counts=Counts(**counts), **kw)


@pytest.mark.parametrize(("report", "on", "expected"), [
    (_report("succeeded"), ["failed", "brake", "partial"], []),
    (_report("succeeded"), ["succeeded"], ["succeeded"]),
    (_report("dry_run", exit_code=3, brakes=[{"name": "x"}]), list(EVENTS), []),
    (_report("failed", exit_code=3, brakes=[{"name": "x"}]), ["brake", "failed"], ["brake"]),
    (_report("failed", exit_code=2), ["brake", "failed"], ["failed"]),
    (_report("succeeded", resumed_from="r0"), ["interrupted"], []),
    (_report("succeeded", resumed_from="r0"), ["resumed"], ["resumed"]),
    (_report("succeeded", notes=["took over the lock left by run r0 (pid 1), which is no "
                                 "longer running"]), ["resumed"], ["resumed"]),
    (_report("interrupted", exit_code=143), ["interrupted", "resumed"], ["interrupted"]),
])
def test_events_for(report: Any, on: list[str], expected: list[str]) -> None:
    from invsync.run.notify import events_for, notify_config

    cfg = notify_config({"url": "https://example.invalid/x", "on": on})
    assert events_for(report, cfg, None, None) == expected


def test_profile_values_merge_over_the_top_level(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.errors import UsageError
    from invsync.run.config import load_settings

    monkeypatch.delenv("INVSYNC_CONFIG", raising=False)
    monkeypatch.delenv("INVSYNC_PROFILE", raising=False)
    config = tmp_path / "c.toml"
    config.write_text('concurrency = 2\nreason = "top"\n[columns]\n"A" = "sku"\n'
                      '[profiles.p]\nconcurrency = 8\n[profiles.p.columns]\n"B" = "quantity"\n'
                      '[profiles.q]\nbogus = 1\n')
    with pytest.raises(UsageError, match=r"unknown key\(s\) in \[profiles.q\]: bogus"):
        load_settings(config, {"profile": "p"})
    config.write_text(config.read_text().replace("bogus = 1", "location_id = 3"))
    s = load_settings(config, {"profile": "p"})
    assert (s.profile, s.concurrency, s.reason) == ("p", 8, "top")
    assert s.column_map == {"A": "sku", "B": "quantity"}
    monkeypatch.setenv("INVSYNC_CONFIG", str(config))
    monkeypatch.setenv("INVSYNC_PROFILE", "q")
    s = load_settings(None, {})
    assert (s.config_path, s.profile, s.location_id, s.concurrency) == (config, "q", 3, 2)
    monkeypatch.delenv("INVSYNC_CONFIG")
    with pytest.raises(UsageError, match="needs a config file"):
        load_settings(None, {})
