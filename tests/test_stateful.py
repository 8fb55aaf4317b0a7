"""A stateful property test that looks for the next hole by itself (issue 9).

A hypothesis ``RuleBasedStateMachine`` drives one real sandbox process through random
sequences of: syncs of random files (a small catalog, duplicates, zeros, ``--full``,
``--zero-missing``, ``--baseline live``, each duplicate policy), a ``kill -9`` of the CLI
at a random moment, fault changes in the sandbox (``POST /_sandbox/faults``), manual edits
in the store (``POST /_sandbox/levels``), ``resume``, ``drift`` and a mass-zeroing file
that a brake must stop.

The model keeps, for each (location, SKU), the set of (store level, invsync's belief)
pairs that are possible: after a kill or a failed run, an item the run meant to change may
or may not have been applied, and its belief may be the new level, unknown, or the old
one, until a later successful run settles it. After every step:

- the store holds one of the levels the model allows;
- the snapshot (read from disk with polars) claims for an item only a level the model
  allows as invsync's belief, and, for an item not edited by hand since invsync last
  wrote it, only the level the store really has; a null ``quantity`` is "unknown" and
  always allowed (skipped right after a kill, when the journal, not yet replayed, holds
  the newest confirmed levels);
- no (location, item) was ever in two requests at once (from the request log's timing);
- each run's report.json counts add up as the README documents.

Issue 19 extends it: plans are made against the store by default (a run draws
``--baseline live`` or ``snapshot``), rows rejected under ``--zero-missing`` (a quantity
that is no number), ``--buffer``, ``revert last`` (and its refusal while a killed run is
unfinished), a second profile syncing the same store from the same state dir, a store edit
between ``plan`` and ``sync --plan-file`` (stale: exit 3, nothing sent), and a store whose
reads lag its writes (``apply_lag_ms``).

Issues 19 and 25 (the upload page): an ``invsync serve`` child on 127.0.0.1 (a free port),
on the same sandbox, state dir and report dir, with an API key from ``portal add-key``;
``POST /api/uploads`` must preview exactly the items whose file level differs from the
store's live level (``old`` = that level) and send nothing; ``POST /api/uploads/{id}/apply``
(at once, later with any steps between, or right after an edit or an order moved a planned
item) must send only levels its preview showed, or, when a planned item moved since the
preview, nothing, ending ``stale`` (a stale upload applied again: 409).

Issue 21 (orders): the store holds stock at location 1 before the first run; orders are
placed (``POST /_sandbox/orders`` with an explicit ``date_created`` on a made-up clock in
the past, whole seconds, strictly increasing across the whole test, since the sandbox keeps
orders across examples; a 409 means none was placed) and cancelled (the units come back);
``sync --as-of`` (at an order's second, one either side, or the example's start) and a
nightly rule (counts at the as-of time, orders during the night, then the sync). The store
level at location 1 drops by an order's quantity when it is placed (``order_placed``); the
model predicts max(file − units of the orders at or after the as-of that still hold units,
0) at location 1 and the file's level at location 2.

Budget: ``INVSYNC_STATEFUL_EXAMPLES`` (default 6) sequences of at most
``INVSYNC_STATEFUL_STEPS`` (default 12) steps; ``make soak`` raises both. The default
budget is derandomized (the same sequences every run: issue 20) and does not shrink (the
failure and its story are reported as found); a budget from the environment explores new
ones and shrinks. ``INVSYNC_STATEFUL_STORY=1`` (with ``pytest -s``) prints each sequence's
steps, to see what a budget reaches.

Switches for known defects of issue 9 (fixed in other branches): with a switch ``True``
the strategy avoids the hole so the default run passes here; flip it to ``False`` once
the fix is merged and the machine then checks that case too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from conftest import ROOT, TOKEN, env_for, output, quiet_log, retry_config, wait_for, write_csv
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from invsync.sandbox.process import Listening, SandboxProcess, run_sandbox, wait_for_listening

# Issue 9 #1 (--full skipped the brakes) and #2 (unconfirmed items were forgotten) were
# found by this machine; both are fixed, so its strategies use --full and --zero-missing
# freely (they were held back by switches until the fixes landed).

# ---- the world ----------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("INVSYNC_STATEFUL_EXAMPLES", "6"))
STEPS = int(os.environ.get("INVSYNC_STATEFUL_STEPS", "12"))
EXPLORE = "INVSYNC_STATEFUL_EXAMPLES" in os.environ
"""A budget from the environment (``make soak``) explores new sequences and shrinks."""
SKUS = [f"ST-{i}" for i in range(6)]
LOCATIONS = (1, 2)
QUANTITIES = st.sampled_from([0, 0, 1, 2, 5, 7, 40])
ROW_QUANTITIES = st.one_of(QUANTITIES, st.just(None))
"""A row's quantity; None is written as text that is no number (a rejected row)."""
Key = tuple[int, str]
KEYS: list[Key] = [(loc, sku) for loc in LOCATIONS for sku in SKUS]
ORDER_LOCATION = 1
"""BigCommerce takes a storefront order's units from the default location (docs/orders.md)."""
CLOCK_START = timedelta(hours=40)
"""The orders' made-up clock starts this long before the test (within ``max_as_of_age``)."""


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


UNKNOWN: Any = _Unknown()
"""invsync knows the item exists but not its level (sent, answer never seen)."""
ABSENT: Any = _Absent()
"""invsync has never recorded the item."""
Pair = tuple[int, Any]
"""(store level, invsync's belief: a level, UNKNOWN or ABSENT)"""


@dataclass(frozen=True)
class Run:
    """One sync: its rows, as written, and its options."""

    rows: tuple[tuple[str, int, int | None], ...]  # (sku, location, qty): dups, None = bad
    kinds: tuple[str, ...] = ()
    """How each row names its item (``sku``, ``variant_id``, ``product_id``; sku if absent):
    one item named two ways in one file is still one item (issue 9 #5)."""
    duplicates: str = "reject"
    full: bool = False
    zero_missing: bool = False
    live: bool = False
    batch_size: int = 2000
    concurrency: int = 4
    buffer: int = 0
    as_of: str | None = None
    """``--as-of`` (ISO 8601 on the orders' clock), or None."""
    sold: tuple[tuple[str, int], ...] = ()
    """Units of the orders at or after ``as_of`` that still hold units, per SKU (location 1)."""

    def effective(self) -> tuple[dict[Key, int], set[Key]]:
        """The levels the file asks for after the buffer (clamped at 0) and the duplicate
        policy, and the keys with a rejected row."""
        groups: dict[Key, list[int | None]] = {}
        for sku, loc, qty in self.rows:
            groups.setdefault((loc, sku), []).append(
                None if qty is None else max(qty - self.buffer, 0))
        wanted: dict[Key, int] = {}
        rejected: set[Key] = set()
        for key, qtys in groups.items():
            good = [q for q in qtys if q is not None]
            if len(qtys) > 1 and self.duplicates == "reject":
                rejected.add(key)
                continue
            if len(good) < len(qtys):
                rejected.add(key)
            if good:
                wanted[key] = sum(good) if self.duplicates == "sum" else good[-1]
        sold = dict(self.sold)
        for key, q in wanted.items():  # the file's level for the item, less what sold since
            if self.as_of is not None and key[0] == ORDER_LOCATION:
                wanted[key] = max(q - sold.get(key[1], 0), 0)
        return wanted, rejected

    def resends(self, key: Key) -> bool:
        """An item sold since the as-of time is sent even when the snapshot says it holds
        the level (the orders moved the store since)."""
        return self.as_of is not None and key[0] == ORDER_LOCATION \
            and dict(self.sold).get(key[1], 0) > 0

    def args(self, path: Path) -> list[str]:
        args = ["sync", str(path), "--duplicates", self.duplicates, "--batch-size",
                str(self.batch_size), "--concurrency", str(self.concurrency)]
        args += ["--full"] * self.full + ["--zero-missing"] * self.zero_missing
        args += ["--buffer", str(self.buffer)] if self.buffer else []
        args += ["--as-of", self.as_of] if self.as_of else []
        return [*args, "--baseline", "live" if self.live else "snapshot"]


def runs(*, zero_missing: bool) -> st.SearchStrategy[Run]:
    """Random syncs; ``zero_missing`` False masks the flag (the same data is drawn either way,
    so that a sequence replays even when a kill's timing changed what the switch allows)."""
    return st.builds(
        Run,
        rows=st.lists(st.tuples(st.sampled_from(SKUS), st.sampled_from(LOCATIONS),
                                ROW_QUANTITIES), min_size=1, max_size=14).map(tuple),
        # The catalog's items are tracked by product: the store takes them by SKU or product
        # id (a variant id of such an item is refused, as BigCommerce does).
        kinds=st.lists(st.sampled_from(["sku", "sku", "product_id"]),
                       min_size=14, max_size=14).map(tuple),
        duplicates=st.sampled_from(["reject", "sum", "last"]),
        full=st.booleans(),
        zero_missing=st.booleans().map(lambda z: z and zero_missing),
        live=st.booleans(),
        batch_size=st.integers(1, 5),
        concurrency=st.integers(1, 3),
        buffer=st.sampled_from([0, 0, 2]),
    )


FAULTS = st.fixed_dictionaries({
    "error_rate": st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    "bare_429_rate": st.sampled_from([0.0, 0.0, 0.1]),
    "drop_rate": st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    "latency_ms": st.sampled_from([0, 20, 100, 300]),
})


# ---- reading the world back ------------------------------------------------------------------


def store_levels(sb: SandboxProcess) -> dict[Key, int]:
    levels = {key: 0 for key in KEYS}
    levels.update(sb.levels())
    return levels


def read_snapshot(state_dir: Path) -> dict[Key, int | None]:
    """The snapshot on disk, wherever under the state dir it is kept; null = unknown."""
    # The default profile's snapshot (a second profile keeps its own under profile-*).
    paths = [p for p in state_dir.rglob("snapshot.parquet")
             if not p.parent.name.startswith("profile-")]
    assert len(paths) <= 1, paths
    if not paths:
        return {}
    frame = pl.read_parquet(paths[0])
    out: dict[Key, int | None] = {}
    # Keys are canonical (the SKU) once a run met two kinds of identifier; a snapshot made
    # only from files naming items by id keeps those ids until then. One entry per item.
    for loc, kind, key, qty in frame.select("location_id", "identifier", "item_key",
                                            "quantity").iter_rows():
        sku = item_sku({kind: key})
        assert sku is not None, (kind, key)
        assert (int(loc), sku) not in out, f"snapshot names {sku} twice at {loc}: {frame}"
        out[(int(loc), sku)] = None if qty is None else int(qty)
    return out


VARIANT_IDS = {900 + i: sku for i, sku in enumerate(SKUS)}
PRODUCT_IDS = {500 + i: sku for i, sku in enumerate(SKUS)}


def item_sku(item: dict[str, Any]) -> str | None:
    """The SKU of a request item, however it names the item."""
    if item.get("sku") is not None:
        return str(item["sku"])
    if item.get("variant_id") is not None:
        return VARIANT_IDS.get(int(item["variant_id"]))
    if item.get("product_id") is not None:
        return PRODUCT_IDS.get(int(item["product_id"]))
    return None


def named(sku: str, kind: str) -> list[str]:
    """The identifier cells (sku, variant_id, product_id) of a row naming ``sku`` as ``kind``."""
    i = SKUS.index(sku)
    return {"sku": [sku, "", ""], "variant_id": ["", str(900 + i), ""],
            "product_id": ["", "", str(500 + i)]}[kind]


def overlapping_items(log: list[dict[str, Any]]) -> list[tuple[int, int, Key]]:
    """Pairs of PUTs whose handling overlapped in time and that share a (location, item)."""
    puts = sorted((r for r in log if r["method"] == "PUT" and r["items"]),
                  key=lambda r: r["started"])
    found = []
    for i, a in enumerate(puts):
        a_keys = {(it.get("location_id"), item_sku(it)) for it in a["items"]}
        for b in puts[i + 1:]:
            if b["started"] >= a["finished"]:
                break
            for it in b["items"]:
                key = (it.get("location_id"), item_sku(it))
                if key in a_keys:
                    found.append((a["seq"], b["seq"], key))
    return found


def check_counts(report: dict[str, Any]) -> None:
    """The identities the README promises for report.json's counts."""
    c = report["counts"]
    assert c["rows"] == c["valid"] + c["invalid"], c
    assert c["valid"] - c["merged"] == c["unchanged"] + c["changed"], c
    assert c["changed"] + c["zeroed_missing"] == c["submitted"] + c["not_sent"], c
    assert c["submitted"] == c["accepted"] + c["refused"] + c["unconfirmed"], c
    assert c["rejected"] == c["invalid"] + c["refused"], c


def report_of(output: str) -> dict[str, Any] | None:
    for line in reversed(output.splitlines()):
        if line.startswith("report: "):
            folder = Path(line.removeprefix("report: ").strip())
            return dict(json.loads((folder / "report.json").read_text()))
    return None


# ---- the machine ----------------------------------------------------------------------------


@dataclass
class World:
    sb: SandboxProcess
    tmp: Path
    examples: int = 0
    children: list[subprocess.Popen[Any]] = field(default_factory=list)
    base: datetime = field(default_factory=lambda: (datetime.now(UTC) - CLOCK_START)
                           .replace(microsecond=0))
    """The orders' clock's zero; the sandbox keeps every order across examples, so the clock
    only moves on (``clock``: seconds since ``base``), and each example's as-of times come
    after every earlier example's orders."""
    clock: int = 0


@dataclass
class Order:
    """One order the machine placed: one line (an SKU at location 1)."""

    id: int
    sku: str
    quantity: int
    at: int
    """``date_created``, in seconds on the orders' clock."""
    cancelled: bool = False


@dataclass
class Upload:
    """One upload previewed through the JSON API."""

    id: str
    run: Run
    planned: dict[Key, tuple[int, int]]
    """key -> (the store's level the preview read, the level it would set)."""
    status: str = "planned"


class InvsyncMachine(RuleBasedStateMachine):
    """Random runs, kills, faults and edits against one sandbox; the model must hold."""

    world: World

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        w.examples += 1
        self.dir = w.tmp / f"example-{w.examples}"
        self.state_dir = self.dir / "state"
        self.report_dir = self.dir / "runs"
        self.dir.mkdir(parents=True)
        httpx.post(w.sb.url + "/_sandbox/reset?levels=1", timeout=30).raise_for_status()
        self.set_faults({"error_rate": 0.0, "bare_429_rate": 0.0, "drop_rate": 0.0,
                         "latency_ms": 0})
        self.env = env_for(w.sb, self.dir)
        self.config = retry_config(self.dir, max_attempts=10, max_delay_s=0.2,
                                   max_total_s=20.0)
        self.pairs: dict[Key, set[Pair]] = {key: {(0, ABSENT)} for key in KEYS}
        self.edited: set[Key] = set()
        self.by_path: dict[str, Run] = {}
        self.journal_pending = False
        self.last_write: dict[Key, tuple[int | None, int]] | None = {}
        """What the last run that wrote set: key -> (before, after); None: unsure."""
        self.other = self.dir / "profiles.toml"
        self.other.write_text(self.config.read_text() + "\n[profiles.other]\n"
                              "reason = \"the other profile\"\n")
        self.files = 0
        self.history: list[str] = []
        w.clock += 1  # earlier examples' orders are all before this one's as-of times
        self.clock_start = w.clock
        self.orders: list[Order] = []
        self.server: Listening | None = None
        self.api_key = ""
        self.uploads: list[Upload] = []

    # -- helpers --

    def log(self, line: str) -> None:
        """One line of this sequence's story, shown with any failure (kills are timing-
        dependent, so hypothesis may not be able to replay a failing sequence)."""
        self.history.append(line)

    def story(self) -> str:
        return "\nsteps so far:\n  " + "\n  ".join(self.history)

    def set_faults(self, faults: dict[str, Any]) -> None:
        r = httpx.post(self.world.sb.url + "/_sandbox/faults", json=faults, timeout=30)
        r.raise_for_status()
        self.faulty = any(r.json()[k] for k in ("error_rate", "bare_429_rate", "drop_rate"))

    def journals(self) -> dict[str, int]:
        """Each journal file under the state dir and its modification time."""
        out = {}
        for path in self.state_dir.rglob("journal.jsonl"):
            with contextlib.suppress(OSError):  # removed by the run meanwhile
                out[str(path)] = path.stat().st_mtime_ns
        return out

    def common(self) -> list[str]:
        return ["--state-dir", str(self.state_dir), "--report-dir", str(self.report_dir),
                "--config", str(self.config), "--allow-empty", "--allow-shrink"]

    def write(self, run: Run) -> Path:
        self.files += 1
        kinds = list(run.kinds) + ["sku"] * (len(run.rows) - len(run.kinds))
        self.log(f"file-{self.files}.csv rows (sku, location, qty, named by): "
                 f"{[(*r, k) for r, k in zip(run.rows, kinds, strict=False)]}")
        path = write_csv(self.dir / f"file-{self.files}.csv",
                         ["sku", "variant_id", "product_id", "location_id", "quantity"],
                         [[*named(sku, kind), loc, "n/a" if qty is None else qty]
                          for (sku, loc, qty), kind in zip(run.rows, kinds, strict=False)])
        self.by_path[str(path)] = run
        return path

    def cli(self, args: list[str]) -> tuple[int, str]:
        proc = subprocess.run([sys.executable, "-m", "invsync", *args], env=self.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=180)
        self.log(f"invsync {' '.join(args[:1] + args[2:])} -> exit {proc.returncode}")
        return proc.returncode, output(proc)

    def may_be_unknown(self) -> bool:
        return any(b is UNKNOWN for pairs in self.pairs.values() for _, b in pairs)

    @staticmethod
    def decide(run: Run, key: Key, s: int, b: Any) -> tuple[bool, int, int | None]:
        """Whether ``run`` sends ``key`` (store level ``s``, belief ``b``), the level it
        sets, and the ``before`` its plan records (None: none, so revert leaves it)."""
        wanted, rejected = run.effective()
        covered = {loc for loc, _ in wanted}
        before = s if run.live else (b if isinstance(b, int) and not run.full else None)
        if key in wanted:
            q = wanted[key]
            return run.full or (s != q if run.live else b != q or run.resends(key)), q, before
        if (run.zero_missing and key not in rejected and key[0] in covered
                and b is not ABSENT and (s != 0 if run.live else b != 0)):
            return True, 0, (s if run.live else (b if isinstance(b, int) else None))
        return False, s, None

    def writes(self, run: Run) -> dict[Key, tuple[int | None, int]] | None:
        """What ``run`` (about to settle) wrote: key -> (its plan's before, after); None
        when the model is unsure of some level (then ``revert last`` is not checked)."""
        if any(len(p) != 1 for p in self.pairs.values()):
            return None
        out = {}
        for key, pairs in self.pairs.items():
            s, b = next(iter(pairs))
            send, q, before = self.decide(run, key, s, b)
            if send:
                out[key] = (before, q)
        return out

    def outcome(self, run: Run, *, settled: bool) -> dict[Key, set[Pair]]:
        """The pairs after ``run``: settled (it succeeded) or not (killed, or it failed)."""
        new: dict[Key, set[Pair]] = {}
        for key, pairs in self.pairs.items():
            out: set[Pair] = set()
            for s, b in pairs:
                send, q, _ = self.decide(run, key, s, b)
                if not send and settled and run.live and b is UNKNOWN \
                        and key in run.effective()[0]:
                    out.add((s, s))  # read live at the file's level: known now
                elif not send:
                    out.add((s, b))
                elif settled:
                    out.add((q, q))
                else:  # confirmed, in flight (applied or not), or never sent
                    out |= {(q, q), (q, UNKNOWN), (s, UNKNOWN), (s, b)}
            new[key] = out
        return new

    def settle_after(self, run: Run, code: int, output: str) -> None:
        """Check one finished sync's exit code and report; move the model on."""
        _, rejected = run.effective()
        assert code in (0, 1, 2), (code, output + self.story())
        report = report_of(output)
        assert report is not None, output + self.story()
        check_counts(report)
        if code == 2:
            assert self.faulty, f"a run failed against a store without faults:\n{output}"
            self.pairs = self.outcome(run, settled=False)
            self.last_write = None
            return
        assert code == (1 if rejected else 0), (code, rejected, output + self.story())
        assert report["counts"]["unconfirmed"] == report["counts"]["not_sent"] == 0, output
        if report["counts"]["accepted"]:
            self.last_write = self.writes(run)
        self.pairs = self.outcome(run, settled=True)
        for key, pairs in self.pairs.items():
            if all(s == b for s, b in pairs):  # invsync wrote it since the edit
                self.edited.discard(key)
        self.journal_pending = False

    # -- rules --

    @initialize(stock=st.lists(QUANTITIES, min_size=len(SKUS), max_size=len(SKUS)))
    def start(self, stock: list[int]) -> None:
        """The store already holds stock at location 1 (set in its control panel before
        invsync ever ran), so that orders can sell from the first step."""
        assert store_levels(self.world.sb) == dict.fromkeys(KEYS, 0)
        edits = [{"location_id": ORDER_LOCATION, "sku": sku, "quantity": q}
                 for sku, q in zip(SKUS, stock, strict=True) if q]
        if edits:
            httpx.post(self.world.sb.url + "/_sandbox/levels", json=edits,
                       timeout=30).raise_for_status()
        self.log(f"stock before invsync at location 1: {stock}")
        for sku, q in zip(SKUS, stock, strict=True):
            if q:
                self.pairs[(ORDER_LOCATION, sku)] = {(q, ABSENT)}
                self.edited.add((ORDER_LOCATION, sku))

    @rule(data=st.data())
    def sync(self, data: st.DataObject) -> None:
        run = self.with_as_of(data, data.draw(runs(zero_missing=True)))
        path = self.write(run)
        code, output = self.cli([*run.args(path), *self.common(), "--allow-zeroing"])
        self.settle_after(run, code, output)

    @rule(data=st.data())
    def restock(self, data: st.DataObject) -> None:
        """Every item at every location above 0 (makes the mass-zeroing rule reachable)."""
        rows = tuple((sku, loc, data.draw(st.integers(1, 40))) for loc, sku in KEYS)
        run = Run(rows=rows, full=data.draw(st.booleans()), live=data.draw(st.booleans()),
                  batch_size=data.draw(st.integers(1, 12)))
        code, output = self.cli([*run.args(self.write(run)), *self.common(), "--allow-zeroing"])
        self.settle_after(run, code, output)

    @rule(data=st.data(), latency=st.sampled_from([0, 100, 300]),
          once_sending=st.booleans(), delay=st.floats(0.0, 1.5))
    def killed_sync(self, data: st.DataObject, latency: int, once_sending: bool,
                    delay: float) -> None:
        """kill -9 the CLI ``delay`` s after its start, or after it began its journal."""
        run = data.draw(runs(zero_missing=True))
        path = self.write(run)
        before = httpx.get(self.world.sb.url + "/_sandbox/faults", timeout=30).json()
        if latency:  # a slow store, so that a kill often lands with writes in flight
            self.set_faults({"latency_ms": latency})
        log = self.dir / f"killed-{self.files}.log"
        journal_before = self.journals()
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "invsync", *run.args(path), *self.common(),
                 "--allow-zeroing"], env=self.env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        self.world.children.append(proc)
        if once_sending:  # until its journal began (or it ended); then the delay runs
            wait_for(lambda: proc.poll() is not None or any(
                journal_before.get(k) != v for k, v in self.journals().items()),
                timeout=30, every=0.005, give_up=True)
        try:
            code = proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            code = proc.wait(timeout=30)
        quiet_log(self.world.sb)
        if latency:
            self.set_faults({"latency_ms": before["latency_ms"]})
        self.log(f"sync file-{self.files}.csv {run.args(path)[2:]} latency {latency} ms, "
                 f"{'killed' if code == -signal.SIGKILL else f'finished first: exit {code}'}"
                 f" ({'after the journal began' if once_sending else 'after'} +{delay:.2f} s)")
        if code == -signal.SIGKILL:
            self.pairs = self.outcome(run, settled=False)
            self.journal_pending = True
            self.last_write = None
        else:  # it finished first
            self.settle_after(run, code, log.read_text(errors="replace"))

    @rule()
    def resume(self) -> None:
        # The run to finish is the one whose journal is on disk: a later run killed before
        # it replayed that journal leaves it there.
        journals = list(self.state_dir.rglob("journal.jsonl"))
        interrupted = None
        if journals:
            try:
                head = json.loads(journals[0].read_text(encoding="utf-8").split("\n", 1)[0])
            except ValueError:
                head = {}
            interrupted = self.by_path.get(str(head.get("input")))
        code, output = self.cli(["resume", "--state-dir", str(self.state_dir),
                                 "--report-dir", str(self.report_dir),
                                 "--config", str(self.config)])
        if code == 64:  # nothing to resume: no journal (or the kill came before sending)
            assert "nothing to resume" in output and interrupted is None, output + self.story()
            return
        assert interrupted is not None, f"resumed a run the model never saw:\n{output}"
        self.settle_after(interrupted, code, output)

    @rule(faults=FAULTS)
    def change_faults(self, faults: dict[str, Any]) -> None:
        self.log(f"faults {faults}")
        self.set_faults(faults)

    @rule(key=st.sampled_from(KEYS), qty=QUANTITIES)
    def manual_edit(self, key: Key, qty: int) -> None:
        r = httpx.post(self.world.sb.url + "/_sandbox/levels",
                       json={"location_id": key[0], "sku": key[1], "quantity": qty}, timeout=30)
        r.raise_for_status()
        self.log(f"manual edit {key} = {qty}")
        self.pairs[key] = {(qty, b) for _, b in self.pairs[key]}
        self.edited.add(key)

    @rule()
    def drift(self) -> None:
        code, output = self.cli(["drift", "--state-dir", str(self.state_dir),
                                 "--config", str(self.config)])
        assert code in (0, 1, 2), (code, output + self.story())
        assert code != 2 or self.faulty, output + self.story()
        if code == 2 or self.journal_pending:
            return  # faults, or a journal not replayed yet: either answer is fair
        certain = [next(iter(p)) for p in self.pairs.values() if len(p) == 1]
        if all(len(p) == 1 for p in self.pairs.values()):
            differs = any(isinstance(b, int) and s != b for s, b in certain)
            assert code == (1 if differs else 0), (code, self.pairs, output + self.story())

    @rule(full=st.booleans(), live=st.booleans())
    def mass_zeroing_is_braked(self, full: bool, live: bool) -> None:
        """Every item at location 1, which the store and the snapshot hold above 0, to 0."""
        # Checked here, not as a precondition: after kills the state is timing-dependent and
        # a precondition would make hypothesis's replays draw differently.
        if not all(len(self.pairs[(1, sku)]) == 1 and all(
                s > 0 and isinstance(b, int) and b > 0 for s, b in self.pairs[(1, sku)])
                for sku in SKUS):
            self.log("mass_zeroing: skipped (location 1 not all known above 0)")
            return
        run = Run(rows=tuple((sku, 1, 0) for sku in SKUS), full=full, live=live)
        mark = len(quiet_log(self.world.sb))
        code, output = self.cli([*run.args(self.write(run)), *self.common()])
        if code == 2:  # the store failed before the brakes were judged (faults)
            assert self.faulty, output + self.story()
            puts = [r for r in quiet_log(self.world.sb)[mark:] if r["method"] == "PUT"]
            assert not puts, output + self.story()
            return
        assert code == 3, (code, output + self.story())
        report = report_of(output)
        assert report is not None and report["brakes"], output + self.story()
        check_counts(report)
        puts = [r for r in quiet_log(self.world.sb)[mark:] if r["method"] == "PUT"]
        assert not puts, f"a braked run sent {len(puts)} PUT(s){self.story()}"
        self.journal_pending = False

    @rule()
    def revert_last(self) -> None:
        """``revert last``: what the last run that wrote replaced comes back, only where
        the store still holds that run's level; refused while a killed run is unfinished."""
        journal = bool(list(self.state_dir.rglob("journal.jsonl")))
        if not journal and (self.last_write is None or self.faulty):
            self.log("revert last: skipped (the model is unsure what the last run did)")
            return
        mark = len(quiet_log(self.world.sb))
        code, output = self.cli(["revert", "last", "--state-dir", str(self.state_dir),
                                 "--report-dir", str(self.report_dir),
                                 "--config", str(self.config)])
        if journal:
            assert code == 64 and "resume" in output, (code, output + self.story())
            puts = [r for r in quiet_log(self.world.sb)[mark:] if r["method"] == "PUT"]
            assert not puts, output + self.story()
            return
        assert self.last_write is not None
        if not self.last_write and "no run under" in output:
            assert code == 64, output + self.story()
            return
        back = {k: before for k, (before, after) in self.last_write.items()
                if before is not None and next(iter(self.pairs[k]))[0] == after}
        moved = [k for k, (before, after) in self.last_write.items()
                 if before is not None and next(iter(self.pairs[k]))[0] != after]
        if code == 3:  # the brakes: reverting to 0 most of a location's stock
            assert 0 in back.values(), output + self.story()
            return
        assert code == (1 if moved and not back else 0), (code, back, moved,
                                                          output + self.story())
        for key, before in back.items():
            self.pairs[key] = {(before, before)}
            self.edited.discard(key)
        if back:
            self.last_write = {k: (self.last_write[k][1], b) for k, b in back.items()}

    @rule(data=st.data())
    def other_profile_sync(self, data: st.DataObject) -> None:
        """A second profile syncs the same store from the same state dir (live baseline):
        to this profile's snapshot, its writes are edits made behind its back."""
        run = replace(data.draw(runs(zero_missing=False)), live=True, full=False)
        path = self.write(run)
        code, output = self.cli([*run.args(path), "--state-dir", str(self.state_dir),
                                 "--report-dir", str(self.report_dir), "--config",
                                 str(self.other), "--profile", "other", "--allow-empty",
                                 "--allow-zeroing"])
        assert code in (0, 1, 2), (code, output + self.story())
        wanted, rejected = run.effective()
        if code == 2:
            assert self.faulty, output + self.story()
            for key, q in wanted.items():
                self.pairs[key] |= {(q, b) for _, b in self.pairs[key]}
                self.edited.add(key)
            self.last_write = None
            return
        assert code == (1 if rejected else 0), (code, output + self.story())
        for key, q in wanted.items():
            if any(s != q for s, _ in self.pairs[key]):
                self.pairs[key] = {(q, b) for _, b in self.pairs[key]}
                self.edited.add(key)
        report = report_of(output)
        if report is not None and report["counts"]["accepted"]:
            self.last_write = None  # revert last of this profile is not that run

    @rule(data=st.data(), edit=st.booleans(), qty=QUANTITIES)
    def plan_edit_apply(self, data: st.DataObject, edit: bool, qty: int) -> None:
        """``plan`` (live), maybe a store edit of a planned item, then ``sync --plan-file``:
        stale (exit 3, nothing sent) exactly when the edit moved a planned item."""
        if self.faulty or self.journal_pending:
            self.log("plan_edit_apply: skipped (faults or an unfinished run)")
            return
        run = replace(data.draw(runs(zero_missing=False)), live=True, full=False)
        code, output = self.cli(["plan", *run.args(self.write(run))[1:], *self.common()])
        assert code in (0, 1, 3), (code, output + self.story())
        plan = report_of(output)
        if code == 3 or plan is None or not plan["changes"]:
            return
        planned = {(c["location_id"], item_sku({c["identifier"]: c["item"]})): c
                   for c in plan["changes"]}
        moved = False
        if edit:
            key = data.draw(st.sampled_from(sorted(planned, key=str)))
            self.manual_edit(key, qty)
            moved = qty != planned[key]["before"]
        mark = len(quiet_log(self.world.sb))
        code, output = self.cli(["sync", "--plan-file",
                                 str(Path(plan["report_dir"]) / "plan.csv"),
                                 *self.common(), "--allow-zeroing"])
        if moved:
            assert code == 3 and "preview again" in output, (code, output + self.story())
            puts = [r for r in quiet_log(self.world.sb)[mark:] if r["method"] == "PUT"]
            assert not puts, output + self.story()
            return
        assert code == 0, (code, output + self.story())
        report = report_of(output)
        assert report is not None
        check_counts(report)
        writes = {}
        for key, c in planned.items():
            if any(len(p) != 1 for p in self.pairs.values()):
                writes = None
            s = next(iter(self.pairs[key]))[0]
            if writes is not None:
                writes[key] = (c["before"], c["after"])
            assert s == c["before"], (key, s, c, self.story())
            self.pairs[key] = {(c["after"], c["after"])}
            self.edited.discard(key)
        if report["counts"]["accepted"]:
            self.last_write = writes

    @rule(lag=st.sampled_from([0, 0, 200]))
    def read_lag(self, lag: int) -> None:
        """Reads return the old level for ``lag`` ms after a write (BigCommerce documents
        this); each CLI run starts later than that, so the model does not change."""
        self.log(f"read-after-write lag {lag} ms")
        r = httpx.post(self.world.sb.url + "/_sandbox/faults", json={"apply_lag_ms": lag},
                       timeout=30)
        r.raise_for_status()

    # -- orders (issue 21) --

    def at_iso(self, at: int) -> str:
        """A time on the orders' clock as ISO 8601 with an offset, to the second."""
        return (self.world.base + timedelta(seconds=at)).isoformat(timespec="seconds")

    def with_as_of(self, data: st.DataObject, run: Run) -> Run:
        """``run`` with, maybe, an ``--as-of`` at this example's start, at an order's time,
        or a second either side of one; and the units the model says sold since then."""
        pick = data.draw(st.one_of(st.none(), st.tuples(st.integers(0, 99),
                                                         st.sampled_from([0, 0, 1, -1]))))
        if pick is None:
            return run
        times = [self.clock_start] + [o.at for o in self.orders]
        return self.as_of(run, max(times[pick[0] % len(times)] + pick[1], self.clock_start))

    def as_of(self, run: Run, at: int) -> Run:
        """``run`` with ``--as-of`` ``at`` and what the model says sold since then: the
        orders at or after ``at`` (to the second) that still hold their units."""
        sold: dict[str, int] = {}
        for o in self.orders:
            if o.at >= at and not o.cancelled:
                sold[o.sku] = sold.get(o.sku, 0) + o.quantity
        return replace(run, as_of=self.at_iso(at), sold=tuple(sorted(sold.items())))

    @rule(data=st.data(), night=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 4),
                                                    st.integers(1, 90)), max_size=3))
    def nightly(self, data: st.DataObject, night: list[tuple[str, int, int]]) -> None:
        """The warehouse counts every item at the as-of time, the storefront sells during
        the night (the first order maybe in the as-of's own second), then ``sync --as-of``:
        location 1 ends at max(file − sold since, 0), location 2 at the file's level."""
        self.world.clock += 1
        at = self.world.clock
        for i, (sku, qty, gap) in enumerate(night):
            # The storefront sells what is on sale: an item in stock at location 1.
            levels = store_levels(self.world.sb)
            stocked = [s for s in SKUS if levels[(ORDER_LOCATION, s)] > 0] or SKUS
            sku = stocked[SKUS.index(sku) % len(stocked)]
            qty = max(min(qty, levels[(ORDER_LOCATION, sku)]), 1)
            self.place_order(sku, qty, gap - 1 if i == 0 else gap)
        rows = [(sku, ORDER_LOCATION, data.draw(st.integers(0, 9))) for sku in SKUS]
        rows += data.draw(st.lists(st.tuples(st.sampled_from(SKUS), st.just(2), QUANTITIES),
                                   max_size=3, unique_by=lambda r: r[0]))
        run = self.as_of(Run(rows=tuple(rows), duplicates="last", live=data.draw(st.booleans()),
                             full=data.draw(st.booleans())), at)
        self.log(f"nightly: as-of +{at - self.clock_start} s, sold since {dict(run.sold)}")
        code, output = self.cli([*run.args(self.write(run)), *self.common(), "--allow-zeroing"])
        self.settle_after(run, code, output)

    @rule(sell=st.sampled_from([True, True, False]), sku=st.sampled_from(SKUS),
          qty=st.integers(1, 4), gap=st.integers(1, 90), pick=st.integers(0, 99))
    def storefront(self, sell: bool, sku: str, qty: int, gap: int, pick: int) -> None:
        """An order placed, or one cancelled (one rule, so that orders are frequent)."""
        if sell:
            self.place_order(sku, qty, gap)
        else:
            self.cancel_order(pick)

    def place_order(self, sku: str, qty: int, gap: int) -> None:
        """The storefront sells ``qty`` of ``sku``, ``gap`` s after the last order; the store
        (``order_placed``) takes the units off location 1 at once, or answers 409 (not
        enough stock: no order placed)."""
        w = self.world
        w.clock += gap
        r = httpx.post(w.sb.url + "/_sandbox/orders", timeout=30, json={
            "items": [{"sku": sku, "quantity": qty}], "date_created": self.at_iso(w.clock)})
        key = (ORDER_LOCATION, sku)
        self.log(f"order of {qty} {sku} at +{w.clock - self.clock_start} s -> {r.status_code}")
        assert r.status_code in (200, 409), r.text
        if r.status_code == 409:
            short = {(s, b) for s, b in self.pairs[key] if s < qty}
            assert short, f"409 for {qty} {sku}, model {self.pairs[key]}{self.story()}"
            self.pairs[key] = short
            return
        taken = {(s - qty, b) for s, b in self.pairs[key] if s >= qty}
        assert taken, f"sold {qty} {sku}, model {self.pairs[key]}{self.story()}"
        self.pairs[key] = taken
        self.edited.add(key)
        self.orders.append(Order(int(r.json()["id"]), sku, qty, w.clock))

    def cancel_order(self, pick: int) -> None:
        """An order is cancelled: the store gives its units back (the default
        ``refund_order_stock_adjustment``), and it no longer counts as sold."""
        holding = [o for o in self.orders if not o.cancelled]
        if not holding:
            self.log("cancel order: skipped (none holds units)")
            return
        order = holding[pick % len(holding)]
        r = httpx.post(f"{self.world.sb.url}/_sandbox/orders/{order.id}/status",
                       json={"status_id": 5}, timeout=30)
        assert r.status_code == 200, r.text
        self.log(f"order {order.id} ({order.quantity} {order.sku}) cancelled")
        order.cancelled = True
        key = (ORDER_LOCATION, order.sku)
        self.pairs[key] = {(s + order.quantity, b) for s, b in self.pairs[key]}
        self.edited.add(key)

    # -- the upload page's JSON API (issues 19 and 25) --

    def server_url(self) -> str:
        """``invsync serve`` on this example's state dir (started once; stopped in
        teardown), with an API key of its own."""
        if self.server is None:
            added = subprocess.run(
                [sys.executable, "-m", "invsync", "portal", "add-key", "model",
                 "--state-dir", str(self.state_dir)],
                env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert added.returncode == 0, output(added)
            self.api_key = added.stdout.strip().splitlines()[-1]
            proc = subprocess.Popen(
                [sys.executable, "-m", "invsync", "serve", "--port", "0", "--state-dir",
                 str(self.state_dir), "--report-dir", str(self.report_dir), "--config",
                 str(self.config)], env=self.env, cwd=ROOT, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
            self.world.children.append(proc)
            self.server = wait_for_listening(proc, "invsync serve", 60)
        return self.server.url

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, self.server_url() + path, timeout=120,
                             headers={"Authorization": f"Bearer {self.api_key}"}, **kwargs)

    def upload_done(self, upload_id: str) -> dict[str, Any]:
        """Poll an upload until its apply has ended."""
        last: dict[str, Any] = {}

        def ended() -> dict[str, Any] | None:
            last.update(self.api("GET", f"/api/uploads/{upload_id}").json())
            return None if last["status"] in ("applying", "cancelling", "previewing") \
                else dict(last)

        return wait_for(ended, timeout=120, every=0.1,
                        message=lambda: f"apply never ended: {last}{self.story()}")

    @rule(data=st.data(), then=st.sampled_from(["later", "apply", "edit", "sell"]))
    def upload_preview(self, data: st.DataObject, then: str) -> None:
        """Upload a file through the JSON API: a preview against the store's live levels
        that shows exactly the items whose file level differs from the store's, and sends
        nothing. Then: leave it for :meth:`upload_apply` (``later``), apply it at once, or
        first move one of its planned items (an edit in the store, or an order at
        location 1) so that the apply must send nothing and end stale."""
        run = replace(data.draw(runs(zero_missing=False)), live=True, full=False, buffer=0)
        up = self.preview(run)
        if up is None or then == "later":
            return
        key = data.draw(st.sampled_from(sorted(up.planned, key=str)))
        if then == "edit":
            old = up.planned[key][0]
            self.manual_edit(key, data.draw(QUANTITIES.filter(lambda q: q != old)))
        elif then == "sell" and key[0] == ORDER_LOCATION:
            self.place_order(key[1], data.draw(st.integers(1, 4)), data.draw(st.integers(1, 90)))
        self.apply_upload(up)

    def preview(self, run: Run) -> Upload | None:
        """Upload ``run``'s file; check its preview; the upload, if it has changes."""
        if self.faulty or self.journal_pending:
            self.log("upload preview: skipped (faults or an unfinished run)")
            return None
        path = self.write(run)
        self.server_url()
        levels = store_levels(self.world.sb)
        mark = len(quiet_log(self.world.sb))
        with path.open("rb") as fh:
            r = self.api("POST", "/api/uploads", data={"duplicates": run.duplicates},
                         files={"file": (path.name, fh, "text/csv")})
        wanted, _ = run.effective()
        self.log(f"upload {path.name} ({run.duplicates}) -> {r.status_code}")
        puts = [q for q in quiet_log(self.world.sb)[mark:] if q["method"] == "PUT"]
        assert not puts, f"a preview sent {len(puts)} PUT(s){self.story()}"
        if r.status_code == 422 and not wanted:
            return None  # no row usable: nothing to preview
        assert r.status_code == 201, r.text + self.story()
        body = r.json()
        assert body["status"] == "planned", body
        shown = {}
        for c in body["changes"]:
            item = str(c["item"])
            sku = item if item in SKUS else item_sku(
                {"variant_id" if int(item) in VARIANT_IDS else "product_id": int(item)})
            assert sku is not None, c
            shown[(int(c["location_id"]), sku)] = (c.get("old", c.get("before")),
                                                   c.get("new", c.get("after")))
        expected = {k: (levels[k], q) for k, q in wanted.items() if levels[k] != q}
        assert shown == expected, (shown, expected, self.story())
        assert body["changes_total"] == len(expected), body["changes_total"]
        if not expected:
            return None
        up = Upload(body["upload_id"], run, expected)
        self.uploads.append(up)
        return up

    @rule(pick=st.integers(0, 99))
    def upload_apply(self, pick: int) -> None:
        """Apply a previewed upload (``POST /api/uploads/{id}/apply``): exactly the preview's
        levels when no planned item moved since; else nothing sent and ``stale`` (or 409).
        A stale upload applied again is refused with 409, nothing sent."""
        ready = [u for u in self.uploads if u.status in ("planned", "stale")]
        if not ready or self.faulty or self.journal_pending:
            self.log("upload apply: skipped (no preview, faults or an unfinished run)")
            return
        self.apply_upload(ready[pick % len(ready)])

    def apply_upload(self, up: Upload) -> None:
        """Apply ``up`` through the API and check the outcome against the model."""
        levels = store_levels(self.world.sb)
        moved = sorted(k for k, (old, _) in up.planned.items() if levels[k] != old)
        mark = len(quiet_log(self.world.sb))
        r = self.api("POST", f"/api/uploads/{up.id}/apply", data={"override_brakes": "yes"})
        if r.status_code == 409:
            status = str(r.json().get("upload_status"))
        else:
            assert r.status_code == 202, r.text + self.story()
            status = str(self.upload_done(up.id)["status"])
        self.log(f"apply upload {up.id[:6]} (was {up.status}, moved {moved}) -> "
                 f"{r.status_code} {status}")
        puts = [q for q in quiet_log(self.world.sb)[mark:] if q["method"] == "PUT"]
        if up.status == "stale" or moved:
            assert status == "stale" and not puts, (r.status_code, status, puts, self.story())
            up.status = "stale"
            return
        _, rejected = up.run.effective()
        assert status == ("partial" if rejected else "succeeded"), (status, self.story())
        sent: dict[tuple[int, str | None], int] = {
            (int(it["location_id"]), item_sku(it)): int(it["quantity"])
            for q in puts for it in q["items"]}
        unshown = {k: q for k, q in sent.items()
                   if k[1] is None or k not in up.planned or up.planned[(k[0], k[1])][1] != q}
        assert not unshown, f"the apply set levels its preview did not show: {unshown}" \
            f"{self.story()}"
        certain = all(len(p) == 1 for p in self.pairs.values())
        for key, (_, new) in up.planned.items():
            self.pairs[key] = {(new, new)}
            self.edited.discard(key)
        if sent:
            self.last_write = dict(up.planned) if certain else None
        up.status = status

    def teardown(self) -> None:
        if os.environ.get("INVSYNC_STATEFUL_STORY"):
            print(self.story(), file=sys.stderr)
        if self.server is not None:
            self.server.stop()
            self.server = None

    # -- invariants --

    @invariant()
    def store_matches_model(self) -> None:
        levels = store_levels(self.world.sb)
        wrong = {k: (levels[k], sorted({s for s, _ in p})) for k, p in self.pairs.items()
                 if levels[k] not in {s for s, _ in p}}
        assert not wrong, f"store level not one the model allows: {wrong}{self.story()}"

    @invariant()
    def snapshot_claims_only_what_holds(self) -> None:
        if self.journal_pending:
            return  # the journal holds the newest confirmations until the next run
        snap = read_snapshot(self.state_dir)
        levels = store_levels(self.world.sb)
        for key in KEYS:
            pairs = self.pairs[key]
            if key not in snap:
                assert any(not isinstance(b, int) for _, b in pairs), \
                    f"snapshot lacks {key}, model {pairs}{self.story()}"
                continue
            qty = snap[key]
            if qty is None:  # marked unknown
                continue
            assert any(b == qty for _, b in pairs), \
                f"snapshot claims {qty} for {key}, model {pairs}{self.story()}"
            if key not in self.edited:
                assert levels[key] == qty, \
                    f"snapshot claims {qty} for {key}, store has {levels[key]}{self.story()}"

    @invariant()
    def no_item_in_two_concurrent_requests(self) -> None:
        log = self.world.sb.requests()
        done = [r for r in log if r["finished"] is not None]
        assert not overlapping_items(done), f"{overlapping_items(done)}{self.story()}"
        assert self.world.sb.stats()["item_overlaps"] == 0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with run_sandbox(_catalog(tmp_path), token=TOKEN) as sb:
        w = World(sb=sb, tmp=tmp_path)
        try:
            yield w
        finally:
            for p in w.children:
                if p.poll() is None:
                    p.kill()
                p.wait(timeout=10)


def _catalog(tmp: Path) -> Path:
    return write_csv(tmp / "catalog.csv", ["sku", "product_id", "variant_id", "tracking"],
                     [[sku, 500 + i, 900 + i, "product"] for i, sku in enumerate(SKUS)])


def test_random_runs_kills_faults_and_edits_keep_the_store_right(world: World) -> None:
    InvsyncMachine.world = world
    run_state_machine_as_test(
        InvsyncMachine,
        settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
                          suppress_health_check=list(HealthCheck),
                          # The default budget replays the same sequences (issue 20);
                          # a budget from the environment (`make soak`) explores.
                          derandomize=not EXPLORE,
                          # Shrinking real processes takes longer than pytest's timeout,
                          # which then hides the failure: the default budget reports the
                          # failing sequence as found (its story is in the message).
                          phases=list(Phase) if EXPLORE else [
                              Phase.explicit, Phase.reuse, Phase.generate]),
    )
    del InvsyncMachine.world
