"""The library API a developer embeds: the names re-exported by the `invsync` package."""

from __future__ import annotations

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
