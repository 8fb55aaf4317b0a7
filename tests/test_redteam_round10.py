"""Round 10 red team: a careless operator, a library caller and a hostile file or store
against this round's speed changes (Settings as a plain dataclass, the run folder written
in worker threads, redaction's one-scan shortcut, the first run's plan without a join),
kept as tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    SAMPLE,
    TOKEN,
    env_at,
    env_for,
    kill_when,
    output,
    run_invsync,
    spawn,
    write_csv,
)
from misbehaving import Reply, Request, misbehaving_store

import invsync
from invsync.errors import UsageError
from invsync.run.config import Settings
from invsync.sandbox.process import SandboxProcess
from invsync.stages.validate import QuantityRules

HUGE = 99999999999999999999
"""A whole number past what a 64-bit column holds."""


def _offline_env(tmp_path: Path) -> dict[str, str]:
    """An environment for a dry run that talks to no store (no token, no store hash)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_", "XDG_STATE_HOME"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["INVSYNC_LOCK_DIR"] = str(tmp_path / "locks")
    return env


def _stock(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                     [["POSTER-1755", 1, 5]])


def _one_line_usage(result: object, *words: str) -> None:
    text = output(result)  # type: ignore[arg-type]
    assert result.returncode == 64, text  # type: ignore[attr-defined]
    assert "Traceback" not in text and "unexpected error" not in text, text
    for word in words:
        assert word in text, text


# ---- (a) settings: values the tables cannot hold, values that silently mean something else --


def test_a_location_id_past_64_bits_is_a_usage_error_not_an_unexpected_one(
        tmp_path: Path) -> None:
    """``--location-id 99999999999999999999`` (or the config file's, or a library caller's)
    was accepted and failed when the plan was made: exit 2, 'unexpected error:
    InvalidOperationError: conversion from i128 to i64 failed', with a failed run folder."""
    env, stock = _offline_env(tmp_path), _stock(tmp_path)
    flag = run_invsync(["sync", "--dry-run", "--location-id", str(HUGE), str(stock)], env)
    _one_line_usage(flag, "--location-id")
    config = tmp_path / "invsync.toml"
    config.write_text(f"location_id = {HUGE}\n")
    from_file = run_invsync(["sync", "--dry-run", "--config", str(config), str(stock)], env)
    _one_line_usage(from_file, "location_id", str(config))
    assert not (tmp_path / "state" / "invsync" / "runs").exists() or not any(
        (tmp_path / "state" / "invsync" / "runs").iterdir()), "a usage error is no run"
    settings = Settings.from_config(None, location_id=HUGE, dry_run=True,
                                    state_dir=str(tmp_path / "lib"))
    with pytest.raises(UsageError, match="--location-id"):
        invsync.sync_file(stock, settings)
    # The largest id a table holds is still taken.
    top = run_invsync(["sync", "--dry-run", "--location-id", str(2**63 - 1), str(stock)], env)
    assert top.returncode == 0, output(top)


@pytest.mark.parametrize("flag", ["--buffer", "--max-quantity"])
def test_a_negative_buffer_or_cap_flag_is_refused_as_the_config_key_is(
        tmp_path: Path, flag: str) -> None:
    """``[quantity] buffer = -3`` is refused (exit 64), but ``--buffer -3`` was taken and
    ADDED 3 to every level (the file's 5 was planned as 8); ``--max-quantity -1`` capped
    every level below 0 (with ``--clamp-negative``: every item to 0)."""
    env, stock = _offline_env(tmp_path), _stock(tmp_path)
    result = run_invsync(["sync", "--dry-run", flag, "-3", str(stock)], env)
    _one_line_usage(result, flag, "0 or more")
    big = run_invsync(["sync", "--dry-run", flag, str(HUGE), str(stock)], env)
    _one_line_usage(big, flag)
    rules = QuantityRules(buffer=-3) if flag == "--buffer" else QuantityRules(maximum=-3)
    settings = Settings(rules=rules, dry_run=True, state_dir=tmp_path / "lib")
    with pytest.raises(UsageError, match=flag):
        invsync.sync_file(stock, settings)


@pytest.mark.parametrize("key", ["state_dir", "report_dir"])
def test_a_config_folder_given_as_empty_text_is_refused_not_the_current_folder(
        tmp_path: Path, key: str) -> None:
    """``state_dir = ""`` (a template left empty) put the snapshot, lock and runs in the
    folder the job happened to start in; ``report_dir = ""`` dropped run folders there."""
    env, stock = _offline_env(tmp_path), _stock(tmp_path)
    config = tmp_path / "invsync.toml"
    config.write_text(f'{key} = ""\n')
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "invsync", "sync", "--dry-run", "--config",
                           str(config), str(stock)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 64, text
    assert f"{key} must be a folder path" in text and str(config) in text, text
    assert list(cwd.iterdir()) == [], "nothing is written into the current folder"


def test_a_sample_dry_run_still_works_offline(tmp_path: Path) -> None:
    """The offline environment of these tests runs a plain dry run (exit 0)."""
    result = run_invsync(["sync", "--dry-run", str(SAMPLE / "night1.csv")],
                         _offline_env(tmp_path))
    assert result.returncode == 0, output(result)


# ---- (c) redaction: a store (or a proxy) that echoes the token back ------------------------


def _echoing(shape: str) -> Callable[[Request], Reply | None]:
    """A store whose write answers echo the request's token in ``shape``."""
    def respond(req: Request) -> Reply | None:
        if req.method != "PUT":
            return None
        token = next(v for k, v in req.headers.items() if k.lower() == "x-auth-token")
        said = shape.format(token=token, upper=token.upper())
        if shape.startswith("<html>"):
            return Reply(500, said.encode(), {"Content-Type": "text/html"})
        return Reply.json(422, {"status": 422, "title": said, "detail": said,
                                "errors": {"items.0": said}}, **{"X-Echo": token})
    return respond


@pytest.mark.parametrize("shape", [
    "bad item for token {token}",                          # a bare token, no clue word
    "request headers: {{'x-auth-token': '{token}'}}",      # a header echo
    "see https://proxy.example/log?access_token={token}&x=1",
    "https://user:{token}@proxy.example/",                 # as a URL's password
    "<html>upstream said X-AUTH-TOKEN={token}</html>",     # an HTML error page
])
def test_c_a_store_echoing_the_token_never_puts_it_in_any_output(
        sandbox: SandboxProcess, tmp_path: Path, shape: str) -> None:
    """Whatever the shape of the echo, the token is in no output, log, event or run file."""
    stock = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                      [["POSTER-1755", 1, 7]])
    retry = tmp_path / "retry.toml"
    retry.write_text("[retry]\nmax_attempts = 2\nbase_delay_s = 0.01\nmax_delay_s = 0.05\n"
                     "max_total_s = 5\n")
    with misbehaving_store(_echoing(shape), sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        result = run_invsync(["-vv", "--log-format", "json", "sync", "--config", str(retry),
                              str(stock)], env)
    assert result.returncode in (1, 2), output(result)
    runs = tmp_path / "state" / "invsync" / "runs"
    files = [p for p in runs.rglob("*") if p.is_file()] if runs.exists() else []
    for text in [result.stdout, result.stderr, *(p.read_text("utf-8", "replace") for p in files)]:
        assert TOKEN not in text and TOKEN.upper() not in text, text[:2000]


def test_c_a_url_password_holding_an_at_sign_is_redacted_whole(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """A proxy's answer naming its upstream ``http://svc:s3cr@tPass@proxy:3128`` (a password
    holding ``@``, taken whole by ``urlsplit``, which splits at the last ``@``) kept
    ``tPass`` in the run's outputs: the password was cut at its own ``@``."""
    from invsync.redact import redact

    assert redact("http://svc:s3cr@tPass@proxy.internal:3128/") == \
        "http://svc:[redacted]@proxy.internal:3128/"
    assert redact('["https://u:pw@h","a@b"]') == '["https://u:[redacted]@h","a@b"]'
    stock = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                      [["POSTER-1755", 1, 7]])
    with misbehaving_store(_echoing("upstream http://svc:s3cr@tPass@proxy.internal:3128 "
                                    "refused the write"), sandbox.url) as store:
        result = run_invsync(["--log-format", "json", "sync", str(stock)],
                             env_at(store.url, tmp_path, sandbox))
    runs = tmp_path / "state" / "invsync" / "runs"
    texts = [result.stdout, result.stderr,
             *(p.read_text("utf-8", "replace") for p in runs.rglob("*") if p.is_file())]
    assert any("proxy.internal" in t for t in texts), output(result)  # the echo got through
    for text in texts:
        assert "tPass" not in text, text[:2000]


# ---- (d) a first run (fresh state) plans without a join; the second sends nothing ----------

MIXED = [  # sku, product_id, variant_id, location_id, quantity: one item named three ways
    ["TOWEL-907-NAVY-SHEET", "", "", 1, 5],
    ["", "", 1000, 2, 7],
    ["POSTER-1755", "", "", 1, 3],
    ["", 101, "", 2, 4],
    ["TOWEL-907-BURG-BATH", "", "", 1, 2],
    ["TOWEL-907-BURG-BATH", "", "", 1, 6],
    ["", "", 1001, 1, 9],
    ["NB-8084", "", "", 2, 0],
    ["", 103, "", 1, 0],
]


@pytest.mark.parametrize(("duplicates", "baseline"), [
    ("sum", "live"), ("last", "snapshot"), ("reject", "snapshot")])
def test_d_a_first_runs_plan_is_the_joined_one_and_the_second_run_sends_nothing(
        sandbox: SandboxProcess, tmp_path: Path, duplicates: str, baseline: str) -> None:
    """Fresh state, a file naming items by sku, product id and variant id at two locations,
    with duplicates and zeros: the first run sets exactly what the file says (duplicates as
    the policy says), the second run (against the snapshot the first made) sends nothing."""
    stock = write_csv(tmp_path / "mixed.csv",
                      ["sku", "product_id", "variant_id", "location_id", "quantity"], MIXED)
    env = env_for(sandbox, tmp_path)
    args = ["--log-format", "json", "sync", "--duplicates", duplicates, "--baseline", baseline,
            "--allow-zeroing", str(stock)]
    first = run_invsync(args, env)
    assert first.returncode == (1 if duplicates == "reject" else 0), output(first)
    burg = {"sum": 17, "last": 9}.get(duplicates)  # rows 6, 7 and 8 are one item
    levels = sandbox.levels()
    assert levels.get((1, "TOWEL-907-BURG-BATH")) == burg, levels
    assert levels[(1, "TOWEL-907-NAVY-SHEET")] == 5 and levels[(2, "TOWEL-907-NAVY-SHEET")] == 7
    assert levels[(1, "POSTER-1755")] == 3 and levels[(2, "POSTER-1755")] == 4
    assert levels.get((2, "NB-8084"), 0) == 0 and levels.get((1, "NB-8084"), 0) == 0
    puts = len([r for r in sandbox.requests() if r["method"] == "PUT"])
    assert puts >= 1
    second = run_invsync(args, env)
    assert second.returncode == first.returncode, output(second)
    assert len([r for r in sandbox.requests() if r["method"] == "PUT"]) == puts, output(second)
    end = [json.loads(line) for line in second.stdout.splitlines()
           if '"run_finished"' in line][-1]
    assert end["counts"]["submitted"] == 0 and end["counts"]["changed"] == 0, end


def test_a_a_store_hash_too_long_is_told_so(tmp_path: Path) -> None:
    """A 200-character store hash of letters was refused as holding other characters than
    letters, digits, '-' and '_' (it holds none), and printed whole."""
    env = {**_offline_env(tmp_path), "BIGCOMMERCE_STORE_HASH": "a" * 200}
    result = run_invsync(["sync", "--dry-run", str(_stock(tmp_path))], env)
    _one_line_usage(result, "at most 100", "200 characters")
    assert "a" * 41 not in output(result), output(result)


# ---- (b) the run folder: a folder the plan was written into ahead, then the run killed ------


def test_b_a_folder_holding_only_plan_csv_is_never_taken_for_a_run(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """plan.csv is written ahead of report.json: kill -9 between them leaves a newer folder
    holding only the plan (and the row files). ``runs``, ``show last``, ``verify last`` and
    ``revert last`` keep to the last real run; ``prune`` removes the leftover."""
    env = env_for(sandbox, tmp_path)
    stock = write_csv(tmp_path / "s.csv", ["sku", "location_id", "quantity"],
                      [["POSTER-1755", 1, 7], ["NB-8084", 1, 3]])
    assert run_invsync(["sync", str(stock)], env).returncode == 0
    write_csv(stock, ["sku", "location_id", "quantity"], [["POSTER-1755", 1, 8], ["NB-8084", 1, 4]])
    done = run_invsync(["sync", str(stock)], env)
    assert done.returncode == 0, output(done)
    runs = tmp_path / "state" / "invsync" / "runs"
    real = max(p.name for p in runs.iterdir())
    left = runs / "29991231T235959.000Z-abcdef"  # newer than any real run
    left.mkdir()
    (left / "plan.csv").write_bytes((runs / real / "plan.csv").read_bytes())
    (left / "rejected.csv").write_text("sku,location_id,quantity,row,reason,message\n")
    listed = run_invsync(["runs"], env)
    assert listed.returncode == 0 and real in listed.stdout, output(listed)
    assert left.name not in output(listed)
    for command in ([["show", "last"], ["verify", "last"],
                     ["revert", "last", "--dry-run"]]):
        result = run_invsync(command, env)
        assert result.returncode == 0, (command, output(result))
        assert left.name not in output(result), (command, output(result))
        assert "Traceback" not in output(result)
    shown = run_invsync(["show", left.name[:15]], env)
    assert shown.returncode != 0 and "Traceback" not in output(shown), output(shown)
    resumed = run_invsync(["resume"], env)
    assert "nothing to resume" in output(resumed), output(resumed)


def test_b_revert_of_a_run_whose_plan_was_not_written_does_not_say_nothing_to_revert(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """A report folder too full for plan.csv leaves the bare report.json of a run that set
    levels; ``revert last`` said 'nothing to revert', as for a run that set none."""
    env = env_for(sandbox, tmp_path)
    stock = write_csv(tmp_path / "s.csv", ["sku", "location_id", "quantity"],
                      [["POSTER-1755", 1, 7], ["NB-8084", 1, 3]])
    assert run_invsync(["sync", str(stock)], env).returncode == 0
    (folder,) = (tmp_path / "state" / "invsync" / "runs").iterdir()
    (folder / "plan.csv").unlink()  # as the bare report.json of a full disk leaves it
    result = run_invsync(["revert", "last"], env)
    assert result.returncode == 64, output(result)
    assert "nothing to revert" not in output(result), output(result)
    assert "set 2 item(s)" in output(result) and "cannot be reverted" in output(result)
    assert len([r for r in sandbox.requests() if r["method"] == "PUT"]) == 1


@pytest.mark.parametrize(("values", "words"), [
    ({"quota_share": float("nan")}, "quota_share"),   # was exit 2: 'cannot convert NaN'
    ({"quota_share": 5.0}, "quota_share"),            # five times the store's window
    ({"max_as_of_age_s": float("nan"), "as_of": "mtime"}, "max_as_of_age"),  # never refused
    ({"verify_lag_s": float("nan")}, "verify_lag_s"),
    ({"retention_s": -1.0}, "retention"),
])
def test_a_a_program_setting_a_number_no_config_file_may_hold_gets_a_usage_error(
        sandbox: SandboxProcess, tmp_path: Path, values: dict[str, object], words: str) -> None:
    """``dataclasses.replace(settings, quota_share=float("nan"))``: a value of the field's
    own type is taken as it is, but no config file could hold it (exit 64 there). It made a
    run that failed with 'unexpected error: ValueError: cannot convert float NaN to
    integer', used five times the store's rate window, or never refused an old as-of time."""
    import dataclasses

    env = env_for(sandbox, tmp_path)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        base = Settings.from_config(None, state_dir=str(tmp_path / "state"))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    settings = dataclasses.replace(base, **values)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=words):
        invsync.sync_file(_stock(tmp_path), settings)
    assert sandbox.requests() == [], "nothing was asked of the store"


@pytest.mark.parametrize("columns", ["10", "20"])
def test_b_the_summary_never_cuts_a_number_on_a_narrow_terminal(
        tmp_path: Path, columns: str) -> None:
    """``COLUMNS=10`` (a narrow terminal, or a job's environment) printed the counts as
    '3,1…' for 3,114 rows: a number the operator cannot read. The summary is laid out as
    for a wide terminal, byte for byte."""
    env = _offline_env(tmp_path)
    wide = run_invsync(["sync", "--dry-run", str(SAMPLE / "night1.csv")],
                       {**env, "COLUMNS": "200"})
    narrow = run_invsync(["show", "last"], {**env, "COLUMNS": columns})
    assert wide.returncode == narrow.returncode == 0, output(narrow)
    assert "…" not in narrow.stdout, narrow.stdout
    assert run_invsync(["show", "last"], {**env, "COLUMNS": "200"}).stdout == narrow.stdout
    rows = next(line for line in narrow.stdout.splitlines() if line.startswith("rows read"))
    assert rows.split()[-1] == "3,114", narrow.stdout


def test_a_a_url_a_program_replaced_is_not_blamed_on_the_environment(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """``dataclasses.replace(settings, api_url="ftp://x")`` of settings whose URL came from
    BIGCOMMERCE_API_URL was refused as 'BIGCOMMERCE_API_URL must be an API URL ... not
    'ftp://x'': the variable holds a good URL; the program's value is the wrong one."""
    import dataclasses

    saved = dict(os.environ)
    os.environ.update(env_for(sandbox, tmp_path))
    try:
        base = Settings.from_config(None, state_dir=str(tmp_path / "state"))
        with pytest.raises(UsageError) as err:
            invsync.sync_file(_stock(tmp_path), dataclasses.replace(base, api_url="ftp://x"))
        bad_env = {**env_for(sandbox, tmp_path), "BIGCOMMERCE_API_URL": "ftp://y"}
        os.environ.update(bad_env)
        with pytest.raises(UsageError, match="BIGCOMMERCE_API_URL must be"):
            Settings.from_config(None, state_dir=str(tmp_path / "s2")).check(needs_store=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert str(err.value).startswith("api_url must be"), err.value


@pytest.mark.parametrize(("values", "words"), [
    ({"allow_empty": "no"}, "allow_empty must be true or false"),  # was True: brake off
    ({"clamp_negative": "no"}, "clamp_negative must be true or false"),
    ({"maximum": True}, "maximum must be a whole number"),          # was a cap of 1
    ({"buffer": 2.5}, "buffer must be a whole number"),             # exit 2: 'broke its schema'
    ({"buffer": "2"}, "buffer must be a whole number"),             # a TypeError
    ({"text_map": ["in stock"]}, "text_map must be a table"),       # a ValueError
    ({"text_map": {"in stock": "5"}}, "text_map must be a table"),
    ({"column_map": [("Artikel", "sku")]}, "column_map must be a table"),
    ({"wait_lock": "5"}, "wait_lock must be a number"),
])
def test_a_a_library_flag_override_of_the_wrong_type_is_refused(
        tmp_path: Path, values: dict[str, object], words: str) -> None:
    """``Settings.from_config`` checks the overrides that are Settings fields by type, but
    the flags that are not (the quantity rules, the brakes' allow_* overrides, the lock
    wait, the maps) were taken as given: ``allow_empty="no"`` turned the empty-file brake
    off, ``maximum=True`` capped every level at 1, ``buffer=2.5`` failed the run."""
    with pytest.raises(UsageError, match=words):
        Settings.from_config(None, dry_run=True, state_dir=str(tmp_path), **values)
    good = Settings.from_config(None, dry_run=True, state_dir=str(tmp_path), buffer=2,
                                allow_empty=True, text_map={"in stock": 5}, wait_lock=1.5,
                                column_map={"Artikel": "sku"})
    assert good.rules.buffer == 2 and good.brakes.allow_empty and good.wait_lock_s == 1.5


def test_b_show_last_of_a_run_stopped_by_sigterm_says_when_it_started(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[subprocess.Popen[bytes]]) -> None:
    """A run stopped by SIGTERM mid-send releases its lock (whose record held its start):
    ``show last`` said 'interrupted, not yet resumed (..., started ?, ...)'."""
    sb = sandbox_factory("--latency-ms", "300")
    env = env_for(sb, tmp_path)
    log = tmp_path / "run.log"
    proc = spawn(["sync", str(SAMPLE / "night1.csv"), "--batch-size", "50",
                  "--baseline", "snapshot"], env, log, children)
    journals = tmp_path / "state" / "invsync" / "stores"

    def a_batch_confirmed() -> bool:
        return any('"type":"confirmed"' in p.read_text()
                   for p in journals.rglob("journal.jsonl"))
    assert kill_when(a_batch_confirmed, proc, log, signal.SIGTERM) == 143, log.read_text()
    shown = run_invsync(["show", "last"], env)
    assert shown.returncode == 0, output(shown)
    first = shown.stdout.splitlines()[0]
    assert "not yet resumed" in first and "started ?" not in first, first
    run_id = first.split()[1].rstrip(":")
    assert f"started {run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T" in first, first


def test_a_a_program_s_home_relative_folders_are_expanded_as_the_flags_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Settings(state_dir="~/invsync")`` (a str, converted by pydantic) kept the ``~``: the
    run made a folder named ``~`` wherever the program ran; ``--state-dir ~/invsync`` and
    ``from_config(state_dir="~/invsync")`` mean the home folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for settings in (Settings(state_dir="~/invsync", report_dir="~/runs"),  # type: ignore[arg-type]
                     Settings(state_dir=Path("~/invsync"), report_dir=Path("~/runs"))):
        assert settings.state_dir == tmp_path / "home" / "invsync"
        assert settings.report_dir == tmp_path / "home" / "runs"
    assert Settings.from_config(None, state_dir="~/invsync").state_dir == \
        tmp_path / "home" / "invsync"
