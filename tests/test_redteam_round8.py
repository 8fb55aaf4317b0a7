"""Round 8 red team: what a careless operator or a misbehaving store did to this round's
store-run changes, kept as tests. Each test runs the real CLI against a real sandbox process.

This round the run's HTTP client is made in a worker thread while the file is read, and
batches ready together are journaled together (one fsync) and sent together
(docs/guarantees.md, docs/design.md).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    catalog_skus,
    confirmed_in_journal,
    env_for,
    kill_when,
    output,
    retry_config,
    run_invsync,
    spawn,
    state_store_dir,
    stocked,
    write_csv,
    write_stock,
)

from invsync.sandbox.process import SandboxProcess

BROKEN_CLIENT = {
    "cert-file-missing": {"SSL_CERT_FILE": "{tmp}/no-such-bundle.pem"},
    "cert-file-garbage": {"SSL_CERT_FILE": "{tmp}/garbage.pem"},
    "proxy-scheme": {"HTTP_PROXY": "garbage://user:pr0xy-s3cret@proxy.invalid",
                     "HTTPS_PROXY": "garbage://user:pr0xy-s3cret@proxy.invalid"},
}
"""An environment in which the run's HTTP client cannot be made at all."""


def _broken_env(sb: SandboxProcess, tmp_path: Path, broken: str) -> dict[str, str]:
    (tmp_path / "garbage.pem").write_text("this is not a certificate\n")
    env = env_for(sb, tmp_path)
    if broken.startswith("cert"):  # certificates are only loaded for https
        env["BIGCOMMERCE_API_URL"] = sb.url.replace("http://", "https://")
    env.update({k: v.format(tmp=tmp_path) for k, v in BROKEN_CLIENT[broken].items()})
    return env


@pytest.mark.parametrize("broken", sorted(BROKEN_CLIENT))
def test_a_bad_file_exits_65_even_when_the_client_cannot_be_made(
        sandbox: SandboxProcess, tmp_path: Path, broken: str) -> None:
    # The client is made in a worker thread while the file is read: its failure (a missing
    # or garbage SSL_CERT_FILE, a proxy variable with an unknown scheme) was raised first,
    # so a file without a quantity column exited 2 ("system error: FileNotFoundError: No
    # such file or directory") instead of 65 naming the file.
    file = write_csv(tmp_path / "nocol.csv", ["sku", "location_id"], [["A", 1]])
    result = run_invsync(["sync", str(file)], _broken_env(sandbox, tmp_path, broken))
    text = output(result)
    assert result.returncode == 65, text
    assert "nocol.csv" in text and "quantity" in text, text
    assert "Traceback" not in text and "system error" not in text, text
    assert not sandbox.requests()


@pytest.mark.parametrize("broken", sorted(BROKEN_CLIENT))
def test_a_client_that_cannot_be_made_says_what_to_fix(
        sandbox: SandboxProcess, tmp_path: Path, broken: str) -> None:
    # Before: "invsync: system error: FileNotFoundError: No such file or directory" (which
    # file?) or "unexpected error: ValueError: Unknown scheme for proxy URL ...".
    file = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                     [["TOWEL-907-NAVY-SHEET", 1, 4]])
    config = retry_config(tmp_path, max_attempts=2)
    env = _broken_env(sandbox, tmp_path, broken)
    result = run_invsync(["sync", str(file), "--config", str(config)], env, timeout=60)
    text = output(result)
    assert result.returncode == 2, text
    assert "Traceback" not in text and "unexpected error" not in text, text
    assert "system error" not in text, text
    if broken.startswith("cert"):
        assert f"SSL_CERT_FILE={env['SSL_CERT_FILE']}" in text, text
    else:
        assert "HTTP_PROXY" in text, text
    assert "pr0xy-s3cret" not in text
    for report in tmp_path.rglob("report.json"):
        assert "pr0xy-s3cret" not in report.read_text()
    assert not sandbox.requests()


def _big_stock(path: Path) -> tuple[Path, dict[tuple[int, str], int]]:
    """Every tracked item of the sample catalog at locations 1 and 2: a batch's sending
    record (500 items) is more than a 12 KiB state disk holds beside its other files."""
    skus = catalog_skus(2000)
    levels = {(loc, s): 1 + (i + loc) % 9 for loc in (1, 2) for i, s in enumerate(skus)}
    return write_stock(path, levels), levels


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_a_full_state_disk_at_the_first_journal_write_sends_nothing_and_resume_finishes(
        sandbox: SandboxProcess, tmp_path: Path, tmpfs: Callable[..., Path],
        concurrency: str) -> None:
    # docs/guarantees.md: a full state disk stops sending ("a batch the journal cannot hold
    # is not sent") and "`invsync resume` finishes once there is room"; the error says so.
    # Nothing had been sent, so the journal was removed and `invsync resume` then said
    # "nothing to resume" (exit 64).
    state = tmpfs(tmp_path / "state", "12k")
    file, levels = _big_stock(tmp_path / "big.csv")
    env = env_for(sandbox, tmp_path)
    result = run_invsync(["sync", str(file), "--concurrency", concurrency,
                          "--batch-size", "500"], env)
    text = output(result)
    assert result.returncode == 2, text
    assert "could not be written" in text and "invsync resume" in text, text
    assert "Traceback" not in text
    assert not [r for r in sandbox.requests() if r["method"] == "PUT"]
    assert stocked(sandbox.levels()) == {}
    subprocess.run(["mount", "-o", "remount,size=4m", str(state)], check=True)
    resumed = run_invsync(["resume"], env)
    assert resumed.returncode == 0, output(resumed)
    assert sandbox.levels() == levels
    again = run_invsync(["sync", str(file), "--baseline", "snapshot", "--dry-run"], env)
    assert again.returncode == 0 and "would_update=0" in again.stdout, output(again)


def _journal(state_home: Path) -> list[dict[str, Any]]:
    """The records of the one store's journal under ``state_home`` (a torn last line
    left out)."""
    records = []
    for line in (state_store_dir(state_home) / "journal.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


@pytest.mark.parametrize("concurrency", ["1", "3", "8"])
def test_kill_9_after_a_confirmation_then_resume_sends_only_what_was_not_confirmed(
        sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path,
        children: list[subprocess.Popen[bytes]], concurrency: str) -> None:
    sb = sandbox_factory("--latency-ms", "30")
    skus = catalog_skus(60)
    levels = {(loc, s): 1 + (i * 7 + loc) % 40 for loc in (1, 2) for i, s in enumerate(skus)}
    file = write_stock(tmp_path / "stock.csv", levels)
    env = env_for(sb, tmp_path)
    log = tmp_path / "run.log"
    proc = spawn(["sync", str(file), "--concurrency", concurrency, "--batch-size", "5"],
                 env, log, children)
    assert kill_when(lambda: confirmed_in_journal(tmp_path / "state"), proc, log) == -9
    records = _journal(tmp_path / "state")
    confirmed = {(loc, sku) for r in records if r["type"] == "confirmed"
                 for loc, sku in zip(r["location_id"], r["item_key"], strict=True)}
    assert confirmed
    puts_before = len([r for r in sb.requests() if r["method"] == "PUT"])
    resumed = run_invsync(["resume"], env)
    assert resumed.returncode == 0, output(resumed)
    assert sb.levels() == levels
    resent = [(item["location_id"], item["sku"])
              for r in [r for r in sb.requests() if r["method"] == "PUT"][puts_before:]
              for item in r["body"]["items"]]
    assert len(resent) == len(set(resent))  # nothing twice
    assert not confirmed & set(resent)  # nothing the store confirmed to the killed run
    assert not (state_store_dir(tmp_path / "state") / "journal.jsonl").exists()
    again = run_invsync(["sync", str(file), "--baseline", "snapshot", "--dry-run"], env)
    assert again.returncode == 0 and "would_update=0" in again.stdout, output(again)


@pytest.mark.parametrize("concurrency", ["1", "8"])
def test_a_run_braked_after_the_store_count_sends_nothing_and_leaves_no_journal(
        sandbox: SandboxProcess, tmp_path: Path, concurrency: str) -> None:
    skus = catalog_skus(200)
    env = env_for(sandbox, tmp_path)
    setup = write_stock(tmp_path / "setup.csv", {(1, s): 5 for s in skus[:40]})
    assert run_invsync(["-q", "sync", str(setup)], env).returncode == 0
    # The file names 20 of the 40 stocked items (all to 0) and 30 others: what the run
    # reads of the file's items is too little to judge, so the store's listing is counted.
    fix = write_stock(tmp_path / "fix.csv", {**{(1, s): 0 for s in skus[:20]},
                                            **{(1, s): 3 for s in skus[100:130]}})
    before, puts = sandbox.levels(), len([r for r in sandbox.requests()
                                          if r["method"] == "PUT"])
    result = run_invsync(["sync", str(fix), "--concurrency", concurrency,
                          "--batch-size", "3"], env)
    text = output(result)
    assert result.returncode == 3, text
    assert "20 of the 40 items holding stock" in text and "Nothing was sent" in text, text
    assert len([r for r in sandbox.requests() if r["method"] == "PUT"]) == puts
    assert sandbox.levels() == before
    assert not (state_store_dir(tmp_path / "state") / "journal.jsonl").exists()
    assert run_invsync(["resume"], env).returncode == 64  # nothing to resume


@pytest.mark.parametrize("broken", sorted(BROKEN_CLIENT))
def test_doctor_names_a_client_that_cannot_be_made(
        sandbox: SandboxProcess, tmp_path: Path, broken: str) -> None:
    # `invsync doctor` is where an operator looks when the store cannot be reached; it
    # ended "unexpected error: FileNotFoundError: No such file or directory".
    result = run_invsync(["doctor"], _broken_env(sandbox, tmp_path, broken), timeout=60)
    text = output(result)
    assert result.returncode == 2, text
    assert "FAIL  store reachable" in text and "SSL_CERT_FILE" in text, text
    assert "unexpected error" not in text and "Traceback" not in text, text
    assert "pr0xy-s3cret" not in text
    assert not sandbox.requests()
