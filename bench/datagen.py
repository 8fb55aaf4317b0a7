"""Deterministic benchmark data: stock files, previous-night snapshots, catalogs, a workbook.

Only the standard library's seeded ``random`` (``randbytes``), polars and xlsxwriter are
used, so a fresh clone regenerates byte-identical files. Files are cached under
``bench/data/`` with a manifest; they are rebuilt when the parameters or this module change.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import polars as pl

SEED = 20241127
LOCATIONS = (1, 2)
CHANGED_SHARE_BYTE = 13
"""A row's quantity changes overnight when its random byte is below this: 13/256 = 5.1%."""

_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _bytes(n: int, salt: int) -> pl.Series:
    """``n`` reproducible random bytes (0..255) as a UInt8 series."""
    data = random.Random(SEED * 1000 + salt).randbytes(n)
    return pl.Series(list(data), dtype=pl.UInt8)


def sku_expr(index: pl.Expr) -> pl.Expr:
    return pl.format("SKU-{}", index.cast(pl.String).str.zfill(7))


def stock_nights(rows: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Night 1 and night 2 of a warehouse export: ``rows`` rows, every item at 2 locations.

    Row ``2k`` is item ``k`` at location 1, row ``2k+1`` the same item at location 2.
    Night 2 has the same rows in the same order with ~5% of the quantities changed.
    """
    if rows % len(LOCATIONS):
        raise ValueError("rows must be a multiple of the number of locations")
    frame = pl.DataFrame({"q1": _bytes(rows, 1), "pick": _bytes(rows, 2),
                          "step": _bytes(rows, 3)}).with_row_index("i")
    frame = frame.with_columns(
        sku=sku_expr(pl.col("i") // len(LOCATIONS)),
        location_id=(pl.col("i") % len(LOCATIONS) + 1).cast(pl.Int64),
        night1=pl.col("q1").cast(pl.Int64),
    ).with_columns(
        # A changed quantity moves by 1..200 modulo 256: never back to the same value.
        night2=pl.when(pl.col("pick") < CHANGED_SHARE_BYTE)
        .then((pl.col("night1") + 1 + pl.col("step").cast(pl.Int64) % 200) % 256)
        .otherwise(pl.col("night1")),
    )
    night1 = frame.select("sku", "location_id", pl.col("night1").alias("quantity"))
    night2 = frame.select("sku", "location_id", pl.col("night2").alias("quantity"))
    return night1, night2


def snapshot_of(night: pl.DataFrame) -> pl.DataFrame:
    """The snapshot a successful sync of ``night`` leaves: KEY + quantity."""
    return night.select(
        pl.col("location_id").cast(pl.Int64),
        pl.lit("sku").alias("identifier"),
        pl.col("sku").alias("item_key"),
        pl.col("quantity").cast(pl.Int64),
    )


def write_snapshot(state_dir: Path, store_hash: str, night: pl.DataFrame) -> Path:
    """Write the previous night's snapshot with invsync's own snapshot writer."""
    from invsync.state.snapshot import SnapshotStore

    store = SnapshotStore(state_dir, store_hash)
    if store.path.exists():
        store.path.unlink()
    store.merge(snapshot_of(night))
    return store.path


def catalog(items: int) -> pl.DataFrame:
    """A sandbox catalog of ``items`` products tracked by product, SKUs as in the stock files."""
    return pl.DataFrame({"i": pl.int_range(items, eager=True)}).select(
        sku=sku_expr(pl.col("i")),
        product_id=pl.col("i") + 100_000,
        variant_id=pl.col("i") + 10_000_000,
        tracking=pl.lit("product"),
    )


def write_xlsx(path: Path, rows: int) -> None:
    """A ``rows``-row workbook like a merchant export (xlsxwriter, constant_memory mode)."""
    import xlsxwriter

    _, night2 = stock_nights(rows)
    tmp = path.with_suffix(".tmp.xlsx")
    wb = xlsxwriter.Workbook(str(tmp), {"constant_memory": True})
    wb.set_properties({"created": __import__("datetime").datetime(2024, 11, 27)})
    ws = wb.add_worksheet("Stock")
    ws.write_row(0, 0, ["SKU", "Location ID", "Quantity"])
    for r, (sku, loc, qty) in enumerate(night2.iter_rows(), start=1):
        ws.write_string(r, 0, sku)
        ws.write_number(r, 1, loc)
        ws.write_number(r, 2, qty)
    wb.close()
    tmp.replace(path)


class Cache:
    """Regenerate a data file only when its recipe (parameters + this module) changed."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.dir / "manifest.json"
        try:
            self.manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            self.manifest = {}

    def fresh(self, name: str, recipe: dict[str, object], *paths: Path) -> bool:
        want = {**recipe, "source": _SOURCE_HASH}
        return self.manifest.get(name) == want and all(p.exists() for p in paths)

    def done(self, name: str, recipe: dict[str, object]) -> None:
        self.manifest[name] = {**recipe, "source": _SOURCE_HASH}
        self.manifest_path.write_text(json.dumps(self.manifest, indent=2, sort_keys=True))
