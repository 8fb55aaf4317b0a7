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
    "old": pl.Int64(), "new": pl.Int64(), "delta": pl.Int64(), "row": pl.Int64(),
    "status": pl.String(),
}
"""The columns of ``plan.csv`` (the plan frame) and their types."""
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
