"""Fault tolerance of invsync, proven end to end: the real CLI against real sandbox processes.

1. A flaky, rate-limited store (5xx, header-less 429s, dropped answers, 40 requests/s):
   20,000 rows end exactly right, and each accepted item is counted once.
2. ``kill -9`` at random points: the same command (or ``invsync resume``) finishes the job,
   the store applies no more than the batches in flight at each kill a second time, and the
   snapshot never claims a level the store does not have. A second concurrent run is
   locked out at once; the lock a killed run leaves behind is taken over.
3. Safety brakes trip before anything is sent (exit 3), in dry runs too, and each override works.
4. The access token appears in no output, state file or report, even at ``-vv``.
5. Hostile files fail fast (exit 65, naming the file) with bounded memory.

Every child process started here is reaped here; sandboxes stop at fixture teardown.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import openpyxl
import polars as pl
import psutil
import pytest
from conftest import (
    ROOT,
    SAMPLE,
    TOKEN,
    CliResult,
    env_for,
    kill_when,
    lock_holder,
    output,
    quiet_log,
    retry_config,
    run_invsync,
    spawn,
    state_store_dir,
    wait_for,
    write_stock,
)
from misbehaving import HoldPuts, misbehaving_store

from invsync.sandbox.process import SandboxProcess, run_sandbox

Factory = Callable[..., SandboxProcess]
Key = tuple[int, str]
"""(location_id, sku)"""


# ---- test data ---------------------------------------------------------------------------


def make_catalog(path: Path, n: int) -> list[str]:
    """A catalog of ``n`` products tracked by product; returns their SKUs."""
    skus = [f"RS-{i:06d}" for i in range(n)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sku", "product_id", "variant_id", "tracking"])
        for i, sku in enumerate(skus):
            w.writerow([sku, 100_000 + i, 900_000 + i, "product"])
    return skus


def random_levels(skus: list[str], locations: tuple[int, ...], rng: random.Random,
                  low: int = 1, high: int = 5000) -> dict[Key, int]:
    return {(loc, sku): rng.randint(low, high) for loc in locations for sku in skus}


PATIENT = {"max_attempts": 10, "base_delay_s": 0.02, "max_delay_s": 0.5, "max_total_s": 30.0,
           "timeout_s": 10.0}


def patient_config(directory: Path, **retry: float) -> Path:
    """conftest's :func:`retry_config` with this file's defaults (``PATIENT``)."""
    return retry_config(directory, **{**PATIENT, **retry})


# ---- looking at what happened ------------------------------------------------------------


def log_mark(sb: SandboxProcess) -> int:
    """Position in the sandbox's request log, to look only at what comes after."""
    return len(sb.requests())


def puts_since(sb: SandboxProcess, mark: int = 0) -> list[dict[str, Any]]:
    return [r for r in sb.requests()[mark:] if r["method"] == "PUT"]


def item_keys(requests: list[dict[str, Any]]) -> list[Key]:
    return [(it["location_id"], it["sku"]) for r in requests for it in r["items"]]


def snapshot_levels(state_home: Path, store: str = "sandbox") -> dict[Key, int | None] | None:
    """The snapshot as invsync left it on disk, read independently with polars.

    A level of ``None``: the item is known, its level is not (a write never confirmed).
    """
    path = state_store_dir(state_home, store) / "snapshot.parquet"
    if not path.exists():
        return None
    frame = pl.read_parquet(path)
    assert set(frame["identifier"].unique().to_list()) <= {"sku"}, frame
    return {(int(loc), str(key)): None if qty is None else int(qty) for loc, key, qty
            in frame.select("location_id", "item_key", "quantity").iter_rows()}


def accepted_history(sb: SandboxProcess) -> dict[Key, set[int]]:
    """Every level the sandbox ever applied for each item."""
    history: dict[Key, set[int]] = defaultdict(set)
    for r in sb.requests():
        if r["method"] == "PUT" and r["applied"]:
            for it in r["items"]:
                history[(it["location_id"], it["sku"])].add(it["quantity"])
    return history


def settle(sb: SandboxProcess) -> list[dict[str, Any]]:
    """The request log once every request the sandbox received has been answered."""
    time.sleep(0.25)  # first, time for a killed run's last request to reach the sandbox
    return quiet_log(sb, timeout=10, every=0.1)


# ---- 1. a flaky, rate-limited store ------------------------------------------------------

FLAKY_SEED = 1


def test_flaky_rate_limited_store_20000_rows_end_right_each_item_counted_once(
    sandbox_factory: Factory, tmp_path: Path
) -> None:
    skus = make_catalog(tmp_path / "catalog.csv", 10_000)
    sb = sandbox_factory("--error-rate", "0.1", "--bare-429-rate", "0.05", "--drop-rate", "0.03",
                         "--quota", "40", "--window-ms", "1000", "--seed", str(FLAKY_SEED),
                         catalog=tmp_path / "catalog.csv")
    env = env_for(sb, tmp_path)
    levels = random_levels(skus, (1, 2), random.Random(20_000))
    stock = write_stock(tmp_path / "stock.csv", levels)
    config = patient_config(tmp_path, max_attempts=10, base_delay_s=0.05, max_delay_s=1.0,
                          max_total_s=30.0, timeout_s=10.0)

    result = run_invsync(["sync", str(stock), "--config", str(config), "--batch-size", "250"],
                         env, timeout=240)  # cannot hang: about 10x its time on a quiet machine

    assert result.returncode == 0, output(result)
    assert sb.levels() == levels

    requests = sb.requests()
    puts = [r for r in requests if r["method"] == "PUT"]
    statuses = Counter(r["status"] for r in requests)
    # The faults really happened (else this seed proves nothing: pick another).
    assert sum(r["dropped"] for r in puts) >= 1, statuses
    assert statuses[429] >= 1 and statuses[500] + statuses[502] + statuses[503] >= 1, statuses
    assert set(statuses) <= {0, 200, 429, 500, 502, 503}, statuses

    report = result.report()
    c = report["counts"]
    assert report["status"] == "succeeded"
    assert (c["rows"], c["submitted"], c["accepted"]) == (20_000, 20_000, 20_000), c
    assert (c["refused"], c["unconfirmed"], c["not_sent"], c["rejected"]) == (0, 0, 0, 0), c

    answered = [r for r in puts if r["status"] == 200]
    dropped = [r for r in puts if r["dropped"]]
    # Each item was accepted (answered 200) exactly once, although dropped writes were resent.
    assert Counter(item_keys(answered)) == Counter(levels.keys()), "an item answered twice or never"
    assert sorted(report["transaction_ids"]) == sorted(r["transaction_id"] for r in answered)
    assert not {r["transaction_id"] for r in dropped} & set(report["transaction_ids"])
    assert sum(b["accepted"] for b in report["batches"]) == 20_000
    # The store applied more than 20,000 items: the dropped writes, a second time.
    stats = sb.stats()
    assert stats["items_applied"] == sum(len(r["items"]) for r in puts if r["applied"])
    assert stats["items_applied"] == 20_000 + sum(len(r["items"]) for r in dropped) > 20_000
    assert report["requests"]["sent"] == len(puts)
    assert stats["item_overlaps"] == 0  # never two writes of one item at once
    assert snapshot_levels(tmp_path / "state") == levels


# ---- 2. kill -9 at random points ---------------------------------------------------------

KILL_ITEMS = 4000  # x 2 locations = 8000 rows = 40 batches of 200, two at a time
KILL_BATCH = 200
KILL_CONCURRENCY = 2
KILL_LATENCY_MS = 60


@dataclass
class KillWorld:
    sb: SandboxProcess
    env: dict[str, str]
    tmp: Path
    skus: list[str]

    @property
    def state_home(self) -> Path:
        return self.tmp / "state"

    @property
    def store_dir(self) -> Path:
        return state_store_dir(self.state_home, self.sb.store_hash, self.sb.url)

    def files(self, rng: random.Random) -> tuple[dict[Key, int], dict[Key, int], Path, Path]:
        """Yesterday's levels and today's (every level different), as two stock files."""
        old = random_levels(self.skus, (1, 2), rng)
        new = {k: v + rng.randint(1, 1000) for k, v in old.items()}
        return old, new, write_stock(self.tmp / "old.csv", old), write_stock(
            self.tmp / "new.csv", new)


@pytest.fixture
def kill_world(sandbox_factory: Factory, tmp_path: Path) -> KillWorld:
    skus = make_catalog(tmp_path / "catalog.csv", KILL_ITEMS)
    sb = sandbox_factory("--latency-ms", str(KILL_LATENCY_MS), catalog=tmp_path / "catalog.csv")
    return KillWorld(sb=sb, env=env_for(sb, tmp_path), tmp=tmp_path, skus=skus)


def first_put(requests: list[dict[str, Any]]) -> float:
    """When the first write started (the reads of a run come before it)."""
    return min(r["started"] for r in requests if r["method"] == "PUT")


def kill_args(path: Path) -> list[str]:
    return ["sync", str(path), "--batch-size", str(KILL_BATCH),
            "--concurrency", str(KILL_CONCURRENCY)]


@dataclass
class Journaled:
    run_id: str
    transaction_ids: set[str]
    levels: dict[Key, int]


def read_journal(path: Path) -> Journaled:
    """The confirmed levels an interrupted run's journal holds (a torn last line ignored)."""
    run_id, txids, levels = "", set(), {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            break
        if rec.get("type") == "begin":
            run_id = rec["run_id"]
        elif rec.get("type") == "confirmed":
            txids.add(rec["transaction_id"])
            assert set(rec["identifier"]) <= {"sku"}
            for loc, key, qty in zip(rec["location_id"], rec["item_key"], rec["quantity"],
                                     strict=True):
                levels[(loc, key)] = qty
    return Journaled(run_id, txids, levels)


def wait_until_sending(journal: Path, proc: subprocess.Popen[bytes], not_run: str | None) -> str:
    """Wait until the run has begun its journal (it is about to send); return its run id."""
    def begun() -> str | None:
        assert proc.poll() is None, "the run ended before it began sending"
        try:
            head = json.loads(journal.read_text(encoding="utf-8").split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        if head and head.get("type") == "begin" and head.get("run_id") != not_run:
            return str(head["run_id"])
        return None

    return wait_for(begun, timeout=30, every=0.005, message="the run never began sending")


@dataclass
class Kill:
    run_id: str
    pid: int
    journal: Journaled
    in_flight: list[dict[str, Any]]
    """Writes of the killed run the store applied but the journal never recorded."""

    @property
    def in_flight_keys(self) -> set[Key]:
        return set(item_keys(self.in_flight))


def kill_mid_run(world: KillWorld, args: list[str], delay: float,
                 children: list[subprocess.Popen[bytes]], not_run: str | None = None,
                 *, mid_request: bool = False) -> Kill:
    """Start ``args``, SIGKILL it ``delay`` s after it began sending, and look at the wreck.

    With ``mid_request`` the kill waits (after ``delay``) until the store is working on one
    of the run's PUTs, so that a write is surely applied without its answer being seen.
    """
    mark = log_mark(world.sb)
    proc = spawn(args, world.env, world.tmp / f"killed-{uuid.uuid4().hex[:6]}.log", children)
    journal_path = world.store_dir / "journal.jsonl"
    run_id = wait_until_sending(journal_path, proc, not_run)
    time.sleep(delay)  # the kill lands this long after the run began sending
    if mid_request:
        wait_for(lambda: _fresh_put(world.sb, mark), timeout=10, every=0.002, give_up=True)
    assert proc.poll() is None, "the run finished before the kill: make the file bigger"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL
    log = settle(world.sb)

    # The killed run left its lock (stale: its pid is gone) and its journal behind.
    lock = json.loads((world.store_dir / "lock").read_text())
    assert (lock["run_id"], lock["pid"]) == (run_id, proc.pid), lock
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == "zombie"
    journal = read_journal(journal_path)
    assert journal.run_id == run_id

    run_puts = [r for r in log[mark:] if r["method"] == "PUT"]
    answered = {r["transaction_id"]: r for r in run_puts if r["status"] == 200}
    # The journal holds only what the store confirmed, exactly as the store applied it.
    assert journal.transaction_ids <= set(answered)
    for txid in journal.transaction_ids:
        for it in answered[txid]["items"]:
            assert journal.levels[(it["location_id"], it["sku"])] == it["quantity"]
    assert all(len(r["items"]) <= KILL_BATCH for r in run_puts)
    in_flight = [r for r in run_puts
                 if r["applied"] and r["transaction_id"] not in journal.transaction_ids]
    assert len(in_flight) <= KILL_CONCURRENCY, [r["seq"] for r in in_flight]
    return Kill(run_id, proc.pid, journal, in_flight)


def _fresh_put(sb: SandboxProcess, mark: int) -> bool:
    """A PUT whose body the store holds and whose answer is still most of a latency away.

    The sandbox stamps ``started`` with this machine's monotonic clock, the one used here.
    """
    now = time.monotonic()
    return any(r["method"] == "PUT" and r["finished"] is None and r.get("items")
               and now - r["started"] < KILL_LATENCY_MS / 3000 for r in sb.requests()[mark:])


@pytest.mark.parametrize(
    ("seed", "previous_run", "kills", "finish"),
    [(101, False, 1, "sync"), (202, True, 1, "resume"), (303, True, 2, "sync")],
    ids=["fresh-store-then-same-sync", "after-a-run-then-resume", "killed-twice-then-same-sync"],
)
def test_kill_9_at_random_points_loses_nothing(kill_world: KillWorld,
                                               children: list[subprocess.Popen[bytes]],
                                               seed: int, previous_run: bool, kills: int,
                                               finish: str) -> None:
    w = kill_world
    rng = random.Random(seed)
    old, new, old_file, new_file = w.files(rng)
    args = kill_args(new_file)
    applied_before = 0
    if previous_run:
        first = run_invsync(["sync", str(old_file), "--batch-size", "2000", "--concurrency", "2"],
                            w.env, timeout=60)
        assert first.returncode == 0, output(first)
        assert w.sb.levels() == old
        applied_before = len(old)

    killed: list[Kill] = []
    uncertain: set[Key] = set()  # applied by a killed run, never confirmed since
    for _ in range(kills):
        k = kill_mid_run(w, args, rng.uniform(0.0, 0.6), children,
                         not_run=killed[-1].run_id if killed else None)
        killed.append(k)
        uncertain = (uncertain | k.in_flight_keys) - set(k.journal.levels)
        now = w.sb.levels()
        history = accepted_history(w.sb)
        snapshot = snapshot_levels(w.state_home) or {}
        unknown = {key for key, qty in snapshot.items() if qty is None}
        # Only items in flight at an earlier kill have an unknown level (unless confirmed
        # since, by the run just killed: its journal holds that level until replayed).
        assert unknown <= uncertain | set(k.journal.levels), sorted(unknown - uncertain)[:5]
        snapshot = {key: qty for key, qty in snapshot.items() if qty is not None}
        for key, qty in snapshot.items():
            # The snapshot never holds a level the store did not accept ...
            assert qty in history[key], (key, qty)
            # ... and where nothing was in flight, it holds the store's level now.
            if key not in uncertain and key not in k.journal.levels:
                assert qty == now[key], (key, qty, now[key])
        # The snapshot with the journal replayed: the store's level for every item, except
        # those of the batches in flight at a kill (their fate is unknown to invsync).
        recovered = {**snapshot, **k.journal.levels}
        wrong = {key: (qty, now.get(key)) for key, qty in recovered.items()
                 if key not in uncertain and now.get(key) != qty}
        assert not wrong, dict(list(wrong.items())[:5])

    mark = log_mark(w.sb)
    result = run_invsync(["resume"] if finish == "resume" else args, w.env, timeout=120)

    assert result.returncode == 0, output(result)
    assert w.sb.levels() == new
    assert snapshot_levels(w.state_home) == new  # the snapshot says what the store has
    assert not (w.store_dir / "journal.jsonl").exists()
    report = result.report()
    last = killed[-1]
    assert report["resumed_from"] == last.run_id
    notes = "\n".join(report["notes"])
    assert f"took over the lock left by run {last.run_id} (pid {last.pid})" in notes, notes
    assert f"from interrupted run {last.run_id}" in notes, notes
    assert json.loads((w.store_dir / "lock").read_text() or "{}") == {}  # released

    # What was confirmed before a kill is never sent again; everything else is sent once,
    # except items in flight at a kill that landed: planned against the store, they are
    # already right.
    confirmed = {key for k in killed for key in k.journal.levels}
    in_flight = {key for k in killed for key in item_keys(k.in_flight)}
    final_puts = puts_since(w.sb, mark)
    sent = item_keys([r for r in final_puts if r["status"] == 200])
    assert len(sent) == len(set(sent))
    assert set(new) - confirmed - in_flight <= set(sent) <= set(new) - confirmed
    assert report["counts"]["accepted"] == len(sent)
    # The store applied the file once, plus at most the batches in flight at each kill again.
    extra = w.sb.stats()["items_applied"] - applied_before - len(new)
    assert 0 <= extra <= sum(len(r["items"]) for k in killed for r in k.in_flight)
    assert extra <= kills * KILL_CONCURRENCY * KILL_BATCH, extra
    assert w.sb.stats()["item_overlaps"] == 0


def test_kill_then_sync_of_another_file_resends_what_was_in_flight(
    kill_world: KillWorld, children: list[subprocess.Popen[bytes]]
) -> None:
    """After a kill, the next run must not trust the snapshot for the items in flight.

    Yesterday's file is synced, today's run is killed with batches in flight (applied by
    the store, never confirmed), and then yesterday's file is synced again (a rollback, or
    a scheduler that runs whatever file is there). The store must end at yesterday's levels.
    """
    w = kill_world
    old, _new, old_file, new_file = w.files(random.Random(404))
    # Every run goes through a proxy (one API URL, so one state folder): for the killed run
    # it lets two PUTs through and holds the third's answer after the store applied it, so
    # the kill surely leaves a write applied and unconfirmed, however loaded the machine.
    hold = HoldPuts(let=2, armed=False, apply=True)
    with misbehaving_store(hold, w.sb.url) as store:
        env = {**w.env, "BIGCOMMERCE_API_URL": store.url}
        first = run_invsync(["sync", str(old_file), "--batch-size", "2000"], env, timeout=60)
        assert first.returncode == 0, output(first)
        mark = log_mark(w.sb)
        hold.armed = True
        log = w.tmp / "killed.log"
        proc = spawn(kill_args(new_file), env, log, children)
        assert kill_when(hold.held.is_set, proc, log) == -signal.SIGKILL
        hold.stop()
        journal = read_journal(state_store_dir(w.state_home, w.sb.store_hash, store.url)
                               / "journal.jsonl")
        in_flight = [r for r in settle(w.sb)[mark:] if r["method"] == "PUT" and r["applied"]
                     and r["transaction_id"] not in journal.transaction_ids]
        assert in_flight, "precondition: the kill left applied but unconfirmed writes"

        result = run_invsync(kill_args(old_file), env, timeout=120)

    assert result.returncode == 0, output(result)
    now = w.sb.levels()
    wrong = {key: (now[key], qty) for key, qty in old.items() if now[key] != qty}
    assert not wrong, (
        f"{len(wrong)} items (all from the {len(in_flight)} batches in flight at the kill: "
        f"{set(wrong) <= set(item_keys(in_flight))}) keep the killed run's level although the "
        f"run succeeded and the file says otherwise; (store, file) e.g. "
        f"{dict(list(wrong.items())[:3])}")
    assert snapshot_levels(w.state_home) == now


def test_writes_a_failed_run_left_unconfirmed_are_resent_next_time(sandbox_factory: Factory,
                                                                    tmp_path: Path) -> None:
    """Same hole without a kill: a run that gives up on a write whose answer was lost."""
    skus = make_catalog(tmp_path / "catalog.csv", 3000)
    sb = sandbox_factory("--drop-rate", "0.3", "--seed", "5", catalog=tmp_path / "catalog.csv")
    env = env_for(sb, tmp_path)
    patient = patient_config(tmp_path, max_attempts=20, base_delay_s=0.01, max_delay_s=0.05)
    impatient = patient_config(tmp_path, max_attempts=1, base_delay_s=0.01, max_delay_s=0.05)
    rng = random.Random(505)
    old = random_levels(skus, (1, 2), rng)
    new = {k: v + 1 for k, v in old.items()}
    old_file = write_stock(tmp_path / "old.csv", old)
    new_file = write_stock(tmp_path / "new.csv", new)
    flags = ["--batch-size", "200", "--concurrency", "1"]

    first = run_invsync(["sync", str(old_file), "--config", str(patient), *flags], env)
    assert first.returncode == 0, output(first)
    mark = log_mark(sb)
    failed = run_invsync(["sync", str(new_file), "--config", str(impatient), *flags], env)
    assert failed.returncode == 2, output(failed)
    assert failed.report()["counts"]["unconfirmed"] >= 1
    lost = [r for r in puts_since(sb, mark) if r["dropped"]]
    assert lost and all(r["applied"] for r in lost)  # applied by the store, answer lost

    result = run_invsync(["sync", str(old_file), "--config", str(patient), *flags], env)

    assert result.returncode == 0, output(result)
    now = sb.levels()
    wrong = {key: (now[key], qty) for key, qty in old.items() if now[key] != qty}
    assert not wrong, (
        f"{len(wrong)} items whose write went unanswered in the failed run keep that run's "
        f"level; the next run reported them unchanged ({result.report()['counts']})")


def test_second_concurrent_sync_is_locked_out_at_once(kill_world: KillWorld,
                                                      children: list[subprocess.Popen[bytes]]
                                                      ) -> None:
    w = kill_world
    _, levels, _, stock = w.files(random.Random(7))
    args = ["sync", str(stock), "--batch-size", str(KILL_BATCH), "--concurrency", "1"]
    lock = w.store_dir / "lock"
    log = w.tmp / "first.log"
    first = spawn(args, w.env, log, children)
    holder = lock_holder(lock, first, log)
    second = run_invsync(args, w.env, timeout=60)

    # At once: it did not wait for the lock (the first run, which takes seconds, is still
    # running when the second has already given up).
    assert first.poll() is None, "the first run should still be running"
    assert second.returncode == 4, output(second)
    text = output(second)
    assert holder["pid"] == first.pid
    assert "already syncing" in text, text
    assert f"run {holder['run_id']} (pid {first.pid}" in text, text
    # A run refused by the lock is not a run: it leaves no run folder.
    assert "report:" not in second.stdout, second.stdout

    assert first.wait(timeout=120) == 0, log.read_text()
    first_result = CliResult(0, log.read_text(), "")
    assert first_result.report()["run_id"] == holder["run_id"]
    runs_dir = w.state_home / "invsync" / "runs"
    assert [p.name for p in runs_dir.iterdir()] == [holder["run_id"]]
    assert w.sb.levels() == levels
    # The locked-out run sent nothing: the first run's reads (locations, live levels) and
    # its 40 batches are all there is.
    requests = w.sb.requests()
    assert all(r["method"] != "GET" or r["started"] < first_put(requests) for r in requests)
    assert len([r for r in requests if r["method"] == "PUT"]) == len(levels) // KILL_BATCH
    assert w.sb.stats()["item_overlaps"] == 0


# ---- 3. safety brakes --------------------------------------------------------------------


@dataclass
class Store:
    sb: SandboxProcess
    env: dict[str, str]
    tmp: Path
    skus: list[str]
    baseline: dict[Key, int]

    def sync(self, path: Path, *flags: str) -> tuple[CliResult, list[dict[str, Any]]]:
        """Run a sync; return it and the PUTs the store received meanwhile."""
        mark = log_mark(self.sb)
        result = run_invsync(["sync", str(path), *flags], self.env, timeout=60)
        return result, puts_since(self.sb, mark)


@pytest.fixture
def synced_store(sandbox_factory: Factory, tmp_path: Path) -> Store:
    """A store synced once: 200 items at location 1, the first 100 also at location 2."""
    skus = make_catalog(tmp_path / "catalog.csv", 200)
    sb = sandbox_factory(catalog=tmp_path / "catalog.csv")
    rng = random.Random(3)
    baseline = {(1, s): rng.randint(1, 99) for s in skus}
    baseline |= {(2, s): rng.randint(1, 99) for s in skus[:100]}
    store = Store(sb, env_for(sb, tmp_path), tmp_path, skus, baseline)
    result, sent = store.sync(write_stock(tmp_path / "baseline.csv", baseline))
    assert result.returncode == 0, output(result)
    assert len(item_keys(sent)) == 300 and sb.levels() == baseline
    return store


def assert_braked(result: CliResult, sent: list[dict[str, Any]], brake: str, flag: str) -> None:
    assert result.returncode == 3, output(result)
    assert sent == [], "a tripped brake must send nothing"
    assert flag in output(result), output(result)
    report = result.report()
    assert [b["name"] for b in report["brakes"]] == [brake], report["brakes"]
    assert report["exit_code"] == 3
    assert report["counts"]["accepted"] == 0


def test_empty_file_brake_and_allow_empty(synced_store: Store) -> None:
    store = synced_store
    empty = store.tmp / "empty.csv"
    empty.write_text("sku,location_id,quantity\n")

    for flags in ([], ["--dry-run"], ["--zero-missing"]):
        result, sent = store.sync(empty, *flags)
        assert_braked(result, sent, "empty_file", "--allow-empty")
    assert store.sb.levels() == store.baseline

    result, sent = store.sync(empty, "--allow-empty")
    assert result.returncode == 0, output(result)
    assert sent == []
    assert result.report()["status"] == "succeeded"
    assert store.sb.levels() == store.baseline


def test_shrunken_file_brake_and_allow_shrink(synced_store: Store) -> None:
    store = synced_store
    # The same export (same path) with 120 rows (location 1 only), under half of the last
    # successful run's 300, each one a change: a truncated export, braked whether or not
    # --zero-missing would zero what it left out (issue 22).
    small = {k: v + 1 for k, v in list(store.baseline.items())[:120]}
    path = write_stock(store.tmp / "baseline.csv", small)

    # (--allow-zeroing only to show this brake alone: 80 of 200 would drop to 0 too.)
    for flags in (["--zero-missing", "--allow-zeroing"],
                  ["--zero-missing", "--allow-zeroing", "--dry-run"], []):
        result, sent = store.sync(path, *flags)
        assert_braked(result, sent, "shrunken_file", "--allow-shrink")
        message = result.report()["brakes"][0]["message"]
        assert ("--zero-missing" in message) == ("--zero-missing" in flags), message
    assert store.sb.levels() == store.baseline

    # A partial update from another file (another source) is normal: no brake, no flag.
    result, sent = store.sync(write_stock(store.tmp / "small.csv", small))
    assert result.returncode == 0, output(result)
    assert sorted(item_keys(sent)) == sorted(small)
    assert store.sb.levels() == store.baseline | small
    assert result.report()["input"]["source"] == "cli"


def test_shrunken_file_brake_compares_with_the_last_successful_run(synced_store: Store) -> None:
    store = synced_store
    full = {k: v + 1 for k, v in store.baseline.items()}
    export = store.tmp / "full.csv"
    result, _ = store.sync(write_stock(export, full), "--zero-missing")
    assert result.returncode == 0, output(result)
    # A small correction (another file) does not lower what the export is compared with.
    fix = dict(list(full.items())[:5])
    fix = {k: v + 1 for k, v in fix.items()}
    result, _ = store.sync(write_stock(store.tmp / "fix.csv", fix))
    assert result.returncode == 0, output(result)
    truncated = dict(list((full | fix).items())[:140])
    result, sent = store.sync(write_stock(export, truncated), "--zero-missing",
                              "--allow-zeroing")
    assert_braked(result, sent, "shrunken_file", "--allow-shrink")
    result, sent = store.sync(export, "--zero-missing", "--allow-zeroing", "--allow-shrink")
    assert result.returncode == 0, output(result)
    # Location 1 only in the file: its left-out items go to 0, location 2 is untouched.
    zeroed = {k for k in full if k[0] == 1} - set(truncated)
    assert store.sb.levels() == full | fix | truncated | dict.fromkeys(zeroed, 0)


def test_mass_zeroing_brake_and_allow_zeroing(synced_store: Store) -> None:
    store = synced_store
    zeroing = dict(store.baseline)
    for key in list(zeroing)[:100]:  # 100 of 300 synced items (33%) to 0
        zeroing[key] = 0
    path = write_stock(store.tmp / "zeroing.csv", zeroing)

    for flags in ([], ["--dry-run"]):
        result, sent = store.sync(path, *flags)
        assert_braked(result, sent, "mass_zeroing", "--allow-zeroing")
    assert store.sb.levels() == store.baseline

    result, sent = store.sync(path, "--allow-zeroing")
    assert result.returncode == 0, output(result)
    assert len(item_keys(sent)) == 100
    assert {it["quantity"] for r in sent for it in r["items"]} == {0}
    assert store.sb.levels() == zeroing


def test_zero_missing_zeroes_only_at_the_files_locations_and_is_braked(
    synced_store: Store,
) -> None:
    store = synced_store
    loc1 = [(1, s) for s in store.skus]
    # Location 1 only, 20 items left out: those 20 go to 0 there, location 2 is untouched.
    first = {k: store.baseline[k] for k in loc1[20:]}
    result, sent = store.sync(write_stock(store.tmp / "loc1.csv", first), "--zero-missing")
    assert result.returncode == 0, output(result)
    assert sorted(item_keys(sent)) == sorted(loc1[:20])
    assert {it["quantity"] for r in sent for it in r["items"]} == {0}
    expected = store.baseline | dict.fromkeys(loc1[:20], 0)
    assert store.sb.levels() == expected
    assert result.report()["counts"]["zeroed_missing"] == 20

    # Now 100 more left out: 100 of 300 synced items (33%) would drop to 0.
    second = dict.fromkeys(loc1[:20], 0) | {k: store.baseline[k] for k in loc1[120:]}
    path = write_stock(store.tmp / "loc1-short.csv", second)
    for flags in (["--zero-missing"], ["--zero-missing", "--dry-run"]):
        result, sent = store.sync(path, *flags)
        assert_braked(result, sent, "mass_zeroing", "--allow-zeroing")
    assert store.sb.levels() == expected

    result, sent = store.sync(path, "--zero-missing", "--allow-zeroing")
    assert result.returncode == 0, output(result)
    assert sorted(item_keys(sent)) == sorted(loc1[20:120])
    assert store.sb.levels() == expected | dict.fromkeys(loc1[20:120], 0)
    assert all(store.sb.levels()[(2, s)] == store.baseline[(2, s)] for s in store.skus[:100])


def test_zero_missing_never_zeroes_an_item_whose_row_was_rejected(synced_store: Store) -> None:
    """A rejected row still names its item: the file did not leave it out."""
    store = synced_store
    loc1 = [(1, s) for s in store.skus]
    bad = {loc1[0]: "-99999999999999999999", loc1[1]: "n/a", loc1[2]: "",
           loc1[3]: "3000000000"}
    path = store.tmp / "with-bad-rows.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["sku", "location_id", "quantity"])
        for (loc, sku), q in store.baseline.items():
            if loc == 1:
                w.writerow([sku, loc, bad.get((loc, sku), q)])

    result, sent = store.sync(path, "--zero-missing")

    assert result.returncode == 1, output(result)  # rows rejected, nothing else to do
    assert sent == [], sent
    assert store.sb.levels() == store.baseline
    report = result.report()
    assert report["counts"]["zeroed_missing"] == 0
    assert sorted(r["reason"] for r in report["rejected"]) == [
        "missing_quantity", "quantity_negative", "quantity_not_whole", "quantity_too_large"]


# ---- 4. secrets --------------------------------------------------------------------------


def test_token_appears_in_no_output_state_or_report(sandbox_factory: Factory, tmp_path: Path,
                                                    children: list[subprocess.Popen[bytes]]
                                                    ) -> None:
    token = "tok-" + uuid.uuid4().hex
    skus = make_catalog(tmp_path / "catalog.csv", 1000)
    catalog = tmp_path / "catalog.csv"
    rng = random.Random(9)
    good = write_stock(tmp_path / "good.csv", random_levels(skus[:100], (1,), rng))
    refused = write_stock(tmp_path / "refused.csv",
                          {(1, "NO-SUCH-SKU"): 5, **random_levels(skus[:100], (1,), rng)})
    big = write_stock(tmp_path / "big.csv", random_levels(skus, (1, 2), rng))
    fast = patient_config(tmp_path, max_attempts=3, base_delay_s=0.01, max_delay_s=0.05,
                        max_total_s=5.0)
    ok_sb = sandbox_factory(catalog=catalog, token=token)
    other_sb = sandbox_factory(catalog=catalog, token="other-" + uuid.uuid4().hex)
    failing_sb = sandbox_factory("--error-rate", "1.0", catalog=catalog, token=token)
    slow_sb = sandbox_factory("--latency-ms", "100", catalog=catalog, token=token)
    ok_env = env_for(ok_sb, tmp_path / "ok", token=token)
    reports = tmp_path / "reports"

    runs: list[tuple[str, CliResult, int]] = []

    def run(name: str, args: list[str], env: dict[str, str], code: int) -> None:
        result = run_invsync(["-vv", *args], env, timeout=60)
        assert result.returncode == code, (name, output(result))
        runs.append((name, result, code))

    run("success", ["sync", str(good), "--report-dir", str(reports)], ok_env, 0)
    run("refused batch", ["sync", str(refused), "--report-dir", str(reports)], ok_env, 1)
    run("dry run", ["sync", str(good), "--dry-run"], ok_env, 0)
    run("401", ["sync", str(good), "--report-dir", str(reports)],
        env_for(other_sb, tmp_path / "401", token=token), 2)
    run("5xx", ["sync", str(good), "--config", str(fast)],
        env_for(failing_sb, tmp_path / "5xx", token=token), 2)
    # Token from the config file instead of the environment (that file is the user's own
    # secret store: the only file the walk below skips).
    secret_cfg = tmp_path / "secret.toml"
    secret_cfg.write_text(f'access_token = "{token}"\n')
    cfg_env = {k: v for k, v in env_for(ok_sb, tmp_path / "cfg", token=token).items()
               if k != "BIGCOMMERCE_ACCESS_TOKEN"}
    run("token from config", ["sync", str(good), "--config", str(secret_cfg)], cfg_env, 0)
    # An interrupted run: its journal and lock stay on disk, then `resume` finishes it.
    slow_env = env_for(slow_sb, tmp_path / "killed", token=token)
    store_dir = state_store_dir(tmp_path / "killed" / "state", slow_sb.store_hash, slow_sb.url)
    proc = spawn(["-vv", "sync", str(big), "--batch-size", "100", "--concurrency", "1"],
                 slow_env, tmp_path / "killed.log", children)
    wait_until_sending(store_dir / "journal.jsonl", proc, None)
    time.sleep(0.3)  # the point: killed some way into sending, not at its first byte
    proc.kill()
    proc.wait(timeout=10)
    assert (store_dir / "journal.jsonl").exists() and (store_dir / "lock").read_text()
    killed_log = (tmp_path / "killed.log").read_bytes()
    assert token.encode() not in killed_log
    run("resume", ["resume"], slow_env, 0)

    assert any(r["status"] == 200 for r in ok_sb.requests()), "the token was never used"
    for name, result, _ in runs:
        assert token not in result.stdout and token not in result.stderr, name
    assert " DEBUG " in runs[0][1].stderr, "-vv did not turn debug logging on"
    walked = [p for p in tmp_path.rglob("*") if p.is_file() and p != secret_cfg]
    for path in walked:
        assert token.encode() not in path.read_bytes(), f"the token leaked into {path}"
    names = Counter(p.name for p in walked)
    assert names["report.json"] >= len(runs) and names["snapshot.parquet"] >= 2, names
    assert names["rejected.csv"] >= 1 and names["lock"] >= 4, names


def test_sync_has_no_token_flag() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGCOMMERCE_")}
    for command in ("sync", "resume"):
        result = run_invsync([command, "--help"], env, timeout=30)
        assert result.returncode == 0, output(result)
        assert not re.search(r"--[\w-]*(token|secret|password)", result.stdout, re.I), \
            result.stdout
    result = run_invsync(["sync", "stock.csv", "--token", "x"], env, timeout=30)
    assert result.returncode == 64, output(result)
    assert "no such option" in output(result).lower()


# ---- 5. hostile files --------------------------------------------------------------------

MAX_RSS = 600 << 20
GUARD_RSS = 1 << 30
"""A child past this is killed at once, so a bomb cannot take the machine down."""
TIME_LIMIT_S = 30.0
"""A bound that proves a hostile file cannot hang a run: about 10x what one takes on a
loaded 2-core machine (never a speed target; those are `make bench`'s)."""
CORPUS = ROOT.parent / "shared" / "corpus"  # the CI clone has shared/ beside it
"""Real-world files (read-only, never copied into the repository); tests skip without it."""


@dataclass
class Measured:
    returncode: int
    output: str
    seconds: float
    peak_rss: int
    """Bytes: the child's ru_maxrss, from wait4."""
    guard: str | None
    """Why the guard killed the child, if it did."""


# Linux carries a parent's peak RSS into a forked child's ru_maxrss across exec, so a CLI
# forked straight from a big pytest process would report pytest's memory. A small launcher
# (a fresh interpreter) forks the CLI instead and reports the CLI's own ru_maxrss on a pipe.
_LAUNCHER = """
import os, sys
report_fd, args = int(sys.argv[1]), sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.close(report_fd)
    os.execv(sys.executable, [sys.executable, "-m", "invsync", *args])
_, status, usage = os.wait4(pid, 0)
os.write(report_fd, str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], env: dict[str, str]) -> Measured:
    """Run the CLI, measuring its peak RSS exactly; kill it if it grows past GUARD_RSS."""
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as log:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(write_fd), *args],
                                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                pass_fds=(write_fd,))
        os.close(write_fd)
        reason: list[str] = []
        done = threading.Event()

        def watch() -> None:
            try:
                launcher = psutil.Process(proc.pid)
                while not done.is_set():
                    for cli in launcher.children():
                        rss = cli.memory_info().rss
                        if rss > GUARD_RSS or time.monotonic() - started > 3 * TIME_LIMIT_S:
                            reason.append(f"killed at {rss >> 20} MiB RSS after "
                                          f"{time.monotonic() - started:.1f} s")
                            cli.kill()
                            return
                    done.wait(0.005)
            except psutil.Error:
                return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            proc.wait(timeout=6 * TIME_LIMIT_S)
        finally:
            done.set()
            if proc.poll() is None:
                for cli in psutil.Process(proc.pid).children():
                    cli.kill()
                proc.kill()
                proc.wait()
            watcher.join(timeout=5)
        seconds = time.monotonic() - started
        with os.fdopen(read_fd, "rb") as fh:
            peak_kib = int(fh.read() or b"0")
        log.seek(0)
        text = log.read().decode("utf-8", errors="replace")
    return Measured(proc.returncode, text, seconds, peak_kib * 1024,
                    reason[0] if reason else None)


_XML = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_PARTS = {
    "[Content_Types].xml": _XML + b'<Types xmlns="http://schemas.openxmlformats.org/package/2006/'
    b'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-'
    b'package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>'
    b'<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-'
    b'officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/'
    b'sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.'
    b'worksheet+xml"/></Types>',
    "_rels/.rels": _XML + b'<Relationships xmlns="http://schemas.openxmlformats.org/package/'
    b'2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/'
    b'officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
    b'</Relationships>',
    "xl/workbook.xml": _XML + b'<workbook xmlns="http://schemas.openxmlformats.org/'
    b'spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/'
    b'relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets>'
    b'</workbook>',
    "xl/_rels/workbook.xml.rels": _XML + b'<Relationships xmlns="http://schemas.openxmlformats.'
    b'org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.'
    b'openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    b'Target="worksheets/sheet1.xml"/></Relationships>',
}
_SHEET = "xl/worksheets/sheet1.xml"
_SHEET_HEAD = (_XML + b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/'
               b'main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>')
_SHEET_TAIL = b"</t></is></c></row></sheetData></worksheet>"


_SST_RELS = _PARTS["xl/_rels/workbook.xml.rels"].replace(
    b"</Relationships>", b'<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/'
    b'officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/>'
    b"</Relationships>")


def write_workbook(path: Path, sheet: Callable[[IO[bytes]], None],
                   extra: dict[str, bytes] | None = None) -> Path:
    """A minimal .xlsx whose sheet part is streamed by ``sheet`` (never held in memory)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in _PARTS.items():
            if name == "xl/_rels/workbook.xml.rels" and extra and "xl/sharedStrings.xml" in extra:
                data = _SST_RELS
            zf.writestr(name, data)
        with zf.open(_SHEET, "w") as fh:
            sheet(fh)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def one_huge_cell(mib: int) -> Callable[[IO[bytes]], None]:
    def write(fh: IO[bytes]) -> None:
        fh.write(_SHEET_HEAD)
        chunk = b"A" * (1 << 20)
        for _ in range(mib):
            fh.write(chunk)
        fh.write(_SHEET_TAIL)
    return write


def shared_string_cells(cells: int) -> Callable[[IO[bytes]], None]:
    """A header row, then ``cells`` cells that all name shared string 0."""
    def write(fh: IO[bytes]) -> None:
        fh.write(_SHEET_HEAD + b"sku</t></is></c><c r=\"B1\" t=\"inlineStr\"><is><t>quantity"
                 + b"</t></is></c></row>")
        for r in range(2, cells + 2):
            fh.write(b'<row r="%d"><c r="A%d" t="s"><v>0</v></c></row>' % (r, r))
        fh.write(b"</sheetData></worksheet>")
    return write


def one_shared_string(chars: int) -> bytes:
    return (_XML + b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            b'count="1" uniqueCount="1"><si><t>' + b"S" * chars + b"</t></si></sst>")


def regex_trap(opens: int) -> Callable[[IO[bytes]], None]:
    """A numeric SKU cell, then a comment of ``opens`` unclosed ``<c r="A1">``: a lazy
    ``.*?</c>`` regex scans to the end of the part from each of them (quadratic)."""
    def write(fh: IO[bytes]) -> None:
        fh.write(_SHEET_HEAD + b"sku</t></is></c><c r=\"B1\" t=\"inlineStr\"><is><t>quantity"
                 + b'</t></is></c></row><row r="2"><c r="A2"><v>123</v></c><c r="B2"><v>4</v>'
                 + b"</c></row></sheetData><!--" + b'<c r="A1">' * opens + b"--></worksheet>")
    return write


def understate_size(src: Path, dst: Path, member: str, size: int) -> Path:
    """Copy a zip, claiming ``size`` as ``member``'s uncompressed size in both its headers."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        offset = zf.getinfo(member).header_offset
    assert data[offset:offset + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, offset + 22, size)
    name = member.encode()
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_len = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46:at + 46 + name_len] == name:
            struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 4)
    dst.write_bytes(data)
    with zipfile.ZipFile(dst) as zf:
        assert zf.getinfo(member).file_size == size
    return dst


def billion_laughs(padding: int) -> Callable[[IO[bytes]], None]:
    entities = '<!ENTITY lol0 "lol">' + "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10))
    doc = (_XML.decode() + (f"<!--{'x' * padding}-->\n" if padding else "")
           + f"<!DOCTYPE worksheet [{entities}]>"
           + '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
           + '<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>sku</t></is></c>'
           + '<c r="B1" t="inlineStr"><is><t>quantity</t></is></c></row><row r="2">'
           + '<c r="A2" t="inlineStr"><is><t>&lol9;</t></is></c><c r="B2"><v>1</v></c></row>'
           + "</sheetData></worksheet>")

    def write(fh: IO[bytes]) -> None:
        fh.write(doc.encode())
    return write


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    files: dict[str, Path] = {}
    # 1.5 GiB of one byte in the sheet part, about 7 MiB packed.
    files["xlsx-zip-bomb"] = write_workbook(d / "bomb.xlsx", one_huge_cell(1536))
    # The same bomb, its headers claiming the sheet unpacks to 1 MiB.
    files["xlsx-zip-bomb-understated-size"] = understate_size(
        files["xlsx-zip-bomb"], d / "bomb-understated.xlsx", _SHEET, 1 << 20)
    # 300 MiB (under the 1 GiB cap) plus 1 MiB of noise: the archive's overall ratio is ~130.
    files["xlsx-zip-bomb-under-the-caps"] = write_workbook(
        d / "bomb-padded.xlsx", one_huge_cell(300),
        {"docProps/thumbnail.jpeg": random.Random(0).randbytes(1 << 20)})
    files["xlsx-billion-laughs"] = write_workbook(d / "laughs.xlsx", billion_laughs(0))
    files["xlsx-billion-laughs-after-4k-comment"] = write_workbook(
        d / "laughs-late.xlsx", billion_laughs(5000))
    with (d / "big-field.csv").open("w") as fh:
        fh.write("sku,location_id,quantity\nA-1,1,")
        fh.write("9" * (10 << 20))
        fh.write("\nA-2,1,5\n")
    files["csv-10mb-field"] = d / "big-field.csv"
    with (d / "million-columns.csv").open("w") as fh:
        fh.write(",".join(f"c{i}" for i in range(1_000_000)) + "\n")
        fh.write(",".join("1" for _ in range(1_000_000)) + "\n")
    files["csv-million-columns"] = d / "million-columns.csv"
    with (d / "million-fields-row.csv").open("w") as fh:
        fh.write("sku,location_id,quantity\nA-1,1,5\n" + "1," * 999_999 + "1\n")
    files["csv-million-fields-in-a-row"] = d / "million-fields-row.csv"
    # 300,000 cells naming one 9,999-character shared string: 3 GB of text from ~1.5 MB.
    files["xlsx-shared-string-bomb"] = write_workbook(
        d / "sst-bomb.xlsx", shared_string_cells(300_000),
        {"xl/sharedStrings.xml": one_shared_string(9_999)})
    # A quoted header cell holding a newline hid 600,000 columns from a first-line count.
    with (d / "quoted-newline-header.csv").open("w") as fh:
        fh.write('"sku\n",quantity,' + ",".join(f"c{i}" for i in range(600_000)) + "\n")
        fh.write("A-1,5," + ",".join("1" for _ in range(600_000)) + "\n")
    files["csv-columns-behind-a-quoted-newline"] = d / "quoted-newline-header.csv"
    files["xlsx-that-is-csv"] = d / "text.xlsx"
    files["xlsx-that-is-csv"].write_text("sku,location_id,quantity\nA-1,1,5\n")
    wb = openpyxl.Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["sku", "location_id", "quantity"])
    ws.append(["A-1", 1, 5])
    wb.save(d / "workbook.xlsx")
    files["csv-that-is-xlsx"] = shutil.copy(d / "workbook.xlsx", d / "workbook.csv")
    files["binary"] = d / "blob.csv"
    files["binary"].write_bytes(random.Random(1).randbytes(1 << 20))
    files["binary-without-nul-bytes"] = d / "blob2.csv"
    files["binary-without-nul-bytes"].write_bytes(
        bytes(b for b in random.Random(2).randbytes(1 << 20) if b))
    return files


@pytest.fixture(scope="module")
def idle_store(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[SandboxProcess, dict[str, str]]]:
    with run_sandbox(SAMPLE / "catalog.csv", token=TOKEN) as sb:
        yield sb, env_for(sb, tmp_path_factory.mktemp("hostile-state"))


HOSTILE = {
    "xlsx-zip-bomb": "zip bomb",
    "xlsx-zip-bomb-understated-size": "",
    "xlsx-zip-bomb-under-the-caps": "",
    "xlsx-billion-laughs": "DTD",
    "xlsx-billion-laughs-after-4k-comment": "",
    "csv-10mb-field": "10,485,760 characters",
    "csv-million-columns": "more than 1,000 columns",
    "xlsx-shared-string-bomb": "expand to more than 67,108,864 characters",
    "csv-columns-behind-a-quoted-newline": "more than 1,000 columns",
    "xls-that-panics-the-reader": "the workbook is damaged",
    "xlsx-that-is-csv": "not an Excel workbook",
    "csv-that-is-xlsx": "it is an Excel workbook",
    "binary": "binary file",
    "binary-without-nul-bytes": "",
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_file_fails_fast_with_bounded_memory(
    kind: str, hostile_files: dict[str, Path], idle_store: tuple[SandboxProcess, dict[str, str]]
) -> None:
    sb, env = idle_store
    if kind == "xls-that-panics-the-reader":
        # calamine panics on it (a PanicException, which is no Exception).
        path = CORPUS / "xl" / "cal_ptgexp-truncated-operand.xls"
        if not path.exists():
            pytest.skip(f"{path} is absent")
    else:
        path = hostile_files[kind]
    mark = log_mark(sb)

    run = run_measured(["sync", str(path)], env)

    assert run.guard is None, f"{kind}: {run.guard}, {run.output[-500:]}"
    assert run.returncode == 65, (kind, run.returncode, run.output[-2000:])
    assert run.seconds < TIME_LIMIT_S, (kind, run.seconds)
    assert run.peak_rss < MAX_RSS, f"{kind}: peak RSS {run.peak_rss >> 20} MiB"
    assert f"error: {path}: " in run.output, run.output
    assert HOSTILE[kind] in run.output, run.output
    # Nothing of the file reaches the store: the locations read alone may have gone out
    # while the file was read (a run asks for them meanwhile).
    assert all(r["method"] == "GET" and r["path"].endswith("/inventory/locations")
               for r in sb.requests()[mark:]), "a hostile file must not reach the store"
    assert "Traceback" not in run.output, run.output
    assert "panicked" not in run.output, run.output  # Rust's own panic message is held back


def test_a_row_of_a_million_fields_is_one_unreadable_row_not_a_lost_file(
    hostile_files: dict[str, Path], idle_store: tuple[SandboxProcess, dict[str, str]]
) -> None:
    """One bad row never sinks a file: the ragged row is rejected, the good one is sent,
    within the same time and memory bounds as the hostile files."""
    sb, env = idle_store
    mark = log_mark(sb)
    run = run_measured(["sync", str(hostile_files["csv-million-fields-in-a-row"])], env)
    assert run.guard is None, run.guard
    assert run.returncode == 1, (run.returncode, run.output[-2000:])
    assert run.seconds < TIME_LIMIT_S, run.seconds
    assert run.peak_rss < MAX_RSS, f"peak RSS {run.peak_rss >> 20} MiB"
    assert "Traceback" not in run.output, run.output
    items = [it for r in sb.requests()[mark:] if r["method"] == "PUT" for it in r["items"]]
    assert items == [{"location_id": 1, "sku": "A-1", "quantity": 5}], items


def test_crafted_sheet_xml_is_scanned_in_linear_time(
    tmp_path: Path, idle_store: tuple[SandboxProcess, dict[str, str]]
) -> None:
    """120 KB of sheet XML took the old regex over 20 s; a streaming XML parser, no time."""
    _, env = idle_store
    path = write_workbook(tmp_path / "trap.xlsx", regex_trap(12_000))

    run = run_measured(["sync", "--dry-run", str(path)], env)

    assert run.guard is None, run.guard
    assert run.seconds < TIME_LIMIT_S, run.seconds
    assert run.peak_rss < MAX_RSS, f"peak RSS {run.peak_rss >> 20} MiB"
    assert run.returncode == 0, run.output[-2000:]
    # The scan still finds what it is for: the SKU cell stored as a number.
    assert "identifier cell(s) are stored as numbers" in run.output, run.output


def test_duplicate_groups_keep_memory_and_reports_linear(
    tmp_path: Path, idle_store: tuple[SandboxProcess, dict[str, str]]
) -> None:
    """5,000 rows of one SKU once took 955 MiB and wrote 435 MB of reports."""
    sb, env = idle_store
    path = tmp_path / "one-sku.csv"
    path.write_text("sku,location_id,quantity\n" + "SKU-1,1,5\n" * 5_000)
    mark = log_mark(sb)

    run = run_measured(["sync", str(path)], env)

    assert run.guard is None, run.guard
    assert run.returncode == 1, run.output[-2000:]  # every row rejected as duplicate_item
    assert run.seconds < TIME_LIMIT_S, run.seconds
    assert run.peak_rss < MAX_RSS, f"peak RSS {run.peak_rss >> 20} MiB"
    folder = Path(re.findall(r"^report: (.+)$", run.output, re.M)[-1].strip())
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 20 << 20, f"reports of {size >> 20} MiB for a 50 KB file"
    assert sb.requests()[mark:] == [] or all(
        r["method"] == "GET" for r in sb.requests()[mark:])


def test_workbook_just_under_the_cell_text_budget_is_read_in_bounded_memory(
    tmp_path: Path, idle_store: tuple[SandboxProcess, dict[str, str]]
) -> None:
    """6,500 cells naming one 9,999-character string (65 M characters, under the budget):
    read and every row rejected, well under 600 MB (validation once copied every long cell
    into pandera's failure cases: 1.1 GB)."""
    _, env = idle_store
    path = write_workbook(tmp_path / "under.xlsx", shared_string_cells(6_500),
                          {"xl/sharedStrings.xml": one_shared_string(9_999)})

    run = run_measured(["sync", "--dry-run", str(path)], env)

    assert run.guard is None, run.guard
    assert run.returncode == 1, run.output[-2000:]  # no quantities: every row rejected
    assert "6,500 rows: 6,500 need fixing (see rejected.xlsx)" in run.output, \
        run.output[-2000:]
    assert run.peak_rss < MAX_RSS, f"peak RSS {run.peak_rss >> 20} MiB"



def test_kill_9_once_a_group_of_batches_is_journaled_at_concurrency_8(
        kill_world: KillWorld, children: list[subprocess.Popen[bytes]]) -> None:
    """The first batches of a --concurrency run are journaled together (one fsync) and sent
    together: killed right then, the next run resends every one of them (the store may
    have applied some) and nothing else twice."""
    w = kill_world
    _old, new, _old_file, new_file = w.files(random.Random(808))
    args = ["sync", str(new_file), "--batch-size", str(KILL_BATCH), "--concurrency", "8"]
    journal_path = w.store_dir / "journal.jsonl"
    log = w.tmp / "killed-group.log"
    proc = spawn(args, w.env, log, children)

    def group_out() -> bool:
        try:
            text = journal_path.read_text(encoding="utf-8")
        except OSError:
            return False
        return text.count('"type":"sending"') >= 3 and '"confirmed"' not in text

    assert kill_when(group_out, proc, log) == -signal.SIGKILL
    killed_puts = [r for r in settle(w.sb) if r["method"] == "PUT"]
    journal = read_journal(journal_path)
    in_flight = set(item_keys([r for r in killed_puts if r["applied"]
                               and r["transaction_id"] not in journal.transaction_ids]))
    mark = log_mark(w.sb)
    result = run_invsync(args, w.env, timeout=120)
    assert result.returncode == 0, output(result)
    assert w.sb.levels() == new
    assert snapshot_levels(w.state_home) == new
    assert not journal_path.exists()
    sent = item_keys([r for r in puts_since(w.sb, mark) if r["status"] == 200])
    assert len(sent) == len(set(sent))  # each item once in the run that finished
    # Everything not confirmed is sent, but what a batch in flight at the kill applied
    # (already right in the store, whose levels the run compares with).
    confirmed = set(journal.levels)
    assert set(new) - confirmed - in_flight <= set(sent) <= set(new) - confirmed
    assert w.sb.stats()["item_overlaps"] == 0
