"""A run's figures and outcome, as pure functions of what its stages returned.

:func:`count_run` counts each figure from its own source (the ingested table, the
validation's frames, the change set, the batch results, the plan's item statuses) so that
:meth:`~invsync.stages.report.Counts.check` compares independent figures and a bug in any
stage breaks an identity. :func:`outcome` turns the counts into the run's status and exit
code; neither touches files or the network.
"""

from __future__ import annotations

import polars as pl

from invsync.errors import ExitCode, FatalError, InternalError
from invsync.stages.diff import ChangeSet
from invsync.stages.ingest import StockTable
from invsync.stages.report import Counts
from invsync.stages.submit import SubmitResult
from invsync.stages.validate import Validated
from invsync.tables import ROW


def count_run(table: StockTable, checked: Validated, changes: ChangeSet,
              result: SubmitResult | None, plan: pl.DataFrame,
              rejected: pl.DataFrame) -> Counts:
    """The run's counts, each from its own source; raises InternalError if they disagree.

    ``plan`` is the plan frame (one row per change, with its ``status``); ``rejected`` the
    frame of every rejected row (validation's and the store's refusals).
    """
    from_file = changes.changes[ROW].is_not_null()
    statuses = plan["status"].value_counts()
    status = dict(zip(statuses["status"].to_list(), statuses["count"].to_list(), strict=True))
    c = Counts(rows=table.rows, blank=table.blank_rows,
               valid=checked.valid.height + checked.merged_rows + checked.location_unchecked,
               location_unchecked=checked.location_unchecked,
               invalid=checked.rejected.height, merged=checked.merged_rows,
               unchanged=changes.unchanged, changed=int(from_file.sum()),
               zeroed_missing=int((~from_file).sum()), rejected=rejected.height,
               unconfirmed=status.get("unconfirmed", 0),
               not_sent=status.get("not_sent", 0) + status.get("planned", 0))
    if result is not None:
        c.submitted = result.sent_count
        c.accepted = result.accepted_count
        c.refused = result.refused_count
    c.check()
    # The plan's statuses are derived from the results item by item: they must agree.
    for name, figure in (("accepted", c.accepted), ("refused", c.refused)):
        if status.get(name, 0) != figure:
            raise InternalError(f"internal error: the plan has {status.get(name, 0)} item(s) "
                                f"{name} but the batch results {figure}")
    return c


def outcome(counts: Counts, *, fatal: FatalError | None, braked: bool,
            dry_run: bool) -> tuple[str, int]:
    """The run's status and exit code from its counts and how it ended.

    ``fatal`` is the error that stopped the submit stage, ``braked`` whether a safety brake
    tripped (a real run then sends nothing; a dry run reports it with exit 3).
    """
    if dry_run:
        return "dry_run", int(ExitCode.SAFETY_BRAKE if braked else
                              ExitCode.REJECTED_ROWS if counts.rejected else ExitCode.OK)
    if fatal is not None:
        return "failed", int(fatal.exit_code)
    if braked:
        return "failed", int(ExitCode.SAFETY_BRAKE)
    if counts.rejected:
        return "partial", int(ExitCode.REJECTED_ROWS)
    return "succeeded", int(ExitCode.OK)


def count_unchecked(table: StockTable) -> Counts:
    """The counts of a run that read ``table`` but stopped before counting its rows: they
    are all ``unchecked`` (``rows = valid + invalid + unchecked`` still holds)."""
    c = Counts(rows=table.rows, blank=table.blank_rows, unchecked=table.rows)
    c.check()
    return c
