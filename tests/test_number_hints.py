"""Numbers as people write them (issue 25): ``1.204`` never gets "write 1 or 2"; it is read as
1204 only when the file makes its number convention certain, and the run says so."""

from __future__ import annotations

import csv
from pathlib import Path

from invsync.stages.ingest import ROW, read_stock_file
from invsync.stages.validate import validate
from tests.conftest import output, run_invsync
from tests.test_files_in import env_for_dry_run


def _validated(tmp_path: Path, text: str, name: str = "in.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return validate(read_stock_file(path))


def _messages(v) -> dict[int, str]:
    return {r[ROW]: r["message"] for r in v.rejected.to_dicts()}


def test_grouped_and_unit_quantities_get_a_precise_hint(tmp_path: Path) -> None:
    v = _validated(tmp_path, 'sku,quantity\nA,1.204\nB,"1,204"\nC,12 pcs\nD,1.5\n')
    got = _messages(v)
    assert got[2] == "the quantity '1.204' is not a number — did you mean 1204? Write it " \
                     "without separators"
    assert got[3] == "the quantity '1,204' is not a number — did you mean 1204? Write it " \
                     "without separators"
    assert got[4] == "the quantity '12 pcs' is not a number — write 12"
    assert got[5].endswith("write a whole number: 1 or 2")  # a real decimal keeps its advice
    assert not any("1 or 2" in m for r, m in got.items() if r != 5)
    assert v.notes == []


def test_a_semicolon_file_with_decimal_commas_reads_dotted_thousands(tmp_path: Path) -> None:
    v = _validated(tmp_path, "sku;quantity\nA;1.204\nB;12,0\nC;3,5\nD;7\nE;1.000\n")
    valid = dict(v.valid.select("sku", "quantity").rows())
    assert valid == {"A": 1204, "B": 12, "D": 7, "E": 1000}  # 1.000 is a thousand here
    assert _messages(v)[4].startswith("the quantity '3,5' is not a whole number")
    assert len(v.notes) == 1 and "row 2's '1.204' read as 1204" in v.notes[0]
    assert "2 row(s)" in v.notes[0]


def test_without_certainty_nothing_is_guessed(tmp_path: Path) -> None:
    # ;-separated but no decimal comma anywhere: 1.204 stays a question.
    v = _validated(tmp_path, "sku;quantity\nA;1.204\nD;7\nE;1.000\nF;12.0\n")
    assert "did you mean 1204?" in _messages(v)[2]
    # 1.000 in a ';'-separated file is never read as 1: asked about, like 1.204.
    assert "did you mean 1000?" in _messages(v)[4]
    assert dict(v.valid.select("sku", "quantity").rows()) == {"D": 7, "F": 12}
    # A decimal point elsewhere contradicts the comma: nothing is read by convention.
    v = _validated(tmp_path, "sku;quantity\nA;1.204\nB;3,5\nC;2.5\n")
    assert "did you mean 1204?" in _messages(v)[2]
    # A comma-separated file with a quoted decimal comma is not certain either.
    v = _validated(tmp_path, 'sku,quantity\nA,1.204\nB,"3,5"\n')
    assert "did you mean 1204?" in _messages(v)[2] and v.notes == []


def _write(path: Path, rows: list[list[str]], delimiter: str) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter=delimiter).writerows(rows)
    return path


def test_cli_plan_reads_a_german_file_and_says_so(tmp_path: Path) -> None:
    path = _write(tmp_path / "lager.csv",
                  [["sku", "quantity"], ["A-1", "1.204"], ["A-2", "2,5"], ["A-3", "4"]], ";")
    result = run_invsync(["plan", str(path)], env_for_dry_run(tmp_path))
    assert "Traceback" not in result.stderr
    report = result.report()
    assert report["counts"]["valid"] == 2 and report["counts"]["invalid"] == 1
    assert any("'1.204' read as 1204" in n for n in report["notes"]), report["notes"]
    assert "1204" in (result.report_dir() / "plan.csv").read_text()


def test_cli_plan_asks_did_you_mean_when_unsure(tmp_path: Path) -> None:
    path = _write(tmp_path / "stock.csv",
                  [["sku", "quantity"], ["A-1", "1.204"], ["A-2", "12 pcs"], ["A-3", "4"]], ",")
    result = run_invsync(["plan", str(path)], env_for_dry_run(tmp_path))
    assert result.returncode == 1, result.stderr[-2000:]
    messages = {r["value"]: r["message"] for r in result.report()["rejected"]}
    assert "did you mean 1204?" in messages["1.204"] and "1 or 2" not in messages["1.204"]
    assert messages["12 pcs"].endswith("write 12")
    assert "did you mean 1204?" in output(result)
