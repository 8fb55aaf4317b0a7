"""Fast unit tests of stage 2 (invsync.stages.validate) from in-memory tables.

No file is read: each test builds the :class:`StockTable` ingest would produce (text cells
under their headers, file row numbers, the column mapping), so these run in milliseconds
and are the set ``make mutate`` checks validate against (with tests/test_validate.py).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from invsync.rules.stock import MAX_QUANTITY
from invsync.stages.ingest import ROW, StockTable
from invsync.stages.validate import REJECTED_SCHEMA, QuantityRules, Validated, validate
from invsync.tables import Location

MAPPING = {"sku": "SKU", "quantity": "Qty"}


def table(columns: dict[str, list[str | None]], mapping: dict[str, str] | None = None, *,
          fmt: str = "csv", problems: pl.DataFrame | None = None,
          layout: str | None = None) -> StockTable:
    """A table as ingest builds it: text columns under their headers, rows from 2."""
    height = len(next(iter(columns.values())))
    frame = pl.DataFrame({h: pl.Series(h, v, dtype=pl.String) for h, v in columns.items()})
    frame = frame.with_columns(pl.Series(ROW, range(2, height + 2), dtype=pl.Int64))
    return StockTable(frame=frame, path=Path(f"in.{fmt}"), format=fmt, sha256="0" * 64,
                      mapping=dict(mapping or MAPPING), headers=list(columns),
                      problems=problems, layout=layout)


def skus(*rows: tuple[str | None, str | None], **kwargs: object) -> Validated:
    """Validate (SKU, Qty) rows."""
    t = table({"SKU": [r[0] for r in rows], "Qty": [r[1] for r in rows]})
    return validate(t, **kwargs)  # type: ignore[arg-type]


def rejected(v: Validated) -> dict[int, tuple[str, str | None, str, str]]:
    """row -> (reason, value, column, message)."""
    return {r[ROW]: (r["reason"], r["value"], r["column"], r["message"])
            for r in v.rejected.to_dicts()}


def quantities(v: Validated) -> dict[int, int]:
    return dict(zip(v.valid[ROW].to_list(), v.valid["quantity"].to_list(), strict=True))


# --------------------------------------------------------------------------- rules


def test_quantity_rules_describe_names_every_rule() -> None:
    rules = QuantityRules(text_map={"In Stock": 5}, buffer=1, clamp_negative=True, maximum=9)
    assert rules.describe() == {"text_map": {"In Stock": 5}, "buffer": 1,
                                "clamp_negative": True, "maximum": 9}
    assert QuantityRules().describe() == {"text_map": {}, "buffer": 0,
                                          "clamp_negative": False, "maximum": None}


# --------------------------------------------------------------------------- cells


def test_an_empty_table_validates_to_empty_frames() -> None:
    v = skus()
    assert v.valid.height == 0 and v.rejected.height == 0
    assert dict(v.rejected.schema) == REJECTED_SCHEMA


def test_cells_invsync_escaped_read_back_as_their_text() -> None:
    # rejected.csv escapes formula-like cells with a quote; re-uploaded, they are the text.
    v = skus(("'=A1", "1"), ("' +B2 ", "2"), ("C'3", "3"), ("'plain", "4"))
    assert v.valid["sku"].to_list() == ["=A1", "+B2", "C'3", "'plain"]
    assert quantities(v) == {2: 1, 3: 2, 4: 3, 5: 4}


def test_valid_rows_name_the_item_as_the_row_did() -> None:
    t = table({"SKU": ["A", None], "Variant": [None, "7"], "Qty": ["1", "2"]},
              {"sku": "SKU", "variant_id": "Variant", "quantity": "Qty"})
    v = validate(t)
    assert v.valid.select("identifier", "item_key", "address", "address_key").rows() == [
        ("sku", "A", "sku", "A"), ("variant_id", "7", "variant_id", "7")]


def test_identities_rekey_items_but_rows_keep_their_address() -> None:
    t = table({"SKU": ["A", None], "Variant": [None, "7"], "Qty": ["1", "2"]},
              {"sku": "SKU", "variant_id": "Variant", "quantity": "Qty"})
    seen: list[pl.DataFrame] = []

    def identities(keys: pl.DataFrame) -> pl.DataFrame:
        seen.append(keys)
        return pl.DataFrame({"identifier": ["sku"], "item_key": ["A"],
                             "canon_identifier": ["variant_id"], "canon_key": ["7"]})

    v = validate(t, identities=identities, duplicates="sum")
    assert seen[0].columns == ["location_id", "identifier", "item_key"]
    assert v.valid.select("identifier", "item_key", "address", "address_key",
                          "quantity").rows() == [("variant_id", "7", "sku", "A", 3)]
    assert v.merged_rows == 1


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(("text", "expected"), [
    ("1234567890.0", 1234567890),   # 10 digits in the decimal form: still a level
    ("+0001234567890", 1234567890),
    (str(MAX_QUANTITY) + ".00", MAX_QUANTITY),
])
def test_ten_digit_quantities_in_any_form_are_levels(text: str, expected: int) -> None:
    assert quantities(skus(("A", text))) == {2: expected}


@pytest.mark.parametrize("text", ["12345678901.0", "+12345678901", "99999999999999999999"])
def test_more_than_ten_digits_is_too_large_even_under_a_maximum(text: str) -> None:
    # Beyond any level the store takes: rejected, never capped down to the maximum.
    v = skus(("A", text), rules=QuantityRules(maximum=5))
    assert v.valid.height == 0
    assert rejected(v)[2][:2] == ("quantity_too_large", text)


def test_a_huge_negative_is_negative_and_clamps_to_zero() -> None:
    huge = "-" + "9" * 25
    assert rejected(skus(("A", huge)))[2][0] == "quantity_negative"
    assert rejected(skus(("A", "-12345678901.0")))[2][0] == "quantity_negative"
    v = skus(("A", huge), ("B", "-3"), rules=QuantityRules(clamp_negative=True))
    assert quantities(v) == {2: 0, 3: 0}


@pytest.mark.parametrize(("text", "ok"), [
    (str(MAX_QUANTITY), True), (str(MAX_QUANTITY) + ".0", True), (str(MAX_QUANTITY + 1), False),
    ("1", True), ("0", False)])
def test_id_bounds(text: str, ok: bool) -> None:
    t = table({"Product": [text], "Qty": ["1"]}, {"product_id": "Product", "quantity": "Qty"})
    v = validate(t)
    assert (v.valid.height == 1) is ok
    if ok:
        assert v.valid["product_id"].item() == int(float(text))
    else:
        assert rejected(v)[2][0] == "invalid_product_id"


# --------------------------------------------------------------------------- unreadable rows


def test_rows_ingest_could_not_read_are_rejected_as_they_are() -> None:
    problems = pl.DataFrame({ROW: [3], "column": ["Qty"], "value": ["\"5"],
                             "reason": ["unreadable_row"], "message": ["a stray quote"]},
                            schema={**REJECTED_SCHEMA, ROW: pl.Int32})
    t = table({"SKU": ["A", "B", "C", "D"], "Qty": ["1", "x", "3", "-"]}, problems=problems)
    v = validate(t)
    assert quantities(v) == {2: 1, 4: 3}
    assert rejected(v)[3] == ("unreadable_row", "\"5", "Qty", "a stray quote")
    assert rejected(v)[5][0] == "quantity_not_whole"
    assert v.rejected[ROW].to_list() == [3, 5]  # in file order
    assert dict(v.rejected.schema) == REJECTED_SCHEMA


# --------------------------------------------------------------------------- locations

LOCATIONS = [Location(1, "MAIN"), Location(2, "BACK"), Location(3, "OFF", enabled=False)]


def test_a_location_code_column_beside_the_id_column_must_agree() -> None:
    t = table({"SKU": ["A", "B", "C", "D"], "Location ID": ["1", "2", "1", None],
               "Location Code": ["MAIN", "MAIN", " ", "BACK"], "Qty": ["1", "2", "3", "4"]},
              {"sku": "SKU", "location_id": "Location ID", "location_code": "Location Code",
               "quantity": "Qty"})
    v = validate(t, locations=LOCATIONS)
    assert quantities(v) == {2: 1, 4: 3, 5: 4}
    assert rejected(v)[3][0] == "location_mismatch"
    assert dict(zip(v.valid[ROW], v.valid["location_id"], strict=True)) == {2: 1, 4: 1, 5: 1}


# --------------------------------------------------------------------------- duplicates


def test_a_sum_of_exactly_the_maximum_is_a_level() -> None:
    half = MAX_QUANTITY // 2
    v = skus(("A", str(half)), ("A", str(MAX_QUANTITY - half)), duplicates="sum")
    assert quantities(v) == {2: MAX_QUANTITY}
    assert v.rejected.height == 0


def _big_sum(rows: int) -> Validated:
    each = MAX_QUANTITY // 2 + 1
    t = table({"SKU": ["A"] * rows, "Stock left": [str(each)] * rows},
              {"sku": "SKU", "quantity": "Stock left"})
    return validate(t, duplicates="sum")


def test_a_sum_above_the_maximum_names_five_rows_then_how_many_more() -> None:
    each = MAX_QUANTITY // 2 + 1
    v = _big_sum(7)
    assert v.valid.height == 0
    found = rejected(v)
    assert sorted(found) == list(range(2, 9))
    reason, value, column, message = found[8]
    assert (reason, value, column) == ("quantity_too_large", str(each), "Stock left")
    assert message == (f"the quantities of rows 2, 3, 4, 5, 6 and 2 more add up to "
                       f"{7 * each:,}, above the store's maximum of {MAX_QUANTITY:,} — check "
                       f"the numbers, or keep one row with `--duplicates last`")


def test_a_sum_above_the_maximum_of_exactly_five_rows_names_them_all() -> None:
    message = rejected(_big_sum(5))[2][3]
    assert message.startswith("the quantities of rows 2, 3, 4, 5, 6 add up to ")


def test_a_sum_above_the_maximum_leaves_other_items_alone() -> None:
    each = MAX_QUANTITY // 2 + 1
    v = skus(("A", str(each)), ("B", "4"), ("A", str(each)), ("B", "5"), duplicates="sum")
    assert quantities(v) == {3: 9}
    assert sorted(rejected(v)) == [2, 4]


# --------------------------------------------------------------------------- the schema


@pytest.mark.parametrize("flag", ["location_unknown", "location_disabled", "location_mismatch",
                                  "has_date", "duplicate"])
def test_a_rule_that_raises_breaks_the_run_instead_of_passing_every_row(flag: str) -> None:
    from test_validate import parsed_frame

    from invsync.stages.validate import _run_schema

    assert _run_schema(parsed_frame()).height == 0
    # A flag column stage 2 left untyped (all null): the rule over it cannot even run.
    with pytest.raises(AssertionError, match="broke its own schema"):
        _run_schema(parsed_frame().with_columns(pl.lit(None).alias(flag)))


# --------------------------------------------------------------------------- more locations

NAMED = [Location(1, "MAIN", label="Warehouse"), Location(2, "BACK", label="Shop "),
         Location(4, "X4", label="Twin"), Location(5, "X5", label="twin"),
         Location(6, "OLD", enabled=False, label="Old")]


def _located(texts: list[str | None], header: str = "Location", layout: str | None = None,
             **kwargs: object) -> Validated:
    t = table({"SKU": [f"S{i}" for i in range(len(texts))], header: texts,
               "Qty": ["1"] * len(texts)},
              {"sku": "SKU", "location_id": header, "quantity": "Qty"}, layout=layout)
    return validate(t, **kwargs)  # type: ignore[arg-type]


def _outcome(v: Validated) -> dict[int, int | str]:
    out: dict[int, int | str] = dict(zip(v.valid[ROW], v.valid["location_id"], strict=True))
    out.update({row: r[0] for row, r in rejected(v).items()})
    return dict(sorted(out.items()))


def test_a_layout_of_location_names_resolves_labels_and_codes_never_bare_ids() -> None:
    v = _located(["warehouse", "BACK", "SHOP", "1", "Twin", "Old", None],
                 layout="shopify-inventory", locations=NAMED)
    assert _outcome(v) == {2: 1, 3: 2, 4: 2, 5: "unknown_location", 6: "unknown_location",
                           7: "disabled_location", 8: 1}


def test_without_a_layout_the_same_column_takes_ids_codes_and_labels() -> None:
    # The store's label names a location wherever one is read (issue: locations by name);
    # a code wins over a label, and a label two locations share names neither.
    v = _located(["1", "BACK", "warehouse", "Twin", "nowhere"], locations=NAMED)
    assert _outcome(v) == {2: 1, 3: 2, 4: 1, 5: "unknown_location", 6: "unknown_location"}
    # A layout whose location column says "either" leaves the header to decide.
    v = _located(["1", "BACK"], layout="amazon-fba", locations=NAMED)
    assert _outcome(v) == {2: 1, 3: 2}
    # An id layout: a number is an id even when another location has it as its code.
    coded = [Location(1, "MAIN"), Location(7, "20")]
    assert _outcome(_located(["20", "MAIN"], header="Loc", layout="bigcommerce-inventory",
                             locations=coded)) == {2: "unknown_location", 3: 1}
    assert _outcome(_located(["20"], header="Loc", locations=coded)) == {2: 7}


def test_a_row_without_a_location_is_blamed_on_the_default_it_was_given() -> None:
    v = _located([None, "2"], locations=NAMED, default_location=9)
    found = rejected(v)
    assert found[2][:3] == ("unknown_location", "9", "Location")
    assert _outcome(v) == {2: "unknown_location", 3: 2}
    assert v.source.frame.height == 2 and v.source.mapping["location_id"] == "Location"


def test_a_store_without_locations_knows_none() -> None:
    v = _located([None, "1"], locations=[])
    assert _outcome(v) == {2: "unknown_location", 3: "unknown_location"}


def test_without_the_stores_list_ids_pass_and_flags_stay_false() -> None:
    v = _located(["3", None, "x", "0"], default_location=2)
    # "x" may be a code or a name: kept for the store to check, out of the plan.
    assert _outcome(v) == {2: 3, 3: 2, 5: "invalid_location"}
    assert v.location_unchecked == 1


def test_a_code_column_naming_no_location_is_a_mismatch() -> None:
    t = table({"SKU": ["A", "B"], "Location ID": ["1", "2"], "Location Code": ["NOPE", "BACK"],
               "Qty": ["1", "2"]},
              {"sku": "SKU", "location_id": "Location ID", "location_code": "Location Code",
               "quantity": "Qty"})
    v = validate(t, locations=LOCATIONS)
    assert _outcome(v) == {2: "location_mismatch", 3: 2}


def test_under_an_id_header_text_that_is_no_id_nor_code_is_invalid_not_unknown() -> None:
    v = _located(["x", "99", "BACK"], header="Location ID", locations=LOCATIONS)
    assert _outcome(v) == {2: "invalid_location", 3: "unknown_location", 4: 2}


# --------------------------------------------------------------------------- blame


def test_a_row_failing_several_rules_gets_the_first_reason_by_priority() -> None:
    from invsync.rules.stock import REASONS

    order = list(REASONS)
    t = table({"SKU": [None, "B", "B", "C"], "Variant": ["x", None, None, None],
               "Location": ["0", "1", "1", "nope"], "Qty": ["-1", "1.5", "2", "2024-01-05"]},
              {"sku": "SKU", "variant_id": "Variant", "location_id": "Location",
               "quantity": "Qty"})
    v = validate(t, locations=LOCATIONS)
    found = {row: r[0] for row, r in rejected(v).items()}
    assert found == {2: "invalid_variant_id", 3: "quantity_not_whole", 4: "duplicate_item",
                     5: "unknown_location"}
    # Each of those rows broke later rules too: the reported one comes first in REASONS.
    assert order.index("invalid_variant_id") < order.index("invalid_location") \
        < order.index("quantity_negative")
    assert order.index("unknown_location") < order.index("date_in_column")


def test_duplicates_are_blamed_on_the_column_that_named_the_item() -> None:
    t = table({"SKU": [None, None], "Variant ID": ["7", "7"], "Qty": ["1", "2"]},
              {"sku": "SKU", "variant_id": "Variant ID", "quantity": "Qty"})
    found = rejected(validate(t))
    assert {r[:3] for r in found.values()} == {("duplicate_item", "7", "Variant ID")}
    assert found[2][3] == found[3][3]  # one message per group, naming both rows


def test_a_table_without_identifier_columns_blames_sku() -> None:
    v = validate(table({"Qty": ["1"]}, {"quantity": "Qty"}))
    assert rejected(v)[2][:3] == ("missing_identifier", None, "sku")


def test_a_default_location_the_store_lacks_is_blamed_on_the_location_column() -> None:
    v = skus(("A", "1"), locations=LOCATIONS, default_location=9)
    assert rejected(v)[2][:3] == ("unknown_location", "9", "location_id")
    assert skus(("A", "1"), locations=LOCATIONS, default_location=2).valid["location_id"]\
        .to_list() == [2]


def test_seen_keys_name_every_item_the_file_names_valid_or_not() -> None:
    v = skus(("A", "1"), ("B", "x"), (None, "3"), ("A", "2"))
    assert set(v.seen_keys.rows()) == {(1, "sku", "A"), (1, "sku", "B")}
    assert v.notes == []


def test_a_layout_saying_either_leaves_the_header_to_decide() -> None:
    # amazon-fba's location column is "either": the header "Location Code" says codes.
    v = _located(["1", "BACK"], header="Location Code", layout="amazon-fba", locations=NAMED)
    assert _outcome(v) == {2: "unknown_location", 3: 2}


@pytest.mark.parametrize("text", ["9999999999", "9999999999.0"])
def test_ten_digits_under_a_maximum_are_capped_in_any_form(text: str) -> None:
    assert quantities(skus(("A", text), rules=QuantityRules(maximum=5))) == {2: 5}


def test_a_date_cell_as_an_identifier_is_rejected_only_from_a_workbook() -> None:
    cell = "2024-01-05 10:30:00"
    for fmt, expected in [("csv", None), ("xlsx", "date_in_column")]:
        v = validate(table({"SKU": [cell, "B"], "Qty": ["1", "2"]}, fmt=fmt))
        assert rejected(v).get(2, (None,))[0] == expected, fmt
        assert 3 in quantities(v)


@pytest.mark.parametrize("seed", range(8))
def test_columns_ingest_knows_are_plain_validate_as_when_their_cells_are_looked_at(
        seed: int) -> None:
    # A CSV without quotes, edge spaces or quote marks has "plain" columns: validation takes
    # them as they are. Seeded files (with and without such characters, empty cells, escaped
    # formulas) must validate exactly as when every cell is looked at.
    import random
    from dataclasses import replace

    from invsync.stages.ingest import read_stock_bytes

    rng = random.Random(seed)
    cells = ["A1", "B-2", "7", "0", "", "x y", "'=A1", "'-3", " C", "D ", "é", "'", "1.0", "-4"]
    mode = seed % 3
    if mode < 2:  # no edge spaces: plain files, and files of escaped formulas
        cells = [c for c in cells if c.strip() == c and c.isascii() and ("'" in c) == mode]
    rows = [",".join(rng.choice(cells) for _ in range(3)) for _ in range(rng.randrange(1, 30))]
    data = ("sku,location_id,quantity\n" + "\n".join(rows) + "\n").encode()
    table = read_stock_bytes(data)
    fast, slow = validate(table), validate(replace(table, plain=frozenset()))
    assert fast.valid.equals(slow.valid)
    assert fast.rejected.equals(slow.rejected)
    # (the keys seen come in no particular order)
    assert fast.seen_keys.sort(pl.all()).equals(slow.seen_keys.sort(pl.all()))
