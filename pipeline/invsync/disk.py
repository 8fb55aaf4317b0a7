"""Files written the one safe way: atomically, fsynced, never through a symbolic link.

Every file invsync keeps (the snapshot, the journal, state.json, the lock) and every report
it writes goes through these functions: a reader sees the old file or the new one, never
half, and a symlink planted where a state file belongs is refused, never followed.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from invsync.errors import UsageError

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700; refuse a symlink at ``path``."""
    if path.is_symlink():
        raise UsageError(f"{path} is a symbolic link; invsync never follows links for its "
                         f"state folders: remove it")
    missing = [p for p in [path, *path.parents] if not p.exists() and not p.is_symlink()]
    for folder in reversed(missing):  # Path.mkdir(parents=True) makes parents 0777 & ~umask
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


def open_nofollow(path: Path, mode: str) -> IO[Any]:
    """Open a state file without following a symlink; a created file gets mode 0600.

    A symlink in its place is a :class:`UsageError` (exit 64), never followed.

    ``mode``: ``r``/``rb`` (read), ``w``/``wb`` (truncate or create), ``a+`` (read/append,
    create), ``r+`` (read/write, create without truncating).
    """
    flags = {"r": os.O_RDONLY, "rb": os.O_RDONLY,
             "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "wb": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND,
             "r+": os.O_RDWR | os.O_CREAT}[mode]
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC, 0o600)
    except OSError:
        if path.is_symlink():
            raise UsageError(f"{path} is a symbolic link; invsync never follows links for "
                             f"its state files: remove it") from None
        raise
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, encoding="utf-8")


def write_atomic(path: Path, data: bytes | Callable[[IO[bytes]], object], *,
                 prefix: str | None = None, suffix: str = "") -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half.

    The one way every file of invsync is replaced: write a temporary file beside it
    (``prefix``, default ``.<name>-``), fsync it, rename it over ``path``, fsync the folder
    (so the rename survives a power cut). ``data`` is the bytes, or a function that writes
    them to the open file (a polars frame, a workbook).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix or f".{path.name}-",
                               suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                _write_with(data, fh, path)
            else:
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_with(write: Callable[[IO[bytes]], object], fh: IO[bytes], path: Path) -> None:
    try:
        write(fh)
    except OSError:
        raise
    except Exception as exc:
        # A writer library's own error for a failed write (polars: "... underlying IO error:
        # No space left on device (os error 28)") is the OSError it wraps: a full disk is
        # then handled as one, wherever the file is written.
        code = re.search(r"\(os error (\d+)\)", str(exc))
        if code is not None:
            errno = int(code.group(1))
        elif _nearly_full(path.parent):  # polars' parquet footer: "Invalid thrift: transport"
            errno = 28  # ENOSPC
        else:
            raise
        raise OSError(errno, os.strerror(errno), str(path)) from None


def _nearly_full(folder: Path) -> bool:
    """Is the file system of ``folder`` out of space (under 1 MiB left)?"""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        _fsync(str(path))
