"""The child-process helper the sandbox, ``invsync serve`` and test servers start through."""

from __future__ import annotations

import subprocess
import sys

import pytest

from invsync.sandbox.process import wait_for_listening


def child(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_the_url_is_returned_and_later_output_keeps_being_collected() -> None:
    proc = child("import sys, time\nprint('warming up')\n"
                 "print('x listening on http://127.0.0.1:4321 (ctrl-c)', flush=True)\n"
                 "time.sleep(0.2)\nprint('after' * 20000)")
    found = wait_for_listening(proc, "the test child", 30)
    assert found.url == "http://127.0.0.1:4321"
    assert found.output[0] == "warming up\n"
    proc.wait(timeout=30)  # 100 kB after the line: the pump keeps the pipe from filling up
    found.stop()
    assert found.text().endswith("after" * 20000 + "\n")


def test_a_child_that_never_says_it_is_killed_and_named() -> None:
    proc = child("import time\nprint('still loading', flush=True)\ntime.sleep(600)")
    with pytest.raises(RuntimeError) as caught:
        wait_for_listening(proc, "the slow child", 1)
    assert proc.poll() is not None  # stopped, not left behind
    message = str(caught.value)
    assert message.startswith("the slow child did not start within 1 s")
    assert "still loading" in message


def test_a_child_that_exits_first_is_named_with_its_output() -> None:
    proc = child("print('port already in use'); raise SystemExit(3)")
    with pytest.raises(RuntimeError) as caught:
        wait_for_listening(proc, "the failing child", 30)
    assert proc.returncode == 3
    assert str(caught.value).startswith("the failing child exited (exit code 3)")
    assert "port already in use" in str(caught.value)


def test_another_host_is_matched_only_when_asked_for() -> None:
    line = "print('listening on http://127.0.0.2:5000', flush=True); import time; time.sleep(600)"
    found = wait_for_listening(child(line), "the 127.0.0.2 child", 30, host="127.0.0.2")
    assert found.url == "http://127.0.0.2:5000"
    found.stop()
    proc = child(line)
    with pytest.raises(RuntimeError, match="did not start within 1 s"):
        wait_for_listening(proc, "the child", 1)
    assert proc.poll() is not None
