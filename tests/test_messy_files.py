"""The "ugly real-world files" corpus: every file is generated here, run through the real CLI.

Each test writes one messy file into ``tmp_path`` (generating it keeps the mess readable:
a binary fixture would hide what is odd about it), runs ``python -m invsync sync FILE``
against a real sandbox process, and then checks exactly

* which items the store received, with which values (the sandbox's PUT log and levels);
* which rows were rejected, with which reason, column and cell text (``report.json``),
  and what ``rejected.csv`` / ``rejected.xlsx`` hold.

Row numbers are always the ones a person sees in a spreadsheet program (header = row 1).
The sandbox's locations: 1 ``BC-LOCATION-1`` and 2 ``WH-EAST`` (enabled), 3 ``OLD-SHOP``
(disabled). SKUs come from ``sample_data/catalog.csv``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlsxwriter
from conftest import SAMPLE, TOKEN, CliResult, budget, output, run_invsync, stocked
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from invsync.rules.stock import REASONS
from invsync.sandbox.process import SandboxProcess, run_sandbox

MAX_QUANTITY = 2_147_483_647
Level = tuple[int, str]


# ---- small tools ------------------------------------------------------------------------------


class Formula:
    """An XLSX formula cell with the cached value a spreadsheet program stored for it."""

    def __init__(self, formula: str, value: object) -> None:
        self.formula, self.value = formula, value


class Merged:
    """A merged cell: ``value`` in the top-left, spanning ``rows`` rows down."""

    def __init__(self, value: object, rows: int) -> None:
        self.value, self.rows = value, rows


def write_xlsx(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    """Write a workbook with xlsxwriter. ``None`` leaves a cell empty; ``str`` is a text cell
    (even ``00123`` or ``=HYPERLINK(...)``), ``int``/``float`` a number cell, a ``date``/
    ``datetime`` a date cell, :class:`Formula` a formula with its cached value."""
    wb = xlsxwriter.Workbook(str(path))
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    stamp_fmt = wb.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    for name, rows in sheets.items():
        ws = wb.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is None:
                    continue
                if isinstance(value, Merged):
                    ws.merge_range(r, c, r + value.rows - 1, c, value.value)
                elif isinstance(value, Formula):
                    ws.write_formula(r, c, value.formula, None, value.value)
                elif isinstance(value, dt.datetime):
                    ws.write_datetime(r, c, value, stamp_fmt if value.hour else date_fmt)
                elif isinstance(value, dt.date):
                    ws.write_datetime(r, c, dt.datetime.combine(value, dt.time()), date_fmt)
                elif isinstance(value, str):
                    ws.write_string(r, c, value)
                else:
                    ws.write_number(r, c, value)
    wb.close()
    return path


def csv_text(rows: Iterable[list[str]], delimiter: str = ",", newline: str = "\r\n") -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator=newline).writerows(rows)
    return buf.getvalue()


def sync(path: Path, env: dict[str, str], *args: str, rc: int | None = None) -> CliResult:
    """``invsync sync PATH ARGS``; check the exit code when ``rc`` is given."""
    result = run_invsync(["sync", str(path), *args], env)
    if rc is not None:
        assert result.returncode == rc, (result.returncode, result.stdout, result.stderr)
    return result


def put_requests(sb: SandboxProcess) -> list[dict[str, Any]]:
    return [r for r in sb.requests() if r["method"] == "PUT"]


def accepted(sb: SandboxProcess) -> dict[Level, int]:
    """Items of every PUT the store accepted; each (location, sku) must be sent once only."""
    items = [it for r in put_requests(sb) if r["status"] == 200 for it in r["items"]]
    for it in items:
        assert set(it) == {"location_id", "sku", "quantity"}, it
        assert isinstance(it["quantity"], int) and 0 <= it["quantity"] <= MAX_QUANTITY, it
    keys = [(it["location_id"], it["sku"]) for it in items]
    assert len(keys) == len(set(keys)), f"an item was sent twice: {sorted(keys)}"
    return {(it["location_id"], it["sku"]): it["quantity"] for it in items}


def assert_sent_exactly(sb: SandboxProcess, expected: dict[Level, int], *,
                        refused_allowed: bool = False) -> None:
    """The store accepted exactly ``expected`` and holds exactly those levels."""
    if not refused_allowed:
        assert [r["status"] for r in put_requests(sb)] == [200] * len(put_requests(sb))
    assert accepted(sb) == expected
    assert sb.levels() == expected


def rejected(report: dict[str, Any]) -> dict[int, tuple[str, str, str | None]]:
    """row -> (reason, column, value) of ``report.json``'s rejected rows."""
    rows = [r["row"] for r in report["rejected"]]
    assert len(rows) == len(set(rows)), rows
    return {r["row"]: (r["reason"], r["column"], r["value"]) for r in report["rejected"]}


def messages(report: dict[str, Any]) -> dict[int, str]:
    return {r["row"]: r["message"] for r in report["rejected"]}


def rejected_csv(result: CliResult) -> tuple[list[str], list[dict[str, str]]]:
    # rejected.csv comes back in the input's delimiter.
    delimiter = result.report()["input"].get("delimiter") or ","
    with (result.report_dir() / "rejected.csv").open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        rows = list(reader)
    return list(reader.fieldnames or []), rows


def plan_rows(result: CliResult) -> dict[tuple[int, str], int]:
    """(location_id, item) -> file row of every item in plan.csv."""
    with (result.report_dir() / "plan.csv").open(newline="", encoding="utf-8") as fh:
        return {(int(r["location_id"]), r["item"]): int(r["row"]) for r in csv.DictReader(fh)}


def assert_counts_add_up(c: dict[str, int]) -> None:
    assert c["rows"] == c["valid"] + c["invalid"], c
    assert c["valid"] - c["merged"] == c["unchanged"] + c["changed"], c
    assert c["changed"] + c["zeroed_missing"] == c["submitted"] + c["not_sent"], c
    assert c["submitted"] == c["accepted"] + c["refused"] + c["unconfirmed"], c
    assert c["rejected"] == c["invalid"] + c["refused"], c


RISKY_START = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:[.,]\d+)?")


def spreadsheet_escaped(text: str) -> str:
    """What a safe CSV writer must store for ``text``: a spreadsheet would evaluate text
    starting with = + - @ tab or CR, also after spaces, NBSP, U+3000 or a BOM (plain
    numbers aside), so it gets a leading '."""
    bare = text.lstrip(" \u00a0\u3000\ufeff")
    if bare.startswith(RISKY_START) and not PLAIN_NUMBER.fullmatch(bare.rstrip(
            " \u00a0\u3000\ufeff")):
        return "'" + text
    return text


# ---- 1-4. encodings, delimiters, BOMs, multi-line cells ---------------------------------------


def test_semicolon_windows_1252_with_accents(sandbox: SandboxProcess, cli_env: dict[str, str],
                                            tmp_path: Path) -> None:
    # A German Excel "CSV (Trennzeichen-getrennt)" export: cp1252, ';', CRLF, decimal comma.
    # Excel writes an empty row as ";;".
    text = csv_text([
        ["sku", "quantity", "description"],
        ["MUG-4916", "12", 'Tasse "Café"; spülmaschinenfest'],   # row 2
        ["LAMP-9823", "7", "Lampe grün, 5 €"],                    # row 3
        ["", "", ""],                                             # row 4: blank
        ["POSTER-1755", "3,5", "Poster — Größe A2"],              # row 5
        ["00123", "0", "Crème brûlée"],                           # row 6
    ], delimiter=";")
    assert ";;\r\n" in text
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(UnicodeDecodeError):
        path.read_bytes().decode("utf-8")

    result = sync(path, cli_env, rc=1)
    report = result.report()

    # Row 6's 0 is what the store already holds (plans are made against its live levels):
    # not sent.
    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 12, (1, "LAMP-9823"): 7})
    assert report["counts"]["unchanged"] == 1
    assert report["input"]["encoding"] == "windows-1252"
    assert report["input"]["delimiter"] == ";"
    assert any("Windows-1252" in n for n in report["notes"]), report["notes"]
    assert rejected(report) == {5: ("quantity_not_whole", "quantity", "3,5")}
    assert (report["counts"]["rows"], report["counts"]["blank"]) == (4, 1)
    # rejected.csv is UTF-8 and carries the accents and the quoted ';' intact, with ';'
    # between the fields as the input had.
    assert (result.report_dir() / "rejected.csv").read_bytes().startswith(
        "\ufeffsku;quantity;description;row;reason;message\n".encode())
    header, rows = rejected_csv(result)
    assert header == ["sku", "quantity", "description", "row", "reason", "message"]
    assert rows == [{"sku": "POSTER-1755", "quantity": "3,5", "description": "Poster — Größe A2",
                     "row": "5", "reason": "quantity_not_whole",
                     "message": "the quantity '3,5' is not a whole number — write a whole "
                                "number: 3 or 4"}]
    assert_counts_add_up(report["counts"])


@pytest.mark.parametrize(("codec", "bom", "delimiter"), [
    ("utf-16-le", b"\xff\xfe", "\t"),   # Excel's "Unicode Text" export
    ("utf-16-be", b"\xfe\xff", ","),
], ids=["le-tab", "be-comma"])
def test_utf16_with_bom(sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
                        codec: str, bom: bytes, delimiter: str) -> None:
    text = csv_text([
        ["SKU", "Quantity", "Name"],
        ["MUG-4916", "5", "Becher ☕ 日本"],
        ["NB-8084", "x", "Notizbuch ü 🎁"],          # astral char: a surrogate pair in UTF-16
        ["004711", "8", "Kölnisch Wasser"],
    ], delimiter=delimiter)
    path = tmp_path / "unicode.txt"
    path.write_bytes(bom + text.encode(codec))

    result = sync(path, cli_env, rc=1)
    report = result.report()

    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 5, (1, "004711"): 8})
    assert report["input"]["encoding"] == "utf-16"
    assert report["input"]["delimiter"] == delimiter
    assert report["input"]["columns"] == {"sku": "SKU", "quantity": "Quantity"}
    assert rejected(report) == {3: ("quantity_not_whole", "Quantity", "x")}
    header, rows = rejected_csv(result)
    assert header[:3] == ["SKU", "Quantity", "Name"]
    assert [(r["SKU"], r["Name"], r["row"]) for r in rows] == [("NB-8084", "Notizbuch ü 🎁", "3")]


def test_utf8_with_bom(sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text([
        ["SKU", "Qty"], ["00123", "30"], ["GAME-8992", ""], ["POSTER-5823", "4"],
    ]).encode("utf-8"))

    result = sync(path, cli_env, rc=1)
    report = result.report()

    # The BOM is not part of the first header (else "SKU" would not be recognised at all).
    assert report["input"]["encoding"] == "utf-8-sig"
    assert report["input"]["columns"] == {"sku": "SKU", "quantity": "Qty"}
    assert_sent_exactly(sandbox, {(1, "00123"): 30, (1, "POSTER-5823"): 4})
    assert rejected(report) == {3: ("missing_quantity", "Qty", None)}
    header, rows = rejected_csv(result)
    assert header == ["SKU", "Qty", "row", "reason", "message"]
    # UTF-8 with a BOM, as the input was: a spreadsheet program reads it right.
    assert (result.report_dir() / "rejected.csv").read_bytes()[:6] == b"\xef\xbb\xbfSKU"
    assert rows == [{"SKU": "GAME-8992", "Qty": "", "row": "3", "reason": "missing_quantity",
                     "message": REASONS["missing_quantity"].message}]


def test_quoted_fields_with_embedded_newlines_keep_spreadsheet_row_numbers(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # Excel writes CRLF between records and a bare LF inside a cell.
    rows = [
        ["sku", "quantity", "description"],
        ["MUG-4916", "5", "Line one\nline two"],                            # row 2
        ["LAMP-9823", "6", 'A "quoted" word,\nwith comma\nand three lines'],  # row 3
        ["POSTER-1755", "-1", "plain"],                                     # row 4 (line 7)
        ["NB-8084", "", "x\ny"],                                            # row 5 (line 8)
        ["GAME-8992", "9", "last"],                                         # row 6 (line 10)
    ]
    path = tmp_path / "multiline.csv"
    path.write_text(csv_text(rows), encoding="utf-8", newline="")
    assert path.read_bytes().count(b"\n") == 10

    result = sync(path, cli_env, rc=1)
    report = result.report()

    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 5, (1, "LAMP-9823"): 6, (1, "GAME-8992"): 9})
    assert rejected(report) == {4: ("quantity_negative", "quantity", "-1"),
                                5: ("missing_quantity", "quantity", None)}
    assert plan_rows(result) == {(1, "MUG-4916"): 2, (1, "LAMP-9823"): 3, (1, "GAME-8992"): 6}
    _, rej = rejected_csv(result)
    assert [(r["row"], r["sku"], r["quantity"], r["description"]) for r in rej] == [
        ("4", "POSTER-1755", "-1", "plain"), ("5", "NB-8084", "", "x\ny")]
    assert report["counts"]["rows"] == 5


# ---- 5. bin-level duplicates ---------------------------------------------------------------


BINS = [
    ["sku", "location_id", "bin", "quantity"],
    ["MUG-4916", "1", "A-01", "5"],              # row 2
    ["LAMP-9823", "1", "A-02", "1"],             # row 3
    ["MUG-4916", "1", "B-07", "7"],              # row 4: same item + location as row 2
    ["MUG-4916", "2", "A-01", "9"],              # row 5: other location, not a duplicate
    [" MUG-4916 ", "BC-LOCATION-1", "C-03", "3"],  # row 6: same as row 2 once trimmed/resolved
    ["MUG-4916", "1", "D-01", "n/a"],            # row 7: same item, bad quantity
]


@pytest.mark.parametrize(("flags", "mug_at_1"), [
    ((), None), (("--duplicates", "sum"), 5 + 7 + 3), (("--duplicates", "last"), 3),
], ids=["reject", "sum", "last"])
def test_bin_level_duplicates(sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path,
                              flags: tuple[str, ...], mug_at_1: int | None) -> None:
    path = tmp_path / "bins.csv"
    path.write_text(csv_text(BINS), encoding="utf-8")

    result = sync(path, cli_env, *flags, rc=1)
    report = result.report()

    expected = {(1, "LAMP-9823"): 1, (2, "MUG-4916"): 9}
    bad_qty = {7: ("quantity_not_whole", "quantity", "n/a")}
    if mug_at_1 is None:
        assert_sent_exactly(sandbox, expected)
        dup = ("duplicate_item", "sku", "MUG-4916")
        assert rejected(report) == {2: dup, 4: dup, 6: dup, **bad_qty}
        for row in (2, 4, 6):
            assert messages(report)[row] == (
                "rows 2, 4, 6 and 7 are the same item at the same location — keep one, or sum "
                "them with `--duplicates sum`")
        assert report["counts"]["merged"] == 0
    else:
        assert_sent_exactly(sandbox, {**expected, (1, "MUG-4916"): mug_at_1})
        assert rejected(report) == bad_qty
        assert report["counts"]["merged"] == 2
        # The merged item is reported under its first row.
        assert plan_rows(result)[(1, "MUG-4916")] == 2
    assert report["options"]["duplicates"] == (flags[1] if flags else "reject")
    assert_counts_add_up(report["counts"])


# ---- 6. renamed headers, location codes, --map, [columns] ---------------------------------------


def test_renamed_headers_and_location_codes(sandbox: SandboxProcess, cli_env: dict[str, str],
                                            tmp_path: Path) -> None:
    path = tmp_path / "warehouse.csv"
    path.write_text(csv_text([
        ["Item SKU", "On Hand", "Warehouse"],
        ["MUG-4916", "5", "WH-EAST"],            # row 2 -> location 2
        ["LAMP-9823", "6", "BC-LOCATION-1"],     # row 3 -> location 1
        ["POSTER-1755", "7", "2"],               # row 4: an id still works
        ["NB-8084", "8", ""],                    # row 5: default location 1
        ["GAME-8992", "9", "WH-WEST"],           # row 6: no such location
        ["MUG-0848", "3", "OLD-SHOP"],           # row 7: disabled location, by code
        ["CAP-681-BLUE", "4", "3"],              # row 8: disabled location, by id
        ["CAP-681-WHITE", "2", "99"],            # row 9: no such location id
    ]), encoding="utf-8")

    result = sync(path, cli_env, rc=1)
    report = result.report()

    assert report["input"]["columns"] == {"sku": "Item SKU", "quantity": "On Hand",
                                          "location_id": "Warehouse"}
    # Unknown and disabled locations never reach the store: no 422, nothing at location 3.
    assert_sent_exactly(sandbox, {(2, "MUG-4916"): 5, (1, "LAMP-9823"): 6,
                                  (2, "POSTER-1755"): 7, (1, "NB-8084"): 8})
    assert {it["location_id"] for r in put_requests(sandbox) for it in r["items"]} == {1, 2}
    assert rejected(report) == {
        6: ("unknown_location", "Warehouse", "WH-WEST"),
        7: ("disabled_location", "Warehouse", "OLD-SHOP"),
        8: ("disabled_location", "Warehouse", "3"),
        9: ("unknown_location", "Warehouse", "99"),
    }
    assert report["counts"]["refused"] == 0
    # Two items planned at location 2 (read at 0 from the store: new or changed, by baseline).
    at_2 = report["by_location"]["2"]
    assert (at_2["new"] + at_2["changed"], at_2["unchanged"]) == (2, 0)


def test_map_flag_for_unknown_headers(sandbox: SandboxProcess, cli_env: dict[str, str],
                                      tmp_path: Path) -> None:
    path = tmp_path / "erp.csv"
    path.write_text(csv_text([
        ["Artikelnummer", "Menge", "Lagerort"],
        ["SHEET-787-BLUE-DBL", "11", "WH-EAST"],
        ["SHEET-787-PINK-DBL", "zwölf", "WH-EAST"],
        ["SHEET-787-YELLOW-DBL", "13", ""],
    ], delimiter=";"), encoding="utf-8")

    result = sync(path, cli_env, "--map", "Artikelnummer=sku", "--map", " menge =quantity",
                  "--map", "Lagerort=location_id", rc=1)
    report = result.report()

    assert report["input"]["columns"] == {"sku": "Artikelnummer", "quantity": "Menge",
                                          "location_id": "Lagerort"}
    assert report["options"]["column_map"] == {"Artikelnummer": "sku", "menge": "quantity",
                                               "Lagerort": "location_id"}
    assert_sent_exactly(sandbox, {(2, "SHEET-787-BLUE-DBL"): 11, (1, "SHEET-787-YELLOW-DBL"): 13})
    assert rejected(report) == {3: ("quantity_not_whole", "Menge", "zwölf")}


def test_map_flag_wins_over_an_alias_of_another_column(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # A supplier file: "SKU" is the supplier's own code, "Artikelnummer" is the shop's SKU.
    # --map says which one is meant; the alias of the other header must then step aside
    # (ingest: "column_map ... wins over the aliases"). There is no other way to say it:
    # a header can only be mapped onto a canonical column, never ignored.
    path = tmp_path / "supplier.csv"
    path.write_text(csv_text([
        ["SKU", "Artikelnummer", "Bestand"],
        ["SUP-0001", "MUG-4916", "4"],
        ["SUP-0002", "LAMP-9823", "2"],
    ]), encoding="utf-8")

    result = sync(path, cli_env, "--map", "Artikelnummer=sku", "--map", "Bestand=quantity")

    assert result.returncode == 0, output(result)
    assert result.report()["input"]["columns"] == {"sku": "Artikelnummer", "quantity": "Bestand"}
    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 4, (1, "LAMP-9823"): 2})


def test_columns_section_of_the_config_file(sandbox: SandboxProcess, cli_env: dict[str, str],
                                            tmp_path: Path) -> None:
    config = tmp_path / "invsync.toml"
    config.write_text('[columns]\n"Art.-Nr." = "sku"\n"Verfügbar" = "quantity"\n'
                      '"Lager" = "location_id"\n', encoding="utf-8")
    path = tmp_path / "lager.csv"
    path.write_text(csv_text([
        ["Art.-Nr.", "Bezeichnung", "Verfügbar", "Lager"],
        ["JACKET-689-BLACK-L", "Jacke", "2", "WH-EAST"],
        ["JACKET-689-BURG-XS", "Jacke", "", "1"],
        ["JEANS-985-INDIGO-30", "Jeans", "14", "1"],
    ], delimiter=";"), encoding="utf-8")

    result = sync(path, cli_env, "--config", str(config), rc=1)
    report = result.report()

    assert report["input"]["columns"] == {"sku": "Art.-Nr.", "quantity": "Verfügbar",
                                          "location_id": "Lager"}
    assert_sent_exactly(sandbox, {(2, "JACKET-689-BLACK-L"): 2, (1, "JEANS-985-INDIGO-30"): 14})
    assert rejected(report) == {3: ("missing_quantity", "Verfügbar", None)}
    _, rows = rejected_csv(result)
    assert [(r["Art.-Nr."], r["Bezeichnung"], r["row"]) for r in rows] == [
        ("JACKET-689-BURG-XS", "Jacke", "3")]


# ---- 7. leading zeros ----------------------------------------------------------------------


def test_leading_zero_skus_in_csv_stay_text(sandbox: SandboxProcess, cli_env: dict[str, str],
                                            tmp_path: Path) -> None:
    path = tmp_path / "zeros.csv"
    path.write_text(csv_text([
        ["sku", "quantity"], ["00123", "30"], ["004711", "5"], ["07734", "2"],
        ["009293708747", "1"], ["5057140603160", "6"],
    ]), encoding="utf-8")

    result = sync(path, cli_env, rc=0)

    assert_sent_exactly(sandbox, {(1, "00123"): 30, (1, "004711"): 5, (1, "07734"): 2,
                                  (1, "009293708747"): 1, (1, "5057140603160"): 6})
    assert (1, "123") not in sandbox.levels()
    assert not any("stored as numbers" in n for n in result.report()["notes"])


def test_leading_zero_skus_in_xlsx_text_and_number_cells(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "zeros.xlsx", {"Stock": [
        ["SKU", "Quantity"],
        ["00123", 30],        # row 2: a text cell keeps its zeros
        [123, 7],             # row 3: a number cell: SKU 123 (a different product)
        [4711, 5],            # row 4: Excel dropped the zeros of 004711: the store refuses it
        ["004711", 6],        # row 5: text cell
        ["MUG-4916", 1],      # row 6
    ]})

    result = sync(path, cli_env, rc=1)
    report = result.report()

    assert_sent_exactly(sandbox, {(1, "00123"): 30, (1, "123"): 7, (1, "004711"): 6,
                                  (1, "MUG-4916"): 1}, refused_allowed=True)
    assert rejected(report) == {4: ("refused_by_store", "SKU", "4711")}
    notes = [n for n in report["notes"] if "stored as numbers" in n]
    assert len(notes) == 1, report["notes"]
    assert "'SKU'" in notes[0] and "rows 3, 4)" in notes[0] and "leading zeros" in notes[0]
    assert report["counts"]["refused"] == 1


# ---- 8. formulas ---------------------------------------------------------------------------


def saved_by_excel(path: Path) -> Path:
    """Drop xlsxwriter's ``fullCalcOnLoad`` flag, as Excel does when it saves the workbook
    (its cached values are then the ones Excel calculated)."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        parts = {name: zf.read(name) for name in zf.namelist()}
    assert b'fullCalcOnLoad="1"' in parts["xl/workbook.xml"]
    parts["xl/workbook.xml"] = parts["xl/workbook.xml"].replace(b' fullCalcOnLoad="1"', b"")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return path


def test_formula_cells_use_their_cached_values(sandbox: SandboxProcess, cli_env: dict[str, str],
                                               tmp_path: Path) -> None:
    path = saved_by_excel(write_xlsx(tmp_path / "formulas.xlsx", {"Stock": [
        ["SKU", "Quantity"],
        ["MUG-4916", Formula("=2+3", 5)],                            # row 2
        [Formula('=UPPER("lamp-9823")', "LAMP-9823"), 4],            # row 3: a text formula
        ["POSTER-1755", Formula("=B2*3", 15)],                       # row 4: references
        ["NB-8084", Formula("=1/0", "#DIV/0!")],                     # row 5: an error
        ["GAME-8992", Formula('=IF(1>0,"n/a",0)', "n/a")],            # row 6: text result
        ["MUG-0848", Formula("=SUM(B2:B4)", 24)],                     # row 7
    ]}))

    result = sync(path, cli_env, rc=1)
    report = result.report()

    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 5, (1, "LAMP-9823"): 4, (1, "POSTER-1755"): 15,
                                  (1, "MUG-0848"): 24})
    # An error cell is never sent (certainly never as 0): it is its own reason.
    assert rejected(report) == {5: ("error_cell", "Quantity", "#DIV/0!"),
                                6: ("quantity_not_whole", "Quantity", "n/a")}


def test_formula_without_a_cached_value_is_never_sent_as_zero(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # openpyxl writes formulas without results: a file generated by a script and never
    # opened in Excel. Its formula cells have no value to use.
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Stock"
    ws.append(["SKU", "Quantity"])
    ws.append(["MUG-4916", "=2+3"])
    ws.append(["LAMP-9823", 3])
    path = tmp_path / "uncached.xlsx"
    wb.save(path)

    result = sync(path, cli_env, rc=1)

    assert_sent_exactly(sandbox, {(1, "LAMP-9823"): 3})
    assert rejected(result.report()) == {2: ("formula_not_calculated", "Quantity", None)}
    assert "open and save the file in Excel first" in result.report()["rejected"][0]["message"]


def test_formulas_of_a_workbook_flagged_for_recalculation_are_rejected(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # xlsxwriter cannot calculate: it stores 0 for =B2*2 and flags the workbook to be
    # recalculated on opening. That 0 was sent as the level before.
    path = write_xlsx(tmp_path / "generated.xlsx", {"Stock": [
        ["SKU", "Quantity", "Note"],
        ["MUG-4916", 4, Formula("=B2*2", 0)],        # row 2: a formula in an unused column
        ["LAMP-9823", Formula("=B2*2", 0), None],    # row 3
        [Formula('=UPPER("cap")', 0), 7, None],      # row 4: the SKU is a formula
    ]})

    result = sync(path, cli_env, rc=1)

    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 4})
    assert rejected(result.report()) == {3: ("formula_not_calculated", "Quantity", None),
                                         4: ("formula_not_calculated", "SKU", None)}


# ---- 9. blank rows and merged cells --------------------------------------------------------


def test_blank_rows_and_merged_cells_in_xlsx(sandbox: SandboxProcess, cli_env: dict[str, str],
                                             tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "merged.xlsx", {"Stock": [
        ["SKU", "Quantity", "Note"],
        ["MUG-4916", 5, None],                       # row 2
        [],                                          # row 3: blank
        [None, None, "   "],                         # row 4: only whitespace: blank
        ["CAP-681-BLUE", Merged(7, 2), "size S"],    # row 5: merged B5:B6 holds 7
        ["CAP-681-WHITE", None, "size M"],           # row 6: the merged area: no value
        [],                                          # row 7: blank
        ["LAMP-9823", 3.5, None],                    # row 8
        ["POSTER-1755", 2, None],                    # row 9
    ]})

    result = sync(path, cli_env, rc=1)
    report = result.report()

    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 5, (1, "CAP-681-BLUE"): 7,
                                  (1, "POSTER-1755"): 2})
    assert rejected(report) == {6: ("missing_quantity", "Quantity", None),
                                8: ("quantity_not_whole", "Quantity", "3.5")}
    assert plan_rows(result) == {(1, "MUG-4916"): 2, (1, "CAP-681-BLUE"): 5,
                                 (1, "POSTER-1755"): 9}
    assert report["counts"]["rows"] == 5
    assert report["counts"]["blank"] == 3
    assert report["input"]["blank_rows"] == 3


# ---- 10. dates ------------------------------------------------------------------------------


def test_dates_in_the_wrong_column(sandbox: SandboxProcess, cli_env: dict[str, str],
                                   tmp_path: Path) -> None:
    wb = xlsxwriter.Workbook(str(tmp_path / "dates.xlsx"))
    ws = wb.add_worksheet("Stock")
    date_fmt = wb.add_format({"num_format": "dd.mm.yyyy"})
    ws.write_row(0, 0, ["SKU", "Quantity"])
    ws.write_string(1, 0, "MUG-4916")
    ws.write_datetime(1, 1, dt.datetime(2026, 1, 5), date_fmt)        # row 2: date as quantity
    ws.write_datetime(2, 0, dt.datetime(2026, 3, 1), date_fmt)        # row 3: date as SKU
    ws.write_number(2, 1, 4)
    ws.write_string(3, 0, "LAMP-9823")
    ws.write_number(3, 1, 5, date_fmt)                                # row 4: 5 shown as a date
    ws.write_string(4, 0, "NB-8084")
    ws.write_number(4, 1, 8)                                          # row 5: fine
    wb.close()

    result = sync(tmp_path / "dates.xlsx", cli_env, rc=1)
    report = result.report()

    assert_sent_exactly(sandbox, {(1, "NB-8084"): 8})
    got = rejected(report)
    assert {row: (reason, column) for row, (reason, column, _) in got.items()} == {
        2: ("date_in_column", "Quantity"), 3: ("date_in_column", "SKU"),
        4: ("date_in_column", "Quantity")}
    assert got[2][2].startswith("2026-01-05")
    assert got[3][2].startswith("2026-03-01")
    assert got[4][2].startswith("1900-01-05")
    assert messages(report)[3].startswith(f"'{got[3][2]}' is a date, not a quantity or id — ")


# ---- 11. formula injection -------------------------------------------------------------------


HYPERLINK = '=HYPERLINK("http://x","y")'


def test_injected_formulas_are_escaped_in_rejected_files_and_read_back(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "hostile.xlsx", {"Stock": [
        ["SKU", "Quantity", "Note"],
        [HYPERLINK, 5, "click me"],          # row 2: unknown SKU: refused by the store
        ["MUG-4916", "@SUM(1)", "=1+1"],     # row 3: not a number
        ["LAMP-9823", "+1-2", None],          # row 4: not a number
        ["POSTER-1755", -3, "-3 units"],      # row 5: negative
        ["NB-8084", 4, "-minus"],             # row 6: fine
        ["+1-2", 2, None],                    # row 7: refused by the store
    ]})

    first = sync(path, cli_env, rc=1)
    report = first.report()

    assert_sent_exactly(sandbox, {(1, "NB-8084"): 4}, refused_allowed=True)
    original = {
        2: ("refused_by_store", "SKU", HYPERLINK),
        3: ("quantity_not_whole", "Quantity", "@SUM(1)"),
        4: ("quantity_not_whole", "Quantity", "+1-2"),
        5: ("quantity_negative", "Quantity", "-3"),
        7: ("refused_by_store", "SKU", "+1-2"),
    }
    assert rejected(report) == original

    # rejected.csv: risky text gets a leading ', plain numbers such as -3 do not.
    header, rows = rejected_csv(first)
    assert header == ["SKU", "Quantity", "Note", "row", "reason", "message"]
    assert [(r["row"], r["SKU"], r["Quantity"], r["Note"]) for r in rows] == [
        ("2", "'" + HYPERLINK, "5", "click me"),
        ("3", "MUG-4916", "'@SUM(1)", "'=1+1"),
        ("4", "LAMP-9823", "'+1-2", ""),
        ("5", "POSTER-1755", "-3", "'-3 units"),
        ("7", "'+1-2", "2", ""),
    ]
    for r in rows:   # no cell of rejected.csv is left for a spreadsheet to evaluate
        assert not [v for v in r.values()
                    if v.startswith(RISKY_START) and not PLAIN_NUMBER.fullmatch(v)], r

    # rejected.xlsx: the same text, as string cells (never formulas).
    ws = openpyxl.load_workbook(first.report_dir() / "rejected.xlsx")["Stock"]
    cells = {(c.row, c.column): c for row in ws.iter_rows() for c in row}
    # (Column 1 is the Problem column: the file's columns start at 2.)
    assert cells[(2, 2)].value == HYPERLINK and cells[(2, 2)].data_type == "s"
    assert cells[(3, 3)].value == "@SUM(1)" and cells[(3, 3)].data_type == "s"
    assert cells[(3, 4)].value == "=1+1" and cells[(3, 4)].data_type == "s"
    assert cells[(4, 3)].value == "+1-2" and cells[(4, 3)].data_type == "s"
    assert cells[(6, 2)].value == "+1-2" and cells[(6, 2)].data_type == "s"
    assert not [c.coordinate for c in cells.values() if c.data_type == "f"]

    # Uploading rejected.csv as it is reads the original text back.
    again = tmp_path / "rejected-again.csv"
    again.write_bytes((first.report_dir() / "rejected.csv").read_bytes())
    sandbox.post("/_sandbox/reset")
    second = sync(again, cli_env, rc=1)
    report2 = second.report()
    # rejected.csv rows 2..6 are the original rows 2, 3, 4, 5, 7, in that order.
    renumbered = dict(zip([2, 3, 4, 5, 7], [2, 3, 4, 5, 6], strict=True))
    assert rejected(report2) == {renumbered[row]: v for row, v in original.items()}
    refused_skus = sorted(it["sku"] for r in put_requests(sandbox) for it in r["items"])
    assert refused_skus.count(HYPERLINK) >= 1 and refused_skus.count("+1-2") >= 1
    assert accepted(sandbox) == {}
    # ... and writes the same escaped cells again (no double escaping).
    _, rows2 = rejected_csv(second)
    assert [(r["SKU"], r["Quantity"], r["Note"]) for r in rows2] == [
        (r["SKU"], r["Quantity"], r["Note"]) for r in rows]


def test_reuploaded_rejected_csv_trims_an_escaped_leading_tab(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    # A SKU pasted from a web page with a leading tab: invsync trims it ("\tMUG-4916" is
    # MUG-4916). The row is rejected for its quantity, so rejected.csv holds the SKU escaped
    # as "'\tMUG-4916". After fixing the quantity the user uploads it again: the SKU must
    # still be MUG-4916, as it was in the original file.
    path = tmp_path / "pasted.csv"
    path.write_text(csv_text([["sku", "quantity"], ["\tMUG-4916", "five"],
                              ["LAMP-9823", "1"]]), encoding="utf-8")
    first = sync(path, cli_env, rc=1)
    assert rejected(first.report()) == {2: ("quantity_not_whole", "quantity", "five")}
    _, rows = rejected_csv(first)
    assert rows[0]["sku"] == "'\tMUG-4916"

    fixed = tmp_path / "fixed.csv"
    fixed.write_text((first.report_dir() / "rejected.csv").read_text(encoding="utf-8")
                     .replace(",five,", ",5,"), encoding="utf-8")
    sandbox.post("/_sandbox/reset")
    second = sync(fixed, cli_env)

    assert rejected(second.report()) == {}
    assert accepted(sandbox) == {(1, "MUG-4916"): 5}


# ---- 12. workbooks with several sheets ----------------------------------------------------------


def test_two_sheet_workbook(sandbox: SandboxProcess, cli_env: dict[str, str],
                            tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "two.xlsx", {
        "Stock": [["SKU", "Quantity"], ["MUG-4916", 1], ["LAMP-9823", 2], ["POSTER-1755", "x"]],
        "Stock2": [["SKU", "Quantity"], ["MUG-4916", 10], [], ["LAMP-9823", 20],
                   ["BOTTLE-9437", -4]],
    })

    first = sync(path, cli_env, rc=1)   # no --sheet: the first sheet
    r1 = first.report()
    assert r1["input"]["sheet"] == "Stock"
    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 1, (1, "LAMP-9823"): 2})
    assert rejected(r1) == {4: ("quantity_not_whole", "Quantity", "x")}

    sandbox.post("/_sandbox/reset")
    second = sync(path, cli_env, "--sheet", "Stock2", rc=1)
    r2 = second.report()
    assert r2["input"]["sheet"] == "Stock2"
    assert accepted(sandbox) == {(1, "MUG-4916"): 10, (1, "LAMP-9823"): 20}
    assert rejected(r2) == {5: ("quantity_negative", "Quantity", "-4")}
    assert r2["input"]["blank_rows"] == 1
    assert openpyxl.load_workbook(second.report_dir() / "rejected.xlsx").sheetnames == ["Stock2"]

    # By number: the same sheet, so against the snapshot just written nothing changes.
    sandbox.post("/_sandbox/reset")
    third = sync(path, cli_env, "--sheet", "2", rc=1)
    r3 = third.report()
    assert r3["input"]["sheet"] == "Stock2"
    assert put_requests(sandbox) == []
    assert r3["counts"]["unchanged"] == 2 and r3["counts"]["changed"] == 0
    assert rejected(r3) == rejected(r2)
    assert sandbox.levels() == {(1, "MUG-4916"): 10, (1, "LAMP-9823"): 20}


# ---- 13. quantity rules from a config file ---------------------------------------------------


def test_quantity_rules_from_the_config_file(sandbox: SandboxProcess, cli_env: dict[str, str],
                                             tmp_path: Path) -> None:
    config = tmp_path / "rules.toml"
    config.write_text(
        "[quantity]\nbuffer = 2\nclamp_negative = true\nmaximum = 500\n"
        '[quantity.text_map]\n"in stock" = 100\n"out of stock" = 0\n', encoding="utf-8")
    path = tmp_path / "rules.csv"
    path.write_text(csv_text([
        ["sku", "quantity"],
        ["MUG-4916", "in stock"],          # row 2: 100 - 2
        ["LAMP-9823", " OUT OF STOCK "],   # row 3: 0 - 2 -> clamped to 0
        ["POSTER-1755", "1"],              # row 4: -1 -> 0
        ["NB-8084", "2"],                  # row 5: 0
        ["GAME-8992", "10"],               # row 6: 8
        ["MUG-0848", "600"],               # row 7: 598 -> capped at 500
        ["CAP-681-BLUE", "-5"],            # row 8: -7 -> clamped to 0
        ["CAP-681-WHITE", "plenty"],       # row 9: not in the text map
        ["CAP-681-YELLOW", "12.0"],        # row 10: 10
        ["BOTTLE-9437", "502"],            # row 11: exactly 500
        ["BOTTLE-1030", "503"],            # row 12: 501 -> 500
        ["5057140603160", ""],             # row 13: still missing
    ]), encoding="utf-8")

    result = sync(path, cli_env, "--config", str(config), rc=1)
    report = result.report()

    levels = {
        (1, "MUG-4916"): 98, (1, "LAMP-9823"): 0, (1, "POSTER-1755"): 0, (1, "NB-8084"): 0,
        (1, "GAME-8992"): 8, (1, "MUG-0848"): 500, (1, "CAP-681-BLUE"): 0,
        (1, "CAP-681-YELLOW"): 10, (1, "BOTTLE-9437"): 500, (1, "BOTTLE-1030"): 500}
    # The rows ruled to 0 are what the store already holds (plans are made against its live
    # levels): counted unchanged, not sent.
    assert_sent_exactly(sandbox, stocked(levels))
    assert report["counts"]["unchanged"] == len(levels) - len(stocked(levels))
    assert rejected(report) == {9: ("quantity_not_whole", "quantity", "plenty"),
                                13: ("missing_quantity", "quantity", None)}
    rules = {"text_map": {"in stock": 100, "out of stock": 0}, "buffer": 2,
             "clamp_negative": True, "maximum": 500}
    assert report["options"]["quantity_rules"] == rules
    assert [n for n in report["notes"] if n.startswith("quantity rules applied")] == [
        f"quantity rules applied: {rules}"]


# ---- 14. rejected.xlsx for an XLSX input --------------------------------------------------------


def test_rejected_xlsx_says_the_problem_first_and_highlights_the_offending_cell(
        sandbox: SandboxProcess, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "stock.xlsx", {"Lager": [
        ["SKU", "Warehouse", "Quantity", "Note"],
        ["MUG-4916", 1, 5, "ok"],                            # row 2: sent
        ["LAMP-9823", "WH-WEST", 3, "typo"],                 # row 3: unknown location
        [dt.date(2026, 3, 1), 1, 4, "Excel made a date"],    # row 4: a date as SKU
        ["POSTER-1755", "WH-EAST", 12.5, "half"],            # row 5: not whole
        ["DISCONTINUED-9", 1, 4, "gone"],                    # row 6: refused by the store
        ["NB-8084", 1, None, "Größe ü"],                     # row 7: empty quantity
    ]})

    result = sync(path, cli_env, rc=1)
    report = result.report()
    assert_sent_exactly(sandbox, {(1, "MUG-4916"): 5}, refused_allowed=True)
    blamed = {3: "Warehouse", 4: "SKU", 5: "Quantity", 6: "SKU", 7: "Quantity"}
    assert {row: col for row, (_, col, _) in rejected(report).items()} == blamed
    reasons = {row: reason for row, (reason, _, _) in rejected(report).items()}
    assert reasons == {3: "unknown_location", 4: "date_in_column", 5: "quantity_not_whole",
                       6: "refused_by_store", 7: "missing_quantity"}

    wb = openpyxl.load_workbook(result.report_dir() / "rejected.xlsx")
    assert wb.sheetnames == ["Lager"]
    ws = wb["Lager"]
    table = [[c.value for c in row] for row in ws.iter_rows()]
    header = table[0]
    assert header == ["Problem", "SKU", "Warehouse", "Quantity", "Note", "row", "reason"]
    assert all(c.font.bold for c in ws[1])
    body = {int(r[5]): dict(zip(header, r, strict=True)) for r in table[1:]}
    assert sorted(body) == [3, 4, 5, 6, 7]
    # Numbers stay numbers (12.5 is a number cell again); the SKU column stays text.
    assert body[3]["Warehouse"] == "WH-WEST" and body[5]["Quantity"] == 12.5
    assert body[7]["Note"] == "Größe ü" and body[7]["Quantity"] is None
    assert body[4]["SKU"].startswith("2026-03-01")
    msg = messages(report)
    for excel_row in range(2, ws.max_row + 1):
        file_row = int(ws.cell(excel_row, 6).value)
        assert ws.cell(excel_row, 1).value == f"row {file_row} of your file: {msg[file_row]}"
        assert ws.cell(excel_row, 7).value == reasons[file_row]
        for col in range(2, 8):
            cell = ws.cell(excel_row, col)
            if header[col - 1] == blamed[file_row]:
                assert cell.fill.fill_type == "solid", cell.coordinate
            else:
                assert cell.fill.fill_type is None, cell.coordinate


# ---- property: any small table, written as CSV and synced, is accounted for row by row ----------

with (SAMPLE / "catalog.csv").open(newline="", encoding="utf-8") as _fh:
    _CATALOG = [r for r in csv.DictReader(_fh) if r["tracking"] != "none"]
TRACKED = sorted(r["sku"] for r in _CATALOG)
# One SKU per product: the store also refuses a write that takes the SUM of a product's
# variants at a location above the maximum (422 for the whole request), which the model
# below does not predict row by row; tests/test_sandbox.py and the submit tests cover it.
ONE_PER_PRODUCT = sorted({r["product_id"]: r["sku"] for r in _CATALOG}.values())

# location cell -> location id (None: unknown), and whether that location accepts stock
LOCATIONS: dict[str, tuple[int | None, bool]] = {
    "": (1, True), "1": (1, True), "BC-LOCATION-1": (1, True), "2": (2, True),
    "WH-EAST": (2, True), " 2 ": (2, True), "3": (3, False), "OLD-SHOP": (3, False),
    "NOWHERE": (None, False),
}
GOOD_QUANTITIES = [(" 12 ", 12), ("+3", 3), ("0042", 42), ("5.0", 5), ("-0", 0), ("\xa07", 7),
                   (str(MAX_QUANTITY), MAX_QUANTITY)]
BAD_QUANTITIES = [("", "missing_quantity"), ("  ", "missing_quantity"),
                  ("abc", "quantity_not_whole"), ("1.5", "quantity_not_whole"),
                  ("1,000", "quantity_not_whole"), ("12 pcs", "quantity_not_whole"),
                  ("=1+1", "quantity_not_whole"), ("-0.5", "quantity_not_whole"),
                  ("-2", "quantity_negative"), (str(MAX_QUANTITY + 1), "quantity_too_large"),
                  ("99999999999", "quantity_too_large"), ("2026-01-05", "date_in_column")]
PRIORITY = ["unknown_location", "disabled_location", "missing_quantity", "date_in_column",
            "quantity_not_whole", "quantity_negative", "quantity_too_large", "duplicate_item"]

quantity_cells = st.one_of(
    st.integers(0, 500).map(lambda n: (str(n), n, None)),
    st.sampled_from(GOOD_QUANTITIES).map(lambda p: (p[0], p[1], None)),
    st.sampled_from(BAD_QUANTITIES).map(lambda p: (p[0], None, p[1])),
)


@st.composite
def stock_tables(draw: st.DrawFn) -> tuple[str, list[tuple[str, str, str, str]]]:
    """A duplicate policy and rows of (sku cell, location cell, quantity cell, note cell)."""
    pool = draw(st.lists(st.sampled_from(ONE_PER_PRODUCT), min_size=1, max_size=5, unique=True))
    rows = []
    for _ in range(draw(st.integers(1, 10))):
        pad = draw(st.sampled_from(["", " ", "  "]))
        sku = pad + draw(st.sampled_from(pool)) + pad
        location = draw(st.sampled_from(sorted(LOCATIONS)))
        quantity = draw(quantity_cells)[0]
        note = draw(st.text(alphabet="ab é,;\"\n'=", max_size=6))
        rows.append((sku, location, quantity, note))
    return draw(st.sampled_from(["reject", "sum", "last"])), rows


def quantity_of(text: str) -> tuple[int | None, str | None]:
    for t, value in GOOD_QUANTITIES:
        if t == text:
            return value, None
    for t, reason in BAD_QUANTITIES:
        if t == text:
            return None, reason
    return int(text), None


def expected_outcome(policy: str, rows: list[tuple[str, str, str, str]]) -> tuple[
        dict[Level, int], dict[Level, int], dict[int, tuple[str, str, str | None]]]:
    """(items to send, first row of each item, rejected rows) as the README describes them."""
    reasons: dict[int, list[str]] = {}
    keyed: dict[int, Level] = {}
    for n, (sku, location, quantity, _) in enumerate(rows, start=2):
        loc_id, enabled = LOCATIONS[location]
        found = reasons.setdefault(n, [])
        if loc_id is None:
            found.append("unknown_location")
        elif not enabled:
            found.append("disabled_location")
        if loc_id is not None:
            keyed[n] = (loc_id, sku.strip())
        reason = quantity_of(quantity)[1]
        if reason:
            found.append(reason)
    if policy == "reject":
        for n, key in keyed.items():
            if list(keyed.values()).count(key) > 1:
                reasons[n].append("duplicate_item")
    items: dict[Level, int] = {}
    first_row: dict[Level, int] = {}
    bad: dict[int, tuple[str, str, str | None]] = {}
    for n, (sku, location, quantity, _) in enumerate(rows, start=2):
        if reasons[n]:
            reason = min(reasons[n], key=PRIORITY.index)
            column, value = {
                "unknown_location": ("location", location.strip()),
                "disabled_location": ("location", location.strip()),
                "duplicate_item": ("sku", sku.strip()),
            }.get(reason, ("quantity", quantity.strip(" \xa0") or None))
            bad[n] = (reason, column, value)
            continue
        key, value = keyed[n], quantity_of(quantity)[0]
        assert value is not None
        first_row.setdefault(key, n)
        items[key] = items.get(key, 0) + value if policy == "sum" else value
    # --duplicates sum: a total above the store's maximum rejects every row of its group
    # (capping it would send a level the file never said).
    for key in [k for k, total in items.items() if total > MAX_QUANTITY]:
        del items[key], first_row[key]
        for n, (_sku, _location, quantity, _) in enumerate(rows, start=2):
            if n not in bad and keyed.get(n) == key:
                bad[n] = ("quantity_too_large", "quantity", quantity.strip(" \xa0") or None)
    return items, first_row, bad


def test_property_any_small_csv_is_accounted_for_row_by_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process runs (the same sync_file the CLI calls), one sandbox for every example:
    # a CLI process per run would make 30 examples take minutes.
    from invsync.run.config import load_settings
    from invsync.run.sync import sync_file

    for name in ("BIGCOMMERCE_ACCESS_TOKEN", "BIGCOMMERCE_STORE_HASH", "BIGCOMMERCE_API_URL"):
        monkeypatch.delenv(name, raising=False)
    counter = itertools.count()

    with run_sandbox(SAMPLE / "catalog.csv", token=TOKEN) as sb:

        @settings(max_examples=budget(30), deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(stock_tables())
        @example(("sum", [(TRACKED[0], "1", str(MAX_QUANTITY), ""), (TRACKED[1], "1", "4", ""),
                          (TRACKED[0], "1", "1", "same item")]))  # a sum above the maximum
        def check(table: tuple[str, list[tuple[str, str, str, str]]]) -> None:
            policy, rows = table
            sb.post("/_sandbox/reset?levels=1")
            work = tmp_path / f"example-{next(counter)}"
            work.mkdir()
            path = work / "stock.csv"
            path.write_text(csv_text([["sku", "location", "quantity", "note"],
                                      *[list(r) for r in rows]]), encoding="utf-8")
            config = work / "invsync.toml"
            config.write_text(f'access_token = "{TOKEN}"\n', encoding="utf-8")
            settings_ = load_settings(config, {
                "store_hash": sb.store_hash, "api_url": sb.url, "state_dir": work / "state",
                "duplicates": policy, "concurrency": 1})
            items, first_row, bad = expected_outcome(policy, rows)
            all_rows = set(range(2, len(rows) + 2))

            report = sync_file(path, settings_)
            assert report.error is None, report.error
            assert report.exit_code == (1 if bad else 0)
            # Plans are made against the store's live levels (all 0 after the reset): an
            # item the file puts at 0 is already there, so it is unchanged and not sent.
            sent = stocked(items)
            assert_sent_exactly(sb, sent)
            got = {r["row"]: (r["reason"], r["column"], r["value"]) for r in report.rejected}
            assert got == bad
            c = report.counts
            assert (c.rows, c.invalid, c.changed, c.accepted, c.unchanged) == (
                len(rows), len(bad), len(sent), len(sent), len(items) - len(sent))
            assert c.rows == c.valid + c.invalid
            assert c.valid - c.merged == len(items)
            # Sent (under its first row), merged into a sent row, or rejected: a partition.
            folder = Path(report.report_dir)
            with (folder / "plan.csv").open(newline="", encoding="utf-8") as fh:
                plan = {(int(r["location_id"]), r["item"]): (int(r["row"]), r["status"])
                        for r in csv.DictReader(fh)}
            assert plan == {k: (first_row[k], "accepted") for k in sent}
            sent_rows = set(first_row.values())
            merged_rows = all_rows - sent_rows - set(bad)
            assert len(merged_rows) == c.merged
            assert not sent_rows & set(bad)
            with (folder / "rejected.csv").open(newline="", encoding="utf-8-sig") as fh:
                rej = list(csv.DictReader(fh, delimiter=report.input.get("delimiter") or ","))
            assert [int(r["row"]) for r in rej] == sorted(bad)
            for r in rej:
                sku, location, quantity, note = rows[int(r["row"]) - 2]
                assert (r["sku"], r["location"], r["quantity"], r["note"]) == tuple(
                    spreadsheet_escaped(v) for v in (sku, location, quantity, note))

            # Second run of the same file: every valid row is unchanged, nothing is sent.
            sb.post("/_sandbox/reset")
            again = sync_file(path, settings_)
            assert put_requests(sb) == []
            assert again.counts.unchanged == len(items) and again.counts.changed == 0
            assert {r["row"]: (r["reason"], r["column"], r["value"])
                    for r in again.rejected} == bad
            assert sb.levels() == sent

        check()
