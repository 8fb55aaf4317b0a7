"""Unit tests of stage 4 and the store client, against ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import polars as pl
import pytest
from conftest import item_frame

from invsync.errors import AuthError, Refused, StoreError
from invsync.stages.submit import SubmitResult, plan_batches, submit
from invsync.store.client import RateLimiter, StoreClient
from invsync.store.limits import RetryPolicy

TOKEN = "tok-secret-9f8e7d"
STORE = "abc123"
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.01, max_total_s=30)
PUT_PATH = f"/stores/{STORE}/v3/inventory/adjustments/absolute"


def changes_frame(items: list[tuple[int, str, str, int]]) -> pl.DataFrame:
    """Change rows from (location_id, identifier, item_key, quantity)."""
    return item_frame(items, with_old=True)


def skus(n: int, loc: int = 1) -> pl.DataFrame:
    return changes_frame([(loc, "sku", f"S{i}", i) for i in range(n)])


def keys_of(ids: list[int], changes: pl.DataFrame) -> list[str]:
    """Item keys of the items a result refers to (by position in the change set)."""
    keys = changes["item_key"].to_list()
    return [keys[i] for i in ids]


class Store:
    """A scripted store: records every request; ``respond`` decides each answer."""

    def __init__(self, respond: Callable[[Store, httpx.Request, dict], httpx.Response]
                 | None = None) -> None:
        self.respond = respond or (lambda s, r, b: s.ok(b))
        self.requests: list[httpx.Request] = []
        self.bodies: list[dict] = []
        self.applied: list[dict] = []
        self.times: list[float] = []
        self.tx = 0

    def ok(self, body: dict, headers: dict[str, str] | None = None) -> httpx.Response:
        self.applied.extend(body.get("items", []))
        self.tx += 1
        return httpx.Response(200, json={"transaction_id": f"tx-{self.tx}"},
                              headers=headers or {})

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        body = json.loads(request.content) if request.content else {}
        self.bodies.append(body)
        return self.respond(self, request, body)

    def client(self, **kwargs: Any) -> StoreClient:
        kwargs.setdefault("retry", FAST)
        return StoreClient("http://store.test", STORE, TOKEN,
                           transport=httpx.MockTransport(self.handler), seed=1, **kwargs)


def run_submit(store: Store, changes: pl.DataFrame, batch_size: int = 2000,
               concurrency: int = 4, **client_kwargs: Any) -> SubmitResult:
    async def go() -> SubmitResult:
        async with store.client(concurrency=concurrency, **client_kwargs) as client:
            batches = plan_batches(changes, batch_size)
            return await submit(client, batches, reason="nightly", concurrency=concurrency)

    return asyncio.run(go())


def problem(title: str, errors: dict | None = None) -> httpx.Response:
    return httpx.Response(422, json={"status": 422, "title": title, "type": "x",
                                     "errors": errors or {}},
                          headers={"content-type": "application/problem+json"})


# --------------------------------------------------------------------------- planning


def test_plan_batches_groups_by_location_and_caps_size() -> None:
    items = [(2, "sku", "B0", 1), (1, "sku", "A0", 1), (1, "sku", "A1", 2), (2, "sku", "B1", 1),
             (1, "variant_id", "77", 3), (1, "product_id", "111", 4), (2, "sku", "B2", 0),
             (1, "sku", "A2", 5)]
    changes = changes_frame(items)
    batches = plan_batches(changes, batch_size=2)
    assert [(b.location_id, len(b)) for b in batches] == [(1, 2), (1, 2), (1, 1), (2, 2), (2, 1)]
    assert [b.index for b in batches] == list(range(5))
    seen = []
    for b in batches:
        assert len(b) <= 2
        assert {it["location_id"] for it in b.items} == {b.location_id}
        seen.extend(it.get("sku") or it.get("variant_id") or it.get("product_id")
                    for it in b.items)
    assert sorted(map(str, seen)) == sorted(k for _, _, k, _ in items)
    # File order is kept inside a location.
    assert [it.get("sku") for b in batches[:3] for it in b.items] == [
        "A0", "A1", None, None, "A2"]


def test_payload_items_have_exactly_one_identifier() -> None:
    changes = changes_frame([(1, "sku", "A", 1), (1, "variant_id", "77", 0),
                             (3, "product_id", "111", 5)])
    items = [it for b in plan_batches(changes) for it in b.items]
    assert items == [{"location_id": 1, "sku": "A", "quantity": 1},
                     {"location_id": 1, "variant_id": 77, "quantity": 0},
                     {"location_id": 3, "product_id": 111, "quantity": 5}]


@pytest.mark.parametrize("size", [0, -1, 2001])
def test_plan_batches_rejects_bad_sizes(size: int) -> None:
    with pytest.raises(ValueError):
        plan_batches(skus(3), size)


def test_full_batches_of_2000() -> None:
    batches = plan_batches(skus(4500))
    assert [len(b) for b in batches] == [2000, 2000, 500]


# --------------------------------------------------------------------------- happy path


def test_submit_sends_put_with_token_reason_and_all_items() -> None:
    store = Store()
    changes = skus(7).vstack(skus(3, loc=2))
    result = run_submit(store, changes, batch_size=3)
    assert result.fatal is None
    assert len(store.requests) == 4  # location 1: 3+3+1, location 2: 3
    for req, body in zip(store.requests, store.bodies, strict=True):
        assert req.method == "PUT"
        assert req.url.path == PUT_PATH
        assert req.headers["X-Auth-Token"] == TOKEN
        assert req.headers["content-type"] == "application/json"
        assert req.headers["accept"] == "application/json"
        assert body["reason"] == "nightly"
        assert 1 <= len(body["items"]) <= 3
        assert len({it["location_id"] for it in body["items"]}) == 1
    assert sorted(result.accepted) == list(range(10))
    assert result.refused == []
    assert sorted(result.transaction_ids) == sorted(f"tx-{i}" for i in range(1, 5))
    assert all(b.status == "accepted" for b in result.batches)
    assert Counter((it["location_id"], it["sku"]) for it in store.applied) == Counter(
        zip(changes["location_id"].to_list(), changes["sku"].to_list(), strict=True))


# --------------------------------------------------------------------------- 422 isolation


def isolating_store(bad: set[str], title: Callable[[list[dict], list[int]], str],
                    errors: Callable[[list[dict], list[int]], dict] | None = None) -> Store:
    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        items = body["items"]
        hits = [j for j, it in enumerate(items) if str(it.get("sku")) in bad]
        if hits:
            return problem(title(items, hits), errors(items, hits) if errors else None)
        return s.ok(body)

    return Store(respond)


def bound(n: int, k: int) -> int:
    return 2 * k * max(1, math.ceil(math.log2(n))) + 2


def check_isolation(store: Store, result: SubmitResult, changes: pl.DataFrame,
                    bad: set[str]) -> None:
    all_keys = set(changes["item_key"].to_list())
    assert result.fatal is None
    assert set(keys_of(result.accepted, changes)) == all_keys - bad
    assert sorted(keys_of([i for i, _ in result.refused], changes)) == sorted(bad)
    # Every good item applied exactly once, no bad item ever applied.
    applied = Counter(it["sku"] for it in store.applied)
    assert applied == Counter(all_keys - bad)
    assert len(result.accepted) == len(all_keys - bad)


@pytest.mark.parametrize("bad", [{"S13"}, {"S0"}, {"S63"}])
def test_422_title_naming_the_item(bad: set[str]) -> None:
    store = isolating_store(
        bad, lambda items, hits: f"[Item with sku '{items[hits[0]]['sku']}' not found]")
    changes = skus(64)
    result = run_submit(store, changes)
    check_isolation(store, result, changes, bad)
    # The title names the item: the first refusal, then the suspect and the rest.
    assert len(store.requests) <= 3
    (_, message), = result.refused
    assert next(iter(bad)) in message
    assert result.batches[0].status == "partial"


def test_422_title_naming_variant_and_product_ids() -> None:
    changes = changes_frame([(1, "variant_id", str(100 + i), 1) for i in range(20)]
                            + [(1, "product_id", "106", 2)])

    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        items = body["items"]
        if any(it.get("variant_id") == 106 for it in items):
            return problem("[Item with variant_id 106 is tracked by product, please update "
                           "stock by product id]")
        return s.ok(body)

    store = Store(respond)
    result = run_submit(store, changes)
    assert keys_of([i for i, _ in result.refused], changes) == ["106"]
    refused_item = changes.row(result.refused[0][0], named=True)
    assert refused_item["identifier"] == "variant_id"
    assert len(result.accepted) == 20  # product 106 is fine; variant 106 is not
    assert len(store.requests) <= 4


@pytest.mark.parametrize("n", [2, 7, 64, 300])
def test_422_vague_title_halves_down_to_the_item(n: int) -> None:
    bad = {f"S{n // 2}"}
    store = isolating_store(bad, lambda items, hits: "Payload contains invalid fields")
    changes = skus(n)
    result = run_submit(store, changes)
    check_isolation(store, result, changes, bad)
    assert len(store.requests) <= bound(n, 1)
    assert result.refused[0][1] == "Payload contains invalid fields"


def test_422_errors_by_item_index() -> None:
    bad = {"S3", "S40"}
    store = isolating_store(
        bad, lambda items, hits: "Payload contains invalid fields",
        lambda items, hits: {f"items.{j}.quantity": "must be <= 2147483647" for j in hits})
    changes = skus(100)
    result = run_submit(store, changes)
    check_isolation(store, result, changes, bad)
    # The errors name both: one refused request, one for the rest, one per suspect.
    assert len(store.requests) <= 1 + 1 + 2 + 2


@pytest.mark.parametrize(("n", "bad"), [
    (64, {"S3", "S17", "S40"}),
    (200, {"S0", "S1", "S2", "S199"}),
    (33, {f"S{i}" for i in range(0, 33, 4)}),
])
def test_422_several_bad_items_with_vague_titles(n: int, bad: set[str]) -> None:
    store = isolating_store(bad, lambda items, hits: "Payload contains invalid fields")
    changes = skus(n)
    result = run_submit(store, changes)
    check_isolation(store, result, changes, bad)
    assert len(store.requests) <= bound(n, len(bad))


def test_422_title_naming_only_some_of_several_bad_items() -> None:
    bad = {"S5", "S50", "S77"}
    store = isolating_store(bad, lambda items, hits: f"sku: {items[hits[0]]['sku']} is unknown")
    changes = skus(128)
    result = run_submit(store, changes)
    check_isolation(store, result, changes, bad)
    assert len(store.requests) <= bound(128, 3)


def test_422_misleading_title_never_refuses_a_good_item() -> None:
    bad = {"S9"}
    # The title names S1 (good) and S12 (good) instead of the bad S9.
    store = isolating_store(bad, lambda items, hits: "Item with sku S1 and sku 'S12' failed")
    changes = skus(16)
    result = run_submit(store, changes)
    check_isolation(store, result, changes, bad)


def test_422_sku_prefix_in_title_does_not_name_longer_skus() -> None:
    # "S1" must not be taken to name "S10" or "S1-X".
    changes = changes_frame([(1, "sku", k, 1) for k in ["S10", "S1-X", "S1", "S11"]])
    bad = {"S1"}
    store = isolating_store(bad, lambda items, hits: "Item with sku 'S1' not found")
    result = run_submit(store, changes)
    check_isolation(store, result, changes, bad)
    assert len(store.requests) == 3


def test_422_every_item_bad_refuses_all_with_the_title() -> None:
    changes = skus(8, loc=3)
    store = Store(lambda s, r, b: problem("Location not found, identities: [3]"))
    result = run_submit(store, changes)
    assert result.accepted == []
    assert sorted(i for i, _ in result.refused) == list(range(8))
    assert all("Location not found" in m for _, m in result.refused)
    assert result.batches[0].status == "refused"
    assert len(store.requests) <= 2 * 8 - 1


def test_422_location_title_points_at_the_batch_of_that_location() -> None:
    changes = skus(5, loc=1).vstack(skus(5, loc=3))

    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        if any(it["location_id"] == 3 for it in body["items"]):
            return problem("Location not found, identities: [3]")
        return s.ok(body)

    store = Store(respond)
    result = run_submit(store, changes)
    assert sorted(result.accepted) == list(range(5))
    assert sorted(i for i, _ in result.refused) == list(range(5, 10))


# --------------------------------------------------------------------------- retries


def test_429_with_retry_after_waits_then_retries() -> None:
    retries: list[dict] = []

    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        if len(s.requests) == 1:
            return httpx.Response(429, headers={"X-Retry-After": "1"})
        return s.ok(body)

    store = Store(respond)
    t0 = time.monotonic()
    result = run_submit(store, skus(3), on_retry=retries.append)
    assert result.fatal is None
    assert sorted(result.accepted) == [0, 1, 2]
    assert len(store.requests) == 2
    assert store.times[1] - store.times[0] >= 0.95
    assert time.monotonic() - t0 >= 0.95
    assert result.responses_429 == 1
    assert retries and retries[0]["status"] == 429 and retries[0]["wait_s"] >= 1.0


def test_429_waits_for_the_longer_of_retry_after_and_reset() -> None:
    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        if len(s.requests) == 1:
            return httpx.Response(429, headers={"X-Retry-After": "0",
                                                "X-Rate-Limit-Time-Reset-Ms": "300"})
        return s.ok(body)

    store = Store(respond)
    result = run_submit(store, skus(2))
    assert sorted(result.accepted) == [0, 1]
    assert store.times[1] - store.times[0] >= 0.28


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        if len(s.requests) <= 2:
            return httpx.Response(status, text="busy")
        return s.ok(body)

    store = Store(respond)
    result = run_submit(store, skus(4))
    assert result.fatal is None
    assert sorted(result.accepted) == [0, 1, 2, 3]
    assert len(store.requests) == 3
    assert result.batches[0].attempts == 3
    assert result.responses_429 == (2 if status == 429 else 0)


@pytest.mark.parametrize("exc", [httpx.RemoteProtocolError, httpx.ReadTimeout,
                                 httpx.ConnectError])
def test_dropped_connection_is_retried_and_counted_once(exc: type[Exception]) -> None:
    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        if len(s.requests) == 1:
            s.applied.extend(body["items"])  # the store applied it, but the answer was lost
            raise exc("Server disconnected without sending a response.", request=req)
        return s.ok(body)

    store = Store(respond)
    changes = skus(5)
    result = run_submit(store, changes)
    assert result.fatal is None
    assert len(store.requests) == 2
    assert sorted(result.accepted) == list(range(5))
    assert len(result.transaction_ids) == 1
    assert result.batches[0].status == "accepted"
    assert result.batches[0].attempts == 2
    assert result.requests == 2


def test_401_stops_the_run() -> None:
    store = Store(lambda s, r, b: httpx.Response(401, json={"title": "Unauthorized"}))
    result = run_submit(store, skus(6), batch_size=2, concurrency=1)
    assert isinstance(result.fatal, AuthError)
    assert len(store.requests) == 1  # not retried, and no further batch sent
    assert [b.status for b in result.batches] == ["failed", "not_sent", "not_sent"]
    assert result.accepted == []
    assert TOKEN not in str(result.fatal)


def test_403_is_an_auth_error() -> None:
    async def go() -> None:
        store = Store(lambda s, r, b: httpx.Response(403))
        async with store.client() as client:
            with pytest.raises(AuthError, match="403"):
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}], None)
        assert len(store.requests) == 1

    asyncio.run(go())


def test_persistent_500_is_a_store_error_after_max_attempts() -> None:
    store = Store(lambda s, r, b: httpx.Response(500))
    policy = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01)
    result = run_submit(store, skus(4), batch_size=2, concurrency=1, retry=policy)
    assert isinstance(result.fatal, StoreError)
    assert "3 attempts" in str(result.fatal)
    assert len(store.requests) == 3
    assert [b.status for b in result.batches] == ["failed", "not_sent"]
    assert TOKEN not in str(result.fatal)


def test_unexpected_status_is_not_retried() -> None:
    async def go() -> None:
        store = Store(lambda s, r, b: httpx.Response(400, json={"title": "Bad Request"}))
        async with store.client() as client:
            with pytest.raises(StoreError, match="400"):
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}], "r")
        assert len(store.requests) == 1

    asyncio.run(go())


def test_200_without_transaction_id_is_a_store_error() -> None:
    async def go() -> None:
        store = Store(lambda s, r, b: httpx.Response(200, json={"ok": True}))
        async with store.client() as client:
            with pytest.raises(StoreError, match="transaction_id"):
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}], None)
        assert "reason" not in store.bodies[0]

    asyncio.run(go())


@pytest.mark.parametrize("txid", [None, "", "  ", [], {}, True])
def test_200_with_a_null_or_empty_transaction_id_is_no_confirmation(txid: object) -> None:
    async def go() -> None:
        store = Store(lambda s, r, b: httpx.Response(200, json={"transaction_id": txid}))
        async with store.client() as client:
            with pytest.raises(StoreError, match="transaction_id"):
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}], None)

    asyncio.run(go())


def test_put_absolute_refuses_more_than_2000_items() -> None:
    async def go() -> None:
        store = Store()
        async with store.client() as client:
            with pytest.raises(ValueError):
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}] * 2001,
                                          None)
        assert store.requests == []

    asyncio.run(go())


def test_refused_carries_title_and_errors() -> None:
    async def go() -> None:
        store = Store(lambda s, r, b: problem("Payload contains invalid fields",
                                              {"items.0.quantity": "bad"}))
        async with store.client() as client:
            with pytest.raises(Refused) as err:
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}], None)
        assert err.value.title == "Payload contains invalid fields"
        assert err.value.errors == {"items.0.quantity": "bad"}
        assert err.value.attempts == 1

    asyncio.run(go())


def test_a_422_is_a_row_level_refusal_a_caller_catches_as_row_rejected() -> None:
    import invsync

    async def go() -> None:
        store = Store(lambda s, r, b: problem("Invalid", {"items.0.sku": "bad"}))
        async with store.client() as client:
            try:
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}],
                                          None)
            except invsync.RowRejected as err:  # the documented base class of refusals
                assert not isinstance(err, invsync.FatalError | invsync.RetryableError)
                assert (err.reason, err.message) == ("refused_by_store", "Invalid")
                assert err.exit_code == 1
            else:
                raise AssertionError("a 422 must raise")

    asyncio.run(go())


# --------------------------------------------------------------------------- rate limiting


def rate_store(left: int, reset_ms: int) -> Store:
    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        return s.ok(body, headers={"X-Rate-Limit-Requests-Left": str(left),
                                   "X-Rate-Limit-Time-Reset-Ms": str(reset_ms),
                                   "X-Rate-Limit-Time-Window-Ms": "30000",
                                   "X-Rate-Limit-Requests-Quota": "150"})

    return Store(respond)


def two_sequential_puts(store: Store) -> RateLimiter:
    async def go() -> RateLimiter:
        async with store.client() as client:
            for _ in range(2):
                await client.put_absolute([{"location_id": 1, "sku": "A", "quantity": 1}], None)
            return client.limiter

    return asyncio.run(go())


def test_rate_limiter_holds_requests_until_reset_when_none_left() -> None:
    store = rate_store(left=0, reset_ms=300)
    limiter = two_sequential_puts(store)
    assert len(store.requests) == 2
    assert store.times[1] - store.times[0] >= 0.28
    assert limiter.waited_s >= 0.25


def test_rate_limiter_does_not_wait_while_requests_are_left() -> None:
    store = rate_store(left=50, reset_ms=5000)
    limiter = two_sequential_puts(store)
    assert store.times[1] - store.times[0] < 0.5
    assert limiter.waited_s == 0
    assert limiter.left == 50


def test_rate_limiter_keeps_concurrent_requests_within_the_quota() -> None:
    """A store with 3 requests per 400 ms window answers 429 beyond that; none must come."""
    window_s, quota = 0.4, 3
    state = {"start": time.monotonic(), "used": 0, "over": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        if now - state["start"] >= window_s:
            state["start"], state["used"] = now, 0
        state["used"] += 1
        reset_ms = int((state["start"] + window_s - now) * 1000)
        headers = {"X-Rate-Limit-Requests-Left": str(max(quota - state["used"], 0)),
                   "X-Rate-Limit-Time-Reset-Ms": str(max(reset_ms, 0)),
                   "X-Rate-Limit-Time-Window-Ms": str(int(window_s * 1000)),
                   "X-Rate-Limit-Requests-Quota": str(quota)}
        await asyncio.sleep(0.005)
        if state["used"] > quota:
            state["over"] += 1
            return httpx.Response(429, headers=headers)
        return httpx.Response(200, json={"transaction_id": "t"}, headers=headers)

    async def go() -> tuple[SubmitResult, float]:
        async with StoreClient("http://store.test", STORE, TOKEN, concurrency=4, retry=FAST,
                               transport=httpx.MockTransport(handler)) as client:
            item = [{"location_id": 1, "sku": "A", "quantity": 1}]
            await client.put_absolute(item, None)  # learn the quota
            t0 = time.monotonic()
            result = await submit(client, plan_batches(skus(5), 1), reason=None,
                                  concurrency=4)
            return result, time.monotonic() - t0

    result, elapsed = asyncio.run(go())
    assert sorted(result.accepted) == list(range(5))
    assert state["over"] == 0
    assert result.responses_429 == 0
    assert elapsed >= 0.3  # 6 requests at 3 per window need a second window


def test_concurrency_is_respected() -> None:
    state = {"now": 0, "max": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        try:
            await asyncio.sleep(0.02)
        finally:
            state["now"] -= 1
        return httpx.Response(200, json={"transaction_id": "t"})

    async def go(concurrency: int) -> SubmitResult:
        state["max"] = 0
        async with StoreClient("http://store.test", STORE, TOKEN, concurrency=concurrency,
                               retry=FAST, transport=httpx.MockTransport(handler)) as client:
            return await submit(client, plan_batches(skus(24), 2), reason=None,
                                concurrency=concurrency)

    for concurrency in (1, 3):
        result = asyncio.run(go(concurrency))
        assert len(result.accepted) == 24
        assert state["max"] == concurrency


def test_get_locations_reads_every_page() -> None:
    def respond(s: Store, req: httpx.Request, body: dict) -> httpx.Response:
        assert req.method == "GET"
        page = int(req.url.params["page"])
        assert req.url.params["limit"] == "1000"
        data = ([{"id": 1, "code": "MAIN", "enabled": True, "label": "Default"}] if page == 1
                else [{"id": 2, "code": "OLD", "enabled": False}])
        return httpx.Response(200, json={"data": data, "meta": {"pagination": {
            "total": 2, "count": 1, "per_page": 1, "current_page": page, "total_pages": 2}}})

    store = Store(respond)

    async def go() -> list:
        async with store.client() as client:
            return await client.get_locations()

    locations = asyncio.run(go())
    assert [(loc.id, loc.code, loc.enabled) for loc in locations] == [(1, "MAIN", True),
                                                                      (2, "OLD", False)]
    assert all(r.headers["X-Auth-Token"] == TOKEN for r in store.requests)
    assert store.requests[0].url.path == f"/stores/{STORE}/v3/inventory/locations"
