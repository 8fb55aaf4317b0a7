"""The words for what sold since the as-of time: "file 10 − 2 sold since 02:00 = 8".

One wording for the terminal summary, ``report.html`` and ``summary.md``: from the
report's ``sold_since`` and the plan's ``file_level`` / ``sold_since_as_of`` columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import polars as pl

_WHEN = {"order_placed": "when an order is placed",
         "order_completed_or_shipped": "when an order ships or completes"}
SOLD_LINES = 10
"""How many items the summary and the page spell out."""


def as_of_label(sold: Mapping[str, Any], started_at: str | None = None) -> str:
    """The as-of time as the merchant gave it: ``02:00``, or ``2026-12-05 22:00`` when the
    run started on another day (by the same clock)."""
    text = str(sold.get("as_of_local") or sold.get("as_of") or "")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text or "?"
    same_day = False
    if started_at:
        try:
            started = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
            same_day = started.astimezone(when.tzinfo).date() == when.date()
        except ValueError:
            pass
    return when.strftime("%H:%M") if same_day else when.strftime("%Y-%m-%d %H:%M")


def headline(sold: Mapping[str, Any], started_at: str | None = None) -> str:
    """One sentence: the as-of time, the orders read and what they took off the file."""
    label = as_of_label(sold, started_at)
    when = _WHEN.get(str(sold.get("update_stock_behavior")), "?")
    return (f"Sold since {label}: {_n(sold.get('orders_counted'))} of "
            f"{_n(sold.get('orders_read'))} order(s) placed since then have taken units off "
            f"stock (the store takes stock {when}); "
            f"{_n(sold.get('units_subtracted'))} unit(s) subtracted from the file's levels at "
            f"location {sold.get('location_id', 1)} ({_n(sold.get('requests'))} request(s))")


def sold_lines(sold: Mapping[str, Any] | None, plan: pl.DataFrame | None,
               started_at: str | None = None, limit: int = SOLD_LINES) -> list[str]:
    """Per item that sold since: ``SKU at location 1: file 10 − 2 sold since 02:00 = 8``."""
    if not sold or plan is None or "sold_since_as_of" not in plan.columns:
        return []
    label = as_of_label(sold, started_at)
    rows = plan.filter(pl.col("sold_since_as_of").cast(pl.Int64, strict=False) > 0) \
        .sort("sold_since_as_of", descending=True).head(limit)
    after = "after" if "after" in plan.columns else "new"  # plan.csv's name for the level sent
    out = []
    for r in rows.iter_rows(named=True):
        capped = _whole(r[after]) < _whole(r["file_level"]) - _whole(r["sold_since_as_of"])
        out.append(f"{r['item']} at location {r['location_id']}: file {r['file_level']} − "
                   f"{r['sold_since_as_of']} sold since {label} = {r[after]}"
                   + (" (the maximum)" if capped else ""))
    return out


def _whole(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"
