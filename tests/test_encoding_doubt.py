"""An unclear encoding blocks nothing it does not touch; when it must ask, Windows-1252 is
among the encodings offered whenever the bytes read as it."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import env_for, output, run_invsync

from invsync.errors import InputFileError
from invsync.stages.ingest import ROW, read_stock_bytes, read_stock_file

# Cyrillic in Windows-1251: as likely Windows-1251 as Windows-1253 or Windows-1252 to any
# detector (no reading is more fluent than another in so few words).
TITLE_ONLY = "sku,title,qty\nA-1,Привет мир,5\nA-2,Кириллица тут,3\nA-3,Сыр,2\n"
IN_SKU = "sku,title,qty\nA-1,Привет мир,5\nЧАЙ-2,Кириллица тут,3\n"
IN_LOCATION = "sku,title,location,qty\nA-1,Привет мир,Склад,5\nA-2,Кириллица тут,Склад,3\n"


def test_doubtful_characters_only_in_an_unused_column_are_read_with_a_note() -> None:
    table = read_stock_bytes(TITLE_ONLY.encode("cp1251"))
    assert table.frame.select(ROW, "sku", "qty").rows() == [
        (2, "A-1", "5"), (3, "A-2", "3"), (4, "A-3", "2")]
    note = next(n for n in table.notes if "unclear" in n)
    assert "windows-1252" in note and "windows-1251" in note and "'title'" in note
    assert "--encoding" in note


@pytest.mark.parametrize(("text", "where"), [(IN_SKU, "row 3's 'sku' cell"),
                                             (IN_LOCATION, "row 2's 'location' cell")],
                         ids=["sku", "location"])
def test_doubtful_characters_in_a_used_cell_ask_offering_windows_1252(text: str,
                                                                     where: str) -> None:
    with pytest.raises(InputFileError) as err:
        read_stock_bytes(text.encode("cp1251"))
    assert where in err.value.detail
    assert "windows-1252" in err.value.detail and "windows-1251" in err.value.detail


def test_naming_the_encoding_reads_the_used_cells_right(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(IN_SKU.encode("cp1251"))
    table = read_stock_file(path, encoding="windows-1251")
    assert table.frame["sku"].to_list() == ["A-1", "ЧАЙ-2"]
    assert not any("unclear" in n for n in table.notes)


def test_a_multi_byte_candidate_still_asks_and_names_windows_1252() -> None:
    # Bytes that read as Korean or Japanese as well as a Western code page: a guess could
    # move cell boundaries, so the file is not read on a guess.
    with pytest.raises(InputFileError) as err:
        read_stock_bytes(b"sku,title,qty\nA-1,\xc0\xc1\xc2\xc3\xc4\xc5 \xd0\xd1,5\n")
    assert "windows-1252" in err.value.detail


def _env_offline(tmp_path: Path) -> dict[str, str]:
    class _NoStore:
        store_hash, url = "teststore", "http://127.0.0.1:9"

    env = env_for(_NoStore(), tmp_path)  # type: ignore[arg-type]
    env.pop("BIGCOMMERCE_ACCESS_TOKEN")
    return env


def test_cli_plan_reads_title_only_doubt_and_refuses_sku_doubt(tmp_path: Path) -> None:
    env = _env_offline(tmp_path)
    fine = tmp_path / "titles.csv"
    fine.write_bytes(TITLE_ONLY.encode("cp1251"))
    result = run_invsync(["plan", str(fine), "--location-id", "1"], env)
    assert result.returncode == 0, output(result)
    report = result.report()
    assert report["counts"]["valid"] == 3
    assert any("unclear" in n and "windows-1252" in n for n in report["notes"])

    bad = tmp_path / "skus.csv"
    bad.write_bytes(IN_SKU.encode("cp1251"))
    result = run_invsync(["plan", str(bad)], env)
    assert result.returncode == 65, output(result)
    assert "windows-1252" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_doubtful_characters_only_in_an_unused_header_name_it_in_the_note() -> None:
    table = read_stock_bytes("sku,Название товара,qty\nA-1,x,5\nA-2,y,3\n".encode("cp1251"))
    assert table.frame.select("sku", "qty").rows() == [("A-1", "5"), ("A-2", "3")]
    note = next(n for n in table.notes if "unclear" in n)
    assert f"({table.headers[1]!r})" in note and "(none)" not in note
