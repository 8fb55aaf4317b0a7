"""Stage 4: send a :class:`~invsync.stages.diff.ChangeSet` as chunked absolute adjustments.

Batches hold at most 2000 items of one location, each (location, item) once per run.
One batch is in flight at a time by default (``concurrency``), and the next one's body
and journal records are built while it is out; the client handles the quota and transient
failures. A 422 refuses a whole batch, so the refused items are isolated (the items
the answer names first, then halving) and the rest resubmitted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import polars as pl

from invsync.errors import FatalError, Refused
from invsync.store.limits import MAX_ITEMS_PER_REQUEST, WRITTEN_OUT, EncodedItems
from invsync.tables import SEQ

if TYPE_CHECKING:
    from invsync.store.client import StoreClient

log = logging.getLogger("invsync.submit")


MAX_ISOLATION_REQUESTS = 200
"""Requests one batch may spend in all (its first request and every isolation request);
what is still unresolved then is reported refused, not isolated."""


@dataclass
class Batch:
    """Up to 2000 items of one location, in file order."""

    index: int
    location_id: int
    frame: pl.DataFrame

    def __len__(self) -> int:
        return self.frame.height

    @cached_property
    def items(self) -> list[dict[str, Any]]:
        """The request's items as dicts: built only when a batch must be split (a 422)."""
        return list(_payload_items(self.frame))

    @cached_property
    def encoded(self) -> EncodedItems:
        """The request's whole ``items`` array, serialised from the columns in one go."""
        return _encode_items(self.frame)

    @cached_property
    def seqs(self) -> list[int]:
        """Position of each item in the change set (:data:`SEQ`), parallel to :attr:`items`."""
        return self.frame[SEQ].to_list()


@dataclass
class BatchResult:
    """What became of one batch."""

    index: int
    location_id: int
    items: int
    status: str = "pending"
    """``accepted``, ``partial`` (some items refused), ``refused``, ``failed`` or ``not_sent``."""
    transaction_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    requests: int = 0
    accepted: list[int] = field(default_factory=list)
    """:data:`SEQ` of each accepted item."""
    refused: list[tuple[int, str]] = field(default_factory=list)
    """(:data:`SEQ`, the store's message) for each refused item."""
    not_applied: list[int] = field(default_factory=list)
    """:data:`SEQ` of items sent only in requests the store turned down as a whole without
    applying them (401/403, or 422s while the run stopped): reported as ``not_sent``."""
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "location_id": self.location_id, "items": self.items,
            "status": self.status,
            "transaction_id": self.transaction_ids[0] if self.transaction_ids else None,
            "transaction_ids": self.transaction_ids, "attempts": self.attempts,
            "requests": self.requests, "accepted": len(self.accepted),
            "refused": len(self.refused), "not_applied": len(self.not_applied),
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SubmitResult:
    """Every batch's result, and the fatal error that stopped the run, if any."""

    batches: list[BatchResult]
    fatal: FatalError | None = None
    batch_seqs: list[list[int]] = field(default_factory=list)
    """The :data:`SEQ` of every item of each batch, parallel to :attr:`batches`."""
    requests: int = 0
    responses_429: int = 0
    seconds: float = 0.0

    @property
    def accepted(self) -> list[int]:
        return [r for b in self.batches for r in b.accepted]

    @property
    def refused(self) -> list[tuple[int, str]]:
        return [r for b in self.batches for r in b.refused]

    @property
    def accepted_count(self) -> int:
        """``len(self.accepted)``, without the list."""
        return sum(len(b.accepted) for b in self.batches)

    @property
    def refused_count(self) -> int:
        """``len(self.refused)``, without the list."""
        return sum(len(b.refused) for b in self.batches)

    def _sent_per_batch(self) -> Iterator[list[int]]:
        """Per batch that was sent, the :data:`SEQ` the store may have received (the
        batch's own list when no item of it was left unapplied)."""
        for b, seqs in zip(self.batches, self.batch_seqs, strict=True):
            if b.status == "not_sent":
                continue
            if not b.not_applied:
                yield seqs
            else:
                skip = set(b.not_applied)
                yield [s for s in seqs if s not in skip]

    @property
    def sent_count(self) -> int:
        """``len(self.sent)``, without the list."""
        return sum(len(seqs) for seqs in self._sent_per_batch())

    @property
    def sent(self) -> list[int]:
        """:data:`SEQ` of every item the store may have received: in a batch that was sent,
        unless only requests the store turned down unapplied carried it."""
        return [s for seqs in self._sent_per_batch() for s in seqs]

    @property
    def transaction_ids(self) -> list[str]:
        return [t for b in self.batches for t in b.transaction_ids]


def number_changes(changes: pl.DataFrame) -> pl.DataFrame:
    """The change set with :data:`SEQ`, the number results use to name its items.

    A change set already numbered is returned as is: items are numbered once per run.
    """
    if SEQ in changes.columns:
        return changes
    return changes.with_row_index(SEQ).with_columns(pl.col(SEQ).cast(pl.Int64))


def plan_batches(changes: pl.DataFrame, batch_size: int = MAX_ITEMS_PER_REQUEST) -> list[Batch]:
    """Group the changed items by location and chunk them into batches."""
    if not 1 <= batch_size <= MAX_ITEMS_PER_REQUEST:
        raise ValueError(f"batch size must be 1..{MAX_ITEMS_PER_REQUEST}")
    batches: list[Batch] = []
    numbered = number_changes(changes)
    if not numbered[SEQ].is_sorted():
        numbered = numbered.sort(SEQ)
    # Each location's items in SEQ order, locations in ascending order: partitioning keeps
    # the order and costs a third of sorting every column by (location_id, SEQ).
    parts = numbered.partition_by("location_id", maintain_order=True, as_dict=True)
    for (location_id,), group in sorted(parts.items(), key=lambda kv: kv[0]):
        for start in range(0, group.height, batch_size):
            batches.append(Batch(index=len(batches), location_id=int(location_id),
                                 frame=group.slice(start, batch_size)))
    return batches


def _encode_items(chunk: pl.DataFrame) -> EncodedItems:
    """The items of ``chunk`` as a JSON array, each named as its row named it; the same
    JSON as :func:`_payload_items` would give, without a Python object per item."""
    kinds = chunk["address"].unique().to_list()
    if len(kinds) == 1:
        cols = chunk.select("location_id", kinds[0], "quantity")
    else:  # rows of one batch naming items in different ways: one object each
        return EncodedItems(json.dumps(list(_payload_items(chunk)),
                                       separators=(",", ":")).encode(), chunk.height)
    lines = cols.write_ndjson().rstrip("\n")
    # One JSON object per line (a newline inside a value is escaped): lines become elements.
    return EncodedItems(("[" + lines.replace("\n", ",") + "]").encode(), chunk.height)


def _payload_items(chunk: pl.DataFrame) -> Iterator[dict[str, Any]]:
    # Each item is named as its row named it (``address``), whatever key it is stored under.
    kinds = chunk["address"].unique().to_list()
    if len(kinds) == 1:  # the usual case: one identifier for the whole batch
        yield from chunk.select("location_id", kinds[0], "quantity").to_dicts()
        return
    for loc, ident, sku, pid, vid, qty in chunk.select(
        "location_id", "address", "sku", "product_id", "variant_id", "quantity"
    ).iter_rows():
        ident_value = sku if ident == "sku" else vid if ident == "variant_id" else pid
        yield {"location_id": loc, ident: ident_value, "quantity": qty}


class SubmitObserver:
    """What :func:`submit` tells its caller about each batch; override what you need.

    ``prepare``, ``sending`` (through ``sending_all``) and ``confirmed`` may block (a
    journal's fsync) and run in a worker thread: ``prepare`` of each batch in turn, in one
    thread; ``sending_all`` on the event loop when no batch is out (nothing else to do
    then); ``confirmed`` on the event loop when
    :attr:`confirmed_blocks` is false (it only hands the record to the kernel: one thread
    hop less a batch). ``prepare`` runs while the batches before are still out (the body
    is built then too); ``sending`` right before the batch goes out, which waits for it;
    ``confirmed`` before the batch goes on. A :class:`~invsync.errors.FatalError` from
    ``sending`` or ``confirmed`` stops the submit as a store failure does (from
    ``sending_all``: none of its batches is sent). ``finished`` runs on the event loop.
    """

    confirmed_blocks = True
    """Whether :meth:`confirmed` may block (then it runs in a worker thread)."""

    def prepare(self, batch: Batch) -> None:
        """Get ready to record ``batch`` (it goes out after the batches before it)."""

    def sending(self, batch: Batch) -> None:
        """``batch`` is about to be sent (its body is built)."""

    def sending_all(self, batches: list[Batch]) -> None:
        """Each of ``batches`` is about to be sent, all at once (write slots were free for
        all of them): :meth:`sending` of each, unless overridden to record them together."""
        for batch in batches:
            self.sending(batch)

    def confirmed(self, batch: Batch, items: list[int], transaction_id: str) -> None:
        """The store confirmed the items of ``batch`` at positions ``items``."""

    def finished(self, result: BatchResult) -> None:
        """A batch is done: accepted, refused, partial, failed or not sent."""


async def submit(
    client: StoreClient,
    batches: list[Batch],
    *,
    reason: str | None,
    concurrency: int = 8,
    observer: SubmitObserver | None = None,
) -> SubmitResult:
    """Send every batch in order, at most ``concurrency`` at once; never raises for store
    failures.

    The next batches' bodies (``concurrency`` of them) are built and ``prepare``d while the
    batches before them are out, so that a batch goes out as soon as a write slot frees
    and ``sending`` has recorded it. ``observer`` hears of each batch as it is sent,
    confirmed and finished (the journal's write-ahead records and the progress events
    hang on it).

    A fatal error (auth refused, store gone after bounded retries) stops new batches
    and is returned in :attr:`SubmitResult.fatal`; batches already confirmed stay so.
    """
    started = time.monotonic()
    # The client may have served the run's reads first: count this stage's requests only.
    requests_before, throttled_before = client.requests_sent, client.responses_429
    sender = _Sender(client, batches, reason, max(concurrency, 1), observer)
    await sender.send_all()
    return SubmitResult(batches=sender.results,
                        fatal=sender.fatal[0] if sender.fatal else None,
                        batch_seqs=[b.seqs for b in batches],
                        requests=client.requests_sent - requests_before,
                        responses_429=client.responses_429 - throttled_before,
                        seconds=time.monotonic() - started)


class _Sender:
    """One submit: batches go out in order through ``concurrency`` write slots, the next
    ones' bodies built (and ``prepare``d) in worker threads while the ones before are out."""

    def __init__(self, client: StoreClient, batches: list[Batch], reason: str | None,
                 concurrency: int, observer: SubmitObserver | None) -> None:
        import asyncio

        self.client, self.reason, self.observer = client, reason, observer
        self.results = [BatchResult(b.index, b.location_id, len(b), status="not_sent")
                        for b in batches]
        self.concurrency = concurrency
        self.slots = asyncio.Semaphore(concurrency)
        self.stop = asyncio.Event()
        self.fatal: list[FatalError] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.queue: deque[tuple[Batch, BatchResult, asyncio.Future[None]]] = deque()
        self.upcoming = iter(zip(batches, self.results, strict=True))
        self.builder: ThreadPoolExecutor | None = None
        self.in_flight = 0
        """Batches sent and not yet done."""
        self.written_out = _Countdown(0)
        """The batches sent last: set once each one's request is written out (or it is
        done); the next bodies are built from then on."""

    def stop_with(self, exc: FatalError) -> None:
        if not self.fatal:
            self.fatal.append(exc)
        self.stop.set()

    async def send_all(self) -> None:
        """Send every batch (until a fatal error); cancelled, it cancels the requests in
        flight."""
        import asyncio

        self.top_up()
        try:
            while self.queue and not self.stop.is_set():
                batch, result, prepared = self.queue.popleft()
                await prepared
                if not await self.go(batch, result):
                    break
                if self.slots.locked():  # the next batch waits for a slot anyway
                    await self.written_out.wait()
                self.top_up()
            await asyncio.gather(*self.tasks)
        except BaseException:  # a signal (cancelled): the requests in flight are cancelled
            for task in self.tasks:
                task.cancel()
            raise
        finally:
            # A body being built in a thread is waited for, never left behind.
            for _, _, prepared in self.queue:
                with contextlib.suppress(Exception):
                    await prepared
            if self.builder is not None:
                self.builder.shutdown(wait=False)

    def top_up(self) -> None:
        """Build the next bodies in a worker thread (polars lets go of the GIL) while the
        event loop goes on reading answers: one after another, in the order they go out,
        so the first of them is ready soonest (built side by side, each would wait for all)."""
        import asyncio

        loop = asyncio.get_running_loop()
        while len(self.queue) < self.concurrency and not self.stop.is_set():
            nxt = next(self.upcoming, None)
            if nxt is None:
                return
            self.queue.append((*nxt, loop.run_in_executor(
                self._builder(), _prepare, nxt[0], self.observer)))

    def _builder(self) -> ThreadPoolExecutor:
        """The one thread the bodies are built in (made on first use)."""
        if self.builder is None:
            self.builder = ThreadPoolExecutor(max_workers=1,
                                              thread_name_prefix="invsync-body")
        return self.builder

    async def go(self, batch: Batch, result: BatchResult) -> bool:
        """Take a write slot, record ``batch`` as sending and send it; False: stopped.

        The batches after it whose bodies are built and for which a write slot is free
        too (the first ones of a run with ``concurrency`` > 1) go with it: recorded
        together (one thread hop, one fsync), then sent together.
        """
        import asyncio

        await self.slots.acquire()
        group = [(batch, result)]
        while self.queue and not self.slots.locked() and self.queue[0][2].done() \
                and self.queue[0][2].exception() is None:
            await self.slots.acquire()  # free: taken at once
            nxt, nxt_result, _ = self.queue.popleft()
            group.append((nxt, nxt_result))
        if not self.stop.is_set() and self.observer:
            try:
                if self.in_flight:  # their answers are read meanwhile
                    await asyncio.to_thread(self.observer.sending_all, [b for b, _ in group])
                else:  # nothing else to do while it is recorded: no thread hop
                    self.observer.sending_all([b for b, _ in group])
            except FatalError as exc:  # not recorded as sending: so none of them is sent
                result.error = str(exc)
                self.stop_with(exc)
        if self.stop.is_set():
            for _ in group:
                self.slots.release()
            return False
        self.written_out = _Countdown(len(group))
        for one, its_result in group:
            self.in_flight += 1
            self.tasks.append(asyncio.create_task(
                self.run(one, its_result, self.written_out.once())))
        return True

    async def run(self, batch: Batch, result: BatchResult, written_out: Callable[[], None]
                  ) -> None:
        """Send one recorded batch; its write slot is held until it is done.
        ``written_out()`` once its (first) request is written out, or it is done."""
        WRITTEN_OUT.set(written_out)  # this task's own context: its requests only
        t0 = time.monotonic()
        try:
            await _send_isolating(self.client, batch, result, self.reason, self.observer)
        except FatalError as exc:
            result.status = "failed"
            result.error = str(exc)
            self.stop_with(exc)
        finally:
            written_out()
            result.seconds = time.monotonic() - t0
            self.in_flight -= 1
            self.slots.release()
        if self.observer:
            self.observer.finished(result)


class _Countdown:
    """An event set once each of ``n`` parties has said so (each at most once)."""

    def __init__(self, n: int) -> None:
        import asyncio

        self.left = n
        self.event = asyncio.Event()
        if n <= 0:
            self.event.set()

    def once(self) -> Callable[[], None]:
        """One party's way to say so (a second call is ignored)."""
        said = False

        def say() -> None:
            nonlocal said
            if not said:
                said = True
                self.left -= 1
                if self.left <= 0:
                    self.event.set()

        return say

    async def wait(self) -> None:
        await self.event.wait()


def _prepare(batch: Batch, observer: SubmitObserver | None) -> None:
    """Serialise ``batch``'s body and let the observer get ready (in a worker thread)."""
    _ = batch.encoded
    if observer:
        observer.prepare(batch)


async def _send_isolating(
    client: StoreClient, batch: Batch, result: BatchResult, reason: str | None,
    observer: SubmitObserver | None = None,
) -> None:
    """Send ``batch``; on a 422, find the refused items and get the rest accepted."""
    pending: list[list[int]] = [list(range(len(batch)))]
    last_title = ""
    while pending:
        idx = pending.pop()
        if not idx:
            continue
        if result.requests >= MAX_ISOLATION_REQUESTS:
            # Every item still pending was in a request the store refused (422).
            message = (f"not isolated: the store refused its batch ({last_title}) and "
                       f"isolation gave up after {MAX_ISOLATION_REQUESTS} requests")
            for rest in (idx, *pending):
                result.refused.extend((batch.seqs[i], message) for i in rest)
            pending.clear()
            break
        whole = len(idx) == len(batch)
        result.requests += 1
        try:
            put = await client.put_absolute(
                batch.encoded if whole else [batch.items[i] for i in idx], reason)
        except Refused as refusal:
            items = [batch.items[i] for i in idx]
            result.attempts += refusal.attempts
            last_title = refusal.title
            if len(idx) == 1:
                result.refused.append((batch.seqs[idx[0]], refusal.title or "refused (HTTP 422)"))
                continue
            named = _named_items(refusal, items)
            if named and len(named) < len(idx):
                suspects = [idx[j] for j in sorted(named)]
                others = [i for j, i in enumerate(idx) if j not in named]
                # The rest most likely goes through in one request; try it first.
                pending.append(suspects)
                pending.append(others)
            else:
                half = len(idx) // 2
                pending.append(idx[half:])
                pending.append(idx[:half])
            continue
        except FatalError as exc:
            # What is still pending was only ever in refused (422) requests: not applied.
            # The request that failed was too, unless an attempt of it may have landed.
            for rest in pending:
                result.not_applied.extend(batch.seqs[i] for i in rest)
            if not exc.maybe_applied:
                result.not_applied.extend(batch.seqs[i] for i in idx)
            raise
        result.attempts += put.attempts
        result.transaction_ids.append(put.transaction_id)
        seqs = batch.seqs
        result.accepted.extend(seqs if whole else [seqs[i] for i in idx])
        if observer and not observer.confirmed_blocks:
            observer.confirmed(batch, idx, put.transaction_id)
        elif observer:
            import asyncio

            await asyncio.to_thread(observer.confirmed, batch, idx, put.transaction_id)
    if not result.refused:
        result.status = "accepted"
    elif result.accepted:
        result.status = "partial"
    else:
        result.status = "refused"


_LOCATION_IDS = re.compile(r"[Ll]ocation[^\[]*\[([\d,\s]+)\]")
_ITEMS_INDEX = re.compile(r"^items\.(\d+)")


def _named_items(refusal: Refused, items: list[dict[str, Any]]) -> set[int]:
    """Positions of the items a 422 seems to name; a hint only, never trusted blindly."""
    named: set[int] = set()
    for key in refusal.errors:
        m = _ITEMS_INDEX.match(str(key))
        if m and int(m.group(1)) < len(items):
            named.add(int(m.group(1)))
    title = refusal.title
    m = _LOCATION_IDS.search(title)
    if m:
        ids = {int(x) for x in re.findall(r"\d+", m.group(1))}
        named.update(j for j, it in enumerate(items) if it["location_id"] in ids)
    for j, it in enumerate(items):
        for kind in ("sku", "variant_id", "product_id"):
            if kind in it and re.search(
                rf"{kind}[\s:=]+['\"]?{re.escape(str(it[kind]))}(?![\w-])", title
            ):
                named.add(j)
    return named
