"""Round 6 red team: what a careless operator did to this round's changes, kept as tests.

Each test runs the real CLI. The API URL refusals need no store: a refused URL must stop
invsync before it talks to one (every URL here points at 127.0.0.1, a closed port).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import kill_when, run_invsync, spawn, write_csv

PASSWORD = "Pw0rdZZ-never-shown"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env.update({
        "BIGCOMMERCE_STORE_HASH": "sandbox",
        "BIGCOMMERCE_ACCESS_TOKEN": "tok",
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "COLUMNS": "200",
    })
    return env


def _plan(tmp_path: Path, where: str, url: str) -> tuple[int, str, str]:
    """``plan`` with ``url`` as the API URL given ``where`` (env, flag, config, profile):
    exit code, output and the name the refusal must give."""
    stock = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"], [["A", 1, 1]])
    env, argv = _env(tmp_path), ["plan", str(stock)]
    config = tmp_path / "invsync.toml"
    quoted = "'''" + url + "'''"
    if where == "env":
        env["BIGCOMMERCE_API_URL"], named = url, "BIGCOMMERCE_API_URL"
    elif where == "flag":
        argv += ["--api-url", url]
        named = "--api-url"
    elif where == "config":
        config.write_text(f"api_url = {quoted}\n")
        argv += ["--config", str(config)]
        named = f"config file {config}: api_url"
    else:
        config.write_text(f"[profiles.night]\napi_url = {quoted}\n")
        argv += ["--config", str(config), "--profile", "night"]
        named = f"config file {config}: [profiles.night] api_url"
    result = run_invsync(argv, env, timeout=120)
    return result.returncode, result.stdout + result.stderr, named


@pytest.mark.parametrize("where", ["env", "flag", "config", "profile"])
@pytest.mark.parametrize("url", [
    f"u:{PASSWORD}@127.0.0.1",          # the scheme forgotten
    f"https:/u:{PASSWORD}@127.0.0.1",   # one slash
    f"//u:{PASSWORD}@127.0.0.1",
])
def test_api_url_without_its_scheme_never_shows_its_password(tmp_path: Path, where: str,
                                                              url: str) -> None:
    """Found: `u:PASSWORD@host` was refused (exit 64) but printed whole, password and all:
    the redaction only knew URLs written with `scheme://`."""
    code, out, named = _plan(tmp_path, where, url)
    assert code == 64, out
    assert PASSWORD not in out, out
    assert f"{named} must be an API URL" in out, out
    assert "[redacted]@127.0.0.1" in out, out


@pytest.mark.parametrize("where", ["env", "flag", "config", "profile"])
@pytest.mark.parametrize("url", [
    f"  https://u:{PASSWORD}@127.0.0.1:9",   # pasted with a leading space
    f"https://u:{PASSWORD}@127.0.0.1:9\n",   # ... or a line end
    f"https://u:{PASSWORD}@127.0.0 .1:9",    # a space in the host
    f"https://u:{PASSWORD}@127.0.0.1\t:9",
    f"https://u:{PASSWORD}@127.0.0%20.1:9",  # a %-encoded space in the host
])
def test_api_url_with_a_space_or_line_end_is_refused_as_config(tmp_path: Path, where: str,
                                                               url: str) -> None:
    """Found: these passed the API URL check (``urlsplit`` drops a leading space and line
    ends) and failed on the first request instead: exit 2, `could not be sent to ...:
    UnsupportedProtocol` / `InvalidURL`, or (a space in the host) a name look-up retried
    for a minute. A bad URL is a config error: exit 64, naming where it came from."""
    code, out, named = _plan(tmp_path, where, url)
    assert code == 64, out
    assert f"{named} must be an API URL" in out, out
    assert PASSWORD not in out and "Traceback" not in out, out
    assert "/inventory/" not in out, out  # nothing was asked of a store


def test_a_workbook_read_killed_leaves_nothing_in_tmpdir_after_the_next_read(
        tmp_path: Path, children: list[Any]) -> None:
    """Found: `kill -9` during a workbook read left the read's own folder
    (`$TMPDIR/invsync-read-XXXX`, named without the process id) for good: the next read
    swept only the memory file system's folders."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet()
    sheet.append(["sku", "location_id", "quantity"])
    for i in range(20_000):
        sheet.append([f"SKU-{i:06d}", 1, i % 50])
    path = tmp_path / "stock.xlsx"
    book.save(path)
    env = _env(tmp_path)
    del env["BIGCOMMERCE_ACCESS_TOKEN"]  # an offline plan: no store needed
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env["TMPDIR"] = str(scratch)

    def left() -> list[Path]:
        return sorted(scratch.glob("invsync-read-*"))

    log = tmp_path / "killed.log"
    proc = spawn(["plan", str(path)], env, log, children)
    kill_when(left, proc, log)
    assert left(), "the killed read had its folder"
    again = run_invsync(["plan", str(path)], env)
    assert again.returncode in (0, 1), again.stdout + again.stderr
    assert left() == [], left()


@pytest.mark.parametrize(("url", "said"), [
    (f"sftp:/u:{PASSWORD}@127.0.0.1/x", "a URL needs sftp:// before its host"),
    (f"sftp//u:{PASSWORD}@127.0.0.1/x", "a URL needs sftp:// before its host"),
    (f"sftp://u:{PASSWORD}@127.0.0 .1/x", "the host name has a space"),
    (f"https://u:{PASSWORD}@h%20x/x", "the host name has a space"),
    (f"sftp://u:{PASSWORD}@h%0Ax/x", "the host name has a space"),
])
def test_a_source_url_refused_never_shows_its_password(tmp_path: Path, url: str,
                                                       said: str) -> None:
    """Found: `sftp:/u:PASSWORD@host/x` was refused with the password hidden in the URL
    shown, then repeated whole in the hint (`for a local path, write ./sftp:/u:PASSWORD@...`);
    and a space in the host passed the start-up check, so the run tried to reach it."""
    stock = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"], [["A", 1, 1]])
    config = tmp_path / "invsync.toml"
    config.write_text(f"[sources.warehouse]\nurl = '''{url}'''\n")
    env = _env(tmp_path)
    env["BIGCOMMERCE_API_URL"] = "http://127.0.0.1:9"
    result = run_invsync(["plan", str(stock), "--config", str(config)], env, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 64, out
    assert f"config file {config}: [sources.warehouse] url must be" in out, out
    assert said in out, out
    assert PASSWORD not in out and "Traceback" not in out, out
