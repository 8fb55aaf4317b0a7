"""The as-of time of a run: "the file's levels account for every order placed before WHEN".

:func:`resolve_as_of` turns ``--as-of`` (ISO 8601 with an offset, or ``mtime``) into a UTC
time and refuses one in the future or older than ``max_as_of_age`` (exit 64) before
anything is read or sent. :func:`apply_sold_since` reads the orders created since from the
store (exit 2 when it cannot: a token without the orders scope is a 403), lowers the file's
levels by what the store already took off stock, and records it all in the report.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from invsync.errors import UsageError
from invsync.events import Observer, no_event
from invsync.rules.stock import MAX_QUANTITY
from invsync.run.store_access import StoreSession
from invsync.stages.report import RunReport
from invsync.stages.sold_since import FILE_LEVEL, SOLD, subtract_sold
from invsync.stages.validate import QuantityRules, Validated
from invsync.store.orders import read_sold_since, since_param
from invsync.tables import ROW

ORDER_LOCATION = 1
"""The location the store takes an order's units from: the default location, which the
default storefront sells (unless BigCommerce switched on aggregated stock for the store)."""
CLOCK_SKEW = timedelta(seconds=60)
"""An as-of time this little in the future is taken as now (clocks of two machines)."""


def resolve_as_of(value: str, path: Path, max_age_s: float,
                  now: datetime | None = None) -> tuple[datetime, str, str]:
    """``value`` (ISO 8601 with an offset, or ``mtime``) as a UTC time, where it came from
    (``given`` or ``mtime``) and the time as the merchant reads it (ISO 8601 in the offset
    given, or this machine's for ``mtime``); :class:`UsageError` in plain words when it
    cannot be used: unreadable, without an offset, in the future, or older than
    ``max_age_s``."""
    now = now or datetime.now(UTC)
    text = value.strip()
    if text.lower() == "mtime":
        try:
            when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError as exc:
            raise UsageError(f"--as-of mtime: cannot read the modification time of {path} "
                             f"({exc.strerror or exc}); nothing was sent") from None
        source, local = "mtime", when.astimezone()
    else:
        try:
            when = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--as-of {value!r} is not a time: give ISO 8601 with an offset, "
                             f"such as 2026-12-06T02:00:00+01:00, or 'mtime'") from None
        if when.tzinfo is None:
            raise UsageError(f"--as-of {value!r} has no time zone offset: add one (such as "
                             f"+01:00 or Z) so the time means the same everywhere")
        when, source, local = when.astimezone(UTC), "given", when
    shown = when.isoformat(timespec="seconds")
    if when > now + CLOCK_SKEW:
        raise UsageError(f"the as-of time {shown} is in the future (now is "
                         f"{now.isoformat(timespec='seconds')}): a file cannot account for "
                         f"orders not placed yet; nothing was sent")
    age = (now - when).total_seconds()
    if age > max_age_s:
        raise UsageError(f"the as-of time {shown} is {_hours(age)} old, older than "
                         f"max_as_of_age ({_hours(max_age_s)}): export a fresh file, or raise "
                         f"max_as_of_age in the config; nothing was sent")
    return when, source, local.isoformat(timespec="seconds")


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def rules_before_sold(rules: QuantityRules) -> QuantityRules:
    """The quantity rules that come before what sold since is subtracted: all but the
    ``maximum``, which caps what is left (:func:`apply_sold_since`); the store's own
    maximum stands in, so a level the maximum would have capped is not rejected."""
    return rules if rules.maximum is None else replace(rules, maximum=MAX_QUANTITY)


def apply_sold_since(store: StoreSession, report: RunReport,
                     checked: Validated, as_of: tuple[datetime, str, str],
                     emit: Observer = no_event, *,
                     rules: QuantityRules | None = None) -> tuple[Validated, pl.DataFrame]:
    """Lower ``checked``'s levels by the units sold since the as-of time, then cap them at
    ``rules.maximum`` (``checked`` was validated with :func:`rules_before_sold`).

    Returns the checked rows with their new levels and, per file row (``__row``), its
    ``file_level`` and ``sold_since_as_of`` for the plan. Fills ``report.sold_since`` and
    adds notes on what invsync cannot know (other locations, a shrinking listing).
    """
    when, source, local = as_of
    before = store.requests_sent
    sold = store.run(lambda client: read_sold_since(client, when))
    requests = store.requests_sent - before
    maximum = rules.maximum if rules is not None else None
    valid, summary = subtract_sold(checked.valid, sold.lines, location_id=ORDER_LOCATION,
                                   maximum=maximum)
    side = valid.select(ROW, FILE_LEVEL, SOLD)
    report.sold_since = {
        "as_of": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "as_of_from": source,
        "as_of_local": local,
        "min_date_created": since_param(when),
        "update_stock_behavior": sold.behavior.update_stock_behavior,
        "refund_returns_stock": sold.behavior.refund_returns_stock,
        "orders_read": sold.orders_read,
        "orders_counted": sold.orders_counted,
        "units_sold": summary.units_sold,
        "units_subtracted": summary.units_subtracted,
        "units_not_in_file": summary.units_not_in_file,
        "rows_lowered": summary.rows_lowered,
        "location_id": ORDER_LOCATION,
        "requests": requests,
    }
    report.notes.extend(sold.notes)
    emit("sold_since", dict(report.sold_since))
    if summary.other_locations and sold.orders_counted:
        where = ", ".join(map(str, summary.other_locations))
        report.notes.append(
            f"sold since the as-of time: the file's rows at location(s) {where} were not "
            f"lowered: BigCommerce takes a storefront order's units from the default location "
            f"({ORDER_LOCATION}), and the order listing does not say which location an order "
            f"took its units from; check those locations by hand if orders use them")
    notes = checked.notes
    if rules is not None and maximum is not None:  # the rules as the merchant set them
        notes = [f"quantity rules applied: {rules.describe()}" if n.startswith(
            "quantity rules applied:") else n for n in notes]
    return replace(checked, valid=valid.select(checked.valid.columns), notes=notes), side


def plan_columns(plan: pl.DataFrame, side: pl.DataFrame | None) -> pl.DataFrame:
    """``plan.csv`` with ``file_level`` and ``sold_since_as_of`` (when the run had an as-of
    time): joined by the file row; ``new`` is then ``file_level - sold_since_as_of``."""
    if side is None:
        return plan
    return plan.join(side.rename({ROW: "row"}), on="row", how="left").select(
        *plan.columns, FILE_LEVEL, SOLD)
