"""A run's counts and outcome as pure functions: no files, no network."""

from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest

from invsync.errors import AuthError, ExitCode, InternalError, StoreError
from invsync.run.outcome import count_run, outcome
from invsync.run.sync import _item_status
from invsync.stages.diff import compute_changes
from invsync.stages.ingest import read_stock_bytes
from invsync.stages.report import Counts, plan_frame
from invsync.stages.submit import SEQ, BatchResult, SubmitResult, number_changes
from invsync.stages.validate import validate

CSV = b"sku,quantity,location_id\nA,1,1\nB,2,1\nC,x,1\nD,4,1\n"


def staged(result_for: str = "all accepted") -> tuple:
    """The stages' outputs for CSV: 4 rows, 1 invalid (C), 3 changes (all new)."""
    table = read_stock_bytes(CSV, name="stock.csv")
    checked = validate(table, default_location=1, locations=None)
    changes = compute_changes(checked.valid, None)
    changes = replace(changes, changes=number_changes(changes.changes))
    seqs = changes.changes[SEQ].to_list()
    batch = BatchResult(index=0, location_id=1, items=len(seqs), status="accepted",
                        accepted=seqs)
    result = SubmitResult(batches=[batch], batch_seqs=[seqs])
    return table, checked, changes, result


def test_counts_are_taken_from_each_stage() -> None:
    table, checked, changes, result = staged()
    plan = plan_frame(changes.changes, _item_status(result, dry_run=False,
                                                    planned=changes.changes.height))
    c = count_run(table, checked, changes, result, plan, checked.rejected)
    assert (c.rows, c.valid, c.invalid, c.changed, c.submitted, c.accepted, c.not_sent,
            c.rejected) == (4, 3, 1, 3, 3, 3, 0, 1)


def test_a_wrong_count_from_one_stage_is_caught() -> None:
    table, checked, changes, result = staged()
    plan = plan_frame(changes.changes, _item_status(result, dry_run=False,
                                                    planned=changes.changes.height))
    # The batch results name one item twice: an accepted count no other stage agrees with.
    result.batches[0].accepted.append(result.batches[0].accepted[0])
    with pytest.raises(InternalError, match="do not add up"):
        count_run(table, checked, changes, result, plan, checked.rejected)


def test_a_rejected_frame_that_lost_a_row_is_caught() -> None:
    table, checked, changes, result = staged()
    plan = plan_frame(changes.changes, _item_status(result, dry_run=False,
                                                    planned=changes.changes.height))
    with pytest.raises(InternalError, match="rejected != invalid"):
        count_run(table, checked, changes, result, plan, checked.rejected.head(0))


def test_item_status_follows_seq_not_row_position() -> None:
    _, _, changes, _ = staged()
    # Items in another order than their numbers (as a sort would leave them).
    shuffled = replace(changes, changes=changes.changes.reverse())
    first = shuffled.changes[SEQ].to_list()[-1]
    batch = BatchResult(index=0, location_id=1, items=1, status="accepted", accepted=[first])
    result = SubmitResult(batches=[batch], batch_seqs=[[first]])
    plan = plan_frame(shuffled.changes, _item_status(result, dry_run=False,
                                                    planned=changes.changes.height))
    assert plan["status"].to_list() == ["not_sent", "not_sent", "accepted"]
    assert plan.filter(pl.col("status") == "accepted")["item"].to_list() == \
        [changes.changes["address_key"][0]]


def test_counts_check_raises_even_under_python_O() -> None:
    bad = Counts(rows=1)
    with pytest.raises(InternalError):  # a plain `assert` would vanish under -O
        bad.check()
    with pytest.raises(InternalError, match="not_sent < 0"):
        Counts(rows=1, valid=1, unchanged=1, submitted=1, changed=0, not_sent=-1,
               accepted=1).check()


@pytest.mark.parametrize(("counts", "fatal", "braked", "dry_run", "expected"), [
    (Counts(), None, False, False, ("succeeded", ExitCode.OK)),
    (Counts(rejected=2), None, False, False, ("partial", ExitCode.REJECTED_ROWS)),
    (Counts(rejected=2), StoreError("down"), False, False, ("failed", ExitCode.RUN_FAILED)),
    (Counts(), AuthError("401"), False, False, ("failed", ExitCode.RUN_FAILED)),
    (Counts(rejected=1), None, True, False, ("failed", ExitCode.SAFETY_BRAKE)),
    (Counts(), None, False, True, ("dry_run", ExitCode.OK)),
    (Counts(rejected=1), None, False, True, ("dry_run", ExitCode.REJECTED_ROWS)),
    (Counts(rejected=1), None, True, True, ("dry_run", ExitCode.SAFETY_BRAKE)),
])
def test_status_and_exit_code(counts: Counts, fatal: StoreError | None, braked: bool,
                              dry_run: bool, expected: tuple[str, int]) -> None:
    assert outcome(counts, fatal=fatal, braked=braked, dry_run=dry_run) == expected


def test_goes_to_zero_is_one_definition() -> None:
    from invsync.tables import goes_to_zero

    frame = pl.DataFrame({"new": [0, 0, 0, 0, 5], "old": [3, 0, -2, None, 3]},
                         schema={"new": pl.Int64, "old": pl.Int64})
    plain = frame.select(goes_to_zero(pl.col("new"), pl.col("old")))
    brakes = frame.select(goes_to_zero(pl.col("new"), pl.col("old"), unknown_counts=True))
    # A negative level set to 0 is a rise; an unknown level counts only for the brakes.
    assert plain.to_series().to_list() == [True, False, False, False, False]
    assert brakes.to_series().to_list() == [True, False, False, True, False]


def test_accepted_batches_that_cover_part_of_the_plan_leave_the_rest_not_sent() -> None:
    # A run stopped after its first batch: every batch it sent was accepted, yet the items
    # of the batches it never sent must not read "accepted" (they were not sent).
    _, _, changes, _ = staged()
    seqs = changes.changes[SEQ].to_list()
    sent = BatchResult(index=0, location_id=1, items=2, status="accepted", accepted=seqs[:2])
    result = SubmitResult(batches=[sent], batch_seqs=[seqs[:2]])
    plan = plan_frame(changes.changes, _item_status(result, dry_run=False,
                                                    planned=len(seqs)))
    assert plan["status"].to_list() == ["accepted", "accepted", "not_sent"]
    whole = SubmitResult(batches=[BatchResult(index=0, location_id=1, items=len(seqs),
                                              status="accepted", accepted=seqs)],
                         batch_seqs=[seqs])
    plan = plan_frame(changes.changes, _item_status(whole, dry_run=False, planned=len(seqs)))
    assert plan["status"].to_list() == ["accepted"] * len(seqs)
