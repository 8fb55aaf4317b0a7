"""``invsync revert RUN_ID`` (issue 12): the real CLI against a real sandbox process.

Night 1 and night 2 are synced, one item is edited by hand in the store, then night 2 is
reverted: the store is back to night 1's levels except the edited item (listed), which
``--force`` puts back too; ``--dry-run`` sends nothing.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from conftest import SAMPLE, env_for, run_invsync
from conftest import output as out

from invsync.sandbox.process import SandboxProcess


def edit(sb: SandboxProcess, location_id: int, sku: str, quantity: int) -> None:
    """A manual edit, as in the control panel."""
    body = json.dumps([{"location_id": location_id, "sku": sku, "quantity": quantity}]).encode()
    req = urllib.request.Request(sb.url + "/_sandbox/levels", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def item_reads(sb: SandboxProcess) -> list[dict[str, object]]:
    return [r for r in sb.requests() if r["method"] == "GET"
            and str(r["path"]).endswith("/inventory/items")]


def puts(sb: SandboxProcess) -> int:
    return sum(1 for r in sb.requests() if r["method"] == "PUT")


def test_revert_puts_back_what_a_run_replaced_except_what_moved_since(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    first = run_invsync(["sync", str(SAMPLE / "night1.csv")], env)
    assert first.returncode in (0, 1), out(first)
    night1 = sandbox.levels()
    second = run_invsync(["sync", str(SAMPLE / "night2.csv")], env)
    assert second.returncode in (0, 1), out(second)
    night2 = sandbox.levels()
    night2_run = second.report()["run_id"]
    changed = sorted(k for k in night2 if k in night1 and night1[k] != night2[k])
    added = sorted(k for k in night2 if k not in night1)
    assert len(changed) > 5, "night 2 must change some levels night 1 set"
    edited = changed[0]
    edit(sandbox, edited[0], edited[1], 4321)

    # --dry-run: the plan of the revert, nothing sent, nothing changed.
    before = puts(sandbox)
    dry = run_invsync(["revert", night2_run, "--dry-run"], env)
    assert dry.returncode == 0, out(dry)
    assert puts(sandbox) == before
    assert sandbox.levels() == {**night2, edited: 4321}
    report = dry.report()
    assert (report["command"], report["status"], report["reverted_from"]) == (
        "revert", "dry_run", night2_run)
    # Plans are made against the store: an item new to night 2 replaced the store's 0,
    # and goes back to it like any other.
    assert report["counts"]["changed"] == len(changed) - 1 + len(added)
    assert f"left: location {edited[0]} sku {edited[1]}: that run set {night2[edited]:,}" \
        in dry.stdout, out(dry)

    reads_before = len(item_reads(sandbox))
    result = run_invsync(["revert", night2_run], env)
    assert result.returncode == 0, out(result)
    expected = {**night2, **{k: night1[k] for k in changed}, **dict.fromkeys(added, 0),
                edited: 4321}
    assert sandbox.levels() == expected
    report = result.report()
    assert (report["command"], report["status"], report["reverted_from"]) == (
        "revert", "succeeded", night2_run)
    assert report["counts"]["accepted"] == len(changed) - 1 + len(added)
    assert f"{edited[1]}: that run set {night2[edited]:,}, before it {night1[edited]:,}, " \
           f"store has 4,321 (changed since that run)" in result.stdout, out(result)
    assert any("changed since" in n for n in report["notes"]), report["notes"]
    # Items new in night 2 went back to the level the store held before it (0).
    assert added, "night 2 must set some items night 1 did not"
    assert all(sandbox.levels()[k] == 0 for k in added)
    # The live levels of the run's items were read (to choose what to put back, then again
    # by the apply re-check just before sending), each read with as few requests as a read
    # of the whole locations would take at most (filtered by SKU when that is fewer).
    reads = item_reads(sandbox)[reads_before:]
    items = len({sku for _, sku in sandbox.levels()})
    assert 2 <= len(reads) <= 2 * -(-items // 1000), reads

    # The revert is a run: a second revert of night 2 finds nothing left to put back
    # except the edited item, which --force puts back too.
    again = run_invsync(["revert", night2_run], env)
    assert again.returncode == 1, out(again)  # no run: the edited item is listed
    assert "revert --force" in again.stdout
    forced = run_invsync(["revert", night2_run, "--force"], env)
    assert forced.returncode == 0, out(forced)
    assert sandbox.levels() == {**expected, edited: night1[edited]}
    # the moved ones again too
    assert forced.report()["counts"]["accepted"] == len(changed) + len(added)

    # A run that is not there, or that set nothing, has nothing to revert.
    missing = run_invsync(["revert", "19990101T000000"], env)
    assert missing.returncode == 64 and "no run" in missing.stderr, out(missing)
    plan = run_invsync(["plan", str(SAMPLE / "night1.csv")], env)
    assert plan.returncode in (0, 1), out(plan)
    nothing = run_invsync(["revert", plan.report()["run_id"]], env)
    assert nothing.returncode == 0, out(nothing)
    assert "0 item(s) to put back" in nothing.stdout
    assert sandbox.levels() == {**expected, edited: night1[edited]}

    # Reverting the revert brings night 2 back (a revert has its own plan.csv); `last` is
    # the newest run that set levels (the forced revert), not the plan made after it.
    assert run_invsync(["revert", "last", "--dry-run"], env).report()["reverted_from"] == \
        forced.report()["run_id"]
    back = run_invsync(["revert", result.report()["run_id"]], env)
    assert back.returncode == 0, out(back)
    assert sandbox.levels() == {**night2, edited: night1[edited]}


@pytest.mark.breaks_contracts  # a hand-written report.json with only the fields revert reads
def test_revert_refuses_a_run_of_another_store_or_profile(tmp_path: Path) -> None:
    from invsync.errors import UsageError
    from invsync.redact import Secret
    from invsync.run.config import Settings
    from invsync.run.revert import revert_run

    folder = tmp_path / "runs" / "20261129T010101.000Z-abcdef"
    folder.mkdir(parents=True)
    report = {"run_id": folder.name, "status": "succeeded", "input": {"sha256": "x"},
              "store": {"store_hash": "other", "api_url": "http://127.0.0.1:9",
                        "profile": None}}
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "plan.csv").write_text("location_id,identifier,item,old,new,delta,row,status\n"
                                     "1,sku,A,1,2,1,2,accepted\n")
    settings = Settings(store_hash="mine", token=Secret("t" * 12),
                        api_url="http://127.0.0.1:9", state_dir=tmp_path / "state",
                        report_dir=tmp_path / "runs")
    with pytest.raises(UsageError, match="synced store 'other'"):
        revert_run(settings, folder.name)
    report["store"]["store_hash"] = "mine"
    report["store"]["profile"] = "staging"
    (folder / "report.json").write_text(json.dumps(report))
    with pytest.raises(UsageError, match="profile 'staging'"):
        revert_run(settings, folder.name)
    with pytest.raises(UsageError, match="has set levels"):
        revert_run(settings, "last")  # the only run is another profile's
