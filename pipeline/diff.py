"""Stage 3: compare valid rows with a baseline and keep only what changed.

The baseline is the snapshot of what the store last accepted (or nothing, with
``--full``). The result is a :class:`ChangeSet`: the items to send, each with the
level the baseline had (null when the item is new), and how many were unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.snapshot import KEY


@dataclass(frozen=True)
class ChangeSet:
    """Items to send (new or changed) and the count of unchanged ones."""

    changes: pl.DataFrame
    """The valid columns plus ``old_quantity`` (null for an item new to the baseline)."""
    unchanged: int
    baseline: str
    """``snapshot``, ``live`` or ``none`` (``--full``)."""
    zeroed_missing: int = 0
    """Items added as 0 by ``--zero-missing`` (in :attr:`changes`, with no file row)."""

    @property
    def new(self) -> int:
        return self.changes.filter(pl.col("old_quantity").is_null()).height

    @property
    def changed(self) -> int:
        return self.changes.height


def compute_changes(
    valid: pl.DataFrame, baseline: pl.DataFrame | None, *, baseline_name: str = "snapshot"
) -> ChangeSet:
    """Join ``valid`` with ``baseline`` (KEY + quantity); ``None`` sends everything."""
    if baseline is None:
        changes = valid.with_columns(old_quantity=pl.lit(None, dtype=pl.Int64))
        return ChangeSet(changes=changes, unchanged=0, baseline="none")
    joined = valid.join(
        baseline.select(*KEY, pl.col("quantity").alias("old_quantity")),
        on=KEY, how="left", maintain_order="left",
    )
    differs = pl.col("old_quantity").is_null() | (pl.col("old_quantity") != pl.col("quantity"))
    changes = joined.filter(differs)
    return ChangeSet(changes=changes, unchanged=joined.height - changes.height,
                     baseline=baseline_name)
