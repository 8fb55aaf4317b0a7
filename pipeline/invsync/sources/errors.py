"""What can go wrong fetching a source, as exit codes (see :class:`invsync.errors.ExitCode`)."""

from __future__ import annotations

from invsync.errors import ExitCode, FatalError, SafetyBrakeError, UsageError


class SourceError(FatalError):
    """The source could not be reached or read (refused login, wrong host key, timeout): exit 2."""

    exit_code = ExitCode.RUN_FAILED


class CopyNotKeptError(SourceError):
    """The file was read, but its copy in the state folder could not be written (a full or
    read-only disk): the source is fine. Exit 2."""


class NotReadyError(FatalError):
    """The file is not ready to be read (still being written, no marker file yet): exit 3."""

    exit_code = ExitCode.SAFETY_BRAKE


class StaleFileError(SafetyBrakeError):
    """The newest matching file is older than ``max_age`` (or no file matches): exit 3.

    The notification ``stale_file`` is sent for it.
    """


class MissingExtraError(UsageError):
    """A URL scheme whose backend is not installed: the message names the extra."""


__all__ = ["MissingExtraError", "NotReadyError", "SourceError", "StaleFileError"]
