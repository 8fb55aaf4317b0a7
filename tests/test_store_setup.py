"""A store run's set-up: the run's client (and the HTTP stack's imports) is made in a
worker thread as the run starts, and the CLI process never loads trio through httpcore."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
from typing import Any

import pytest

import invsync.run.store_access as store_access
from invsync.errors import UsageError
from invsync.redact import Secret
from invsync.run.config import Settings
from invsync.run.store_access import StoreSession


def _made_in(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The thread each client is made in, as it is made."""
    made: list[str] = []
    real = store_access.store_client

    def recording(*args: Any, **kwargs: Any) -> Any:
        made.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_access, "store_client", recording)
    return made


async def _base(client: Any) -> str:
    return str(client.base)


def test_a_warm_session_makes_its_one_client_in_a_worker_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    made = _made_in(monkeypatch)
    settings = Settings(store_hash="abc", token=Secret("t0ken-warm"),
                        api_url="http://127.0.0.1:9")
    with StoreSession(settings, warm=True) as store:
        assert store.run(_base).endswith("/stores/abc/v3")
        assert store.run(_base).endswith("/stores/abc/v3")  # the same client again
    assert made == ["invsync-client"]


def test_a_cold_session_makes_its_client_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    made = _made_in(monkeypatch)
    settings = Settings(store_hash="abc", token=Secret("t0ken-cold"),
                        api_url="http://127.0.0.1:9")
    with StoreSession(settings) as store:
        assert made == []
        store.run(_base)
    assert made == [threading.current_thread().name]


def test_a_warm_session_that_cannot_make_its_client_says_why_on_first_use() -> None:
    # No store hash: the worker thread's failure is not swallowed, the first use raises it.
    settings = Settings(store_hash=None, token=Secret("t0ken-nohash"),
                        api_url="http://127.0.0.1:9")
    with StoreSession(settings, warm=True) as store, \
            pytest.raises(UsageError, match="no store hash"):
        store.run(_base)


@pytest.mark.skipif(importlib.util.find_spec("trio") is None, reason="trio not installed")
def test_the_cli_process_never_imports_trio_through_httpcore() -> None:
    code = ("import sys, invsync.surfaces.cli, httpx, httpcore; httpx.AsyncClient(); "
            "print(sys.modules.get('trio') is None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "True"
