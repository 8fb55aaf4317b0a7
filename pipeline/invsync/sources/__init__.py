"""Fetch the stock file where it lives: a local path or glob, SFTP, FTP(S), S3 (GCS, Azure
through the same layer) or HTTP(S).

The run layer (:mod:`invsync.run.sourced`) uses this package; it never imports the run
layer or the surfaces. See docs/sources.md.

Its names are imported on first use: every run reads the settings (which check
``[sources.NAME]`` tables with :mod:`invsync.sources.spec`), but only a run that fetches
needs the network modules behind :func:`fetch`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as mypy and readers see them (``as`` re-exports them)
    from invsync.sources.errors import CopyNotKeptError as CopyNotKeptError
    from invsync.sources.errors import MissingExtraError as MissingExtraError
    from invsync.sources.errors import NotReadyError as NotReadyError
    from invsync.sources.errors import SourceError as SourceError
    from invsync.sources.errors import StaleFileError as StaleFileError
    from invsync.sources.fetching import Fetched as Fetched
    from invsync.sources.fetching import SourceState as SourceState
    from invsync.sources.fetching import after as after
    from invsync.sources.fetching import fetch as fetch
    from invsync.sources.fetching import keep_in_run_folder as keep_in_run_folder
    from invsync.sources.remote import RemoteFile as RemoteFile
    from invsync.sources.remote import remote_for as remote_for
    from invsync.sources.spec import SourceSpec as SourceSpec
    from invsync.sources.spec import check_sources as check_sources
    from invsync.sources.spec import is_source as is_source
    from invsync.sources.spec import resolve as resolve

_HOME = {
    "CopyNotKeptError": "errors", "MissingExtraError": "errors", "NotReadyError": "errors",
    "SourceError": "errors", "StaleFileError": "errors",
    "Fetched": "fetching", "SourceState": "fetching", "after": "fetching",
    "fetch": "fetching", "keep_in_run_folder": "fetching",
    "RemoteFile": "remote", "remote_for": "remote",
    "SourceSpec": "spec", "check_sources": "spec", "is_source": "spec", "resolve": "spec",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
