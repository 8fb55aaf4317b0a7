"""Unit tests of stage 1: files (CSV and XLSX) into a StockTable of exact text cells."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
import pytest
import xlsxwriter

from invsync.errors import InputFileError, UsageError
from invsync.stages.ingest import ROW, normalise_header, read_stock_file


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_bytes(data.encode("utf-8"))
    else:
        path.write_bytes(data)
    return path


def rows(table) -> list[dict]:
    return table.frame.to_dicts()


# --------------------------------------------------------------------------- CSV text


def test_csv_cells_stay_exact_text_even_after_many_numeric_rows(tmp_path: Path) -> None:
    lines = ["sku,qty,product_id"]
    lines += [f"{1000 + i},{i},{5000 + i}" for i in range(3000)]
    # Late values a type-inferring reader would mangle or choke on.
    lines += ["ABC-1,00999,12345678901234567890", "00042,1.50,0007", "1e5,  7 ,-0"]
    table = read_stock_file(write(tmp_path, "s.csv", "\n".join(lines) + "\n"))

    assert table.format == "csv"
    assert all(dtype == pl.String for name, dtype in table.frame.schema.items() if name != ROW)
    assert table.frame.schema[ROW] == pl.Int64
    assert table.rows == 3003
    tail = rows(table)[-3:]
    assert tail == [
        {ROW: 3002, "sku": "ABC-1", "qty": "00999", "product_id": "12345678901234567890"},
        {ROW: 3003, "sku": "00042", "qty": "1.50", "product_id": "0007"},
        {ROW: 3004, "sku": "1e5", "qty": "  7 ", "product_id": "-0"},
    ]
    assert rows(table)[0] == {ROW: 2, "sku": "1000", "qty": "0", "product_id": "5000"}


def test_leading_zero_skus_are_kept(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "s.csv", "SKU,Qty\n00123,5\n0,1\n000,2\n"))
    assert table.frame["SKU"].to_list() == ["00123", "0", "000"]
    assert table.frame["Qty"].to_list() == ["5", "1", "2"]


@pytest.mark.parametrize(
    ("header", "canonical"),
    [(" Location-ID ", "location_id"), ("LOCATION ID", "location_id"), ("Qty", "quantity"),
     ("On-Hand", "quantity"), ("Item SKU", "sku"), ("variant-id", "variant_id"),
     ("Product_ID", "product_id"), ("Warehouse Code", "location_id"), ("STOCK", "quantity")],
)
def test_header_aliases_match_case_space_and_hyphen_insensitively(
    tmp_path: Path, header: str, canonical: str
) -> None:
    cols = {"sku": "sku", "quantity": "quantity"}
    cols[canonical] = header
    ordered = list(dict.fromkeys(cols.values()))
    text = ",".join(f'"{h}"' for h in ordered) + "\n" + ",".join("1" for _ in ordered) + "\n"
    table = read_stock_file(write(tmp_path, "h.csv", text))
    assert table.mapping[canonical] == header
    assert table.headers == ordered


def test_normalise_header() -> None:
    assert normalise_header(" Location-ID ") == "location_id"
    assert normalise_header("\ufeffOn  Hand") == "on_hand"
    assert normalise_header("Stock\xa0Level") == "stock_level"


def test_mapping_uses_original_headers(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "m.csv", " Location-ID ,Item SKU,Qty,Notes\n2,A,1,x\n"))
    assert table.mapping == {"location_id": " Location-ID ", "sku": "Item SKU",
                             "quantity": "Qty"}
    assert table.headers == [" Location-ID ", "Item SKU", "Qty", "Notes"]
    assert rows(table) == [{ROW: 2, " Location-ID ": "2", "Item SKU": "A", "Qty": "1",
                            "Notes": "x"}]


def test_column_map_override_wins_over_aliases(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "Article,qty,stock\nA,1,7\n")
    # "qty" and "stock" both alias to quantity; the map resolves it and names the SKU column.
    table = read_stock_file(path, column_map={"ARTICLE": "sku", "stock": "quantity",
                                              "qty": "location_id"})
    assert table.mapping == {"sku": "Article", "location_id": "qty", "quantity": "stock"}


def test_column_map_with_unknown_target_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", "sku,qty,x\nA,1,2\n")
    with pytest.raises(UsageError, match="bogus"):
        read_stock_file(path, column_map={"x": "bogus"})


def test_missing_required_columns_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as err:
        read_stock_file(write(tmp_path, "m.csv", "Item Number,Count\nA,1\n"))
    message = str(err.value)
    assert "identifier" in message and "quantity" in message
    assert "'Item Number'" in message and "'Count'" in message
    assert err.value.path.endswith("m.csv")

    with pytest.raises(InputFileError) as err2:
        read_stock_file(write(tmp_path, "n.csv", "sku,price\nA,1\n"))
    assert "quantity" in err2.value.detail
    assert "identifier" not in err2.value.detail


def test_ambiguous_duplicate_mapping_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as err:
        read_stock_file(write(tmp_path, "d.csv", "sku,qty,Stock\nA,1,2\nB,,7\n"))
    # The candidates with sample values, and the exact --map to choose one.
    assert "2 columns could be the quantity: 'qty' ('1'), 'Stock' ('2', '7')" in err.value.detail
    assert "--map 'qty=quantity' or --map 'Stock=quantity'" in err.value.detail
    with pytest.raises(InputFileError, match="could be the sku"):
        read_stock_file(write(tmp_path, "e.csv", "sku,SKU ,qty\nA,B,1\n"))


def test_blank_lines_are_skipped_and_row_numbers_match_the_file(tmp_path: Path) -> None:
    text = "sku,qty\nA,1\n\nB,2\n,\n   \n , \nC,3\n\n\n"
    table = read_stock_file(write(tmp_path, "b.csv", text))
    assert [(r[ROW], r["sku"]) for r in rows(table)] == [(2, "A"), (4, "B"), (8, "C")]
    assert table.rows == 3
    assert table.blank_rows >= 4  # lines 3, 5, 6, 7 (trailing blanks may count too)


def test_crlf_blank_lines_keep_row_numbers(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "b.csv", "sku,qty\r\nA,1\r\n\r\n\r\nB,2\r\n"))
    assert [(r[ROW], r["sku"]) for r in rows(table)] == [(2, "A"), (5, "B")]


def test_csv_blank_lines_before_header_keep_spreadsheet_row_numbers(tmp_path: Path) -> None:
    # A spreadsheet shows the header at row 3, A at row 4 and B at row 6.
    table = read_stock_file(write(tmp_path, "lead.csv", "\n\nsku,qty\nA,1\n\nB,2\n"))
    assert [(r[ROW], r["sku"]) for r in rows(table)] == [(4, "A"), (6, "B")]


def test_csv_blank_line_before_header_does_not_break_delimiter_sniffing(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "lead.csv", "\nsku;qty\nA;1\n"))
    assert table.delimiter == ";"
    assert table.mapping == {"sku": "sku", "quantity": "qty"}


def test_quoted_field_with_embedded_newline(tmp_path: Path) -> None:
    text = 'sku,qty,note\nA,1,"two\nlines, with comma"\n"B\r\nX",2,\nC,3,"say ""hi"""\n'
    table = read_stock_file(write(tmp_path, "q.csv", text))
    assert rows(table) == [
        {ROW: 2, "sku": "A", "qty": "1", "note": "two\nlines, with comma"},
        {ROW: 3, "sku": "B\r\nX", "qty": "2", "note": None},
        {ROW: 4, "sku": "C", "qty": "3", "note": 'say "hi"'},
    ]


@pytest.mark.parametrize(("delimiter", "name"), [(";", "s.csv"), ("\t", "t.tsv"),
                                                 ("|", "p.txt"), (",", "c.csv")])
def test_delimiters_are_sniffed(tmp_path: Path, delimiter: str, name: str) -> None:
    other = "," if delimiter != "," else ";"
    text = delimiter.join(["SKU", "Qty", "Location"]) + "\n"
    text += delimiter.join([f"A{other}1", f"1{other}5", "2"]) + "\n"
    table = read_stock_file(write(tmp_path, name, text))
    assert table.delimiter == delimiter
    assert rows(table) == [{ROW: 2, "SKU": f"A{other}1", "Qty": f"1{other}5", "Location": "2"}]


def test_utf8_bom_is_removed_from_first_header(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "b.csv", b"\xef\xbb\xbfSKU,Qty\n\xc3\x841,3\n"))
    assert table.encoding == "utf-8-sig"
    assert table.headers == ["SKU", "Qty"]
    assert table.mapping == {"sku": "SKU", "quantity": "Qty"}
    assert rows(table) == [{ROW: 2, "SKU": "Ä1", "Qty": "3"}]
    assert table.notes == []


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom(tmp_path: Path, codec: str) -> None:
    text = "SKU;Qty\nÄ-001;3\n\nß2;4\n"
    data = text.encode(codec)
    if codec == "utf-16-le":
        data = b"\xff\xfe" + data
    elif codec == "utf-16-be":
        data = b"\xfe\xff" + data
    table = read_stock_file(write(tmp_path, "u.csv", data))
    assert table.encoding == "utf-16"
    assert table.delimiter == ";"
    assert [(r[ROW], r["SKU"], r["Qty"]) for r in rows(table)] == [(2, "Ä-001", "3"),
                                                                   (4, "ß2", "4")]


def test_windows_1252_fallback_is_noted(tmp_path: Path) -> None:
    data = "SKU,Qty,Name\nCAFÉ-1,3,Crème brûlée – €\n".encode("cp1252")
    table = read_stock_file(write(tmp_path, "w.csv", data))
    assert table.encoding == "windows-1252"
    assert rows(table) == [{ROW: 2, "SKU": "CAFÉ-1", "Qty": "3", "Name": "Crème brûlée – €"}]
    assert any("Windows-1252" in note for note in table.notes)


def test_sheet_option_on_csv_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        read_stock_file(write(tmp_path, "a.csv", "sku,qty\nA,1\n"), sheet="1")


def test_sha256_is_of_the_file_bytes(tmp_path: Path) -> None:
    import hashlib

    data = b"sku,qty\nA,1\n"
    table = read_stock_file(write(tmp_path, "a.csv", data))
    assert table.sha256 == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- bad files


def test_empty_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="empty"):
        read_stock_file(write(tmp_path, "e.csv", b""))
    with pytest.raises(InputFileError):
        read_stock_file(write(tmp_path, "w.csv", b"\n \r\n"))


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="cannot read"):
        read_stock_file(tmp_path / "nope.csv")


def test_xlsx_that_is_really_text_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not an Excel workbook"):
        read_stock_file(write(tmp_path, "fake.xlsx", "sku,qty\nA,1\n"))


def test_csv_that_is_really_a_zip_is_an_input_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("stock.csv", "sku,qty\nA,1\n")
    with pytest.raises(InputFileError):
        read_stock_file(write(tmp_path, "z.csv", buf.getvalue()))


def test_zip_that_is_not_a_workbook_is_an_input_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("stock.csv", "sku,qty\nA,1\n")
    with pytest.raises(InputFileError, match="workbook"):
        read_stock_file(write(tmp_path, "z.xlsx", buf.getvalue()))


def test_binary_bytes_in_a_csv_are_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="binary"):
        read_stock_file(write(tmp_path, "b.csv", b"sku,qty\x00\x01\x02\nA,1\n"))


def test_row_with_too_many_fields_is_rejected_alone(tmp_path: Path) -> None:
    table = read_stock_file(write(tmp_path, "r.csv", "sku,qty\nA,1,9,9\nB,2\n"))
    assert table.problems is not None
    assert table.problems[ROW].to_list() == [2]
    assert "4 cells but the header has 2" in table.problems["message"][0]


# --------------------------------------------------------------------------- XLSX


def make_xlsx(path: Path, sheets: dict[str, dict[tuple[int, int], object]]) -> Path:
    """Write cells ``{(row0, col0): value}`` per sheet with xlsxwriter."""
    wb = xlsxwriter.Workbook(str(path))
    for name, cells in sheets.items():
        ws = wb.add_worksheet(name)
        for (r, c), value in cells.items():
            ws.write(r, c, value)
    wb.close()
    return path


def test_xlsx_first_sheet_by_default_and_cells_as_text(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "a.xlsx", {
        "Stock": {(0, 0): "SKU", (0, 1): "Qty",
                  (1, 0): "00123", (1, 1): 12.0,
                  (2, 0): 123456789012345, (2, 1): 7,
                  (3, 0): "ABC-1", (3, 1): 12.5},
        "Other": {(0, 0): "sku", (0, 1): "qty", (1, 0): "Z", (1, 1): 1},
    })
    table = read_stock_file(path)
    assert table.format == "xlsx"
    assert table.sheet == "Stock"
    assert rows(table) == [
        {ROW: 2, "SKU": "00123", "Qty": "12"},
        {ROW: 3, "SKU": "123456789012345", "Qty": "7"},
        {ROW: 4, "SKU": "ABC-1", "Qty": "12.5"},
    ]


def test_xlsx_sheet_by_name_and_by_number(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "a.xlsx", {
        "Stock": {(0, 0): "sku", (0, 1): "qty", (1, 0): "A", (1, 1): 1},
        "Other": {(0, 0): "sku", (0, 1): "qty", (1, 0): "Z", (1, 1): 9},
    })
    by_name = read_stock_file(path, sheet="Other")
    by_number = read_stock_file(path, sheet="2")
    first = read_stock_file(path, sheet="1")
    assert by_name.sheet == by_number.sheet == "Other"
    assert rows(by_name) == rows(by_number) == [{ROW: 2, "sku": "Z", "qty": "9"}]
    assert first.sheet == "Stock"
    assert rows(first) == [{ROW: 2, "sku": "A", "qty": "1"}]


@pytest.mark.parametrize("sheet", ["Nope", "0", "3"])
def test_xlsx_unknown_sheet_is_an_error_naming_the_sheets(tmp_path: Path, sheet: str) -> None:
    path = make_xlsx(tmp_path / "a.xlsx", {
        "Stock": {(0, 0): "sku", (0, 1): "qty", (1, 0): "A", (1, 1): 1},
        "Other": {(0, 0): "sku", (0, 1): "qty", (1, 0): "Z", (1, 1): 9},
    })
    with pytest.raises(InputFileError) as err:
        read_stock_file(path, sheet=sheet)
    assert repr(sheet) in str(err.value)
    assert "'Stock'" in str(err.value) and "'Other'" in str(err.value)


def test_xlsx_empty_row_in_the_middle_keeps_excel_row_numbers(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "a.xlsx", {"S": {
        (0, 0): "sku", (0, 1): "qty",
        (1, 0): "A", (1, 1): 1,
        # Excel row 3 is empty
        (3, 0): "B", (3, 1): 2,
        (4, 0): "C", (4, 1): "3",
    }})
    table = read_stock_file(path)
    assert [(r[ROW], r["sku"], r["qty"]) for r in rows(table)] == [
        (2, "A", "1"), (4, "B", "2"), (5, "C", "3")]
    assert table.blank_rows == 1


def test_xlsx_header_at_row_3_keeps_excel_row_numbers(tmp_path: Path) -> None:
    # openpyxl this time: a second writer with a different XML layout.
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Export"
    ws["A3"], ws["B3"] = "SKU", "Qty"
    ws["A4"], ws["B4"] = "X-1", 3
    ws["A6"], ws["B6"] = "00077", 4.0
    path = tmp_path / "h.xlsx"
    wb.save(path)
    table = read_stock_file(path)
    assert table.headers == ["SKU", "Qty"]
    assert [(r[ROW], r["SKU"], r["Qty"]) for r in rows(table)] == [(4, "X-1", "3"),
                                                                   (6, "00077", "4")]


def test_xlsx_header_at_row_3_written_by_xlsxwriter(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "h.xlsx", {"S": {
        (2, 0): "sku", (2, 1): "qty", (3, 0): "A", (3, 1): 1, (5, 0): "B", (5, 1): 2}})
    table = read_stock_file(path)
    assert [(r[ROW], r["sku"]) for r in rows(table)] == [(4, "A"), (6, "B")]


def test_xlsx_second_sheet_header_offset_uses_that_sheet(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "h.xlsx", {
        "First": {(0, 0): "sku", (0, 1): "qty", (1, 0): "A", (1, 1): 1},
        "Second": {(4, 0): "sku", (4, 1): "qty", (5, 0): "B", (5, 1): 2},
    })
    table = read_stock_file(path, sheet="Second")
    assert rows(table) == [{ROW: 6, "sku": "B", "qty": "2"}]


def test_xlsx_headers_are_mapped_like_csv(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "h.xlsx", {"S": {
        (0, 0): " Location-ID ", (0, 1): "Variant ID", (0, 2): "On Hand",
        (1, 0): 2, (1, 1): 77, (1, 2): 0}})
    table = read_stock_file(path)
    assert table.mapping == {"location_id": " Location-ID ", "variant_id": "Variant ID",
                             "quantity": "On Hand"}
    assert rows(table) == [{ROW: 2, " Location-ID ": "2", "Variant ID": "77", "On Hand": "0"}]


def test_xlsx_empty_sheet_is_an_input_error(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "e.xlsx", {"Empty": {}})
    with pytest.raises(InputFileError):
        read_stock_file(path)


def test_xlsx_named_csv_is_an_input_error(tmp_path: Path) -> None:
    path = make_xlsx(tmp_path / "a.xlsx", {"S": {(0, 0): "sku", (0, 1): "qty"}})
    renamed = tmp_path / "a.csv"
    renamed.write_bytes(path.read_bytes())
    with pytest.raises(InputFileError, match="xlsx"):
        read_stock_file(renamed)


# --------------------------------------------------------------------------- untrusted input


def test_csv_header_columns_are_counted_on_the_parsed_record(tmp_path: Path) -> None:
    # A quoted newline in the first cell hid the rest of the header from a first-line count.
    header = '"sku\n",qty,' + ",".join(f"c{i}" for i in range(1_000))
    with pytest.raises(InputFileError, match="more than 1,000 columns"):
        read_stock_file(write(tmp_path, "wide.csv", header + "\nA,1\n"))
    # Delimiters inside quotes are no columns; a header of exactly 1,000 columns is fine.
    ok = 'sku,qty,"note\n,,,",' + ",".join(f"c{i}" for i in range(997))
    table = read_stock_file(write(tmp_path, "ok.csv", ok + "\nA,1\n"))
    assert len(table.headers) == 1_000


def _sst_workbook(tmp_path: Path, strings: list[str], refs: list[int]) -> Path:
    from test_resilience import _SHEET_HEAD, write_workbook

    def sheet(fh) -> None:
        fh.write(_SHEET_HEAD + b'sku</t></is></c><c r="B1" t="inlineStr"><is><t>quantity'
                 b"</t></is></c></row>")
        for r, idx in enumerate(refs, start=2):
            fh.write(b'<row r="%d"><c r="A%d" t="s"><v>%d</v></c><c r="B%d"><v>1</v></c></row>'
                     % (r, r, idx, r))
        fh.write(b"</sheetData></worksheet>")

    sst = ('<?xml version="1.0" encoding="UTF-8"?><sst xmlns="http://schemas.openxmlformats.'
           'org/spreadsheetml/2006/main">' + "".join(f"<si><t>{s}</t></si>" for s in strings)
           + "</sst>").encode()
    return write_workbook(tmp_path / "sst.xlsx", sheet, {"xl/sharedStrings.xml": sst})


def test_shared_strings_count_once_for_every_cell_that_uses_them(tmp_path: Path) -> None:
    path = _sst_workbook(tmp_path, ["S" * 9_999], [0] * 7_000)  # 70 M characters
    with pytest.raises(InputFileError, match="expand to more than 67,108,864 characters"):
        read_stock_file(path)


def test_one_long_shared_string_among_many_short_ones_is_read(tmp_path: Path) -> None:
    # The quick bound (every cell the longest string) fails; the exact count is ~40,000.
    path = _sst_workbook(tmp_path, ["L" * 9_999, "A-1"], [0] + [1] * 30_000)
    table = read_stock_file(path)
    assert table.rows == 30_001
    assert table.frame["sku"][0] == "L" * 9_999


@pytest.mark.parametrize("trick", ["<![CDATA[<si>]]>", "<!-- <si> -->", "<?pi <si>?>"])
def test_shared_string_bound_falls_back_to_parsing_when_text_could_hide_tags(
        tmp_path: Path, trick: str) -> None:
    from invsync.stages.ingest.xlsx import _longest_shared_string

    path = _sst_workbook(tmp_path, ["A" * 50 + trick + "B" * 50], [0])
    with zipfile.ZipFile(path) as zf:
        assert _longest_shared_string(zf) is None
    plain = _sst_workbook(tmp_path, ["A" * 50, "B"], [0])
    with zipfile.ZipFile(plain) as zf:
        assert 50 < (_longest_shared_string(zf) or 0) < 80


def test_numeric_cells_found_with_prefixed_elements_and_shared_types(tmp_path: Path) -> None:
    from test_resilience import _PARTS

    from invsync.stages.ingest import numeric_cells

    sheet = (b'<?xml version="1.0"?><x:worksheet xmlns:x="http://schemas.openxmlformats.org/'
             b'spreadsheetml/2006/main"><x:sheetData><x:row r="1"><x:c r="B1" t="inlineStr">'
             b'<x:is><x:t>sku</x:t></x:is></x:c></x:row><x:row r="2"><x:c r="B2"><x:v>123</x:v>'
             b'</x:c></x:row><x:row r="3"><x:c r="B3" t="s"><x:v>0</x:v></x:c></x:row>'
             b'<x:row r="4"><x:c r="B4" t="n"><x:v>7</x:v></x:c><x:c r="C4"><x:v>1</x:v></x:c>'
             b"</x:row></x:sheetData></x:worksheet>")
    path = tmp_path / "prefixed.xlsx"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in _PARTS.items():
            zf.writestr(name, data)
        zf.writestr("xl/worksheets/sheet1.xml", sheet)
    assert numeric_cells(path, 0, {0: "sku"}, {2, 3, 4}) == {"sku": [2, 4]}


def test_the_formula_and_number_scans_share_one_walk_of_the_sheet(tmp_path: Path) -> None:
    """Both scans find cells by their position in the used range (here from column B), with
    prefixed element names; formulas count only when never calculated (or all are, on load)."""
    from test_resilience import _PARTS

    from invsync.stages.ingest import numeric_cells, uncalculated_formulas

    sheet = (b'<?xml version="1.0"?><x:worksheet xmlns:x="http://schemas.openxmlformats.org/'
             b'spreadsheetml/2006/main"><x:sheetData><x:row r="1"><x:c r="B1" t="inlineStr">'
             b'<x:is><x:t>sku</x:t></x:is></x:c><x:c r="C1" t="inlineStr"><x:is><x:t>qty</x:t>'
             b'</x:is></x:c></x:row>'
             b'<x:row r="2"><x:c r="B2"><x:v>123</x:v></x:c><x:c r="C2"><x:f>1+1</x:f>'
             b'<x:v>2</x:v></x:c></x:row>'
             b'<x:row r="3"><x:c r="B3" t="s"><x:v>0</x:v></x:c><x:c r="C3"><x:f>B2</x:f>'
             b'</x:c></x:row>'
             b'<x:row r="4"><x:c r="B4" t="n"><x:v>7</x:v></x:c><x:c r="C4"><x:v>1</x:v></x:c>'
             b'<x:c><x:f>no reference</x:f></x:c></x:row></x:sheetData></x:worksheet>')

    def book(name: str, full_calc: bool) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            for part, data in _PARTS.items():
                if part == "xl/workbook.xml" and full_calc:
                    data = data.replace(b"</workbook>", b'<calcPr fullCalcOnLoad="1"/></workbook>')
                zf.writestr(part, data)
            zf.writestr("xl/worksheets/sheet1.xml", sheet)
        return path

    columns = {0: "sku", 1: "qty"}
    plain = book("plain.xlsx", full_calc=False)
    assert numeric_cells(plain, 0, columns, {2, 3, 4}) == {"sku": [2, 4], "qty": [2, 4]}
    assert numeric_cells(plain, 0, columns, {3}) == {}
    assert uncalculated_formulas(plain, 0, columns) == {"qty": [3]}
    assert uncalculated_formulas(book("full.xlsx", full_calc=True), 0, columns) == {
        "qty": [2, 3]}
    # A damaged part finds nothing (reading the file properly says what is wrong).
    broken = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(broken, "w") as zf:
        for item in src.infolist():
            data = src.read(item)
            zf.writestr(item, data[:-40] if item.filename.endswith("sheet1.xml") else data)
    assert numeric_cells(broken, 0, columns, {2, 3, 4}) == {}
    assert uncalculated_formulas(broken, 0, columns) == {}


def test_a_sheet_without_formulas_skips_the_per_cell_formula_scan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The formula check is a byte search first: a sheet with no ``<f>`` is not parsed cell
    by cell (a 100,000-row export took 8 s in that parse); one with a formula still is,
    whatever its namespace prefix, and so is a sheet not in UTF-8 (the search cannot tell)."""
    from invsync.stages import ingest

    calls: list[int] = []
    real = ingest.xlsx._cells_where

    def counted(*args: Any, **kwargs: Any) -> dict[str, list[int]]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest.xlsx, "_cells_where", counted)
    plain = make_xlsx(tmp_path / "plain.xlsx", {"Stock": {
        (1, 1): "sku", (1, 2): "quantity", (2, 1): "A-1", (2, 2): 5, (3, 1): "f-2", (3, 2): 7}})
    assert ingest.uncalculated_formulas(plain, 0, {0: "sku", 1: "quantity"}) == {}
    assert calls == []

    def sheet_book(name: str, sheet: bytes) -> Path:
        from test_resilience import _PARTS

        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as zf:
            for part, data in _PARTS.items():
                zf.writestr(part, data)
            zf.writestr("xl/worksheets/sheet1.xml", sheet)
        return path

    body = ('<x:worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
            '<x:sheetData><x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>q</x:t></x:is>'
            '</x:c></x:row><x:row r="2"><x:c r="A2"><x:f\n>1+1</x:f></x:c></x:row>'
            '</x:sheetData></x:worksheet>')
    prefixed = sheet_book("prefixed.xlsx", body.encode())
    assert ingest.uncalculated_formulas(prefixed, 0, {0: "q"}) == {"q": [2]}
    utf16 = sheet_book("utf16.xlsx", ('<?xml version="1.0" encoding="UTF-16"?>' + body)
                       .encode("utf-16"))
    calls.clear()
    ingest.uncalculated_formulas(utf16, 0, {0: "q"})
    assert calls == [1]


@pytest.mark.parametrize("seed", range(6))
def test_the_cells_measured_as_read_reject_the_same_rows_as_measuring_again(seed: int) -> None:
    # A CSV's longest cell is measured once as it is read; the used columns' long-cell check
    # trusts that bound. Seeded files with cells around the limit (in used and unused
    # columns, multi-byte letters, blank rows, a Shopify export's two level columns) must
    # give the same table and rejections as measuring the used cells again.
    import random
    from dataclasses import replace

    from invsync.stages.ingest import MAX_CELL_CHARS, read_stock_bytes
    from invsync.stages.ingest.columns import _check_used_cells, _map_columns
    from invsync.stages.ingest.text import _read_csv

    rng = random.Random(seed)

    def cell() -> str:
        size = rng.choice([1, 5, MAX_CELL_CHARS - 1, MAX_CELL_CHARS, MAX_CELL_CHARS + 1])
        return rng.choice("aé") * (size // 2 if rng.random() < 0.2 else size)

    header = rng.choice([["sku", "qty", "note"],
                         ["Handle", "SKU", "Location", "On hand (current)", "On hand (new)"]])
    lines = [",".join(header)]
    for _ in range(rng.randrange(1, 12)):
        lines.append("," * (len(header) - 1) if rng.random() < 0.1
                     else ",".join(cell() if rng.random() < 0.3 else str(rng.randrange(9))
                                   for _ in header))
    data = ("\n".join(lines) + "\n").encode()
    fast = read_stock_bytes(data)
    plain = _check_used_cells(replace(_map_columns(
        _read_csv(Path("stock.csv"), data, ""), {}), longest_cell=None))
    assert fast.frame.equals(plain.frame)
    assert (fast.problems is None) == (plain.problems is None)
    if fast.problems is not None and plain.problems is not None:
        assert fast.problems.equals(plain.problems)
