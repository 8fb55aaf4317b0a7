"""Shopify's inventory export: one item per stocked row, ``not stocked`` rows skipped."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from conftest import (
    SandboxProcess,
    catalog_skus,
    env_for,
    output,
    run_invsync,
    stocked,
    write_csv,
)

from invsync.stages.ingest import ROW, read_stock_file
from invsync.stages.validate import validate
from invsync.tables import Location

HEADER = ["Handle", "Title", "Option1 Name", "Option1 Value", "Option2 Name", "Option2 Value",
          "Option3 Name", "Option3 Value", "SKU", "HS Code", "COO", "Location", "Bin name",
          "Incoming (not editable)", "Unavailable (not editable)", "Committed (not editable)",
          "Available (not editable)", "On hand (current)", "On hand (new)"]
NOT = "not stocked"


def shopify_export(path: Path, skus: list[str]) -> Path:
    """Eight rows as Shopify writes them: six stocked (one with "On hand (new)" typed, five
    left empty: "no change"), two not stocked at the pop-up store."""
    a, b, c, d = skus[:4]

    def row(handle: str, sku: str, where: str, levels: list[str]) -> list[str]:
        return [handle, handle.title(), "Color", "Red", "", "", "", "", sku, "", "", where,
                "", *levels]

    rows = [
        row("mug", a, "Main Warehouse", ["0", "0", "1", "11", "12", ""]),      # row 2: 12
        row("mug", b, "Main Warehouse", ["0", "0", "0", "7", "7", "9"]),       # row 3: 9
        row("mug", a, "Pop-up Store", ["0", "0", "0", "3", "3", ""]),          # row 4: 3
        row("mug", b, "Pop-up Store", [NOT, NOT, NOT, NOT, NOT, ""]),          # row 5: skip
        row("cap", c, "main warehouse", ["5", "0", "0", "0", "0", ""]),        # row 6: 0
        row("cap", d, "Main Warehouse", ["0", "1", "0", "4", " 5 ", ""]),      # row 7: 5
        row("cap", d, "Pop-up Store", [NOT, NOT, NOT, NOT, NOT, ""]),          # row 8: skip
        row("cap", c, "Pop-up Store", ["0", "0", "0", "2", "2", "  "]),        # row 9: 2
    ]
    return write_csv(path, HEADER, rows)


SKUS = ["MUG-RED", "MUG-BLUE", "CAP-M", "CAP-L"]
LOCATIONS = [Location(1, "MAIN", label="Main Warehouse"), Location(2, "POP", label="Pop-up Store")]


def test_every_stocked_row_is_an_item_new_where_typed_else_current(tmp_path: Path) -> None:
    table = read_stock_file(shopify_export(tmp_path / "inventory_export_1.csv", SKUS))
    assert table.layout == "shopify-inventory"
    assert table.mapping["quantity"] == "On hand (new)"
    checked = validate(table, locations=LOCATIONS)
    assert checked.rejected.height == 0
    assert sorted(checked.valid.select(ROW, "location_id", "sku", "quantity").rows()) == [
        (2, 1, "MUG-RED", 12), (3, 1, "MUG-BLUE", 9), (4, 2, "MUG-RED", 3),
        (6, 1, "CAP-M", 0), (7, 1, "CAP-L", 5), (9, 2, "CAP-M", 2)]
    skipped = [n for n in table.notes if NOT in n]
    assert len(skipped) == 1, table.notes
    assert "skipped 2 row(s)" in skipped[0] and "rows 5, 8" in skipped[0]
    assert any("'On hand (new)' is empty keeps its 'On hand (current)'" in n
               for n in table.notes)


def test_all_new_cells_empty_reads_current_and_typed_only_file_reads_new(tmp_path: Path) -> None:
    text = ("Handle,SKU,Location,Available,On hand (current),On hand (new)\n"
            "mug,MUG-1,Main Warehouse,4,5,\n"
            "cap,CAP-1,Main Warehouse,1,1,\n")
    table = read_stock_file(_write(tmp_path, "a.csv", text))
    assert table.mapping["quantity"] == "On hand (current)"
    assert validate(table, locations=LOCATIONS).valid["quantity"].to_list() == [5, 1]
    typed = text.replace("4,5,\n", "4,5,8\n").replace("1,1,\n", "1,1,0\n")
    table = read_stock_file(_write(tmp_path, "b.csv", typed))
    assert validate(table, locations=LOCATIONS).valid["quantity"].to_list() == [8, 0]


def test_a_bad_current_level_is_rejected_and_the_rejected_file_keeps_the_row(
        tmp_path: Path) -> None:
    text = ("Handle,SKU,Location,On hand (current),On hand (new)\n"
            "mug,MUG-1,Main Warehouse,5,7\n"
            "cap,CAP-1,Main Warehouse,lots,\n")
    table = read_stock_file(_write(tmp_path, "c.csv", text))
    checked = validate(table, locations=LOCATIONS)
    assert checked.valid.select(ROW, "quantity").rows() == [(2, 7)]
    assert checked.rejected.select(ROW).to_series().to_list() == [3]


def test_map_overrides_the_rule(tmp_path: Path) -> None:
    text = ("Handle,SKU,Location,Available,On hand (current),On hand (new)\n"
            "mug,MUG-1,Main Warehouse,4,5,9\n"
            "cap,CAP-1,Main Warehouse,1,2,\n")
    table = read_stock_file(_write(tmp_path, "d.csv", text),
                            column_map={"Available": "quantity"})
    assert validate(table, locations=LOCATIONS).valid["quantity"].to_list() == [4, 1]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _env_offline(tmp_path: Path) -> dict[str, str]:
    class _NoStore:
        store_hash, url = "teststore", "http://127.0.0.1:9"

    env = env_for(_NoStore(), tmp_path)  # type: ignore[arg-type]
    env.pop("BIGCOMMERCE_ACCESS_TOKEN")
    return env


def test_cli_offline_plan_keeps_one_item_per_stocked_row(tmp_path: Path) -> None:
    path = shopify_export(tmp_path / "inventory_export_1.csv", SKUS)
    result = run_invsync(["plan", str(path)], _env_offline(tmp_path))
    assert result.returncode == 0, output(result)
    assert "Traceback" not in result.stderr
    report = result.report()
    assert report["input"]["layout"] == "shopify-inventory"
    # Named locations cannot be checked offline: the six rows are kept, none rejected.
    assert report["counts"]["valid"] == 6 and report["counts"]["rejected"] == 0
    assert report["counts"]["location_unchecked"] == 6
    assert sum(NOT in n for n in report["notes"]) == 1


def test_cli_sync_sends_every_stocked_row(sandbox_factory: Callable[..., SandboxProcess],
                                          tmp_path: Path) -> None:
    locations = write_csv(tmp_path / "locations.csv", ["id", "code", "label", "enabled"],
                          [[1, "MAIN", "Main Warehouse", "true"],
                           [2, "POP", "Pop-up Store", "true"]])
    sb = sandbox_factory("--locations", str(locations))
    skus = catalog_skus(4)
    path = shopify_export(tmp_path / "inventory_export_1.csv", skus)
    result = run_invsync(["sync", str(path)], env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    a, b, c, d = skus
    assert stocked(sb.levels()) == stocked({
        (1, a): 12, (1, b): 9, (2, a): 3, (1, c): 0, (1, d): 5, (2, c): 2})
    with (result.report_dir() / "rejected.csv").open(encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == []
