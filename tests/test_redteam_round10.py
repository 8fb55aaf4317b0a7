"""Round 10 red team: a careless operator, a library caller and a hostile file or store
against this round's speed changes (Settings as a plain dataclass, the run folder written
in worker threads, redaction's one-scan shortcut, the first run's plan without a join),
kept as tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import SAMPLE, output, run_invsync, write_csv

import invsync
from invsync.errors import UsageError
from invsync.run.config import Settings
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
