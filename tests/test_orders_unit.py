"""Unit tests of the sold-since subtraction and of which order lines hold units."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest

from invsync.stages.sold_since import subtract_sold
from invsync.store.orders import SOLD_SCHEMA, StockBehavior, since_param, units_taken
from invsync.tables import ROW

PLACED = StockBehavior("order_placed", True)
SHIPPED = StockBehavior("order_completed_or_shipped", True)
NO_REFUND = StockBehavior("order_placed", False)


def _valid(rows: list[tuple[int, str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {ROW: list(range(2, 2 + len(rows))), "location_id": [r[0] for r in rows],
         "identifier": [r[1] for r in rows], "item_key": [r[2] for r in rows],
         "address": [r[1] for r in rows], "address_key": [r[2] for r in rows],
         "quantity": [r[3] for r in rows]})


def _lines(rows: list[tuple[str | None, int | None, int | None, int]]) -> pl.DataFrame:
    return pl.DataFrame([(i, *r) for i, r in enumerate(rows)], schema=SOLD_SCHEMA, orient="row")


def test_subtracts_per_sku_variant_and_product_never_below_zero() -> None:
    valid = _valid([(1, "sku", "A", 10), (1, "variant_id", "1001", 5),
                    (1, "product_id", "101", 3), (1, "sku", "Z", 4), (2, "sku", "A", 7),
                    (1, "sku", "C", 1)])
    lines = _lines([("A", 100, 1000, 2), ("B", 100, 1001, 1), ("P", 101, 1003, 1),
                    ("P", 101, 1003, 1), ("C", 102, 1005, 5), ("Q", 109, 1009, 9)])
    out, summary = subtract_sold(valid, lines)
    got = dict(zip(out[ROW].to_list(), zip(out["file_level"].to_list(),
                                           out["sold_since_as_of"].to_list(),
                                           out["quantity"].to_list(), strict=True), strict=True))
    assert got == {2: (10, 2, 8), 3: (5, 1, 4), 4: (3, 2, 1), 5: (4, 0, 4),
                   6: (7, None, 7),  # another location: not known, not lowered
                   7: (1, 5, 0)}  # never below 0
    assert summary.rows_lowered == 4
    assert summary.units_subtracted == 2 + 1 + 2 + 1
    assert summary.units_sold == 2 + 1 + 2 + 5
    assert summary.units_not_in_file == 9
    assert summary.other_locations == [2]
    assert out.columns[: len(valid.columns)] == valid.columns


def test_no_orders_changes_nothing() -> None:
    valid = _valid([(1, "sku", "A", 10)])
    out, summary = subtract_sold(valid, _lines([]))
    assert out["quantity"].to_list() == [10] and out["sold_since_as_of"].to_list() == [0]
    assert summary.units_sold == 0 and summary.units_not_in_file == 0


@pytest.mark.parametrize(("behavior", "status", "shipped", "units"), [
    (PLACED, 11, "", 3), (PLACED, 0, "", 0), (PLACED, 6, "", 0), (PLACED, 5, "", 0),
    (PLACED, 4, "", 0), (PLACED, 2, "x", 3), (PLACED, 1, "", 3),
    (SHIPPED, 11, "", 0), (SHIPPED, 9, "", 0), (SHIPPED, 2, "x", 3), (SHIPPED, 10, "", 3),
    (SHIPPED, 3, "x", 3), (SHIPPED, 5, "", 0), (SHIPPED, 4, "x", 0),
    (NO_REFUND, 5, "", 3), (NO_REFUND, 4, "", 3),
    (StockBehavior("order_completed_or_shipped", False), 4, "x", 3),
    (StockBehavior("order_completed_or_shipped", False), 5, "", 0),
])
def test_units_taken_follows_the_stores_stock_behaviour(behavior: StockBehavior, status: int,
                                                         shipped: str, units: int) -> None:
    order = {"status_id": status, "date_shipped": shipped}
    assert units_taken(order, {"quantity": 3, "quantity_refunded": 0}, behavior) == units


def test_refunded_units_of_a_partially_refunded_order_are_back_on_stock() -> None:
    order = {"status_id": 14, "date_shipped": ""}
    line = {"quantity": 5, "quantity_refunded": 2}
    assert units_taken(order, line, PLACED) == 3
    assert units_taken(order, line, NO_REFUND) == 5


def test_min_date_created_rounds_down_to_the_second_in_utc() -> None:
    when = datetime(2026, 12, 6, 3, 0, 0, 900_000, tzinfo=UTC)
    assert since_param(when) == "2026-12-06T03:00:00+00:00"


def test_library_settings_take_as_of_like_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from invsync.run.config import Settings

    monkeypatch.delenv("INVSYNC_CONFIG", raising=False)
    monkeypatch.delenv("INVSYNC_PROFILE", raising=False)
    settings = Settings.from_config(None, as_of="mtime")
    assert settings.as_of == "mtime" and settings.max_as_of_age_s == 48 * 3600
    assert settings.public()["as_of"] == "mtime"


def test_resolve_as_of_reads_offsets_and_refuses_what_cannot_be_true(tmp_path: Any) -> None:
    from invsync.errors import UsageError
    from invsync.run.as_of import resolve_as_of

    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    when, source, local = resolve_as_of("2026-12-06T02:00:00+01:00", tmp_path, 48 * 3600, now)
    assert when == datetime(2026, 12, 6, 1, 0, tzinfo=UTC) and source == "given"
    assert local == "2026-12-06T02:00:00+01:00"
    assert resolve_as_of("2026-12-06T12:00:30Z", tmp_path, 3600, now)[0] > now  # clock skew
    for bad, words in [("2026-12-06T12:02:00Z", "in the future"),
                       ("2026-12-06T10:59:00Z", "older than max_as_of_age"),
                       ("2026-12-06T02:00", "no time zone offset"), ("soon", "not a time")]:
        with pytest.raises(UsageError, match=words):
            resolve_as_of(bad, tmp_path, 3600, now)
    with pytest.raises(UsageError, match="modification time"):
        resolve_as_of("mtime", tmp_path / "missing.csv", 3600, now)


def test_as_of_needs_the_store_even_for_a_dry_run() -> None:
    from invsync.errors import UsageError
    from invsync.run.config import Settings

    with pytest.raises(UsageError, match="--as-of reads the store's orders"):
        Settings(as_of="mtime", dry_run=True).check(needs_store=False)
    Settings(as_of="mtime", plan_file=True).check(needs_store=False)  # not applied there
