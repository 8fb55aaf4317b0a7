"""The settings as one typed model: the config file's sections (pydantic, strict, unknown
keys refused) give exit-64 messages naming the key; ``Settings.from_config`` refuses what
it does not know; webhooks retry with the store's jittered policy; ``dir``/``help`` of the
package show its API without ``import invsync`` loading polars."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from invsync.errors import StalePlan, UsageError
from invsync.run.config import (
    ENV_API_URL,
    ENV_STORE_HASH,
    ENV_TOKEN,
    Settings,
    load_settings,
)
from tests.conftest import run_invsync, write_stock

SECRET = "sk-live-0123456789abcdef"


ConfigFile = Callable[[str], Path]


def refusal(config_file: ConfigFile, text: str, profile: str | None = None) -> str:
    path = config_file(text)
    with pytest.raises(UsageError) as err:
        load_settings(path, {"profile": profile})
    message = str(err.value)
    assert message.startswith(f"config file {path}: "), message
    assert "\n" not in message and "Input should" not in message, message
    assert "validation error" not in message and "pydantic" not in message, message
    return message.removeprefix(f"config file {path}: ")


@pytest.mark.parametrize(("text", "expected"), [
    ('[notify]\nurl = "https://hooks.example/x"\nattempts = "x"\n',
     "notify.attempts must be a whole number from 1 to 10, not 'x'"),
    ('[notify]\nurl = "https://hooks.example/x"\nattempts = 11\n',
     "notify.attempts must be a whole number from 1 to 10, not 11"),
    ('[notify]\nurl = "https://hooks.example/x"\ntimeout_s = 0\n',
     "notify.timeout_s must be a number of seconds above 0 and at most 600, not 0"),
    ('batch_size = "10"\n', "batch_size must be a whole number, not '10'"),
    ("location_id = true\n", "location_id must be a whole number, not True"),
    ("location_id = 2.5\n", "location_id must be a whole number, not 2.5"),
    ('verify_tls = "no"\n', "verify_tls must be true or false, not 'no'"),
    ("sheet = 2\n", "sheet must be text (in quotes), not 2"),
    ("[store]\nquota_share = 0\n",
     "store.quota_share must be a share above 0 and at most 1 (such as 0.8), not 0"),
    ('[brakes]\nmax_zero_share = "30%"\n',
     "brakes.max_zero_share must be a share from 0 to 1 (such as 0.3), not '30%'"),
    ("[retry]\nmax_attempts = 0\n", "retry.max_attempts must be a whole number, 1 or more"),
    ('[retry]\nmax_atempts = 3\n',
     "[retry]: unknown key(s) max_atempts (did you mean: max_atempts -> max_attempts?)"),
    ("batchsize = 5\n",
     "unknown key(s) in top level: batchsize (did you mean: batchsize -> batch_size?)"),
    ('duplicates = "merge"\n', "duplicates must be one of reject, sum or last, not 'merge'"),
    ('baseline_every = "weekly"\n', "baseline_every must be a positive duration"),
    ("brakes = 0.5\n", "brakes must be a table ([brakes]), not 0.5"),
    ('[notify]\nurl = "https://hooks.example/x"\non = ["sometimes"]\n',
     "notify.on: unknown event(s) sometimes (known: failed,"),
    ("[notify]\non = [\"failed\"]\n", "notify: give url = \"https://...\""),
    # Keys of two shapes (text or number, one or a list) name the key, not a shape.
    ("baseline_every = true\n", "baseline_every must be a positive duration"),
    ("verify_lag_s = -1\n", "verify_lag_s must be a positive duration"),
    ('[notify]\nurl = "https://hooks.example/x"\non = [5]\n',
     "notify.on must be a list of event names (known: failed,"),
    ("[notify]\nurls = 5\n", 'notify.urls must be a list of "https://..."'),
    ('[sources.w]\nurl = "/x"\nmax_age = true\n',
     "[sources.w] max_age must be a positive duration"),
    ('[[notify.hooks]]\nurl = "https://hooks.example/x"\non = "sometimes"\n',
     "notify.hooks[1].on: unknown event(s) sometimes"),
    # A source's url is checked where the file is read: file, table and key named.
    ('[sources.w]\nurl = "ftp//x"\n', '[sources.w] url must be "sftp://HOST/path", '
     '"s3://BUCKET/key", "https://..." or a local path: \'ftp//x\': a URL needs ftp:// '
     'before its host; for a local path, write ./ftp//x'),
    ('[sources.w]\nurl = "sftp://"\n',
     '[sources.w] url must be "sftp://HOST/path", "s3://BUCKET/key", "https://..." or a '
     "local path: 'sftp://': the URL names no host (or bucket)"),
    ('[sources.w]\nurl = "https:///out/stock.csv"\n', "[sources.w] url must be "),
    ('[sources.w]\nurl = "gopher://h/x.csv"\n', "[sources.w] url must be "),
    ('[sources.w]\nurl = "sftp:/h/x.csv"\n', "[sources.w] url must be "),
    ('[sources.w]\nurl = "sftp://h:ssh/x.csv"\n', "[sources.w] url must be "),
    ('[profiles.p.sources.w]\nurl = "sftp://"\n', "[profiles.p.sources.w] url must be "),
])
def test_a_bad_value_is_refused_naming_the_key_and_what_is_allowed(
        config_file: ConfigFile, text: str, expected: str) -> None:
    assert refusal(config_file, text).startswith(expected)


def test_profile_keys_are_checked_and_named_with_their_profile(
        config_file: ConfigFile) -> None:
    text = ('[notify]\nurl = "https://hooks.example/x"\n'
            "[profiles.night.notify]\nattempts = 0\n")
    # Checked even when another profile (or none) is in force: a typo waits for no night.
    for profile in (None, "night"):
        assert refusal(config_file, text, profile) == (
            "[profiles.night] notify.attempts must be a whole number from 1 to 10, not 0")
    # A profile's [notify] may hold only `on`: the URL is the top level's.
    path = config_file('[notify]\nurl = "https://hooks.example/x"\n'
                       '[profiles.night.notify]\non = ["failed"]\n')
    assert load_settings(path, {"profile": "night"}).notify == {
        "url": "https://hooks.example/x", "on": ["failed"]}


@pytest.mark.parametrize("text", [
    f"access_token = {12345}\n",
    f'[notify]\nurl = "ftp://hooks.example/{SECRET}"\n',
    f'[notify]\nurls = ["https://hooks.example/a", "gopher://x/{SECRET}"]\n',
    f'[sources.w]\nurl = "sftp://u@h/x.csv"\npassword = ["{SECRET}"]\n',
    f'[sources.w]\nurl = "sftp://u@h/x.csv"\nheaders = {{ X-Key = ["{SECRET}"] }}\n',
    f'[sources.w]\nurl = "sftp://u:{SECRET}@/x.csv"\n',
    f'[sources.w]\nurl = "sftp://u:{SECRET}@h:port/x.csv"\n',
    f'[sources.w]\nurl = "ftp://u:pa/{SECRET}@h/x.csv"\n',
    f'[sources.w]\nurl = "gopher://u:{SECRET}@h/x.csv"\n',
])
def test_a_refusal_never_repeats_a_secret(config_file: ConfigFile, text: str) -> None:
    message = refusal(config_file, text)
    assert SECRET not in message and "12345" not in message, message


BAD_API_URLS = ["not a url", "ftp://x", "http://", f"http://u:{SECRET}@",
                f"https://u:{SECRET}@h.example/v3", "https://h.example:port",
                f"https://u:pa/{SECRET}@h.example"]


@pytest.mark.parametrize("value", BAD_API_URLS)
def test_a_bad_api_url_is_refused_naming_where_it_came_from(
        clean_env: pytest.MonkeyPatch, config_file: ConfigFile, value: str) -> None:
    path = config_file(f'store_hash = "s1"\naccess_token = "tok-abcdefgh"\n'
                       f'api_url = "{value}"\n[profiles.p]\napi_url = "{value}"\n'
                       f'[profiles.good]\napi_url = "https://api.bigcommerce.com"\n')
    wanted = [({}, f"config file {path}: api_url must be an API URL"),
              ({"profile": "p"}, f"config file {path}: [profiles.p] api_url must be an API URL"),
              ({"api_url": value}, "--api-url must be an API URL")]
    for overrides, expected in wanted:
        settings = load_settings(path, overrides)
        with pytest.raises(UsageError) as err:
            settings.check(needs_store=True)
        message = str(err.value)
        assert message.startswith(expected), message
        assert SECRET not in message and err.value.exit_code == 64, message
    clean_env.setenv(ENV_API_URL, value)  # over the file's top level, not a profile's own
    with pytest.raises(UsageError) as err:
        load_settings(path, {}).check(needs_store=True)
    assert str(err.value).startswith(f"{ENV_API_URL} must be an API URL"), str(err.value)
    assert SECRET not in str(err.value)
    load_settings(path, {"profile": "good"}).check(needs_store=True)


def test_from_config_refuses_what_it_does_not_know(clean_env: pytest.MonkeyPatch) -> None:
    # A misspelt dry_run must not become a real sync.
    with pytest.raises(UsageError, match=r"unknown setting\(s\) dry_rn"):
        Settings.from_config(None, dry_rn=True)
    with pytest.raises(UsageError, match=ENV_TOKEN) as err:
        Settings.from_config(None, token=SECRET)
    assert SECRET not in str(err.value)
    with pytest.raises(UsageError, match="batch_size must be a whole number, not 'many'"):
        Settings.from_config(None, batch_size="many")
    with pytest.raises(UsageError, match="header_row must be 1 or more"):
        Settings.from_config(None, header_row=0)
    assert Settings.from_config(None, dry_run=True, batch_size=5).batch_size == 5


def test_precedence_flags_profile_environment_file(clean_env: pytest.MonkeyPatch,
                                                   config_file: ConfigFile) -> None:
    path = config_file('store_hash = "file"\napi_url = "http://file.example"\nbatch_size = 7\n'
                       '[profiles.p]\nstore_hash = "profile"\n')
    assert load_settings(path, {}).store_hash == "file"
    clean_env.setenv(ENV_STORE_HASH, "env")
    clean_env.setenv(ENV_API_URL, "http://env.example")
    assert load_settings(path, {}).store_hash == "env"
    s = load_settings(path, {"profile": "p"})
    assert (s.store_hash, s.api_url, s.batch_size) == ("profile", "http://env.example", 7)
    s = Settings.from_config(path, profile="p", store_hash="flag", batch_size=9)
    assert (s.store_hash, s.batch_size, s.profile) == ("flag", 9, "p")


def test_webhook_retries_wait_a_jittered_bounded_delay(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    from invsync.run import notify

    sent: list[str] = []
    monkeypatch.setattr(notify, "_attempt", lambda url, data, timeout_s: sent.append(url) or 503)
    runs = []
    for seed in (1, 2):
        waits: list[float] = []
        problem = notify.post("https://hooks.example/x", {"a": 1}, timeout_s=1, attempts=8,
                              rng=random.Random(seed), sleep=waits.append)
        assert problem == "HTTP 503 after 8 attempt(s)"
        assert len(waits) == 7
        for attempt, wait in enumerate(waits, start=1):
            assert 0 <= wait <= min(5.0, 0.5 * 2 ** (attempt - 1)), (attempt, wait)
        runs.append(waits)
    assert len(sent) == 16
    # Jittered: not the fixed 0.5, 1, 2, 4, 5, 5, 5 of old, and two receivers differ.
    assert runs[0] != runs[1]
    assert runs[0] != [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    # A refusal (4xx but 429) is not retried: no wait at all.
    waits = []
    monkeypatch.setattr(notify, "_attempt", lambda url, data, timeout_s: 400)
    assert notify.post("https://hooks.example/x", {}, timeout_s=1, attempts=5,
                       sleep=waits.append) == "HTTP 400"
    assert waits == []


def test_webhook_and_store_share_one_retry_policy() -> None:
    from invsync.run.notify import webhook_retry
    from invsync.store.limits import RetryPolicy

    policy = webhook_retry(4, 2.5)
    assert isinstance(policy, RetryPolicy)
    assert (policy.max_attempts, policy.timeout_s, policy.max_delay_s) == (4, 2.5, 5.0)


def test_one_stale_plan_message() -> None:
    import polars as pl

    from invsync.run.plans import stale_plan

    moved = pl.DataFrame({"identifier": ["sku", "sku"], "item_key": ["A", "B"],
                          "location_id": [1, 1], "before": [5, None], "live": [7, 2]})
    store = stale_plan(moved)
    assert isinstance(store, StalePlan) and len(store.items) == 2
    assert str(store) == (
        "the store changed since the preview: preview again (2 planned item(s) have another "
        "level now, e.g. sku A at location 1: planned from 5, now 7); nothing was sent")
    snap = stale_plan(moved.tail(1), against="the snapshot")
    assert "(the snapshot moved since this plan was made: 1 planned item(s) have another " \
        "level now, e.g. sku B at location 1: planned from none (new), now 2)" in str(snap)


def test_dir_and_help_show_the_api_and_import_stays_light() -> None:
    code = ("import sys, pydoc, invsync\n"
            "assert 'polars' not in sys.modules and 'pydantic' not in sys.modules\n"
            "names = [n for n in dir(invsync) if not n.startswith('_')]\n"
            "assert 'polars' not in sys.modules\n"
            "print(' '.join(names))\n"
            "print(pydoc.render_doc(invsync, renderer=pydoc.plaintext))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    names, _, text = done.stdout.partition("\n")
    assert names.split() == ["FatalError", "InvsyncError", "LockedError", "RetryableError",
                             "RowRejected", "RunReport", "Settings", "UsageError", "resume",
                             "sync_file", "sync_file_async"]
    for shown in ("class Settings", "from_config(", "sync_file(", "class UsageError",
                  "class RunReport", "resume("):
        assert shown in text, shown


def test_the_cli_exits_64_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "invsync.toml"
    config.write_text(f'access_token = "{SECRET}"\n[notify]\nurl = "https://h.example/x"\n'
                      'attempts = "three"\n')
    stock = write_stock(tmp_path / "stock.csv", {(1, "A"): 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVSYNC_", "BIGCOMMERCE_"))}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    result = run_invsync(["sync", "--dry-run", "--config", str(config), str(stock)], env)
    assert result.returncode == 64, result.stderr
    assert "notify.attempts must be a whole number from 1 to 10, not 'three'" in result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize(("where", "expected"), [
    ("env", "invsync: BIGCOMMERCE_API_URL must be an API URL"),
    ("file", "api_url must be an API URL"),
    ("source", "[sources.w] url must be"),
])
def test_the_cli_names_a_bad_url_s_variable_or_key_and_hides_its_password(
        tmp_path: Path, where: str, expected: str) -> None:
    bad = f"sftp://u:{SECRET}@/x.csv"
    config = tmp_path / "invsync.toml"
    config.write_text((f'api_url = "{bad}"\n' if where == "file" else "")
                      + (f'[sources.w]\nurl = "{bad}"\n' if where == "source" else ""))
    stock = write_stock(tmp_path / "stock.csv", {(1, "A"): 1})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVSYNC_", "BIGCOMMERCE_"))}
    env.update({"XDG_STATE_HOME": str(tmp_path / "state"), "BIGCOMMERCE_STORE_HASH": "s1",
                "BIGCOMMERCE_ACCESS_TOKEN": "tok-abcdefgh"})
    if where == "env":
        env["BIGCOMMERCE_API_URL"] = bad
    result = run_invsync(["sync", "--dry-run", "--config", str(config), str(stock)], env)
    assert result.returncode == 64, result.stderr
    if where != "env":
        expected = f"invsync: config file {config}: {expected}"
    assert result.stderr.startswith(expected), result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stderr + result.stdout


def test_doctor_never_shows_the_api_url_s_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVSYNC_", "BIGCOMMERCE_"))}
    env.update({"XDG_STATE_HOME": str(tmp_path / "state"), "BIGCOMMERCE_STORE_HASH": "s1",
                "BIGCOMMERCE_ACCESS_TOKEN": "tok-abcdefgh",
                "BIGCOMMERCE_API_URL": f"http://u:{SECRET}@127.0.0.1:9"})  # a closed port
    result = run_invsync(["doctor"], env)
    assert "store reachable: http://u:[redacted]@127.0.0.1:9" in result.stdout, result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_the_documented_example_config_loads_with_each_profile(
        config_file: ConfigFile) -> None:
    """docs/config.md's example is a config a user copies: it must load as documented (it
    had encoding and header_row under [store], which holds only quota_share)."""
    import re

    docs = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    match = re.search(r"```toml\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
    assert match is not None
    path = config_file(match.group(1))
    top = load_settings(path, {})
    assert (top.encoding, top.header_row, top.quota_share) == ("windows-1250", 3, 0.8)
    assert top.notify["attempts"] == 3 and top.retry.max_total_s == 300
    assert load_settings(path, {"profile": "staging"}).store_hash == "sandbox"
    production = load_settings(path, {"profile": "production"})
    assert production.brakes.max_zero_share == 0.1 and production.brakes.min_rows_ratio == 0.5
