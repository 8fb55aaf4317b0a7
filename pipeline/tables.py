"""Table definitions shared by the stages, the store and the state (the base layer).

Each stage owns the data type it produces; the names and shapes several layers must agree
on live here, so that no layer imports another only for a constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

KEY = ["location_id", "identifier", "item_key"]
"""One item at one location: how the snapshot, the diff and the journal key an item."""
SNAPSHOT_SCHEMA = {"location_id": pl.Int64, "identifier": pl.String, "item_key": pl.String,
                   "quantity": pl.Int64}
"""Levels as the snapshot keeps them; a null quantity means the level is unknown."""


@dataclass(frozen=True)
class Location:
    """A store location as ``GET /inventory/locations`` describes it."""

    id: int
    code: str
    enabled: bool = True
    label: str = ""
