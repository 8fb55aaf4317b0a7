"""Messages a merchant understands (issue 11): plain words with the fix for every reason
code, "did you mean" for refused SKUs, summaries grouped by kind that add up, and the
rejected files a person fixes and uploads again."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openpyxl
import polars as pl
import pytest
import xlsxwriter
from conftest import run_invsync
from rich.console import Console

from invsync.rules.messages import (
    FALLBACK,
    did_you_mean,
    kind_of,
    outcome_sentence,
    problem_groups,
    refused_messages,
)
from invsync.rules.stock import REASONS
from invsync.stages.ingest import ROW, read_stock_file
from invsync.stages.report import Counts, RunReport, write_rejected_csv, write_rejected_xlsx
from invsync.stages.validate import validate
from invsync.surfaces.summary import print_summary


def validated(tmp_path: Path, text: str, name: str = "stock.csv") -> Any:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return validate(read_stock_file(path))


def messages_by_row(v: Any) -> dict[int, str]:
    return dict(zip(v.rejected[ROW], v.rejected["message"], strict=True))


# ---- every reason code: its code, and a plain message with the fix ------------------------


def test_every_reason_code_has_a_kind_and_a_fix() -> None:
    for code, reason in REASONS.items():
        assert reason.kind and reason.fix, code
        assert " — " in reason.message, code  # the message says what to do
        assert kind_of(code) == (reason.kind, reason.fix)
    assert kind_of("a_code_from_the_future") == FALLBACK


def test_quantity_messages_say_what_to_write(tmp_path: Path) -> None:
    v = validated(tmp_path, "sku,quantity\nA,12 pcs\nB,3.5\nC,\"1,234\"\nD,lots\nE,-2\n"
                            "F,\nG,+7 Stück\n")
    assert messages_by_row(v) == {
        2: "the quantity '12 pcs' is not a number — write 12",
        3: "the quantity '3.5' is not a whole number — write a whole number: 3 or 4",
        4: "the quantity '1,234' is not a number — did you mean 1234? Write it without "
           "separators",
        5: "the quantity 'lots' is not a number — write how many are in stock as a whole "
           "number, such as 12",
        6: "the quantity '-2' is below 0 — write 0 or more (or run with `--clamp-negative` "
           "to send 0)",
        7: "the quantity is empty — write how many are in stock (0 if none)",
        8: "the quantity '+7 Stück' is not a number — write 7",
    }
    assert v.rejected["reason"].to_list() == [
        "quantity_not_whole", "quantity_not_whole", "quantity_not_whole",
        "quantity_not_whole", "quantity_negative", "missing_quantity", "quantity_not_whole"]


def test_missing_sku_and_duplicates_read_as_sentences(tmp_path: Path) -> None:
    body = "A,1\n" * 10 + ",3\nB,1\nC,1\nB,2\n"
    v = validated(tmp_path, "sku,quantity\n" + body)
    got = messages_by_row(v)
    assert got[12] == "this row has no SKU — fill in the SKU (or the product or variant id)"
    fix = " are the same item at the same location — keep one, or sum them with " \
          "`--duplicates sum`"
    assert got[13] == got[15] == "row 13 and row 15" + fix
    # Bounded: the first few rows and the count, however large the group.
    assert got[2] == got[11] == "rows 2, 3, 4, 5, 6 and 5 more (10 rows)" + fix


# ---- did you mean -------------------------------------------------------------------------


def test_did_you_mean_finds_the_sku_a_typo_meant() -> None:
    known = pl.Series(["BEANIE-148-YELLOW", "BEANIE-148-GREEN", "MUG-4916", "mug-77"])
    assert did_you_mean(["BEANIE-148-YELOW", "MUG-77", "TOTALLY-ELSE-1"], known) == {
        "BEANIE-148-YELOW": "BEANIE-148-YELLOW", "MUG-77": "mug-77"}
    assert did_you_mean(["X"], pl.Series([], dtype=pl.String)) == {}


def test_did_you_mean_stays_bounded_on_a_large_catalog() -> None:
    known = pl.Series([f"SKU-{i:07d}" for i in range(300_000)] + ["BEANIE-148-YELLOW"])
    unknown = [f"NOPE-{i}" for i in range(1_000)] + ["BEANIE-148-YELOW"]
    # At most `limit` unknown SKUs are looked up, each against a bounded candidate pool.
    assert did_you_mean(unknown, known, limit=5) == {}
    assert did_you_mean(["BEANIE-148-YELOW", "SKU-0000012X"], known) == {
        "BEANIE-148-YELOW": "BEANIE-148-YELLOW", "SKU-0000012X": "SKU-0000012"}


def test_refused_messages_suggest_only_for_skus_the_store_lacks() -> None:
    refused = pl.DataFrame({"address": ["sku", "sku", "variant_id"],
                            "address_key": ["BEANIE-148-YELOW", "BEANIE-148-GREEN", "77"],
                            "message": ["not found", "not tracked", "not found"]})
    snapshot = pl.DataFrame({"location_id": [1, 1], "identifier": ["sku", "sku"],
                             "item_key": ["BEANIE-148-YELLOW", "BEANIE-148-GREEN"]})
    got = refused_messages(refused, (snapshot, None)).to_list()
    assert got[0] == ("the store refused 'BEANIE-148-YELOW': not found — did you mean "
                      "'BEANIE-148-YELLOW'? Correct the SKU")
    fix = REASONS["refused_by_store"].fix
    assert got[1] == f"the store refused 'BEANIE-148-GREEN': not tracked — {fix}"
    assert got[2] == f"the store refused '77': not found — {fix}"


# ---- the outcome in one sentence that adds up; problems grouped by kind -------------------


def numbers_add_up(sentence: str) -> bool:
    head, _, rest = sentence.partition(": ")
    rows = int(head.split()[0].replace(",", ""))
    rest = re.sub(r"\([^)]*\)", "", rest.split(";")[0])  # asides restate a part
    parts = [int(m.replace(",", "")) for m in re.findall(r"(?:^|, )([\d,]+) ", rest)]
    return sum(parts) == rows


@pytest.mark.parametrize(("counts", "status", "expected"), [
    ({"rows": 15, "valid": 10, "invalid": 5, "changed": 10, "submitted": 10, "accepted": 10},
     "partial", "15 rows: 10 updated, 5 need fixing (see rejected.xlsx)"),
    ({"rows": 15, "valid": 12, "invalid": 3, "changed": 10, "unchanged": 1, "merged": 1,
      "submitted": 10, "accepted": 8, "refused": 1, "unconfirmed": 1},
     "partial", "15 rows: 8 updated, 1 already right, 1 merged into another row, 1 not "
                "confirmed by the store, 4 need fixing (1 refused by the store) "
                "(see rejected.xlsx)"),
    ({"rows": 4, "valid": 4, "changed": 3, "unchanged": 1},
     "dry_run", "4 rows: 3 would be updated, 1 already right"),
    ({"rows": 1, "valid": 0, "invalid": 1}, "partial",
     "1 row: 1 needs fixing (see rejected.xlsx)"),
    ({"rows": 6, "valid": 6, "changed": 6, "zeroed_missing": 2, "submitted": 8,
      "accepted": 8}, "succeeded", "6 rows: 6 updated; 2 items not in the file set to 0"),
])
def test_outcome_sentence_adds_up(counts: dict[str, int], status: str, expected: str) -> None:
    full = {**Counts().__dict__, **counts}
    got = outcome_sentence(full, status, "rejected.xlsx" if "invalid" in counts else None)
    assert got == expected
    assert numbers_add_up(got)


def test_terminal_summary_groups_problems_by_kind_with_one_example(tmp_path: Path) -> None:
    rejected = [{"row": 3, "reason": "quantity_not_whole", "message": "the quantity 'x' ..."},
                {"row": 4, "reason": "missing_identifier", "message": "this row has no SKU"},
                {"row": 9, "reason": "quantity_not_whole", "message": "the quantity 'y' ..."}]
    report = RunReport(run_id="r1", status="partial", started_at="now",
                       counts=Counts(rows=5, valid=2, invalid=3, changed=2, submitted=2,
                                     accepted=2, rejected=3),
                       rejected=rejected,
                       rejected_by_reason={"quantity_not_whole": 2, "missing_identifier": 1},
                       rejected_file="rejected.xlsx", report_dir=str(tmp_path))
    console = Console(record=True, width=200, color_system=None)
    print_summary(report, console)
    out = console.export_text()
    assert "5 rows: 2 updated, 3 need fixing (see rejected.xlsx)" in out
    assert ("A quantity that is not a whole number (2 rows, quantity_not_whole): row 3: "
            "the quantity 'x' ...") in out
    assert "Rows with no SKU (1 row, missing_identifier): row 4: this row has no SKU" in out
    assert "'y'" not in out  # one example per kind
    groups = problem_groups(report.rejected_by_reason, rejected)
    assert [(g.code, g.count, g.example_row) for g in groups] == [
        ("quantity_not_whole", 2, 3), ("missing_identifier", 1, 4)]


# ---- rejected.xlsx and rejected.csv -------------------------------------------------------


def write_book(path: Path, rows: list[list[Any]]) -> Path:
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Stock")
    dates = wb.add_format({"num_format": "yyyy-mm-dd"})
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, dt.date):
                ws.write_datetime(r, c, dt.datetime.combine(value, dt.time()), dates)
            elif isinstance(value, str):
                ws.write_string(r, c, value)  # text stays text, even "=1+1"
            elif value is not None:
                ws.write_number(r, c, value)
    wb.close()
    return path


def test_rejected_xlsx_is_typed_with_a_problem_column_first(tmp_path: Path) -> None:
    path = write_book(tmp_path / "stock.xlsx", [
        ["SKU", "Quantity", "Price", "Received", "Note"],
        ["00123", "12 pcs", 9.5, dt.date(2026, 3, 1), "=1+1"],
        ["MUG-4916", 5, 2, dt.date(2026, 3, 2), "ok"],
        ["MUG-4916", 6, 1234567, None, "@SUM(1)"],
    ])
    table = read_stock_file(path)
    v = validate(table)
    out = tmp_path / "rejected.xlsx"
    write_rejected_xlsx(out, table, v.rejected)
    ws = openpyxl.load_workbook(out)["Stock"]
    rows = [[c for c in row] for row in ws.iter_rows()]
    header = [c.value for c in rows[0]]
    assert header == ["Problem", "SKU", "Quantity", "Price", "Received", "Note", "row", "reason"]
    body = {r[6].value: {h: c for h, c in zip(header, r, strict=True)} for r in rows[1:]}
    assert sorted(body) == [2, 3, 4]
    assert body[2]["Problem"].value == ("row 2 of your file: the quantity '12 pcs' is not a "
                                        "number — write 12")
    assert body[3]["Problem"].value.startswith("row 3 of your file: row 3 and row 4 are the same")
    # Numbers stay numbers, dates stay dates, a SKU stays its text.
    assert body[2]["SKU"].value == "00123" and body[2]["SKU"].data_type == "s"
    assert body[2]["Price"].value == 9.5 and body[3]["Price"].value == 2
    assert body[4]["Price"].value == 1234567 and isinstance(body[4]["Price"].value, int)
    assert body[3]["Quantity"].value == 5 and body[2]["Quantity"].value == "12 pcs"
    assert body[2]["Received"].value == dt.datetime(2026, 3, 1) and body[2]["Received"].is_date
    assert body[4]["Received"].value is None
    # Formula-looking text stays text: a string cell, never a formula.
    assert body[2]["Note"].value == "=1+1" and body[2]["Note"].data_type == "s"
    assert body[4]["Note"].value == "@SUM(1)" and body[4]["Note"].data_type == "s"
    assert not [c.coordinate for r in rows for c in r if c.data_type == "f"]
    # The offending cell is highlighted; the columns are wide enough for their headers.
    assert body[2]["Quantity"].fill.fgColor.rgb.endswith("FFF2A8")
    for letter, name in zip("ABCDEFGH", header, strict=True):
        assert ws.column_dimensions[letter].width >= len(name), name
    assert ws.column_dimensions["A"].width >= 40


def test_rejected_xlsx_reuploads_to_the_same_rows(tmp_path: Path) -> None:
    path = write_book(tmp_path / "stock.xlsx", [
        ["SKU", "Quantity", "Note"], ["A-1", "x", "=1"], ["", 3, "n"], ["B-2", 4, "fine"]])
    table = read_stock_file(path)
    first = validate(table)
    out = tmp_path / "rejected.xlsx"
    write_rejected_xlsx(out, table, first.rejected)
    again = validate(read_stock_file(out))
    assert again.rejected["reason"].to_list() == first.rejected["reason"].to_list()
    assert again.rejected["value"].to_list() == first.rejected["value"].to_list()
    assert again.valid.height == 0


def test_rejected_csv_keeps_the_delimiter_and_has_a_bom(tmp_path: Path) -> None:
    table = read_stock_file(_write(tmp_path / "s.csv", "SKU;Quantity;Notiz\nA;1,5;Größe\nB;2;x\n"))
    v = validate(table)
    out = tmp_path / "rejected.csv"
    write_rejected_csv(out, table, v.rejected)
    data = out.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfSKU;Quantity;Notiz;row;reason;message\n")
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(text.splitlines(), delimiter=";"))
    assert rows[1][:5] == ["A", "1,5", "Größe", "2", "quantity_not_whole"]
    # Uploaded again, it reads the same columns and rejects the same row.
    again = validate(read_stock_file(out))
    assert again.rejected.select("column", "value", "reason").rows() == [
        ("Quantity", "1,5", "quantity_not_whole")]


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


_RSS_CHILD = """
import resource, sys
from pathlib import Path
from invsync.stages.ingest import read_stock_file
from invsync.stages.validate import validate
from invsync.stages.report import write_rejected_xlsx
table = read_stock_file(sys.argv[1])
v = validate(table)
assert v.rejected.height == table.rows
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[2] == "write":
    write_rejected_xlsx(Path(sys.argv[3]), table, v.rejected)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_rejected_xlsx_of_20k_rejected_rows_is_written_in_flat_memory(tmp_path: Path) -> None:
    """Every row of a 20,000-row workbook rejected: writing rejected.xlsx raises the
    process's peak RSS by little (write-only rows, no per-cell comments kept in memory;
    before, the writer added ~30 MiB here and 73 MiB at 50,000 rows). 20,000 rows, not
    more: the child's peak counts in this pytest process's RUSAGE_CHILDREN, which the
    memory bounds of test_resilience read."""
    src = tmp_path / "all-bad.xlsx"
    wb = xlsxwriter.Workbook(str(src), {"constant_memory": True})
    ws = wb.add_worksheet("Stock")
    ws.write_row(0, 0, ["SKU", "Quantity", "Location ID", "Description", "Price"])
    for i in range(20_000):
        ws.write_row(i + 1, 0, [f"SKU-{i:06d}", f"{i} pcs", 1, "a blue cotton beanie", 9.5])
    wb.close()
    out = tmp_path / "rejected.xlsx"
    got = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(src), "write", str(out)],
                         capture_output=True, text=True, check=True, timeout=600)
    before_kb, after_kb = map(int, got.stdout.split())
    assert (after_kb - before_kb) < 20 * 1024, f"+{(after_kb - before_kb) >> 10} MiB"
    book = openpyxl.load_workbook(out, read_only=True)
    assert sum(1 for _ in book["Stock"].iter_rows(values_only=True)) == 20_001
    book.close()


# ---- one real CLI run ---------------------------------------------------------------------


def test_cli_run_says_what_to_fix_and_suggests_the_sku(
        sandbox: Any, cli_env: dict[str, str], tmp_path: Path) -> None:
    path = write_book(tmp_path / "stock.xlsx", [
        ["SKU", "Quantity", "Price"],
        ["BEANIE-148-GREEN", 4, 12.5],     # row 2: updated
        ["BEANIE-148-YELOW", 3, 12.5],     # row 3: refused by the store: a typo
        ["BEANIE-148-GREEN", 5, 12.5],     # row 4: the same item as row 2... and row 2
        ["", 1, 1],                        # row 5: no SKU
        ["MUG-4916", "12 pcs", 3],         # row 6: not a number
        ["NB-8084", 2, 1],                 # row 7: updated
    ])
    result = run_invsync(["sync", "--baseline", "live", str(path)], cli_env)
    assert result.returncode == 1, result.stdout
    report = json.loads((result.report_dir() / "report.json").read_text())
    msgs = {r["row"]: r["message"] for r in report["rejected"]}
    assert msgs[6] == "the quantity '12 pcs' is not a number — write 12"
    assert msgs[5].startswith("this row has no SKU")
    assert msgs[2] == msgs[4] and msgs[2].startswith("row 2 and row 4 are the same item")
    assert "did you mean 'BEANIE-148-YELLOW'?" in msgs[3], msgs[3]
    assert report["rejected_file"] == "rejected.xlsx"
    out = " ".join(result.stdout.split())
    assert ("6 rows: 1 updated, 5 need fixing (1 refused by the store) "
            "(see rejected.xlsx)") in out, out
    assert "A quantity that is not a whole number (1 row, quantity_not_whole): row 6:" in out
    html = (result.report_dir() / "report.html").read_text()
    assert 'href="rejected.xlsx"' in html and "6 rows: 1 updated, 5 need fixing" in html
    ws = openpyxl.load_workbook(result.report_dir() / "rejected.xlsx").active
    assert ws["A1"].value == "Problem"
    assert ws["A2"].value.startswith("row 2 of your file: row 2 and row 4 are the same item")
