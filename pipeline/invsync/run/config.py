"""Settings for a run: command-line values over environment over the TOML config file.

The access token is never a command-line value: it comes from ``BIGCOMMERCE_ACCESS_TOKEN``
or the config file, and is held in a :class:`Secret` that never prints itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from invsync.errors import UsageError
from invsync.redact import Secret
from invsync.run.brakes import BrakeLimits
from invsync.stages.validate import DUPLICATE_POLICIES, QuantityRules
from invsync.store.limits import DEFAULT_QUOTA_SHARE, MAX_ITEMS_PER_REQUEST, RetryPolicy

DEFAULT_API_URL = "https://api.bigcommerce.com"
ENV_STORE_HASH = "BIGCOMMERCE_STORE_HASH"
ENV_TOKEN = "BIGCOMMERCE_ACCESS_TOKEN"
ENV_API_URL = "BIGCOMMERCE_API_URL"
ENV_CONFIG = "INVSYNC_CONFIG"
ENV_PROFILE = "INVSYNC_PROFILE"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/invsync``, else ``~/.local/state/invsync``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "invsync"


NOT_FROM_FILE: Literal[False] = False
"""A field's :func:`meta` ``file`` when no config file key sets it (a flag, the run's own)."""
NOT_PUBLIC: Literal[False] = False
"""A field's :func:`meta` ``public`` when the public view leaves it out (paths, secrets)."""
_UNSET: Any = object()
"""What a field's loader returns when no source gave a value: the field keeps its default."""


@dataclass(frozen=True)
class _Sources:
    """Where a setting can come from, highest first: flags, the environment, the file."""

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

    ``file``: its key in the TOML config file, or :data:`NOT_FROM_FILE`. ``public``: its
    name in :meth:`Settings.public` (report.json's ``options``), or :data:`NOT_PUBLIC`.
    ``resume``: :func:`settings_from_public` puts the recorded value back. ``load``: builds
    the value from the sources (flags > environment > file), or returns ``_UNSET``.
    ``to_public``/``from_public``/``to_file``: converters to and from those views.
    """
    return {"file": file, "public": public, "resume": resume, "load": load,
            "to_public": to_public, "from_public": from_public, "to_file": to_file}


def _whole_number(key: str, value: Any) -> int:
    """A whole number from a flag, the environment or TOML: ``2.5`` or ``true`` is refused,
    never truncated (``location_id = 2.5`` must not send stock to location 2)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise UsageError(f"{key} must be a whole number, not {value!r}")


def _whole(key: str, minimum: int | None = None) -> Loader:
    def load(src: _Sources) -> Any:
        value = src.pick(key)
        if value is None:
            return _UNSET
        number = _whole_number(key, value)
        if minimum is not None and number < minimum:
            raise UsageError(f"{key} must be {minimum} or more, not {number}")
        return number
    return load


def _text(key: str) -> Loader:
    def load(src: _Sources) -> Any:
        value = src.pick(key)
        return _UNSET if value is None else str(value)
    return load


def _path(key: str) -> Loader:
    def load(src: _Sources) -> Any:
        value = src.pick(key)
        return _UNSET if value is None else Path(value).expanduser()
    return load


def _flag(key: str) -> Loader:
    return lambda src: bool(src.overrides.get(key))


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


def _load_baseline(src: _Sources) -> str:
    baseline = str(src.pick("baseline") or "live")
    if baseline not in ("snapshot", "live"):
        raise UsageError("--baseline must be snapshot or live")
    return baseline


def _load_column_map(src: _Sources) -> dict[str, str]:
    columns = dict(src.cfg.get("columns") or {})
    columns.update(src.overrides.get("column_map") or {})
    return {str(k): str(v) for k, v in columns.items()}


def _load_wait_lock(src: _Sources) -> Any:
    wait = src.overrides.get("wait_lock")
    if wait is None:
        return _UNSET
    if wait < 0:
        raise UsageError("--wait-lock must not be negative")
    return float(wait)


def _load_notify(src: _Sources) -> dict[str, Any]:
    notify = src.cfg.get("notify") or {}
    if not isinstance(notify, dict):
        raise UsageError("[notify] must be a table")
    if notify:
        from invsync.run.notify import notify_config

        notify_config(notify)  # fail at start (exit 64), not after the run
    return dict(notify)


def _load_sources(src: _Sources) -> dict[str, Any]:
    from invsync.sources import check_sources

    return check_sources(src.cfg.get("sources") or {})  # refused at start (exit 64) if bad


def _lag(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    return parse_duration(value, "verify_lag_s")


def _load_store_table(src: _Sources) -> Any:
    table = src.cfg.get("store")
    if table is None:
        return _UNSET
    if not isinstance(table, dict) or set(table) - {"quota_share"}:
        raise UsageError("[store] holds only quota_share (a share between 0 and 1, such as "
                         "0.8)")
    share = table.get("quota_share")
    if share is None:
        return _UNSET
    if isinstance(share, bool) or not isinstance(share, int | float) \
            or not 0 < float(share) <= 1:
        raise UsageError(f"[store] quota_share must be a number above 0 and at most 1, not "
                         f"{share!r}")
    return float(share)


def _rules_to_file(rules: QuantityRules) -> dict[str, Any]:
    return {k: v for k, v in rules.describe().items() if v is not None}


def _brakes_to_file(brakes: BrakeLimits) -> dict[str, Any]:
    # The allow_* overrides are flags of one run, never config.
    return {"min_rows_ratio": brakes.min_rows_ratio, "max_zero_share": brakes.max_zero_share}


@dataclass(frozen=True)
class Settings:
    """Everything a sync run needs to know besides the input file.

    Frozen: derive changed settings with :func:`dataclasses.replace`. Each field's
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
        file="location_id", public="location_id", resume=True, load=_whole("location_id")))
    reason: str | None = field(default="invsync stock sync", metadata=meta(
        file="reason", public="reason", resume=True, load=_text("reason")))
    state_dir: Path = field(default_factory=default_state_dir, metadata=meta(
        file="state_dir", public=NOT_PUBLIC, load=_path("state_dir"), to_file=str))
    report_dir: Path | None = field(default=None, metadata=meta(
        file="report_dir", public=NOT_PUBLIC, load=_path("report_dir"), to_file=str))
    batch_size: int = field(default=MAX_ITEMS_PER_REQUEST, metadata=meta(
        file="batch_size", public="batch_size", resume=True, load=_whole("batch_size")))
    concurrency: int = field(default=1, metadata=meta(
        file="concurrency", public="concurrency", resume=True, load=_whole("concurrency")))
    dry_run: bool = field(default=False, metadata=meta(
        file=NOT_FROM_FILE, public="dry_run", load=_flag("dry_run")))
    full: bool = field(default=False, metadata=meta(
        file=NOT_FROM_FILE, public="full", resume=True, load=_flag("full")))
    sheet: str | None = field(default=None, metadata=meta(
        file="sheet", public="sheet", resume=True, load=_text("sheet")))
    encoding: str | None = field(default=None, metadata=meta(
        file="encoding", public="encoding", resume=True, load=_text("encoding")))
    """A CSV's text encoding, forced (else detected)."""
    header_row: int | None = field(default=None, metadata=meta(
        file="header_row", public="header_row", resume=True,
        load=_whole("header_row", minimum=1)))
    """The header's row number (else found in the top 20 rows)."""
    column_map: dict[str, str] = field(default_factory=dict, metadata=meta(
        file="columns", public="column_map", resume=True, load=_load_column_map,
        from_public=lambda m: dict(m or {})))
    duplicates: str = field(default="reject", metadata=meta(
        file="duplicates", public="duplicates", resume=True, load=_text("duplicates")))
    rules: QuantityRules = field(default_factory=QuantityRules, metadata=meta(
        file="quantity", public="quantity_rules", resume=True,
        load=lambda src: _rules(src.cfg.get("quantity") or {}, src.overrides),
        to_public=QuantityRules.describe, from_public=lambda d: QuantityRules(**(d or {})),
        to_file=_rules_to_file))
    retry: RetryPolicy = field(default_factory=RetryPolicy, metadata=meta(
        file="retry", public=NOT_PUBLIC,
        load=lambda src: _retry(src.cfg.get("retry") or {}), to_file=asdict))
    verify_tls: bool = field(default=True, metadata=meta(
        file="verify_tls", public="verify_tls",
        load=lambda src: not (src.overrides.get("verify_tls") is False
                              or src.cfg.get("verify_tls") is False)))
    zero_missing: bool = field(default=False, metadata=meta(
        file="zero_missing", public="zero_missing", resume=True,
        load=lambda src: bool(src.overrides.get("zero_missing") or src.cfg.get("zero_missing"))))
    baseline: str = field(default="live", metadata=meta(
        file="baseline", public="baseline", resume=True, load=_load_baseline))
    """``live`` (the default: plans are made against the store's levels, read before
    planning) or ``snapshot`` (what invsync last set: no reads, but edits made in the
    store are left alone until the file's number changes)."""
    baseline_every_s: float | None = field(default=None, metadata=meta(
        file="baseline_every", public="baseline_every_s",
        load=lambda src: _UNSET if src.cfg.get("baseline_every") is None
        else parse_duration(src.cfg["baseline_every"], "baseline_every")))
    """``baseline_every``: a snapshot-baseline run uses the live baseline instead when the
    last live-baseline run is older than this (the periodic reconcile)."""
    verify_lag_s: float = field(default=30.0, metadata=meta(
        file="verify_lag_s", public="verify_lag_s",
        load=lambda src: _UNSET if src.cfg.get("verify_lag_s") is None
        else _lag(src.cfg["verify_lag_s"])))
    """How long a read may lag a write: ``verify``, ``drift`` and the apply re-check
    re-read differing items for up to this long before calling them wrong."""
    quota_share: float = field(default=DEFAULT_QUOTA_SHARE, metadata=meta(
        file="store", public="quota_share", load=_load_store_table,
        to_file=lambda share: {"quota_share": share}))
    """``[store] quota_share``: the share of each rate-limit window's requests invsync
    uses; the rest is left to the store's other apps."""
    store_id: str | None = field(default=None, metadata=meta(
        file="store_id", public="store_id", load=_text("store_id")))
    """Names the store's state (snapshot, lock, runs) instead of its API host: two
    spellings of one host (a name and its IP address) are one store when both set it."""
    token_source: str | None = field(default=None, metadata=meta(
        file=NOT_FROM_FILE, public="token_source", load=_load_token_source))
    """Where the access token came from (never the token)."""
    plan_file: bool = field(default=False, metadata=meta(
        file=NOT_FROM_FILE, public="plan_file", resume=True))
    """The input is a reviewed ``plan.csv``: push exactly it."""
    brakes: BrakeLimits = field(default_factory=BrakeLimits, metadata=meta(
        file="brakes", public="brakes", resume=True,
        load=lambda src: _brakes(src.cfg.get("brakes") or {}, src.overrides),
        to_public=asdict, from_public=lambda d: BrakeLimits(**(d or {})),
        to_file=_brakes_to_file))
    config_path: Path | None = field(default=None, metadata=meta(
        file=NOT_FROM_FILE, public="config", load=lambda src: src.config_path,
        to_public=lambda p: str(p) if p else None))
    profile: str | None = field(default=None, metadata=meta(
        file=NOT_FROM_FILE, public="profile", load=lambda src: src.profile))
    """The config profile in force (``--profile`` / ``INVSYNC_PROFILE``), if any."""
    wait_lock_s: float = field(default=0.0, metadata=meta(
        file=NOT_FROM_FILE, public=NOT_PUBLIC, load=_load_wait_lock))
    """Wait this long for another run's lock instead of exiting 4 at once."""
    notify: dict[str, Any] = field(default_factory=dict, metadata=meta(
        file="notify", public=NOT_PUBLIC, load=_load_notify))
    """The ``[notify]`` section (checked by :func:`invsync.run.notify.notify_config`)."""
    sources: dict[str, Any] = field(default_factory=dict, repr=False, metadata=meta(
        file="sources", public=NOT_PUBLIC, load=_load_sources))
    """The ``[sources.NAME]`` tables (checked by :func:`invsync.sources.check_sources`)."""
    source: str = field(default="cli", metadata=meta(
        file="source", public="source", resume=True, load=_text("source")))
    """The source's name (``source`` in the config; the merchant page passes ``portal``):
    the shrunken-file brake and ``volume_drop`` compare a run with the last successful run
    of the same source. The default ``cli`` means: the file's path names the source."""
    retention_s: float | None = field(default=None, metadata=meta(
        file="retention", public=NOT_PUBLIC,
        load=lambda src: _UNSET if src.cfg.get("retention") is None
        else parse_duration(src.cfg["retention"], "retention")))
    """``retention``: after each run, remove run folders and uploads older than this (as
    ``invsync prune --keep``)."""

    # ---- as-of time (orders sold since the file was made: docs/orders.md) ----
    as_of: str | None = field(default=None, metadata=meta(
        file="as_of", public="as_of", resume=True, load=_text("as_of")))
    """``--as-of``: when the file's levels were true (ISO 8601 with an offset, or ``mtime``
    for the file's modification time); orders placed since are subtracted."""
    max_as_of_age_s: float = field(default=48 * 3600.0, metadata=meta(
        file="max_as_of_age", public="max_as_of_age_s",
        load=lambda src: _UNSET if src.cfg.get("max_as_of_age") is None
        else parse_duration(src.cfg["max_as_of_age"], "max_as_of_age")))
    """An as-of time older than this is refused (the order listing grows with it)."""

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, profile: str | None = None,
                    **overrides: Any) -> Settings:
        """Settings as the CLI builds them: ``overrides`` (flag names, e.g. ``dry_run=True``)
        win over the environment, which wins over the config file at ``path``
        (else ``$INVSYNC_CONFIG``), which wins over the defaults."""
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
        if self.location_id < 1:
            raise UsageError("--location-id must be a positive whole number")
        if self.duplicates not in DUPLICATE_POLICIES:
            raise UsageError(f"--duplicates must be one of {', '.join(DUPLICATE_POLICIES)}")
        if self.as_of is not None and not self.token and not self.plan_file:
            raise UsageError("--as-of reads the store's orders: it needs the store hash and "
                             "access token, even for a dry run")
        if self.token and not self.store_hash:
            # Any run with a token talks to the store (a dry run reads its locations).
            raise UsageError(f"no store hash: pass --store-hash or set {ENV_STORE_HASH}")
        if self.store_hash is not None and not _STORE_HASH.fullmatch(self.store_hash):
            raise UsageError("the store hash may hold only letters, digits, '-' and '_' "
                             f"(got {self.store_hash!r})")
        if self.token or needs_store:
            from urllib.parse import urlsplit

            parts = urlsplit(self.api_url)
            if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
                raise UsageError(f"the API URL must start with https:// (or http://) and name a "
                                 f"host, not {self.api_url!r}")
            if parts.path.strip("/") or parts.query or parts.fragment:
                raise UsageError(f"the API URL is the host only (such as "
                                 f"https://api.bigcommerce.com), not {self.api_url!r}: drop the "
                                 f"path (invsync adds /stores/<store hash>/v3 itself)")
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


_PROFILE_KEYS = "\0profile keys"
"""Where :func:`read_config` leaves the keys the profile's own table set."""

_STORE_HASH = re.compile(r"[A-Za-z0-9_-]{1,100}")

_KNOWN_KEYS = frozenset(f.metadata["file"] for f in fields(Settings)
                        if f.metadata["file"] is not NOT_FROM_FILE)
"""The config file's keys: derived from the fields' metadata."""


def read_config(config_path: Path | None, profile: str | None = None
                ) -> tuple[Path | None, str | None, dict[str, Any]]:
    """The config file (``--config``, else ``$INVSYNC_CONFIG``) with one profile applied.

    A profile (``--profile``, else ``$INVSYNC_PROFILE``) is ``[profiles.NAME]``: its keys
    replace the top level's, and its tables (``[profiles.NAME.brakes]``, ...) replace keys
    of the top level's tables. Returns (path, profile, merged values).
    """
    if config_path is None and os.environ.get(ENV_CONFIG):
        config_path = Path(os.environ[ENV_CONFIG])
    profile = profile or os.environ.get(ENV_PROFILE) or None
    if config_path is None:
        if profile:
            raise UsageError(f"profile {profile!r} needs a config file: pass --config or set "
                             f"{ENV_CONFIG}")
        return None, None, {}
    try:
        cfg = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        why = getattr(exc, "strerror", None) or one_line_error(exc)
        if isinstance(exc, tomllib.TOMLDecodeError):
            raise UsageError(f"config file {config_path} is not valid TOML: {exc}") from None
        raise UsageError(f"cannot read config file {config_path!r}: {why}") from None
    check_raw_values(cfg, config_path)
    profiles = cfg.pop("profiles", None) or {}
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise UsageError(f"config file {config_path}: [profiles] holds tables such as "
                         f"[profiles.production]")
    for where, table in [("top level", cfg)] + [(f"[profiles.{k}]", v)
                                                 for k, v in profiles.items()]:
        unknown = set(table) - _KNOWN_KEYS
        if unknown:
            raise UsageError(f"config file {config_path}: unknown key(s) in {where}: "
                             f"{', '.join(sorted(unknown))}")
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise UsageError(f"config file {config_path} has no profile {profile!r} "
                             f"(profiles: {known})")
        cfg[_PROFILE_KEYS] = frozenset(profiles[profile])
        for key, value in profiles[profile].items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    return Path(config_path), profile, cfg


_TABLES = {"brakes", "quantity", "retry", "notify", "columns", "text_map", "profiles"}
"""Config keys that hold a table: a list or a value there is refused by name."""


def one_line_error(exc: BaseException) -> str:
    """An exception as a short phrase for a message."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_raw_values(cfg: dict[str, Any], config_path: Path | str, where: str = "") -> None:
    """Refuse, naming the key, values no setting can use: a list or value where a table is
    expected, a number too large to hold (``1e400``) or not a number (``nan``), and a NUL
    byte in any text (a path with one cannot be opened). Raises :class:`UsageError`."""
    for key, value in cfg.items():
        name = f"{where}{key}"
        if key in _TABLES and not isinstance(value, dict) and not (
                key == "hooks" and isinstance(value, list)):
            raise UsageError(f"config file {config_path}: {name} must be a table "
                             f"([{name}]), not {type(value).__name__} {value!r}"[:300])
        _check_value(value, name, config_path)


def _check_value(value: Any, name: str, config_path: Path | str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"config file {config_path}: {name} must be a finite number, "
                         f"not {value!r}")
    if isinstance(value, str) and "\x00" in value:
        raise UsageError(f"config file {config_path}: {name} holds a NUL byte")
    if isinstance(value, dict):
        check_raw_values(value, config_path, f"{name}.")
    elif isinstance(value, list):
        for n, item in enumerate(value, start=1):
            _check_value(item, f"{name}[{n}]", config_path)


def load_settings(config_path: Path | None, overrides: dict[str, Any]) -> Settings:
    """Build settings: ``overrides`` (flags, None = unset) > environment > config > defaults.

    ``overrides["profile"]`` names a ``[profiles.NAME]`` of the config (see :func:`read_config`).
    Each field's value comes from its loader (the ``load`` of its :func:`meta`).
    """
    config_path, profile, cfg = read_config(config_path, overrides.get("profile"))
    profile_keys = cfg.pop(_PROFILE_KEYS, frozenset())
    src = _Sources(overrides, cfg, config_path, profile, profile_keys)
    values = {}
    for f in fields(Settings):
        load = f.metadata["load"]
        value = load(src) if load else _UNSET
        if value is not _UNSET:
            values[f.name] = value
    return Settings(**values)


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


def parse_duration(value: Any, key: str) -> float:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"90s"`` or a number of seconds, as seconds."""
    m = _DURATION.fullmatch(str(value))
    if m is None or isinstance(value, bool) or float(m.group(1)) <= 0:
        raise UsageError(f"{key} must be a positive duration such as \"7d\", \"12h\" or "
                         f"\"30m\", not {value!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


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


def _rules(section: dict[str, Any], overrides: dict[str, Any]) -> QuantityRules:
    def value(key: str) -> Any:
        return overrides[key] if overrides.get(key) is not None else section.get(key)

    try:
        text_map = {str(k): int(v) for k, v in (section.get("text_map") or {}).items()}
        text_map.update({k: int(v) for k, v in (overrides.get("text_map") or {}).items()})
        buffer = int(value("buffer") or 0)
        maximum = value("maximum")
        rules = QuantityRules(
            text_map=text_map, buffer=buffer,
            clamp_negative=bool(value("clamp_negative") or False),
            maximum=int(maximum) if maximum is not None else None,
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad quantity rule: {exc}") from None
    if rules.buffer < 0 or (rules.maximum is not None and rules.maximum < 0):
        raise UsageError("quantity buffer and maximum must not be negative")
    return rules


def _brakes(section: dict[str, Any], overrides: dict[str, Any]) -> BrakeLimits:
    try:
        limits = BrakeLimits(
            min_rows_ratio=float(section.get("min_rows_ratio", 0.5)),
            max_zero_share=float(section.get("max_zero_share", 0.3)),
            allow_empty=bool(overrides.get("allow_empty")),
            allow_shrink=bool(overrides.get("allow_shrink")),
            allow_zeroing=bool(overrides.get("allow_zeroing")),
        )
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad [brakes] section: {exc}") from None
    if not (0 <= limits.min_rows_ratio <= 1 and 0 <= limits.max_zero_share <= 1):
        raise UsageError("[brakes] ratios must be between 0 and 1")
    return limits


def _retry(section: dict[str, Any]) -> RetryPolicy:
    fields = RetryPolicy.__dataclass_fields__
    unknown = set(section) - set(fields)
    if unknown:
        raise UsageError(f"bad [retry] section: unknown key(s) {', '.join(sorted(unknown))}")
    try:
        values = {k: float(v) for k, v in section.items() if k != "max_attempts"}
        attempts = int(section.get("max_attempts", RetryPolicy.max_attempts))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad [retry] section: {exc}") from None
    for key, value in values.items():
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"bad [retry] section: {key} must be a number above 0, not {value}")
    if attempts < 1:
        raise UsageError(f"bad [retry] section: max_attempts must be 1 or more, not {attempts}")
    try:
        return RetryPolicy(max_attempts=attempts, **values)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad [retry] section: {exc}") from None


def parse_map(pairs: tuple[str, ...], flag: str = "--map") -> dict[str, str]:
    """Turn repeated ``KEY=VALUE`` flag values (``--map HEADER=column``) into a dict."""
    out = {}
    for pair in pairs:
        header, sep, column = pair.partition("=")
        if not sep or not header.strip() or not column.strip():
            raise UsageError(f"{flag} takes KEY=VALUE, not {pair!r}")
        out[header.strip()] = column.strip()
    return out
