"""Plans bound to their store, and the apply re-check against the store's live levels.

A plan (``plan.csv``) is made against one store: its run folder's ``report.json`` holds
``plan_binding`` (normalised API host, store hash, profile, the locations it covers).
:func:`check_binding` refuses to apply it anywhere else (:class:`PlanForAnotherStore`,
exit 64) before anything is read or sent. Just before sending, :func:`stale_items` compares
the planned items' live levels with the plan's ``before`` (a ``before`` not read from the
store, as under ``--baseline snapshot``, may be the snapshot's level instead): any difference is
:class:`StalePlan` (exit 3, "the store changed since the preview: preview again"), except a
read lagging this tool's own recent write (see :func:`stale_items`).

These are library functions: the upload page and its JSON API call them as the CLI does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from invsync.errors import PlanForAnotherStore, StalePlan
from invsync.run.config import Settings
from invsync.state.snapshot import api_host
from invsync.tables import KEY

BINDING_KEYS = ("api_host", "store_hash", "profile")
"""What a plan must agree on with the settings applying it."""


def plan_binding(settings: Settings, locations: list[int] | None = None) -> dict[str, Any]:
    """The store a plan made with ``settings`` is bound to (``report.json``'s
    ``plan_binding``)."""
    return {"api_host": api_host(settings.store_host), "store_hash": settings.store_hash,
            "profile": settings.profile,
            "locations": sorted({int(x) for x in (locations or [])})}


def write_binding(plan_path: Path, settings: Settings, locations: list[int]) -> Path:
    """Write the binding of a plan made outside a run folder (a revert or repair plan) to
    ``<plan>.json`` beside it; returns that path."""
    from invsync.disk import write_atomic

    path = plan_path.with_suffix(".json")
    write_atomic(path, json.dumps({"plan_binding": plan_binding(settings, locations)},
                                  indent=2).encode())
    return path


def read_binding(plan_path: Path) -> dict[str, Any] | None:
    """The binding of the plan at ``plan_path``: ``plan_binding`` of the ``report.json``
    beside it (the plan's run folder), or of ``<plan>.json`` beside it (a revert or repair
    plan); None when neither holds one (a plan copied out of its folder, or older)."""
    for candidate in (plan_path.parent / "report.json", plan_path.with_suffix(".json")):
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        if candidate.name == "report.json" and data.get("report_dir") and \
                Path(str(data["report_dir"])).name != plan_path.parent.name:
            continue
        binding = data.get("plan_binding")
        if isinstance(binding, dict) and binding:
            return binding
    return None


def check_binding(binding: dict[str, Any] | None, settings: Settings,
                  what: str = "this plan") -> None:
    """Raise :class:`PlanForAnotherStore` when ``binding`` names another store or profile
    than ``settings``; a plan without a binding passes (the live re-check still guards it)."""
    if not binding:
        return
    here = plan_binding(settings)
    differ = [k for k in BINDING_KEYS if (binding.get(k) or None) != (here.get(k) or None)]
    if not differ:
        return

    def name(b: dict[str, Any]) -> str:
        profile = f", profile {b.get('profile')!r}" if b.get("profile") else ", no profile"
        return f"store {b.get('store_hash')!r} at {b.get('api_host')}{profile}"

    raise PlanForAnotherStore(
        f"{what} was made for {name(binding)}, not {name(here)}: nothing was sent; make a "
        f"plan for this store (invsync plan FILE)", planned=dict(binding), here=here)


def stale_items(planned: pl.DataFrame, live: pl.DataFrame, *, own: pl.DataFrame | None = None,
                own_written_at: str | None = None, lag_s: float = 30.0) -> pl.DataFrame:
    """The planned items whose live level is not the plan's ``before``.

    ``planned``: KEY, ``before`` (null: the item was new) and ``read_at`` (when ``before``
    was read, ISO 8601; may be null). ``live``: KEY + ``quantity``. A difference is
    forgiven only for a read lagging this tool's own write: ``own`` (KEY + ``before`` +
    ``quantity``: what this tool's last write replaced and set) says the live level is the
    one it set, the plan's ``before`` is the one it replaced, and that write ended
    (``own_written_at``) less than ``lag_s`` before the plan read ``before``: the plan's
    read was the stale one. Returns KEY + ``before`` + ``live``.
    """
    joined = planned.select(*KEY, "before", "read_at").join(
        live.select(*KEY, pl.col("quantity").alias("live")), on=KEY, how="left")
    # An item the store does not list has no level: a plan made when it was new matches.
    moved = joined.filter(~pl.col("before").eq_missing(pl.col("live"))
                          & ~(pl.col("before").is_null() & (pl.col("live") == 0)))
    if moved.height == 0 or own is None or not own_written_at:
        return moved.select(*KEY, "before", "live")
    written = parse_time(own_written_at)
    if written is None:
        return moved.select(*KEY, "before", "live")
    mine = moved.join(own.select(*KEY, pl.col("quantity").alias("_own"),
                                 pl.col("before").alias("_replaced")), on=KEY, how="left")
    read_at = pl.col("read_at").str.to_datetime(time_zone="UTC", strict=False)
    lagged = (pl.col("_own").eq_missing(pl.col("live")) & pl.col("_own").is_not_null()
              & pl.col("_replaced").eq_missing(pl.col("before"))
              # read after that write (a plan read before it, or in the same instant, is
              # simply stale) and within the lag allowed
              & (read_at - pl.lit(written)).dt.total_milliseconds()
              .is_between(0, lag_s * 1000, closed="right").fill_null(False))
    return mine.filter(~lagged).select(*KEY, "before", "live")


def snapshot_moved(planned: pl.DataFrame, snapshot: pl.DataFrame) -> pl.DataFrame:
    """The planned items (KEY + ``before``) whose ``before`` is not the snapshot's level."""
    return planned.join(snapshot.select(*KEY, pl.col("quantity").alias("_snap")), on=KEY,
                        how="left").filter(~pl.col("before").eq_missing(pl.col("_snap"))
                                           ).drop("_snap")


def recheck(planned: pl.DataFrame, read: Callable[[pl.DataFrame], pl.DataFrame], *,
            snapshot: pl.DataFrame | None = None,
            own: pl.DataFrame | None = None, own_written_at: str | None = None,
            lag_s: float = 30.0, sleep: Callable[[float], None] | None = None,
            clock: Callable[[], float] | None = None) -> pl.DataFrame:
    """Re-read the planned items (``read(keys)`` -> KEY + quantity) and raise
    :class:`StalePlan` when any differs from the plan's ``before``.

    A ``before`` the plan read from the store (``read_at`` set) must be the live level. One
    it did not (no ``read_at``: a plan made with ``--baseline snapshot``, or by an older
    version) is the snapshot's level: given ``snapshot``, it must be that level (no run
    wrote since; the store may differ, e.g. by orders sold since, which such a plan allows
    for) or else the live level. Items differing whose ``before`` is the level this tool
    itself wrote less than ``lag_s`` ago (``own``, ``own_written_at``) are re-read until
    that long after the write first: a read right after a write may still show the old
    level. Returns the live levels read.
    """
    import time

    if snapshot is not None:
        unread = pl.col("read_at").is_null()
        planned = pl.concat([planned.filter(~unread),
                             snapshot_moved(planned.filter(unread), snapshot)])
    sleep = sleep or time.sleep
    clock = clock or time.monotonic
    live = read(planned.select(KEY))
    moved = stale_items(planned, live, own=own, own_written_at=own_written_at, lag_s=lag_s)
    written = parse_time(own_written_at) if own_written_at else None
    if moved.height and written is not None and own is not None:
        age = (datetime.now(UTC) - written).total_seconds()
        deadline = clock() + max(lag_s - age, 0.0)
        ours = _maybe_lagging(moved, own)
        pause = 0.5
        while ours.height and clock() < deadline:
            sleep(min(pause, max(deadline - clock(), 0.0)))
            pause *= 2  # a few reads over the window, not one a second
            again = read(ours.select(KEY))
            live = pl.concat([live.join(again.select(KEY), on=KEY, how="anti"),
                              again.select(live.columns)])
            moved = stale_items(planned, live, own=own, own_written_at=own_written_at,
                                lag_s=lag_s)
            ours = _maybe_lagging(moved, own)
    if moved.height:
        raise stale_plan(moved)
    return live


def stale_plan(moved: pl.DataFrame, *, against: str = "the store") -> StalePlan:
    """The :class:`StalePlan` for the planned items ``moved`` (KEY, ``before``, ``live``):
    how many moved, the first as an example, and up to 1,000 of them as its items.

    ``against``: what was compared with the plan (``the store``'s levels re-read now, or
    ``the snapshot`` when an offline dry run has no store to read)."""
    first = moved.row(0, named=True)
    lead = "" if against == "the store" else f"{against} moved since this plan was made: "
    return StalePlan(
        f"{lead}{moved.height:,} planned item(s) have another level now, e.g. "
        f"{first['identifier']} {first['item_key']} at location {first['location_id']}: "
        f"planned from {_level(first['before'])}, now {_level(first['live'])}",
        items=moved.head(1000).to_dicts())


def _maybe_lagging(moved: pl.DataFrame, own: pl.DataFrame) -> pl.DataFrame:
    """The moved items a lagging read may explain: the plan saw the level this tool wrote
    (its ``before`` is that level), and a read now shows the one that write replaced."""
    return moved.join(own.select(*KEY, pl.col("quantity").alias("_own"),
                             pl.col("before").alias("_replaced")), on=KEY, how="inner").filter(
        (pl.col("_own") == pl.col("before")) & pl.col("_replaced").eq_missing(pl.col("live"))
    ).drop("_own", "_replaced")


def _level(value: Any) -> str:
    return "none (new)" if value is None else f"{value:,}"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
