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

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


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

    def levels(self) -> dict[tuple[int, str], int]:
        """(location_id, sku) -> on-hand level, for every level set."""
        levels = self.get("/_sandbox/levels")
        return {(lv["location_id"], lv["sku"]): lv["quantity"] for lv in levels}

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("/_sandbox/requests"))

    def stats(self) -> dict[str, Any]:
        return dict(self.get("/_sandbox/stats"))


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
    output: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            m = _LISTENING.search(line)
            if m and not url:
                url.append(m.group(1))
                found.set()
        found.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not found.wait(startup_timeout_s) or not url:
            raise RuntimeError("sandbox did not start: " + "".join(output)[-2000:])
        yield SandboxProcess(url=url[0], store_hash=store_hash, process=proc, output=output)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)
