"""The contracts in schemas/: valid schema files that agree with the code, and strict
enough that a renamed, missing or mistyped field fails (every integration test's outputs
are validated against them by conftest's ``outputs_keep_their_contracts``)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from contracts import (
    ContractError,
    check_event,
    check_events,
    check_report,
    check_run_folder,
    check_table,
    load,
)
from jsonschema import Draft202012Validator

from invsync import contracts
from invsync.errors import ExitCode
from invsync.events import EVENT_NAMES
from invsync.rules.stock import REASONS
from invsync.stages.report import Counts, RunReport, new_run_id, plan_frame, write_run_folder
from invsync.tables import PLAN_COLUMNS, PLAN_STATUSES, ROW

JSON_SCHEMAS = ["report.schema.json", "events.schema.json"]
TABLE_SCHEMAS = ["plan.table.json", "rejected.table.json"]


@pytest.mark.parametrize("name", JSON_SCHEMAS + TABLE_SCHEMAS)
def test_the_package_ships_each_contract_as_in_schemas(name: str) -> None:
    assert contracts.load(name) == load(name)


@pytest.mark.parametrize("name", JSON_SCHEMAS)
def test_json_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = contracts.load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", TABLE_SCHEMAS)
def test_table_schemas_name_typed_fields(name: str) -> None:
    schema = contracts.load(name)
    assert schema["fields"], name
    for field in schema["fields"]:
        assert set(field) <= {"name", "type", "description", "constraints"}, field
        assert field["type"] in ("integer", "string"), field


def test_the_contracts_agree_with_the_code() -> None:
    events = contracts.load("events.schema.json")
    assert set(EVENT_NAMES) | {"log"} == set(events["$defs"]) - {"ts"}
    report = contracts.load("report.schema.json")
    assert set(report["properties"]["exit_code"]["enum"]) == {int(c) for c in ExitCode}
    assert report["properties"]["rejected"]["items"]["properties"]["reason"]["enum"] \
        == list(REASONS)
    assert set(report["properties"]["counts"]["properties"]) == set(Counts.__dataclass_fields__)
    top = set(RunReport.__dataclass_fields__) - {"plan"} | {"version"}
    assert set(report["properties"]) == top
    plan = contracts.load("plan.table.json")
    assert plan["x-invsync-always"] == list(PLAN_COLUMNS)
    status = next(f for f in plan["fields"] if f["name"] == "status")
    assert status["constraints"]["enum"] == list(PLAN_STATUSES)


def _report(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A run folder written by the report stage (report.json and plan.csv)."""
    report = RunReport(run_id=new_run_id(), status="succeeded", started_at="2026-12-06T10:00:00Z",
                       counts=Counts(rows=1, valid=1, changed=1, submitted=1, accepted=1),
                       store={"store_hash": "abc", "api_url": "http://x", "profile": None})
    changes = pl.DataFrame({"location_id": [1], "address": ["sku"], "address_key": ["A-1"],
                            "old_quantity": [None], "quantity": [5], ROW: [2]},
                           schema_overrides={"old_quantity": pl.Int64})
    folder = write_run_folder(report, tmp_path / "run", None, None,
                              plan_frame(changes, "accepted"))
    return json.loads((folder / "report.json").read_text()), folder


def test_a_written_run_folder_validates(tmp_path: Path) -> None:
    _, folder = _report(tmp_path)
    check_run_folder(folder)
    rows = check_table(folder / "plan.csv")
    assert rows[0]["item"] == "A-1" and rows[0]["status"] == "accepted"


@pytest.mark.parametrize("breakage", [
    "rename top-level", "drop top-level", "rename count", "wrong type", "bad status",
    "unknown reason", "batch field renamed", "token in options",
])
def test_a_broken_report_fails(tmp_path: Path, breakage: str) -> None:
    good, _ = _report(tmp_path)
    check_report(good)
    bad = copy.deepcopy(good)
    if breakage == "rename top-level":
        bad["transactions"] = bad.pop("transaction_ids")
    elif breakage == "drop top-level":
        del bad["exit_code"]
    elif breakage == "rename count":
        bad["counts"]["updated"] = bad["counts"].pop("accepted")
    elif breakage == "wrong type":
        bad["counts"]["rows"] = "1"
    elif breakage == "bad status":
        bad["status"] = "ok"
    elif breakage == "unknown reason":
        bad["rejected"] = [{"row": 2, "column": "qty", "value": "x", "reason": "bad_qty",
                            "message": "m"}]
    elif breakage == "batch field renamed":
        bad["batches"] = [{"index": 0, "location_id": 1, "items": 1, "status": "accepted",
                           "transaction_id": None, "tries": 1}]
    elif breakage == "token in options":
        bad["options"]["token"] = "secret"
    with pytest.raises(ContractError):
        check_report(bad)


def _event(name: str, **data: Any) -> dict[str, Any]:
    return {"ts": "2026-12-06T10:00:00.123Z", "event": name, **data}


def test_events_validate_and_a_broken_one_fails() -> None:
    finished = _event("run_finished", run_id="r", status="succeeded", profile=None,
                      summary="invsync: succeeded run=r", exit_code=0,
                      counts=dict.fromkeys(Counts.__dataclass_fields__, 0), transactions=0,
                      error=None, report_dir="/x")
    check_event(finished)
    for bad in (
        {**finished, "exit": 0},  # a renamed field
        {k: v for k, v in finished.items() if k != "report_dir"},  # a missing one
        {**finished, "exit_code": 7},  # not an exit code
        {**finished, "ts": "yesterday"},
        _event("batch_done", run_id="r"),  # an event name nobody documents
        _event("retry", method="PUT", path="/x", attempt=0, status=429, wait_s=1, error="e"),
    ):
        with pytest.raises(ContractError):
            check_event(bad)
    stdout = "\n".join([json.dumps(finished), "not json", json.dumps(_event("read_page", items=3))])
    assert [e["event"] for e in check_events(stdout)] == ["run_finished", "read_page"]


PLAN_HEADER = "location_id,identifier,item,before,after,delta,row,status,read_at\n"


@pytest.mark.parametrize(("text", "why"), [
    ("location_id,identifier,item,old,new,delta,row,status,read_at\n1,sku,A,,5,5,2,accepted,\n",
     "columns"),
    (PLAN_HEADER + "1,sku,A,,5,5,2,done,\n", "status"),
    (PLAN_HEADER + "1,sku,A,,five,5,2,accepted,\n", "not an integer"),
    (PLAN_HEADER + "1,sku,,,5,5,2,accepted,\n", "required"),
    (PLAN_HEADER + "1,sku,A,,5,5,2,accepted,\n1,sku,A,,6,6,3,accepted,\n", "primary key"),
    (PLAN_HEADER + "1,sku,A,,5,5,2\n", "cells"),
])
def test_a_broken_plan_csv_fails(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "plan.csv"
    path.write_text(PLAN_HEADER + "1,sku,A,,5,5,2,accepted,\n")
    check_table(path)
    path.write_text(text)
    with pytest.raises(ContractError, match=why):
        check_table(path)


def test_rejected_csv_keeps_the_file_s_columns_first(tmp_path: Path) -> None:
    path = tmp_path / "rejected.csv"
    path.write_text("\ufeffsku;qty;invsync_row;reason;message\nA;x;2;quantity_not_whole;m\n",
                    encoding="utf-8")
    assert check_table(path)[0]["sku"] == "A"
    path.write_text("\ufeffsku,qty,row,why,message\nA,x,2,quantity_not_whole,m\n")
    with pytest.raises(ContractError, match="last columns"):
        check_table(path)
    path.write_text("\ufeffsku,qty,row,reason,message\nA,x,2,too_silly,m\n")
    with pytest.raises(ContractError, match="reason"):
        check_table(path)
