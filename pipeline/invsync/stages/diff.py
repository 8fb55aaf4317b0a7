"""Stage 3: compare valid rows with a baseline and keep only what changed.

The baseline is the snapshot of what the store last accepted (or nothing, with
``--full``). The result is a :class:`ChangeSet`: the items to send, each with the
level the baseline had (null when the item is new), and how many were unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from invsync.tables import KEY, ROW, SNAPSHOT_SCHEMA


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
    compared: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    """The baseline frame the file was compared with (None with ``--full``)."""
    zeros_seen: pl.DataFrame | None = field(default=None, compare=False, repr=False)
    """The items of :attr:`changes` the file sets to 0, as the diff found them in
    :attr:`compared`: KEY, ``_held`` (its level there) and ``_in`` (whether it holds the
    item at all), so the brakes need not look them up in it again."""

    @property
    def new(self) -> int:
        return self.changes.filter(pl.col("old_quantity").is_null()).height

    @property
    def changed(self) -> int:
        return self.changes.height


def compute_changes(
    valid: pl.DataFrame, baseline: pl.DataFrame | None, *, baseline_name: str = "snapshot",
    hashes: pl.Series | None = None, baseline_hashes: pl.Series | None = None,
) -> ChangeSet:
    """Join ``valid`` with ``baseline`` (KEY + quantity); ``None`` sends everything.

    ``hashes``, ``baseline_hashes``: :func:`key_hashes` of ``valid`` and of ``baseline``,
    if already made."""
    if baseline is None:
        changes = valid.with_columns(old_quantity=pl.lit(None, dtype=pl.Int64))
        return ChangeSet(changes=changes, unchanged=0, baseline="none")
    if baseline.height == 0:  # a first run (fresh state): every item is new, nothing to join
        return _all_new(valid, baseline, baseline_name)
    return _joined_changes(valid, baseline, baseline_name, hashes, baseline_hashes)


def _joined_changes(valid: pl.DataFrame, baseline: pl.DataFrame, baseline_name: str,
                    hashes: pl.Series | None, baseline_hashes: pl.Series | None) -> ChangeSet:
    """:func:`compute_changes` of ``valid`` against a ``baseline`` frame, by joining them."""
    joined = _join_on_key(valid, baseline, hashes, baseline_hashes)
    differs = pl.col("old_quantity").is_null() | (pl.col("old_quantity") != pl.col("quantity"))
    picked = joined.filter(differs).sort("_i")
    del joined
    # Only the rows that changed are gathered whole (most of a night's rows did not).
    changes = valid[picked["_i"]].with_columns(picked["old_quantity"]).sort(ROW, nulls_last=True)
    zeros = picked.filter(pl.col("quantity") == 0)
    zeros_seen = valid[zeros["_i"]].select(KEY).with_columns(
        _held=zeros["old_quantity"], _in=zeros["_in"])
    return ChangeSet(changes=changes, unchanged=valid.height - changes.height,
                     baseline=baseline_name, compared=baseline, zeros_seen=zeros_seen)


def _all_new(valid: pl.DataFrame, baseline: pl.DataFrame, baseline_name: str) -> ChangeSet:
    """The change set against an empty ``baseline``: what the join would find (every row
    new, none held), made without one."""
    level = baseline.schema["quantity"]
    changes = valid.with_columns(old_quantity=pl.lit(None, dtype=level)).sort(
        ROW, nulls_last=True)
    zeros_seen = valid.filter(pl.col("quantity") == 0).select(KEY).with_columns(
        _held=pl.lit(None, dtype=level), _in=pl.lit(False))
    return ChangeSet(changes=changes, unchanged=0, baseline=baseline_name, compared=baseline,
                     zeros_seen=zeros_seen)


KEY_TYPES = {k: SNAPSHOT_SCHEMA[k] for k in KEY}
"""The key columns' dtypes: a key is hashed in these (an Int32 location id would hash apart
from the same id as Int64, and match nothing)."""


def key_hashes(frame: pl.DataFrame) -> pl.Series:
    """A 64-bit hash of each row's key (:data:`~invsync.tables.KEY`, cast to
    :data:`KEY_TYPES`), combined column by column (no struct of them is built, which holds
    far more memory). Equal keys hash equal; distinct keys may collide, so a match on the
    hash is a candidate until the keys themselves are compared.

    (polars' own row hash is cheaper to make, but a join on it costs more than it saves.)
    """
    hashed = [pl.col(c).cast(KEY_TYPES[c]).hash(seed=i) for i, c in enumerate(KEY)]
    combined = hashed[0]
    for column in hashed[1:]:
        combined = (combined * pl.lit(1_000_003, pl.UInt64)) ^ column
    return frame.select(combined.alias("_h")).to_series()


def _join_on_key(valid: pl.DataFrame, baseline: pl.DataFrame,
                 hashes: pl.Series | None = None,
                 baseline_hashes: pl.Series | None = None) -> pl.DataFrame:
    """Each row of ``valid`` by position (``_i``) with its ``quantity``, the baseline's
    ``old_quantity`` (null when the item is not in it, or its level is unknown) and ``_in``
    (whether the baseline holds the item); in no particular order.

    Joining three columns (two of them strings) is the slowest part of a diff; joining on a
    64-bit hash of them and then comparing the real keys is several times faster and exact.
    Only the hashes and row positions go through the join (a lazy join of two integer
    columns is about twice as fast as an eager one carrying the keys); the keys are then
    compared by position. ``hashes``, ``baseline_hashes``: :func:`key_hashes` of ``valid``
    and of ``baseline``, if already made.
    """
    base = baseline.cast(KEY_TYPES)  # type: ignore[arg-type]
    own = key_hashes(valid) if hashes is None or hashes.len() != valid.height else hashes
    # Row indices made eagerly: made in a lazy query, they make the join several times slower.
    theirs_h = baseline_hashes if baseline_hashes is not None and \
        baseline_hashes.len() == base.height else key_hashes(base)
    right = pl.DataFrame({"_h": theirs_h}).with_row_index("_j").lazy()
    left = pl.DataFrame({"_h": own}).with_row_index("_i").lazy()
    pairs = left.join(right, on="_h", how="left").select("_i", "_j").collect()
    if pairs.height == valid.height:
        # One candidate a row: put them in the file's order (a scatter: cheaper than a sort).
        at = pl.Series("_j", [], pl.UInt32).extend_constant(None, valid.height)
        pairs = pl.DataFrame([pl.int_range(valid.height, dtype=pl.UInt32, eager=True).alias("_i"),
                              at.scatter(pairs["_i"], pairs["_j"])])
        mine = valid.select(*KEY, "quantity")
    else:  # a hash collision inside the baseline gave a row several candidates
        mine = valid.select(pl.col(*KEY, "quantity").gather(pairs["_i"]))
    # One key column of the baseline gathered at a time: far less memory held at once. A
    # column holding one value on both sides (a file of SKUs, one location) needs none.
    at = pairs["_j"]
    same = at.is_not_null().alias("_in")
    for k in KEY:
        if not _one_value(mine[k], base[k]):
            same = same & mine.select(pl.col(k) == pl.lit(base[k].gather(at))).to_series()
    same = same.fill_null(False)
    joined = mine.select(pl.lit(pairs["_i"]).alias("_i"), "quantity").with_columns(
        old_quantity=pl.when(same).then(base["quantity"].gather(at)), _in=same)
    if joined.height != valid.height:  # keep each row's true match (else its first)
        joined = joined.sort("_i", "_in", descending=[False, True]).unique(
            "_i", keep="first", maintain_order=True)
    return joined


def _one_value(mine: pl.Series, theirs: pl.Series) -> bool:
    """Whether both columns hold one value, the same one, in every row (no null)."""
    if mine.len() == 0 or theirs.len() == 0 or mine.null_count() or theirs.null_count():
        return False
    first = mine[0]
    return bool((mine == first).all() and (theirs == first).all())
