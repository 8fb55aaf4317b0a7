"""What a SOURCE argument means: a local path or glob, a URL, or a ``[sources.NAME]`` table.

A ``[sources.NAME]`` table of the config holds the source's URL and everything that must
not be on a command line (passwords, keys, tokens, headers), plus how the file is picked,
settled, checked for freshness and handled after the run. A URL given on the command line
takes its credentials from the table whose URL names the same scheme, host and port.
Secrets are held in :class:`~invsync.redact.Secret` (registered for redaction), and a
URL's password is taken out of the URL before anything shows it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from invsync.errors import UsageError
from invsync.redact import Secret, redact_url

if TYPE_CHECKING:  # the pydantic model of a [sources.NAME] table: loaded to check one
    from invsync.sources.model import SourceTable

REMOTE_SCHEMES = ("sftp", "ftp", "ftps", "s3", "gs", "gcs", "az", "abfs", "http", "https")
"""The URL schemes a SOURCE may use (``file://`` and plain paths are local)."""
PICKS = ("only", "newest", "oldest")
GLOB_CHARS = re.compile(r"[*?\[]")

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}



def duration_s(value: Any, key: str) -> float:
    """``"26h"``, ``"30m"``, ``"90s"``, ``"7d"`` or a number of seconds, as seconds (> 0)."""
    seconds = _seconds(value)
    if seconds is None:
        raise UsageError(f"{key} {DURATION_PHRASE}, not {value!r}")
    return seconds


def _seconds(value: Any) -> float | None:
    m = _DURATION.fullmatch(str(value))
    if m is None or isinstance(value, bool) or float(m.group(1)) <= 0:
        return None
    return float(m.group(1)) * _UNIT_S[m.group(2)]


@dataclass(frozen=True)
class SourceSpec:
    """One source: where the file is, how to log in, and how to treat what is found."""

    url: str
    """The URL without its password (or the local path or glob)."""
    scheme: str = "file"
    name: str | None = None
    """The ``[sources.NAME]`` it came from, if any."""
    host: str | None = None
    port: int | None = None
    username: str | None = None
    path: str = ""
    """The path (or glob) on the server; for http(s) the whole URL."""
    password: Secret | None = field(default=None, repr=False)
    key_file: Path | None = None
    key_passphrase: Secret | None = field(default=None, repr=False)
    host_key: str | None = None
    known_hosts: Path | None = None
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: Secret | None = field(default=None, repr=False)
    session_token: Secret | None = field(default=None, repr=False)
    anonymous: bool = False
    headers: dict[str, Secret] = field(default_factory=dict, repr=False)
    ca_file: Path | None = None
    verify_tls: bool = True
    tls: bool = False
    pick: str = "only"
    settle_s: float = 3.0
    settle_timeout_s: float | None = None
    marker: str | None = None
    max_age_s: float | None = None
    on_success: str | None = None
    on_failure: str | None = None
    timeout_s: float = 30.0
    interval_s: float = 30.0

    @property
    def display(self) -> str:
        """The source as it may be shown: no password, no secret query value."""
        return redact_url(self.url)

    @property
    def is_remote(self) -> bool:
        return self.scheme != "file"

    @property
    def is_http(self) -> bool:
        return self.scheme in ("http", "https")

    @property
    def has_glob(self) -> bool:
        return not self.is_http and bool(GLOB_CHARS.search(self.path))

    @property
    def key(self) -> str:
        """The folder name of this source's state (last run, ledger, watch lock)."""
        if self.name:
            return re.sub(r"[^A-Za-z0-9_.-]", "_", self.name).strip(".") or "_"
        digest = hashlib.sha256(self.display.encode()).hexdigest()[:16]
        return f"{self.scheme}-{digest}"

    @property
    def settle_timeout(self) -> float:
        """How long to wait for a file to stop growing before giving up (exit 3)."""
        if self.settle_timeout_s is not None:
            return self.settle_timeout_s
        return max(60.0, 20 * self.settle_s)


def is_source(arg: str, sources: dict[str, Any]) -> bool:
    """Does the SOURCE argument ``arg`` need the source layer (a URL, glob or source name)?

    A plain local path does not: it is read as it always was.
    """
    if "://" in arg:
        return True
    if arg in sources:
        return True
    return bool(GLOB_CHARS.search(arg)) and not Path(arg).exists()


def resolve(arg: str, sources: dict[str, Any], **overrides: Any) -> SourceSpec:
    """The :class:`SourceSpec` for the SOURCE argument ``arg``.

    ``sources`` is the config's ``[sources]`` table (see :func:`check_sources`).
    ``overrides`` (flags such as ``pick``, ``max_age_s``) win over the table's values.
    """
    table: dict[str, Any] = {}
    name: str | None = None
    if "://" not in arg and arg in sources:
        if Path(arg).exists():
            raise UsageError(f"{arg!r} is both a file here and a source of the config "
                             f"([sources.{arg}]): write ./{arg} for the file")
        name, table = arg, dict(sources[arg])
        url = str(table["url"])
    else:
        url = arg
        name, table = _table_for(url, sources)
    spec = _from_url(url, name)
    spec = _apply_table(spec, table)
    values = {k: v for k, v in overrides.items() if v is not None}
    return replace(spec, **values) if values else spec


def shown_url(url: str) -> str:
    """A URL that could not be read, as it may be shown: everything before its last ``@``
    goes (a password with an unencoded ``/`` or ``#`` is not where a URL's password is)."""
    if "@" not in url:
        return redact_url(url)
    if "://" not in url and ":" in url.rpartition("@")[0]:  # ``u:PASSWORD@host``
        return _LOOSE_USERINFO.sub(r"\1[redacted]@", url)
    return _BAD_USERINFO.sub(r"\1[redacted]@", url)


_BAD_USERINFO = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://).*@")
_LOOSE_USERINFO = re.compile(r"^(.*?:/{0,2})[^@]*@")
"""A URL written without its ``//`` (``u:PASSWORD@host``, ``https:/u:PASSWORD@host``): what
follows its first ``:`` up to the last ``@`` goes."""
_SCHEME_TYPO = re.compile(r"(?i)^(" + "|".join([*REMOTE_SCHEMES, "file"]) + r")(//|:/?(?!/))")
"""A path that starts as a URL would but for its ``://`` (``ftp//x``, ``sftp:/x``)."""


def _split(url: str) -> Any:
    """``urlsplit(url)``, a malformed URL (``sftp://[::1/x``) being a usage error."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise UsageError(f"{shown_url(url)}: not a URL that can be read ({exc})") from None


def url_problem(url: str) -> str | None:
    """What keeps ``url`` from being a source invsync reads (None: nothing), in words that
    follow the URL shown by :func:`shown_url`."""
    if "://" not in url:
        typo = _SCHEME_TYPO.match(url)
        if typo:
            return (f"a URL needs {typo.group(1)}:// before its host; for a local path, "
                    f"write ./{shown_url(url)}")
        return None
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"not a URL that can be read ({exc})"
    scheme = parts.scheme.lower()
    if scheme == "file":
        return None
    if scheme not in REMOTE_SCHEMES:
        return (f"unknown source scheme {scheme}:// (known: "
                f"{', '.join(s + '://' for s in REMOTE_SCHEMES)}, or a local path)")
    try:
        parts.port  # noqa: B018 - a port that is not a number raises
    except ValueError:
        return ("the port is not a number (a password with /, # or ? must be %-encoded, "
                "or set in the config)")
    if not parts.hostname:
        return "the URL names no host (or bucket)"
    if spaced_host(parts.hostname):
        return "the host name has a space (or a control character) in it"
    return None


def spaced_host(host: str) -> bool:
    """Whether a URL's ``host`` holds a space or a control character, written as it is or
    %-encoded ("h%20x" is no more a host name than "h x")."""
    return any(c.isspace() or not c.isprintable() for c in unquote(host))


def _source_url(value: str) -> str:
    """A ``[sources.NAME] url`` that can be read; ValueError saying what is wanted."""
    problem = url_problem(value)
    if problem:
        raise ValueError(f'must be "sftp://HOST/path", "s3://BUCKET/key", "https://..." or a '
                         f"local path: {shown_url(value)!r}: {problem}")
    return value


def _from_url(url: str, name: str | None) -> SourceSpec:
    """The spec a bare URL (or path) says; a password in it is taken out and kept secret."""
    problem = url_problem(url)
    if problem:
        raise UsageError(f"{shown_url(url)}: {problem}")
    if "://" not in url:
        return SourceSpec(url=url, name=name, path=url)
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        path = unquote(parts.path)
        return SourceSpec(url=path, name=name, path=path)
    password = Secret(unquote(parts.password)) if parts.password else None
    port = parts.port
    host = parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    if parts.username:
        netloc = f"{quote(unquote(parts.username), safe='')}@{netloc}"
    clean = urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
    if scheme in ("http", "https"):
        path = clean
    elif scheme in ("s3", "gs", "gcs", "az", "abfs"):
        path = f"{host}{unquote(parts.path)}"
    else:
        path = unquote(parts.path) or "/"
    return SourceSpec(url=clean, scheme=scheme, name=name, host=host, port=port,
                      username=unquote(parts.username) if parts.username else None,
                      path=path, password=password)


def _table_for(url: str, sources: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The ``[sources.NAME]`` whose URL names the same scheme, host and port as ``url``
    (the longest matching path wins): where a URL given on the command line finds its
    credentials."""
    if "://" not in url:
        return _local_table_for(url, sources)
    want = _split(url)
    best: tuple[int, str | None, dict[str, Any]] = (-1, None, {})
    for name, table in sources.items():
        have = urlsplit(str(table.get("url", "")))
        try:
            same = (have.scheme.lower(), have.hostname, have.port) == \
                (want.scheme.lower(), want.hostname, want.port)
        except ValueError:
            continue
        if not same:
            continue
        prefix = have.path.rsplit("/", 1)[0] if GLOB_CHARS.search(have.path) else have.path
        if want.path.startswith(prefix) and len(prefix) > best[0]:
            best = (len(prefix), name, dict(table))
    return best[1], best[2]


def _local_table_for(path: str, sources: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The ``[sources.NAME]`` whose url is the same local path or glob as ``path``: a drop
    folder named by its path is that source (one ledger, one last run, one watch lock)."""
    want = os.path.abspath(os.path.expanduser(path))
    for name, table in sources.items():
        url = str(table.get("url", ""))
        if "://" not in url and os.path.abspath(os.path.expanduser(url)) == want:
            return name, dict(table)
    return None, {}


def _secret(table: dict[str, Any], key: str) -> Secret | None:
    value = table.get(key)
    return Secret(str(value)) if value else None


def _apply_table(spec: SourceSpec, table: dict[str, Any]) -> SourceSpec:
    """``spec`` with the settings of its ``[sources.NAME]`` table (already checked)."""
    if not table:
        return spec
    values = _plain_values(table)
    if table.get("username") and not spec.username:
        values["username"] = str(table["username"])
    values.update(_secret_values(spec, table))
    return replace(spec, **values)


_TEXT_KEYS = ("pick", "marker", "on_success", "on_failure", "host_key", "endpoint_url",
              "region", "access_key_id")
_FLOAT_KEYS = ("settle_s", "settle_timeout_s", "timeout_s", "interval_s")
_BOOL_KEYS = ("anonymous", "verify_tls", "tls")
_PATH_KEYS = ("key_file", "known_hosts", "ca_file")


def _plain_values(table: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {k: str(table[k]) for k in _TEXT_KEYS if table.get(k) is not None}
    values.update({k: float(table[k]) for k in _FLOAT_KEYS if table.get(k) is not None})
    values.update({k: bool(table[k]) for k in _BOOL_KEYS if table.get(k) is not None})
    values.update({k: Path(str(table[k])).expanduser() for k in _PATH_KEYS if table.get(k)})
    if table.get("max_age") is not None:
        values["max_age_s"] = duration_s(table["max_age"], "max_age")
    return values


def _secret_values(spec: SourceSpec, table: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    password = _secret(table, "password")
    if table.get("password_env"):
        env = str(table["password_env"])
        if not os.environ.get(env):
            raise UsageError(f"[sources.{spec.name}] password_env: the environment variable "
                             f"{env} is not set")
        password = Secret(os.environ[env])
    if password is not None and spec.password is None:
        values["password"] = password
    for key in ("key_passphrase", "secret_access_key", "session_token"):
        secret = _secret(table, key)
        if secret is not None:
            values[key] = secret
    if table.get("headers"):
        values["headers"] = {str(k): Secret(str(v)) for k, v in table["headers"].items()}
    return values


def check_sources(section: Any) -> dict[str, dict[str, Any]]:
    """The config's ``[sources]`` section, checked: raise :class:`UsageError` (exit 64) if bad.

    Each ``[sources.NAME]`` needs a ``url``; unknown keys and bad values are refused at
    start (by :class:`SourceTable`), not after a night's wait.
    """
    if not isinstance(section, dict):
        raise UsageError("[sources] holds tables such as [sources.warehouse]")
    out: dict[str, dict[str, Any]] = {}
    for name, table in section.items():
        check_source_table(str(name), table)
        _from_url(table["url"], str(name))  # a url that cannot be read is refused at start
        for key in ("password", "key_passphrase", "secret_access_key", "session_token"):
            if table.get(key):
                Secret(str(table[key]))  # registered for redaction at once
        for value in (table.get("headers") or {}).values():
            Secret(str(value))
        out[str(name)] = dict(table)
    return out


def check_source_table(name: str, table: Any) -> SourceTable:
    """One ``[sources.NAME]`` table validated by :class:`SourceTable`; :class:`UsageError`
    names the key (never a secret's value)."""
    from pydantic import ValidationError

    from invsync.config_errors import usage_error_from
    from invsync.sources.model import SourceTable

    try:
        return SourceTable.model_validate(table)
    except ValidationError as exc:
        raise usage_error_from(exc, SourceTable, prefix=("sources", name)) from None


def _after(allow_delete: bool) -> Any:
    def check(value: str) -> str:
        problem = _after_problem(value, allow_delete)
        if problem:
            raise ValueError(problem)
        return value
    return check


DURATION_PHRASE = 'must be a positive duration such as "26h", "30m" or "90s"'


def _duration(value: Any) -> str | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float) \
            or _seconds(value) is None:
        raise ValueError(DURATION_PHRASE)
    return value


def _text_values(value: dict[str, Any]) -> dict[str, Any]:
    if not all(isinstance(v, str) for v in value.values()):
        raise ValueError("must be a table of text values")
    return value


def check_after(value: Any, where: str, *, allow_delete: bool) -> None:
    """An ``on_success``/``on_failure`` value: ``"move:FOLDER/"`` (or ``"delete"``)."""
    if value is None:
        return
    problem = _after_problem(str(value), allow_delete)
    if problem:
        raise UsageError(f"{where} {problem}, not {str(value)!r}")


def _after_problem(text: str, allow_delete: bool) -> str | None:
    """What an ``on_success``/``on_failure`` value must be, if ``text`` is not that."""
    if text == "delete" and allow_delete:
        return None
    folder = text.removeprefix("move:")
    if (not text.startswith("move:") or not folder.strip("/") or folder.startswith(("/", "~"))
            or ".." in folder.split("/")):
        choices = '"move:done/" or "delete"' if allow_delete else '"move:failed/"'
        return f"must be {choices} (a folder beside the file)"
    return None



def __getattr__(name: str) -> Any:
    """:class:`~invsync.sources.model.SourceTable` (pydantic) is imported when first asked
    for: a run without a config file never loads pydantic."""
    if name in ("SourceTable", "Seconds", "SECONDS"):
        from invsync.sources import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
