"""The mass-zeroing brake counts a location's stock from the store when what the run knows
of it is only the file's own items (a live read of a partial file, no snapshot yet): a
3-row correction zeroing 3 items of a well-stocked location is no "100% of the location",
while a location that truly holds little stock still trips it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult, env_for, item_frame, run_invsync, write_csv, write_stock
from test_brakes import catalog, held, names

from invsync.run.brakes import BrakeLimits, check_brakes
from invsync.sandbox.process import SandboxProcess
from invsync.stages.diff import compute_changes

CATALOG_ITEMS = 3000
"""More than two pages of 1000: reading the 3 items a small file names (one filtered read)
is cheaper than listing the location, so the run knows only those 3."""


@pytest.fixture
def store(sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> SandboxProcess:
    catalog_file = write_csv(tmp_path / "catalog.csv", ["sku", "product_id", "variant_id",
                                                        "tracking"],
                             [[f"BR-{i:05d}", 100 + i, 10_000 + i, "variant"]
                              for i in range(CATALOG_ITEMS)])
    return sandbox_factory(catalog=catalog_file)


def _stock(store: SandboxProcess, tmp_path: Path, count: int) -> list[str]:
    """Give the first ``count`` items 5 each at location 1 (a run with its own state)."""
    skus = [f"BR-{i:05d}" for i in range(count)]
    file = write_stock(tmp_path / "setup.csv", {(1, s): 5 for s in skus})
    result = run_invsync(["-q", "sync", str(file)], env_for(store, tmp_path / "setup"))
    assert result.returncode == 0, result.stderr
    return skus


def _zero_three(store: SandboxProcess, tmp_path: Path, skus: list[str]) -> CliResult:
    """A 3-row file zeroing 3 stocked items, from a state folder with no snapshot."""
    file = write_stock(tmp_path / "fix.csv", {(1, s): 0 for s in skus[:3]})
    return run_invsync(["sync", str(file)], env_for(store, tmp_path / "fresh"))


def _listing_pages(log: list[dict[str, Any]]) -> list[str]:
    """The pages of location 1's whole listing (no item filter) that were read."""
    return [r["query"] for r in log if r["method"] == "GET"
            and r["path"].endswith("/inventory/items") and "%3Ain=" in r["query"]
            and not any(f"{kind}%3Ain" in r["query"]
                        for kind in ("sku", "variant_id", "product_id"))]


def test_three_zeros_of_a_well_stocked_location_need_no_flag(
        store: SandboxProcess, tmp_path: Path) -> None:
    skus = _stock(store, tmp_path, 40)
    before = len(store.requests())
    result = _zero_three(store, tmp_path, skus)
    assert result.returncode == 0, result.stdout + result.stderr
    levels = store.levels()
    assert [levels[(1, s)] for s in skus[:4]] == [0, 0, 0, 5]
    # Only first pages: the listing is read just far enough to clear 3 zeros.
    pages = _listing_pages(store.requests()[before:])
    assert pages and all("page=1&" in q for q in pages), pages


def test_a_location_holding_little_stock_still_trips_it(
        store: SandboxProcess, tmp_path: Path) -> None:
    skus = _stock(store, tmp_path, 4)
    result = _zero_three(store, tmp_path, skus)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.report()["error_kind"] == "brake"
    assert "3 of the 4 items holding stock at location 1" in result.stderr + result.stdout
    assert [store.levels()[(1, s)] for s in skus] == [5, 5, 5, 5]
    # The whole listing (3 pages) was counted before saying so.
    assert any("page=3&" in q for q in _listing_pages(store.requests()))


# ---- the rule itself (no store) ------------------------------------------------------------


def _brakes(known: int, zeroed: int, store: int | None) -> tuple[list[str], list[int]]:
    """Brakes for ``zeroed`` zeros of ``known`` items held, the store listing ``store``
    items with stock at location 1 (None: no store access); and what the store was asked."""
    levels = catalog(known)
    file = {k: 0 for k in list(levels)[:zeroed]}
    asked: list[int] = []

    def store_stock(location: int, needed: int) -> int:
        assert location == 1
        asked.append(needed)
        return min(needed, store) if store is not None else 0

    valid = item_frame([(loc, "sku", sku, qty) for (loc, sku), qty in file.items()])
    found = check_brakes(rows=len(file), last_rows=None,
                         changes=compute_changes(valid, held(levels)), held=held(levels),
                         limits=BrakeLimits(), zero_missing=False,
                         store_stock=None if store is None else store_stock)
    return [b.name for b in found], asked


@pytest.mark.parametrize(("store", "tripped"), [(None, True), (4, True), (9, True),
                                                 (10, False), (150_000, False)])
def test_the_store_count_decides_only_what_the_known_items_cannot(
        store: int | None, tripped: bool) -> None:
    found, asked = _brakes(known=3, zeroed=3, store=store)
    assert found == (["mass_zeroing"] if tripped else [])
    # Asked to count just far enough to clear 3 zeros at 30% (10 items), never the whole.
    assert asked == ([] if store is None else [11])


def test_the_store_is_not_asked_when_the_known_items_settle_it() -> None:
    assert _brakes(known=100, zeroed=30, store=5) == ([], [])
    assert names({(1, "S0000"): 0}, held(catalog(100))) == []
