"""A first end-to-end check: the sample nights against a sandbox process."""

from __future__ import annotations

from pathlib import Path

from conftest import SAMPLE, run_invsync

from invsync.sandbox.process import SandboxProcess


def test_night1_then_night2_sends_only_changes(sandbox: SandboxProcess,
                                                cli_env: dict[str, str]) -> None:
    first = run_invsync(["sync", str(SAMPLE / "night1.csv")], cli_env)
    assert first.returncode == 0, first.stderr
    assert first.report()["counts"]["accepted"] == 3114
    second = run_invsync(["sync", str(SAMPLE / "night2.csv")], cli_env)
    assert second.returncode == 0, second.stderr
    assert second.report()["counts"]["submitted"] == 93
    assert Path(second.report_dir()).is_dir()
