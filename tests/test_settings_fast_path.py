"""Settings are built without pydantic when every value is of its field's own type (as flags,
the environment and a checked config file give them): a run without a config file never
imports pydantic. Any other value is checked by pydantic as before; both ways agree."""

from __future__ import annotations

import random
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from invsync.redact import Secret
from invsync.run.brakes import BrakeLimits
from invsync.run.config import Settings
from invsync.stages.validate import QuantityRules
from invsync.store.limits import RetryPolicy


class Text(str):
    pass


POOLS: dict[str, list[Any]] = {
    "text": ["abc", "", None, 5, Text("sub"), b"bytes", 2.5, True],
    "int": [1, 7, 2000, 0, -3, True, "12", "x", 3.0, 3.5, None],
    "bool": [True, False, 1, 0, "yes", "true", None, 2],
    "float": [0.0, 2.5, 30, -1.0, "7", "x", True, None, float("inf")],
    "path": [Path("/tmp/x"), "/tmp/y", PurePosixPath("/tmp/z"), None, 5],
    "dict": [{}, {"a": "b"}, {"a": 1}, {1: "b"}, [("a", "b")], None, "x"],
    "rules": [QuantityRules(), QuantityRules(buffer=2), {"buffer": 1}, None],
    "retry": [RetryPolicy(), RetryPolicy(max_attempts=2), None, {}],
    "brakes": [BrakeLimits(), BrakeLimits(allow_empty=True), None, {}],
    "token": [Secret("tok-123"), None, "plain-token", 5],
    "baseline": ["live", "snapshot", "other", None, 1],
    "header": [None, 1, 3, 0, -1, "2", True],
}
KIND = {
    "token": "token", "state_dir": "path", "report_dir": "path", "config_path": "path",
    "column_map": "dict", "notify": "dict", "sources": "dict", "rules": "rules",
    "retry": "retry", "brakes": "brakes", "baseline": "baseline", "header_row": "header",
    **{n: "int" for n in ("location_id", "batch_size", "concurrency")},
    **{n: "bool" for n in ("dry_run", "full", "verify_tls", "zero_missing", "plan_file")},
    **{n: "float" for n in ("verify_lag_s", "quota_share", "wait_lock_s", "max_as_of_age_s",
                            "baseline_every_s", "retention_s")},
}


def by_pydantic(values: dict[str, Any]) -> Settings:
    """The settings as pydantic alone builds them (the plain path)."""
    from invsync.run.config_file import CHECKING, _settings_adapter

    token = CHECKING.set(True)
    try:
        built = _settings_adapter().validate_python(values)
    finally:
        CHECKING.reset(token)
    assert isinstance(built, Settings)
    return built


def outcome(build: Any) -> tuple[str, Any]:
    from pydantic import ValidationError

    try:
        settings = build()
    except ValidationError as exc:
        return "error", [(e["loc"], e["type"], e["msg"]) for e in exc.errors()]
    return "ok", [(f.name, type(getattr(settings, f.name)), repr(getattr(settings, f.name)))
                  for f in fields(settings)]


def test_every_field_has_its_own_types_known() -> None:
    # A field left out would always go through pydantic: the fast path would be lost unseen.
    from invsync.run.config import _TYPES

    assert set(_TYPES) == {f.name for f in fields(Settings)}


def test_both_ways_agree_on_random_values() -> None:
    rng = random.Random(2614)
    names = [f.name for f in fields(Settings)]
    for _ in range(600):
        values = {}
        for name in rng.sample(names, rng.randrange(1, 4)):
            values[name] = rng.choice(POOLS[KIND.get(name, "text")])
        fast = outcome(lambda v=values: Settings(**v))
        assert fast == outcome(lambda v=values: by_pydantic(v)), values


def test_plain_values_keep_pydantic_unloaded(tmp_path: Path) -> None:
    code = ("import sys\n"
            "from invsync.run.config import load_settings\n"
            "s = load_settings(None, {'batch_size': 10, 'dry_run': True, 'wait_lock': 2.0,\n"
            "                         'column_map': {'Qty': 'quantity'}, 'header_row': 2})\n"
            "assert s.batch_size == 10 and s.wait_lock_s == 2.0 and s.header_row == 2\n"
            "assert 'pydantic' not in sys.modules, 'pydantic loaded'\n"
            "import dataclasses\n"
            "dataclasses.replace(s, concurrency=4)\n"
            "assert 'pydantic' not in sys.modules, 'pydantic loaded by replace'\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BIGCOMMERCE_STORE_HASH": "abc",
           "BIGCOMMERCE_ACCESS_TOKEN": "tok-1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False, env=env)
    assert done.returncode == 0, done.stderr


def test_each_settings_holds_its_own_dicts() -> None:
    mapping = {"Qty": "quantity"}
    settings = Settings(column_map=mapping)
    mapping["Sku"] = "sku"
    assert settings.column_map == {"Qty": "quantity"}


@pytest.mark.parametrize("values", [{"batch_size": "12"}, {"wait_lock_s": 3},
                                    {"state_dir": "/tmp/s"}, {"sheet": Text("Stock")}])
def test_a_value_of_another_type_is_converted_as_pydantic_does(values: dict[str, Any]) -> None:
    settings = Settings(**values)
    assert outcome(lambda: settings) == outcome(lambda: by_pydantic(values))
    assert outcome(lambda: replace(settings)) == outcome(lambda: settings)


@pytest.mark.parametrize(("flags", "message"), [
    (["--header-row", "0"], "header_row must be 1 or more, not 0"),
    (["--wait-lock", "-1"], "wait_lock_s must be 0.0 or more, not -1.0"),
])
def test_the_cli_refuses_a_value_out_of_range_as_before(
        tmp_path: Path, flags: list[str], message: str) -> None:
    # Of its field's own type but outside its constraint: pydantic checks it, exit 64.
    from tests.conftest import run_invsync, write_stock

    stock = write_stock(tmp_path / "stock.csv", {(1, "A"): 1})
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BIGCOMMERCE_STORE_HASH": "abc"}
    done = run_invsync(["sync", str(stock), "--dry-run", "--state-dir", str(tmp_path / "s"),
                        *flags], env)
    assert done.returncode == 64, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("report.json"))
