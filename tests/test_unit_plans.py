"""Unit tests of the apply re-check's judgement (invsync.run.plans.stale_items)."""

from __future__ import annotations

import polars as pl

from invsync.run.plans import stale_items


def _frames(read_at: str) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    planned = pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"],
                            "before": [0], "read_at": [read_at]})
    live = pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"],
                         "quantity": [9]})
    # This tool's own last write replaced 0 with 9.
    own = pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"],
                        "before": [0], "quantity": [9]})
    return planned, live, own


def test_a_plan_read_after_this_tools_write_that_still_shows_the_old_level_is_forgiven() -> None:
    planned, live, own = _frames("2026-12-06T13:23:07.500Z")
    moved = stale_items(planned, live, own=own, own_written_at="2026-12-06T13:23:07.200Z")
    assert moved.height == 0


def test_a_plan_read_before_or_in_the_same_instant_as_a_later_write_is_stale() -> None:
    # Found under load: read and write in the same second (times kept to the second) made a
    # preview read BEFORE another run's write look like a lagging read, and the apply
    # overwrote that run's level. Times are kept to the millisecond, and the same instant
    # counts as before.
    for read_at in ("2026-12-06T13:23:07.100Z", "2026-12-06T13:23:07.200Z"):
        planned, live, own = _frames(read_at)
        moved = stale_items(planned, live, own=own, own_written_at="2026-12-06T13:23:07.200Z")
        assert moved.to_dicts() == [{"location_id": 1, "identifier": "sku", "item_key": "A",
                                     "before": 0, "live": 9}], read_at


def test_a_lag_longer_than_allowed_is_stale() -> None:
    planned, live, own = _frames("2026-12-06T13:24:07.201Z")
    moved = stale_items(planned, live, own=own, own_written_at="2026-12-06T13:23:07.200Z",
                        lag_s=30)
    assert moved.height == 1


def test_a_before_not_read_from_the_store_may_be_the_snapshots_level_or_the_live_one() -> None:
    import pytest

    from invsync.errors import StalePlan
    from invsync.run.plans import recheck

    def frame(**cols: list[object]) -> pl.DataFrame:
        keys = {"location_id": [1, 1, 1], "identifier": ["sku"] * 3, "item_key": ["A", "B", "C"]}
        return pl.DataFrame({**keys, **cols})

    # A: the snapshot's level (orders sold since: the store has 6); B: the store's level;
    # C: neither (another run wrote 5 since the plan was made).
    planned = frame(before=[8, 3, 8], read_at=[None, None, None]).cast({"read_at": pl.String})
    snapshot = frame(quantity=[8, 2, 5])
    live = frame(quantity=[6, 3, 5])
    with pytest.raises(StalePlan) as stale:
        recheck(planned, lambda keys: live, snapshot=snapshot)
    assert [i["item_key"] for i in stale.value.items] == ["C"]
    recheck(planned.head(2), lambda keys: live, snapshot=snapshot)
    # Read from the store (read_at set), a before must be the live level: A is stale.
    read = planned.head(2).with_columns(read_at=pl.lit("2026-12-06T13:00:00.000Z"))
    with pytest.raises(StalePlan) as stale:
        recheck(read, lambda keys: live, snapshot=snapshot)
    assert [i["item_key"] for i in stale.value.items] == ["A"]
