"""Orders placed after the file was made: the real CLI against a real sandbox that sells.

The nightly rehearsal: yesterday's levels are in the store, the warehouse exports its file
at the as-of time, the storefront sells during the night (orders before and after the
as-of, some cancelled, some shipped), then ``invsync sync --as-of`` runs. The store must
end at ``file − sold since as-of`` for every item.
"""

from __future__ import annotations

import csv
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import env_for, output, run_invsync, write_csv

from invsync.sandbox.process import SandboxProcess

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def place(sb: SandboxProcess, items: list[dict[str, Any]], when: datetime,
          status_id: int = 11) -> int:
    r = httpx.post(sb.url + "/_sandbox/orders", json={
        "items": items, "date_created": iso(when), "status_id": status_id}, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.json()["id"])


def set_status(sb: SandboxProcess, order_id: int, status_id: int) -> None:
    r = httpx.post(f"{sb.url}/_sandbox/orders/{order_id}/status",
                   json={"status_id": status_id}, timeout=30)
    assert r.status_code == 200, r.text


def put_levels(sb: SandboxProcess, levels: list[dict[str, Any]]) -> None:
    httpx.post(sb.url + "/_sandbox/levels", json=levels, timeout=30).raise_for_status()


def last_run(tmp_path: Path) -> Path:
    runs = sorted((tmp_path / "state" / "invsync" / "runs").iterdir())
    return runs[-1]


def report_of(tmp_path: Path) -> dict[str, Any]:
    """The report.json of the last run."""
    return dict(json.loads((last_run(tmp_path) / "report.json").read_text()))


def night_file(tmp_path: Path, rows: list[list[Any]], name: str = "n.csv") -> Path:
    """The warehouse's night file: rows of [sku, location_id, quantity]."""
    return write_csv(tmp_path / name, HEADER, rows)


def sell(sb: SandboxProcess, sku: str, quantity: int, when: datetime) -> int:
    """One order of ``quantity`` units of ``sku`` placed at ``when``; its id."""
    return place(sb, [{"sku": sku, "quantity": quantity}], when)


def read_plan(folder: Path) -> list[dict[str, str]]:
    with (folder / "plan.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


ITEMS = ["TOWEL-907-NAVY-SHEET", "TOWEL-907-BURG-BATH", "TOWEL-907-SAND-HAND", "POSTER-1755"]
HEADER = ["sku", "location_id", "quantity"]


def _yesterday(sb: SandboxProcess) -> None:
    """Yesterday's levels, as the last sync left them."""
    put_levels(sb, [{"location_id": 1, "sku": s, "quantity": 20} for s in ITEMS]
               + [{"location_id": 2, "sku": ITEMS[0], "quantity": 6}])


def test_nightly_rehearsal_ends_at_file_minus_sold_since_as_of(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    sb = sandbox
    _yesterday(sb)
    as_of = NOW - timedelta(hours=3)
    # Before the as-of time: the warehouse file already accounts for this order.
    sell(sb, ITEMS[0], 4, as_of - timedelta(minutes=30))
    # During the night, after the as-of time:
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=10))
    shipped = place(sb, [{"sku": ITEMS[1], "quantity": 1}, {"sku": ITEMS[3], "quantity": 3}],
                    as_of + timedelta(hours=1))
    set_status(sb, shipped, 2)
    cancelled = sell(sb, ITEMS[2], 5, as_of + timedelta(hours=2))
    set_status(sb, cancelled, 5)  # the store gave its units back
    place(sb, [{"variant_id": 1001, "quantity": 1}], as_of + timedelta(hours=2, minutes=5))
    # The warehouse's counts at the as-of time; the file names items three ways.
    night = write_csv(tmp_path / "night.csv", ["sku", "variant_id", "product_id",
                                               "location_id", "quantity"], [
        [ITEMS[0], "", "", 1, 10], ["", 1001, "", 1, 7], [ITEMS[2], "", "", 1, 9],
        ["", "", 101, 1, 2], [ITEMS[0], "", "", 2, 6]])
    env = env_for(sb, tmp_path)
    result = run_invsync(["sync", str(night), "--as-of", iso(as_of)], env)
    assert result.returncode == 0, output(result)
    levels = sb.levels()
    assert levels[(1, ITEMS[0])] == 10 - 2
    assert levels[(1, ITEMS[1])] == 7 - 1 - 1
    assert levels[(1, ITEMS[2])] == 9  # the cancelled order gave its units back
    assert levels[(1, ITEMS[3])] == 0  # 2 - 3: never below 0
    assert levels[(2, ITEMS[0])] == 6  # another location: as the file says
    folder = last_run(tmp_path)
    report = json.loads((folder / "report.json").read_text())
    sold = report["sold_since"]
    assert sold["as_of"] == iso(as_of).replace("+00:00", "Z")
    assert sold["orders_read"] == 4 and sold["orders_counted"] == 3
    assert sold["units_subtracted"] == 2 + 2 + 2 and sold["requests"] >= 2
    assert sold["update_stock_behavior"] == "order_placed"
    plan = {(r["location_id"], r["item"]): r for r in read_plan(folder)}
    row = plan[("1", ITEMS[0])]
    after = row.get("after", row.get("new"))  # `new` is being renamed `after`
    assert (row["file_level"], row["sold_since_as_of"], after) == ("10", "2", "8")
    assert "sold since" in result.stdout


def test_without_as_of_nothing_changes(sandbox: SandboxProcess, tmp_path: Path) -> None:
    sb = sandbox
    _yesterday(sb)
    sell(sb, ITEMS[0], 2, NOW - timedelta(minutes=5))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["sync", str(night)], env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 10
    assert not any("/v2/" in e["path"] for e in sb.requests())
    folder = last_run(tmp_path)
    assert "file_level" not in read_plan(folder)[0]
    assert json.loads((folder / "report.json").read_text())["sold_since"] is None


def test_completed_or_shipped_store_counts_only_what_shipped(
        sandbox_factory: Any, tmp_path: Path) -> None:
    sb = sandbox_factory("--update-stock-behavior", "order_completed_or_shipped")
    _yesterday(sb)
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=1))  # not shipped
    shipped = sell(sb, ITEMS[1], 3, as_of + timedelta(minutes=2))
    set_status(sb, shipped, 2)
    night = night_file(tmp_path, [[ITEMS[0], 1, 10], [ITEMS[1], 1, 10]])
    result = run_invsync(["sync", str(night), "--as-of", iso(as_of)], env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    levels = sb.levels()
    # The store has not taken the unshipped order's units: it takes them when it ships.
    assert levels[(1, ITEMS[0])] == 10 and levels[(1, ITEMS[1])] == 7


def test_as_of_mtime_is_the_files_modification_time(sandbox: SandboxProcess,
                                                    tmp_path: Path) -> None:
    sb = sandbox
    _yesterday(sb)
    made = NOW - timedelta(hours=2)
    sell(sb, ITEMS[0], 1, made - timedelta(minutes=1))
    sell(sb, ITEMS[0], 3, made + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    os.utime(night, (made.timestamp(), made.timestamp()))
    result = run_invsync(["sync", str(night), "--as-of", "mtime"], env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 7
    report = report_of(tmp_path)
    assert report["sold_since"]["as_of_from"] == "mtime"


@pytest.mark.parametrize(("as_of", "words"), [
    (iso(NOW + timedelta(hours=1)), "in the future"),
    (iso(NOW - timedelta(hours=49)), "older than max_as_of_age"),
    ("2026-12-06T02:00:00", "no time zone offset"),
    ("yesterday", "is not a time"),
    ("", "--as-of is empty"),
], ids=["future", "too-old", "no-offset", "not-a-time", "empty"])  # stable ids: xdist workers
def test_a_bad_as_of_fails_before_anything_is_sent(sandbox: SandboxProcess, tmp_path: Path,
                                                   as_of: str, words: str) -> None:
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["sync", str(night), "--as-of", as_of], env_for(sandbox, tmp_path))
    assert result.returncode == 64, output(result)
    assert words in output(result) and "Traceback" not in output(result)
    assert sandbox.requests() == []


def test_max_as_of_age_from_the_config(sandbox: SandboxProcess, tmp_path: Path) -> None:
    config = tmp_path / "invsync.toml"
    config.write_text('max_as_of_age = "1h"\n')
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["plan", str(night), "--config", str(config), "--as-of",
                          iso(NOW - timedelta(hours=2))], env_for(sandbox, tmp_path))
    assert result.returncode == 64 and "(1.0 h)" in output(result), output(result)


def test_a_token_without_the_orders_scope_fails_loudly(sandbox_factory: Any,
                                                       tmp_path: Path) -> None:
    sb = sandbox_factory("--no-orders-scope")
    _yesterday(sb)
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["sync", str(night), "--as-of", iso(NOW - timedelta(hours=1))],
                         env_for(sb, tmp_path))
    assert result.returncode == 2, output(result)
    assert "store_v2_orders_read_only" in output(result)
    assert "Traceback" not in output(result)
    assert not [e for e in sb.requests() if e["method"] == "PUT"]
    assert sb.levels()[(1, ITEMS[0])] == 20


def test_plan_shows_file_minus_sold_since(sandbox: SandboxProcess, tmp_path: Path) -> None:
    sb = sandbox
    _yesterday(sb)
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["plan", str(night), "--as-of", iso(as_of)], env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    # The time alone when the run started the same day (UTC here), else with its date.
    started = json.loads((last_run(tmp_path) / "report.json").read_text())["started_at"]
    same_day = started[:10] == as_of.strftime("%Y-%m-%d")
    label = as_of.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")
    assert f"file 10 − 2 sold since {label} = 8" in result.stdout, result.stdout
    html = (last_run(tmp_path) / "report.html").read_text(encoding="utf-8")
    assert f"file 10 − 2 sold since {label} = 8" in html
    assert sb.levels()[(1, ITEMS[0])] == 18  # a plan sends nothing


def test_a_reviewed_plan_pushes_the_levels_after_what_sold(sandbox: SandboxProcess,
                                                           tmp_path: Path) -> None:
    sb = sandbox
    _yesterday(sb)
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 3, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10], [ITEMS[0], 2, 4]])
    env = env_for(sb, tmp_path)
    planned = run_invsync(["plan", str(night), "--as-of", iso(as_of)], env)
    assert planned.returncode == 0, output(planned)
    plan_csv = last_run(tmp_path) / "plan.csv"
    notes = report_of(tmp_path)["notes"]
    assert any("location(s) 2 were not lowered" in n for n in notes), notes
    pushed = run_invsync(["sync", "--plan-file", str(plan_csv), "--as-of", iso(as_of)], env)
    assert pushed.returncode == 0, output(pushed)
    assert sb.levels()[(1, ITEMS[0])] == 7 and sb.levels()[(2, ITEMS[0])] == 4
    report = report_of(tmp_path)
    assert report["sold_since"] is None
    assert any("not applied to a reviewed plan" in n for n in report["notes"])


def test_the_json_log_has_a_sold_since_event(sandbox: SandboxProcess, tmp_path: Path) -> None:
    sb = sandbox
    _yesterday(sb)
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["plan", str(night), "--as-of", iso(as_of), "--log-format", "json"],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    sold = [e for e in events if e.get("event") == "sold_since"]
    assert len(sold) == 1 and sold[0]["units_subtracted"] == 2, events
    assert sold[0]["run_id"]


def test_kill_9_mid_send_then_resume_ends_at_file_minus_everything_sold_since(
        sandbox: SandboxProcess, tmp_path: Path, children: list[Any]) -> None:
    from conftest import catalog_skus, confirmed_in_journal, env_at, kill_when, spawn
    from misbehaving import HoldPuts, misbehaving_store

    sb = sandbox
    skus = catalog_skus(10)
    put_levels(sb, [{"location_id": 1, "sku": s, "quantity": 30} for s in skus])
    as_of = NOW - timedelta(hours=2)
    place(sb, [{"sku": skus[0], "quantity": 2}, {"sku": skus[9], "quantity": 3}],
          as_of + timedelta(minutes=5))
    night = night_file(tmp_path, [[s, 1, 20] for s in skus])
    hold = HoldPuts(let=1)
    with misbehaving_store(hold, sb.url) as store:
        env = env_at(store.url, tmp_path, sb)
        log = tmp_path / "killed.log"
        killed = spawn(["sync", str(night), "--as-of", iso(as_of), "--batch-size", "5",
                        "--concurrency", "1"], env, log, children)
        try:  # kill -9 once a batch is confirmed and the next one is in flight
            kill_when(lambda: confirmed_in_journal(tmp_path / "state") and hold.held.is_set(),
                      killed, log)
        finally:
            hold.stop()
        # The night goes on: one more order, after the killed run read the orders.
        sell(sb, skus[9], 1, NOW - timedelta(minutes=1))
        resumed = run_invsync(["resume"], env)
    assert resumed.returncode == 0, output(resumed)
    levels = sb.levels()
    expected = {s: 20 for s in skus}
    expected[skus[0]] -= 2
    expected[skus[9]] -= 3 + 1
    assert {s: levels[(1, s)] for s in skus} == expected
