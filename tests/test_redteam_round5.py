"""Round 5 red team: what a careless operator did to this round's changes, kept as tests.

Each test runs the real CLI. The config refusals need no store: a refused config file must
stop invsync before it talks to one (the API URL points at a closed port to prove it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_invsync, write_csv

from invsync.errors import UsageError
from invsync.run.config import Settings

SECRET = "SEKRIT-do-not-print"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env.update({
        "BIGCOMMERCE_STORE_HASH": "sandbox",
        "BIGCOMMERCE_ACCESS_TOKEN": SECRET,
        "BIGCOMMERCE_API_URL": "http://127.0.0.1:9",
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "COLUMNS": "200",
    })
    return env


def _plan_with(tmp_path: Path, config: Path) -> tuple[int, str]:
    stock = write_csv(tmp_path / "stock.csv", ["sku", "quantity"], [["A", 1]])
    result = run_invsync(["plan", str(stock), "--config", str(config)], _env(tmp_path),
                         timeout=120)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(("text", "key"), [
    ("batch_size = 5000\n", "batch_size"),
    ("batch_size = 0\n", "batch_size"),
    ("concurrency = 0\n", "concurrency"),
    ("location_id = -1\n", "location_id"),
    ("[profiles.night]\nbatch_size = 5000\n", "batch_size"),
])
def test_out_of_range_number_in_config_names_file_and_key(tmp_path: Path, text: str,
                                                          key: str) -> None:
    """Found: these were refused as `--batch-size must be ...`, naming a flag the operator
    never passed instead of the config file and its key."""
    config = tmp_path / "invsync.toml"
    config.write_text(text)
    args_profile = "[profiles.night]" in text
    stock = write_csv(tmp_path / "stock.csv", ["sku", "quantity"], [["A", 1]])
    argv = ["plan", str(stock), "--config", str(config)]
    if args_profile:
        argv += ["--profile", "night"]
    result = run_invsync(argv, _env(tmp_path), timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 64, out
    assert f"config file {config}" in out and key in out, out
    assert "--" + key.replace("_", "-") not in out, out
    assert "Traceback" not in out


def test_unknown_encoding_in_config_refused_before_any_run(tmp_path: Path) -> None:
    """Found: `encoding = "nope"` started a run (a failed run folder, so a `failed`
    notification) and blamed `--encoding`; config.md: bad values are refused before
    anything runs, naming the key."""
    config = tmp_path / "invsync.toml"
    config.write_text('encoding = "nope-enc"\n')
    code, out = _plan_with(tmp_path, config)
    assert code == 64, out
    assert f"config file {config}" in out and "encoding" in out, out
    assert "--encoding" not in out, out
    assert not (tmp_path / "state" / "invsync" / "runs").exists() or not any(
        (tmp_path / "state" / "invsync" / "runs").iterdir()), out


@pytest.mark.parametrize("kind", ["directory", "binary", "utf16"])
def test_odd_config_file_is_named_plainly(tmp_path: Path, kind: str) -> None:
    """Found: `--config somedir` said `cannot read config file PosixPath('somedir')`:
    a Python repr, not the file's name as the operator typed it."""
    config = tmp_path / "odd.toml"
    if kind == "directory":
        config.mkdir()
    elif kind == "binary":
        config.write_bytes(bytes(range(256)) * 8)
    else:
        config.write_bytes('reason = "x"\n'.encode("utf-16"))
    code, out = _plan_with(tmp_path, config)
    assert code == 64, out
    assert f"config file {config}" in out, out
    assert "PosixPath" not in out and "Traceback" not in out, out
    assert SECRET not in out


def test_unknown_column_target_in_config_refused_before_any_run(tmp_path: Path) -> None:
    """Found: `[columns] "Bestand" = "qty"` started a run (a failed run folder) and the
    message named neither the config file nor the key."""
    config = tmp_path / "invsync.toml"
    config.write_text('[columns]\n"Artikel" = "sku"\n"Bestand" = "qty"\n')
    code, out = _plan_with(tmp_path, config)
    assert code == 64, out
    assert f"config file {config}" in out and "columns.Bestand" in out, out
    runs = tmp_path / "state" / "invsync" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), out


@pytest.mark.parametrize("value", ['"yesterday"', "1979-05-27T07:32:00", '"2026-12-06T02:00"'])
def test_bad_as_of_in_config_refused_before_any_run(tmp_path: Path, value: str) -> None:
    """Found: `as_of = "yesterday"` (or a time without an offset) started a run and was
    blamed on `--as-of`, a flag the operator never passed."""
    config = tmp_path / "invsync.toml"
    config.write_text(f"as_of = {value}\n")
    code, out = _plan_with(tmp_path, config)
    assert code == 64, out
    assert f"config file {config}" in out and "as_of" in out, out
    assert "--as-of" not in out, out
    runs = tmp_path / "state" / "invsync" / "runs"
    assert not runs.exists() or not any(runs.iterdir()), out


def test_endless_config_file_is_refused_not_read_into_memory(tmp_path: Path) -> None:
    """Found: `--config /dev/zero` read until memory ran out (`unexpected error:
    MemoryError`, exit 2, or the machine swapping). A 64 MiB sparse file stands in for it
    here, so this test stays cheap even where the fix is missing."""
    config = tmp_path / "huge.toml"
    with config.open("wb") as handle:
        handle.truncate(64 << 20)
    code, out = _plan_with(tmp_path, config)
    assert code == 64, out
    assert f"config file {config} is larger than" in out, out
    assert "MemoryError" not in out and "Traceback" not in out, out


def test_utf16_config_file_says_what_to_do(tmp_path: Path) -> None:
    """Found: a config saved as UTF-16 (Notepad) got a codec dump: `'utf-8' codec can't
    decode byte 0xff in position 0`."""
    config = tmp_path / "invsync.toml"
    config.write_bytes('reason = "x"\n'.encode("utf-16"))
    code, out = _plan_with(tmp_path, config)
    assert code == 64, out
    assert f"config file {config} is not UTF-8" in out and "codec" not in out, out


@pytest.mark.parametrize("value", ["[" * 50000 + "]" * 50000, "{a=" * 3000 + "1" + "}" * 3000])
def test_deeply_nested_config_is_a_config_error(tmp_path: Path, value: str) -> None:
    """Found: a config nesting lists or inline tables thousands deep ended in
    `unexpected error: RecursionError` (exit 2) instead of naming the file (exit 64)."""
    config = tmp_path / "invsync.toml"
    config.write_text(f"reason = {value}\n")
    code, out = _plan_with(tmp_path, config)
    assert code == 64, out
    assert f"config file {config} is not valid TOML" in out, out
    assert "RecursionError" not in out and "Traceback" not in out, out


@pytest.mark.parametrize(("key", "value"), [("location_id", True), ("batch_size", "10"),
                                            ("dry_run", "yes"), ("baseline", 1),
                                            ("state_dir", 5)])
def test_library_overrides_of_the_wrong_type_are_refused(key: str, value: object) -> None:
    """`Settings.from_config(location_id=True)` ran against location 1 and
    `batch_size="10"` became 10: a library caller's slip is refused as a config file's is."""
    with pytest.raises(UsageError, match=f"{key} must be"):
        Settings.from_config(None, **{key: value})


def test_library_overrides_of_the_right_type_still_work(tmp_path: Path) -> None:
    s = Settings.from_config(None, location_id=2, batch_size=10, dry_run=True,
                             state_dir=tmp_path, baseline="snapshot")
    assert (s.location_id, s.batch_size, s.dry_run, s.baseline) == (2, 10, True, "snapshot")
