"""Settings for a run: command-line values over environment over the TOML config file.

The config file is validated by pydantic models, one per section, composed into
:class:`~invsync.run.config_file.FileKeys` (in :mod:`invsync.run.config_file`, loaded to read
a config file): unknown keys and values of the wrong type are a
:class:`~invsync.errors.UsageError` (exit 64) naming the key. :class:`Settings` is a frozen
dataclass built from the flags, the environment and the checked file
(:func:`load_settings`, :meth:`Settings.from_config`), its values checked as pydantic
checks them.

The access token is never a command-line value: it comes from ``BIGCOMMERCE_ACCESS_TOKEN``
or the config file, and is held in a :class:`Secret` that never prints itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from invsync.config_errors import usage_error_from
from invsync.errors import UsageError
from invsync.redact import Secret
from invsync.run.brakes import BrakeLimits
from invsync.sources.spec import shown_url, spaced_host
from invsync.stages.validate import DUPLICATE_POLICIES, QuantityRules
from invsync.store.limits import DEFAULT_QUOTA_SHARE, MAX_ITEMS_PER_REQUEST, RetryPolicy

DEFAULT_API_URL = "https://api.bigcommerce.com"
ENV_STORE_HASH = "BIGCOMMERCE_STORE_HASH"
ENV_TOKEN = "BIGCOMMERCE_ACCESS_TOKEN"
ENV_API_URL = "BIGCOMMERCE_API_URL"
ENV_CONFIG = "INVSYNC_CONFIG"
ENV_PROFILE = "INVSYNC_PROFILE"

if TYPE_CHECKING:  # pydantic checks the config file (invsync.run.config_file), loaded for one
    from pydantic import AfterValidator, Field

    from invsync.run.config_file import Brakes, Retry, Rules


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/invsync``, else ``~/.local/state/invsync``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "invsync"


# ---- the config file's checks (its pydantic models are in invsync.run.config_file) ---------
# Strict: text where a number goes, a number where text goes, a number for true/false and a
# misspelt key are refused (exit 64) naming the key; a field's description is what the
# message says is allowed.


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not hold a NUL byte")
    return value


def _positive_duration(value: Any) -> str | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float) \
            or _seconds(value) is None:
        raise ValueError(DURATION_PHRASE)
    return value


def _lag_duration(value: Any) -> str | float:
    if value == 0 and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return _positive_duration(value)


def _between(low: int, high: int | None) -> Callable[[int], int]:
    """A check that a whole number (already typed strictly) is in range, so a wrong type
    still reads "must be a whole number" and a wrong size says the range."""
    allowed = f"from {low} to {high}" if high is not None else f"{low} or more"

    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            raise ValueError(f"must be a whole number {allowed}")
        return value
    return check


def _column_target(value: str) -> str:
    from invsync.stages.ingest.columns import CANONICAL

    if value not in (*CANONICAL, "ignore"):
        raise ValueError(f"must be one of {', '.join(CANONICAL)} or ignore")
    return value


def _encoding(value: str) -> str:
    import codecs

    try:
        codecs.lookup(_no_nul(value))
    except LookupError:
        raise ValueError('must be a text encoding such as "utf-8" or "windows-1250"') from None
    return value


DURATION_PHRASE = 'must be a positive duration such as "7d", "12h" or "30m"'
SHARE = "a share from 0 to 1 (such as 0.3)"
SECONDS = "a number of seconds above 0"

EVENTS = ("failed", "interrupted", "resumed", "brake", "partial", "succeeded",
          "status_changed", "rejected_share", "volume_drop", "stale_file")
"""What ``[notify] on`` may list. ``interrupted``: this run was stopped by SIGTERM/SIGINT;
``resumed``: this run finished an interrupted (or killed) one. ``rejected_share`` and
``volume_drop`` fire when their threshold is set (for ``[[notify.hooks]]``, only when the
hook's ``on`` lists them). ``stale_file``: a configured source's file is too old (sent by
:func:`invsync.run.sourced.notify_source_event`, not after a run)."""
DEFAULT_ON = ("failed", "interrupted", "resumed", "brake", "stale_file")


def is_url(value: Any) -> bool:
    """An ``http://`` or ``https://`` URL that names a host."""
    from urllib.parse import urlsplit

    return isinstance(value, str) and value.startswith(("http://", "https://")) \
        and "\x00" not in value and bool(urlsplit(value).hostname)


def _url(value: str) -> str:
    if not is_url(value):
        raise ValueError('must be "https://..." (or http://) naming a host')
    return value


def _events(value: Any) -> list[str]:
    on = [value] if isinstance(value, str) else value
    if not isinstance(on, list) or not all(isinstance(e, str) for e in on):
        raise ValueError(f"must be a list of event names (known: {', '.join(EVENTS)})")
    bad = [e for e in on if e not in EVENTS]
    if bad:
        raise ValueError(f"unknown event(s) {', '.join(bad)} (known: {', '.join(EVENTS)})")
    return on


def _urls(value: Any) -> list[str]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not all(is_url(u) for u in urls):
        raise ValueError('must be a list of "https://..." (or http://) URLs naming a host')
    return urls


def _time_text(value: Any) -> str:
    """``as_of``: text (``"mtime"``, ISO 8601) or a TOML date-time, kept as text."""
    import datetime

    allowed = ('must be "mtime" or a time with its offset (ISO 8601, such as '
               '2026-12-06T02:00:00+01:00)')
    if isinstance(value, datetime.datetime):
        when: datetime.datetime | None = value
    elif isinstance(value, str) and value.strip().lower() == "mtime":
        return value
    elif isinstance(value, str):
        try:  # the same reading as invsync.run.as_of, so a bad time is refused before a run
            when = datetime.datetime.fromisoformat(
                _no_nul(value).strip().replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            when = None
    else:
        when = None
    if when is None or when.tzinfo is None:
        raise ValueError(allowed)
    return value.isoformat() if isinstance(value, datetime.datetime) else value


NOT_FROM_FILE: Literal[False] = False
"""A field's :func:`meta` ``file`` when no config file key sets it (a flag, the run's own)."""
NOT_PUBLIC: Literal[False] = False
"""A field's :func:`meta` ``public`` when the public view leaves it out (paths, secrets)."""
_UNSET: Any = object()
"""What a field's loader returns when no source gave a value: the field keeps its default."""


@dataclasses.dataclass(frozen=True)
class _Sources:
    """Where a setting can come from, highest first: flags, the environment, the file
    (already validated by :class:`FileKeys`)."""

    overrides: dict[str, Any]
    cfg: dict[str, Any]
    config_path: Path | None
    profile: str | None
    profile_keys: frozenset[str] = frozenset()
    """The keys the profile's own table sets: they win over the environment."""

    def pick(self, key: str, env: str | None = None) -> Any:
        """The flag ``key``, else a profile's own ``key``, else the environment variable
        ``env``, else the file's ``key``."""
        if self.overrides.get(key) is not None:
            return self.overrides[key]
        if key in self.profile_keys and self.cfg.get(key) is not None:
            return self.cfg[key]
        if env and os.environ.get(env):
            return os.environ[env]
        return self.cfg.get(key)


Loader = Callable[[_Sources], Any]


def meta(*, file: str | Literal[False], public: str | Literal[False], resume: bool = False,
         load: Loader | None = None, to_public: Callable[[Any], Any] | None = None,
         from_public: Callable[[Any], Any] | None = None,
         to_file: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """The metadata of a :class:`Settings` field: what the config machinery knows about it.

    ``file``: its key in the TOML config file (a field of :class:`FileKeys`), or
    :data:`NOT_FROM_FILE`. ``public``: its name in :meth:`Settings.public` (report.json's
    ``options``), or :data:`NOT_PUBLIC`. ``resume``: :func:`settings_from_public` puts the
    recorded value back. ``load``: picks the value from the sources (flags > environment >
    file; the file's values are already checked), or returns ``_UNSET``.
    ``to_public``/``from_public``/``to_file``: converters to and from those views.
    """
    return {"file": file, "public": public, "resume": resume, "load": load,
            "to_public": to_public, "from_public": from_public, "to_file": to_file}


def _value(key: str, convert: Callable[[Any], Any] = lambda v: v) -> Loader:
    """The flag or file value ``key`` (types are checked by the models), converted."""
    def load(src: _Sources) -> Any:
        value = src.pick(key)
        return _UNSET if value is None else convert(value)
    return load


def _load_as_of(src: _Sources) -> Any:
    """``--as-of`` as given (invsync.run.as_of reads it and refuses it naming the flag),
    else the file's ``as_of`` (checked with the file, a TOML date-time made text)."""
    if src.overrides.get("as_of") is not None:
        return src.overrides["as_of"]
    value = src.pick("as_of")
    return _UNSET if value is None else _time_text(value)


def _path(value: Any) -> Path:
    return Path(value).expanduser()


def _flag(key: str) -> Loader:
    return lambda src: bool(src.overrides.get(key))


def _duration(key: str, lag: bool = False) -> Loader:
    def load(src: _Sources) -> Any:
        value = src.cfg.get(key)
        if value is None:
            return _UNSET
        return 0.0 if lag and value == 0 else _seconds(value)
    return load


def _token_source(src: _Sources) -> str | None:
    """Where the access token comes from: a profile's own ``access_token`` wins over the
    environment, which wins over the file's top-level one."""
    in_profile = bool(src.profile and src.profile_keys and "access_token" in src.profile_keys
                      and src.cfg.get("access_token"))
    if in_profile:
        return f"access_token in [profiles.{src.profile}] of {src.config_path}"
    if os.environ.get(ENV_TOKEN):
        return ENV_TOKEN
    if src.cfg.get("access_token"):
        return f"access_token in {src.config_path}"
    return None


def _load_token(src: _Sources) -> Secret | None:
    where = _token_source(src)
    if where is None:
        return None
    raw = os.environ[ENV_TOKEN] if where == ENV_TOKEN else str(src.cfg["access_token"])
    return clean_token(raw, where)


def _load_token_source(src: _Sources) -> str | None:
    where = _token_source(src)
    if where and where != ENV_TOKEN and os.environ.get(ENV_TOKEN):
        return f"{where} (used instead of {ENV_TOKEN}, which is also set)"
    return where


def _api_url_source(src: _Sources) -> str | None:
    """Where the API URL comes from, as a message names it (see :meth:`_Sources.pick`)."""
    if src.overrides.get("api_url") is not None:
        return "--api-url"
    if "api_url" in src.profile_keys and src.cfg.get("api_url") is not None:
        return f"config file {src.config_path}: [profiles.{src.profile}] api_url"
    if os.environ.get(ENV_API_URL):
        return ENV_API_URL
    if src.cfg.get("api_url") is not None:
        return f"config file {src.config_path}: api_url"
    return None


_HOST = re.compile(r"[a-z0-9._~%:-]+")
"""A host name or IP address as ``urlsplit`` gives it (lower case; an IPv6 address without
its brackets): a space or a stray character in it is no host (``http://ho st``)."""
_SPACE = re.compile(r"[\s\x00-\x1f\x7f]")
"""``urlsplit`` drops a space before the URL and a line end anywhere in it, the HTTP client
does not: such a URL would pass here and fail on the first request (exit 2)."""


def api_url_problem(value: str) -> str | None:
    """What keeps ``value`` from being the API URL (None: nothing), as the words after the
    key; a password in it is never shown."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - a port that is not a number raises
    except ValueError:
        host = None
    if (host is None or parts.scheme.lower() not in ("http", "https")
            or not _HOST.fullmatch(host) or spaced_host(host) or _SPACE.search(value)):
        return (f"must be an API URL: https:// (or http://) and a host, such as "
                f"https://api.bigcommerce.com; not {shown_url(value)!r}")
    if parts.path.strip("/") or parts.query or parts.fragment:
        return (f"must be an API URL of the host only (such as https://api.bigcommerce.com), "
                f"not {shown_url(value)!r}: drop the path (invsync adds "
                f"/stores/<store hash>/v3 itself)")
    return None


def _load_column_map(src: _Sources) -> dict[str, str]:
    columns = dict(src.cfg.get("columns") or {})
    columns.update(src.overrides.get("column_map") or {})
    return {str(k): str(v) for k, v in columns.items()}


def _load_sources(src: _Sources) -> dict[str, Any]:
    from invsync.sources import check_sources

    return check_sources(src.cfg.get("sources") or {})  # a url that cannot be read: exit 64


def _load_quota_share(src: _Sources) -> Any:
    share = (src.cfg.get("store") or {}).get("quota_share")
    return _UNSET if share is None else float(share)


def _load_rules(src: _Sources) -> QuantityRules:
    section, flags = src.cfg.get("quantity") or {}, src.overrides

    def value(key: str) -> Any:
        return flags[key] if flags.get(key) is not None else section.get(key)

    text_map = {str(k): v for k, v in (section.get("text_map") or {}).items()}
    text_map.update(flags.get("text_map") or {})
    return QuantityRules(text_map=text_map, buffer=value("buffer") or 0,
                         clamp_negative=bool(value("clamp_negative")), maximum=value("maximum"))


def _load_brakes(src: _Sources) -> BrakeLimits:
    section, flags = src.cfg.get("brakes") or {}, src.overrides
    return BrakeLimits(min_rows_ratio=float(section.get("min_rows_ratio", 0.5)),
                       max_zero_share=float(section.get("max_zero_share", 0.3)),
                       allow_empty=bool(flags.get("allow_empty")),
                       allow_shrink=bool(flags.get("allow_shrink")),
                       allow_zeroing=bool(flags.get("allow_zeroing")))


def _load_retry(src: _Sources) -> RetryPolicy:
    section = src.cfg.get("retry") or {}
    values = {k: float(v) for k, v in section.items() if k != "max_attempts"}
    return RetryPolicy(max_attempts=section.get("max_attempts", RetryPolicy.max_attempts),
                       **values)


def _baseline(value: str) -> str:
    if value not in ("snapshot", "live"):
        raise ValueError("must be snapshot or live")
    return value


def _rules_to_file(rules: QuantityRules) -> dict[str, Any]:
    return {k: v for k, v in rules.describe().items() if v is not None}


def _brakes_to_file(brakes: BrakeLimits) -> dict[str, Any]:
    # The allow_* overrides are flags of one run, never config.
    return {"min_rows_ratio": brakes.min_rows_ratio, "max_zero_share": brakes.max_zero_share}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a sync run needs to know besides the input file.

    A frozen dataclass: values are checked when built, as pydantic checks its field types (a
    wrong type is pydantic's ``ValidationError``; :func:`load_settings` makes it a
    :class:`UsageError`); derive
    changed settings with :func:`dataclasses.replace`. Each field's
    metadata (see :func:`meta`) says which config file key sets it, what name it has in
    the public view and whether a resumed run takes it back from that view.
    """

    store_hash: str | None = field(default=None, metadata=meta(
        file="store_hash", public="store_hash",
        load=lambda src: src.pick("store_hash", ENV_STORE_HASH)))
    token: Secret | None = field(default=None, repr=False, metadata=meta(
        file="access_token", public=NOT_PUBLIC, load=_load_token,
        to_file=lambda t: t.reveal() if t else None))
    api_url: str = field(default=DEFAULT_API_URL, metadata=meta(
        file="api_url", public="api_url",
        load=lambda src: str(src.pick("api_url", ENV_API_URL) or DEFAULT_API_URL)))
    location_id: int = field(default=1, metadata=meta(
        file="location_id", public="location_id", resume=True, load=_value("location_id")))
    reason: str | None = field(default="invsync stock sync", metadata=meta(
        file="reason", public="reason", resume=True, load=_value("reason")))
    state_dir: Path = field(default_factory=default_state_dir, metadata=meta(
        file="state_dir", public=NOT_PUBLIC, load=_value("state_dir", _path), to_file=str))
    report_dir: Path | None = field(default=None, metadata=meta(
        file="report_dir", public=NOT_PUBLIC, load=_value("report_dir", _path), to_file=str))
    batch_size: int = field(default=MAX_ITEMS_PER_REQUEST, metadata=meta(
        file="batch_size", public="batch_size", resume=True, load=_value("batch_size")))
    concurrency: int = field(default=1, metadata=meta(
        file="concurrency", public="concurrency", resume=True, load=_value("concurrency")))
    dry_run: bool = field(default=False, metadata=meta(
        file=NOT_FROM_FILE, public="dry_run", load=_flag("dry_run")))
    full: bool = field(default=False, metadata=meta(
        file=NOT_FROM_FILE, public="full", resume=True, load=_flag("full")))
    sheet: str | None = field(default=None, metadata=meta(
        file="sheet", public="sheet", resume=True, load=_value("sheet")))
    encoding: str | None = field(default=None, metadata=meta(
        file="encoding", public="encoding", resume=True, load=_value("encoding")))
    """A CSV's text encoding, forced (else detected)."""
    header_row: Annotated[int, Field(ge=1)] | None = field(default=None, metadata=meta(
        file="header_row", public="header_row", resume=True,
        load=_value("header_row")))
    """The header's row number (else found in the top 20 rows)."""
    column_map: dict[str, str] = field(default_factory=dict, metadata=meta(
        file="columns", public="column_map", resume=True, load=_load_column_map,
        from_public=lambda m: dict(m or {})))
    duplicates: str = field(default="reject", metadata=meta(
        file="duplicates", public="duplicates", resume=True, load=_value("duplicates")))
    rules: Rules = field(default_factory=QuantityRules, metadata=meta(
        file="quantity", public="quantity_rules", resume=True,
        load=_load_rules,
        to_public=QuantityRules.describe, from_public=lambda d: QuantityRules(**(d or {})),
        to_file=_rules_to_file))
    retry: Retry = field(default_factory=RetryPolicy, metadata=meta(
        file="retry", public=NOT_PUBLIC,
        load=_load_retry, to_file=asdict))
    verify_tls: bool = field(default=True, metadata=meta(
        file="verify_tls", public="verify_tls",
        load=lambda src: not (src.overrides.get("verify_tls") is False
                              or src.cfg.get("verify_tls") is False)))
    zero_missing: bool = field(default=False, metadata=meta(
        file="zero_missing", public="zero_missing", resume=True,
        load=lambda src: bool(src.overrides.get("zero_missing") or src.cfg.get("zero_missing"))))
    baseline: Annotated[str, AfterValidator(_baseline)] = field(default="live", metadata=meta(
        file="baseline", public="baseline", resume=True, load=_value("baseline")))
    """``live`` (the default: plans are made against the store's levels, read before
    planning) or ``snapshot`` (what invsync last set: no reads, but edits made in the
    store are left alone until the file's number changes)."""
    baseline_every_s: float | None = field(default=None, metadata=meta(
        file="baseline_every", public="baseline_every_s",
        load=_duration("baseline_every")))
    """``baseline_every``: a snapshot-baseline run uses the live baseline instead when the
    last live-baseline run is older than this (the periodic reconcile)."""
    verify_lag_s: float = field(default=30.0, metadata=meta(
        file="verify_lag_s", public="verify_lag_s",
        load=_duration("verify_lag_s", lag=True)))
    """How long a read may lag a write: ``verify``, ``drift`` and the apply re-check
    re-read differing items for up to this long before calling them wrong."""
    quota_share: float = field(default=DEFAULT_QUOTA_SHARE, metadata=meta(
        file="store", public="quota_share", load=_load_quota_share,
        to_file=lambda share: {"quota_share": share}))
    """``[store] quota_share``: the share of each rate-limit window's requests invsync
    uses; the rest is left to the store's other apps."""
    store_id: str | None = field(default=None, metadata=meta(
        file="store_id", public="store_id", load=_value("store_id")))
    """Names the store's state (snapshot, lock, runs) instead of its API host: two
    spellings of one host (a name and its IP address) are one store when both set it."""
    token_source: str | None = field(default=None, metadata=meta(
        file=NOT_FROM_FILE, public="token_source", load=_load_token_source))
    """Where the access token came from (never the token)."""
    api_url_source: str | None = field(default=None, compare=False, metadata=meta(
        file=NOT_FROM_FILE, public=NOT_PUBLIC, load=_api_url_source))
    """Where the API URL came from (``--api-url``, the environment variable, the config
    file's key), for a message about it; None: the default, or set by a program."""
    plan_file: bool = field(default=False, metadata=meta(
        file=NOT_FROM_FILE, public="plan_file", resume=True))
    """The input is a reviewed ``plan.csv``: push exactly it."""
    brakes: Brakes = field(default_factory=BrakeLimits, metadata=meta(
        file="brakes", public="brakes", resume=True,
        load=_load_brakes,
        to_public=asdict, from_public=lambda d: BrakeLimits(**(d or {})),
        to_file=_brakes_to_file))
    config_path: Path | None = field(default=None, metadata=meta(
        file=NOT_FROM_FILE, public="config", load=lambda src: src.config_path,
        to_public=lambda p: str(p) if p else None))
    profile: str | None = field(default=None, metadata=meta(
        file=NOT_FROM_FILE, public="profile", load=lambda src: src.profile))
    """The config profile in force (``--profile`` / ``INVSYNC_PROFILE``), if any."""
    wait_lock_s: Annotated[float, Field(ge=0)] = field(default=0.0, metadata=meta(
        file=NOT_FROM_FILE, public=NOT_PUBLIC, load=_value("wait_lock", float)))
    """Wait this long for another run's lock instead of exiting 4 at once."""
    notify: dict[str, Any] = field(default_factory=dict, metadata=meta(
        file="notify", public=NOT_PUBLIC, load=lambda src: dict(src.cfg.get("notify") or {})))
    """The ``[notify]`` section (checked by :func:`invsync.run.notify.notify_config`)."""
    sources: dict[str, Any] = field(default_factory=dict, repr=False, metadata=meta(
        file="sources", public=NOT_PUBLIC, load=_load_sources))
    """The ``[sources.NAME]`` tables (checked by :func:`invsync.sources.check_sources`)."""
    source: str = field(default="cli", metadata=meta(
        file="source", public="source", resume=True, load=_value("source")))
    """The source's name (``source`` in the config; the merchant page passes ``portal``):
    the shrunken-file brake and ``volume_drop`` compare a run with the last successful run
    of the same source. The default ``cli`` means: the file's path names the source."""
    retention_s: float | None = field(default=None, metadata=meta(
        file="retention", public=NOT_PUBLIC,
        load=_duration("retention")))
    """``retention``: after each run, remove run folders and uploads older than this (as
    ``invsync prune --keep``)."""

    # ---- as-of time (orders sold since the file was made: docs/orders.md) ----
    as_of: str | None = field(default=None, metadata=meta(
        file="as_of", public="as_of", resume=True, load=_load_as_of))
    """``--as-of``: when the file's levels were true (ISO 8601 with an offset, or ``mtime``
    for the file's modification time); orders placed since are subtracted."""
    max_as_of_age_s: float = field(default=48 * 3600.0, metadata=meta(
        file="max_as_of_age", public="max_as_of_age_s",
        load=_duration("max_as_of_age")))
    """An as-of time older than this is refused (the order listing grows with it)."""

    def __post_init__(self) -> None:
        """Values of their field's own type (as flags, the environment and a checked config
        file give them) are taken as they are; any other is checked and converted by
        pydantic (:func:`invsync.run.config_file.checked_settings`), or refused."""
        if _plain_values(self):
            for name in _DICTS:  # each settings object holds its own (as pydantic copied them)
                object.__setattr__(self, name, dict(getattr(self, name)))
            _expand_home(self)
            return
        from invsync.run.config_file import CHECKING, checked_settings

        if CHECKING.get():
            return  # built by pydantic itself, its values checked
        checked = checked_settings(self)
        for f in fields(self):
            object.__setattr__(self, f.name, getattr(checked, f.name))
        _expand_home(self)

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, profile: str | None = None,
                    **overrides: Any) -> Settings:
        """Settings as the CLI builds them: ``overrides`` (flag names, e.g. ``dry_run=True``)
        win over the environment, which wins over the config file at ``path``
        (else ``$INVSYNC_CONFIG``), which wins over the defaults."""
        unknown = sorted(set(overrides) - OVERRIDES)
        if unknown:
            secret = {"token", "access_token"}.intersection(unknown)
            hint = (f"; the access token comes from {ENV_TOKEN} or access_token in the "
                    f"config file" if secret else "")
            raise UsageError(f"Settings.from_config: unknown setting(s) {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(OVERRIDES))}){hint}")
        for key, value in overrides.items():
            _check_override_type(key, value)
        return load_settings(Path(path) if path is not None else None,
                             {**overrides, "profile": profile})

    @property
    def store_host(self) -> str:
        """What names this store's state besides its hash: ``store_id``, else the API URL
        (normalised by :func:`invsync.state.snapshot.api_host`)."""
        return self.store_id or self.api_url

    @property
    def reports(self) -> Path:
        """Where run folders go: ``--report-dir``, else ``<state-dir>/runs``."""
        return self.report_dir or (self.state_dir / "runs")

    def check(self, *, needs_store: bool) -> None:
        """Raise :class:`UsageError` for values that cannot work."""
        if not 1 <= self.batch_size <= MAX_ITEMS_PER_REQUEST:
            raise UsageError(f"--batch-size must be between 1 and {MAX_ITEMS_PER_REQUEST}")
        if not 1 <= self.concurrency <= 32:
            raise UsageError("--concurrency must be between 1 and 32")
        if not 1 <= self.location_id <= MAX_ID:
            raise UsageError("--location-id must be a positive whole number"
                             + (f" of at most {MAX_ID}" if self.location_id > MAX_ID else ""))
        _check_numbers(self)
        rules = self.rules
        for flag, value in (("--buffer", rules.buffer), ("--max-quantity", rules.maximum)):
            # A negative buffer would add stock to every item; a negative cap, set them below 0.
            if value is not None and not 0 <= value <= MAX_ID:
                raise UsageError(f"{flag} must be a whole number, 0 or more (at most {MAX_ID}), "
                                 f"not {value}")
        if self.duplicates not in DUPLICATE_POLICIES:
            raise UsageError(f"--duplicates must be one of {', '.join(DUPLICATE_POLICIES)}")
        if self.as_of is not None and not self.token and not self.plan_file:
            raise UsageError("--as-of reads the store's orders: it needs the store hash and "
                             "access token, even for a dry run")
        if self.token and not self.store_hash:
            # Any run with a token talks to the store (a dry run reads its locations).
            raise UsageError(f"no store hash: pass --store-hash or set {ENV_STORE_HASH}")
        if self.store_hash is not None and not _STORE_HASH.fullmatch(self.store_hash):
            got = self.store_hash if len(self.store_hash) <= 100 else \
                f"{self.store_hash[:40]}... ({len(self.store_hash)} characters)"
            raise UsageError("the store hash may hold only letters, digits, '-' and '_', at "
                             f"most 100 of them (got {got!r})")
        problem = api_url_problem(self.api_url) if self.token or needs_store else None
        if problem:
            where = self.api_url_source
            if where == ENV_API_URL and os.environ.get(ENV_API_URL) != self.api_url:
                where = None  # a program replaced the URL the environment gave
            raise UsageError(f"{where or 'api_url'} {problem}")
        if needs_store:
            if not self.store_hash:
                raise UsageError(f"no store hash: pass --store-hash or set {ENV_STORE_HASH}")
            if not self.token:
                raise UsageError(f"no access token: set {ENV_TOKEN} or access_token in the "
                                 f"config file (it is never a command-line flag)")

    def public(self) -> dict[str, Any]:
        """The settings worth recording in a report: every field with a ``public`` name
        (never the token)."""
        out = {}
        for f in fields(self):
            name = f.metadata["public"]
            if name is not NOT_PUBLIC:
                value = getattr(self, f.name)
                convert = f.metadata["to_public"]
                out[name] = convert(value) if convert else value
        return out

    def file_values(self, *, with_token: bool = False) -> dict[str, Any]:
        """These settings as config file keys (see :func:`config_text`); the token only if
        ``with_token``. Values no file can hold (None) are left out."""
        out = {}
        for f in fields(self):
            key = f.metadata["file"]
            if key is NOT_FROM_FILE or (f.name == "token" and not with_token):
                continue
            value = getattr(self, f.name)
            convert = f.metadata["to_file"]
            value = convert(value) if convert and value is not None else value
            if value is not None:
                out[key] = value
        return out


_STORE_HASH = re.compile(r"[A-Za-z0-9_-]{1,100}")
def _check_numbers(settings: Settings) -> None:
    """The numbers a program may set directly (the config file's are checked with it): NaN
    passes every comparison, so an age limit of NaN never refuses anything."""
    import math

    share = settings.quota_share
    if not (isinstance(share, int | float) and 0 < share <= 1):
        raise UsageError(f"[store] quota_share must be a share above 0 and at most 1 (such as "
                         f"0.8), not {share!r}")
    for key, value in (("verify_lag_s", settings.verify_lag_s),
                       ("max_as_of_age", settings.max_as_of_age_s),
                       ("baseline_every", settings.baseline_every_s),
                       ("retention", settings.retention_s)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{key} must be a number of seconds, 0 or more, not {value!r}")


MAX_ID = 2**63 - 1
"""The largest location id (and quantity rule) a table's 64-bit column holds: a larger one
is a usage error, not an unexpected one when the plan is made."""


OVERRIDES = frozenset({
    "store_hash", "api_url", "location_id", "reason", "state_dir", "report_dir", "batch_size",
    "concurrency", "dry_run", "full", "sheet", "encoding", "header_row", "column_map",
    "duplicates", "buffer", "clamp_negative", "maximum", "text_map", "verify_tls",
    "zero_missing", "baseline", "allow_empty", "allow_shrink", "allow_zeroing", "wait_lock",
    "source", "store_id", "as_of"})
"""What :meth:`Settings.from_config` takes as overrides: the sync command's flags, by name."""


_FLAG_KINDS = {
    **{k: "bool" for k in ("clamp_negative", "allow_empty", "allow_shrink", "allow_zeroing")},
    "buffer": "int", "maximum": "int", "wait_lock": "number", "text_map": "text_map",
    "column_map": "column_map"}
"""The kinds of the overrides that are flags, not fields (``allow_empty="no"`` was True)."""


def _check_override_type(key: str, value: Any) -> None:
    """A library override of the wrong type is refused as a config value would be
    (``location_id=True`` is not location 1, ``batch_size="10"`` not 10)."""
    if value is None:
        return
    kind = _FLAG_KINDS.get(key) or str(next((f.type for f in fields(Settings)
                                             if f.name == key), ""))
    if kind in ("text_map", "column_map"):
        number = kind == "text_map"
        ok = isinstance(value, dict) and all(
            type(k) is str and (type(v) is int if number else type(v) is str)
            for k, v in value.items())
        what = "a table of text to whole numbers" if number else "a table of text to text"
        if not ok:
            raise UsageError(f"Settings.from_config: {key} must be {what}, not {value!r}")
        return
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"Settings.from_config: {key} must be a number, not {value!r}")
        return
    if kind == "bool":
        ok, what = isinstance(value, bool), "true or false"
    elif kind == "int" or kind.startswith("Annotated[int"):
        ok, what = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif kind.startswith("str") or kind.startswith("Annotated[str"):
        ok, what = isinstance(value, str), "text"
    elif kind.startswith("Path"):
        ok, what = isinstance(value, (str, os.PathLike)), "a path"
    else:
        return
    if not ok:
        raise UsageError(f"Settings.from_config: {key} must be {what}, not {value!r}")


MAX_CONFIG_BYTES = 4 << 20
"""A config file larger than this is refused (``--config /dev/zero`` must not eat memory)."""


def _config_text(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"config file {path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: "
                         f"is it the config file?")
    return data.decode("utf-8")


def read_config(config_path: Path | None, profile: str | None = None
                ) -> tuple[Path | None, str | None, dict[str, Any], frozenset[str]]:
    """The config file (``--config``, else ``$INVSYNC_CONFIG``) with one profile applied.

    A profile (``--profile``, else ``$INVSYNC_PROFILE``) is ``[profiles.NAME]``: its keys
    replace the top level's, and its tables (``[profiles.NAME.brakes]``, ...) replace keys
    of the top level's tables. Every table is checked by :class:`ConfigFile` and the result
    by :class:`FileKeys`: :class:`UsageError` (exit 64) names the key. Returns (path,
    profile, merged values, the keys the profile's own table set).
    """
    if config_path is None and os.environ.get(ENV_CONFIG):
        config_path = Path(os.environ[ENV_CONFIG])
    profile = profile or os.environ.get(ENV_PROFILE) or None
    if config_path is None:
        if profile:
            raise UsageError(f"profile {profile!r} needs a config file: pass --config or set "
                             f"{ENV_CONFIG}")
        return None, None, {}, frozenset()
    config_path = Path(config_path)
    try:
        cfg = tomllib.loads(_config_text(config_path))
    except RecursionError:
        raise UsageError(f"config file {config_path} is not valid TOML: its lists or "
                         f"tables are nested too deeply") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        why = getattr(exc, "strerror", None) or one_line_error(exc)
        if isinstance(exc, tomllib.TOMLDecodeError):
            raise UsageError(f"config file {config_path} is not valid TOML: {exc}") from None
        if isinstance(exc, UnicodeDecodeError):
            raise UsageError(f"config file {config_path} is not UTF-8 text (a TOML file is "
                             f"UTF-8): save it as UTF-8") from None
        raise UsageError(f"cannot read config file {config_path}: {why}") from None
    from invsync.run.config_file import ConfigFile, FileKeys, validated

    validated(ConfigFile, cfg, config_path, partial=True)
    profiles = cfg.pop("profiles", None) or {}
    own: frozenset[str] = frozenset()
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise UsageError(f"config file {config_path} has no profile {profile!r} "
                             f"(profiles: {known})")
        own = frozenset(profiles[profile])
        for key, value in profiles[profile].items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    validated(FileKeys, cfg, config_path)
    return config_path, profile, cfg, own


def one_line_error(exc: BaseException) -> str:
    """An exception as a short phrase for a message."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_settings(config_path: Path | None, overrides: dict[str, Any]) -> Settings:
    """Build settings: ``overrides`` (flags, None = unset) > environment > config > defaults.

    ``overrides["profile"]`` names a ``[profiles.NAME]`` of the config (see :func:`read_config`).
    Each field's value comes from its loader (the ``load`` of its :func:`meta`); keys no
    loader reads (a command's own flags) are left alone. A value of the wrong type is a
    :class:`UsageError` naming it.
    """
    config_path, profile, cfg, profile_keys = read_config(config_path, overrides.get("profile"))
    src = _Sources(overrides, cfg, config_path, profile, profile_keys)
    values = {}
    for f in fields(Settings):
        load = f.metadata["load"]
        value = load(src) if load else _UNSET
        if value is not _UNSET:
            values[f.name] = value
    try:
        return Settings(**values)
    except ValueError as exc:  # pydantic's ValidationError is one
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        raise usage_error_from(exc, None) from None


def config_text(settings: Settings, *, with_token: bool = False) -> str:
    """A TOML config file that loads back (:func:`load_settings`) as ``settings``' file keys."""
    values = settings.file_values(with_token=with_token)
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in values.items()
             if not isinstance(v, dict)]
    for key, table in values.items():
        if isinstance(table, dict):
            lines += ["", f"[{_toml_key(key)}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()
                      if v is not None]
    return "\n".join(lines) + "\n"


def _toml_key(key: str) -> str:
    return _toml_value(str(key))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes are TOML's; DEL must be escaped in TOML only.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(value: Any) -> float | None:
    m = _DURATION.fullmatch(str(value))
    if m is None or isinstance(value, bool) or float(m.group(1)) <= 0:
        return None
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_duration(value: Any, key: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` or a number of seconds, as seconds."""
    seconds = _seconds(value)
    if seconds is None:
        raise UsageError(f"{key} {DURATION_PHRASE}, not {value!r}")
    return seconds


def clean_token(raw: str, source: str) -> Secret | None:
    """The token from ``source`` without surrounding whitespace (a pasted token often has a
    trailing newline, CR or tab); :class:`UsageError` if anything else in it could not be
    sent in a header. The message never contains the token."""
    token = raw.strip()
    for position, char in enumerate(token, start=1):
        if not " " <= char <= "~":
            kind = "non-ASCII" if ord(char) > 127 else "control"
            raise UsageError(f"the access token from {source} holds a {kind} character "
                             f"(character {position} of {len(token)}): it cannot be sent; "
                             f"copy it again")
    return Secret(token) if token else None


def settings_from_public(base: Settings, options: dict[str, Any]) -> Settings:
    """``base`` with the options a run recorded (see :meth:`Settings.public`) put back: the
    fields marked ``resume``. A resumed run is never a dry run."""
    kept = {}
    for f in fields(Settings):
        name = f.metadata["public"]
        if f.metadata["resume"] and name in options:
            convert = f.metadata["from_public"]
            kept[f.name] = convert(options[name]) if convert else options[name]
    return replace(base, **kept, dry_run=False)


def parse_map(pairs: tuple[str, ...], flag: str = "--map") -> dict[str, str]:
    """Turn repeated ``KEY=VALUE`` flag values (``--map HEADER=column``) into a dict."""
    out = {}
    for pair in pairs:
        header, sep, column = pair.partition("=")
        if not sep or not header.strip() or not column.strip():
            raise UsageError(f"{flag} takes KEY=VALUE, not {pair!r}")
        out[header.strip()] = column.strip()
    return out


_PATH = type(Path())
_OPTIONAL_TEXT = ("store_hash", "reason", "sheet", "encoding", "store_id", "token_source",
                  "api_url_source", "profile", "as_of")
_TYPES: dict[str, tuple[type, ...]] = {
    **{name: (str, type(None)) for name in _OPTIONAL_TEXT},
    **{name: (str,) for name in ("api_url", "duplicates", "baseline", "source")},
    **{name: (int,) for name in ("location_id", "batch_size", "concurrency")},
    **{name: (bool,) for name in ("dry_run", "full", "verify_tls", "zero_missing",
                                  "plan_file")},
    **{name: (float,) for name in ("verify_lag_s", "quota_share", "wait_lock_s",
                                   "max_as_of_age_s")},
    **{name: (float, type(None)) for name in ("baseline_every_s", "retention_s")},
    "token": (Secret, type(None)), "state_dir": (_PATH,), "report_dir": (_PATH, type(None)),
    "config_path": (_PATH, type(None)), "header_row": (int, type(None)),
    "column_map": (dict,), "notify": (dict,), "sources": (dict,),
    "rules": (QuantityRules,), "retry": (RetryPolicy,), "brakes": (BrakeLimits,),
}
"""Each field's own types, exactly (a subclass, a bool for a number, an int for a float:
pydantic decides). A field not named here always goes through pydantic."""
_DICTS = ("column_map", "notify", "sources")


def _expand_home(settings: Settings) -> None:
    """``~/state`` as the flags and the config file read it (a program's ``state_dir="~/x"``
    made a folder named ``~`` in the current one)."""
    for name in ("state_dir", "report_dir"):
        path = getattr(settings, name)
        if isinstance(path, Path) and str(path).startswith("~"):
            object.__setattr__(settings, name, path.expanduser())


def _plain_values(settings: Settings) -> bool:
    """Whether every value of ``settings`` is of its field's own type and within its
    constraints, so that pydantic would take it as it is."""
    for f in fields(settings):
        value = getattr(settings, f.name)
        if type(value) not in _TYPES.get(f.name, ()):
            return False
    header, mapping = settings.header_row, settings.column_map
    return (header is None or header >= 1) and settings.wait_lock_s >= 0 \
        and settings.baseline in ("snapshot", "live") \
        and all(type(k) is str and type(v) is str for k, v in mapping.items()) \
        and all(type(k) is str for d in (settings.notify, settings.sources) for k in d)


_FILE_MODELS = frozenset({"Table", "Text", "Duration", "Share", "Seconds", "Count", "key",
                          "Url", "Urls", "Events", "QuantitySection", "RetrySection",
                          "BrakesSection", "StoreSection", "HookTable", "NotifySection",
                          "FileKeys", "ConfigFile", "Rules", "Brakes", "Retry"})


def __getattr__(name: str) -> Any:
    """The config file's models (:mod:`invsync.run.config_file`, pydantic), loaded when first
    asked for here."""
    if name in _FILE_MODELS or name == "_KNOWN_KEYS":
        from invsync.run import config_file

        return config_file.KNOWN_KEYS if name == "_KNOWN_KEYS" else getattr(config_file, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
