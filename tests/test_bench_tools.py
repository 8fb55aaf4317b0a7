"""The benchmark's own arithmetic: what `make bench` counts as minimal, per window, charged."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from invsync.store.identity import query_chunks

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


run = _load("run")
profile_run = _load("profile_run")


@pytest.mark.parametrize("n", [0, 1, 428, 429, 5000, 50_000])
def test_filtered_reads_counts_what_invsync_chunks(n: int) -> None:
    skus = [f"SKU-{i:07d}" for i in range(n)]
    assert run.filtered_reads(skus) == len(list(query_chunks(sorted(skus), 6000)))


def test_minimal_reads_is_the_fewer_of_listing_and_filters() -> None:
    many = [f"SKU-{i:07d}" for i in range(50_000)]
    assert run.minimal_reads(50_000, many) == {"listing_pages": 50, "filtered_reads": 117,
                                               "minimal": 51}  # + the locations
    few = many[:1000]
    assert run.minimal_reads(100_000, few)["minimal"] == 4  # locations + 3 sku:in reads, not 100


def _answer(finished: float, reset_ms: int) -> dict[str, object]:
    return {"method": "PUT", "path": "/stores/s/v3/inventory/adjustments/absolute",
            "finished": finished, "answer_headers": {"x-rate-limit-time-reset-ms": str(reset_ms)}}


def test_quota_windows_counts_requests_per_fixed_window() -> None:
    # Windows of 2 s ending at t=2, 4, 6: 1 request in the first, 3 in the second, 2 in the
    # third; an answer without rate-limit headers (a dropped connection) is not counted.
    times = [1.5, 2.1, 3.0, 3.9, 4.2, 5.99]
    log = [_answer(t, round((2 * (int(t // 2) + 1) - t) * 1000)) for t in times]
    log.append({"method": "PUT", "path": "/x", "finished": 4.5, "answer_headers": {}})
    assert run.quota_windows(log, 2000) == [1, 3, 2]
    assert run.quota_windows([], 2000) == []


def test_request_kinds() -> None:
    log = [{"method": "GET", "path": "/stores/s/v3/inventory/items"},
           {"method": "GET", "path": "/stores/s/v3/inventory/locations"},
           {"method": "GET", "path": "/stores/s/v3/inventory/locations/1/items"},
           {"method": "PUT", "path": "/stores/s/v3/inventory/adjustments/absolute"}]
    assert run.request_kinds(log) == {"item_reads": 2, "location_reads": 1, "writes": 1}


def test_profile_keeps_the_main_thread_across_its_rename() -> None:
    # py-spy names a thread only once `threading` knows it: both labels are the main thread.
    raw = "\n".join([
        "thread (7);_run_module_as_main (<frozen runpy>:198);<module> (x.py:1) 3",
        "thread (7): MainThread;_run_module_as_main (<frozen runpy>:198);f (a.py:2) 5",
        "thread (9): worker;run (threading.py:1) 40",
    ])
    stacks = profile_run.main_thread(raw)
    assert sum(n for n, _ in stacks) == 8


def test_profile_charges_imports_by_library_and_work_to_the_deepest_invsync_function() -> None:
    imp = ["<module> (invsync/__main__.py:3)", "_find_and_load (<frozen importlib._bootstrap>:1)",
           "<module> (invsync/surfaces/cli.py:5)", "_find_and_load (<frozen x>:1)",
           "<module> (polars/__init__.py:1)", "<module> (polars/dataframe/frame.py:9)"]
    assert profile_run._charge(imp) == "imports: polars"
    work = ["main (invsync/surfaces/cli.py:638)", "validate (invsync/stages/validate.py:80)",
            "collect (polars/lazyframe/frame.py:2000)"]
    assert profile_run._charge(work) == "validate (invsync/stages/validate.py)"


def test_bench_settings_refuse_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_RUNS", "abc")
    with pytest.raises(SystemExit, match="BENCH_RUNS"):
        run.load_config()
    monkeypatch.delenv("BENCH_RUNS")
    monkeypatch.setenv("BENCH_ONLY", "dry,bogus")
    with pytest.raises(SystemExit, match="bogus"):
        run.load_config()
    monkeypatch.setenv("BENCH_ONLY", " , ")
    with pytest.raises(SystemExit, match="choose from"):
        run.load_config()
    monkeypatch.setenv("BENCH_ONLY", "live")
    monkeypatch.setenv("BENCH_PROFILE", "1")
    assert run.load_config().only == ("live", "profile")


def test_a_row_whose_case_broke_is_a_fail_not_a_pass() -> None:
    cfg = run.Config(only=("live", "quota", "startup"))
    rows = run.compute_ratios(cfg, {})
    assert [r.row for r in rows] == ["6", "6b", "9", "9b", "10"]
    assert all(r.passed is False and r.value is None for r in rows)
