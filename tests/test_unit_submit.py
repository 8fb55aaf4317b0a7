"""Unit tests of stage 4 (invsync.stages.submit) against an in-memory client.

Fast, no network: the isolation of refused items and where it gives up, the hints a 422
gives, the callbacks the journal relies on, and what a fatal error leaves in the result.
tests/test_submit_client.py covers the same stage through the real client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import polars as pl
import pytest
from conftest import item_frame

from invsync.errors import AuthError, FatalError, Refused, StoreError
from invsync.stages import submit as submit_mod
from invsync.stages.submit import (
    MAX_ISOLATION_REQUESTS,
    SEQ,
    Batch,
    BatchResult,
    SubmitObserver,
    SubmitResult,
    _named_items,
    number_changes,
    plan_batches,
    submit,
)
from invsync.store.client import PutResult
from invsync.store.limits import EncodedItems

Answer = Callable[[list[dict[str, Any]], int], PutResult]


class FakeClient:
    """Answers each ``put_absolute`` with ``answer(items, call number)`` (may raise)."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer or (lambda items, n: PutResult(f"tx-{n}", 1))
        self.calls: list[tuple[list[dict[str, Any]], str | None]] = []
        self.requests_sent = 0
        self.responses_429 = 0

    async def put_absolute(self, items: list[dict[str, Any]] | EncodedItems,
                           reason: str | None) -> PutResult:
        if isinstance(items, EncodedItems):  # the body submit builds from the columns
            items = json.loads(items.json)
        self.calls.append((list(items), reason))
        self.requests_sent += 1
        return self.answer(items, len(self.calls))

    def skus(self, call: int) -> list[str]:
        return [it["sku"] for it in self.calls[call][0]]


def changes(n: int, loc: int = 1) -> pl.DataFrame:
    return item_frame([(loc, "sku", f"S{i}", i) for i in range(n)], with_old=True)


def refusing(bad: set[str], title: str = "Invalid", errors: Callable[..., dict[str, Any]]
             | None = None, attempts: int = 1) -> Answer:
    """A store refusing (422) any request holding a SKU of ``bad``."""
    def answer(items: list[dict[str, Any]], n: int) -> PutResult:
        hits = [j for j, it in enumerate(items) if it["sku"] in bad]
        if hits:
            raise Refused(title, errors(items, hits) if errors else {}, attempts)
        return PutResult(f"tx-{n}", 2)
    return answer


class Events(SubmitObserver):
    """Every callback, in order."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def sending(self, batch: Batch) -> None:
        self.log.append(("sending", batch.index))

    def confirmed(self, batch: Batch, idx: list[int], txid: str) -> None:
        self.log.append(("confirmed", batch.index, list(idx), txid))

    def finished(self, result: BatchResult) -> None:
        self.log.append(("batch", result.index, result.status))


def run(client: FakeClient, batches: list[Batch], events: Events | None = None,
        concurrency: int = 4, reason: str | None = "nightly") -> SubmitResult:
    ev = events or Events()
    return asyncio.run(submit(client, batches, reason=reason,  # type: ignore[arg-type]
                              concurrency=concurrency, observer=ev))


# ---- planning ------------------------------------------------------------------------------


def test_number_changes() -> None:
    numbered = number_changes(changes(3))
    assert numbered.columns[0] == SEQ
    assert numbered[SEQ].dtype == pl.Int64
    assert numbered[SEQ].to_list() == [0, 1, 2]


@pytest.mark.parametrize("size", [1, 2000])
def test_batch_size_bounds_are_inclusive(size: int) -> None:
    assert len(plan_batches(changes(3), size)) == (3 if size == 1 else 1)


@pytest.mark.parametrize("size", [0, 2001])
def test_batch_size_out_of_bounds(size: int) -> None:
    with pytest.raises(ValueError, match=r"^batch size must be 1\.\.2000$"):
        plan_batches(changes(3), size)


def test_batches_by_location_in_change_set_order() -> None:
    frame = item_frame([(2, "sku", "B0", 1), (1, "sku", "A0", 1), (2, "sku", "B1", 1),
                        (1, "sku", "A1", 1), (1, "sku", "A2", 1)], with_old=True)
    batches = plan_batches(frame, 2)
    assert [(b.index, b.location_id, b.seqs) for b in batches] == [
        (0, 1, [1, 3]), (1, 1, [4]), (2, 2, [0, 2])]
    assert isinstance(batches[0].location_id, int)
    assert len(batches[0]) == 2
    assert batches[0].items == [{"location_id": 1, "sku": "A0", "quantity": 1},
                                {"location_id": 1, "sku": "A1", "quantity": 1}]


def test_batches_follow_the_location_order() -> None:
    locs = [(i * 37) % 61 + 1 for i in range(60)]
    frame = item_frame([(loc, "sku", f"S{i}", 1) for i, loc in enumerate(locs)], with_old=True)
    batches = plan_batches(frame, 1)
    assert [b.location_id for b in batches] == sorted(locs)
    assert [b.index for b in batches] == list(range(60))


@pytest.mark.parametrize("seed", range(5))
def test_batches_are_the_change_set_sorted_by_location_then_seq_in_chunks(seed: int) -> None:
    import random

    rng = random.Random(seed)
    rows = [(rng.choice([3, 1, 12, 2]), "sku", f"S{i}", i) for i in range(rng.randint(1, 900))]
    frame = number_changes(item_frame(rows, with_old=True))
    if seed % 2:  # numbered once, then shuffled (a change set the run reordered)
        frame = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    size = rng.choice([1, 7, 100, 2000])
    ordered = frame.sort("location_id", SEQ)
    expected = [(loc, part.slice(start, size))
                for (loc,), part in ordered.group_by("location_id", maintain_order=True)
                for start in range(0, part.height, size)]
    batches = plan_batches(frame, size)
    assert [b.index for b in batches] == list(range(len(expected)))
    assert [b.location_id for b in batches] == [loc for loc, _ in expected]
    assert all(b.frame.equals(part) for b, (_, part) in zip(batches, expected, strict=True))


def test_mixed_identifiers_in_one_batch() -> None:
    frame = item_frame([(1, "sku", "A", 1), (1, "variant_id", "77", 2),
                        (1, "product_id", "111", 3), (1, "sku", "B", 4)], with_old=True)
    assert plan_batches(frame)[0].items == [
        {"location_id": 1, "sku": "A", "quantity": 1},
        {"location_id": 1, "variant_id": 77, "quantity": 2},
        {"location_id": 1, "product_id": 111, "quantity": 3},
        {"location_id": 1, "sku": "B", "quantity": 4}]


# ---- the happy path and the callbacks ------------------------------------------------------


def test_callbacks_and_results_when_everything_is_accepted() -> None:
    client = FakeClient()
    ev = Events()
    frame = item_frame([(1, "sku", "A", 1), (2, "sku", "B", 2), (1, "sku", "C", 3)],
                       with_old=True)
    result = run(client, plan_batches(frame), ev, concurrency=1)
    assert client.calls[0] == ([{"location_id": 1, "sku": "A", "quantity": 1},
                                {"location_id": 1, "sku": "C", "quantity": 3}], "nightly")
    # The journal hears of a batch before it is sent, then of what was confirmed.
    assert ev.log == [("sending", 0), ("confirmed", 0, [0, 1], "tx-1"), ("batch", 0, "accepted"),
                      ("sending", 1), ("confirmed", 1, [0], "tx-2"), ("batch", 1, "accepted")]
    assert result.fatal is None
    assert result.batch_seqs == [[0, 2], [1]]
    assert result.accepted == [0, 2, 1]
    assert result.sent == [0, 2, 1]
    assert result.refused == []
    assert result.transaction_ids == ["tx-1", "tx-2"]
    assert result.requests == 2 and result.responses_429 == 0
    assert 0 <= result.seconds < 60
    b = result.batches[0]
    assert (b.index, b.location_id, b.items, b.status, b.requests, b.attempts) == (
        0, 1, 2, "accepted", 1, 1)
    assert 0 <= b.seconds < 60
    assert b.to_dict() == {
        "index": 0, "location_id": 1, "items": 2, "status": "accepted", "transaction_id": "tx-1",
        "transaction_ids": ["tx-1"], "attempts": 1, "requests": 1, "accepted": 2, "refused": 0,
        "not_applied": 0, "error": None, "seconds": round(b.seconds, 3)}


def test_no_reason_is_passed_on() -> None:
    client = FakeClient()
    run(client, plan_batches(changes(1)), reason=None)
    assert client.calls[0][1] is None


def test_a_batch_with_nothing_to_send() -> None:
    # An empty batch sends nothing and is accepted (nothing refused).
    empty = Batch(0, 1, number_changes(changes(0)))
    result = run(FakeClient(), [empty])
    assert result.batches[0].status == "accepted" and result.batches[0].requests == 0


@pytest.mark.parametrize("concurrency", [0, 1, 3])
def test_concurrency_is_bounded(concurrency: int) -> None:
    active = 0
    peak = 0

    class Slow(FakeClient):
        wait_s = 0.05

        async def put_absolute(self, items: list[dict[str, Any]],
                               reason: str | None) -> PutResult:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(self.wait_s)
            active -= 1
            return await super().put_absolute(items, reason)

    class Slower(Slow):
        wait_s = 0.5  # long enough for every slot to start on a loaded machine

    result = run(Slow(), plan_batches(changes(8), 1), concurrency=concurrency)
    assert len(result.accepted) == 8
    assert peak == max(concurrency, 1)
    assert result.seconds >= Slow.wait_s * (8 / max(concurrency, 1))
    assert all(b.seconds >= Slow.wait_s for b in result.batches)
    # Eight at once by default (as many as the 8 batches here).
    peak = 0
    asyncio.run(submit(Slower(), plan_batches(changes(16), 1), reason=None))  # type: ignore[arg-type]
    assert peak == 8


# ---- isolation -----------------------------------------------------------------------------


def test_vague_refusals_are_halved_down_to_the_item() -> None:
    client = FakeClient(refusing({"S5"}, title="", attempts=3))
    ev = Events()
    result = run(client, plan_batches(changes(8)), ev)
    b = result.batches[0]
    assert b.status == "partial"
    assert b.refused == [(5, "refused (HTTP 422)")]  # no title: the status says it
    assert sorted(b.accepted) == [0, 1, 2, 3, 4, 6, 7]
    # [0..7] -> [0..3] ok, [4..7] -> [4,5] -> [4] ok, [5] refused; [6,7] ok
    assert [client.skus(i) for i in range(len(client.calls))] == [
        [f"S{i}" for i in range(8)], ["S0", "S1", "S2", "S3"], ["S4", "S5", "S6", "S7"],
        ["S4", "S5"], ["S4"], ["S5"], ["S6", "S7"]]
    assert b.requests == 7
    assert b.attempts == 3 + 2 + 3 + 3 + 2 + 3 + 2
    assert b.transaction_ids == ["tx-2", "tx-5", "tx-7"]
    assert [e for e in ev.log if e[0] == "confirmed"] == [
        ("confirmed", 0, [0, 1, 2, 3], "tx-2"), ("confirmed", 0, [4], "tx-5"),
        ("confirmed", 0, [6, 7], "tx-7")]
    assert result.sent == list(range(8))


def test_every_item_refused() -> None:
    client = FakeClient(refusing({"S0", "S1"}, title="Nope"))
    b = run(client, plan_batches(changes(2))).batches[0]
    assert b.status == "refused"
    assert b.refused == [(0, "Nope"), (1, "Nope")]
    assert b.accepted == [] and b.transaction_ids == []
    assert b.to_dict()["transaction_id"] is None and b.to_dict()["refused"] == 2


def test_items_the_errors_name_are_tried_apart_and_the_rest_first() -> None:
    errors = lambda items, hits: {f"items.{j}.quantity": "too big" for j in hits}  # noqa: E731
    client = FakeClient(refusing({"S1", "S4"}, errors=errors))
    b = run(client, plan_batches(changes(6))).batches[0]
    assert b.refused == [(1, "Invalid"), (4, "Invalid")]
    assert [client.skus(i) for i in range(len(client.calls))] == [
        ["S0", "S1", "S2", "S3", "S4", "S5"], ["S0", "S2", "S3", "S5"], ["S1", "S4"],
        ["S1"], ["S4"]]


def test_a_hint_naming_every_item_is_no_hint() -> None:
    errors = lambda items, hits: {f"items.{j}": "x" for j in range(len(items))}  # noqa: E731
    client = FakeClient(refusing({"S0"}, errors=errors))
    b = run(client, plan_batches(changes(4))).batches[0]
    assert b.refused == [(0, "Invalid")]
    assert client.skus(1) == ["S0", "S1"]  # halved


def test_isolation_gives_up_after_its_request_budget() -> None:
    # Every item refused, nothing named: isolating 300 items one by one would take 599
    # requests; the batch spends exactly MAX_ISOLATION_REQUESTS and reports the rest refused.
    n = 300
    client = FakeClient(refusing({f"S{i}" for i in range(n)}, title="Bad batch"))
    ev = Events()
    result = run(client, plan_batches(changes(n)), ev)
    b = result.batches[0]
    assert MAX_ISOLATION_REQUESTS == 200
    assert len(client.calls) == b.requests == MAX_ISOLATION_REQUESTS
    assert b.status == "refused"
    assert sorted(seq for seq, _ in b.refused) == list(range(n))  # each exactly once
    gave_up = [seq for seq, msg in b.refused if msg.startswith("not isolated")]
    one_by_one = [seq for seq, msg in b.refused if msg == "Bad batch"]
    assert gave_up and one_by_one and len(gave_up) + len(one_by_one) == n
    assert {msg for _, msg in b.refused if msg != "Bad batch"} == {
        "not isolated: the store refused its batch (Bad batch) and isolation gave up after "
        "200 requests"}
    assert ev.log[-1] == ("batch", 0, "refused")
    assert result.sent == list(range(n))  # refused as a whole: the store applied nothing


def test_isolation_budget_counts_the_first_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit_mod, "MAX_ISOLATION_REQUESTS", 3)
    client = FakeClient(refusing({"S0", "S3"}, title="T"))
    b = run(client, plan_batches(changes(4))).batches[0]
    # [0..3] refused, [0,1] refused, [0] refused: budget spent; [1] and [2,3] given up.
    assert len(client.calls) == 3
    assert b.refused[0] == (0, "T")
    assert sorted(s for s, _ in b.refused[1:]) == [1, 2, 3]
    assert b.accepted == []


def test_a_budget_spent_on_the_last_item_gives_up_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit_mod, "MAX_ISOLATION_REQUESTS", 3)
    client = FakeClient(refusing({"S0"}, title="T"))
    b = run(client, plan_batches(changes(2))).batches[0]
    # [0,1] refused, [0] refused, [1] accepted: 3 requests, within the budget.
    assert b.refused == [(0, "T")] and b.accepted == [1]
    assert b.status == "partial"


# ---- the hints of a 422 --------------------------------------------------------------------


ITEMS = [{"location_id": 1, "sku": "A", "quantity": 1},
         {"location_id": 2, "sku": "AB", "quantity": 1},
         {"location_id": 1, "variant_id": 77, "quantity": 1},
         {"location_id": 3, "product_id": 111, "quantity": 1}]


@pytest.mark.parametrize(("errors", "named"), [
    ({"items.0.quantity": "x"}, {0}),
    ({"items.3": "x"}, {3}),
    ({"items.4": "x"}, set()),  # the boundary: index == number of items
    ({"items.40": "x"}, set()),
    ({"items.1.sku": "x", "items.2": "y"}, {1, 2}),
    ({"x.items.1": "x"}, set()),  # only at the start
    ({"items.": "x", "items": "y"}, set()),
    ({7: "x"}, set()),
])
def test_items_named_by_error_keys(errors: dict[Any, str], named: set[int]) -> None:
    assert _named_items(Refused("", errors, 1), ITEMS) == named


@pytest.mark.parametrize(("title", "named"), [
    ("sku A is invalid", {0}),
    ("sku: 'AB' is invalid", {1}),
    ('sku="A"', {0}),
    ("sku=A-1", set()),  # a longer SKU, not A
    ("skuA", set()),
    ("variant_id 77 unknown", {2}),
    ("variant_id 777 unknown", set()),
    ("product_id: 111", {3}),
    ("Location ids [2, 3] are disabled", {1, 3}),
    ("location [1]", {0, 2}),
    ("Locations [9]", set()),
    ("something went wrong", set()),
])
def test_items_named_by_the_title(title: str, named: set[int]) -> None:
    assert _named_items(Refused(title, {}, 1), ITEMS) == named


def test_a_refusal_naming_an_item_past_the_end_does_not_crash() -> None:
    errors = lambda items, hits: {f"items.{len(items)}": "x"}  # noqa: E731
    client = FakeClient(refusing({"S2"}, errors=errors))
    b = run(client, plan_batches(changes(3))).batches[0]
    assert b.refused == [(2, "Invalid")] and sorted(b.accepted) == [0, 1]


# ---- fatal errors --------------------------------------------------------------------------


def failing_on(call: int, exc: FatalError, then: Answer | None = None) -> Answer:
    def answer(items: list[dict[str, Any]], n: int) -> PutResult:
        if n == call:
            raise exc
        return (then or (lambda i, k: PutResult(f"tx-{k}", 1)))(items, n)
    return answer


@pytest.mark.parametrize("maybe_applied", [True, False])
def test_a_fatal_error_stops_the_run(maybe_applied: bool) -> None:
    exc = AuthError("the store refused the token (HTTP 401)")
    exc.maybe_applied = maybe_applied
    client = FakeClient(failing_on(2, exc))
    ev = Events()
    result = run(client, plan_batches(changes(3), 1), ev, concurrency=1)
    assert result.fatal is exc
    assert [b.status for b in result.batches] == ["accepted", "failed", "not_sent"]
    assert result.batches[1].error == "the store refused the token (HTTP 401)"
    assert result.batches[2].error is None
    assert len(client.calls) == 2
    # The batch that was never started is never announced to the journal.
    assert ev.log == [("sending", 0), ("confirmed", 0, [0], "tx-1"), ("batch", 0, "accepted"),
                      ("sending", 1), ("batch", 1, "failed")]
    # sent: what the store may have received.
    assert result.sent == ([0, 1] if maybe_applied else [0])
    assert result.batches[1].not_applied == ([] if maybe_applied else [1])
    assert result.accepted == [0]


def test_only_the_first_fatal_error_is_kept() -> None:
    first, second = StoreError("first"), StoreError("second")

    class Both(FakeClient):
        async def put_absolute(self, items: list[dict[str, Any]] | EncodedItems,
                               reason: str | None) -> PutResult:
            if isinstance(items, EncodedItems):
                items = json.loads(items.json)
            self.calls.append((items, reason))
            await asyncio.sleep(0.01 if items[0]["sku"] == "S0" else 0.05)
            raise first if items[0]["sku"] == "S0" else second

    result = run(Both(), plan_batches(changes(2), 1), concurrency=2)
    assert result.fatal is first
    assert [b.error for b in result.batches] == ["first", "second"]


def test_a_fatal_error_during_isolation(monkeypatch: pytest.MonkeyPatch) -> None:
    # [0..3] refused; [0,1] accepted; [2,3] fails fatally: the store applied nothing of the
    # refused request, so only what the failing request carried may have landed.
    def answer(items: list[dict[str, Any]], n: int) -> PutResult:
        if n == 1:
            raise Refused("Invalid", {}, 1)
        if n == 3:
            exc = StoreError("gone")
            exc.maybe_applied = False
            raise exc
        return PutResult(f"tx-{n}", 1)

    monkeypatch.setattr(submit_mod, "MAX_ISOLATION_REQUESTS", 100)
    result = run(FakeClient(answer), plan_batches(changes(4)))
    b = result.batches[0]
    assert b.status == "failed" and b.error == "gone"
    assert b.accepted == [0, 1]
    assert sorted(b.not_applied) == [2, 3]
    assert result.sent == [0, 1]


def test_pending_halves_are_not_applied_when_a_fatal_error_stops_isolation() -> None:
    # [0..7] refused -> [0..3] fails (may have landed) while [4..7] waits: never sent.
    def answer(items: list[dict[str, Any]], n: int) -> PutResult:
        if n == 1:
            raise Refused("", {}, 1)
        raise StoreError("gone")

    result = run(FakeClient(answer), plan_batches(changes(8)))
    b = result.batches[0]
    assert sorted(b.not_applied) == [4, 5, 6, 7]
    assert result.sent == [0, 1, 2, 3]


def test_sent_skips_batches_never_sent() -> None:
    result = SubmitResult(
        batches=[BatchResult(0, 1, 2, status="accepted"), BatchResult(1, 1, 2),
                 BatchResult(2, 1, 2, status="not_sent"),
                 BatchResult(3, 1, 3, status="failed", not_applied=[7])],
        batch_seqs=[[0, 1], [2, 3], [4, 5], [6, 7, 8]])
    assert result.sent == [0, 1, 2, 3, 6, 8]
    with pytest.raises(ValueError):
        _ = SubmitResult(batches=[BatchResult(0, 1, 2)], batch_seqs=[]).sent


# ---- an observer that cannot record (a full state disk) ------------------------------------


class FailingJournal(Events):
    """Records like :class:`Events`, but fails (as a full disk would) at a given call."""

    def __init__(self, fail_sending_of: int | None = None,
                 fail_confirming_of: int | None = None) -> None:
        super().__init__()
        self.fail_sending_of, self.fail_confirming_of = fail_sending_of, fail_confirming_of

    def sending(self, batch: Batch) -> None:
        if batch.index == self.fail_sending_of:
            raise FatalError("journal full")
        super().sending(batch)

    def confirmed(self, batch: Batch, idx: list[int], txid: str) -> None:
        super().confirmed(batch, idx, txid)
        if batch.index == self.fail_confirming_of:
            raise FatalError("journal full")


def test_a_batch_the_observer_could_not_record_as_sending_is_not_sent() -> None:
    client = FakeClient()
    ev = FailingJournal(fail_sending_of=1)
    result = run(client, plan_batches(changes(6), 2), ev, concurrency=1)
    assert len(client.calls) == 1  # batch 0 only: batch 1 never went out, batch 2 neither
    assert [b.status for b in result.batches] == ["accepted", "not_sent", "not_sent"]
    assert result.batches[1].error == "journal full"
    assert str(result.fatal) == "journal full"
    assert result.sent == [0, 1] and result.accepted == [0, 1]


def test_a_confirmation_the_observer_could_not_record_stops_the_submit() -> None:
    client = FakeClient()
    ev = FailingJournal(fail_confirming_of=0)
    result = run(client, plan_batches(changes(6), 2), ev, concurrency=1)
    assert len(client.calls) == 1
    # The store did accept batch 0: it stays accepted (its level is known), the rest unsent.
    assert [b.status for b in result.batches] == ["failed", "not_sent", "not_sent"]
    assert result.accepted == [0, 1] and result.transaction_ids == ["tx-1"]
    assert str(result.fatal) == "journal full"


def test_the_submit_counts_its_own_requests_when_the_client_served_reads_first() -> None:
    # One client per run: the locations and live reads went through it before the submit.
    client = FakeClient()
    client.requests_sent, client.responses_429 = 7, 3
    result = run(client, plan_batches(changes(6), 2))
    assert (result.requests, result.responses_429) == (3, 0)
