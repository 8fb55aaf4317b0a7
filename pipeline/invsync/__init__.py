"""invsync: keep a BigCommerce store's stock levels equal to what a CSV or XLSX file says.

The library API (the command line is a thin layer over it)::

    import invsync

    settings = invsync.Settings.from_config("invsync.toml")
    report = invsync.sync_file("stock.csv", settings)
    print(report.status, report.counts.accepted, report.exit_code)

The public API: ``Settings`` (``Settings.from_config``), ``sync_file``, ``sync_file_async``,
``resume``, ``RunReport`` and the errors ``InvsyncError``, ``FatalError``, ``UsageError``,
``LockedError``, ``RetryableError`` and ``RowRejected`` (docs/library.md).

Names are loaded on first use, so ``import invsync`` (and ``invsync --help``) stays fast;
``dir(invsync)`` lists them and ``help(invsync)`` documents each (loading them then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from invsync.errors import (
        FatalError,
        InvsyncError,
        LockedError,
        RetryableError,
        RowRejected,
        UsageError,
    )
    from invsync.run.config import Settings
    from invsync.run.sync import resume, sync_file, sync_file_async
    from invsync.stages.report import RunReport

_EXPORTS = {
    "sync_file": "invsync.run.sync",
    "sync_file_async": "invsync.run.sync",
    "resume": "invsync.run.sync",
    "Settings": "invsync.run.config",
    "RunReport": "invsync.stages.report",
    "InvsyncError": "invsync.errors",
    "FatalError": "invsync.errors",
    "LockedError": "invsync.errors",
    "UsageError": "invsync.errors",
    "RetryableError": "invsync.errors",
    "RowRejected": "invsync.errors",
}

__all__ = [
    "FatalError",
    "InvsyncError",
    "LockedError",
    "RetryableError",
    "RowRejected",
    "RunReport",
    "Settings",
    "UsageError",
    "resume",
    "sync_file",
    "sync_file_async",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'invsync' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
