"""Unit tests of :class:`invsync.run.config.Settings`: frozen, and its config file keys,
public view and round trips all derived from the fields' metadata."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from invsync.run.brakes import BrakeLimits
from invsync.run.config import (
    _KNOWN_KEYS,
    NOT_FROM_FILE,
    NOT_PUBLIC,
    Secret,
    Settings,
    config_text,
    load_settings,
    settings_from_public,
)
from invsync.stages.validate import QuantityRules
from invsync.store.limits import RetryPolicy

TOKEN = "sk-round-trip-secret-9876"


def every_file_value(tmp_path: Path) -> Settings:
    """Settings where every field a config file can set differs from its default."""
    return Settings(
        store_hash="store-1", token=Secret(TOKEN), api_url="http://127.0.0.1:9",
        location_id=3, reason='a "quoted" reason\twith a tab, é and \x7f',
        state_dir=tmp_path / "state", report_dir=tmp_path / "reports", batch_size=50,
        concurrency=2, sheet="Stock ✓", encoding="cp1252", header_row=4,
        column_map={"Item #": "sku", "Qty \"left\"": "quantity"}, duplicates="sum",
        rules=QuantityRules(text_map={"in stock": 100, "OUT": 0}, buffer=2,
                            clamp_negative=True, maximum=500),
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.25, max_delay_s=2.0,
                          max_total_s=30.0, timeout_s=5.0, max_wait_s=7.5),
        verify_tls=False, zero_missing=True, baseline="snapshot", baseline_every_s=7 * 86400.0,
        verify_lag_s=5.0, quota_share=0.5, store_id="shop-eu",
        brakes=BrakeLimits(min_rows_ratio=0.25, max_zero_share=0.75),
        notify={"url": "https://hooks.example/x", "on": ["failed"]},
        as_of="mtime", max_as_of_age_s=6 * 3600.0,
        sources={"warehouse": {"url": "sftp://u@h/out/*.csv", "pick": "newest",
                               "max_age": "26h", "headers": {"X-Key": "v"}}},
        source="warehouse-nightly", retention_s=90 * 86400.0,
    )


def test_settings_are_frozen() -> None:
    s = Settings()
    for name, value in [("plan_file", True), ("reason", "x"), ("token", Secret("t")),
                        ("batch_size", 1)]:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(s, name, value)
    assert dataclasses.replace(s, plan_file=True).plan_file is True
    assert s.plan_file is False


def test_every_field_is_a_file_key_or_marked_not_from_file() -> None:
    keys = []
    for f in dataclasses.fields(Settings):
        assert "file" in f.metadata and "public" in f.metadata, f.name
        file_key, public = f.metadata["file"], f.metadata["public"]
        assert file_key is NOT_FROM_FILE or (isinstance(file_key, str) and file_key), f.name
        assert public is NOT_PUBLIC or (isinstance(public, str) and public), f.name
        if file_key is not NOT_FROM_FILE:
            keys.append(file_key)
            # A file key without a loader would be accepted and then ignored.
            assert f.metadata["load"] is not None, f.name
    assert len(keys) == len(set(keys))
    assert set(keys) == _KNOWN_KEYS
    # The keys the README documents (and config files in use) keep working.
    assert {
        "store_hash", "access_token", "api_url", "location_id", "reason", "state_dir",
        "report_dir", "batch_size", "concurrency", "sheet", "duplicates", "columns",
        "quantity", "retry", "verify_tls", "zero_missing", "brakes", "baseline",
        "baseline_every", "notify", "encoding", "header_row",
        "as_of", "max_as_of_age", "sources", "source", "retention", "verify_lag_s", "store",
        "store_id"} == _KNOWN_KEYS


def test_round_trip_settings_file_settings(config_file: Callable[[str], Path],
                                           tmp_path: Path) -> None:
    original = every_file_value(tmp_path)
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if f.metadata["file"] is not NOT_FROM_FILE:
            assert getattr(original, f.name) != getattr(defaults, f.name), f.name
    path = config_file(config_text(original, with_token=True))
    loaded = load_settings(path, {})
    assert loaded == dataclasses.replace(original, config_path=path,
                                         token_source=f"access_token in {path}")
    assert loaded.token is not None and loaded.token.reveal() == TOKEN
    # Defaults round-trip too (nothing is written for what no file can hold).
    config_file(config_text(Settings(state_dir=tmp_path / "s")))
    assert load_settings(path, {}) == Settings(state_dir=tmp_path / "s", config_path=path)


def test_config_text_leaves_the_token_out_unless_asked(tmp_path: Path) -> None:
    text = config_text(every_file_value(tmp_path))
    assert TOKEN not in text and "access_token" not in text


def test_public_view_never_holds_the_token_and_keeps_its_keys(tmp_path: Path) -> None:
    public = every_file_value(tmp_path).public()
    assert TOKEN not in json.dumps(public, default=str)
    assert "token" not in public and "access_token" not in public
    # report.json's "options": the names past reports carry (resume reads them back).
    assert set(public) == {
        "store_hash", "api_url", "location_id", "reason", "batch_size", "concurrency",
        "dry_run", "full", "sheet", "encoding", "header_row", "column_map", "duplicates",
        "quantity_rules", "zero_missing", "brakes", "verify_tls", "baseline",
        "baseline_every_s", "plan_file", "source", "config", "profile",
        "as_of", "max_as_of_age_s", "verify_lag_s", "quota_share", "store_id", "token_source"}
    assert public["quantity_rules"] == {"text_map": {"in stock": 100, "OUT": 0}, "buffer": 2,
                                        "clamp_negative": True, "maximum": 500}
    assert public["brakes"]["max_zero_share"] == 0.75
    json.dumps(public, default=str)


def test_round_trip_through_the_public_view(tmp_path: Path) -> None:
    recorded = dataclasses.replace(
        every_file_value(tmp_path), full=True, plan_file=True, source="portal",
        dry_run=True, brakes=BrakeLimits(0.25, 0.75, allow_empty=True, allow_zeroing=True))
    options = json.loads(json.dumps(recorded.public(), default=str))
    base = Settings(store_hash="other", token=Secret("t"), state_dir=tmp_path / "base")
    resumed = settings_from_public(base, options)
    for f in dataclasses.fields(Settings):
        expected = getattr(recorded if f.metadata["resume"] else base, f.name)
        if f.name == "dry_run":
            expected = False  # a resumed run sends
        assert getattr(resumed, f.name) == expected, f.name
    # A recorded view without a field keeps the base's value.
    assert settings_from_public(base, {}) == dataclasses.replace(base, dry_run=False)


def test_secrets_compare_by_value_and_still_never_show() -> None:
    assert Secret(TOKEN) == Secret(TOKEN) and hash(Secret(TOKEN)) == hash(Secret(TOKEN))
    assert Secret(TOKEN) != Secret(TOKEN + "x") and Secret(TOKEN) != TOKEN
    assert TOKEN not in repr(Settings(token=Secret(TOKEN)))
