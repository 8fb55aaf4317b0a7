"""Safety brakes: checks made before anything is sent, each with an override.

A truncated export or a wrong column must never zero half a catalog. Each brake
compares this run with the store's history (the snapshot and the last successful
run) and trips with a message that says what it saw and which flag overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipeline.diff import ChangeSet


@dataclass(frozen=True)
class BrakeLimits:
    """Thresholds and overrides for the brakes."""

    min_rows_ratio: float = 0.5
    """Trip when the file has fewer rows than this share of the last successful run's."""
    max_zero_share: float = 0.3
    """Trip when more than this share of previously synced items would drop to 0."""
    allow_empty: bool = False
    allow_shrink: bool = False
    allow_zeroing: bool = False


@dataclass(frozen=True)
class Brake:
    """A tripped brake."""

    name: str
    message: str


def check_brakes(
    *, rows: int, last_rows: int | None, changes: ChangeSet,
    synced_by_location: dict[int, int], limits: BrakeLimits,
) -> list[Brake]:
    """Every brake this run trips (empty when it may go ahead)."""
    tripped = []
    if rows == 0 and not limits.allow_empty:
        tripped.append(Brake("empty_file", "the file has no data rows; pass --allow-empty if "
                                           "that is really meant"))
    if (last_rows and rows < limits.min_rows_ratio * last_rows and rows > 0
            and not limits.allow_shrink):
        tripped.append(Brake(
            "shrunken_file",
            f"the file has {rows:,} rows, under {limits.min_rows_ratio:.0%} of the "
            f"{last_rows:,} of the last successful run (a truncated export?); pass "
            f"--allow-shrink to sync it anyway"))
    if not limits.allow_zeroing:
        # Per location: a file covering one location must not zero most of it unnoticed.
        zeroing = changes.changes.filter(
            (pl.col("quantity") == 0) & (pl.col("old_quantity") > 0)
        ).group_by("location_id").len()
        for loc, count in zeroing.sort("location_id").iter_rows():
            synced = synced_by_location.get(loc, 0)
            if synced and count > limits.max_zero_share * synced:
                tripped.append(Brake(
                    "mass_zeroing",
                    f"{count:,} of {synced:,} previously synced items at location {loc} "
                    f"({count / synced:.0%}) would drop to 0, more than the "
                    f"{limits.max_zero_share:.0%} allowed; pass --allow-zeroing to sync anyway"))
                break
    return tripped
