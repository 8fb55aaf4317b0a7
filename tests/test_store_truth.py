"""Issue 19: the store is the truth. Plans are made against the store's live levels, bound
to their store, re-checked just before sending; revert restores what a run replaced; and
the wrong-stock holes found by the adversarial pass stay closed (each test here failed
before its fix)."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import (
    SAMPLE,
    TOKEN,
    CliResult,
    catalog_skus,
    env_for,
    output,
    run_invsync,
    write_csv,
    write_stock,
)

from invsync.sandbox.process import SandboxProcess


def edit(sb: SandboxProcess, levels: dict[tuple[int, str], int]) -> None:
    """A manual edit in the store, as in the control panel."""
    body = json.dumps([{"location_id": loc, "sku": sku, "quantity": q}
                       for (loc, sku), q in levels.items()]).encode()
    _post(sb, "/_sandbox/levels", body)


def faults(sb: SandboxProcess, **values: Any) -> None:
    _post(sb, "/_sandbox/faults", json.dumps(values).encode())


def _post(sb: SandboxProcess, path: str, body: bytes) -> None:
    req = urllib.request.Request(sb.url + path, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 200


def puts(sb: SandboxProcess) -> list[dict[str, Any]]:
    return [r for r in sb.requests() if r["method"] == "PUT"]


def level(sb: SandboxProcess, sku: str, location: int = 1) -> int:
    return sb.levels().get((location, sku), 0)


def ok(result: CliResult, *codes: int) -> dict[str, Any]:
    """The run's report.json, once its exit code is one of ``codes`` (0 by default)."""
    assert result.returncode in (codes or (0,)), output(result)
    return result.report()


def sync(env: dict[str, str], path: Path, levels: dict[tuple[int, str], int],
         *args: str) -> dict[str, Any]:
    """``invsync sync`` of a stock file at ``path`` setting ``levels``: its report."""
    return ok(run_invsync(["sync", str(write_stock(path, levels)), *args], env))


def one_bad_row(path: Path, skus: list[str], index: int, row: str) -> Path:
    """A ``sku,quantity`` file setting 6 for each of ``skus``, but whose line for
    ``skus[index]`` is ``row`` (``{sku}`` filled in)."""
    path.write_text("sku,quantity\n" + "".join(
        (row.format(sku=s) if i == index else f"{s},6") + "\n" for i, s in enumerate(skus)))
    return path


def plan_csv(report: dict[str, Any]) -> Path:
    """The plan.csv of a run, from its report."""
    return Path(report["report_dir"]) / "plan.csv"


def config(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    """A config file with ``text``."""
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- the design: plans against the store ---------------------------------------------------


def test_a_store_edit_is_seen_by_the_next_plan_and_repaired_by_default(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    skus = catalog_skus(3)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 10 for s in skus})
    ok(run_invsync(["sync", str(stock)], env))
    edit(sandbox, {(1, skus[0]): 3})  # someone edits the store; the file still says 10
    plan = ok(run_invsync(["plan", str(stock)], env))
    assert plan["counts"]["changed"] == 1
    assert plan["baseline"] == "live" and plan["read_at"]
    [item] = plan["changes"]
    assert (item["item"], item["before"], item["after"]) == (skus[0], 3, 10)
    assert item["read_at"] == plan["read_at"]
    frame = pl.read_csv(Path(plan["report_dir"]) / "plan.csv")
    assert frame.columns == ["location_id", "identifier", "item", "before", "after", "delta",
                             "row", "status", "read_at"]
    ok(run_invsync(["sync", str(stock)], env))
    assert level(sandbox, skus[0]) == 10


def test_snapshot_baseline_leaves_store_edits_alone(sandbox: SandboxProcess,
                                                    tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    skus = catalog_skus(2)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 10 for s in skus})
    ok(run_invsync(["sync", str(stock)], env))
    edit(sandbox, {(1, skus[0]): 3})
    report = ok(run_invsync(["sync", str(stock), "--baseline", "snapshot"], env))
    assert report["counts"]["changed"] == 0 and report["baseline"] == "snapshot"
    assert level(sandbox, skus[0]) == 3


def test_an_offline_plan_says_no_live_levels_were_read(tmp_path: Path) -> None:
    stock = write_stock(tmp_path / "s.csv", {(1, "A"): 1})
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BIGCOMMERCE_", "INVSYNC_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    report = ok(run_invsync(["plan", str(stock)], env))
    assert any("no live levels were read" in n for n in report["notes"]), report["notes"]
    assert report["read_at"] is None


# ---- a plan is bound to its store; the apply re-checks --------------------------------------


def test_a_plan_applied_to_another_store_is_refused_before_anything_is_sent(
        sandbox_factory: Any, tmp_path: Path) -> None:
    a, b = sandbox_factory(), sandbox_factory()
    stock = write_stock(tmp_path / "s.csv", {(1, s): 7 for s in catalog_skus(2)})
    plan = ok(run_invsync(["plan", str(stock)], env_for(a, tmp_path / "a")))
    assert plan["plan_binding"]["store_hash"] == a.store_hash
    planned = plan_csv(plan)
    refused = run_invsync(["sync", "--plan-file", str(planned)], env_for(b, tmp_path / "a"))
    assert refused.returncode == 64, output(refused)
    assert "was made for" in refused.stderr and "nothing was sent" in refused.stderr
    assert puts(b) == [] and puts(a) == []
    # Another profile of the same store is another binding too.
    cfg = config(tmp_path, "[profiles.rehearsal]\nreason = 'x'\n")
    other = run_invsync(["sync", "--plan-file", str(planned), "--config", str(cfg),
                         "--profile", "rehearsal"], env_for(a, tmp_path / "a"))
    assert other.returncode == 64, output(other)
    assert puts(a) == []


def test_apply_refuses_when_the_store_changed_since_the_preview(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    skus = catalog_skus(3)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 9 for s in skus})
    plan = ok(run_invsync(["plan", str(stock)], env))
    edit(sandbox, {(1, skus[1]): 4})  # an order, an edit, another app
    applied = run_invsync(["sync", "--plan-file", str(plan_csv(plan))],
                          env)
    assert applied.returncode == 3, output(applied)
    assert "the store changed since the preview: preview again" in applied.stdout + \
        applied.stderr
    assert puts(sandbox) == []
    # Preview again, then the apply goes through.
    again = ok(run_invsync(["plan", str(stock)], env))
    ok(run_invsync(["sync", "--plan-file", str(plan_csv(again))], env))
    assert all(level(sandbox, s) == 9 for s in skus)


def test_hole5_a_live_plan_applies_after_a_store_edit_made_before_it(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """Before: the apply compared the plan with the snapshot, which a store edit had left
    behind, so every apply after an edit ended stale, forever."""
    env = env_for(sandbox, tmp_path)
    skus = catalog_skus(2)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 5 for s in skus})
    ok(run_invsync(["sync", str(stock)], env))
    edit(sandbox, {(1, skus[0]): 1})
    changed = write_stock(tmp_path / "t.csv", {(1, skus[0]): 6, (1, skus[1]): 5})
    plan = ok(run_invsync(["plan", str(changed), "--baseline", "live"], env))
    ok(run_invsync(["sync", "--plan-file", str(plan_csv(plan))], env))
    assert level(sandbox, skus[0]) == 6


def test_an_older_plan_with_old_and_new_columns_still_applies(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    sku = catalog_skus(1)[0]
    plan = write_csv(tmp_path / "plan.csv",
                     ["location_id", "identifier", "item", "old", "new", "delta", "row",
                      "status"], [[1, "sku", sku, 0, 12, 12, 2, "planned"]])
    ok(run_invsync(["sync", "--plan-file", str(plan)], env))
    assert level(sandbox, sku) == 12


# ---- read-after-write lag -----------------------------------------------------------------


def test_the_apply_recheck_tolerates_a_read_lagging_this_tools_own_write(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    cfg = _lag_config(tmp_path, 600)
    skus = catalog_skus(2)
    faults(sandbox, apply_lag_ms=600_000)  # reads show the old level after a write
    first = write_stock(tmp_path / "a.csv", {(1, s): 3 for s in skus})
    ok(run_invsync(["sync", str(first), "--config", str(cfg)], env))
    second = write_stock(tmp_path / "b.csv", {(1, s): 8 for s in skus})
    plan = ok(run_invsync(["plan", str(second), "--config", str(cfg)], env))
    assert {c["before"] for c in plan["changes"]} == {0}  # the lagging read
    faults(sandbox, apply_lag_ms=0)  # the write shows now: 3, not the plan's 0
    ok(run_invsync(["sync", "--plan-file", str(plan_csv(plan)),
                    "--config", str(cfg)], env))
    assert all(level(sandbox, s) == 8 for s in skus)
    # Someone else's edit is not forgiven (once the lag allowed has passed).
    quick = config(tmp_path, "verify_lag_s = 1\n", "quick.toml")
    plan = ok(run_invsync(["plan", str(first), "--config", str(quick)], env))
    edit(sandbox, {(1, skus[0]): 1})
    stale = run_invsync(["sync", "--plan-file", str(plan_csv(plan)),
                         "--config", str(quick)], env)
    assert stale.returncode == 3, output(stale)


def test_verify_and_drift_wait_out_a_lagging_read(sandbox: SandboxProcess,
                                                  tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    cfg = _lag_config(tmp_path, 120)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 4 for s in catalog_skus(2)})
    faults(sandbox, apply_lag_ms=8_000)  # reads show a write 8 s after it
    ok(run_invsync(["sync", str(stock), "--config", str(cfg)], env))
    reads = len(sandbox.requests())
    drift = run_invsync(["drift", "--config", str(cfg)], env)
    assert drift.returncode == 0, output(drift)
    assert len(sandbox.requests()) - reads >= 2  # it read again before calling it drift
    verify = run_invsync(["verify", "last", "--config", str(cfg)], env)
    assert verify.returncode == 0, output(verify)


def test_sandbox_lag_can_be_switched_on_while_running(sandbox: SandboxProcess,
                                                      tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    sku = catalog_skus(1)[0]
    faults(sandbox, apply_lag_ms=60_000)
    sync(env, tmp_path / "s.csv", {(1, sku): 5})
    drift = run_invsync(["drift", "--config", str(_lag_config(tmp_path, 0))], env)
    assert drift.returncode == 1, output(drift)  # the read still shows the old level


def _lag_config(tmp_path: Path, seconds: float) -> Path:
    return config(tmp_path, f"verify_lag_s = {seconds}\n", "lag.toml")


# ---- revert ---------------------------------------------------------------------------------


def test_revert_restores_the_level_the_run_replaced_not_the_snapshots(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    sku = catalog_skus(1)[0]
    sync(env, tmp_path / "a.csv", {(1, sku): 10})
    edit(sandbox, {(1, sku): 7})  # the store moved behind invsync's back
    run = sync(env, tmp_path / "b.csv", {(1, sku): 20})
    ok(run_invsync(["revert", run["run_id"]], env))
    assert level(sandbox, sku) == 7  # what that run replaced, not the snapshot's 10


def test_revert_last_is_the_last_run_that_wrote_by_sequence_not_clock(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    sku = catalog_skus(1)[0]
    one = sync(env, tmp_path / "a.csv", {(1, sku): 1})
    two = sync(env, tmp_path / "b.csv", {(1, sku): 2})
    assert two["run_seq"] == one["run_seq"] + 1
    # The clock stepped back: the later run's id sorts first. Order is by run_seq.
    folder = Path(two["report_dir"])
    renamed = folder.with_name("19990101T000000.000Z-aaaaaa")
    folder.rename(renamed)
    data = json.loads((renamed / "report.json").read_text())
    data["run_id"] = renamed.name
    data["report_dir"] = str(renamed)
    (renamed / "report.json").write_text(json.dumps(data))
    dry = ok(run_invsync(["revert", "last", "--dry-run"], env))
    assert dry["reverted_from"] == renamed.name


def test_revert_last_refuses_while_a_killed_run_is_unfinished(
        sandbox_factory: Any, tmp_path: Path) -> None:
    from conftest import state_store_dir

    sb = sandbox_factory()
    env = env_for(sb, tmp_path)
    sku = catalog_skus(1)[0]
    sync(env, tmp_path / "a.csv", {(1, sku): 1})
    # A journal left by a run killed with kill -9 while sending.
    store = state_store_dir(tmp_path / "state", sb.store_hash, sb.url)
    (store / "journal.jsonl").write_text(json.dumps(
        {"type": "begin", "run_id": "20991231T000000.000Z-killed", "run_seq": 9,
         "input": str(tmp_path / "a.csv")}) + "\n")
    refused = run_invsync(["revert", "last"], env)
    assert refused.returncode == 64, output(refused)
    assert "interrupted" in refused.stderr and "resume" in refused.stderr


def test_runs_naming_items_by_variant_id_revert_like_sku_runs(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    catalog = pl.read_csv(SAMPLE / "catalog.csv", infer_schema=False)
    variant = catalog.filter(pl.col("variant_id").is_not_null()
                             & (pl.col("variant_id") != "")).row(0, named=True)
    vid, sku = variant["variant_id"], variant["sku"]
    stock = tmp_path / "v.csv"
    write_csv(stock, ["variant_id", "quantity"], [[vid, 5]])
    ok(run_invsync(["sync", str(stock)], env))
    write_csv(stock, ["variant_id", "quantity"], [[vid, 9]])
    run = ok(run_invsync(["sync", str(stock)], env))
    reverted = ok(run_invsync(["revert", run["run_id"]], env))
    assert reverted["counts"]["accepted"] == 1
    assert level(sandbox, sku) == 5


# ---- the holes ------------------------------------------------------------------------------


def test_hole1_zero_missing_never_zeroes_an_item_whose_row_was_rejected(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    skus = catalog_skus(6)
    sync(env, tmp_path / "a.csv", {(1, s): 5 for s in skus})
    # Row 3 has a stray extra cell: rejected at ingest, but the file names that item.
    bad = one_bad_row(tmp_path / "b.csv", skus, 1, "{sku},6,oops")
    report = ok(run_invsync(["sync", str(bad), "--zero-missing"], env), 1)
    assert report["counts"]["zeroed_missing"] == 0
    assert level(sandbox, skus[1]) == 5


def test_hole1_a_file_whose_rows_a_quote_swallowed_is_refused_for_zero_missing(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    skus = catalog_skus(6)
    sync(env, tmp_path / "a.csv", {(1, s): 5 for s in skus})
    bad = one_bad_row(tmp_path / "b.csv", skus, 2, '{sku},"6')  # a quote never closed
    sent = len(puts(sandbox))
    result = run_invsync(["sync", str(bad), "--zero-missing"], env)
    assert result.returncode == 65, output(result)
    assert "never closed" in output(result)
    assert len(puts(sandbox)) == sent


def test_hole2_the_mass_zeroing_brake_judges_items_holding_stock() -> None:
    from conftest import item_frame

    from invsync.run.brakes import BrakeLimits, check_brakes
    from invsync.stages.diff import compute_changes
    from invsync.state.snapshot import SNAPSHOT_SCHEMA

    store = {f"S{i:02d}": (0 if i < 14 else 5) for i in range(20)}
    held = pl.DataFrame([{"location_id": 1, "identifier": "sku", "item_key": k, "quantity": q}
                         for k, q in store.items()], schema=SNAPSHOT_SCHEMA)
    valid = item_frame([(1, "sku", k, 0) for k in store])  # a wrong quantity column
    brakes = check_brakes(rows=20, last_rows=None, changes=compute_changes(valid, held),
                          held=held, limits=BrakeLimits(), zero_missing=False)
    assert [b.name for b in brakes] == ["mass_zeroing"]
    assert "6 of the 6 items holding stock" in brakes[0].message


def test_hole3_a_buffer_clamps_at_zero(sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    sku = catalog_skus(1)[0]
    sync(env, tmp_path / "a.csv", {(1, sku): 48})
    report = sync(env, tmp_path / "b.csv", {(1, sku): 1}, "--buffer", "2", "--allow-zeroing")
    assert report["counts"]["rejected"] == 0
    assert level(sandbox, sku) == 0
    negative = ok(run_invsync(["plan", str(write_stock(tmp_path / "c.csv", {(1, sku): -1})),
                               "--buffer", "2"], env), 1)
    assert negative["rejected"][0]["reason"] == "quantity_negative"


@pytest.mark.parametrize("spelling", ["http://LOCALHOST:{port}/", "http://localhost.:{port}",
                                      "http://127.0.0.1:{port}"])
def test_hole4_spellings_of_one_store_share_its_state_and_lock(spelling: str) -> None:
    from invsync.state.journal import host_lock
    from invsync.state.snapshot import api_host, store_dir

    url = spelling.format(port=8123)
    assert api_host(url) == api_host("http://localhost:8123")
    assert store_dir(Path("/s"), url, "h") == store_dir(Path("/s"), "http://localhost:8123", "h")
    assert host_lock(url, "h").path == host_lock("http://localhost:8123", "h").path
    assert api_host("https://API.BigCommerce.com:443/") == "api.bigcommerce.com"


def test_hole4_store_id_unifies_a_host_name_and_its_ip(tmp_path: Path) -> None:
    from invsync.run.config import load_settings
    from invsync.state.snapshot import store_dir

    cfg = config(tmp_path, 'store_id = "shop-eu"\n')
    a = load_settings(cfg, {"api_url": "https://api.example.com"})
    b = load_settings(cfg, {"api_url": "https://203.0.113.7"})
    assert store_dir(tmp_path, a.store_host, "h") == store_dir(tmp_path, b.store_host, "h")


def test_hole6_verify_last_verifies_the_last_run_that_wrote(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 3 for s in catalog_skus(2)})
    wrote = ok(run_invsync(["sync", str(stock)], env))
    ok(run_invsync(["plan", str(stock)], env))
    verify = run_invsync(["verify", "last"], env)
    assert verify.returncode == 0, output(verify)
    assert "set no levels" not in verify.stdout
    assert (Path(wrote["report_dir"]) / "verify.json").exists()


def test_hole9_resume_of_a_killed_full_run_sends_no_confirmed_batch_again(
        sandbox_factory: Any, tmp_path: Path, children: Any) -> None:
    from conftest import kill_when, spawn

    sb = sandbox_factory("--latency-ms", "300")
    env = env_for(sb, tmp_path)
    skus = catalog_skus(40)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 11 for s in skus})
    log = tmp_path / "run.log"
    proc = spawn(["sync", str(stock), "--full", "--batch-size", "5"], env, log, children)
    kill_when(lambda: len(puts(sb)) >= 3, proc, log)
    sent_before = {i["sku"] for r in puts(sb) if r["status"] == 200 for i in r["items"]}
    count = len(puts(sb))
    ok(run_invsync(["resume"], env))
    resent = {i["sku"] for r in puts(sb)[count:] for i in r["items"]}
    assert sent_before and not (resent & sent_before - _in_flight(sb, count))
    assert all(level(sb, s) == 11 for s in skus)


def _in_flight(sb: SandboxProcess, upto: int) -> set[str]:
    """SKUs of the requests before ``upto`` the killed run may not have seen answered."""
    reqs = puts(sb)[:upto]
    return {i["sku"] for r in reqs[-2:] for i in r["items"]}


def test_hole10_a_profiles_own_token_wins_over_the_environment(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path, token="wrong-token")
    cfg = config(tmp_path, f'[profiles.shop]\naccess_token = "{TOKEN}"\n')
    stock = write_stock(tmp_path / "s.csv", {(1, catalog_skus(1)[0]): 2})
    report = ok(run_invsync(["sync", str(stock), "--config", str(cfg), "--profile", "shop"],
                            env))
    source = report["options"]["token_source"]
    assert "[profiles.shop]" in source and "BIGCOMMERCE_ACCESS_TOKEN" in source
    assert TOKEN not in json.dumps(report)


# ---- one write in flight, a share of the quota ---------------------------------------------


def test_one_write_in_flight_by_default(sandbox_factory: Any, tmp_path: Path) -> None:
    sb = sandbox_factory("--latency-ms", "50")
    env = env_for(sb, tmp_path)
    stock = write_stock(tmp_path / "s.csv", {(1, s): 1 for s in catalog_skus(30)})
    ok(run_invsync(["sync", str(stock), "--batch-size", "3"], env))
    assert sb.stats()["max_in_flight"] == 1


def test_quota_share_leaves_requests_to_other_apps() -> None:
    from invsync.store.limits import reserved_requests

    assert reserved_requests(150, 0.8) == 30
    assert reserved_requests(150, 1.0) == 0
    assert reserved_requests(1, 0.5) == 0  # one request always remains invsync's
    assert reserved_requests(None, 0.8) == 0


def test_quota_share_is_checked(tmp_path: Path) -> None:
    from invsync.errors import UsageError
    from invsync.run.config import load_settings

    cfg = config(tmp_path, "[store]\nquota_share = 0.5\n")
    assert load_settings(cfg, {}).quota_share == 0.5
    cfg.write_text("[store]\nquota_share = 1.5\n")
    with pytest.raises(UsageError, match="quota_share"):
        load_settings(cfg, {})
