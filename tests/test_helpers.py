"""The tests' shared wait and kill helpers (tests/conftest.py) do what the tests rely on:
a wait returns what it waited for, fails loudly (naming the run's log) when the run ends first
or time is up, and gives up quietly only when asked to. In-process, with stand-in processes."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import kill_when, quiet_log, wait_for


class FakeProc:
    """A stand-in for a ``subprocess.Popen``: running until ``ended`` is set."""

    def __init__(self) -> None:
        self.ended: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.ended

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.ended = -sig

    def wait(self, timeout: float | None = None) -> int:
        assert self.ended is not None, "waited for a process that never ends"
        return self.ended


class FakeSandbox:
    """A request log that grows for a few looks, then stays, each request answered late."""

    def __init__(self, grows: int) -> None:
        self.looks = 0
        self.grows = grows

    def requests(self) -> list[dict[str, Any]]:
        self.looks += 1
        n = min(self.looks, self.grows)
        return [{"status": 200 if i < n - 1 or self.looks > self.grows else None}
                for i in range(n)]


def test_a_wait_returns_what_it_waited_for() -> None:
    answers = iter([None, [], {"status": "succeeded"}])
    assert wait_for(lambda: next(answers), every=0.001) == {"status": "succeeded"}


def test_a_wait_that_runs_out_of_time_says_what_it_waited_for_and_shows_the_log(
        tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("the run's own words\n")
    last = {"status": "applying"}
    with pytest.raises(AssertionError) as failed:
        wait_for(lambda: False, None, log, timeout=0.05, every=0.01,
                 message=lambda: f"apply never ended: {last}")
    assert "apply never ended: {'status': 'applying'}" in str(failed.value)
    assert "the run's own words" in str(failed.value)


def test_a_wait_fails_at_once_naming_the_log_when_the_run_ends_first(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("invsync: the file is empty\n")
    proc = FakeProc()
    proc.ended = 65
    started = time.monotonic()
    with pytest.raises(AssertionError, match="the run ended early: invsync: the file is empty"):
        wait_for(lambda: False, proc, log, timeout=600)
    assert time.monotonic() - started < 60  # not the 600 s timeout


def test_a_wait_gives_up_quietly_only_when_asked() -> None:
    assert wait_for(lambda: 0, timeout=0.02, every=0.005, give_up=True) == 0
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: 0, timeout=0.02, every=0.005)


def test_kill_when_waits_then_signals_and_returns_the_exit_code(tmp_path: Path) -> None:
    proc = FakeProc()
    looks = iter([False, False, True])
    assert kill_when(lambda: next(looks), proc, None) == -signal.SIGKILL
    assert proc.signals == [signal.SIGKILL]
    term = FakeProc()
    assert kill_when(lambda: True, term, None, signal.SIGTERM) == -signal.SIGTERM


def test_kill_when_does_not_signal_a_run_that_ended_first(tmp_path: Path) -> None:
    proc = FakeProc()
    proc.ended = 0
    with pytest.raises(AssertionError, match="the run ended early"):
        kill_when(lambda: False, proc, None)
    assert proc.signals == []


def test_the_request_log_is_quiet_once_two_looks_agree_and_all_are_answered() -> None:
    sb = FakeSandbox(grows=4)
    log = quiet_log(sb, every=0.001)
    assert len(log) == 4 and all(r["status"] == 200 for r in log)
    assert sb.looks >= 5
    never = FakeSandbox(grows=10**9)
    with pytest.raises(AssertionError, match="the sandbox never went quiet"):
        quiet_log(never, timeout=0.05, every=0.001)


def test_an_empty_request_log_is_quiet_too() -> None:
    """A run killed before it sent anything leaves the log empty: that is quiet, not a wait
    until the timeout (an empty list is false, so it cannot be the wait's answer)."""
    class Empty:
        def requests(self) -> list[dict[str, Any]]:
            return []

    assert quiet_log(Empty(), timeout=5, every=0.001) == []
