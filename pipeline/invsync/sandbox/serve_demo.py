"""``make serve``: the upload page in front of a sandbox store, with a demo user, in one command.

State (users, uploads, runs) goes to ``.demo-serve/`` in the repository; the password of the
``demo`` user is made up at random and printed. Ctrl-C stops the page and the sandbox.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from invsync.sandbox.process import run_sandbox

ROOT = Path(__file__).resolve().parents[3]  # the repository (the demo runs from a checkout)
SAMPLE = ROOT / "sample_data"
DEMO_TOKEN = "demo-token"  # the sandbox's own token, not a real credential


def main(port: int = 8000) -> int:
    """Run the sandbox and ``invsync serve`` until interrupted."""
    # SIGTERM ends the demo like Ctrl-C: the sandbox and the page are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    work = ROOT / ".demo-serve"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    password = secrets.token_urlsafe(9)
    with run_sandbox(SAMPLE / "catalog.csv", store_hash="demo", token=DEMO_TOKEN) as sb:
        env = {**os.environ, "BIGCOMMERCE_STORE_HASH": "demo",
               "BIGCOMMERCE_ACCESS_TOKEN": DEMO_TOKEN, "BIGCOMMERCE_API_URL": sb.url,
               "XDG_STATE_HOME": str(work / "state")}
        base = [sys.executable, "-m", "invsync"]
        subprocess.run([*base, "portal", "add-user", "demo"], input=password + "\n", env=env,
                       text=True, check=True, capture_output=True)
        # A nightly run first, so the page has levels to compare with and a history.
        subprocess.run([*base, "-q", "sync", str(SAMPLE / "night1.csv")], env=env, check=False)
        print(f"\nsandbox store running at {sb.url}\n"
              f"upload page: http://127.0.0.1:{port}/  user: demo  password: {password}\n"
              f"try uploading {SAMPLE / 'merchant.xlsx'}; Ctrl-C stops everything\n"
              f"state folder (users, API keys, uploads): {work / 'state' / 'invsync'}\n"
              f"an API key for it: invsync portal add-key erp --state-dir "
              f"{work / 'state' / 'invsync'}\n",
              flush=True)
        try:
            return subprocess.run([*base, "serve", "--port", str(port)], env=env,
                                  check=False).returncode
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main(int(os.environ.get("PORT") or 8000)))
