"""An offline plan and locations named by name (issue 23): without the store's list of
locations the rows are kept (not rejected), left out of the plan, and said so; with the
store, a name is resolved through the store's location labels."""

from __future__ import annotations

from pathlib import Path

from conftest import env_for, run_invsync

from invsync.sandbox.process import SandboxProcess
from invsync.stages.ingest import ROW, read_stock_file
from invsync.stages.validate import Location, validate
from tests.test_files_in import env_for_dry_run


def _table(tmp_path: Path, text: str):
    path = tmp_path / "in.csv"
    path.write_text(text, encoding="utf-8")
    return read_stock_file(path)


FILE = ("sku,location,quantity\nA,Underground Sports Shop,5\nB,underground sports shop,abc\n"
        "C,2,7\nD,-5,1\nE,East warehouse,3\nE,East warehouse,4\n")


def test_offline_named_locations_are_kept_out_of_the_plan_not_rejected(tmp_path: Path) -> None:
    v = validate(_table(tmp_path, FILE))
    assert v.valid.select("sku", "location_id").rows() == [("C", 2)]
    reasons = {r[ROW]: r["reason"] for r in v.rejected.to_dicts()}
    # Their other cells are still checked; a number that is no id is still invalid.
    assert reasons == {3: "quantity_not_whole", 5: "invalid_location", 6: "duplicate_item",
                       7: "duplicate_item"}
    assert v.location_unchecked == 1
    assert len(v.notes) == 1
    assert "1 row(s) name their location ('Underground Sports Shop')" in v.notes[0]
    assert "checked when the store is reached" in v.notes[0]
    assert (v.seen_keys["location_id"] < 1000).all()  # never a stand-in id
    # An item at a named location is never "missing" at a location the plan covers.
    assert {"A", "E"} <= set(v.seen_keys.filter(location_id=2)["item_key"].to_list())


def test_with_the_store_a_name_is_the_locations_label(tmp_path: Path) -> None:
    locations = [Location(1, "DEFAULT", True, "Main"), Location(2, "WH-EAST", True,
                                                                "Underground Sports Shop")]
    v = validate(_table(tmp_path, "sku,location,quantity\nA,Underground Sports Shop,5\n"
                                  "B,WH-EAST,6\nC,Nowhere,1\n"), locations=locations)
    assert v.valid.select("sku", "location_id").rows() == [("A", 2), ("B", 2)]
    assert v.rejected.select(ROW, "reason").rows() == [(4, "unknown_location")]
    assert v.location_unchecked == 0 and v.notes == []


def test_cli_offline_plan_keeps_named_rows_and_counts_add_up(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_text("sku,location,quantity\nA-1,Underground Sports Shop,5\n"
                    "A-2,Underground Sports Shop,6\nA-3,1,7\n", encoding="utf-8")
    result = run_invsync(["plan", str(path)], env_for_dry_run(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = result.report()  # checked against schemas/ by the contract tests' hook
    counts = report["counts"]
    assert (counts["valid"], counts["invalid"], counts["location_unchecked"]) == (3, 0, 2)
    assert report["rejected"] == []
    assert any("2 row(s) name their location ('Underground Sports Shop')" in n
               for n in report["notes"])
    plan = (result.report_dir() / "plan.csv").read_text()
    assert "A-3" in plan and "A-1" not in plan and "Underground" not in plan
    assert "kept for the store to check their location" in result.stdout
    page = (result.report_dir() / "report.html").read_text()
    assert "rows kept for the store to check their location" in page


def test_cli_with_the_store_resolves_the_label(sandbox: SandboxProcess, tmp_path: Path) -> None:
    import httpx

    labels = httpx.get(f"{sandbox.url}/stores/{sandbox.store_hash}/v3/inventory/locations",
                       headers={"X-Auth-Token": env_for(sandbox, tmp_path)[
                           "BIGCOMMERCE_ACCESS_TOKEN"]}, timeout=30).json()["data"]
    second = next(loc for loc in labels if loc["id"] != 1 and loc.get("label"))
    path = tmp_path / "shop.csv"
    path.write_text(f"sku,location,quantity\nTOWEL-907-NAVY-SHEET,{second['label']},5\n",
                    encoding="utf-8")
    result = run_invsync(["sync", str(path)], env_for(sandbox, tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert sandbox.levels()[(second["id"], "TOWEL-907-NAVY-SHEET")] == 5
