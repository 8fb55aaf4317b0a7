"""Unit tests of the run report (counts, rejected.csv) and of settings loading."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import fields, replace
from pathlib import Path

import polars as pl
import pytest

from invsync.errors import InternalError, UsageError
from invsync.run.config import (
    DEFAULT_API_URL,
    ENV_API_URL,
    ENV_STORE_HASH,
    ENV_TOKEN,
    Secret,
    Settings,
    load_settings,
    parse_map,
)
from invsync.stages.ingest import ROW, read_stock_file
from invsync.stages.report import (
    Counts,
    escape_formula,
    escape_formulas,
    rejected_frame,
    write_rejected_csv,
)
from invsync.stages.validate import validate

# --------------------------------------------------------------------------- Counts


def good_counts() -> Counts:
    # 10 rows: 7 valid (1 merged away -> 6 items: 2 unchanged, 4 changed), 3 invalid;
    # 4 changed: 3 submitted (2 accepted, 1 refused), 1 not sent.
    return Counts(rows=10, blank=2, valid=7, invalid=3, merged=1, unchanged=2, changed=4,
                  submitted=3, accepted=2, refused=1, unconfirmed=0, not_sent=1, rejected=4)


def test_counts_that_add_up_pass() -> None:
    good_counts().check()
    Counts().check()


@pytest.mark.parametrize(("field_name", "delta", "problem"), [
    ("rows", 1, "rows != valid + invalid"),
    ("invalid", 1, "rows != valid + invalid"),
    ("merged", 1, "valid - merged"),
    ("unchanged", -1, "valid - merged"),
    ("not_sent", 1, "submitted + not_sent"),
    ("accepted", 1, "submitted != accepted + refused + unconfirmed"),
    ("unconfirmed", 1, "submitted != accepted + refused + unconfirmed"),
    ("rejected", -1, "rejected != invalid + refused"),
])
def test_counts_that_do_not_add_up_are_caught(field_name: str, delta: int, problem: str) -> None:
    counts = good_counts()
    setattr(counts, field_name, getattr(counts, field_name) + delta)
    with pytest.raises(InternalError) as err:
        counts.check()
    assert problem in str(err.value)


def test_blank_rows_are_outside_the_sums() -> None:
    counts = good_counts()
    counts.blank = 1000
    counts.check()


# --------------------------------------------------------------------------- escaping


@pytest.mark.parametrize("text", [
    '=HYPERLINK("http://evil.example","click")', "=1+1", "+x", "-x", "@SUM(A1:A2)",
    "\tx", "\r=1", "-", "+", "-3+4", "+1 555 0100", "=", "-2e5", "@",
    # a spreadsheet skips leading blanks before it looks for a formula sign
    " =1", "  @SUM(A1)", "\u00a0=1+1", "\u3000-x", "\ufeff+A1", " \u00a0\t=1",
])
def test_escape_formula_escapes(text: str) -> None:
    assert escape_formula(text) == "'" + text
    # The cells' vectorised form (rejected.csv, plan.csv) agrees with the header's.
    assert pl.select(escape_formulas(pl.lit(text))).item() == "'" + text


@pytest.mark.parametrize("text", [
    "-3", "+3", "-3.5", "+0", "12", "-0012", "ABC-1", "a=b", "x@y.z", "", "00123",
    "café", " -3", "\u00a0+4 ", "\ufeff-1.5", " a=b",
])
def test_escape_formula_leaves_numbers_and_plain_text(text: str) -> None:
    assert escape_formula(text) == text
    assert pl.select(escape_formulas(pl.lit(text))).item() == text


def test_escape_formula_none() -> None:
    assert escape_formula(None) is None


# --------------------------------------------------------------------------- rejected.csv


def read_csv_text(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.reader(fh))


def test_rejected_csv_keeps_original_columns_and_text(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    rows = [
        ["SKU", " Location-ID ", "Qty", "Notes"],
        ["00123", "1", "abc", "keep me"],
        ["GOOD", "1", "5", ""],
        ['=HYPERLINK("http://evil.example","x")', "1", "-3", "@cmd"],
        ["-ABC", "01", "1.50", "+x"],
        ["", "1", " 7 ", "line one\nline two"],
    ]
    with source.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    table = read_stock_file(source)
    checked = validate(table)
    assert checked.rejected[ROW].to_list() == [2, 4, 5, 6]

    out = tmp_path / "rejected.csv"
    write_rejected_csv(out, table, checked.rejected)
    got = read_csv_text(out)
    assert got[0] == ["SKU", " Location-ID ", "Qty", "Notes", "row", "reason", "message"]
    body = got[1:]
    assert [r[:4] for r in body] == [
        ["00123", "1", "abc", "keep me"],
        ["'=HYPERLINK(\"http://evil.example\",\"x\")", "1", "-3", "'@cmd"],
        ["'-ABC", "01", "1.50", "'+x"],
        ["", "1", " 7 ", "line one\nline two"],
    ]
    assert [r[4] for r in body] == ["2", "4", "5", "6"]
    assert [r[5] for r in body] == ["quantity_not_whole", "quantity_negative",
                                    "quantity_not_whole", "missing_identifier"]
    messages = dict(zip(checked.rejected[ROW].to_list(), checked.rejected["message"].to_list(),
                        strict=True))
    assert [r[6] for r in body] == [messages[2], messages[4], messages[5], messages[6]]
    assert not list(tmp_path.glob("*.tmp"))

    # The file can be fixed and uploaded again: it reads back with the same mapping.
    again = read_stock_file(out)
    assert again.mapping == {"sku": "SKU", "location_id": " Location-ID ", "quantity": "Qty"}


def test_rejected_frame_renames_clashing_columns(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("sku,qty,reason,row\nA,x,damaged,7\nB,1,ok,8\n")
    table = read_stock_file(source)
    frame = rejected_frame(table, validate(table).rejected)
    assert frame.columns == ["sku", "qty", "reason", "row", "invsync_row", "invsync_reason",
                             "message"]
    assert frame.row(0) == ("A", "x", "damaged", "7", 2, "quantity_not_whole",
                            "the quantity 'x' is not a number — write how many are in "
                            "stock as a whole number, such as 12")


def test_rejected_csv_with_no_rejections_has_just_the_header(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("sku,qty\nA,1\n")
    table = read_stock_file(source)
    out = tmp_path / "rejected.csv"
    write_rejected_csv(out, table, validate(table).rejected)
    assert read_csv_text(out) == [["sku", "qty", "row", "reason", "message"]]


# --------------------------------------------------------------------------- Secret


def test_secret_never_shows_its_value(caplog: pytest.LogCaptureFixture) -> None:
    value = "sk-very-secret-1234"
    s = Secret(value)
    assert s.reveal() == value
    renderings = [str(s), repr(s), f"{s}", f"{s!r}", f"{s!s}", "%s" % s, "%r" % s,  # noqa: UP031
                  "{}".format(s), str([s]), str({"token": s}), str((s,))]  # noqa: UP032
    for text in renderings:
        assert value not in text
        assert "****" in text
    logging.getLogger("test.secret").warning("token is %s", s)
    assert value not in caplog.text
    assert bool(s) and not bool(Secret(""))


def test_settings_repr_and_public_do_not_show_the_token() -> None:
    value = "sk-very-secret-5678"
    s = Settings(store_hash="abc", token=Secret(value))
    assert value not in repr(s)
    assert value not in str(s)
    assert value not in json.dumps(s.public(), default=str)
    assert "token" not in s.public()


# --------------------------------------------------------------------------- load_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (ENV_STORE_HASH, ENV_TOKEN, ENV_API_URL):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    return monkeypatch


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "invsync.toml"
    path.write_text(text, encoding="utf-8")
    return path


CONFIG = """
store_hash = "from-config"
api_url = "http://config.example"
access_token = "config-token"
location_id = 2
batch_size = 100
concurrency = 2
reason = "config reason"
duplicates = "sum"

[columns]
"Item Number" = "sku"

[quantity]
buffer = 1
text_map = { "in stock" = 100 }

[retry]
max_attempts = 3
base_delay_s = 0.25
"""


def test_config_file_values(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = load_settings(write_config(tmp_path, CONFIG), {})
    assert s.store_hash == "from-config"
    assert s.api_url == "http://config.example"
    assert s.token is not None and s.token.reveal() == "config-token"
    assert (s.location_id, s.batch_size, s.concurrency) == (2, 100, 2)
    assert s.reason == "config reason"
    assert s.duplicates == "sum"
    assert s.column_map == {"Item Number": "sku"}
    assert s.rules.buffer == 1 and dict(s.rules.text_map) == {"in stock": 100}
    assert (s.retry.max_attempts, s.retry.base_delay_s) == (3, 0.25)
    s.check(needs_store=True)


def test_precedence_flag_over_env_over_config(clean_env: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG)
    clean_env.setenv(ENV_STORE_HASH, "from-env")
    clean_env.setenv(ENV_API_URL, "http://env.example")

    s = load_settings(config, {"store_hash": "from-flag", "location_id": 5, "batch_size": None,
                               "column_map": {"Qty Left": "quantity"}})
    assert s.store_hash == "from-flag"
    assert s.api_url == "http://env.example"
    assert s.location_id == 5
    assert s.batch_size == 100  # None means "flag not given"
    assert s.column_map == {"Item Number": "sku", "Qty Left": "quantity"}

    s = load_settings(config, {})
    assert s.store_hash == "from-env"

    clean_env.delenv(ENV_STORE_HASH)
    clean_env.delenv(ENV_API_URL)
    s = load_settings(config, {})
    assert s.store_hash == "from-config"
    assert s.api_url == "http://config.example"

    s = load_settings(None, {})
    assert s.store_hash is None
    assert s.api_url == DEFAULT_API_URL
    assert s.location_id == 1 and s.batch_size == 2000
    # One write in flight, as BigCommerce's inventory guidance asks, and a share of the
    # store's quota left to its other apps (docs/bigcommerce-api.md).
    assert s.concurrency == 1 and s.quota_share == 0.8
    # Plans are made against the store's live levels.
    assert s.baseline == "live" and s.verify_lag_s == 30.0


def test_token_only_from_env_or_config(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG)
    # A token passed like a flag is ignored.
    s = load_settings(None, {"token": "flag-token", "access_token": "flag-token",
                             "store_hash": "x"})
    assert s.token is None
    with pytest.raises(UsageError, match=ENV_TOKEN):
        s.check(needs_store=True)
    s.check(needs_store=False)

    clean_env.setenv(ENV_TOKEN, "env-token")
    s = load_settings(config, {"token": "flag-token"})
    assert isinstance(s.token, Secret) and s.token.reveal() == "env-token"

    clean_env.delenv(ENV_TOKEN)
    s = load_settings(config, {"access_token": "flag-token"})
    assert s.token is not None and s.token.reveal() == "config-token"


def test_no_store_hash_is_a_usage_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv(ENV_TOKEN, "t")
    s = load_settings(None, {})
    with pytest.raises(UsageError, match="store hash"):
        s.check(needs_store=True)


def test_unknown_config_key_is_a_usage_error(clean_env: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    config = write_config(tmp_path, 'store_hash = "x"\nbatchsize = 10\ntoken = "t"\n')
    with pytest.raises(UsageError) as err:
        load_settings(config, {})
    assert "batchsize" in str(err.value) and "token" in str(err.value)
    assert "store_hash" not in str(err.value).split("unknown key")[1]


@pytest.mark.parametrize("text", [
    "store_hash = \n",                     # not TOML
    'batch_size = "many"\n',               # not a number
    "[retry]\nmax_attempts = \"x\"\n",     # bad retry value
    "[retry]\nbase_delay_s = \"fast\"\n",  # bad retry value
    "[retry]\nbogus = 1\n",                # unknown retry key
    "[quantity]\nbuffer = -1\n",           # negative buffer
    "[quantity]\ntext_map = { a = \"b\" }\n",
])
def test_bad_config_values_are_usage_errors(clean_env: pytest.MonkeyPatch, tmp_path: Path,
                                            text: str) -> None:
    with pytest.raises(UsageError):
        load_settings(write_config(tmp_path, text), {})


def test_missing_config_file_is_a_usage_error(clean_env: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", {})


@pytest.mark.parametrize(("field_name", "value"), [
    ("batch_size", 0), ("batch_size", 2001), ("concurrency", 0), ("concurrency", 33),
    ("location_id", 0), ("duplicates", "merge"),
])
def test_settings_check_rejects_values_that_cannot_work(field_name: str, value: object) -> None:
    s = Settings(store_hash="x", token=Secret("t"))
    s.check(needs_store=True)
    with pytest.raises(UsageError):
        replace(s, **{field_name: value}).check(needs_store=False)


def test_settings_token_field_is_hidden_from_repr() -> None:
    token_field = next(f for f in fields(Settings) if f.name == "token")
    assert token_field.repr is False


# --------------------------------------------------------------------------- parse_map


def test_parse_map() -> None:
    assert parse_map(()) == {}
    assert parse_map(("Item Number=sku", " Qty Left = quantity ", "Store=location_id")) == {
        "Item Number": "sku", "Qty Left": "quantity", "Store": "location_id"}


@pytest.mark.parametrize("pair", ["nosep", "=sku", "Header=", " = ", "", "  =  "])
def test_parse_map_errors(pair: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_map(("Good=sku", pair))
    assert repr(pair) in str(err.value)
