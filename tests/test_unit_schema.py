"""Unit tests of the pandera schema of a parsed stock row (invsync.rules.stock).

The schema is the second line of defence behind stage 2: a frame stage 2 builds wrongly
(a wrong type, a missing row number, an identifier kind the store does not know, an id
out of range) must fail it, and a good one must pass.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
import pytest
from pandera.config import ValidationDepth, config_context
from test_validate import parsed_frame

from invsync.rules.stock import stock_row_schema


def failures(frame: pl.DataFrame) -> list[tuple[str, str]]:
    """(column, check) of every failure; empty when the frame passes."""
    with config_context(validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            stock_row_schema().validate(frame.lazy(), lazy=True).collect()
        except pa.errors.SchemaErrors as exc:
            cases = exc.failure_cases
            return sorted({(str(c), str(k)) for c, k in
                           zip(cases["column"].to_list(), cases["check"].to_list(),
                               strict=True)})
    return []


def test_a_good_frame_passes_with_extra_columns_and_the_lowest_ids() -> None:
    frame = parsed_frame(product_id=[1, None], variant_id=[None, 1],
                         product_id_text=["1", None], variant_id_text=[None, "1"],
                         quantity=[0, 2147483647], quantity_text=["0", "2147483647"],
                         identifier=["product_id", "variant_id"])
    assert failures(frame.with_columns(extra=pl.lit("kept"))) == []


def test_the_schema_is_named() -> None:
    assert stock_row_schema().name == "stock_row"
    assert stock_row_schema().strict is False


@pytest.mark.parametrize("column", ["product_id", "variant_id", "location_id"])
def test_ids_start_at_one(column: str) -> None:
    assert any(col == column for col, _ in failures(parsed_frame(**{column: [0, 1]})))


def test_a_row_number_is_required() -> None:
    frame = parsed_frame().with_columns(pl.Series("__row", [2, None], pl.Int64))
    assert ("__row", "not_nullable") in failures(frame)


def test_an_unknown_identifier_kind_fails() -> None:
    got = failures(parsed_frame(identifier=["sku", "barcode"]))
    assert any(col == "identifier" and "isin" in chk for col, chk in got)


@pytest.mark.parametrize(("column", "value"), [
    ("__row", ["2", "3"]), ("sku", [1, 2]), ("identifier", [1, 2]),
    ("product_id", ["1", "2"]), ("quantity", [1.0, 2.0]),
    ("quantity_negative", [0, 0]), ("quantity_too_large", [0, 0]),
    ("location_ambiguous", [0, 0]), ("duplicate", [0, 0]),
])
def test_each_column_has_its_type(column: str, value: list[object]) -> None:
    frame = parsed_frame().with_columns(pl.Series(column, value))
    assert any(col == column and "dtype" in chk for col, chk in failures(frame)), failures(frame)


@pytest.mark.parametrize(("column", "code"), [
    ("location_mismatch", "location_mismatch"), ("location_unknown", "unknown_location"),
    ("location_disabled", "disabled_location"), ("has_date", "date_in_column"),
    ("quantity_negative", "quantity_negative"), ("duplicate", "duplicate_item"),
])
def test_a_rule_that_cannot_be_decided_fails_closed(column: str, code: str) -> None:
    # A null flag (stage 2 built the frame wrongly) fails its rule: never a silent pass.
    frame = parsed_frame(**{column: [None, False]})
    assert frame[column].dtype == pl.Boolean
    assert code in {check for _, check in failures(frame)}
    assert code not in {check for _, check in failures(parsed_frame())}


# A frame breaking each rule and each column check once: the fast check that spares a clean
# file the pandera import (validate.passes_every_rule) must agree with the schema on all.
_AGREEMENT_FRAMES = {
    "good": parsed_frame(),
    "good, extra column, lowest and highest values": parsed_frame(
        product_id=[1, None], variant_id=[None, 1], product_id_text=["1", None],
        variant_id_text=[None, "1"], quantity=[0, 2147483647],
        quantity_text=["0", "2147483647"], identifier=["product_id", "variant_id"],
    ).with_columns(extra=pl.lit("kept")),
    "no rows": parsed_frame().head(0),
    "row number missing": parsed_frame().with_columns(pl.Series("__row", [2, None], pl.Int64)),
    "unknown identifier kind": parsed_frame(identifier=["sku", "barcode"]),
    "product id 0": parsed_frame(product_id=[0, None], product_id_text=["0", None]),
    "location 0": parsed_frame(location_id=[0, 1]),
    "quantity above the maximum": parsed_frame(quantity=[2147483648, 1]),
    "quantity below 0": parsed_frame(quantity=[-1, 1]),
    "a flag null": parsed_frame(duplicate=[None, False]),
    **{f"{flag} null (a flag only the rules read)": parsed_frame(**{flag: [None, False]})
       for flag in ("location_unknown", "location_disabled", "location_mismatch", "has_date")},
    "an identifier null beside a kind": parsed_frame(identifier=[None, "sku"]),
    "no identifier": parsed_frame(identifier=[None, "sku"], sku=[None, "B"]),
    "invalid variant id": parsed_frame(variant_id_text=["x", None]),
    "invalid product id": parsed_frame(product_id_text=["x", None]),
    "invalid location": parsed_frame(location_id=[None, 1], location_id_text=["x", None]),
    "ambiguous location": parsed_frame(location_ambiguous=[True, False]),
    "unknown location": parsed_frame(location_unknown=[True, False]),
    "disabled location": parsed_frame(location_disabled=[True, False]),
    "location mismatch": parsed_frame(location_mismatch=[True, False]),
    "missing quantity": parsed_frame(quantity=[None, 2], quantity_text=[None, "2"]),
    "a date": parsed_frame(has_date=[False, True]),
    "quantity not whole": parsed_frame(quantity=[None, 2], quantity_text=["1.5", "2"]),
    "negative flagged": parsed_frame(quantity_negative=[True, False]),
    "too large flagged": parsed_frame(quantity_too_large=[True, False]),
    "duplicate": parsed_frame(duplicate=[True, True]),
    "a column missing": parsed_frame().drop("duplicate"),
    **{f"{column} of another type": parsed_frame().with_columns(pl.Series(column, value))
       for column, value in [("__row", ["2", "3"]), ("sku", [1, 2]), ("identifier", [1, 2]),
                             ("product_id", ["1", "2"]), ("quantity", [1.0, 2.0]),
                             ("duplicate", [0, 0])]},
}


@pytest.mark.parametrize("name", list(_AGREEMENT_FRAMES))
def test_the_fast_check_agrees_with_the_schema(name: str) -> None:
    from invsync.stages.validate import passes_every_rule

    frame = _AGREEMENT_FRAMES[name]
    assert passes_every_rule(frame) == (failures(frame) == []), failures(frame)
