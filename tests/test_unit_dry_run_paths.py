"""The dry run's shortcuts give the same answers as the long way round.

Each shortcut (cells not trimmed when the bytes show no edge whitespace, blank rows found
from the first column, the report's JSON text) is checked against the plain computation on
seeded random files full of the cases that matter: spaces, tabs, carriage returns, quotes,
blank rows and non-ASCII whitespace.
"""

from __future__ import annotations

import json
import random
from dataclasses import replace

import polars as pl
import pytest

from invsync.stages.ingest import read_stock_bytes
from invsync.stages.ingest.table import _blank_rows
from invsync.stages.report import RunReport, report_json
from invsync.stages.validate import validate
from invsync.tables import ROW

_PIECES = ["A", "b1", "7", "12", "-3", "1.5", "", " ", "\t", "\u00a0", "x y", "'=1", "0"]


def _cell(rng: random.Random) -> str:
    text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 3)))
    if rng.random() < 0.1:
        text = f'"{text}\n"' if rng.random() < 0.5 else f'"{text}"'
    return text


def _csv(rng: random.Random, delimiter: str, newline: str) -> bytes:
    lines = [delimiter.join(["sku", "location_id", "quantity", "note"])]
    for _ in range(rng.randint(1, 12)):
        if rng.random() < 0.1:
            lines.append(delimiter * rng.randint(0, 3))  # a blank row
            continue
        lines.append(delimiter.join([
            rng.choice(["SKU-1", "SKU-2", "SKU-3", _cell(rng)]),
            rng.choice(["1", "2", " 1", _cell(rng)]),
            rng.choice(["5", "0", "12 ", _cell(rng)]), _cell(rng)]))
    text = newline.join(lines) + (newline if rng.random() < 0.8 else "")
    if rng.random() < 0.1:
        text = text.replace("A", "A\r", 1)  # a stray carriage return inside a cell
    return text.encode("utf-8")


def _outcome(table: object) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    checked = validate(table)  # type: ignore[arg-type]
    return checked.valid.rows(), checked.rejected.rows()


@pytest.mark.parametrize("seed", range(4))
def test_untrimmed_columns_validate_as_trimmed_ones(seed: int) -> None:
    """Whatever the file, skipping the trim of the columns ingest calls trimmed changes no
    valid row and no rejection: the flag is only set when trimming would change nothing."""
    rng = random.Random(seed)
    fast_seen = 0
    for _ in range(60):
        data = _csv(rng, rng.choice([",", ";", "\t"]), rng.choice(["\n", "\r\n"]))
        try:
            table = read_stock_bytes(data)
        except Exception:  # a file ingest refuses is refused the same either way
            continue
        fast_seen += bool(table.trimmed)
        assert _outcome(table) == _outcome(replace(table, trimmed=frozenset()))
    assert fast_seen  # the shortcut was taken at least once


def test_trimmed_only_when_the_bytes_show_no_edge_whitespace() -> None:
    assert read_stock_bytes(b"sku,location_id,quantity\r\nA,1,5\r\n").trimmed == {
        "sku", "location_id", "quantity"}
    for data in (b"sku,location_id,quantity\nA ,1,5\n",    # a trailing space
                 b'sku,location_id,quantity\n"A\n",1,5\n',  # a quoted line break
                 b"sku,location_id,quantity\nA\r,1,5\n",    # a stray carriage return
                 "sku,location_id,quantity\nA\u00a0,1,5\n".encode()):  # non-ASCII space
        table = read_stock_bytes(data)
        assert table.trimmed == frozenset()
        assert validate(table).valid["sku"].to_list() == ["A"]


@pytest.mark.parametrize("seed", range(4))
def test_blank_rows_match_the_every_cell_rule(seed: int) -> None:
    rng = random.Random(seed)
    values = ["", " ", "\u00a0", None, "x", " y "]
    for _ in range(50):
        width, height = rng.randint(1, 4), rng.randint(0, 20)
        headers = [f"c{i}" for i in range(width)]
        frame = pl.DataFrame({h: [rng.choice(values) for _ in range(height)] for h in headers},
                             schema=dict.fromkeys(headers, pl.String)).with_row_index(ROW)
        expected = [all(v is None or not v.strip() for v in row)
                    for row in frame.select(headers).rows()]
        found = _blank_rows(frame, headers)
        assert (found.to_list() if found is not None else [False] * height) == expected


def test_report_json_is_the_report_as_json() -> None:
    report = RunReport(run_id="r1", status="dry_run", started_at="2026-01-01T00:00:00Z",
                       notes=["line\nbreak \"quoted\" ünïcode"],
                       changes=[{"location_id": 1, "identifier": "sku", "item": "A\n",
                                 "before": None, "after": 3, "read_at": None,
                                 "status": "planned"}] * 3,
                       rejected=[{"row": 2, "reason": "x", "message": "é"}],
                       options={"nested": {"a": [1, 2], "b": {}}, "empty": []})
    data = report.to_dict()
    text = report_json(data)
    assert json.loads(text) == json.loads(json.dumps(data))
    # One line per record of the long lists: the file stays readable and greppable.
    assert text.decode().count('"identifier": "sku"') == 3
    assert len([ln for ln in text.decode().splitlines() if '"status": "planned"' in ln]) == 3


@pytest.mark.parametrize("seed", range(3))
def test_biggest_moves_are_the_sorted_plans_head(seed: int) -> None:
    """The page's biggest drops and rises, found without sorting the whole plan, are the
    first n rows of the whole plan sorted (ties broken by location and item)."""
    from invsync.html.report_page import _IS_CHANGED, _normalise_plan, biggest_moves

    rng = random.Random(seed)
    for _ in range(80):
        n, size = rng.randint(0, 25), rng.randint(0, 90)
        plan = pl.DataFrame(
            {"location_id": [rng.randint(1, 3) for _ in range(size)],
             "identifier": ["sku"] * size,
             "item": [f"S{rng.randint(0, 9)}" for _ in range(size)],
             "before": [rng.choice([None, rng.randint(0, 9)]) for _ in range(size)],
             "after": [rng.randint(0, 9) for _ in range(size)]},
            schema_overrides={"before": pl.Int64})
        changed = _normalise_plan(plan).filter(_IS_CHANGED)
        keys = ["delta", "location_id", "item"]
        drops, rises = biggest_moves(plan, n)
        assert drops.equals(changed.filter(pl.col("delta") < 0).sort(keys, nulls_last=True)
                            .head(n))
        assert rises.equals(changed.filter(pl.col("delta") > 0).sort(
            keys, descending=[True, False, False], nulls_last=True).head(n))


def test_report_warm_up_never_fails_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A page that cannot be prepared in the background is only logged: the run goes on."""
    from invsync.html import report_page
    from invsync.stages import report

    def broken() -> None:
        raise RuntimeError("templates missing")

    monkeypatch.setattr(report, "_warm", [])
    monkeypatch.setattr(report_page, "warm_up", broken)
    report.warm_up()  # no exception
    assert report._warm == []
    monkeypatch.undo()
    monkeypatch.setattr(report, "_warm", [])
    report.warm_up()
    assert report._warm == [True]
