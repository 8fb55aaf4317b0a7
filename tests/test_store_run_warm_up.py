"""A real run compiles its report's templates once its batches go out, not beside its
checks and its diff (compiling holds the GIL those many short polars calls wait for)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import invsync
from invsync.run import sync as sync_module
from invsync.sandbox.process import SandboxProcess
from tests.conftest import wait_for
from tests.test_store_run_overlap import NIGHT1, _config


def _watch(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[tuple[bool, str]]]:
    planned = threading.Event()
    real_plan = sync_module.plan_batches

    def plan_batches(*args: Any, **kwargs: Any) -> Any:
        batches = real_plan(*args, **kwargs)
        planned.set()
        return batches

    seen: list[tuple[bool, str]] = []
    real_warm_up = sync_module.warm_up

    def warm_up() -> None:
        seen.append((planned.is_set(), threading.current_thread().name))
        real_warm_up()

    monkeypatch.setattr(sync_module, "plan_batches", plan_batches)
    monkeypatch.setattr(sync_module, "warm_up", warm_up)
    return planned, seen


def test_a_real_run_compiles_the_templates_once_its_batches_are_planned(
        sandbox: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, seen = _watch(monkeypatch)
    settings = invsync.Settings.from_config(_config(tmp_path, sandbox.url, sandbox))
    report = invsync.sync_file(NIGHT1, replace(settings, baseline="snapshot"))
    assert report.exit_code == 0, report.error
    assert report.counts.changed > 0
    wait_for(lambda: seen, timeout=30, message="the templates were never compiled")
    assert seen == [(True, "invsync-warm")]
    assert (Path(report.report_dir) / "report.html").stat().st_size > 0


def test_a_dry_run_still_compiles_them_beside_its_head(
        sandbox: SandboxProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing goes out in a dry run: its templates are compiled in the background as before.
    _, seen = _watch(monkeypatch)
    settings = invsync.Settings.from_config(_config(tmp_path, sandbox.url, sandbox))
    report = invsync.sync_file(NIGHT1, replace(settings, dry_run=True))
    assert report.exit_code == 0, report.error
    wait_for(lambda: seen, timeout=30, message="the templates were never compiled")
    assert [name for _, name in seen] == ["invsync-bg_0"]
