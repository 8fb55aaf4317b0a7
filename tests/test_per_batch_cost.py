"""Per-batch work without losing a guarantee (issue 13): the request body serialised from
the columns is the JSON the per-item dicts gave, and the journal's group commit never
lets a writer go on before its record is on disk, while one fsync serves many records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import item_frame

from invsync.stages.submit import plan_batches
from invsync.state import journal as journal_module
from invsync.state.journal import Journal


@pytest.mark.parametrize("rows", [
    [(1, "sku", f"S-{i}", i) for i in range(2000)],
    [(2, "variant_id", str(10_000 + i), i % 7) for i in range(300)],
    [(1, "sku", 'odd "sku"\\ \n\té€', 0), (1, "variant_id", "77", 5),
     (1, "product_id", "111", 9), (1, "sku", "\u2028\x01", 3)],
])
def test_encoded_body_is_the_json_of_the_per_item_dicts(
        rows: list[tuple[int, str, str, int]]) -> None:
    for batch in plan_batches(item_frame(rows, with_old=True)):
        assert json.loads(batch.encoded.json) == batch.items
        assert len(batch.encoded) == len(batch)


def test_group_commit_makes_each_record_durable_before_its_writer_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path)
    durable: set[int] = set()
    real_fsync = journal_module.os.fsync

    def slow_fsync(fd: int) -> None:
        # What is in the file when the fsync starts is what this fsync makes durable.
        seen = {json.loads(line)["batch"] for line in journal.path.read_text().splitlines()
                if '"batch"' in line}
        time.sleep(0.02)
        real_fsync(fd)
        durable.update(seen)

    monkeypatch.setattr(journal_module.os, "fsync", slow_fsync)
    journal.begin({"run_id": "r"})
    keys = pl.DataFrame({"location_id": [1], "identifier": ["sku"], "item_key": ["A"]})
    early: list[int] = []

    def writer(w: int) -> None:
        for k in range(5):
            batch = w * 100 + k
            journal.sending(batch, keys)
            if batch not in durable:
                early.append(batch)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    journal.close(remove=False)
    assert early == [], "a writer went on before its record was fsynced"
    assert len(durable) == 40
    # Eight writers at once: some fsyncs are shared (one per record, and begin's, would be
    # 41). How many depends on the scheduler (30 on a quiet machine, 31 seen under load),
    # so only the sharing itself is asserted.
    assert journal.fsyncs < 41
