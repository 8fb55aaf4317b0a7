"""Start and stop a sandbox store as a child process (for the demo, tests and benchmarks)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SandboxProcess:
    """A running ``invsync sandbox`` process on 127.0.0.1 and a free port."""

    url: str
    store_hash: str
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    def get(self, path: str) -> Any:
        """GET a ``/_sandbox/...`` introspection endpoint and decode its JSON."""
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    def post(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def set_faults(self, **faults: Any) -> Any:
        """Change fault settings while running (``POST /_sandbox/faults``), e.g.
        ``set_faults(latency_ms=4000)``; the settings now in force."""
        req = urllib.request.Request(self.url + "/_sandbox/faults", method="POST",
                                     data=json.dumps(faults).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def reset(self) -> None:
        """Put the store back to how the process started (``POST /_sandbox/reset?all=1``):
        no levels, orders or logged requests, the startup fault settings."""
        self.post("/_sandbox/reset?all=1")

    def levels(self) -> dict[tuple[int, str], int]:
        """(location_id, sku) -> on-hand level, for every level set."""
        levels = self.get("/_sandbox/levels")
        return {(lv["location_id"], lv["sku"]): lv["quantity"] for lv in levels}

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("/_sandbox/requests"))

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/_sandbox/stats"))


@dataclass
class Listening:
    """A child process that printed ``listening on URL``; a thread keeps collecting its output."""

    url: str
    process: subprocess.Popen[str]
    output: list[str]
    reader: threading.Thread

    def text(self) -> str:
        """Everything the child printed so far."""
        return "".join(self.output)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the child (kill it if it lingers) and collect the rest of its output."""
        stop_child(self.process, timeout_s)
        self.reader.join(timeout=5)


def stop_child(proc: subprocess.Popen[str], timeout_s: float = 10.0) -> None:
    """SIGTERM ``proc``, SIGKILL it if it has not ended after ``timeout_s``; always reap it."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def wait_for_listening(proc: subprocess.Popen[str], what: str, timeout_s: float = 30.0, *,
                       host: str = "127.0.0.1") -> Listening:
    """Pump ``proc``'s stdout in a thread until it prints ``listening on http://HOST:PORT``.

    ``proc`` must have been started with ``stdout=PIPE`` and ``text=True``. Its output keeps
    being collected afterwards (so a full pipe never blocks it). When the line does not come
    within ``timeout_s``, or the child ends first, the child is stopped (killed if need be)
    and a RuntimeError names ``what`` and ends with the child's last output.
    """
    pattern = re.compile(rf"listening on (http://{re.escape(host)}:\d+)")
    output: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            m = pattern.search(line)
            if m and not url:
                url.append(m.group(1))
                found.set()
        found.set()  # the child closed its output: it will not say it any more

    reader = threading.Thread(target=pump, name=f"pump {what}", daemon=True)
    reader.start()
    if found.wait(timeout_s) and url:
        return Listening(url[0], proc, output, reader)
    closed = found.is_set()  # its output ended: it exited (or closed stdout) first
    stop_child(proc)
    reader.join(timeout=5)
    why = (f"exited (exit code {proc.returncode})" if closed
           else f"did not start within {timeout_s:g} s")
    raise RuntimeError(f"{what} {why} (no 'listening on' line); its output: "
                       + ("".join(output)[-2000:] or "(none)"))


@contextmanager
def run_sandbox(
    catalog: str | Path,
    *args: str,
    store_hash: str = "sandbox",
    token: str = "sandbox-token",
    env: dict[str, str] | None = None,
    startup_timeout_s: float = 30.0,
) -> Iterator[SandboxProcess]:
    """Run ``invsync sandbox --port 0`` with extra ``args``; always stop it afterwards."""
    child_env = {**os.environ, **(env or {}), "INVSYNC_SANDBOX_TOKEN": token}
    cmd = [sys.executable, "-m", "invsync", "sandbox", "--port", "0", "--catalog", str(catalog),
           "--store-hash", store_hash, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=child_env)
    child = wait_for_listening(proc, "the sandbox store", startup_timeout_s)
    try:
        yield SandboxProcess(url=child.url, store_hash=store_hash, process=proc,
                             output=child.output)
    finally:
        child.stop()
