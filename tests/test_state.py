"""The state a run keeps (snapshot, journal, locks) against adversarial use (issue 9).

Every test runs the real CLI against a real sandbox process on 127.0.0.1, except the
journal/snapshot unit tests at the end.
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import (
    env_for,
    lock_holder,
    output,
    run_invsync,
    spawn,
    state_store_dir,
    write_stock,
)
from test_resilience import (  # noqa: F401 - fixtures used by name
    Factory,
    KillWorld,
    Store,
    assert_braked,
    item_keys,
    kill_args,
    kill_mid_run,
    kill_world,
    log_mark,
    make_catalog,
    puts_since,
    random_levels,
    retry_config,
    snapshot_levels,
    synced_store,
)

from invsync.state.journal import Journal
from invsync.state.snapshot import KEY, SNAPSHOT_SCHEMA, SnapshotStore

# ---- 1. brakes judge what the store holds, whatever the diff baseline ------------------


@pytest.mark.parametrize("flags", [
    ["--full"], ["--full", "--dry-run"], ["--full", "--baseline", "live"],
    ["--full", "--zero-missing"], ["--baseline", "live"],
], ids=lambda f: " ".join(f))
def test_all_zero_file_trips_the_mass_zeroing_brake_whatever_the_baseline(
    synced_store: Store, flags: list[str],  # noqa: F811
) -> None:
    store = synced_store
    zeros = write_stock(store.tmp / "zeros.csv", dict.fromkeys(store.baseline, 0))
    result, sent = store.sync(zeros, *flags)
    assert_braked(result, sent, "mass_zeroing", "--allow-zeroing")
    assert store.sb.levels() == store.baseline


def test_live_levels_count_each_item_once_for_the_mass_zeroing_brake(
    synced_store: Store,  # noqa: F811
) -> None:
    # The store lists each item by SKU, variant id and product id: 100 of the 200 items
    # at location 1 to 0 is 50% (not 100 of 600 rows, 17%).
    store = synced_store
    half = {k: (0 if i < 100 else v) for i, (k, v) in enumerate(store.baseline.items())
            if k[0] == 1}
    result, sent = store.sync(write_stock(store.tmp / "half.csv", half), "--baseline", "live")
    assert_braked(result, sent, "mass_zeroing", "--allow-zeroing")
    assert "100 of the 200 items holding stock" in result.report()["brakes"][0]["message"]


def test_plan_file_of_an_all_zero_file_is_braked_on_the_snapshot(
    synced_store: Store,  # noqa: F811
) -> None:
    store = synced_store
    zeros = write_stock(store.tmp / "zeros.csv", dict.fromkeys(store.baseline, 0))
    plan = run_invsync(["plan", str(zeros)], store.env)
    assert plan.returncode == 3, output(plan)
    plan_csv = plan.report_dir() / "plan.csv"
    mark = log_mark(store.sb)
    result = run_invsync(["sync", "--plan-file", str(plan_csv)], store.env)
    sent = puts_since(store.sb, mark)
    assert_braked(result, sent, "mass_zeroing", "--allow-zeroing")
    assert store.sb.levels() == store.baseline


# ---- 2. an item whose write was never confirmed keeps its row, level unknown -----------


def test_unconfirmed_items_stay_in_the_snapshot_and_zero_missing_still_zeroes_them(
    sandbox_factory: Factory, tmp_path: Path,
) -> None:
    skus = make_catalog(tmp_path / "catalog.csv", 3000)
    sb = sandbox_factory("--drop-rate", "0.3", "--seed", "5", catalog=tmp_path / "catalog.csv")
    env = env_for(sb, tmp_path)
    patient = retry_config(tmp_path, max_attempts=20, base_delay_s=0.01, max_delay_s=0.05)
    impatient = retry_config(tmp_path, max_attempts=1, base_delay_s=0.01, max_delay_s=0.05)
    old = random_levels(skus, (1,), random.Random(9))
    new = {k: v + 1 for k, v in old.items()}
    flags = ["--batch-size", "200", "--concurrency", "1"]
    first = run_invsync(["sync", str(write_stock(tmp_path / "old.csv", old)), "--config",
                         str(patient), *flags], env)
    assert first.returncode == 0, output(first)
    mark = log_mark(sb)
    failed = run_invsync(["sync", str(write_stock(tmp_path / "new.csv", new)), "--config",
                          str(impatient), *flags], env)
    assert failed.returncode == 2, output(failed)
    lost = set(item_keys([r for r in puts_since(sb, mark) if r["dropped"]]))
    assert lost and failed.report()["counts"]["unconfirmed"] == len(lost)

    # The snapshot still lists every item; the unconfirmed ones with an unknown level.
    snapshot = snapshot_levels(tmp_path / "state")
    assert snapshot is not None and set(snapshot) == set(old)
    assert {k for k, v in snapshot.items() if v is None} == lost

    # A file that leaves them out, with --zero-missing: they exist, so they go to 0.
    rest = {k: v for k, v in new.items() if k not in lost}
    mark = log_mark(sb)
    result = run_invsync(["sync", str(write_stock(tmp_path / "rest.csv", rest)), "--config",
                          str(patient), "--zero-missing", *flags], env)
    assert result.returncode == 0, output(result)
    assert result.report()["counts"]["zeroed_missing"] == len(lost)
    zeroed = {k for r in puts_since(sb, mark) if r["status"] == 200 for it in r["items"]
              if it["quantity"] == 0 for k in [(it["location_id"], it["sku"])]}
    assert zeroed == lost
    assert sb.levels() == rest | dict.fromkeys(lost, 0)
    assert snapshot_levels(tmp_path / "state") == sb.levels()


def test_journal_recovery_marks_in_flight_items_unknown(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path, "s", "http://127.0.0.1:1")
    store.merge(pl.DataFrame({"location_id": [1, 1, 1], "identifier": ["sku"] * 3,
                              "item_key": ["A", "B", "C"], "quantity": [5, 6, 7]},
                             schema=SNAPSHOT_SCHEMA))
    journal = Journal(store.dir)
    journal.begin({"run_id": "r1"})
    sent = pl.DataFrame({"location_id": [1, 1, 1], "identifier": ["sku"] * 3,
                         "item_key": ["A", "B", "D"]}, schema={k: SNAPSHOT_SCHEMA[k] for k in KEY})
    journal.sending(0, sent)
    journal.confirmed(0, "tx-1", pl.DataFrame(
        {"location_id": [1], "identifier": ["sku"], "item_key": ["A"], "quantity": [50]},
        schema=SNAPSHOT_SCHEMA))
    journal.close(remove=False)

    recovered = journal.recover()
    store.merge(recovered.confirmed, forget=recovered.unconfirmed)
    levels = {r["item_key"]: r["quantity"] for r in store.load().iter_rows(named=True)}
    # A confirmed; B and D (new) sent without an answer: unknown, but still there.
    assert levels == {"A": 50, "B": None, "C": 7, "D": None}


# ---- 3. state per API host and store hash; one run per store on a host -----------------


def test_rehearsal_on_a_sandbox_with_the_real_hash_does_not_hide_the_real_run(
    sandbox_factory: Factory, tmp_path: Path,
) -> None:
    skus = make_catalog(tmp_path / "catalog.csv", 2)
    rehearsal = sandbox_factory(catalog=tmp_path / "catalog.csv")
    # The same store hash behind another API host (another port): the "real" store.
    real = sandbox_factory(catalog=tmp_path / "catalog.csv")
    assert rehearsal.store_hash == real.store_hash and rehearsal.url != real.url
    levels = {(1, skus[0]): 7, (1, skus[1]): 9}
    stock = write_stock(tmp_path / "stock.csv", levels)
    first = run_invsync(["sync", str(stock)], env_for(rehearsal, tmp_path))
    assert first.returncode == 0, output(first)

    result = run_invsync(["sync", str(stock)], env_for(real, tmp_path))

    assert result.returncode == 0, output(result)
    assert result.report()["counts"]["accepted"] == 2, result.report()["counts"]
    assert real.levels() == levels


def test_a_snapshot_of_the_old_layout_is_not_used_and_the_report_says_so(
    sandbox_factory: Factory, tmp_path: Path,
) -> None:
    skus = make_catalog(tmp_path / "catalog.csv", 1)
    sb = sandbox_factory(catalog=tmp_path / "catalog.csv")
    legacy = tmp_path / "state" / "invsync" / sb.store_hash
    legacy.mkdir(parents=True)
    pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": [skus[0]],
                  "quantity": [7]}, schema=SNAPSHOT_SCHEMA).write_parquet(
        legacy / "snapshot.parquet")
    stock = write_stock(tmp_path / "stock.csv", {(1, skus[0]): 7})
    result = run_invsync(["sync", str(stock)], env_for(sb, tmp_path))
    assert result.returncode == 0, output(result)
    assert result.report()["counts"]["accepted"] == 1
    assert any("starts from an empty snapshot" in n for n in result.report()["notes"])


def test_second_run_for_the_same_store_with_another_state_dir_is_locked_out(
    kill_world: KillWorld, children: list[subprocess.Popen[bytes]],  # noqa: F811
    tmp_path: Path,
) -> None:
    w = kill_world
    _, levels, _, stock = w.files(random.Random(11))
    args = ["sync", str(stock), "--batch-size", "50", "--concurrency", "1"]
    log = w.tmp / "first.log"
    first = spawn(args, w.env, log, children)
    lock = w.store_dir / "lock"
    holder = lock_holder(lock, first, log)

    other = env_for(w.sb, tmp_path / "elsewhere")  # another state dir, same host
    second = run_invsync(args, other, timeout=60)

    assert first.poll() is None, "the first run should still be running"
    assert second.returncode == 4, output(second)
    assert f"run {holder['run_id']} (pid {first.pid}" in output(second)
    assert str(w.state_home) in output(second)  # names the state dir of the holder
    assert first.wait(timeout=120) == 0, log.read_text()
    assert w.sb.levels() == levels
    assert w.sb.stats()["item_overlaps"] == 0


# ---- 19. state files never follow symlinks ----------------------------------------------


@pytest.mark.parametrize("name", ["lock", "journal.jsonl", "state.json", "snapshot.parquet"])
def test_planted_symlink_in_the_state_is_never_followed(sandbox: Any, tmp_path: Path,
                                                        name: str) -> None:
    env = env_for(sandbox, tmp_path)
    folder = state_store_dir(tmp_path / "state", sandbox.store_hash, sandbox.url)
    folder.mkdir(parents=True)
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n")
    (folder / name).symlink_to(victim)
    stock = write_stock(tmp_path / "stock.csv", {(1, "TOWEL-907-NAVY-SHEET"): 7})

    result = run_invsync(["sync", str(stock)], env)

    assert result.returncode == 64, output(result)
    assert "symbolic link" in output(result)
    assert victim.read_text() == "do not truncate me\n"
    assert sandbox.levels() == {}, "nothing may be sent"


def test_state_files_are_private(sandbox: Any, tmp_path: Path) -> None:
    stock = write_stock(tmp_path / "stock.csv", {(1, "TOWEL-907-NAVY-SHEET"): 7})
    result = run_invsync(["sync", str(stock)], env_for(sandbox, tmp_path))
    assert result.returncode == 0, output(result)
    folder = state_store_dir(tmp_path / "state", sandbox.store_hash, sandbox.url)
    for path in [folder, folder.parent, folder.parent.parent, *folder.iterdir()]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, (path, oct(mode))
    locks = list(Path(os.environ["INVSYNC_LOCK_DIR"]).iterdir())
    port = sandbox.url.rsplit(":", 1)[1]
    # 127.0.0.1 and localhost are one host: the lock is named by the normalised one.
    assert [p.name for p in locks] == [f"localhost%3A{port}+sandbox.lock"]
    assert stat.S_IMODE(locks[0].lstat().st_mode) == 0o600


# ---- 21. leftovers of a kill; resume of a changed file; a null transaction id ------------


def test_snapshot_temp_files_left_by_a_kill_are_removed_at_start(sandbox: Any,
                                                                  tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    stock = write_stock(tmp_path / "stock.csv", {(1, "TOWEL-907-NAVY-SHEET"): 7})
    assert run_invsync(["sync", str(stock)], env).returncode == 0
    folder = state_store_dir(tmp_path / "state", sandbox.store_hash, sandbox.url)
    (folder / ".snapshot-k1ll3d.parquet").write_bytes(b"PAR1 half written")
    (folder / ".state.json-k1ll3d").write_bytes(b"{")
    result = run_invsync(["sync", str(stock)], env)
    assert result.returncode == 0, output(result)
    assert sorted(p.name for p in folder.iterdir()) == ["last_write.parquet", "lock", "run_seq",
                                                        "snapshot.parquet",
                                                        "state.json"]
    assert any("temporary snapshot files" in n for n in result.report()["notes"])


def test_resume_refuses_a_file_that_changed_since_the_interrupted_run(
    kill_world: KillWorld, children: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    w = kill_world
    _, new, _, new_file = w.files(random.Random(13))
    kill_mid_run(w, kill_args(new_file), 0.1, children)
    changed = {k: v + 1 for k, v in new.items()}
    write_stock(new_file, changed)
    mark = log_mark(w.sb)

    result = run_invsync(["resume"], w.env, timeout=60)

    assert result.returncode == 65, output(result)
    assert "changed since interrupted run" in output(result), output(result)
    assert puts_since(w.sb, mark) == []
    assert (w.store_dir / "journal.jsonl").exists()  # kept for the next sync to recover
    # Syncing the file as it is now recovers the journal first and ends right.
    after = run_invsync(kill_args(new_file), w.env, timeout=120)
    assert after.returncode == 0, output(after)
    assert w.sb.levels() == changed


def test_dry_run_after_a_kill_reads_the_journal_and_changes_no_state(
    kill_world: KillWorld, children: list[subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    w = kill_world
    _, _, _, new_file = w.files(random.Random(17))
    kill = kill_mid_run(w, kill_args(new_file), 0.2, children)
    state = {p.name: p.read_bytes() for p in w.store_dir.iterdir()}
    mark = log_mark(w.sb)

    dry = run_invsync([*kill_args(new_file), "--dry-run"], w.env, timeout=60)

    assert dry.returncode == 0, output(dry)
    assert puts_since(w.sb, mark) == []
    assert {p.name: p.read_bytes() for p in w.store_dir.iterdir()} == state
    report = dry.report()
    assert report["resumed_from"] == kill.run_id
    # Confirmed levels count as unchanged, and so (planned against the store) do items in
    # flight that landed; everything else is planned.
    assert report["counts"]["unchanged"] >= len(kill.journal.levels)
