"""Safety brakes: checks made before anything is sent, each with an override.

A truncated export or a wrong column must never zero half a catalog. Each brake
compares this run with what the store holds (the snapshot, or live levels) and with
past runs from the same kind of source, and trips with a message that says what it
saw and which flag overrides it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from invsync.stages.diff import KEY_TYPES, ChangeSet, key_hashes
from invsync.tables import KEY, goes_to_zero


@dataclass(frozen=True)
class BrakeLimits:
    """Thresholds and overrides for the brakes."""

    min_rows_ratio: float = 0.5
    """Trip when the file has fewer rows than this share of the last successful run's
    from the same source (see :func:`comparable_rows`), whatever ``--zero-missing`` says."""
    max_zero_share: float = 0.3
    """Trip when more than this share of the items holding stock at a location would drop
    to 0."""
    allow_empty: bool = False
    allow_shrink: bool = False
    allow_zeroing: bool = False


@dataclass(frozen=True)
class Brake:
    """A tripped brake."""

    name: str
    message: str


def comparable_rows(meta: dict[str, Any], source: str) -> int | None:
    """The row count a run from ``source`` is compared with: that of the last successful
    run from the same source (the same file path, or the same configured ``source`` name;
    see :func:`invsync.state.history.source_key`). ``None``: no history yet."""
    entry = (meta.get("sources") or {}).get(source) or {}
    value = entry.get("last_rows")
    return int(value) if value else None


def record_rows(meta: dict[str, Any], source: str, rows: int,
                zero_missing: bool) -> dict[str, Any]:
    """``meta`` with this successful run's row count recorded for its source."""
    sources = {k: dict(v) for k, v in (meta.get("sources") or {}).items()}
    entry = sources.setdefault(source, {})
    entry["last_rows"] = rows
    if zero_missing:
        entry["last_zero_missing_rows"] = rows
    return {**meta, "sources": sources}


def check_brakes(
    *, rows: int, last_rows: int | None, changes: ChangeSet, held: pl.DataFrame,
    limits: BrakeLimits, zero_missing: bool,
    store_stock: StoreStock | None = None,
) -> list[Brake]:
    """Every brake this run trips (empty when it may go ahead).

    ``held`` is what the store holds as far as we know (KEY + quantity, null when a level
    is unknown): the snapshot, or the live levels with ``--baseline live``. The brakes
    judge the changes against it whatever the diff's baseline was (``--full`` has none).
    ``last_rows`` is :func:`comparable_rows`. The shrunken-file brake applies whether or
    not missing items are zeroed: a truncated export is truncated either way.
    ``store_stock`` (a run with store access) counts a location's items holding stock
    from the store when ``held`` knows too few of them to clear the mass-zeroing brake.
    """
    tripped = []
    if rows == 0 and not limits.allow_empty:
        tripped.append(Brake("empty_file", "the file has no data rows; pass --allow-empty if "
                                           "that is really meant"))
    if last_rows and rows < limits.min_rows_ratio * last_rows and rows > 0 \
            and not limits.allow_shrink:
        harm = (", and --zero-missing would zero what it leaves out" if zero_missing else "")
        tripped.append(Brake(
            "shrunken_file",
            f"the file has {rows:,} rows, under {limits.min_rows_ratio:.0%} of the "
            f"{last_rows:,} of the last successful run from the same source{harm} (a "
            f"truncated export?); pass --allow-shrink to sync it anyway"))
    if not limits.allow_zeroing:
        tripped.extend(_mass_zeroing(changes, held, limits.max_zero_share, store_stock))
    return tripped


StoreStock = Callable[[int, int], int]
"""``(location, needed)`` -> the items holding stock at the location as the store lists
them, counted until ``needed`` are seen (a lower bound; exact when under ``needed``)."""


def _mass_zeroing(changes: ChangeSet, held: pl.DataFrame, max_share: float,
                  store_stock: StoreStock | None = None) -> list[Brake]:
    if held.height == 0:
        return []  # the store holds nothing we know of: nothing can drop (a first night)
    # An item whose level is unknown (a write never confirmed) most likely has stock: a 0
    # for it counts as a drop, so losing answers can never open a way around this brake.
    zeros = changes.changes.filter(pl.col("quantity") == 0).select(KEY).unique()
    if zeros.height == 0:
        return []  # most nights: no zero to weigh, so the store's levels are not scanned
    zeroed = _zeroed_levels(changes, zeros, held)
    drops = zeroed.filter(goes_to_zero(pl.lit(0), pl.col("_held"), unknown_counts=True))
    per_location = drops.group_by("location_id").len()
    if per_location.height == 0:
        return []
    counts = dict(per_location.iter_rows())
    # The share is of the items holding stock (or of unknown level): sold-out items cannot
    # drop, and counting them would let a wrong column zero every item in stock.
    synced_by_location = _stocked(held, counts, max_share)
    # Per location: a file covering one location must not zero most of it unnoticed.
    for loc, count in sorted(counts.items()):
        synced = synced_by_location.get(loc, 0)
        if synced and count > max_share * synced and store_stock is not None \
                and max_share > 0:  # at a share of 0 any drop trips: no count can clear it
            # What this run knows of the location may be only the file's own items (a live
            # read of a partial file, a young snapshot): 3 zeros of a file naming 3 items
            # must not read as "100% of the location". The store's own listing decides.
            synced = max(synced, store_stock(loc, _enough(count, max_share)))
        if synced and count > max_share * synced:
            return [Brake(
                "mass_zeroing",
                f"{count:,} of the {synced:,} items holding stock at location {loc} "
                f"({_share_above(count / synced, max_share)}) would drop to 0, more than the "
                f"{max_share:.0%} allowed; pass --allow-zeroing to sync anyway")]
    return []


_MOST_COUNTED = 10**12
"""More stocked items than any store lists: what a tiny share (1e-300) asks the count for."""


def _enough(count: int, max_share: float) -> int:
    """Stocked items that make ``count`` zeros no more than ``max_share`` of a location."""
    needed = count / max_share
    return math.ceil(needed) + 1 if needed < _MOST_COUNTED else _MOST_COUNTED


def _share_above(share: float, limit: float) -> str:
    """``share`` as a percentage with as many decimals as it takes to read above ``limit``
    (30,001 of 100,000 is "30.001%", not a "30%" that seems to equal a 30% limit)."""
    for decimals in range(7):
        text = f"{share:.{decimals}%}"
        if float(text.rstrip("%")) > limit * 100:
            return text
    return f"{share:.6%}"


_SAMPLE_ROWS = 1 << 16
"""Rows of the store's levels counted first (every n-th row, so every location is in them
as much as in the whole): enough, most nights, to show that no location loses its share (a
full count is made only when they are not)."""


def _stocked(held: pl.DataFrame, drops: dict[int, int], max_share: float) -> dict[int, int]:
    """Per location with drops (``drops``: location -> items going to 0), the items ``held``
    holds with stock (or of an unknown level).

    A count of some of the rows is a lower bound: when it already shows every location far
    enough from tripping, it is returned as it is (the brake's answer is the same); else
    every row is counted.
    """
    quantity = pl.col("quantity")
    stocked = pl.col("location_id").is_in(list(drops)) & (quantity.is_null() | (quantity > 0))
    levels = held.select("location_id", quantity)

    def count(frame: pl.DataFrame) -> dict[int, int]:
        return dict(frame.filter(stocked).group_by("location_id").len().iter_rows())

    if levels.height > _SAMPLE_ROWS:
        some = count(levels.gather_every(levels.height // _SAMPLE_ROWS + 1))
        if all(drops[loc] <= max_share * some.get(loc, 0) for loc in drops):
            return some
    return count(levels)


def _zeroed_levels(changes: ChangeSet, zeros: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """The ``zeros`` (KEY, distinct) that ``held`` holds, each with its level as ``_held``.

    When ``held`` is the very frame the diff compared the file with, the diff already found
    each item the file sets to 0 in it: only the zeros it did not see (``--zero-missing``'s)
    are looked up.
    """
    seen = changes.zeros_seen
    if seen is None or changes.compared is not held:
        return _held_levels(zeros, held)
    zeros, seen = zeros.cast(KEY_TYPES), seen.cast(KEY_TYPES)  # type: ignore[arg-type]
    found = zeros.join(seen.filter(pl.col("_in")).select(*KEY, "_held").unique(KEY), on=KEY,
                       how="inner")
    rest = zeros.join(seen.select(KEY), on=KEY, how="anti")
    if rest.height == 0:
        return found
    return pl.concat([found, _held_levels(rest, held)])


def _held_levels(keys: pl.DataFrame, held: pl.DataFrame) -> pl.DataFrame:
    """``keys`` (KEY, distinct) that ``held`` holds, each with its level as ``_held``.

    Joining on the key columns (two of them text) would hash a million strings of the
    store's levels to look up a few thousand zeros: the rows of ``held`` whose 64-bit key
    hash is one of the zeros' are picked first (a cheap pass of integers), and only those
    candidates are joined on the keys themselves, so a hash collision picks nothing wrong.
    """
    keys, held = keys.cast(KEY_TYPES), held.cast(KEY_TYPES)  # type: ignore[arg-type]
    candidates = held.filter(key_hashes(held).is_in(key_hashes(keys).implode()))
    return keys.join(candidates.select(*KEY, pl.col("quantity").alias("_held")), on=KEY,
                     how="inner")
