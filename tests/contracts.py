"""Validate invsync's outputs against the contracts in ``schemas/`` (``invsync.contracts``).

``report.json`` and each ``--log-format json`` line against their JSON Schema (draft
2020-12); ``plan.csv`` and ``rejected.csv`` against their Table Schema (a small checker of
the parts those files use: field names per ``fieldsMatch``, integer/string types,
``required``, ``enum``, ``minimum``, ``missingValues`` and ``primaryKey``).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
"""The contract files, read from the repository (tests/test_contracts.py checks that the
installed ``invsync.contracts`` serves the same): mutation runs import a copy of the
package that holds no data files."""

_INTEGER = re.compile(r"^[+-]?\d+$")


class ContractError(AssertionError):
    """An output that breaks its contract (names the file and what is wrong)."""


def load(name: str) -> Any:
    """The parsed contract file ``schemas/<name>``."""
    return json.loads((SCHEMAS / name).read_text(encoding="utf-8"))


@cache
def _validator(name: str) -> Draft202012Validator:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _check(name: str, doc: Any, where: str) -> None:
    errors = sorted(_validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise ContractError(f"{where} breaks {name}:\n" + "\n".join(_say(e) for e in errors))


def _say(error: ValidationError) -> str:
    path = "/".join(str(p) for p in error.absolute_path) or "(top)"
    return f"  at {path}: {error.message}"


def check_report(report: dict[str, Any] | Path, where: str = "report.json") -> dict[str, Any]:
    """Validate a report.json (a parsed dict or its path) against report.schema.json."""
    if isinstance(report, Path):
        where = str(report)
        report = json.loads(report.read_text(encoding="utf-8"))
    assert isinstance(report, dict)
    _check("report.schema.json", report, where)
    return report


def check_event(event: dict[str, Any], where: str = "event") -> None:
    """Validate one JSON event (one ``--log-format json`` line, parsed)."""
    _check("events.schema.json", event, f"{where} ({event.get('event')!r})")


def check_events(stdout: str, where: str = "stdout") -> list[dict[str, Any]]:
    """Validate every JSON object line of ``stdout``; the parsed events."""
    events = []
    for number, line in enumerate(stdout.splitlines(), 1):
        if line.startswith("{"):
            event = json.loads(line)
            check_event(event, f"{where} line {number}")
            events.append(event)
    return events


def check_table(path: Path, name: str | None = None) -> list[dict[str, str]]:
    """Validate a CSV file against its Table Schema (``plan.table.json`` for ``plan.csv``,
    ``rejected.table.json`` for ``rejected.csv``, or ``name``); its rows."""
    name = name or path.name.removesuffix(".csv") + ".table.json"
    schema = load(name)
    text = path.read_text(encoding="utf-8-sig")
    delimiter = _delimiter(text, [f["name"] for f in schema["fields"]])
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if not rows:
        raise ContractError(f"{path}: no header row")
    header, body = rows[0], rows[1:]
    fields = _match_fields(path, schema, header)
    missing = set(schema.get("missingValues", [""]))
    problems: list[str] = []
    for number, row in enumerate(body, 2):
        if len(row) != len(header):
            problems.append(f"line {number}: {len(row)} cells for {len(header)} columns")
            continue
        for field, column in fields:
            problems += _cell_problems(field, row[column], missing, f"line {number}")
    problems += _key_problems(schema, header, body)
    if problems:
        raise ContractError(f"{path} breaks {name}:\n  " + "\n  ".join(problems[:20]))
    return [dict(zip(header, row, strict=True)) for row in body]


def _delimiter(text: str, names: list[str]) -> str:
    """The file's delimiter: the one its header row splits the schema's last field by."""
    first = text.split("\n", 1)[0]
    for candidate in (",", ";", "\t", "|"):
        if first.rstrip("\r").split(candidate)[-1].removeprefix("invsync_") == names[-1]:
            return candidate
    return ","


def _match_fields(path: Path, schema: dict[str, Any],
                  header: list[str]) -> list[tuple[dict[str, Any], int]]:
    """(field, column index) of each schema field, checking ``fieldsMatch``."""
    names = [f["name"] for f in schema["fields"]]
    if schema.get("fieldsMatch") == "subset":
        # Every column is a field, in the schema's order; the always-there ones are there.
        always = schema.get("x-invsync-always", names)
        if [h for h in header if h in always] != always or \
                [n for n in names if n in header] != header:
            raise ContractError(f"{path}: columns {header}, the contract says {names} "
                                f"(always {always})")
        return [(f, header.index(f["name"])) for f in schema["fields"] if f["name"] in header]
    if schema.get("fieldsMatch", "exact") == "exact":
        if header != names:
            raise ContractError(f"{path}: columns {header}, the contract says {names}")
        return list(zip(schema["fields"], range(len(names)), strict=True))
    # superset: the file's own columns come first, the schema's fields last, in order
    # (a field the file already had is written with the prefix invsync_).
    tail = [h.removeprefix("invsync_") for h in header[-len(names):]]
    if len(header) < len(names) or tail != names:
        raise ContractError(f"{path}: the last columns are {header[-len(names):]}, "
                            f"the contract says {names}")
    start = len(header) - len(names)
    return [(f, start + i) for i, f in enumerate(schema["fields"])]


def _cell_problems(field: dict[str, Any], cell: str, missing: set[str], where: str) -> list[str]:
    constraints = field.get("constraints", {})
    name = field["name"]
    if cell in missing:
        return [f"{where}: {name} is required"] if constraints.get("required") else []
    if field["type"] == "integer":
        if not _INTEGER.match(cell):
            return [f"{where}: {name} {cell!r} is not an integer"]
        value: Any = int(cell)
    else:
        value = cell
    out = []
    if "enum" in constraints and value not in constraints["enum"]:
        out.append(f"{where}: {name} {cell!r} is not one of {constraints['enum']}")
    if "minimum" in constraints and value < constraints["minimum"]:
        out.append(f"{where}: {name} {cell!r} is below {constraints['minimum']}")
    return out


def _key_problems(schema: dict[str, Any], header: list[str],
                  body: Iterable[list[str]]) -> list[str]:
    key = schema.get("primaryKey")
    if not key:
        return []
    index = [header.index(k) for k in key]
    seen: set[tuple[str, ...]] = set()
    out = []
    for row in body:
        value = tuple(row[i] for i in index if i < len(row))
        if value in seen:
            out.append(f"primary key {key} repeated: {value}")
        seen.add(value)
    return out


def check_run_folder(folder: Path) -> None:
    """Validate every contract file a run folder holds."""
    check_report(folder / "report.json")
    for name in ("plan.csv", "rejected.csv"):
        if (folder / name).exists():
            check_table(folder / name)


def check_outputs_under(root: Path) -> int:
    """Validate every run folder (a folder holding report.json) under ``root``; how many."""
    if not root.exists():
        return 0
    folders = [p.parent for p in root.rglob("report.json") if p.is_file()]
    for folder in folders:
        check_run_folder(folder)
    return len(folders)
