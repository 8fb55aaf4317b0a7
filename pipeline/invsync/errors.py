"""The whole error model of invsync, split by what the caller should do.

    InvsyncError
    ├── FatalError            stop the run; retrying the same thing will not help
    │   ├── UsageError        bad flags or config                    exit 64
    │   │   └── PlanForAnotherStore  a plan applied to another store  exit 64
    │   ├── InputFileError    the input file cannot be used          exit 65
    │   │   └── NoInputError  the input file is missing or unreadable exit 66
    │   ├── SafetyBrakeError  a safety brake tripped before sending  exit 3
    │   │   └── StalePlan     the store changed since the preview     exit 3
    │   ├── LockedError       another run holds the store's lock     exit 4
    │   ├── AuthError         401/403 from the store                 exit 2
    │   ├── StoreError        the store failed or answered nonsense  exit 2
    │   └── InternalError     invsync's own figures disagree (a bug) exit 2
    ├── RetryableError        transient: back off and try again (429, 5xx, timeouts)
    └── RowRejected           rows or items refused; they are reported, the run goes on
        └── Refused           a 422: the store refused a whole request; isolate its items

Anything else that escapes a run (a bug, a full disk) fails the run with exit 2 and a
one-line message; SIGINT and SIGTERM end it as ``interrupted`` with exit 130 or 143.

Messages never contain the access token: the client never puts headers into them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes, documented in the README."""

    OK = 0
    REJECTED_ROWS = 1
    RUN_FAILED = 2
    SAFETY_BRAKE = 3
    LOCKED = 4
    USAGE = 64
    INPUT_FILE = 65
    NO_INPUT = 66
    """sysexits EX_NOINPUT: the input file is missing or cannot be read."""
    INTERRUPTED = 130
    """SIGINT (Ctrl-C): 128 + 2."""
    TERMINATED = 143
    """SIGTERM: 128 + 15."""


class InvsyncError(Exception):
    """Base of every error invsync raises on purpose."""

    exit_code: ExitCode = ExitCode.RUN_FAILED


class FatalError(InvsyncError):
    """The run must stop; retrying the same thing will not help."""

    maybe_applied: bool = True
    """Raised for a write: could the store have applied it? False only when no attempt of
    it can have been applied (every answer was a 401, 403 or 429, or nothing was sent)."""


class UsageError(FatalError):
    """Bad command-line flags or configuration."""

    exit_code = ExitCode.USAGE


class PlanForAnotherStore(UsageError):
    """A plan made for one store (API host, store hash, profile) was applied to another;
    raised before anything is read or sent."""

    def __init__(self, message: str, *, planned: dict[str, Any], here: dict[str, Any]) -> None:
        super().__init__(message)
        self.planned = planned
        self.here = here


class InputFileError(FatalError):
    """The input file cannot be used at all (unreadable, wrong format, missing columns)."""

    exit_code = ExitCode.INPUT_FILE

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.detail = message


class NoInputError(InputFileError):
    """The input file does not exist or cannot be read (permissions, a folder): exit 66,
    distinct from a file that was read but is not a stock file (65)."""

    exit_code = ExitCode.NO_INPUT


class SafetyBrakeError(FatalError):
    """A safety brake tripped; nothing was sent."""

    exit_code = ExitCode.SAFETY_BRAKE


class StalePlan(SafetyBrakeError):
    """The apply re-check found live levels other than the plan's ``before``: the store
    changed since the preview. Nothing was sent."""

    MESSAGE = "the store changed since the preview: preview again"

    def __init__(self, detail: str, *, items: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"{self.MESSAGE} ({detail}); nothing was sent")
        self.items = list(items or [])
        """The items found moved: KEY, ``before`` (the plan's) and ``live``."""


class LockedError(FatalError):
    """Another run for the same store holds the lock."""

    exit_code = ExitCode.LOCKED


class AuthError(FatalError):
    """The store refused the credentials (401) or the scope (403)."""


class StoreError(FatalError):
    """The store kept failing after bounded retries, or answered something unusable."""


class InternalError(FatalError):
    """invsync caught itself out: its own figures disagree (a bug, never a user error).

    Raised, never ``assert``-ed: a check that ``python -O`` removes guards nothing.
    """


class RetryableError(InvsyncError):
    """A transient failure: back off and try again."""

    def __init__(self, message: str, *, status: int | None = None, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.wait_s = wait_s


class RowRejected(InvsyncError):
    """One row or item was refused; it becomes a rejected row and the run goes on.

    The base class of every row-level refusal, never raised by name: what is raised is a
    subclass saying who refused (today :class:`Refused`, the store's 422 from
    ``StoreClient.put_absolute``). A caller of the store client catches ``RowRejected``
    to handle any row-level refusal (its ``reason`` is the rejected row's reason code) and
    lets fatal and retryable errors through. No row-level error escapes a run:
    :func:`invsync.sync_file` turns each into a rejected row of its ``RunReport`` (exit code
    :attr:`ExitCode.REJECTED_ROWS`, this class's ``exit_code``) — one bad row must not stop
    the good ones, so validation reports rows as data rather than raising per row.
    """

    exit_code = ExitCode.REJECTED_ROWS

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Refused(RowRejected):
    """A 422: the store refused the whole request and applied nothing of it.

    The caller isolates the refused items (the rest of the request is fine) and reports
    each as ``refused_by_store`` with the store's ``title``.
    """

    def __init__(self, title: str, errors: dict[str, Any], attempts: int) -> None:
        super().__init__("refused_by_store", title)
        self.title = title
        self.errors = errors
        self.attempts = attempts


# ---- a settings model's validation error as the exit-64 message that names the key ----

HIDDEN_VALUES = frozenset({"access_token", "password", "key_passphrase", "secret_access_key",
                           "session_token", "headers", "url", "urls", "report_base_url",
                           "hooks"})
"""Config keys whose values a message never repeats (tokens, passwords, webhook URLs)."""

_PHRASES = {
    "int_type": "a whole number", "int_parsing": "a whole number",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "finite_number": "a finite number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "text (in quotes)",
    "model_type": "a table", "model_attributes_type": "a table", "dict_type": "a table",
    "list_type": "a list", "dataclass_type": "a table",
}


def usage_error_from(exc: Any, model: Any, *, file: Any = None,
                     prefix: tuple[str, ...] = ()) -> UsageError:
    """The :class:`UsageError` (exit 64) for a pydantic ``ValidationError`` of ``model``:
    one line naming the file, the key as ``section.key`` and what is allowed (a field's
    ``description`` says that best), never a validation dump nor a secret's value."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        parent = loc[:-1]
        keys = sorted(str(e["loc"][-1]) for e in errors
                      if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) == parent)
        message = _unknown(model, prefix, parent, keys)
    else:
        name = _dotted(prefix + loc)
        allowed = _allowed(first, _field(model, loc))
        if first["type"] == "missing":
            message = f"{_dotted(prefix + loc[:-1]) or 'top level'}: give {loc[-1]}" + \
                (f" ({allowed})" if allowed else "")
        else:
            text = allowed if first["type"] == "value_error" else f"must be {allowed}"
            if first["type"] in ("model_type", "model_attributes_type", "dict_type"):
                text += f" ([{'.'.join(map(str, prefix + loc))}])"
            elif first["type"] == "list_type" and str(loc[-1]) == "hooks":
                text += f" ([[{'.'.join(map(str, prefix + loc))}]])"
            message = f"{name} {text}" if text.startswith("must ") else f"{name}: {text}"
            shown = not HIDDEN_VALUES.intersection(map(str, prefix + loc))
            if text.startswith("must be") and shown and \
                    not isinstance(first.get("input"), dict | list):
                message += f", not {first.get('input')!r}"
    where = f"config file {file}: " if file is not None else ""
    return UsageError((where + message)[:400])


def _dotted(loc: tuple[Any, ...]) -> str:
    """``loc`` as the config names it: a named table in brackets (``[sources.w]``,
    ``[profiles.night]``), then the TOML dotted key inside it (``quantity.buffer``), list
    items counted from 1 (``notify.hooks[1].url``)."""
    table: list[str] = []
    rest = ""
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        if part in ("profiles", "sources") and parts and isinstance(parts[0], str):
            table += [*filter(None, rest.split(".")), str(part), parts.pop(0)]
            rest = ""
        elif isinstance(part, int):
            rest += f"[{part + 1}]"
        else:
            rest += f".{part}" if rest else str(part)
    head = f"[{'.'.join(table)}]" if table else ""
    return f"{head} {rest}" if head and rest else head or rest


def _unknown(model: Any, prefix: tuple[str, ...], parent: tuple[Any, ...],
             keys: list[str]) -> str:
    info = _field(model, parent) if parent else None
    inner = _model_in(info.annotation) if info is not None else (None if parent else model)
    known = ""
    if inner is not None:
        import difflib

        near = [f"{k} -> {m[0]}" for k in keys
                if (m := difflib.get_close_matches(k, list(inner.model_fields), 1, 0.75))]
        known = f" (did you mean: {', '.join(near)}?)" if near else ""
    full = prefix + parent
    name = _dotted(full)
    where = name if name.startswith("[") else f"[{name}]"
    if not full or (len(full) == 2 and full[0] == "profiles"):
        return f"unknown key(s) in {where if full else 'top level'}: {', '.join(keys)}{known}"
    return f"{where}: unknown key(s) {', '.join(keys)}{known}"


def _allowed(error: dict[str, Any], info: Any) -> str:
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    if info is not None and info.description:
        return str(info.description)
    ctx = error.get("ctx") or {}
    bounds = {"greater_than_equal": ("ge", "{} or more"), "greater_than": ("gt", "above {}"),
              "less_than_equal": ("le", "at most {}"), "less_than": ("lt", "below {}")}
    if error["type"] in bounds:
        key, text = bounds[error["type"]]
        return text.format(ctx.get(key))
    if error["type"] == "literal_error":
        return f"one of {ctx.get('expected', '')}".replace("'", "")
    return _PHRASES.get(error["type"], str(error["msg"]).removeprefix("Input should be ").lower())


def _model_in(annotation: Any) -> Any:
    """The pydantic model ``annotation`` is (or holds in a union), else None."""
    import typing

    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None and typing.get_origin(annotation) is not dict \
                and typing.get_origin(annotation) is not list:
            return found
    return None


def _items_of(annotation: Any) -> Any:
    """What a dict or list ``annotation`` (or a union holding one) holds, else None."""
    import typing

    origin = typing.get_origin(annotation)
    if origin is dict:
        return typing.get_args(annotation)[1]
    if origin is list:
        return typing.get_args(annotation)[0]
    for arg in typing.get_args(annotation):
        found = _items_of(arg)
        if found is not None:
            return found
    return None


def _field(model: Any, loc: tuple[Any, ...]) -> Any:
    """The pydantic ``FieldInfo`` that ``loc`` points into (dict keys and list indexes
    skipped), else None."""
    annotation, info = model, None
    for part in loc:
        inner = _model_in(annotation)
        if inner is not None and isinstance(part, str) and part in inner.model_fields:
            info = inner.model_fields[part]
            annotation = info.annotation
        else:
            annotation = _items_of(annotation)
            if annotation is None:
                break
    return info
