"""--as-of attacked as an ops engineer or a hostile party would, against a real sandbox."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, env_at, env_for, output, run_invsync, write_csv
from misbehaving import Reply, Request, misbehaving_store
from test_orders import (
    HEADER,
    ITEMS,
    iso,
    last_run,
    night_file,
    place,
    put_levels,
    read_plan,
    report_of,
    sell,
)

from invsync.sandbox.process import SandboxProcess

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def proxied(respond: Any, sb: SandboxProcess, tmp_path: Path, args: list[str],
            timeout: float = 240) -> tuple[CliResult, list[str]]:
    """Run the CLI through a misbehaving proxy of ``sb`` (``respond`` sees every request);
    what it did and the paths of the PUTs the proxy saw."""
    with misbehaving_store(respond, sb.url) as store:
        result = run_invsync(args, env_at(store.url, tmp_path, sb), timeout=timeout)
        return result, store.paths("PUT")


def sync_first(sb: SandboxProcess, env: dict[str, str], tmp_path: Path, rows: list[list[Any]],
              *args: str) -> datetime:
    """Sync a first file (``rows``, with ``args``): the levels the night starts from; the
    as-of time of the night's file, 30 minutes ago."""
    first = write_csv(tmp_path / "first.csv", HEADER, rows)
    assert run_invsync(["sync", str(first), *args], env).returncode == 0
    return NOW - timedelta(minutes=30)


def test_the_maximum_caps_what_is_left_after_what_sold(sandbox: SandboxProcess,
                                                       tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": s, "quantity": 900} for s in ITEMS[:2]])
    as_of = NOW - timedelta(hours=1)
    place(sb, [{"sku": ITEMS[0], "quantity": 200}, {"sku": ITEMS[1], "quantity": 50}],
          as_of + timedelta(minutes=1))
    config = tmp_path / "invsync.toml"
    config.write_text("[quantity]\nmaximum = 500\nbuffer = 2\n")
    night = night_file(tmp_path, [[ITEMS[0], 1, 602], [ITEMS[1], 1, 602]])
    result = run_invsync(["sync", str(night), "--config", str(config), "--as-of", iso(as_of)],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    # 600 for sale at the as-of time (602, 2 kept back), 200 sold since: 400 left, under
    # the maximum of 500; 50 sold: 550 left, capped at 500.
    assert sb.levels()[(1, ITEMS[0])] == 400 and sb.levels()[(1, ITEMS[1])] == 500
    assert "file 600 − 200 sold since" in result.stdout and "= 400" in result.stdout
    assert "= 500 (the maximum)" in result.stdout, result.stdout
    report = report_of(tmp_path)
    assert report["sold_since"]["units_subtracted"] == 250
    assert any("'maximum': 500" in n for n in report["notes"]), report["notes"]


def test_as_of_in_a_profile_as_a_toml_time(sandbox: SandboxProcess, tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20}])
    as_of = (NOW - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
    sell(sb, ITEMS[0], 2, as_of)  # the very second: counted
    sell(sb, ITEMS[0], 5, as_of - timedelta(seconds=1))
    config = tmp_path / "invsync.toml"
    config.write_text(f"[profiles.night]\nas_of = {as_of.isoformat()}\n")
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["sync", str(night), "--config", str(config), "--profile", "night"],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 8


def test_duplicate_rows_of_one_sku_are_lowered_once(sandbox: SandboxProcess,
                                                    tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20},
                    {"location_id": 2, "sku": ITEMS[0], "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 3, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 6], [ITEMS[0], 1, 4], [ITEMS[0], 2, 5]])
    result = run_invsync(["sync", str(night), "--duplicates", "sum", "--as-of", iso(as_of)],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 7 and sb.levels()[(2, ITEMS[0])] == 5


def test_a_dry_run_reads_orders_and_sends_nothing(sandbox: SandboxProcess,
                                                  tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 3, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["sync", str(night), "--dry-run", "--as-of",
                          as_of.astimezone(timezone(timedelta(hours=-5))).isoformat()],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 17
    row = read_plan(last_run(tmp_path))[0]
    assert row["sold_since_as_of"] == "3"


def test_kill_9_during_the_order_read_then_a_new_run(sandbox: SandboxProcess, tmp_path: Path,
                                                     children: list[Any]) -> None:
    import threading

    from conftest import kill_when, spawn

    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    reading, release = threading.Event(), threading.Event()

    def hold_orders(req: Request) -> Reply | None:
        if "/v2/orders" in req.path and not release.is_set():
            reading.set()
            release.wait(timeout=120)
            return Reply.json(503, {"title": "held by the test"})
        return None

    with misbehaving_store(hold_orders, sb.url) as store:
        env = env_at(store.url, tmp_path, sb)
        log = tmp_path / "killed.log"
        killed = spawn(["sync", str(night), "--as-of", iso(as_of)], env, log, children)
        try:
            kill_when(reading.is_set, killed, log)  # kill -9 while it reads the orders
        finally:
            release.set()
        assert sb.levels()[(1, ITEMS[0])] == 18  # the killed run sent nothing
        sell(sb, ITEMS[0], 1, NOW)
        again = run_invsync(["sync", str(night), "--as-of", iso(as_of)], env)
    assert again.returncode == 0, output(again)
    assert sb.levels()[(1, ITEMS[0])] == 10 - 2 - 1


def test_a_store_that_pages_fewer_orders_than_asked(sandbox: SandboxProcess,
                                                    tmp_path: Path) -> None:
    """A store (or a proxy before it) that answers 50 orders a page whatever the limit:
    the orders of the later pages must not be lost (each is a unit sold twice)."""
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 500}])
    as_of = NOW - timedelta(hours=1)
    for i in range(60):
        sell(sb, ITEMS[0], 1, as_of + timedelta(seconds=i + 1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 100]])
    holder: list[Any] = []

    def fifty(req: Request) -> Reply | None:
        if "/v2/orders" not in req.path:
            return None
        from urllib.parse import urlencode
        query = {**req.query, "limit": "50"}
        return holder[0].forward("GET", f"{req.path}?{urlencode(query)}", req)

    with misbehaving_store(fifty, sb.url) as store:  # (its own store, to forward through)
        holder.append(store)
        result = run_invsync(["sync", str(night), "--as-of", iso(as_of)],
                             env_at(store.url, tmp_path, sb))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 100 - 60


@pytest.mark.parametrize("as_of", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "mtime"])
def test_an_as_of_at_the_end_of_the_calendar_is_bad_input(sandbox: SandboxProcess,
                                                         tmp_path: Path, as_of: str) -> None:
    import os

    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    os.utime(night, (2.0**40, 2.0**40))  # a touch -d gone wrong: year 36,812
    result = run_invsync(["sync", str(night), "--as-of", as_of], env_for(sandbox, tmp_path))
    assert result.returncode == 64, output(result)
    assert "unexpected" not in output(result) and "Traceback" not in output(result)
    assert sandbox.requests() == []


def test_a_store_that_drips_the_order_listing_fails_the_run_and_sends_nothing(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    from conftest import retry_config

    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])

    def drip(req: Request) -> Reply | None:
        if "/v2/orders" in req.path:
            return Reply(200, b"[" + b" " * 10_000 + b"]",
                         {"Content-Type": "application/json"}, drip_s=0.05, endless=True)
        return None

    config = retry_config(tmp_path, max_attempts=2, timeout_s=1.0, max_total_s=4.0)
    result, puts = proxied(drip, sb, tmp_path, ["sync", str(night), "--config", str(config),
                                                "--as-of", iso(as_of)], timeout=120)
    assert result.returncode == 2, output(result)
    assert "Traceback" not in output(result) and "unexpected" not in output(result)
    assert puts == [] and sb.levels()[(1, ITEMS[0])] == 20


def test_a_level_lowered_to_what_invsync_last_sent_is_still_sent(sandbox: SandboxProcess,
                                                                 tmp_path: Path) -> None:
    """The snapshot baseline remembers 8 from the last run; since then a restock (the file
    says 10) and 2 sold (the store is at 6). 10 − 2 = 8 equals the snapshot, but the store
    is not at 8: the orders moved it. It must be sent."""
    sb = sandbox
    env = env_for(sb, tmp_path)
    as_of = sync_first(sb, env, tmp_path, [[ITEMS[0], 1, 8]], "--baseline", "snapshot")
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=1))
    assert sb.levels()[(1, ITEMS[0])] == 6
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    result = run_invsync(["sync", str(night), "--baseline", "snapshot", "--as-of", iso(as_of)],
                         env)
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 8


def test_an_order_placed_while_the_live_levels_are_read_is_subtracted(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """The orders are read last, after the store's live levels: an order placed while a long
    live read runs is counted (read first, it was not, and its unit went on sale again)."""
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    sold_during: list[int] = []

    def sell_while_reading(req: Request) -> Reply | None:
        if req.method == "GET" and req.path.startswith("/inventory/items") and not sold_during:
            sold_during.append(place(sb, [{"sku": ITEMS[0], "quantity": 1}],
                                     datetime.now(UTC)))
        return None

    result, _ = proxied(sell_while_reading, sb, tmp_path,
                        ["sync", str(night), "--baseline", "live", "--as-of", iso(as_of)])
    assert result.returncode == 0, output(result)
    assert sold_during, "the live levels were not read"
    assert sb.levels()[(1, ITEMS[0])] == 10 - 2 - 1


def test_a_plan_that_resends_a_sold_item_can_be_pushed(sandbox: SandboxProcess,
                                                       tmp_path: Path) -> None:
    sb = sandbox
    env = env_for(sb, tmp_path)
    as_of = sync_first(sb, env, tmp_path, [[ITEMS[0], 1, 8]], "--baseline", "snapshot")
    sell(sb, ITEMS[0], 2, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 10]])
    planned = run_invsync(["plan", str(night), "--baseline", "snapshot", "--as-of", iso(as_of)],
                          env)
    assert planned.returncode == 0, output(planned)
    plan_csv = last_run(tmp_path) / "plan.csv"
    # Planned against the snapshot: its before (8) is the level invsync set, not a live read
    # (the store holds 6: the 2 sold, which the plan allows for).
    row = next(csv.DictReader(plan_csv.open(encoding="utf-8")))
    assert (row["before"], row["after"], row["read_at"]) == ("8", "8", "")
    # The apply re-check compares like with like: the snapshot has not moved (no run wrote
    # since), so it goes through although the live level (6) is not the plan's before.
    pushed = run_invsync(["sync", "--plan-file", str(plan_csv)], env)
    assert pushed.returncode == 0, output(pushed)
    assert sb.levels()[(1, ITEMS[0])] == 8

    # The same plan once another run has written the item since: its before (8) is neither
    # the snapshot's level nor the store's (5): refused, nothing sent.
    again = run_invsync(["plan", str(night), "--baseline", "snapshot", "--as-of", iso(as_of)],
                        env)
    assert again.returncode == 0, output(again)
    stale_plan = last_run(tmp_path) / "plan.csv"
    other = night_file(tmp_path, [[ITEMS[0], 1, 5]], name="other.csv")
    assert run_invsync(["sync", str(other), "--baseline", "snapshot", "--allow-shrink"],
                       env).returncode == 0
    refused = run_invsync(["sync", "--plan-file", str(stale_plan)], env)
    assert refused.returncode == 3, output(refused)
    assert "planned from 8, now 5" in output(refused)
    assert sb.levels()[(1, ITEMS[0])] == 5


def test_a_variant_sold_at_a_product_tracked_item_lowers_the_products_sku_row(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """A product tracked by product whose options have SKUs of their own: the order line
    carries the option's SKU (POSTER-1755-A3) and the product's id, the file names the
    product's SKU (POSTER-1755). The store took the units off the product: so must invsync."""
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[3], "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    sell(sb, ITEMS[3], 3, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[3], 1, 10], [ITEMS[0], 1, 10]])

    def option_skus(reply: Reply) -> Reply:
        orders = json.loads(reply.body or b"[]")
        for o in orders:
            for c in o["consignments"]["shipping"]:
                for line in c["line_items"]:
                    if line["product_id"] == 101:
                        line["sku"], line["variant_id"] = ITEMS[3] + "-A3", 5555
        reply.body = json.dumps(orders).encode()
        return reply

    def rewrite(req: Request) -> Reply | None:
        if "/v2/orders" in req.path:
            req.alter = option_skus
        return None

    result, _ = proxied(rewrite, sb, tmp_path, ["sync", str(night), "--as-of", iso(as_of)])
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[3])] == 7
    sold = report_of(tmp_path)["sold_since"]
    assert sold["units_not_in_file"] == 0 and sold["units_subtracted"] == 3


def test_items_sold_out_since_the_as_of_time_do_not_trip_the_zeroing_brake(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """One of three items sold out overnight (the file says 4, 4 sold): 0 is what the orders
    left, not a broken file saying 0; the mass-zeroing brake (30%) must not stop the run."""
    sb = sandbox
    env = env_for(sb, tmp_path)
    as_of = sync_first(sb, env, tmp_path, [[s, 1, 6] for s in ITEMS[:3]])
    sell(sb, ITEMS[0], 4, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[s, 1, 4] for s in ITEMS[:3]])
    result = run_invsync(["sync", str(night), "--as-of", iso(as_of)], env)
    assert result.returncode == 0, output(result)
    levels = sb.levels()
    assert [levels[(1, s)] for s in ITEMS[:3]] == [0, 4, 4]


def test_a_file_of_zeros_still_trips_the_brake_with_an_as_of(sandbox: SandboxProcess,
                                                            tmp_path: Path) -> None:
    sb = sandbox
    env = env_for(sb, tmp_path)
    as_of = sync_first(sb, env, tmp_path, [[s, 1, 6] for s in ITEMS[:3]])
    sell(sb, ITEMS[0], 1, as_of + timedelta(minutes=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 0], [ITEMS[1], 1, 0],
                                                   [ITEMS[2], 1, 6]])
    result = run_invsync(["sync", str(night), "--as-of", iso(as_of)], env)
    assert result.returncode == 3, output(result)
    assert "mass_zeroing" in output(result) or "drop to 0" in output(result)


def test_three_pages_of_orders_are_all_counted(sandbox: SandboxProcess, tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": s, "quantity": 900} for s in ITEMS[:2]])
    as_of = NOW - timedelta(hours=2)
    for i in range(520):  # 250 + 250 + 20, and one before the as-of time
        sell(sb, ITEMS[i % 2], 1, as_of + timedelta(seconds=i))
    sell(sb, ITEMS[0], 7, as_of - timedelta(seconds=1))
    night = night_file(tmp_path, [[ITEMS[0], 1, 600], [ITEMS[1], 1, 600]])
    result = run_invsync(["sync", str(night), "--as-of", iso(as_of)], env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    levels = sb.levels()
    assert (levels[(1, ITEMS[0])], levels[(1, ITEMS[1])]) == (600 - 260, 600 - 260)
    sold = report_of(tmp_path)["sold_since"]
    assert sold["orders_read"] == 520 and sold["requests"] >= 4
