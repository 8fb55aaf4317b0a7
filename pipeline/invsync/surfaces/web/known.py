"""Items the store does not have, found at preview (not after sending), with "did you
mean" from the store's own SKUs.

The preview's plan names every item it would set; one filtered read of the store (the same
read a live-level plan makes) tells which exist. The others become rows with problems on
the page and in the API, and the plan that Apply pushes leaves them out
(``plan-known.csv`` beside the upload).
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

import polars as pl

from invsync.run.config import Settings

log = logging.getLogger("invsync.web")

SUGGEST_UP_TO = 1_000
"""Suggestions are looked up for at most this many unknown items (a file of 658,000 SKUs
the store does not have is refused as a whole, with a count)."""
KNOWN_PLAN = "plan-known.csv"


def unknown_items(plan_csv: Path, settings: Settings) -> list[dict[str, Any]]:
    """The plan's items the store does not have: row, item, identifier, suggestion."""
    from invsync.run.store_access import StoreSession
    from invsync.stages.ingest import unescape_formulas

    plan = pl.read_csv(plan_csv, infer_schema=False)
    if plan.height == 0 or not settings.token:
        return []
    plan = plan.with_columns(unescape_formulas(pl.col("item")).alias("item_key"),
                             pl.col("location_id").cast(pl.Int64, strict=False),
                             pl.col("row").cast(pl.Int64, strict=False))
    locations = plan["location_id"].drop_nulls().unique().to_list()
    keys = plan.select("identifier", "item_key").unique()
    with StoreSession(settings) as store:
        live = store.live_levels(locations, keys=keys)
        missing = plan.join(live.select("identifier", "item_key").unique(),
                            on=["identifier", "item_key"], how="anti")
        if missing.height == 0:
            return []
        names: list[str] = []
        if missing.height <= SUGGEST_UP_TO:
            every = store.live_levels(locations)
            names = every.filter(pl.col("identifier") == "sku")["item_key"].unique().to_list()
    out = []
    for rec in missing.sort("row", nulls_last=True).iter_rows(named=True):
        guess = None
        if rec["identifier"] == "sku" and names:
            close = difflib.get_close_matches(str(rec["item_key"]), names, n=1, cutoff=0.6)
            guess = close[0] if close else None
        out.append({"row": rec["row"], "item": rec["item_key"],
                    "identifier": rec["identifier"], "location_id": rec["location_id"],
                    "suggestion": guess})
    return out


def write_known_plan(plan_csv: Path, unknown: list[dict[str, Any]], target: Path) -> None:
    """``plan_csv`` without the unknown items, as ``target`` (what Apply pushes)."""
    from invsync.disk import write_atomic
    from invsync.stages.ingest import unescape_formulas

    plan = pl.read_csv(plan_csv, infer_schema=False)
    drop = pl.DataFrame({"identifier": [u["identifier"] for u in unknown],
                         "_key": [str(u["item"]) for u in unknown]},
                        schema={"identifier": pl.String, "_key": pl.String})
    kept = plan.with_columns(_key=unescape_formulas(pl.col("item"))).join(
        drop, on=["identifier", "_key"], how="anti").drop("_key")
    write_atomic(target, lambda fh: kept.write_csv(fh))


def as_rejected(unknown: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The unknown items as the page's and the API's rows with problems."""
    out = []
    for u in unknown:
        kind = {"sku": "SKU", "variant_id": "variant id", "product_id": "product id"}.get(
            u["identifier"], u["identifier"])
        action = (f"Did you mean '{u['suggestion']}'? Correct it in your file"
                  if u.get("suggestion") else "Check it in your file")
        out.append({"row": u["row"], "reason": "unknown_item", "column": u["identifier"],
                    "value": u["item"],
                    "message": f"the store has no item with the {kind} {u['item']}",
                    "explanation": f"The store has no item with this {kind}.",
                    "action": f"{action}, or add the item in the store first.",
                    "suggestion": u.get("suggestion")})
    return out
