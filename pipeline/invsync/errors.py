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
    kind: str = "internal"
    """What failed, as report.json's ``error_kind`` says it: ``usage``, ``file``, ``brake``,
    ``locked``, ``auth``, ``store`` or ``internal``."""


class FatalError(InvsyncError):
    """The run must stop; retrying the same thing will not help."""

    maybe_applied: bool = True
    """Raised for a write: could the store have applied it? False only when no attempt of
    it can have been applied (every answer was a 401, 403 or 429, or nothing was sent)."""


class UsageError(FatalError):
    """Bad command-line flags or configuration."""

    exit_code = ExitCode.USAGE
    kind = "usage"


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
    kind = "file"

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
    kind = "brake"


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
    kind = "locked"


class AuthError(FatalError):
    """The store refused the credentials (401) or the scope (403)."""

    kind = "auth"


class StoreError(FatalError):
    """The store kept failing after bounded retries, or answered something unusable."""

    kind = "store"


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

