"""Reconcile (issue 12): ``drift`` ends with the commands that repair what it found, and
``baseline_every`` makes a run use the live baseline when the last one that did is old.

The real CLI against a real sandbox process; a manual edit is made in the store with
``POST /_sandbox/levels``, as in the control panel.
"""

from __future__ import annotations

import json
import shlex
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import SAMPLE, CliResult, env_for, run_invsync, state_store_dir
from conftest import output as out

from invsync.sandbox.process import SandboxProcess

NIGHT1 = SAMPLE / "night1.csv"


def edit(sb: SandboxProcess, key: tuple[int, str], quantity: int) -> None:
    body = json.dumps([{"location_id": key[0], "sku": key[1], "quantity": quantity}]).encode()
    req = urllib.request.Request(sb.url + "/_sandbox/levels", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def repair_commands(result: CliResult) -> list[list[str]]:
    lines = result.stdout.splitlines()
    start = lines.index("drift: to repair, run one of:")
    return [shlex.split(ln.split("  # ")[0]) for ln in lines[start + 1:] if ln.startswith("  ")]


def test_drift_prints_the_commands_that_repair_it(sandbox: SandboxProcess,
                                                  tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    # The sandbox shows a write to reads at once: drift need not re-read what differs for
    # verify_lag_s (30 s) after invsync's own write before calling it drift.
    no_lag = tmp_path / "no-lag.toml"
    no_lag.write_text("verify_lag_s = 0\n")
    env["INVSYNC_CONFIG"] = str(no_lag)
    assert run_invsync(["sync", str(NIGHT1)], env).returncode in (0, 1)
    synced = sandbox.levels()
    a, b = sorted(synced)[:2]
    edit(sandbox, a, synced[a] + 7)
    edit(sandbox, b, synced[b] + 9)

    found = run_invsync(["drift"], env)
    assert found.returncode == 1, out(found)
    plan_cmd, live_cmd = repair_commands(found)
    assert plan_cmd[:3] == ["invsync", "sync", "--plan-file"], found.stdout
    # (The config in force, here from INVSYNC_CONFIG, is carried into both commands.)
    config = ["--config", str(no_lag)]
    assert plan_cmd[-2:] == config, found.stdout
    assert live_cmd == ["invsync", "sync", "FILE", "--baseline", "live", *config], found.stdout
    # The plan puts back the snapshot's levels on the drifted items, and only those.
    repaired = run_invsync(plan_cmd[1:], env)
    assert repaired.returncode == 0, out(repaired)
    assert repaired.report()["counts"]["accepted"] == 2
    assert sandbox.levels() == synced
    assert run_invsync(["drift"], env).returncode == 0

    # With FILE: the live-baseline sync of that file comes first, and it repairs too.
    edit(sandbox, a, 1)
    found = run_invsync(["drift", str(NIGHT1), "-q"], env)
    assert found.returncode == 1, out(found)
    live_cmd = repair_commands(found)[0]
    assert live_cmd == ["invsync", "sync", str(NIGHT1), "--baseline", "live", *config], \
        found.stdout
    repaired = run_invsync(live_cmd[1:], env)
    assert repaired.returncode in (0, 1), out(repaired)
    assert sandbox.levels() == synced
    assert run_invsync(["drift"], env).returncode == 0


def test_baseline_every_uses_the_live_baseline_when_the_last_one_is_old(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    config = tmp_path / "invsync.toml"
    # baseline_every serves the snapshot baseline (plans are made against the store
    # by default, which needs no periodic reconcile).
    config.write_text('baseline = "snapshot"\nbaseline_every = "7d"\n')
    args = ["sync", str(NIGHT1), "--config", str(config)]
    first = run_invsync(args, env)
    assert first.returncode in (0, 1), out(first)
    report = first.report()
    assert report["options"]["baseline"] == "live"
    assert any("baseline_every = 1w" in n and "no run has used it yet" in n
               for n in report["notes"]), report["notes"]
    state = state_store_dir(tmp_path / "state") / "state.json"
    meta = json.loads(state.read_text())
    assert meta["last_live_baseline"] == report["started_at"]

    # Within the week: the snapshot baseline. (It sends once the items the live baseline
    # found equal: a level is remembered only when the store accepted it.)
    second = run_invsync(args, env)
    assert second.report()["options"]["baseline"] == "snapshot"
    synced = sandbox.levels()
    key = sorted(synced)[0]
    edit(sandbox, key, synced[key] + 5)
    third = run_invsync(args, env)
    assert third.report()["options"]["baseline"] == "snapshot"
    assert third.report()["counts"]["changed"] == 0  # the edit is not seen
    assert sandbox.levels()[key] == synced[key] + 5

    # Eight days later (as state.json says): the live baseline again, and the edit repaired.
    meta["last_live_baseline"] = (datetime.now(UTC) - timedelta(days=8)).isoformat(
        timespec="seconds").replace("+00:00", "Z")
    state.write_text(json.dumps(meta))
    fourth = run_invsync(args, env)
    assert fourth.returncode in (0, 1), out(fourth)
    report = fourth.report()
    assert report["options"]["baseline"] == "live"
    assert report["counts"]["accepted"] == 1
    assert sandbox.levels() == synced
    assert json.loads(state.read_text())["last_live_baseline"] == report["started_at"]


def test_baseline_every_must_be_a_duration(tmp_path: Path) -> None:
    config = tmp_path / "invsync.toml"
    config.write_text('baseline_every = "weekly"\n')
    result = run_invsync(["runs", "--config", str(config)], {"PATH": "/usr/bin:/bin"})
    assert result.returncode == 64
    assert "baseline_every must be a positive duration" in result.stderr
