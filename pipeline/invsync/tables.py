"""Table definitions shared by the stages, the store and the state (the base layer).

Each stage owns the data type it produces; the names and shapes several layers must agree
on live here, so that no layer imports another only for a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

ROW = "__row"
"""The column holding each row's number as seen in the file (header = row 1)."""
SEQ = "__seq"
"""The column numbering the items of a change set (once per run); results name items by it."""
KEY = ["location_id", "identifier", "item_key"]
"""One item at one location: how the snapshot, the diff and the journal key an item."""
SNAPSHOT_SCHEMA = {"location_id": pl.Int64, "identifier": pl.String, "item_key": pl.String,
                   "quantity": pl.Int64}
"""Levels as the snapshot keeps them; a null quantity means the level is unknown."""
PLAN_COLUMNS: dict[str, pl.DataType] = {
    "location_id": pl.Int64(), "identifier": pl.String(), "item": pl.String(),
    "before": pl.Int64(), "after": pl.Int64(), "delta": pl.Int64(), "row": pl.Int64(),
    "status": pl.String(), "read_at": pl.String(),
}
"""The columns of ``plan.csv`` (the plan frame) and their types: ``before`` is the level the
plan was made against (the store's live level read at ``read_at``; with ``--baseline
snapshot`` the snapshot's level and no ``read_at``), ``after`` the level to set."""
LEGACY_PLAN_COLUMNS = {"old": "before", "new": "after"}
"""Column names of plans written before ``before``/``after``: read as the new ones."""
def with_plan_names(plan: pl.DataFrame) -> pl.DataFrame:
    """A plan read back, with an earlier version's ``old``/``new`` named ``before``/``after``."""
    return plan.rename({k: v for k, v in LEGACY_PLAN_COLUMNS.items()
                        if k in plan.columns and v not in plan.columns})


READ_AT = "read_at"
"""The change-set column holding when each item's ``before`` level was read (UTC, ISO 8601)."""
PLAN_STATUSES = ("planned", "accepted", "refused", "unconfirmed", "not_sent")
"""What became of each item of a plan (its ``status``)."""


def goes_to_zero(new: pl.Expr, old: pl.Expr, *, unknown_counts: bool = False) -> pl.Expr:
    """The one definition of an item that "goes to 0": set to 0 from a positive level.

    A negative level set to 0 is a rise, not a drop. An unknown old level (null) counts only
    with ``unknown_counts``: the brakes pass it, since an item whose level was never
    confirmed most likely holds stock (README, Guarantees); in a plan a null old level means
    the item is new to the snapshot, so it does not count there.
    """
    positive = (old > 0).fill_null(False)
    return (new == 0) & ((positive | old.is_null()) if unknown_counts else positive)


@dataclass(frozen=True)
class Location:
    """A store location as ``GET /inventory/locations`` describes it."""

    id: int
    code: str
    enabled: bool = True
    label: str = ""
