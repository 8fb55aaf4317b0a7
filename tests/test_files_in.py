"""Files merchants and warehouses really send (issue 11, the reading side).

Each class of problem has its own small fixture, written here: ragged CSV rows, stray
quotes, Excel's ``sep=`` line, long cells, encodings, title rows above the header, other
systems' export layouts, workbooks that are not workbooks invsync reads.
"""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import polars as pl
import pytest
import xlsxwriter

from invsync.errors import InputFileError, UsageError
from invsync.stages.ingest import ROW, normalise_header, read_stock_file
from invsync.stages.validate import validate
from invsync.tables import Location
from tests.conftest import env_for, output, run_invsync


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def cells(table: object, *cols: str) -> list[tuple[object, ...]]:
    frame = table.frame  # type: ignore[attr-defined]
    return frame.select(ROW, *cols).rows()


def problems(table: object) -> dict[int, str]:
    found = table.problems  # type: ignore[attr-defined]
    return {} if found is None else dict(zip(found[ROW].to_list(), found["reason"].to_list(),
                                             strict=True))


# ---- one bad row never sinks a file ------------------------------------------------------


def test_a_row_with_more_cells_is_rejected_alone_and_the_rest_is_read(tmp_path: Path) -> None:
    text = ("sku,qty,note\n"
            "A,1,ok\n"                   # row 2
            "B,2,three, four\n"          # row 3: an unquoted comma in the note
            "C,3\n"                      # row 4: fewer cells: the note is empty
            "D,4,ok,,\n"                 # row 5: trailing empty cells are harmless
            "E,5,ok\n")                  # row 6
    table = read_stock_file(write(tmp_path, "r.csv", text))
    assert problems(table) == {3: "unreadable_row"}
    assert "4 cells but the header has 3" in table.problems["message"][0]  # type: ignore[index]
    checked = validate(table)
    assert checked.valid.sort(ROW)["sku"].to_list() == ["A", "C", "D", "E"]
    assert checked.rejected.select(ROW, "reason").rows() == [(3, "unreadable_row")]


def test_an_unescaped_inch_mark_is_a_character_as_in_a_spreadsheet(tmp_path: Path) -> None:
    text = 'sku,qty,title\nFR-12,5,Frame 12" oak\nFR-16,6,Frame 16" oak, black\nFR-20,7,x\n'
    table = read_stock_file(write(tmp_path, "inch.csv", text))
    # Row 3 has an unquoted comma too: only that row is rejected.
    assert cells(table, "sku", "title")[0] == (2, "FR-12", 'Frame 12" oak')
    assert problems(table) == {3: "unreadable_row"}
    assert [r[1] for r in cells(table, "sku")] == ["FR-12", "FR-16", "FR-20"]


def test_excel_sep_line_names_the_delimiter_and_the_header_stays_row_1(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "sep.csv", "sep=;\r\nsku;qty\r\nA;1\r\nB,1;2\r\n"))
    assert table.delimiter == ";"
    assert cells(table, "sku", "qty") == [(2, "A", "1"), (3, "B,1", "2")]


def test_a_long_cell_in_an_unused_column_is_fine_in_a_used_one_rejects_its_row(
        tmp_path: Path) -> None:
    long = "x" * 11_000
    text = f"sku,qty,description\nA,1,{long}\n{'S' * 11_000},2,short\nC,3,ok\n"
    table = read_stock_file(write(tmp_path, "long.csv", text))
    assert problems(table) == {3: "cell_too_long"}
    checked = validate(table)
    assert checked.valid.sort(ROW)["sku"].to_list() == ["A", "C"]
    assert checked.rejected.select(ROW, "reason", "column").rows() == [
        (3, "cell_too_long", "sku")]


# ---- encodings ---------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_bom_is_recognised(tmp_path: Path, codec: str) -> None:
    data = "sku,qty\nЯ-1,3\nB,4\n".encode(codec)
    table = read_stock_file(write(tmp_path, "u16.csv", data))
    assert table.encoding == codec
    assert cells(table, "sku", "qty") == [(2, "Я-1", "3"), (3, "B", "4")]


@pytest.mark.parametrize(("text", "codec", "named"), [
    ("品番,在庫\nテスト-赤,5\nテスト-青,7\n", "shift_jis", "shift_jis"),
    ("sku,qty,name\nΚΑΡΕΚΛΑ-ΞΥΛΙΝΗ,5,Ξύλινη καρέκλα κουζίνας\n"
     "Τραπέζι,3,Τραπέζι από δρυ για την τραπεζαρία\n", "iso-8859-7", "windows-1253"),
    ("sku,qty,name\nŽLUŤOUČKÝ-KŮŇ,5,Příliš žluťoučký kůň úpěl ďábelské ódy\n"
     "řeřicha,2,Česká republika je vnitrozemský stát ve střední Evropě\n",
     "cp1250", "windows-1250"),
])
def test_encodings_are_detected_not_read_as_windows_1252(tmp_path: Path, text: str,
                                                         codec: str, named: str) -> None:
    mapped = {"品番": "sku", "在庫": "quantity"} if codec == "shift_jis" else {}
    table = read_stock_file(write(tmp_path, "enc.csv", text.encode(codec)), column_map=mapped)
    assert table.encoding == named
    first = text.splitlines()[1].split(",")[0]
    assert table.frame[table.headers[0]][0] == first
    assert any("not UTF-8" in n for n in table.notes)


def test_an_unclear_encoding_is_refused_naming_the_candidates(tmp_path: Path) -> None:
    # Short Greek names that read as Cyrillic, Hebrew or Thai just as well.
    data = "id,qty\n39,Λεωνιδας\n23,Αλεξανδρος\n36,Μυρων\n".encode("iso-8859-7")
    path = write(tmp_path, "greek.csv", data)
    with pytest.raises(InputFileError, match=r"encoding is unclear \(it could be .*windows-1253"):
        read_stock_file(path, column_map={"id": "sku"})
    # Naming the encoding reads it.
    table = read_stock_file(path, column_map={"id": "sku"}, encoding="iso-8859-7")
    assert table.frame["qty"].to_list() == ["Λεωνιδας", "Αλεξανδρος", "Μυρων"]


def test_a_forced_encoding_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x.csv", "sku,qty\nCAFÉ,1\n".encode("cp1252"))
    with pytest.raises(InputFileError, match="not valid utf-8 text"):
        read_stock_file(path, encoding="utf-8")
    with pytest.raises(UsageError, match="unknown encoding"):
        read_stock_file(path, encoding="klingon")


# ---- the header row ----------------------------------------------------------------------


def test_a_title_above_the_csv_header_is_skipped_and_rows_keep_their_numbers(
        tmp_path: Path) -> None:
    text = "Stock export 2026-11-29\nWarehouse: East\n\nsku,qty\nA,1\nB,2\n"
    table = read_stock_file(write(tmp_path, "t.csv", text))
    assert table.header_row == 4
    assert cells(table, "sku", "qty") == [(5, "A", "1"), (6, "B", "2")]
    assert any("header is on row 4" in n for n in table.notes)


def test_a_title_above_a_semicolon_header_is_skipped(tmp_path: Path) -> None:
    # The title has no delimiter (or a comma): the header's own delimiter is found.
    text = "Lagerbestand, Stand 29.11.2026\nArtikelnummer;Bestand\nA-1;3\nB-2;4\n"
    table = read_stock_file(write(tmp_path, "de.csv", text))
    assert table.delimiter == ";"
    assert table.header_row == 2
    assert cells(table, "Artikelnummer", "Bestand") == [(3, "A-1", "3"), (4, "B-2", "4")]


def test_header_row_option_names_the_header(tmp_path: Path) -> None:
    text = "note,qty\nsku,count\nA,1\n"
    path = write(tmp_path, "h.csv", text)
    table = read_stock_file(path, header_row=2, column_map={"count": "quantity"})
    assert table.header_row == 2
    assert cells(table, "sku", "count") == [(3, "A", "1")]


def test_a_title_above_the_workbook_header_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "t.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet()
    ws.write("A1", "Inventory report")
    ws.write("A2", "printed 2026-11-29")
    ws.write_row("A4", ["SKU", "On Hand"])
    ws.write_row("A5", ["A", 3])
    ws.write_row("A7", ["B", 4])
    wb.close()
    table = read_stock_file(path)
    assert table.header_row == 4
    assert cells(table, "SKU", "On Hand") == [(5, "A", "3"), (7, "B", "4")]


def test_text_that_looks_like_a_date_stays_text_only_date_cells_are_dates(
        tmp_path: Path) -> None:
    path = tmp_path / "d.xlsx"
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet()
    ws.write_row("A1", ["sku", "qty"])
    ws.write_string("A2", "3048-20-30")
    ws.write_number("B2", 1)
    ws.write_datetime("A3", dt.datetime(2024, 1, 5), wb.add_format({"num_format": "yyyy-mm-dd"}))
    ws.write_number("B3", 2)
    wb.close()
    checked = validate(read_stock_file(path))
    assert checked.valid["sku"].to_list() == ["3048-20-30"]
    assert checked.rejected.select(ROW, "reason").rows() == [(3, "date_in_column")]


# ---- files that are not workbooks invsync reads ------------------------------------------


def test_numbers_and_xml_spreadsheets_are_named_with_how_to_export(tmp_path: Path) -> None:
    numbers = tmp_path / "stock.numbers"
    with zipfile.ZipFile(numbers, "w") as zf:
        zf.writestr("Index/Document.iwa", b"\x00\x01")
        zf.writestr("Metadata/Properties.plist", b"plist")
    with pytest.raises(InputFileError, match=r"Apple Numbers file.*Export To"):
        read_stock_file(numbers)
    xml = write(tmp_path, "stock.xls", '<?xml version="1.0"?>\n<Workbook xmlns="urn:schemas-'
                                       'microsoft-com:office:spreadsheet"></Workbook>\n')
    with pytest.raises(InputFileError, match=r"XML Spreadsheet 2003.*save it as \.xlsx"):
        read_stock_file(xml)


def test_utf16_text_in_8bit_biff_strings_is_decoded_as_xlrd_does() -> None:
    from invsync.stages.ingest.xls import _utf16_cells

    frame = pl.DataFrame({"a": ["D\x00a\x00y\x00", "\x0c\x01E\x00Z\x00", "plain", None],
                          "b": ["1", "2", "3", "4"]})
    assert _utf16_cells(frame)["a"].to_list() == ["Day", "ČEZ", "plain", None]
    assert normalise_header("D\x00a\x00y\x00") == "day"


# ---- recognised layouts ------------------------------------------------------------------


def test_headers_normalise_punctuation_like_spaces() -> None:
    assert normalise_header("Product Code/SKU") == "product_code_sku"
    assert normalise_header("On hand (new)") == "on_hand_new"
    assert normalise_header("In stock?") == "in_stock"
    assert normalise_header("Product/Internal Reference") == "product_internal_reference"


def test_bigcommerce_bulk_edit_export(tmp_path: Path) -> None:
    header = ("Item Type,Product ID,Product Name,Product Code/SKU,Current Stock Level,"
              "Track Inventory")
    rows = [
        "Product,101,Mug,MUG-1,5,by product",       # row 2: synced
        "Product,102,Cap,CAP,0,by option",          # row 3: parent: skipped
        "SKU,,[S]Blue,CAP-BLUE,4,",                 # row 4: synced
        "SKU,,[S]Red,CAP-RED,6,",                   # row 5: synced
        "Rule,,,,,",                                # row 6: skipped
        "Product,103,Gift card,GIFT,,none",         # row 7: untracked: skipped
        "Product,104,Lamp,LAMP-1,abc,by product",   # row 8: rejected as usual
    ]
    table = read_stock_file(write(tmp_path, "bulk.csv", "\n".join([header, *rows]) + "\n"))
    assert table.layout == "bigcommerce-bulk-edit"
    assert table.mapping == {"sku": "Product Code/SKU", "quantity": "Current Stock Level"}
    checked = validate(table)
    assert checked.valid.select(ROW, "sku", "quantity").sort(ROW).rows() == [
        (2, "MUG-1", 5), (4, "CAP-BLUE", 4), (5, "CAP-RED", 6)]
    assert checked.rejected.select(ROW, "reason").rows() == [(8, "quantity_not_whole")]
    note = next(n for n in table.notes if "Bulk Edit" in n and "skipped" in n)
    assert "1 parent row(s)" in note and "1 untracked" in note and "1 rule row(s)" in note


def test_bigcommerce_inventory_export_uses_the_id_and_checks_the_code(tmp_path: Path) -> None:
    text = ("Product ID,Variant ID,SKU,Location ID,Location Code,Current Stock\n"
            "1,11,MUG-1,1,WH-A,5\n"       # row 2
            "1,12,MUG-2,2,WH-B,6\n"       # row 3
            "1,13,MUG-3,2,WH-A,7\n")      # row 4: the code names another location
    table = read_stock_file(write(tmp_path, "inv.csv", text))
    assert table.layout == "bigcommerce-inventory"
    locations = [Location(1, "WH-A"), Location(2, "WH-B")]
    checked = validate(table, locations=locations)
    assert checked.valid.select(ROW, "location_id", "sku").sort(ROW).rows() == [
        (2, 1, "MUG-1"), (3, 2, "MUG-2")]
    assert checked.rejected.select(ROW, "reason").rows() == [(4, "location_mismatch")]


def test_shopify_inventory_export(tmp_path: Path) -> None:
    text = ("Handle,Title,SKU,Location,Incoming,Available,On hand (current),On hand (new)\n"
            "mug,Mug,MUG-1,Main Warehouse,0,4,5,\n"          # row 2
            "mug,Mug,MUG-1,Pop-up Store,0,not stocked,not stocked,\n"  # row 3: skipped
            "cap,Cap,CAP-1,main warehouse,0,2,3,\n"          # row 4: label, case aside
            "cap,Cap,CAP-1,Basement,0,1,1,\n")               # row 5: no such location
    table = read_stock_file(write(tmp_path, "shopify.csv", text))
    assert table.layout == "shopify-inventory"
    # "On hand (new)" is empty: "On hand (current)" is the level, not "Available".
    assert table.mapping["quantity"] == "On hand (current)"
    assert any("'not stocked'" in n for n in table.notes)
    locations = [Location(1, "MAIN", label="Main Warehouse"), Location(2, "POP", label="Pop-up")]
    checked = validate(table, locations=locations)
    assert checked.valid.select(ROW, "location_id", "sku", "quantity").sort(ROW).rows() == [
        (2, 1, "MUG-1", 5), (4, 1, "CAP-1", 3)]
    assert checked.rejected.select(ROW, "reason").rows() == [(5, "unknown_location")]


@pytest.mark.parametrize(("layout", "text", "sku", "quantity"), [
    ("amazon-fba", "seller-sku,fnsku,asin,afn-warehouse-quantity,afn-fulfillable-quantity,"
     "afn-total-quantity\nMUG-1,X00,B00,9,7,9\n", "MUG-1", "7"),
    ("shipbob", "Inventory ID,Name,SKU,Fulfillable Quantity,Onhand Quantity,"
     "Committed Quantity\n55,Mug,MUG-1,7,9,2\n", "MUG-1", "7"),
    ("shipstation", "SKU,Name,Warehouse,Location On Hand,Allocated,Available\n"
     "MUG-1,Mug,Main,7,2,5\n", "MUG-1", "7"),
    ("odoo", "Product,Product/Internal Reference,Location,Quantity,Reserved Quantity\n"
     "Mug,MUG-1,WH/Stock,7,2\n", "MUG-1", "7"),
])
def test_other_systems_layouts_are_recognised(tmp_path: Path, layout: str, text: str,
                                             sku: str, quantity: str) -> None:
    table = read_stock_file(write(tmp_path, "x.csv", text))
    assert table.layout == layout
    row = table.frame.row(0, named=True)
    assert (row[table.mapping["sku"]], row[table.mapping["quantity"]]) == (sku, quantity)


def test_woocommerce_variable_parents_are_skipped(tmp_path: Path) -> None:
    text = ("ID,Type,SKU,Name,Parent,In stock?,Stock\n"
            "10,variable,TEE,Tee,,1,\n"                  # row 2: parent: skipped
            "11,variation,TEE-S,Tee - S,id:10,1,4\n"     # row 3
            "12,simple,MUG-1,Mug,,1,7\n")                # row 4
    table = read_stock_file(write(tmp_path, "woo.csv", text))
    assert table.layout == "woocommerce"
    checked = validate(table)
    assert checked.valid.select(ROW, "sku", "quantity").sort(ROW).rows() == [
        (3, "TEE-S", 4), (4, "MUG-1", 7)]
    assert checked.rejected.height == 0


def test_german_headers_are_aliases(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "de.csv", "Artikelnummer;Bestand;Lagerort\nA;3;1\n"))
    assert table.mapping == {"sku": "Artikelnummer", "quantity": "Bestand",
                             "location_id": "Lagerort"}


# ---- through the CLI ---------------------------------------------------------------------


def test_cli_names_the_layout_and_takes_encoding_and_header_row(tmp_path: Path) -> None:
    text = "Report\nsku,qty\nŽLUŤ-1,3\n"
    path = write(tmp_path, "cz.csv", text.encode("cp1250"))
    env = env_for_dry_run(tmp_path)
    result = run_invsync(["sync", str(path), "--dry-run", "--header-row", "2",
                          "--encoding", "cp1250"], env)
    assert result.returncode == 0, output(result)
    report = result.report()
    assert report["input"]["header_row"] == 2
    assert report["input"]["encoding"] == "cp1250"
    assert report["input"]["layout"] is None

    bulk = write(tmp_path, "bulk.csv", "Item Type,Product ID,Product Code/SKU,"
                                       "Current Stock Level,Track Inventory\n"
                                       "Product,1,MUG-1,5,by product\n")
    result = run_invsync(["plan", str(bulk)], env)
    assert "Traceback" not in result.stderr
    assert result.report()["input"]["layout"] == "bigcommerce-bulk-edit"


def env_for_dry_run(tmp_path: Path) -> dict[str, str]:
    """An environment with no store and no token: a dry run reads and plans only."""
    class _NoStore:
        store_hash, url = "teststore", "http://127.0.0.1:9"

    env = env_for(_NoStore(), tmp_path)  # type: ignore[arg-type]
    env.pop("BIGCOMMERCE_ACCESS_TOKEN")
    return env


def test_problem_rows_keep_the_frame_row_for_the_rejected_file(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "r.csv", "sku,qty\nA,1,x\nB,2\n"))
    assert table.frame.select(ROW, "sku").rows() == [(2, "A"), (3, "B")]
    assert isinstance(table.problems, pl.DataFrame)
