"""Sending at the network floor: the next body is ready while a write is out, one write in
flight by default, and the store's quota used up to the configured share with no 429."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLE, TOKEN, env_for, item_frame, output, run_invsync, stocked

from invsync.errors import FatalError
from invsync.stages.submit import Batch, BatchResult, SubmitObserver, plan_batches, submit
from invsync.store.client import PutResult, StoreClient
from invsync.store.limits import WRITTEN_OUT, EncodedItems, RetryPolicy

NIGHT1 = SAMPLE / "night1.csv"
STORE = "abc123"
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01, max_total_s=20)


def changes(n: int) -> Any:
    return item_frame([(1, "sku", f"S{i}", i) for i in range(n)], with_old=True)


class Journal(SubmitObserver):
    """Records which batches were prepared, journaled as sending and confirmed."""

    def __init__(self) -> None:
        self.prepared: list[int] = []
        self.sending_of: list[int] = []
        self.confirmed_of: list[int] = []

    def prepare(self, batch: Batch) -> None:
        self.prepared.append(batch.index)

    def sending(self, batch: Batch) -> None:
        self.sending_of.append(batch.index)

    def confirmed(self, batch: Batch, items: list[int], transaction_id: str) -> None:
        self.confirmed_of.append(batch.index)

    def finished(self, result: BatchResult) -> None:
        assert result.index in self.confirmed_of or result.status != "accepted"


class SlowStore:
    """A store whose answer to request N comes only once batch N+1's body and journal
    records are built (or, without that, after a bound no test waits for in practice)."""

    def __init__(self, batches: list[Batch], journal: Journal) -> None:
        self.batches, self.journal = batches, journal
        self.in_flight = self.max_in_flight = 0
        self.ready_before_answer: list[bool] = []
        self.built_while_written: list[bool] = []
        self.sending_when_sent: list[bool] = []
        self.requests_sent = self.responses_429 = 0

    async def put_absolute(self, items: EncodedItems | list[dict[str, Any]],
                           reason: str | None) -> PutResult:
        written_out = WRITTEN_OUT.get()
        assert written_out is not None  # the sender asks to hear it, as the client tells it
        n = self.requests_sent
        await asyncio.sleep(0.01)  # the request being written out
        self.built_while_written.append(n + 1 in self.journal.prepared)
        written_out()
        self.sending_when_sent.append(n in self.journal.sending_of)
        self.requests_sent += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if n + 1 < len(self.batches):
                nxt = self.batches[n + 1]
                deadline = time.monotonic() + 10  # cannot hang
                while not (n + 1 in self.journal.prepared and "encoded" in vars(nxt)) \
                        and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                # Built ahead, but journaled as sending only when it goes out.
                self.ready_before_answer.append(n + 1 in self.journal.prepared
                                                and "encoded" in vars(nxt)
                                                and n + 1 not in self.journal.sending_of)
            return PutResult(f"tx-{n}", 1)
        finally:
            self.in_flight -= 1


def test_the_next_body_is_built_while_the_current_write_is_out() -> None:
    batches = plan_batches(changes(10), 2)
    journal = Journal()
    store = SlowStore(batches, journal)
    result = asyncio.run(submit(store, batches, reason=None,  # type: ignore[arg-type]
                                concurrency=1, observer=journal))
    assert [b.status for b in result.batches] == ["accepted"] * 5
    # Request N's answer came after request N+1's body and journal records were built...
    assert store.ready_before_answer == [True] * 4
    # ...but not while request N was being written out (the two would share the GIL).
    assert store.built_while_written == [False] * 5
    # ...and still never two writes at once, in order, each journaled before it went out.
    assert store.max_in_flight == 1
    assert journal.sending_of == [0, 1, 2, 3, 4] == journal.confirmed_of
    assert store.sending_when_sent == [True] * 5


def test_no_more_than_one_batch_is_built_ahead_at_concurrency_1() -> None:
    batches = plan_batches(changes(10), 2)
    journal = Journal()
    ahead: list[int] = []

    class Counting(SlowStore):
        async def put_absolute(self, items: Any, reason: str | None) -> PutResult:
            answer = await super().put_absolute(items, reason)
            ahead.append(len(journal.prepared) - len(journal.sending_of))
            return answer

    store = Counting(batches, journal)
    asyncio.run(submit(store, batches, reason=None,  # type: ignore[arg-type]
                       concurrency=1, observer=journal))
    assert max(ahead) == 1


# ---- the quota -----------------------------------------------------------------------------


class FixedWindowStore:
    """A store counting requests in fixed windows from its own start (429 beyond the quota),
    whose reset header runs ``skew_s`` early, as a store clock ahead of ours would."""

    def __init__(self, quota: int, window_s: float, skew_s: float = 0.0) -> None:
        self.quota, self.window_s, self.skew_s = quota, window_s, skew_s
        self.t0 = time.monotonic()
        self.used: Counter[int] = Counter()
        self.arrivals: list[float] = []
        self.over = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        now = time.monotonic()
        self.arrivals.append(now)
        window = int((now - self.t0) // self.window_s)
        self.used[window] += 1
        reset_s = (window + 1) * self.window_s - (now - self.t0) - self.skew_s
        headers = {"X-Rate-Limit-Requests-Left": str(max(self.quota - self.used[window], 0)),
                   "X-Rate-Limit-Time-Reset-Ms": str(max(int(reset_s * 1000), 0)),
                   "X-Rate-Limit-Time-Window-Ms": str(int(self.window_s * 1000)),
                   "X-Rate-Limit-Requests-Quota": str(self.quota)}
        await asyncio.sleep(0.002)
        if self.used[window] > self.quota:
            self.over += 1
            return httpx.Response(429, headers=headers)
        return httpx.Response(200, json={"transaction_id": "t"}, headers=headers)


def _run_against(store: FixedWindowStore, n: int, concurrency: int,
                 share: float) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        async with StoreClient("http://store.test", STORE, TOKEN, concurrency=concurrency,
                               retry=FAST, quota_share=share,
                               transport=httpx.MockTransport(store.handler)) as client:
            result = await submit(client, plan_batches(changes(n), 1), reason=None,
                                  concurrency=concurrency)
            return len(result.accepted), result.responses_429

    return asyncio.run(go())


@pytest.mark.parametrize("skew_s", [0.0, 0.12])
def test_no_429_and_at_most_the_share_per_window_whatever_the_store_clock(
        skew_s: float) -> None:
    # 5 a window, 0.8 of it ours: 4. A store clock ahead of ours (its reset header runs
    # early) made the limiter open the next window while the store's was still running.
    store = FixedWindowStore(quota=5, window_s=0.4, skew_s=skew_s)
    accepted, throttled = _run_against(store, 14, concurrency=4, share=0.8)
    assert accepted == 14
    assert throttled == 0 and store.over == 0
    assert max(store.used.values()) <= 4, store.used


def test_requests_are_paced_to_the_share_over_any_window_long_stretch() -> None:
    # Whatever the phase of the store's windows, no stretch of one window's length holds
    # more than this client's share: a short run does not use more than its share either.
    store = FixedWindowStore(quota=5, window_s=0.4)
    store.t0 -= 0.3  # the run starts late in the store's window
    accepted, _ = _run_against(store, 13, concurrency=4, share=0.8)
    assert accepted == 13
    times = store.arrivals
    worst = max(sum(1 for t in times if start <= t < start + 0.4) for start in times)
    assert worst <= 4, worst


# ---- against the sandbox -------------------------------------------------------------------


def _puts(sb: Any) -> list[dict[str, Any]]:
    return [r for r in sb.requests() if r["method"] == "PUT"]


def test_a_sync_keeps_one_write_in_flight_and_each_item_in_one_request(
        sandbox_factory: Any, tmp_path: Path) -> None:
    sb = sandbox_factory("--latency-ms", "30")
    env = env_for(sb, tmp_path)
    result = run_invsync(["sync", str(NIGHT1), "--batch-size", "300",
                          "--baseline", "snapshot"], env)
    assert result.returncode == 0, output(result)
    stats = sb.stats()
    assert stats["max_in_flight"] == 1 and stats["item_overlaps"] == 0
    assert len(_puts(sb)) > 5
    # Every batch went out once, and the journal is gone once the snapshot holds them.
    report = result.report()
    assert report["status"] == "succeeded"
    assert all(b["requests"] == 1 for b in report["batches"])
    assert not list((tmp_path / "state").rglob("journal.jsonl"))

    sb.post("/_sandbox/reset")
    parallel = run_invsync(["sync", str(NIGHT1), "--batch-size", "300", "--full",
                            "--baseline", "snapshot", "--concurrency", "8"], env)
    assert parallel.returncode == 0, output(parallel)
    stats = sb.stats()
    assert 1 < stats["max_in_flight"] <= 8 and stats["item_overlaps"] == 0


def test_a_rate_limited_sync_uses_its_share_and_meets_no_429(sandbox_factory: Any,
                                                             tmp_path: Path) -> None:
    sb = sandbox_factory("--quota", "5", "--window-ms", "1000", "--latency-ms", "5")
    env = env_for(sb, tmp_path)
    config = tmp_path / "invsync.toml"
    config.write_text("[store]\nquota_share = 0.8\n")
    result = run_invsync(["--log-format", "json", "sync", "--config", str(config),
                          str(NIGHT1), "--batch-size", "200", "--concurrency", "4"],
                         env, timeout=120)
    assert result.returncode == 0, output(result)
    requests = sb.requests()
    assert Counter(r["status"] for r in requests) == {200: len(requests)}
    # At most 4 of each window's 5 were used: 1 was always left for the store's other apps.
    lefts = [int(r["answer_headers"]["x-rate-limit-requests-left"]) for r in requests]
    assert min(lefts) >= 1, lefts
    assert stocked(sb.levels()) == stocked(_levels(NIGHT1))
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "rate_limit_wait" for e in events)


def _levels(path: Path) -> dict[tuple[int, str], int]:
    import csv

    with path.open(encoding="utf-8") as fh:
        return {(int(r["location_id"]), r["sku"]): int(r["quantity"])
                for r in csv.DictReader(fh)}


# ---- the journal: records built ahead, one fsync a batch -----------------------------------


def test_journal_records_built_ahead_recover_as_records_built_on_the_spot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import polars as pl

    from invsync.state import journal as journal_mod
    from invsync.state.journal import Journal

    levels = pl.DataFrame({"location_id": [1, 1, 1], "identifier": ["sku"] * 3,
                           "item_key": ["A", 'B "x"', "C"], "quantity": [1, 2, 3]})
    keys = levels.select("location_id", "identifier", "item_key")
    synced: list[int] = []
    real_fsync = os.fsync

    def counting(fd: int) -> None:
        real_fsync(fd)
        synced.append(len(journal_mod.Path(tmp_path / "ahead" / "journal.jsonl")
                          .read_text().splitlines()))

    ahead, plain = Journal(tmp_path / "ahead"), Journal(tmp_path / "plain")
    for j in (plain, ahead):
        if j is ahead:
            monkeypatch.setattr(journal_mod.os, "fsync", counting)
            j.begin({"run_id": "r"})
            j.prepare(0, levels)
            j.prepare(1, levels)
        else:
            j.begin({"run_id": "r"})
        j.sending(0, keys)
        j.confirmed(0, "tx-0", levels, durable=False)  # the whole batch
        j.sending(1, keys)
        j.confirmed(1, "tx-1", levels[[0, 2]], durable=False)  # part of it (isolation)
    assert ahead.path.read_text() == plain.path.read_text()
    # begin and each sending on disk when written; a confirmation rides on the next fsync.
    assert synced[:3] == [1, 2, 4]
    ahead.close(remove=False)
    assert synced[-1] == 5  # a journal kept for resume is on disk whole
    plain.close(remove=False)
    got = ahead.recover()
    assert got.transaction_ids == ["tx-0", "tx-1"]
    assert got.confirmed.height == 5 and got.in_flight == [] and got.unconfirmed.height == 0


def test_records_built_ahead_for_batches_never_confirmed_are_not_kept_forever(
        tmp_path: Path) -> None:
    import polars as pl

    from invsync.state.journal import Journal

    j = Journal(tmp_path)
    j.begin({"run_id": "r"})
    levels = pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"],
                           "quantity": [1]})
    for batch in range(500):  # e.g. every batch refused by the store: none confirmed
        j.prepare(batch, levels)
        j.sending(batch, levels.drop("quantity"))
    assert len(j._prepared) <= 100
    j.confirmed(0, "tx", levels)  # the oldest, built again on the spot
    j.close(remove=False)
    got = j.recover()
    assert got.transaction_ids == ["tx"] and got.confirmed.height == 1
    assert len(got.in_flight) == 499


def test_records_built_for_one_run_are_never_written_for_the_next(tmp_path: Path) -> None:
    import polars as pl

    from invsync.state.journal import Journal

    j = Journal(tmp_path)
    first = pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"],
                          "quantity": [1]})
    second = first.with_columns(item_key=pl.lit("B"), quantity=pl.lit(2))
    j.begin({"run_id": "r1"})
    j.prepare(0, first)  # built, but that run stopped before batch 0 went out
    j.close(remove=True)
    j.begin({"run_id": "r2"})  # the same journal object, another run
    j.sending(0, second.drop("quantity"))
    j.confirmed(0, "tx", second)
    j.close(remove=False)
    got = j.recover()
    assert got.confirmed["item_key"].to_list() == ["B"]
    assert got.confirmed["quantity"].to_list() == [2]


class Recorder(SubmitObserver):
    """Where and in which order the bodies are built, and which batches are recorded as
    sending together; the first record waits until every body is built."""

    def __init__(self, batches: int) -> None:
        self.built: list[tuple[str, int]] = []
        self.groups: list[list[int]] = []
        self.all_built = threading.Event()
        self.batches = batches

    def prepare(self, batch: Batch) -> None:
        self.built.append((threading.current_thread().name, batch.index))
        if len(self.built) == self.batches:
            self.all_built.set()

    def sending_all(self, batches: list[Batch]) -> None:
        if not self.groups:
            assert self.all_built.wait(timeout=30)  # cannot hang
        self.groups.append([b.index for b in batches])


def test_bodies_are_built_in_one_thread_in_the_order_they_go_out() -> None:
    batches = plan_batches(changes(16), 2)
    recorder = Recorder(len(batches))
    result = asyncio.run(submit(FakeStore(), batches, reason=None,  # type: ignore[arg-type]
                                concurrency=8, observer=recorder))
    assert [b.status for b in result.batches] == ["accepted"] * 8
    assert [i for _, i in recorder.built] == list(range(8))
    threads = {name for name, _ in recorder.built}
    assert len(threads) == 1 and threads.pop().startswith("invsync-body")


class FirstAlone(Recorder):
    """The bodies after the first are built only once the first batch is being recorded
    (on a loaded machine they could be ready before it goes, and go with it)."""

    def __init__(self, batches: int) -> None:
        super().__init__(batches)
        self.first_recorded = threading.Event()

    def prepare(self, batch: Batch) -> None:
        if batch.index:
            assert self.first_recorded.wait(timeout=30)  # cannot hang
        super().prepare(batch)

    def sending_all(self, batches: list[Batch]) -> None:
        self.first_recorded.set()
        super().sending_all(batches)


def test_batches_ready_together_are_recorded_as_sending_together() -> None:
    # The first batch goes alone; by the time its record is on disk every other body is
    # built and a write slot is free for each: they are recorded in one go (one fsync).
    batches = plan_batches(changes(8), 2)
    recorder = FirstAlone(len(batches))
    store = FakeStore()
    result = asyncio.run(submit(store, batches, reason=None,  # type: ignore[arg-type]
                                concurrency=4, observer=recorder))
    assert [b.status for b in result.batches] == ["accepted"] * 4
    assert recorder.groups == [[0], [1, 2, 3]]
    assert store.max_in_flight <= 4


def test_at_concurrency_1_each_batch_is_recorded_alone() -> None:
    batches = plan_batches(changes(8), 2)
    recorder = Recorder(len(batches))
    recorder.all_built.set()  # a queue of one: never all built before the first goes
    asyncio.run(submit(FakeStore(), batches, reason=None,  # type: ignore[arg-type]
                       concurrency=1, observer=recorder))
    assert recorder.groups == [[0], [1], [2], [3]]


class FakeStore:
    """Accepts every write; counts the writes at once."""

    def __init__(self) -> None:
        self.requests_sent = self.responses_429 = 0
        self.in_flight = self.max_in_flight = 0

    async def put_absolute(self, items: Any, reason: str | None) -> PutResult:
        written_out = WRITTEN_OUT.get()
        if written_out is not None:  # as the client says it
            written_out()
        self.requests_sent += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        return PutResult(f"tx-{self.requests_sent}", 1)


class Threads(SubmitObserver):
    """The thread each ``sending_all`` runs in."""

    def __init__(self) -> None:
        self.where: list[str] = []

    def sending_all(self, batches: list[Batch]) -> None:
        self.where.append(threading.current_thread().name)


def test_a_batch_is_recorded_on_the_loop_when_none_is_out_else_in_a_worker() -> None:
    loop_thread = threading.current_thread().name  # asyncio.run's loop runs here
    one = Threads()
    asyncio.run(submit(FakeStore(), plan_batches(changes(8), 2), reason=None,  # type: ignore[arg-type]
                       concurrency=1, observer=one))
    assert one.where == [loop_thread] * 4  # no thread hop: nothing to do meanwhile
    many = Threads()
    asyncio.run(submit(SlowFakeStore(), plan_batches(changes(8), 1), reason=None,  # type: ignore[arg-type]
                       concurrency=2, observer=many))
    assert many.where[0] == loop_thread
    # With a batch out, recording the next is left to a worker: its answer is read meanwhile.
    assert any(where != loop_thread for where in many.where[1:])


class SlowFakeStore(FakeStore):
    """Answers each write only after a while (a store with latency)."""

    async def put_absolute(self, items: Any, reason: str | None) -> PutResult:
        await asyncio.sleep(0.02)
        return await super().put_absolute(items, reason)


class FullDisk(Recorder):
    """A journal that cannot record the second group (the disk filled up)."""

    def sending_all(self, batches: list[Batch]) -> None:
        super().sending_all(batches)
        if len(self.groups) == 2:
            raise FatalError("journal full")


def test_a_group_the_journal_could_not_record_is_not_sent_at_all() -> None:
    batches = plan_batches(changes(8), 2)
    journal = FullDisk(len(batches))
    store = FakeStore()
    result = asyncio.run(submit(store, batches, reason=None,  # type: ignore[arg-type]
                                concurrency=4, observer=journal))
    assert journal.groups == [[0], [1, 2, 3]]
    assert store.requests_sent == 1  # batch 0 only
    assert [b.status for b in result.batches] == ["accepted"] + ["not_sent"] * 3
    assert result.batches[1].error == "journal full" and str(result.fatal) == "journal full"
    assert result.sent == [0, 1]
