"""The session's shared sandbox: each test that takes ``sandbox`` finds it as if fresh."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, SharedSandbox

from invsync.sandbox.process import SandboxProcess


def test_a_test_finds_the_shared_sandbox_clean_after_another_dirtied_it() -> None:
    """Levels (a real sync and a manual edit), an order and fault settings left by one test
    are gone in the next, served by the same process (tests/shared_sandbox_cases.py, in
    order, in a pytest run of its own: the order of tests across workers is not fixed)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/shared_sandbox_cases.py"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout, done.stdout[-3000:]


def test_the_shared_sandbox_is_started_again_when_a_test_stopped_it(
        shared_sandbox: SharedSandbox, sandbox: SandboxProcess) -> None:
    first = sandbox.process
    first.terminate()
    first.wait(timeout=30)
    again = shared_sandbox.get()
    assert again.process.pid != first.pid and again.process.poll() is None
    again.reset()
    assert again.levels() == {}
