"""A store run's set-up: the run's client (and the HTTP stack's imports) is made in a
worker thread as the run starts, and the CLI process never loads trio through httpcore."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import threading
from typing import Any

import httpx
import pytest
from conftest import TOKEN

import invsync.run.store_access as store_access
from invsync.errors import UsageError
from invsync.redact import Secret
from invsync.run.config import Settings
from invsync.run.store_access import StoreSession
from invsync.sandbox.process import SandboxProcess
from invsync.store.client import StoreClient
from invsync.store.limits import WRITTEN_OUT


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


def _put_telling_written_out(client: Any) -> tuple[list[str], str]:
    """One write through ``client``; what happened, in order: ``written`` when the client
    said the request was written out, ``answered`` when the write returned."""
    events: list[str] = []

    async def put() -> str:
        WRITTEN_OUT.set(lambda: events.append("written"))
        async with client:
            put = await client.put_absolute(
                [{"location_id": 1, "sku": "POSTER-1755", "quantity": 7}], None)
        events.append("answered")
        return put.transaction_id

    return events, asyncio.run(put())


def test_the_client_says_when_a_write_is_written_out_before_its_answer(
        sandbox: SandboxProcess) -> None:
    # httpcore's trace events name the moment: a renamed event would silently make the
    # next body be built only after each answer.
    client = StoreClient(sandbox.url, sandbox.store_hash, TOKEN)
    events, txid = _put_telling_written_out(client)
    assert txid and events == ["written", "answered"]


def test_a_client_on_another_transport_counts_a_write_as_out_at_once() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"transaction_id": "tx-1"})

    client = StoreClient("http://store.invalid", "abc", "t0ken-mock",
                         transport=httpx.MockTransport(answer))
    events, txid = _put_telling_written_out(client)
    assert txid == "tx-1" and events == ["written", "answered"]


def test_wait_made_waits_for_the_client_even_once_the_run_has_taken_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The run takes the client being made ahead (and waits for it itself) while the
    # report's templates wait for it in another thread: they must still wait, not go on
    # as if no client were being made (a full test run caught them compiling first).
    release = threading.Event()
    real = store_access._warm_client

    def slow(*args: Any, **kwargs: Any) -> Any:
        release.wait(timeout=30)
        return real(*args, **kwargs)

    monkeypatch.setattr(store_access, "_warm_client", slow)
    settings = Settings(store_hash="abc", token=Secret("t0ken-wait"),
                        api_url="http://127.0.0.1:9")
    with StoreSession(settings, warm=True) as store:
        taker = threading.Thread(target=store.run, args=(_base,))
        taker.start()
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (store.wait_made(timeout_s=30), done.set()))
        try:
            while store.making:  # until the run has taken the client being made
                threading.Event().wait(0.01)
            waiter.start()
            assert not done.wait(timeout=0.3)  # still waiting: the client is not made yet
            release.set()
            assert done.wait(timeout=30)
        finally:
            release.set()
            taker.join(timeout=30)
            if waiter.is_alive():
                waiter.join(timeout=30)


class _Loud:
    """A result that counts the times it is formatted."""

    formatted = 0

    def __repr__(self) -> str:
        _Loud.formatted += 1
        return "<loud>"


async def _loud(client: Any) -> _Loud:
    return _Loud()


def test_a_sessions_result_is_never_formatted_on_its_way_back() -> None:
    # asyncio.Runner looks its SIGINT handler (which holds the main task, and so the
    # result) up once the task is done, formatting its repr: a submit result of 100k items
    # took a tenth of a run's tail. The session hands the result back without that.
    import signal

    settings = Settings(store_hash="abc", token=Secret("t0ken-loud"),
                        api_url="http://127.0.0.1:9")
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in the CLI
    try:
        with StoreSession(settings) as store:
            result = store.run(_loud)
            assert isinstance(result, _Loud)
            assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)
    assert _Loud.formatted == 0
