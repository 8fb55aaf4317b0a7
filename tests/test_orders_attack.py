"""--as-of attacked as an ops engineer or a hostile party would, against a real sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import env_for, output, run_invsync, write_csv
from test_orders import ITEMS, iso, last_run, place, put_levels, read_plan

from invsync.sandbox.process import SandboxProcess

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)


def test_the_maximum_caps_what_is_left_after_what_sold(sandbox: SandboxProcess,
                                                       tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": s, "quantity": 900} for s in ITEMS[:2]])
    as_of = NOW - timedelta(hours=1)
    place(sb, [{"sku": ITEMS[0], "quantity": 200}, {"sku": ITEMS[1], "quantity": 50}],
          as_of + timedelta(minutes=1))
    config = tmp_path / "invsync.toml"
    config.write_text("[quantity]\nmaximum = 500\nbuffer = 2\n")
    night = write_csv(tmp_path / "n.csv", ["sku", "location_id", "quantity"],
                      [[ITEMS[0], 1, 602], [ITEMS[1], 1, 602]])
    result = run_invsync(["sync", str(night), "--config", str(config), "--as-of", iso(as_of)],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    # 600 for sale at the as-of time (602, 2 kept back), 200 sold since: 400 left, under
    # the maximum of 500; 50 sold: 550 left, capped at 500.
    assert sb.levels()[(1, ITEMS[0])] == 400 and sb.levels()[(1, ITEMS[1])] == 500
    assert "file 600 − 200 sold since" in result.stdout and "= 400" in result.stdout
    assert "= 500 (the maximum)" in result.stdout, result.stdout
    report = json.loads((last_run(tmp_path) / "report.json").read_text())
    assert report["sold_since"]["units_subtracted"] == 250
    assert any("'maximum': 500" in n for n in report["notes"]), report["notes"]


def test_as_of_in_a_profile_as_a_toml_time(sandbox: SandboxProcess, tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20}])
    as_of = (NOW - timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
    place(sb, [{"sku": ITEMS[0], "quantity": 2}], as_of)  # the very second: counted
    place(sb, [{"sku": ITEMS[0], "quantity": 5}], as_of - timedelta(seconds=1))
    config = tmp_path / "invsync.toml"
    config.write_text(f"[profiles.night]\nas_of = {as_of.isoformat()}\n")
    night = write_csv(tmp_path / "n.csv", ["sku", "location_id", "quantity"],
                      [[ITEMS[0], 1, 10]])
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
    place(sb, [{"sku": ITEMS[0], "quantity": 3}], as_of + timedelta(minutes=1))
    night = write_csv(tmp_path / "n.csv", ["sku", "location_id", "quantity"],
                      [[ITEMS[0], 1, 6], [ITEMS[0], 1, 4], [ITEMS[0], 2, 5]])
    result = run_invsync(["sync", str(night), "--duplicates", "sum", "--as-of", iso(as_of)],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 7 and sb.levels()[(2, ITEMS[0])] == 5


def test_a_dry_run_reads_orders_and_sends_nothing(sandbox: SandboxProcess,
                                                  tmp_path: Path) -> None:
    sb = sandbox
    put_levels(sb, [{"location_id": 1, "sku": ITEMS[0], "quantity": 20}])
    as_of = NOW - timedelta(hours=1)
    place(sb, [{"sku": ITEMS[0], "quantity": 3}], as_of + timedelta(minutes=1))
    night = write_csv(tmp_path / "n.csv", ["sku", "location_id", "quantity"],
                      [[ITEMS[0], 1, 10]])
    result = run_invsync(["sync", str(night), "--dry-run", "--as-of",
                          as_of.astimezone(timezone(timedelta(hours=-5))).isoformat()],
                         env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert sb.levels()[(1, ITEMS[0])] == 17
    row = read_plan(last_run(tmp_path))[0]
    assert row["sold_since_as_of"] == "3"
