"""Fetch the stock file where it lives: a local path or glob, SFTP, FTP(S), S3 (GCS, Azure
through the same layer) or HTTP(S).

The run layer (:mod:`invsync.run.sourced`) uses this package; it never imports the run
layer or the surfaces. See docs/sources.md.
"""

from invsync.sources.errors import MissingExtraError, NotReadyError, SourceError, StaleFileError
from invsync.sources.fetch import Fetched, SourceState, after, fetch, keep_in_run_folder
from invsync.sources.remote import RemoteFile, remote_for
from invsync.sources.spec import SourceSpec, check_sources, is_source, resolve

__all__ = [
    "Fetched", "MissingExtraError", "NotReadyError", "RemoteFile", "SourceError", "SourceSpec",
    "SourceState", "StaleFileError", "after", "check_sources", "fetch", "is_source",
    "keep_in_run_folder", "remote_for", "resolve",
]
