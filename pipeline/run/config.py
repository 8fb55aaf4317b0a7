"""Settings for a run: command-line values over environment over the TOML config file.

The access token is never a command-line value: it comes from ``BIGCOMMERCE_ACCESS_TOKEN``
or the config file, and is held in a :class:`Secret` that never prints itself.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from invsync.errors import UsageError
from invsync.redact import Secret
from invsync.run.brakes import BrakeLimits
from invsync.stages.validate import DUPLICATE_POLICIES, QuantityRules
from invsync.store.limits import MAX_ITEMS_PER_REQUEST, RetryPolicy

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


@dataclass
class Settings:
    """Everything a sync run needs to know besides the input file."""

    store_hash: str | None = None
    token: Secret | None = field(default=None, repr=False)
    api_url: str = DEFAULT_API_URL
    location_id: int = 1
    reason: str | None = "invsync stock sync"
    state_dir: Path = field(default_factory=default_state_dir)
    report_dir: Path | None = None
    batch_size: int = MAX_ITEMS_PER_REQUEST
    concurrency: int = 8
    dry_run: bool = False
    full: bool = False
    sheet: str | None = None
    encoding: str | None = None
    """A CSV's text encoding, forced (else detected)."""
    header_row: int | None = None
    """The header's row number (else found in the top 20 rows)."""
    column_map: dict[str, str] = field(default_factory=dict)
    duplicates: str = "reject"
    rules: QuantityRules = field(default_factory=QuantityRules)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    verify_tls: bool = True
    zero_missing: bool = False
    baseline: str = "snapshot"
    """``snapshot`` (what the store last accepted) or ``live`` (read from the store)."""
    baseline_every_s: float | None = None
    """``baseline_every``: a snapshot-baseline run uses the live baseline instead when the
    last live-baseline run is older than this (the periodic reconcile)."""
    plan_file: bool = False
    """The input is a reviewed ``plan.csv``: push exactly it."""
    brakes: BrakeLimits = field(default_factory=BrakeLimits)
    config_path: Path | None = None
    profile: str | None = None
    """The config profile in force (``--profile`` / ``INVSYNC_PROFILE``), if any."""
    wait_lock_s: float = 0.0
    """Wait this long for another run's lock instead of exiting 4 at once."""
    notify: dict[str, Any] = field(default_factory=dict)
    """The ``[notify]`` section (checked by :func:`invsync.run.notify.notify_config`)."""
    source: str = "cli"
    """What kind of source the file is (``cli``; the merchant page passes ``portal``): the
    shrunken-file brake compares a run only with past runs of the same kind."""

    @classmethod
    def from_config(cls, path: str | Path | None = None, *, profile: str | None = None,
                    **overrides: Any) -> Settings:
        """Settings as the CLI builds them: ``overrides`` (flag names, e.g. ``dry_run=True``)
        win over the environment, which wins over the config file at ``path``
        (else ``$INVSYNC_CONFIG``), which wins over the defaults."""
        return load_settings(Path(path) if path is not None else None,
                             {**overrides, "profile": profile})

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
        if self.baseline == "live" and not self.token:
            raise UsageError("--baseline live reads the store: it needs the store hash and "
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
        """The settings worth recording in a report (no token)."""
        return {
            "store_hash": self.store_hash, "api_url": self.api_url,
            "location_id": self.location_id, "reason": self.reason,
            "batch_size": self.batch_size, "concurrency": self.concurrency,
            "dry_run": self.dry_run, "full": self.full, "sheet": self.sheet,
            "encoding": self.encoding, "header_row": self.header_row,
            "column_map": self.column_map, "duplicates": self.duplicates,
            "quantity_rules": self.rules.describe(), "zero_missing": self.zero_missing,
            "brakes": self.brakes.__dict__, "verify_tls": self.verify_tls,
            "baseline": self.baseline, "baseline_every_s": self.baseline_every_s,
            "plan_file": self.plan_file, "source": self.source,
            "config": str(self.config_path) if self.config_path else None,
            "profile": self.profile,
        }


_STORE_HASH = re.compile(r"[A-Za-z0-9_-]{1,100}")

_KNOWN_KEYS = {"store_hash", "access_token", "api_url", "location_id", "reason", "state_dir",
               "report_dir", "batch_size", "concurrency", "sheet", "duplicates", "columns",
               "quantity", "retry", "verify_tls", "zero_missing", "brakes", "baseline",
               "baseline_every", "notify", "encoding", "header_row"}


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
    except OSError as exc:
        raise UsageError(f"cannot read config file {config_path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {config_path} is not valid TOML: {exc}") from None
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
        for key, value in profiles[profile].items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    return Path(config_path), profile, cfg


def _whole(key: str, value: Any) -> int:
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


def load_settings(config_path: Path | None, overrides: dict[str, Any]) -> Settings:
    """Build settings: ``overrides`` (flags, None = unset) > environment > config > defaults.

    ``overrides["profile"]`` names a ``[profiles.NAME]`` of the config (see :func:`read_config`).
    """
    config_path, profile, cfg = read_config(config_path, overrides.get("profile"))
    s = Settings(config_path=config_path, profile=profile)

    def pick(key: str, env: str | None = None) -> Any:
        if overrides.get(key) is not None:
            return overrides[key]
        if env and os.environ.get(env):
            return os.environ[env]
        return cfg.get(key)

    s.store_hash = pick("store_hash", ENV_STORE_HASH)
    if os.environ.get(ENV_TOKEN):
        s.token = clean_token(os.environ[ENV_TOKEN], ENV_TOKEN)
    elif cfg.get("access_token"):
        s.token = clean_token(str(cfg["access_token"]), f"access_token in {config_path}")
    s.api_url = str(pick("api_url", ENV_API_URL) or DEFAULT_API_URL)
    for key in ("location_id", "batch_size", "concurrency"):
        value = pick(key)
        if value is not None:
            setattr(s, key, _whole(key, value))
    header_row = pick("header_row")
    if header_row is not None:
        s.header_row = _whole("header_row", header_row)
        if s.header_row < 1:
            raise UsageError(f"header_row must be 1 or more, not {s.header_row}")
    for key in ("reason", "sheet", "duplicates", "encoding"):
        value = pick(key)
        if value is not None:
            setattr(s, key, str(value))
    for key in ("state_dir", "report_dir"):
        value = pick(key)
        if value is not None:
            setattr(s, key, Path(value).expanduser())
    for key in ("dry_run", "full"):
        setattr(s, key, bool(overrides.get(key)))
    s.zero_missing = bool(overrides.get("zero_missing") or cfg.get("zero_missing"))
    s.baseline = str(pick("baseline") or "snapshot")
    if s.baseline not in ("snapshot", "live"):
        raise UsageError("--baseline must be snapshot or live")
    if cfg.get("baseline_every") is not None:
        s.baseline_every_s = parse_duration(cfg["baseline_every"], "baseline_every")
    s.brakes = _brakes(cfg.get("brakes") or {}, overrides)
    if overrides.get("verify_tls") is False or cfg.get("verify_tls") is False:
        s.verify_tls = False
    columns = dict(cfg.get("columns") or {})
    columns.update(overrides.get("column_map") or {})
    s.column_map = {str(k): str(v) for k, v in columns.items()}
    s.rules = _rules(cfg.get("quantity") or {}, overrides)
    s.retry = _retry(cfg.get("retry") or {})
    wait = overrides.get("wait_lock")
    if wait is not None:
        if wait < 0:
            raise UsageError("--wait-lock must not be negative")
        s.wait_lock_s = float(wait)
    notify = cfg.get("notify") or {}
    if not isinstance(notify, dict):
        raise UsageError("[notify] must be a table")
    if notify:
        from invsync.run.notify import notify_config

        notify_config(notify)  # fail at start (exit 64), not after the run
    s.notify = dict(notify)
    return s


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
    """``base`` with the options a run recorded (see :meth:`Settings.public`) put back."""
    rules = options.get("quantity_rules") or {}
    kept = {k: options[k] for k in ("location_id", "reason", "batch_size", "concurrency",
                                    "sheet", "duplicates", "zero_missing", "full", "baseline",
                                    "plan_file", "source", "encoding", "header_row")
            if k in options}
    return replace(
        base, **kept, column_map=dict(options.get("column_map") or {}),
        rules=QuantityRules(**rules) if rules else base.rules,
        brakes=BrakeLimits(**options["brakes"]) if options.get("brakes") else base.brakes,
        dry_run=False,
    )


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
