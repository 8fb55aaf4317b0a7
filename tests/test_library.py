"""The library API a developer embeds: the names re-exported by the `invsync` package."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import TOKEN, write_csv

import invsync
from invsync.sandbox.process import SandboxProcess


def test_the_package_exports_the_library_api_lazily() -> None:
    assert {"sync_file", "Settings", "RunReport", "InvsyncError"} <= set(invsync.__all__)
    assert invsync.Settings.__module__ == "invsync.run.config"
    assert invsync.RunReport.__module__ == "invsync.stages.report"


def test_the_readme_library_example_runs(sandbox: SandboxProcess, tmp_path: Path) -> None:
    stock = write_csv(tmp_path / "stock.csv", ["sku", "quantity"], [["POSTER-1755", 3]])
    config = tmp_path / "invsync.toml"
    config.write_text(f'store_hash = "{sandbox.store_hash}"\napi_url = "{sandbox.url}"\n'
                      f'access_token = "{TOKEN}"\nstate_dir = "{tmp_path / "state"}"\n')
    settings = invsync.Settings.from_config(config, reason="library test")
    report = invsync.sync_file(stock, settings)
    assert (report.status, report.exit_code, report.counts.accepted) == ("succeeded", 0, 1)
    assert sandbox.levels()[(1, "POSTER-1755")] == 3
    dry = invsync.sync_file(stock, invsync.Settings.from_config(config, dry_run=True))
    assert dry.status == "dry_run" and dry.counts.unchanged == 1


def test_inside_a_running_loop_the_async_entry_point_runs_and_the_sync_one_refuses(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    stock = write_csv(tmp_path / "stock.csv", ["sku", "quantity"], [["POSTER-1755", 4]])
    config = tmp_path / "invsync.toml"
    config.write_text(f'store_hash = "{sandbox.store_hash}"\napi_url = "{sandbox.url}"\n'
                      f'access_token = "{TOKEN}"\nstate_dir = "{tmp_path / "state"}"\n')
    settings = invsync.Settings.from_config(config)

    async def app() -> tuple[invsync.RunReport, str]:
        try:
            invsync.sync_file(stock, settings)
        except invsync.UsageError as exc:
            refused = str(exc)
        else:
            refused = ""
        ticks = 0

        async def tick() -> None:  # the caller's loop keeps running during the run
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        report = await invsync.sync_file_async(stock, settings)
        ticker.cancel()
        assert ticks > 1
        return report, refused

    report, refused = asyncio.run(app())
    assert "sync_file_async" in refused
    assert (report.status, report.counts.accepted) == ("succeeded", 1)
    assert sandbox.levels()[(1, "POSTER-1755")] == 4
