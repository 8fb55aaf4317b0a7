"""Round 7 red team: what a careless operator or a misbehaving store did to this round's
changes, kept as tests. Each test runs the real CLI against a real sandbox process.

The mass-zeroing brake now counts a location's stocked items from the store's listing when
what the run knows of it is too little (docs/guarantees.md, "Safety brakes"). That count is
a read made at the very moment the brake is judged: whatever the store does then, nothing
may be sent, and the run must end with one plain line and the documented exit code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import (
    CliResult,
    env_at,
    env_for,
    kill_when,
    output,
    retry_config,
    run_invsync,
    spawn,
    wait_for,
    write_csv,
)
from misbehaving import Reply, Request, misbehaving_store

from invsync.sandbox.process import SandboxProcess

CATALOG_ITEMS = 3000
"""Three pages of 1000: a 3-row file is read by one filtered read, so the run knows only
its own 3 items and the brake must ask the store for the rest."""

STOCKED = 40


def _skus(n: int) -> list[str]:
    return [f"RT-{i:05d}" for i in range(n)]


@pytest.fixture
def store(sandbox_factory: Callable[..., SandboxProcess], tmp_path: Path) -> SandboxProcess:
    """A sandbox whose location 1 holds 5 of each of its first 40 items."""
    catalog = write_csv(tmp_path / "catalog.csv", ["sku", "product_id", "variant_id",
                                                   "tracking"],
                        [[s, 100 + i, 10_000 + i, "variant"]
                         for i, s in enumerate(_skus(CATALOG_ITEMS))])
    sb = sandbox_factory(catalog=catalog)
    setup = write_csv(tmp_path / "setup.csv", ["sku", "location_id", "quantity"],
                      [[s, 1, 5] for s in _skus(STOCKED)])
    done = run_invsync(["-q", "sync", str(setup)], env_for(sb, tmp_path / "setup"))
    assert done.returncode == 0, output(done)
    return sb


def _is_stock_count(req: Request) -> bool:
    """The brake's count: the location's whole listing (no item filter)."""
    return (req.method == "GET" and req.path.endswith("/inventory/items")
            and "location_id:in" in req.query
            and not any(k in req.query for k in ("sku:in", "variant_id:in", "product_id:in")))


def _zero_three(tmp_path: Path, env: dict[str, str], *extra: str) -> CliResult:
    file = write_csv(tmp_path / "fix.csv", ["sku", "location_id", "quantity"],
                     [[s, 1, 0] for s in _skus(3)])
    config = retry_config(tmp_path, max_attempts=2, timeout_s=2.0, max_total_s=4.0)
    return run_invsync(["sync", str(file), "--config", str(config), *extra], env, timeout=120)


def _page(items: int, total_pages: int, page: int) -> bytes:
    data = [{"identity": {"sku": s, "variant_id": 10_000 + i, "product_id": 100 + i},
             "locations": [{"location_id": 1, "total_inventory_onhand": 5,
                            "available_to_sell": 5}]}
            for i, s in enumerate(_skus(items))]
    return json.dumps({"data": data, "meta": {"pagination": {
        "total": total_pages * 1000, "count": len(data), "per_page": 1000,
        "current_page": page, "total_pages": total_pages}}}).encode()


FAILURES: dict[str, Callable[[Request], Reply]] = {
    "403": lambda req: Reply.json(403, {"status": 403, "title": "You don't have a required scope"}),
    "500": lambda req: Reply.json(500, {"status": 500, "title": "Internal Server Error"}),
    "html": lambda req: Reply(200, b"<html><body>Maintenance</body></html>",
                              {"Content-Type": "text/html"}),
    "not-json": lambda req: Reply(200, b"{\"data\": [", {"Content-Type": "application/json"}),
    "slow": lambda req: Reply(200, b"{", {"Content-Type": "application/json"}, drip_s=0.5,
                              endless=True),
    # Says there are 3 pages of 1000 but sends 2 items on each, the same ones each time.
    "lying-pages": lambda req: Reply(200, _page(2, 3, int(req.query.get("page", "1"))),
                                     {"Content-Type": "application/json"}),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("dry", [False, True])
def test_a_store_count_that_fails_sends_nothing_and_says_so(
        store: SandboxProcess, tmp_path: Path, failure: str, dry: bool) -> None:
    before = store.levels()
    respond = FAILURES[failure]
    with misbehaving_store(lambda req: respond(req) if _is_stock_count(req) else None,
                           store.url) as proxy:
        result = _zero_three(tmp_path, env_at(proxy.url, tmp_path, store),
                             *(["--dry-run"] if dry else []))
        assert any(_is_stock_count(r) for r in proxy.requests), output(result)
        assert not [r for r in proxy.requests if r.method == "PUT"]
    text = output(result)
    assert result.returncode == 2, text
    assert "Traceback" not in text
    # One plain line naming what failed: the listing read, or the token's missing scope.
    assert ("/inventory/items" in text) if failure != "403" else ("HTTP 403" in text), text
    assert store.levels() == before


@pytest.mark.parametrize("share", ["0", "0.0", "5e-324", "1e-300"])
def test_a_zero_or_tiny_allowed_share_trips_the_brake_instead_of_crashing(
        store: SandboxProcess, tmp_path: Path, share: str) -> None:
    # docs/config.md: max_zero_share is a share from 0 to 1; 0 means no item may drop to 0
    # unflagged. The store count divided by it (ZeroDivisionError, OverflowError: exit 2).
    config = tmp_path / "brakes.toml"
    config.write_text(f"[brakes]\nmax_zero_share = {share}\n")
    file = write_csv(tmp_path / "fix.csv", ["sku", "location_id", "quantity"],
                     [[s, 1, 0] for s in _skus(3)])
    before = store.levels()
    result = run_invsync(["sync", str(file), "--config", str(config)],
                         env_for(store, tmp_path))
    text = output(result)
    assert result.returncode == 3, text
    assert "safety brake" in text and "unexpected" not in text, text
    assert store.levels() == before


def test_the_shrink_brake_follows_the_source_not_the_flag(
        store: SandboxProcess, tmp_path: Path) -> None:
    # docs/guarantees.md said "with --zero-missing only" and "a small file is a partial
    # update and needs no flag"; the brake (issue 22) follows the source: a 1-row file at
    # the nightly export's own path after 8 rows trips it without --zero-missing, while a
    # correction at another path does not. The docs now say so.
    env = env_for(store, tmp_path)
    nightly = tmp_path / "nightly.csv"
    write_csv(nightly, ["sku", "location_id", "quantity"], [[s, 1, 6] for s in _skus(8)])
    assert run_invsync(["-q", "sync", str(nightly)], env).returncode == 0
    write_csv(nightly, ["sku", "location_id", "quantity"], [[_skus(1)[0], 1, 7]])
    shrunk = run_invsync(["sync", str(nightly)], env)
    assert shrunk.returncode == 3, output(shrunk)
    assert "--allow-shrink" in output(shrunk)
    fix = write_csv(tmp_path / "fix.csv", ["sku", "location_id", "quantity"],
                    [[_skus(1)[0], 1, 7]])
    assert run_invsync(["-q", "sync", str(fix)], env).returncode == 0
    assert store.levels()[(1, _skus(1)[0])] == 7


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_brake_counts_sends_nothing_and_frees_the_lock(
        store: SandboxProcess, tmp_path: Path, children: list[subprocess.Popen[bytes]],
        sig: int) -> None:
    before = store.levels()
    stall = Reply(200, b"{", {"Content-Type": "application/json"}, drip_s=0.5, endless=True)
    file = write_csv(tmp_path / "fix.csv", ["sku", "location_id", "quantity"],
                     [[s, 1, 0] for s in _skus(3)])
    with misbehaving_store(lambda req: stall if _is_stock_count(req) else None,
                           store.url) as proxy:
        env = env_at(proxy.url, tmp_path, store)
        log = tmp_path / "stopped.log"
        proc = spawn(["sync", str(file)], env, log, children)
        code = kill_when(lambda: any(_is_stock_count(r) for r in proxy.requests), proc, log,
                         sig=sig)
        assert not [r for r in proxy.requests if r.method == "PUT"]
    text = log.read_text()
    assert code == (130 if sig == signal.SIGINT else 143), text
    assert "Traceback" not in text
    assert store.levels() == before
    # The lock was freed: the same file, the store answering, goes through (3 of 40).
    again = run_invsync(["-q", "sync", str(file)], env_for(store, tmp_path))
    assert again.returncode == 0, output(again)
    assert [store.levels()[(1, s)] for s in _skus(4)] == [0, 0, 0, 5]


def _edit(store: SandboxProcess, levels: dict[tuple[int, str], int]) -> None:
    """A manual edit in the store's control panel (``POST /_sandbox/levels``)."""
    body = json.dumps([{"location_id": loc, "sku": sku, "quantity": qty}
                       for (loc, sku), qty in levels.items()]).encode()
    req = urllib.request.Request(store.url + "/_sandbox/levels", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).close()


@pytest.mark.parametrize("how", ["sync", "dry-run", "plan-file"])
def test_several_locations_one_holding_little_stock_trips_the_whole_file(
        store: SandboxProcess, tmp_path: Path, how: str) -> None:
    # Location 1 holds 40 stocked items (3 zeros: fine), location 2 only 4 (3 zeros: 75%).
    _edit(store, {(2, s): 5 for s in _skus(4)})
    before = store.levels()
    env = env_for(store, tmp_path)
    file = write_csv(tmp_path / "fix.csv", ["sku", "location_id", "quantity"],
                     [[s, loc, 0] for loc in (1, 2) for s in _skus(3)])
    if how == "plan-file":
        plan = run_invsync(["plan", str(file)], env)
        assert plan.returncode == 3, output(plan)
        result = run_invsync(["sync", "--plan-file", str(plan.report_dir() / "plan.csv")], env)
    else:
        result = run_invsync(["sync", str(file), *(["--dry-run"] if how == "dry-run" else [])],
                             env)
    text = output(result)
    assert result.returncode == 3, text
    assert "3 of the 4 items holding stock at location 2" in text
    assert store.levels() == before
    # With the override, both locations are written.
    if how == "sync":
        done = run_invsync(["-q", "sync", str(file), "--allow-zeroing"], env)
        assert done.returncode == 0, output(done)
        assert all(store.levels()[(loc, s)] == 0 for loc in (1, 2) for s in _skus(3))


def test_a_young_snapshot_is_cleared_by_the_store_count_with_baseline_snapshot(
        store: SandboxProcess, tmp_path: Path) -> None:
    # The snapshot knows only the 3 items this state folder's one run set; the store holds
    # 40 with stock at location 1: zeroing those 3 needs no flag, a dry run included.
    env = env_for(store, tmp_path)
    first = write_csv(tmp_path / "first.csv", ["sku", "location_id", "quantity"],
                      [[s, 1, 6] for s in _skus(3)])
    assert run_invsync(["-q", "sync", str(first)], env).returncode == 0
    file = write_csv(tmp_path / "fix.csv", ["sku", "location_id", "quantity"],
                     [[s, 1, 0] for s in _skus(3)])
    dry = run_invsync(["sync", str(file), "--baseline", "snapshot", "--dry-run"], env)
    assert dry.returncode == 0, output(dry)
    done = run_invsync(["sync", str(file), "--baseline", "snapshot"], env)
    assert done.returncode == 0, output(done)
    assert [store.levels()[(1, s)] for s in _skus(4)] == [0, 0, 0, 5]
    # Without a token the dry run cannot count: the young snapshot alone trips it.
    write_csv(first, ["sku", "location_id", "quantity"], [[s, 1, 6] for s in _skus(3)])
    assert run_invsync(["-q", "sync", str(first)], env).returncode == 0
    no_token = {k: v for k, v in env.items() if k != "BIGCOMMERCE_ACCESS_TOKEN"}
    blind = run_invsync(["sync", str(file), "--dry-run"], no_token)
    assert blind.returncode == 3, output(blind)


def test_a_fetched_file_is_kept_readable_by_this_user_only(
        store: SandboxProcess, tmp_path: Path) -> None:
    # A drop folder's file (here a symbolic link to a file only its owner may read, as a
    # hostile dropper would leave) was copied into the run folder and the source's state
    # as 0644 in 0755 folders: readable by every user of the machine, unlike the 0600
    # files beside it.
    private = write_csv(tmp_path / "private.csv", ["sku", "location_id", "quantity"],
                        [[_skus(1)[0], 1, 9]])
    private.chmod(0o600)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "stock.csv").symlink_to(private)
    result = run_invsync(["-q", "sync", str(drop / "*.csv")], env_for(store, tmp_path))
    assert result.returncode == 0, output(result)
    copies = [p for p in (tmp_path / "state").rglob("*") if p.is_file()
              and p.read_bytes() == private.read_bytes()]
    assert len(copies) >= 2, copies  # the source's download and the run folder's copy
    for copy in copies:
        assert copy.stat().st_mode & 0o077 == 0, f"{copy} is {oct(copy.stat().st_mode)}"
        assert copy.parent.stat().st_mode & 0o077 == 0, f"{copy.parent} is open to others"


def test_a_store_that_goes_down_as_the_brake_counts_sends_nothing(
        store: SandboxProcess, tmp_path: Path) -> None:
    def respond(req: Request) -> Reply | None:
        if _is_stock_count(req):
            store.stop()  # the store goes away: this and every later request is refused
        return None

    with misbehaving_store(respond, store.url) as proxy:
        result = _zero_three(tmp_path, env_at(proxy.url, tmp_path, store))
        assert any(_is_stock_count(r) for r in proxy.requests), output(result)
        assert not [r for r in proxy.requests if r.method == "PUT"]
    text = output(result)
    assert result.returncode == 2, text
    assert "Traceback" not in text
    assert "/inventory/items" in text, text


def test_watch_ctrl_c_mid_run_then_the_next_watch_finishes_the_file_once(
        store: SandboxProcess, tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = tmp_path / "watch.toml"
    config.write_text(f'[sources.inbox]\nurl = "{drop}/*.csv"\nsettle_s = 0.2\n'
                      f'on_success = "move:done/"\n')
    skus = _skus(700)[100:]
    env = env_for(store, tmp_path)
    args = ["watch", "inbox", "--config", str(config), "--interval", "0.2", "--batch-size", "100"]
    store.set_faults(latency_ms=400)
    log = tmp_path / "first.log"
    first = spawn(args, env, log, children)
    write_csv(drop / "stock.csv", ["sku", "location_id", "quantity"], [[s, 1, 4] for s in skus])
    mark = len(store.requests())  # the fixture's own run wrote before
    puts = lambda: [r for r in store.requests()[mark:] if r["method"] == "PUT"]  # noqa: E731
    assert kill_when(puts, first, log, sig=signal.SIGINT) == 130, log.read_text()
    assert "Traceback" not in log.read_text()
    assert (drop / "stock.csv").exists(), "an interrupted run's file must stay to be run again"
    store.set_faults(latency_ms=0)
    log2 = tmp_path / "second.log"
    second = spawn(args, env, log2, children)
    ledger = tmp_path / "state" / "invsync" / "sources"

    def processed() -> list[str]:
        return [line for f in ledger.rglob("ledger.jsonl") for line in f.read_text().splitlines()
                if '"processed"' in line]

    wait_for(processed, second, log2, timeout=120)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0, log2.read_text()
    assert len(processed()) == 1
    levels = store.levels()
    assert all(levels[(1, s)] == 4 for s in skus)
    assert (drop / "done" / "stock.csv").exists() and not (drop / "stock.csv").exists()


def test_a_run_the_store_failed_before_its_rows_were_checked_says_how_many_it_read(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    """A run whose first store read (the locations) failed after the file was read printed
    "rows read 0" and rows=0 for a file of 3 rows, as if the file were empty."""
    file = write_csv(tmp_path / "stock.csv", ["sku", "location_id", "quantity"],
                     [["A-1", 1, 5], ["B-2", 1, 6], ["C-3", 1, 7]])
    config = retry_config(tmp_path, max_attempts=2)
    sandbox.set_faults(error_rate=1.0)
    result = run_invsync(["sync", str(file), "--config", str(config)], env_for(sandbox, tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "rows read 3: the run stopped before checking them" in result.stdout
    assert "rows read         0" not in result.stdout
    line = next(x for x in (result.stdout + result.stderr).splitlines()
                if x.startswith("invsync: failed run="))
    assert " rows=3 " in line
    # report.json says what failed: the store (the file may be fine).
    assert result.report()["error_kind"] == "store"
