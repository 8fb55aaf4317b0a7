"""Unit tests of the store client's boundary and of submit's isolation, against MockTransport.

The end-to-end versions (a real CLI process against a misbehaving server) are in
``tests/test_store_faults.py``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import polars as pl
import pytest
from conftest import item_frame

from invsync.errors import AuthError, FatalError, Refused, StoreError, UsageError
from invsync.redact import REDACTED, redact
from invsync.run.config import Secret, clean_token
from invsync.stages.submit import (
    MAX_ISOLATION_REQUESTS,
    Batch,
    BatchResult,
    SubmitObserver,
    SubmitResult,
    _named_items,
    plan_batches,
    submit,
)
from invsync.store.client import StoreClient
from invsync.store.limits import RetryPolicy

TOKEN = "tok-unit-7c1e55aa90"
STORE = "abc123"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.01, max_total_s=30)

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, retry: RetryPolicy = FAST, **kwargs: Any) -> StoreClient:
    return StoreClient("http://store.test", STORE, Secret(TOKEN),
                       transport=httpx.MockTransport(handler), retry=retry, seed=1, **kwargs)


def skus(n: int, loc: int = 1) -> pl.DataFrame:
    return item_frame([(loc, "sku", f"S{i}", i) for i in range(n)], with_old=True)


def problem(title: str, errors: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.Response(422, json={"status": 422, "title": title, "errors": errors or {}})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _locations(c: StoreClient) -> Any:
    async with c:
        return await c.get_locations()


async def _items(c: StoreClient) -> list[Any]:
    async with c:
        return [e async for e in c.iter_items([1])]


# ---- the token: per request, never in an object's repr ----------------------------------


def test_token_travels_per_request_and_is_in_no_repr() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("x-auth-token"))
        return httpx.Response(200, json={"data": [{"id": 1, "code": "A"}],
                                         "meta": {"pagination": {"total_pages": 1}}})

    c = client(handler)
    assert TOKEN not in repr(c._http.headers)
    assert "x-auth-token" not in {k.lower() for k in c._http.headers}
    assert TOKEN not in repr(c) and TOKEN not in repr(vars(c)) and TOKEN not in str(vars(c))
    run(_locations(c))
    assert seen == [TOKEN]


@pytest.mark.parametrize("raw", [f"{TOKEN}\r", f"{TOKEN}\n", f"\t{TOKEN} ", f" {TOKEN}\r\n"])
def test_token_surrounding_whitespace_is_stripped(raw: str) -> None:
    secret = clean_token(raw, "BIGCOMMERCE_ACCESS_TOKEN")
    assert secret is not None and secret.reveal() == TOKEN


@pytest.mark.parametrize("raw", ["tok-\x07-abcdefgh", "tok-ä-abcdefgh", "tok-\r-abcdefgh",
                                 "tok-\u200b-abcdefgh"])
def test_token_with_control_or_non_ascii_character_is_refused_without_showing_it(
        raw: str) -> None:
    with pytest.raises(UsageError) as info:
        clean_token(raw, "BIGCOMMERCE_ACCESS_TOKEN")
    assert "abcdefgh" not in str(info.value) and "tok-" not in str(info.value)
    assert info.value.exit_code == 64


# ---- the exception boundary --------------------------------------------------------------


@pytest.mark.parametrize("exc", [httpx.UnsupportedProtocol("htp"), httpx.LocalProtocolError(
    f"Illegal header value b'{TOKEN}\\r'"), httpx.DecodingError("bad gzip"),
    httpx.TooManyRedirects("loop"), httpx.ProxyError("proxy"), httpx.InvalidURL("bad"),
    UnicodeEncodeError("ascii", "x", 0, 1, "no")])
def test_every_httpx_error_becomes_a_store_error_without_its_text(exc: Exception) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with pytest.raises(StoreError) as info:
        run(_locations(client(handler)))
    assert TOKEN not in str(info.value)
    assert "GET /inventory/locations" in str(info.value)


def test_an_unsupported_scheme_is_a_store_error_not_a_traceback() -> None:
    c = StoreClient("htp://store.test", STORE, TOKEN, retry=FAST)
    with pytest.raises(StoreError, match="UnsupportedProtocol"):
        run(_locations(c))


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html><body>Maintenance</body></html>",
                   headers={"content-type": "text/html"}),
    httpx.Response(200, content=b"\xff\xfe\x00garbage"),
    httpx.Response(200, json=[1, 2, 3]),
    httpx.Response(200, json={"data": "nope"}),
    httpx.Response(200, json={"data": [1, 2]}),
    httpx.Response(200, json={"data": [{"code": "no id"}]}),
    httpx.Response(200, json={"data": [{"id": "x1"}]}),
    httpx.Response(200, json={"data": [{"id": 1}], "meta": {"pagination": {"total_pages": "?"}}}),
])
def test_ill_shaped_answers_are_store_errors(answer: httpx.Response) -> None:
    with pytest.raises(StoreError, match="GET /inventory/locations"):
        run(_locations(client(lambda r: answer)))


@pytest.mark.parametrize(("answer", "message"), [
    (httpx.Response(200, text="<html>Maintenance</html>", headers={
        "content-type": "text/html; charset=utf-8"}),
     "GET /inventory/locations: the store's page 1 is not JSON (text/html)"),
    (httpx.Response(200, content=b'{"data": [', headers={"content-type": "application/json"}),
     "GET /inventory/locations: the store's page 1 is not JSON"),
    (httpx.Response(200, content=b"\xff\xfe\x00garbage"),
     "GET /inventory/locations: the store's page 1 is not JSON (no content type)"),
    (httpx.Response(200, json={"data": "nope"}),
     "GET /inventory/locations: the store's page 1 is not a list of entries"),
    (httpx.Response(200, json={"data": [{"id": 1}], "meta": {"pagination": {"total": "x"}}}),
     "GET /inventory/locations: page 1 has no usable pagination"),
])
def test_the_client_refuses_a_page_as_the_runs_reads_do(answer: httpx.Response,
                                                        message: str) -> None:
    """One page parser: the client's listings and the run's level reads (levels_page) refuse
    an ill-shaped page with the same words, exit 2 (a body that is not JSON also names
    the content type the store gave, unless it claimed JSON)."""
    from invsync.store.live import levels_page

    with pytest.raises(StoreError) as info:
        run(_locations(client(lambda r: answer)))
    assert str(info.value) == message and info.value.exit_code == 2
    with pytest.raises(StoreError) as same:
        levels_page(answer.content, 1, "GET /inventory/locations", wanted=frozenset({1}))
    assert message.startswith(str(same.value))


def test_a_422_on_a_read_is_a_store_error_not_a_rejected_row() -> None:
    with pytest.raises(StoreError) as info:
        run(_items(client(lambda r: problem("Invalid value for filter location_id:in"))))
    assert not isinstance(info.value, Refused)
    assert "HTTP 422" in str(info.value) and "GET /inventory/items" in str(info.value)
    assert info.value.exit_code == 2


def test_an_empty_store_hash_is_a_usage_error_before_any_request() -> None:
    with pytest.raises(UsageError):
        StoreClient("http://store.test", "", TOKEN)


def test_error_bodies_are_redacted_where_they_enter() -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        dump = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
        return httpx.Response(400, text=f"bad request, you sent {dump} Authorization: Bearer "
                                        f"abc.def")

    with pytest.raises(StoreError) as info:
        run(_locations(client(echo)))
    assert TOKEN not in str(info.value) and "abc.def" not in str(info.value)
    assert REDACTED in str(info.value)


def test_redact_removes_registered_secrets_and_header_shaped_values() -> None:
    Secret(TOKEN)  # a client's token is registered when it is wrapped
    Secret("short")  # registered, but removed only as a whole word
    text = (f"b'{TOKEN}\\r' {{'X-Auth-Token': 'other-token-1'}} x-auth-token=zzz "
            f"Authorization: Basic QWxhZGRpbg== shortcake short.")
    out = redact(text)
    for secret in (TOKEN, "other-token-1", "zzz", "QWxhZGRpbg=="):
        assert secret not in out
    assert "shortcake" in out and " short." not in out


# ---- bounded waits -----------------------------------------------------------------------


def test_a_429_asking_for_a_day_fails_at_once_when_it_exceeds_the_budget() -> None:
    policy = RetryPolicy(max_attempts=10, base_delay_s=0.01, max_delay_s=0.05, max_total_s=5,
                         timeout_s=2)
    started = time.monotonic()
    with pytest.raises(StoreError, match="asked to wait 100,000 s") as info:
        run(_locations(client(lambda r: httpx.Response(429, headers={"X-Retry-After": "100000"}),
                              retry=policy)))
    assert time.monotonic() - started < 3
    assert info.value.maybe_applied is False  # a 429 applies nothing


def test_a_quota_reset_far_away_is_capped_and_fails_when_beyond_the_budget() -> None:
    policy = RetryPolicy(max_total_s=5, timeout_s=2, max_wait_s=60)
    answers = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        answers["n"] += 1
        return httpx.Response(200, json={"data": [{"id": answers["n"]}] * 1000,
                                         "meta": {"pagination": {"total_pages": 3}}},
                              headers={"X-Rate-Limit-Requests-Left": "0",
                                       "X-Rate-Limit-Time-Reset-Ms": "900000000"})

    c = client(handler, retry=policy)
    started = time.monotonic()
    with pytest.raises(StoreError, match="rate limit asks to wait 60 s"):
        run(_locations(c))
    assert time.monotonic() - started < 3
    assert c.limiter.reset_at - time.monotonic() < 61


def test_a_slow_body_is_cut_by_the_per_request_deadline() -> None:
    class Drip(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield b'{"data": ['
            while True:
                await asyncio.sleep(0.2)
                yield b" "

    policy = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.02, max_total_s=30,
                         timeout_s=0.5)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, stream=Drip())

    started = time.monotonic()
    with pytest.raises(StoreError, match="no complete answer in time"):
        run(_locations(client(handler, retry=policy)))
    assert len(calls) == 3 and time.monotonic() - started < 5


def test_the_run_gives_up_within_max_total_s_of_its_last_progress() -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay_s=0.05, max_delay_s=0.1, max_total_s=1.0,
                         timeout_s=5)
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(200, json={"data": [{"id": i} for i in range(1000)],
                                             "meta": {"pagination": {"total_pages": 2}}})
        return httpx.Response(503)

    started = time.monotonic()
    with pytest.raises(StoreError, match="gave up"):
        run(_locations(client(handler, retry=policy)))
    assert time.monotonic() - started < 3


# ---- pagination --------------------------------------------------------------------------


def _page(entries: list[dict[str, Any]], **pagination: Any) -> httpx.Response:
    return httpx.Response(200, json={"data": entries, "meta": {"pagination": pagination}})


def _entry(n: int) -> dict[str, Any]:
    return {"identity": {"sku": f"S{n}"}, "locations": [
        {"location_id": 1, "total_inventory_onhand": n}]}


def test_pages_beyond_what_total_makes_plausible_fail_clearly() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        calls.append(page)
        return _page([_entry(page * 1000 + i) for i in range(1000)], total=3000,
                     total_pages=59766830, per_page=1000)

    with pytest.raises(StoreError, match=r"GET /inventory/items: the store claims 59766830 "
                                         r"pages, more than plausible \(3"):
        run(_items(client(handler)))
    assert calls == [1]  # page 1's total already makes the count implausible


def test_a_repeated_page_fails_clearly() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return _page([_entry(i) for i in range(1000)], total_pages=59766830)

    with pytest.raises(StoreError, match="GET /inventory/items: page 2 repeats page 1"):
        run(_items(client(handler)))


def test_the_hard_page_cap_holds_without_a_total() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        calls.append(page)
        return _page([_entry(page * 1000 + i) for i in range(1000)], total_pages=59766830)

    with pytest.raises(StoreError, match="more than plausible"):
        run(_items(client(handler, max_pages=5)))
    assert calls == [1, 2, 3, 4, 5]


def test_an_empty_page_while_items_are_missing_fails() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        entries = [_entry(i) for i in range(1000)] if page == 1 else []
        return _page(entries, total=2500, total_pages=3)

    with pytest.raises(StoreError, match="page 2 is empty although only 1,000 of the 2,500"):
        run(_items(client(handler)))


def test_honest_pagination_reads_every_page_once() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        calls.append(page)
        n = 1000 if page < 3 else 500
        return _page([_entry(page * 1000 + i) for i in range(n)], total=2500, total_pages=3,
                     per_page=1000)

    assert len(run(_items(client(handler)))) == 2500
    assert calls == [1, 2, 3]


def test_without_pagination_a_short_page_is_the_last() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        calls.append(page)
        n = 1000 if page < 2 else 10
        return httpx.Response(200, json={"data": [_entry(page * 1000 + i) for i in range(n)]})

    assert len(run(_items(client(handler)))) == 1010
    assert calls == [1, 2]


# ---- submit: isolation budget, callbacks, fatal errors -----------------------------------


def _submit(handler: Handler, changes: pl.DataFrame, batch_size: int = 2000,
            concurrency: int = 1, **callbacks: Any) -> SubmitResult:
    async def go() -> SubmitResult:
        async with client(handler) as c:
            return await submit(c, plan_batches(changes, batch_size), reason="r",
                                concurrency=concurrency, **callbacks)

    return run(go())


def test_a_store_refusing_everything_costs_at_most_the_isolation_budget() -> None:
    puts = []

    def handler(request: httpx.Request) -> httpx.Response:
        puts.append(len(json.loads(request.content)["items"]))
        return problem("The request payload is invalid")

    result = _submit(handler, skus(2000))
    assert len(puts) == MAX_ISOLATION_REQUESTS
    batch = result.batches[0]
    assert batch.requests == MAX_ISOLATION_REQUESTS and batch.status == "refused"
    assert sorted(s for s, _ in result.refused) == list(range(2000))  # every item accounted
    assert any(m.startswith("not isolated") for _, m in result.refused)
    assert result.accepted == [] and result.fatal is None


def test_isolation_that_fits_the_budget_finds_the_bad_item() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        if any(it["sku"] == "S1234" for it in items):
            return problem("The request payload is invalid")
        return httpx.Response(200, json={"transaction_id": "t"})

    result = _submit(handler, skus(2000))
    assert [s for s, _ in result.refused] == [1234]
    assert len(result.accepted) == 1999
    assert result.batches[0].requests < 30


@pytest.mark.parametrize(("key", "named"), [("items.0", {0}), ("items.2", {2}),
                                            ("items.3", set()), ("items.30", set())])
def test_items_index_hint_is_bounded_by_the_request(key: str, named: set[int]) -> None:
    items = [{"location_id": 1, "sku": f"S{i}", "quantity": 1} for i in range(3)]
    assert _named_items(Refused("Invalid", {key: "bad"}, 1), items) == named


def test_submit_callbacks_and_result_fields() -> None:
    sending: list[int] = []
    confirmed: list[tuple[int, list[int], str]] = []
    finished: list[BatchResult] = []
    tx = iter(range(100))

    def handler(request: httpx.Request) -> httpx.Response:
        items = json.loads(request.content)["items"]
        if len(items) > 1 and any(it["sku"] == "S4" for it in items):
            return problem("Invalid", {f"items.{[it['sku'] for it in items].index('S4')}": "x"})
        if [it["sku"] for it in items] == ["S4"]:
            return problem("S4 not found")
        return httpx.Response(200, json={"transaction_id": f"tx-{next(tx)}"})

    class Observer(SubmitObserver):
        def sending(self, batch: Batch) -> None:
            sending.append(batch.index)

        def confirmed(self, batch: Batch, idx: list[int], txid: str) -> None:
            confirmed.append((batch.index, list(idx), txid))

        def finished(self, result: BatchResult) -> None:
            finished.append(result)

    result = _submit(handler, skus(6), batch_size=3, observer=Observer())
    assert sending == [0, 1]
    # Batch 1 (S3 S4 S5) was refused once, then S3+S5 (positions 0 and 2) went through.
    assert confirmed == [(0, [0, 1, 2], "tx-0"), (1, [0, 2], "tx-1")]
    assert [(b.index, b.status) for b in finished] == [(0, "accepted"), (1, "partial")]
    assert result.sent == [0, 1, 2, 3, 4, 5]
    assert result.refused == [(4, "S4 not found")]
    assert result.fatal is None and result.transaction_ids == ["tx-0", "tx-1"]


def test_a_fatal_error_stops_the_run_and_is_returned() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, json={"transaction_id": "tx-ok"})
        return httpx.Response(500)

    finished: list[BatchResult] = []

    class Finished(SubmitObserver):
        def finished(self, result: BatchResult) -> None:
            finished.append(result)

    result = _submit(handler, skus(9), batch_size=3, observer=Finished())
    assert isinstance(result.fatal, StoreError) and isinstance(result.fatal, FatalError)
    assert [b.status for b in result.batches] == ["accepted", "failed", "not_sent"]
    assert result.batches[1].error == str(result.fatal)
    # The failed batch's answers were 5xx: the store may have applied it.
    assert result.sent == [0, 1, 2, 3, 4, 5]
    assert [b.index for b in finished] == [0, 1]


def test_a_batch_refused_for_the_token_was_not_applied() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, json={"transaction_id": "tx-ok"})
        return httpx.Response(401)

    result = _submit(handler, skus(9), batch_size=3)
    assert isinstance(result.fatal, AuthError)
    assert result.batches[1].status == "failed" and result.batches[1].not_applied == [3, 4, 5]
    assert result.batches[1].to_dict()["not_applied"] == 3
    assert result.sent == [0, 1, 2]  # batch 1 counts as not sent: the store applied none of it


def test_a_401_after_a_lost_answer_may_have_been_applied() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ReadTimeout("lost")
        return httpx.Response(401)

    result = _submit(handler, skus(3))
    assert isinstance(result.fatal, AuthError)
    assert result.batches[0].not_applied == [] and result.sent == [0, 1, 2]


def test_a_401_during_isolation_leaves_the_pending_items_not_applied() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return problem("Invalid")
        return httpx.Response(401)

    result = _submit(handler, skus(4))
    assert sorted(result.batches[0].not_applied) == [0, 1, 2, 3] and result.sent == []


@pytest.mark.parametrize(("exc", "maybe"), [(httpx.UnsupportedProtocol("x"), False),
                                            (httpx.LocalProtocolError("x"), False),
                                            (httpx.DecodingError("x"), True)])
def test_a_fatal_transport_error_says_whether_the_write_may_have_landed(
        exc: Exception, maybe: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    result = _submit(handler, skus(2))
    assert isinstance(result.fatal, StoreError)
    assert result.sent == ([0, 1] if maybe else [])
