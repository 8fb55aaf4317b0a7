"""Uploads on the page and the API: stored, mapped, planned, applied — through the library.

An upload lives in ``<state-dir>/portal/uploads/<random id>/`` (the file as sent, under a
fixed name, and ``meta.json``). Its preview is a dry run of :func:`invsync.run.sync.sync_file`
(a run folder like any other, with ``plan.csv``); applying it pushes exactly that
``plan.csv`` (``sync --plan-file`` semantics), under the same store lock as the CLI, so a
preview that went stale is refused and nothing is sent. History is the run folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from invsync.clock import utc_now
from invsync.errors import ExitCode, InvsyncError, LockedError
from invsync.run.config import Settings
from invsync.stages.ingest import (
    ALIASES,
    IDENTIFIERS,
    StockTable,
    UnclearEncoding,
    map_columns,
    normalise_header,
    read_unmapped,
)
from invsync.stages.validate import QuantityRules
from invsync.surfaces.web.auth import _write_private, portal_dir

log = logging.getLogger("invsync.web")

STATUSES = ("new", "unmapped", "previewing", "planned", "applying", "cancelling", "succeeded",
            "partial", "failed", "stale", "cancelled", "not_applied", "discarded")
"""An upload's states (the API's ``status``); each change of state happens under one lock,
from the states listed in :data:`FROM`."""
PREVIEWABLE = ("new", "unmapped", "planned", "stale", "failed", "cancelled", "not_applied")
FROM: dict[str, tuple[str, ...]] = {
    "preview": PREVIEWABLE,
    "apply": ("planned", "not_applied"),
    "cancel": ("applying", "cancelling"),
    "discard": PREVIEWABLE,
    "map": ("new", "unmapped", "failed"),
}
BUSY = {"previewing": "a preview of this upload is being made right now: wait a moment",
        "applying": "this upload is being applied right now",
        "cancelling": "this upload is being cancelled right now",
        "succeeded": "this upload was already applied",
        "partial": "this upload was already applied",
        "discarded": "this upload was discarded: upload the file again"}
STORE_CHANGED = "the store changed since the preview: preview again"
NOT_APPLIED = ("the server stopped before any change was sent: nothing was changed in the "
               "store. Apply again, or preview again to see the store's levels now")
CANCELLED = "cancelled: the changes not yet sent were not sent"
FILES = ("report.html", "rejected.csv", "rejected.xlsx", "plan.csv")
SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".xls", ".xlsb", ".ods")
MAX_CHANGES = 1_000
_ID = re.compile(r"^[0-9a-f]{32}$")
LOCK_WAIT_S = 30 * 60
READING = "Text encoding and header row"
"""The title of the page's advanced choices (the CLI's --encoding and --header-row)."""
HEADER_HINT = (f"If the column names are not on one of the first rows, give the number of "
               f"their row under \"{READING}\".")
ENCODINGS = (
    ("utf-8", "UTF-8 (Unicode)"), ("utf-16", "UTF-16 (Excel's \"Unicode text\")"),
    ("cp1252", "Western European (Windows-1252)"),
    ("iso-8859-1", "Western European (ISO-8859-1)"),
    ("iso-8859-15", "Western European (ISO-8859-15)"),
    ("mac-roman", "Western European (Mac Roman)"),
    ("cp1250", "Central European (Windows-1250)"), ("iso-8859-2", "Central European (ISO-8859-2)"),
    ("cp1251", "Cyrillic (Windows-1251)"), ("koi8-r", "Cyrillic (KOI8-R)"),
    ("cp1253", "Greek (Windows-1253)"), ("iso-8859-7", "Greek (ISO-8859-7)"),
    ("cp1254", "Turkish (Windows-1254)"), ("cp1257", "Baltic (Windows-1257)"),
    ("shift_jis", "Japanese (Shift-JIS)"), ("euc-jp", "Japanese (EUC-JP)"),
    ("gb18030", "Chinese, simplified (GB18030)"), ("big5", "Chinese, traditional (Big5)"),
    ("euc-kr", "Korean (EUC-KR)"),
)
"""The text encodings the page offers (any other name Python knows works in the API)."""
INTERRUPTED = ("the server stopped while this upload was being applied: some or all of "
               "its changes may already be in the store. The next update of the store (an "
               "upload here or the nightly run) finishes what was cut off; preview again to "
               "see the store's levels now")


class UploadError(Exception):
    """A request about an upload that cannot be done; ``http`` is the HTTP status, ``extra``
    what the API's problem adds (``kind``: its type, ``field``, ``status``: the upload's)."""

    def __init__(self, http: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.http = http
        self.extra = extra


class ApplyCancelled(asyncio.CancelledError):
    """Raised from the apply run's observer after a cancel (once): the run's requests are
    cancelled and it ends as interrupted; what the store confirmed is in its journal (the
    next run of the store records it), the rest is not sent."""


NOT_KEPT = ("the preview could not be kept: the server's disk has no room for it. Nothing "
            "was sent; ask whoever runs invsync to make room, then preview again")
"""A preview whose files the state disk could not hold, in the merchant's words."""


# -- the two calls into the library (plan, apply) -------------------------------------
def store_permission_detail(error: str, *, as_of: bool) -> str:
    """A preview the store refused (its access token, or a scope the preview needs), in
    words for the merchant: who can fix it, and that the file is fine."""
    error = error.rstrip(". ")
    if "HTTP 401" in error:  # the token itself, not one of its scopes
        # Not the CLI's words: they name an environment variable the merchant never sees.
        return ("The store did not accept invsync's access token (HTTP 401). The file "
                "itself is fine: ask whoever set up invsync to check its access token and "
                "store hash, then preview again.")
    way_round = " (or upload the file without an as_of time)" if as_of and \
        "orders" in error else ""
    return (f"{error}. The file itself is fine: ask whoever set up invsync to give the "
            f"store's API account this permission{way_round}, then preview it again.")


def live_plans() -> bool:
    """Does the library plan against the store's live levels and re-check them on apply
    (its plans record when each level was read)? Before that, a live-level preview could
    never be applied (the push compared it with the snapshot), so previews use the
    configured baseline."""
    from invsync.tables import PLAN_COLUMNS

    return "read_at" in PLAN_COLUMNS


def library_preview(path: Path, settings: Settings, origin: dict[str, Any]) -> Any:
    """Plan ``path`` against the store's live levels (nothing sent): a dry run whose
    ``plan.csv`` records each item's live level (the page's "Now") and when it was read."""
    from invsync.run.sync import sync_file

    if live_plans():
        settings = replace(settings, baseline="live")
    return sync_file(path, settings, command="plan", origin=origin)


def library_apply(plan: Path, settings: Settings, on_event: Any,
                  origin: dict[str, Any]) -> Any:
    """Push exactly ``plan`` (``sync --plan-file``): the library re-reads the planned items
    and sends nothing when the store changed since the preview (see
    :func:`is_store_changed`), or when the plan was made for another store."""
    from invsync.run.sync import sync_file

    return sync_file(plan, settings, on_event=on_event, origin=origin)


def is_store_changed(report: Any) -> bool:
    """Did the apply run refuse because the store's levels moved since the plan?"""
    if getattr(report, "status", None) == "stale":
        return True
    return bool(report.exit_code == ExitCode.SAFETY_BRAKE and not report.brakes)


def store_binding(settings: Settings) -> dict[str, Any]:
    """Which store and profile a page (and each of its uploads) is for."""
    from invsync.state.snapshot import api_host

    # The library's own name for a store (invsync.run.plans.plan_binding): one store, one
    # name, whatever spelling of its URL the page was started with.
    return {"api_url": api_host(settings.store_host),
            "store_hash": (settings.store_hash or "").lower(), "profile": settings.profile}


def same_store(recorded: Any, binding: dict[str, Any]) -> bool:
    """Was an upload made for this store and profile? (Uploads from before stores were
    recorded belong to the page that kept them.)"""
    if not isinstance(recorded, dict):
        return True
    return all(recorded.get(k) == v for k, v in binding.items())


def _refusal(action: str, status: str) -> str:
    """Why ``action`` cannot be done to an upload in ``status``, in the merchant's words."""
    if status in BUSY:
        return BUSY[status]
    if action == "cancel":
        return "only an upload being applied can be cancelled"
    if action == "apply":
        return {"new": "this upload has not been previewed yet",
                "unmapped": "choose the file's columns first",
                "failed": "this upload could not be previewed: fix the file and upload it "
                          "again",
                "cancelled": "this upload was cancelled: preview again to apply the rest",
                }.get(status, "preview again first")
    return f"not possible now ({status.replace('_', ' ')})"


def _cut_off(meta: dict[str, Any]) -> dict[str, Any]:
    """The record of an apply the server stop cut off: "not applied" when nothing was
    sent yet (it only waited or checked), else "failed" (some changes may be in)."""
    if not meta.get("sending_started"):
        return {"status": "not_applied", "interrupted": False, "error": NOT_APPLIED}
    return {"status": "failed", "interrupted": True, "error": INTERRUPTED}


def _slowed(name: str, data: dict[str, Any]) -> str:
    """A retry or a rate-limit wait, as the progress view says it."""
    if name == "rate_limit_wait" or data.get("status") == 429:
        return "the store asked to slow down (its request limit): sending continues shortly"
    status = data.get("status")
    if isinstance(status, int) and status >= 500:
        return "the store is not answering properly: trying again"
    return "the store did not answer: trying again"


@dataclass
class Progress:
    """What an apply in flight is doing (in memory only)."""

    phase: str = "starting"
    holder: str | None = None
    batches_total: int = 0
    batches_done: int = 0
    items_total: int = 0
    items_done: int = 0
    sending_since: float | None = None
    slowed: str | None = None
    """Why sending is slow right now, in words (the store refusing, its rate limit)."""
    cancel: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False
    accepted: int = 0
    refused: int = 0
    transaction_ids: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        hidden = ("cancel", "sending_since", "stopped", "accepted", "refused",
                  "transaction_ids")
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k not in hidden}
        out["cancelling"] = self.cancel.is_set()
        out["seconds_left"] = self.seconds_left()
        return out

    def seconds_left(self) -> int | None:
        """A guess of the time left, from the pace so far (None before it is known)."""
        if self.sending_since is None or not self.items_done or not self.items_total:
            return None
        pace = (time.monotonic() - self.sending_since) / self.items_done
        return max(0, round(pace * (self.items_total - self.items_done)))


@dataclass
class Inspection:
    """A file's columns, a few sample values of each, and whether they are understood."""

    headers: list[str]
    samples: dict[str, list[str]]
    mapping: dict[str, str] | None
    problem: str | None = None
    sheets: list[str] = field(default_factory=list)
    guess: dict[str, str] = field(default_factory=dict)
    """Header -> canonical column, as far as known (to preselect the choices)."""


def check_reading(encoding: str | None, header_row: int | None) -> tuple[str | None, int | None]:
    """An upload's chosen text encoding and header row (``None``: automatic), checked."""
    from invsync.stages.ingest import text_encoding

    if encoding:
        try:
            text_encoding(encoding)
        except LookupError:
            raise UploadError(400, f"unknown text encoding {encoding!r}", field="encoding",
                              kind="bad-field") from None
    if header_row is not None and header_row < 1:
        raise UploadError(400, "the header row must be 1 or more", field="header_row",
                          kind="bad-field")
    return encoding or None, header_row


def encoding_label(name: str | None) -> str:
    """An encoding in the page's words (``Greek (ISO-8859-7)``), else its name."""
    import codecs

    if not name:
        return ""
    try:
        key = codecs.lookup(name).name
    except LookupError:
        return name
    return next((label for value, label in ENCODINGS if codecs.lookup(value).name == key), name)


def header_signature(headers: list[str]) -> str:
    """A key for a file layout: the normalised headers in order."""
    import hashlib

    return hashlib.sha256("\x1f".join(normalise_header(h) for h in headers).encode()
                          ).hexdigest()[:32]


def clean_filename(name: str) -> str:
    """The base name a browser sent, as printable text (never used as a path)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip()
    if len(base) > 200:  # shortened in the middle: the kind of file is in its ending
        stem, suffix = os.path.splitext(base)
        suffix = suffix if len(suffix) <= 10 else ""
        base = stem[:200 - len(suffix) - 1].rstrip() + "…" + suffix
    return base or "upload"


class Portal:
    """The uploads of one store, and the work done on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = portal_dir(settings.state_dir) / "uploads"
        self.maps_path = portal_dir(settings.state_dir) / "mappings.json"
        self._lock = threading.RLock()
        self.binding = store_binding(settings)
        self._locations: tuple[float, list[Any]] = (0.0, [])
        self.progress: dict[str, Progress] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._recover()

    # -- storage ------------------------------------------------------------------------
    def _recover(self) -> None:
        """An apply cut off by a server stop is reported, never left "applying" forever."""
        if not self.dir.exists():
            return
        for meta_path in self.dir.glob("*/meta.json"):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if meta.get("status") in ("applying", "cancelling"):
                _write_private(meta_path, {**meta, **_cut_off(meta)})
            elif meta.get("status") == "previewing":  # a preview sends nothing
                _write_private(meta_path, {**meta, "status": "failed",
                                           "error": "the server stopped during the preview: "
                                                    "preview again"})

    def path_of(self, upload_id: str) -> Path:
        if not _ID.match(upload_id or ""):
            raise UploadError(404, "no such upload")
        return self.dir / upload_id

    def mine(self, upload_id: str) -> dict[str, Any]:
        """The upload's record, when it belongs to this page's store and profile (409 for
        another store's: a plan is never applied to a store it was not made for)."""
        meta = self.get(upload_id)
        if not same_store(meta.get("store"), self.binding):
            raise UploadError(409, "this upload was made for another store or profile: "
                                   "upload the file again on that store's page",
                              kind="other-store", status=meta.get("status"))
        return meta

    def _move(self, upload_id: str, action: str, to: str, **changes: Any) -> dict[str, Any]:
        """Change the upload's state for ``action``, under the lock; 409 (in words) when
        its current state does not allow it."""
        with self._lock:
            meta = self.mine(upload_id)
            if meta["status"] not in FROM[action]:
                raise UploadError(409, _refusal(action, meta["status"]), kind="upload-state",
                                  status=meta["status"])
            meta.update(status=to, **changes)
            self._save(meta)
            return meta

    def get(self, upload_id: str) -> dict[str, Any]:
        """The upload's record; 404 when there is none."""
        path = self.path_of(upload_id) / "meta.json"
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise UploadError(404, "no such upload") from None

    def _save(self, meta: dict[str, Any]) -> None:
        with self._lock:
            _write_private(self.path_of(meta["upload_id"]) / "meta.json", meta)

    def _update(self, upload_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            meta = self.get(upload_id)
            meta.update(changes)
            self._save(meta)
            return meta

    def file_path(self, meta: dict[str, Any]) -> Path:
        return self.path_of(meta["upload_id"]) / str(meta["stored_name"])

    def create(self, *, user: str, filename: str, data: Any, location_id: int | None,
               sheet: str | None, duplicates: str | None, column_map: dict[str, str],
               encoding: str | None = None, header_row: int | None = None) -> dict[str, Any]:
        """Store an uploaded file (``data``: a binary file object) under a random id."""
        name = clean_filename(filename)
        suffix = Path(name).suffix.lower()
        if suffix not in SUFFIXES:
            raise UploadError(400, "only CSV or Excel files can be uploaded "
                                   f"({', '.join(SUFFIXES)})", field="file", kind="bad-field")
        if duplicates not in (None, "", "reject", "sum", "last"):
            raise UploadError(400, "duplicates must be reject, sum or last", field="duplicates",
                              kind="bad-field")
        if location_id is not None and location_id < 1:
            raise UploadError(422, "the location must be a positive whole number",
                              field="location_id", kind="invalid-field")
        for target in column_map.values():
            if target not in (*IDENTIFIERS, "location_id", "quantity", "ignore"):
                raise UploadError(400, f"cannot map a column onto {target!r}", field="map",
                                  kind="bad-field")
        encoding, header_row = check_reading(encoding, header_row)
        upload_id = secrets.token_hex(16)
        folder = self.path_of(upload_id)
        stored = f"upload{suffix}"
        try:
            folder.mkdir(parents=True, mode=0o700)
            fd = os.open(folder / stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := data.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:  # a full or read-only state disk: no half-kept upload
            shutil.rmtree(folder, ignore_errors=True)
            log.error("upload not kept in %s: %s", folder, exc)
            raise UploadError(500, f"the server could not keep the file ({exc.strerror}): "
                                   f"nothing was kept or sent; ask whoever runs invsync to "
                                   f"make room for uploads, then upload it again",
                              kind="internal") from None
        meta = {"upload_id": upload_id, "user": user, "filename": name, "stored_name": stored,
                "created": utc_now(), "store": self.binding,
                "location_id": location_id or self.settings.location_id,
                "sheet": sheet or None, "duplicates": duplicates or self.settings.duplicates,
                "column_map": column_map, "encoding": encoding, "header_row": header_row,
                "status": "new", "plan_run_id": None,
                "plan_dir": None, "run_id": None, "run_dir": None, "transaction_ids": [],
                "error": None, "brakes": []}
        self._save(meta)
        return meta

    # -- column mapping -----------------------------------------------------------------
    def remembered_maps(self) -> dict[str, dict[str, str]]:
        try:
            return dict(json.loads(self.maps_path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def remember_map(self, headers: list[str], column_map: dict[str, str]) -> None:
        with self._lock:
            maps = self.remembered_maps()
            maps[header_signature(headers)] = column_map
            _write_private(self.maps_path, maps)

    def reading(self, meta: dict[str, Any]) -> tuple[str | None, int | None]:
        """The text encoding and header row to read the upload with: its own choice, else
        the config's (as ``--encoding`` / ``--header-row`` override the config), else
        ``None`` (detected, found)."""
        return (meta.get("encoding") or self.settings.encoding,
                meta.get("header_row") or self.settings.header_row)

    def _read(self, meta: dict[str, Any]) -> StockTable:
        encoding, header_row = self.reading(meta)
        return read_unmapped(self.file_path(meta), sheet=meta.get("sheet"), encoding=encoding,
                             header_row=header_row)

    def inspect(self, meta: dict[str, Any]) -> Inspection:
        """Read the file (with every hostile-file check) and try to understand its columns."""
        try:
            table = self._read(meta)
        except InvsyncError as exc:
            raise UploadError(422, self.plain_error(meta, str(exc))) from None
        samples = _samples(table)
        sheets = _sheet_names(self.file_path(meta)) if table.format == "xlsx" else []
        column_map = self._column_map(meta, table.headers)
        explicit = {normalise_header(k): v for k, v in column_map.items()}
        guess = {h: explicit.get(normalise_header(h)) or ALIASES.get(normalise_header(h)) or ""
                 for h in table.headers}
        try:
            mapped = map_columns(table, column_map)
        except UnclearEncoding as exc:  # a reading problem (pick the encoding), not a column one
            raise UploadError(422, self.plain_error(meta, str(exc))) from None
        except InvsyncError as exc:
            return Inspection(table.headers, samples, None, self.plain_error(meta, str(exc)),
                              sheets, guess)
        return Inspection(table.headers, samples, mapped.mapping, None, sheets, guess)

    def _column_map(self, meta: dict[str, Any], headers: list[str]) -> dict[str, str]:
        """Config map, then the one remembered for this layout, then the upload's own."""
        remembered = self.remembered_maps().get(header_signature(headers)) or {}
        return {**self.settings.column_map, **remembered, **(meta.get("column_map") or {})}

    def set_map(self, upload_id: str, column_map: dict[str, str]) -> dict[str, Any]:
        """Use ``column_map`` for this upload and remember it for its layout."""
        meta = self.mine(upload_id)
        if meta["status"] not in FROM["map"]:
            raise UploadError(409, "this upload's columns are already settled",
                              kind="upload-state", status=meta["status"])
        try:
            table = self._read(meta)
            map_columns(table, column_map)
        except InvsyncError as exc:
            raise UploadError(422, self.plain_error(meta, str(exc))) from None
        self.remember_map(table.headers, column_map)
        return self._update(upload_id, column_map=column_map)

    # -- preview ------------------------------------------------------------------------
    def origin(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"source": "portal", "user": meta["user"], "filename": meta["filename"],
                "upload_id": meta["upload_id"]}

    def plan(self, upload_id: str) -> dict[str, Any]:
        """Work out the changes against the store's live levels (nothing sent); the upload
        becomes ``planned``. Refused (409) while the upload is being applied or previewed."""
        before = self.mine(upload_id)["status"]
        meta = self._move(upload_id, "preview", "previewing")
        try:
            return self._preview(meta)
        except UploadError as exc:
            if exc.extra.get("status") != "unmapped":
                self._finish_preview(upload_id, status="failed", error=str(exc))
            raise
        except OSError as exc:  # the state disk: the upload's record could not be kept
            log.error("preview of upload %s not kept: %s", upload_id, exc)
            with contextlib.suppress(OSError):
                self._finish_preview(upload_id, status="failed", error=NOT_KEPT)
            raise UploadError(500, f"{NOT_KEPT} ({exc.strerror})", kind="internal") from None
        except BaseException:
            self._finish_preview(upload_id, status=before if before != "new" else "failed",
                                 error="the preview could not be made: try again")
            raise

    def preview_failure(self, upload_id: str) -> str | None:
        """What stopped the upload's last preview (its report's ``error_kind``): ``store``
        (the store kept failing, down or answering nonsense: the file may be fine, and a
        later preview may work), ``auth`` (the store refused the access token or a scope
        the preview needs: the file is fine), ``internal`` (its files could not be kept),
        ``file``...; None when it did not fail."""
        meta = self.mine(upload_id)
        if meta.get("status") == "failed" and meta.get("error") == NOT_KEPT:
            return "internal"  # the server's disk, not the file nor the store
        report = _report(meta.get("plan_dir")) or {}
        kind = report.get("error_kind")
        return kind if isinstance(kind, str) else None

    def _finish_preview(self, upload_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            meta = self.get(upload_id)
            if meta["status"] == "previewing":
                meta.update(changes)
                self._save(meta)
            return meta

    def keep_as_of(self, upload_id: str, as_of: str | None) -> None:
        """Keep an upload's as-of time (already checked): its preview subtracts the orders
        placed since then; the apply pushes the plan as previewed."""
        if as_of:
            self._update(upload_id, as_of=as_of)

    def _preview(self, meta: dict[str, Any]) -> dict[str, Any]:
        upload_id = meta["upload_id"]
        inspection = self.inspect(meta)
        encoding, header_row = self.reading(meta)
        if inspection.mapping is None:
            problem = inspection.problem or "columns not recognised"
            if header_row is None:  # the header may be further down than invsync looks
                problem = f"{problem.rstrip('.')}. {HEADER_HINT}"
            self._finish_preview(upload_id, status="unmapped", error=problem,
                                 sheets=inspection.sheets)
            raise UploadError(422, problem, status="unmapped", headers=inspection.headers,
                              kind="unmapped")
        table_map = self._column_map(meta, inspection.headers)
        settings = replace(
            self.settings, dry_run=True, source="portal", plan_file=False, full=False,
            zero_missing=False, location_id=int(meta["location_id"]),
            sheet=meta.get("sheet"), duplicates=meta["duplicates"], column_map=table_map,
            encoding=encoding, header_row=header_row)
        if meta.get("as_of"):  # the upload's own as-of time: its preview subtracts what sold
            settings = replace(settings, as_of=meta["as_of"])
        report = library_preview(self.file_path(meta), settings, self.origin(meta))
        if report.status == "dry_run" and not (
                report.report_dir and (Path(report.report_dir) / "plan.csv").is_file()):
            # Its run folder could not be written (a full state disk): nothing to apply.
            log.error("preview of upload %s not kept: %s", upload_id, report.error)
            return self._finish_preview(
                upload_id, status="failed", plan_run_id=report.run_id,
                plan_dir=report.report_dir or None, interrupted=False, error=NOT_KEPT)
        if report.status != "dry_run":
            error = self.plain_error(meta, report.error or "the preview failed")
            if report.error_kind == "auth":
                error = store_permission_detail(error, as_of=bool(meta.get("as_of")))
            return self._finish_preview(
                upload_id, status="failed", plan_run_id=report.run_id,
                plan_dir=report.report_dir, interrupted=False, error=error)
        unknown = self._check_known(meta, Path(report.report_dir))
        # A new preview replaces the old one, and any refused attempt to apply it.
        done = self._finish_preview(
            upload_id, status="planned", plan_run_id=report.run_id,
            plan_dir=report.report_dir, error=None, brakes=report.brakes, interrupted=False,
            column_map=meta.get("column_map") or {}, run_id=None, run_dir=None,
            transaction_ids=[], sheets=inspection.sheets, sending_started=False,
            unknown=unknown,
            sheet_used=report.input.get("sheet"), encoding_used=report.input.get("encoding"),
            header_row_used=report.input.get("header_row"))
        self.write_rejected(upload_id)
        return done

    def write_rejected(self, upload_id: str) -> None:
        """The upload's own rejected.csv: every row that did not make it (see
        :mod:`.rejected`); none when the preview's covers them all."""
        from invsync.surfaces.web import rejected

        meta = self.get(upload_id)
        target = self.path_of(upload_id) / rejected.NAME
        run_dir = meta.get("run_dir")
        extra = rejected.extra_rows(meta.get("unknown") or [], _report(run_dir),
                                    Path(meta["plan_dir"]) / "plan.csv"
                                    if meta.get("plan_dir") else None)
        target.unlink(missing_ok=True)
        target.with_suffix(".xlsx").unlink(missing_ok=True)
        if not extra:
            return
        try:
            preview = Path(meta["plan_dir"]) / rejected.NAME if meta.get("plan_dir") else None
            rejected.write_merged(self._read(meta), preview, extra, target)
        except (InvsyncError, OSError) as exc:  # the preview's own file is still offered
            log.warning("could not write the upload's rejected rows: %s", exc)

    def _check_known(self, meta: dict[str, Any], plan_dir: Path) -> list[dict[str, Any]]:
        """The preview's items the store does not have; Apply will push the plan without
        them (``plan-known.csv``)."""
        from invsync.surfaces.web.known import KNOWN_PLAN, unknown_items, write_known_plan

        target = self.path_of(meta["upload_id"]) / KNOWN_PLAN
        target.unlink(missing_ok=True)
        try:
            unknown = unknown_items(plan_dir / "plan.csv", self.settings)
        except Exception as exc:  # the store could not be asked: Apply reports refusals
            log.warning("could not check the preview's items in the store: %s",
                        type(exc).__name__)
            return []
        if unknown:
            write_known_plan(plan_dir / "plan.csv", unknown, target)
        return unknown

    def choose_sheet(self, upload_id: str, sheet: str) -> None:
        """Preview another sheet of the workbook next time."""
        with self._lock:
            meta = self.mine(upload_id)
            if sheet not in (meta.get("sheets") or []):
                raise UploadError(400, "the workbook has no such sheet", field="sheet",
                                  kind="bad-field")
            self._move(upload_id, "preview", meta["status"], sheet=sheet)

    def choose_reading(self, upload_id: str, encoding: str | None,
                       header_row: int | None) -> None:
        """Read the file with this text encoding and header row (``None``: automatic) next
        time it is previewed; the column map is worked out again for what is read then."""
        encoding, header_row = check_reading(encoding, header_row)
        status = self.mine(upload_id)["status"]
        self._move(upload_id, "preview", status, encoding=encoding, header_row=header_row,
                   encoding_used=None, header_row_used=None)

    def failed(self, upload_id: str, message: str) -> None:
        """Record why an upload could not be previewed (unless it got further already)."""
        with self._lock:
            if self.get(upload_id)["status"] in ("new", "unmapped", "planned", "stale",
                                                 "previewing"):
                self._update(upload_id, status="failed", error=message)

    def plain_error(self, meta: dict[str, Any], message: str) -> str:
        """An error message naming the file as the person called it, not where it is kept."""
        stored = str(self.file_path(meta))
        message = message.replace(stored, meta["filename"]).replace("--map ", "the column map ")
        # The CLI's words for the choices the page offers as "Text encoding and header row".
        message = message.replace("name the encoding with --encoding",
                                  f"pick its text encoding under \"{READING}\"")
        message = message.replace("(--encoding)", f"(\"{READING}\")")
        # An upload's as-of time is its "as_of" field (the API's).
        message = message.replace("--as-of needs", "an as_of time needs")\
            .replace("--as-of ", "as_of ")
        return re.sub(r"--header-row (\d+)", r"header row \1", message)

    # -- apply --------------------------------------------------------------------------
    def discard(self, upload_id: str) -> dict[str, Any]:
        """Set an upload aside unsent (409 once it is being or was applied, also when an
        apply failed, was cut off or cancelled: some of its changes may be in the store)."""
        with self._lock:
            meta = self.mine(upload_id)
            if meta["status"] in ("failed", "cancelled") and meta.get("run_id"):
                raise UploadError(409, "some changes of this upload may already be in the "
                                       "store: preview it again to see what is left",
                                  kind="upload-state", status=meta["status"])
            return self._move(upload_id, "discard", "discarded")

    def apply(self, upload_id: str, *, override_brakes: bool = False) -> dict[str, Any]:
        """Start pushing exactly the previewed plan in the background; 409 unless ``planned``.

        When the preview tripped a safety brake, ``override_brakes`` must say it is meant.
        """
        with self._lock:
            meta = self.mine(upload_id)
            if meta["status"] == "stale":
                raise UploadError(409, STORE_CHANGED, status="stale", kind="store-changed")
            if meta["status"] in FROM["apply"] and meta.get("brakes") and not override_brakes:
                names = ", ".join(b.get("name", "?") for b in meta["brakes"])
                raise UploadError(409, f"the preview tripped a safety check ({names}): "
                                       f"confirm with override_brakes", status=meta["status"],
                                  kind="safety-check", field="override_brakes")
            unknown = meta.get("unknown") or []
            if unknown and meta["status"] in FROM["apply"] and \
                    _changes(meta.get("plan_dir"))[1] <= len(unknown):
                raise UploadError(409, "nothing to send: the store has none of this file's "
                                       "items; correct them in the file and upload it again",
                                  kind="upload-state", status=meta["status"])
            meta = self._move(upload_id, "apply", "applying", error=None, interrupted=False,
                              sending_started=False)
            self.progress[upload_id] = Progress()
            thread = threading.Thread(target=self._apply, args=(upload_id, override_brakes),
                                      name=f"invsync-apply-{upload_id[:8]}", daemon=True)
            self._threads[upload_id] = thread
            thread.start()
        return meta

    def cancel(self, upload_id: str) -> dict[str, Any]:
        """Stop an apply: what is not sent yet is not sent; what the store confirmed stays
        (and is listed). 409 unless the upload is being applied."""
        with self._lock:
            meta = self._move(upload_id, "cancel", "cancelling")
            progress = self.progress.get(upload_id)
            if progress is not None:
                progress.cancel.set()
            return meta

    def shutdown(self, grace_s: float, give_up: Callable[[], bool] = lambda: False) -> list[str]:
        """The server stops: let applies in progress finish for up to ``grace_s`` (or until
        ``give_up()``), then record those still running as cut off; their ids."""
        running = {uid: t for uid, t in list(self._threads.items()) if t.is_alive()}
        for uid in running:  # one only waiting for the store's lock stops at once, unsent
            progress = self.progress.get(uid)
            if progress is not None and progress.phase == "waiting":
                progress.cancel.set()
        if running:
            log.warning("stopping: waiting up to %d s for %d upload(s) being applied "
                        "(press Ctrl-C again to stop at once)", grace_s, len(running))
        deadline = time.monotonic() + grace_s
        while (any(t.is_alive() for t in running.values()) and time.monotonic() < deadline
               and not give_up()):
            time.sleep(0.2)
        left = []
        for uid, thread in running.items():
            with self._lock:
                meta = self.get(uid)
                if thread.is_alive() and meta["status"] in ("applying", "cancelling"):
                    self._update(uid, **_cut_off(meta))
                    left.append(uid)
        for uid in left:
            log.warning("upload %s was cut off while being applied", uid)
        return left

    def wait(self, upload_id: str, timeout: float | None = None) -> None:
        """Wait for a background apply (tests, shutdown)."""
        thread = self._threads.get(upload_id)
        if thread is not None:
            thread.join(timeout)

    def _apply(self, upload_id: str, allow_zeroing: bool) -> None:
        try:
            self._apply_inner(upload_id, allow_zeroing)
        except Exception as exc:  # never a traceback on the page: the record says what
            log.exception("apply of upload %s failed", upload_id)
            self._update(upload_id, status="failed", error=f"the upload could not be applied: "
                                                           f"{type(exc).__name__}")

    def _observer(self, upload_id: str) -> Callable[[str, dict[str, Any]], None]:
        """The apply run's events as progress; raises :class:`ApplyCancelled` at the first
        event after a cancel (before a batch is sent, or between batches)."""
        progress = self.progress[upload_id]

        def on_event(name: str, data: dict[str, Any]) -> None:
            if name == "submit_started":
                self._update(upload_id, sending_started=True)
                progress.phase, progress.sending_since = "sending", time.monotonic()
                progress.batches_total = int(data.get("batches") or 0)
                progress.items_total = int(data.get("items") or 0)
            elif name == "batch":
                progress.batches_done += 1
                progress.items_done += int(data.get("items") or 0)
                progress.accepted += int(data.get("accepted") or 0)
                progress.refused += int(data.get("refused") or 0)
                progress.transaction_ids += list(data.get("transaction_ids") or [])
                progress.slowed = None
            elif name in ("retry", "rate_limit_wait"):
                progress.slowed = _slowed(name, data)
            elif name == "run_started":
                progress.phase, progress.holder = "checking", None
            if (progress.cancel.is_set() and not progress.stopped
                    and name in ("run_started", "submit_started", "batch")):
                progress.stopped = True  # once: the run's own clean-up must go on
                raise ApplyCancelled()

        return on_event

    def _apply_inner(self, upload_id: str, allow_zeroing: bool) -> None:
        meta = self.get(upload_id)
        progress = self.progress[upload_id]
        settings = replace(
            self.settings, dry_run=False, plan_file=True, source="portal", full=False,
            zero_missing=False, location_id=int(meta["location_id"]),
            sheet=None, column_map={}, duplicates="reject", encoding=None, header_row=None,
            # plan.csv holds final levels: quantity rules were applied when it was made
            rules=QuantityRules(),
            brakes=replace(self.settings.brakes, allow_zeroing=allow_zeroing), wait_lock_s=0)
        known = self.path_of(upload_id) / "plan-known.csv"
        plan = known if meta.get("unknown") and known.is_file() else \
            Path(meta["plan_dir"]) / "plan.csv"
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:  # wait for the store's lock here, so that a cancel stops the wait
            try:
                report = library_apply(plan, settings, self._observer(upload_id),
                                       self.origin(meta))
                break
            except LockedError:
                progress.phase, progress.holder = "waiting", self.lock_holder()
                if progress.cancel.wait(1.0) or time.monotonic() > deadline:
                    cancelled = progress.cancel.is_set()
                    self._update(upload_id, status="cancelled" if cancelled else "not_applied",
                                 error=None if cancelled else
                                 f"the store stayed busy ({progress.holder or 'another run'})"
                                 f": nothing was sent; try again later")
                    return
        self._record(upload_id, meta, report, progress.cancel.is_set())
        if meta.get("source_record"):  # fetched from a source: its run, as for `sync NAME`
            from invsync.surfaces.web.routes_sources import remember_applied

            remember_applied(self.settings, self.get(upload_id), report.run_id)
        self.write_rejected(upload_id)
        self._notify(report, settings)

    @staticmethod
    def _notify(report: Any, settings: Settings) -> None:
        """The configured notifications, as for a CLI run (problems go to the log)."""
        if not settings.notify:
            return
        from invsync.run.notify import notify_run

        try:
            for problem in notify_run(report, settings):
                log.warning("%s", problem)
        except Exception as exc:  # a notification never changes the upload's outcome
            log.warning("notification failed: %s", type(exc).__name__)

    def _record(self, upload_id: str, meta: dict[str, Any], report: Any,
                cancelled: bool) -> None:
        """The apply run's outcome as the upload's state."""
        common = {"run_id": report.run_id, "run_dir": report.report_dir,
                  "transaction_ids": report.transaction_ids}
        if cancelled and report.status in ("interrupted", "failed"):
            # The interrupted run's report does not count what it confirmed: the batches
            # that finished before the cancel do (the journal holds the same).
            p = self.progress[upload_id]
            common["transaction_ids"] = p.transaction_ids
            self._update(upload_id, status="cancelled", error=None, **common,
                         cancel_counts={"accepted": p.accepted, "refused": p.refused,
                                        "not_sent": max(p.items_total - p.items_done, 0),
                                        "submitted": p.items_done})
        elif is_store_changed(report):
            self._update(upload_id, status="stale", error=STORE_CHANGED, **common)
        elif report.status in ("succeeded", "partial"):
            # Rows the preview rejected, and items the store does not have, were left out:
            # for the file as a whole, partial.
            invalid = ((_report(meta.get("plan_dir")) or {}).get("counts") or {}).get("invalid")
            status = "partial" if invalid or meta.get("unknown") else report.status
            self._update(upload_id, status=status, error=None, **common)
        else:
            error = report.error or "the run failed"
            if report.error_kind == "auth":  # the store refused the token or a scope
                error = store_permission_detail(error, as_of=False)
            self._update(upload_id, status="failed", error=error, brakes=report.brakes,
                         **common)

    @staticmethod
    def page_counts(meta: dict[str, Any]) -> dict[str, int]:
        """History's counts for a page upload's latest apply, as its page shows them: the
        file's rows, with the items the store does not have among the rejected ones, and
        for a cancelled apply what the store confirmed before the cancel (the interrupted
        run's own report counts none of it). Empty when the run's own counts say it."""
        plan = (_report(meta.get("plan_dir")) or {}).get("counts") or {}
        unknown = len(meta.get("unknown") or [])
        out: dict[str, int] = {}
        if unknown and plan:
            out = {"rows": plan.get("rows", 0), "rejected": plan.get("rejected", 0) + unknown,
                   "invalid": plan.get("invalid", 0) + unknown}
        if meta.get("status") == "cancelled" and meta.get("cancel_counts"):
            out = {"rows": plan.get("rows", 0),
                   "changed": max(plan.get("changed", 0) - unknown, 0),
                   "rejected": plan.get("rejected", 0) + unknown,
                   "accepted": meta["cancel_counts"].get("accepted", 0)}
        return out

    def lock_holder(self) -> str | None:
        """Who holds this store's lock (a run in progress), or None when it is free."""
        from invsync.state.journal import StoreLock, host_lock
        from invsync.state.snapshot import SnapshotStore

        s = self.settings
        store = s.store_hash or "offline"
        locks = (StoreLock(SnapshotStore(s.state_dir, store, s.store_host, s.profile).store_dir,
                           store), host_lock(s.store_host, store))
        for lock in locks:
            holder = lock.holder()
            if holder is not None:
                return _who(holder)
        return None

    # -- what pages and the API show ----------------------------------------------------
    def describe(self, upload_id: str) -> dict[str, Any]:
        """The API shape of an upload: status, counts, rejected rows, changes, brakes."""
        from invsync.surfaces.web.messages import reason_text, web_brake

        meta = self.mine(upload_id)
        plan_report = _report(meta.get("plan_dir"))
        run_report = _report(meta.get("run_dir"))
        shown = run_report if run_report and run_report.get("counts") else plan_report
        rejected = []
        for rec in (plan_report or {}).get("rejected") or []:
            what, todo = reason_text(rec.get("reason"))
            rejected.append({"row": rec.get("row"), "reason": rec.get("reason"),
                             "message": rec.get("message"), "column": rec.get("column"),
                             "value": rec.get("value"), "explanation": what, "action": todo})
        changes, total = _changes(meta.get("plan_dir"))
        unknown = meta.get("unknown") or []
        if unknown:  # not changes: rows with problems (the store does not have them)
            from invsync.surfaces.web.known import as_rejected

            gone = {(u["identifier"], str(u["item"])) for u in unknown}
            changes = [c for c in changes if (c.get("identifier"), str(c["item"])) not in gone]
            total -= len(unknown)
            rejected = sorted(rejected + as_rejected(unknown),
                              key=lambda r: (r.get("row") is None, r.get("row") or 0))
        refused = []
        if run_report:
            rows = {(c["location_id"], c["item"]): c.get("row") for c in changes}
            for rec in run_report.get("rejected") or []:
                if rec.get("reason") != "refused_by_store":
                    continue
                what, todo = reason_text("refused_by_store")
                refused.append({"item": rec.get("value"), "message": rec.get("message"),
                                "row": next((r for (_, item), r in rows.items()
                                             if item == rec.get("value")), None),
                                "explanation": what, "action": todo})
        out = {
            "upload_id": meta["upload_id"], "status": meta["status"],
            "filename": meta["filename"], "uploaded_by": meta["user"],
            "created": meta["created"], "location_id": meta["location_id"],
            "sheet": meta.get("sheet") or meta.get("sheet_used"),
            "sheets": meta.get("sheets") or [], "duplicates": meta.get("duplicates"),
            "encoding": meta.get("encoding"), "header_row": meta.get("header_row"),
            "encoding_used": meta.get("encoding_used"),
            "header_row_used": meta.get("header_row_used"),
            "counts": _counts_without(((shown or {}).get("counts") or {}),
                                      len(unknown) if shown is plan_report else 0),
            # Bounded as the changes are (the page polls this while applying): every
            # rejected row is in rejected.csv.
            "rejected": rejected[:MAX_CHANGES], "rejected_total": len(rejected),
            "refused": refused,
            "changes": changes[:MAX_CHANGES], "changes_total": total,
            "brakes": [web_brake(b) for b in meta.get("brakes") or []],
            "plan_run_id": meta.get("plan_run_id"),
            "error": meta.get("error"),
            "as_of": meta.get("as_of"),
            "sold_since": _sold_since(plan_report, meta.get("plan_dir")),
        }
        if meta.get("interrupted") and meta["status"] == "failed" and not run_report:
            # Cut off by a server stop: whether the store applied them is not known.
            counts = dict(out["counts"])
            counts["unconfirmed"] = (counts.get("unconfirmed") or 0) + (counts.get("not_sent") or 0)
            counts["not_sent"] = 0
            out.update(counts=counts, interrupted=True)
        if meta["status"] == "cancelled" and meta.get("cancel_counts"):
            out["counts"] = {**out["counts"], **meta["cancel_counts"]}
        out["files"] = [n for n in FILES if self._find_file(meta, n) is not None]
        if meta.get("source"):  # fetched from a configured source ("fetch now")
            out["source"] = meta["source"]

        if meta.get("run_id"):
            out["run_id"] = meta["run_id"]
            out["transaction_ids"] = meta.get("transaction_ids") or []
        if meta["status"] in ("applying", "cancelling") and upload_id in self.progress:
            out["progress"] = self.progress[upload_id].to_dict()
        return out

    def file(self, upload_id: str, name: str) -> Path:
        """One of the upload's run files: the apply run's report, else the preview's."""
        meta = self.mine(upload_id)
        if name == "original":
            return self.file_path(meta)
        if name not in FILES:
            raise UploadError(404, "no such file")
        found = self._find_file(meta, name)
        if found is None:
            raise UploadError(404, f"this upload has no {name}")
        return found

    def _find_file(self, meta: dict[str, Any], name: str) -> Path | None:
        own = self.path_of(meta["upload_id"]) / name
        if name in ("rejected.csv", "rejected.xlsx") and own.is_file():
            return own  # every row that did not make it
        folders = [meta.get("plan_dir")]
        if name in ("report.html", "plan.csv") and meta.get("run_dir"):
            folders.insert(0, meta["run_dir"])  # after apply: each item's outcome
        for folder in folders:
            if folder and (Path(folder) / name).is_file():
                return Path(folder) / name
        return None

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """This store's uploads, newest first (for the upload page's own list)."""
        out = []
        for meta_path in self.dir.glob("*/meta.json") if self.dir.exists() else []:
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if same_store(meta.get("store"), self.binding):
                out.append(meta)
        return sorted(out, key=lambda m: (m.get("created") or "", m["upload_id"]),
                      reverse=True)[:limit]

    def page_of(self, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of this store's uploads (newest first) for the API, and their number."""
        every = self.recent(limit=10**9)
        return [_summary(m) for m in every[offset:offset + limit]], len(every)

    # -- the store's locations --------------------------------------------------------
    def locations(self) -> list[Any]:
        """The store's enabled locations (read at most once a minute; [] when unreadable)."""
        from invsync.run.store_access import StoreSession

        read_at, cached = self._locations
        if time.monotonic() - read_at < 60 and cached:
            return cached
        try:
            with StoreSession(self.settings) as store:
                found = [loc for loc in store.locations() if loc.enabled]
        except Exception as exc:  # the picker falls back to a number field
            log.warning("could not read the store's locations: %s", type(exc).__name__)
            return cached
        self._locations = (time.monotonic(), found)
        return found

    def resolve_location(self, given: str) -> int | None:
        """A location as the merchant gives it (its id, its code or the store's label for
        it, any case) -> its id; ``None`` for empty (the default). 422 when unknown."""
        given = (given or "").strip()
        if not given:
            return None
        found = self.locations()
        # An id the store does not have (or has disabled) is refused now, not as every row
        # of the preview; when the locations cannot be read the preview tells.
        if given.isascii() and given.isdigit() and len(given) <= 18 and (
                not found or any(int(loc.id) == int(given) for loc in found)):
            return int(given)
        key = given.casefold()
        for loc in found:
            if key in (str(loc.code).casefold(), str(loc.label).casefold()):
                return int(loc.id)
        names = ", ".join(f"{loc.label or loc.code}" for loc in found) or "none could be read"
        raise UploadError(422, f"the store has no location called {given[:60]!r} "
                               f"(its locations: {names})", field="location_id",
                          kind="invalid-field")


def _summary(meta: dict[str, Any]) -> dict[str, Any]:
    """An upload as the API's list shows it."""
    return {"upload_id": meta["upload_id"], "status": meta["status"],
            "filename": meta["filename"], "uploaded_by": meta["user"],
            "created": meta["created"], "location_id": meta["location_id"],
            "url": f"/api/uploads/{meta['upload_id']}"}


def _counts_without(counts: dict[str, Any], unknown: int) -> dict[str, Any]:
    """A preview's counts with ``unknown`` items the store does not have moved from the
    valid, changed and to-send rows to the rejected ones (as the page lists them)."""
    if not unknown or not counts:
        return counts
    out = dict(counts)
    for key, sign in (("valid", -1), ("changed", -1), ("not_sent", -1), ("invalid", 1),
                      ("rejected", 1)):
        if isinstance(out.get(key), int):
            out[key] = max(out[key] + sign * unknown, 0)
    return out


def _report(folder: str | None) -> dict[str, Any] | None:
    if not folder:
        return None
    try:
        return dict(json.loads((Path(folder) / "report.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _sold_since(report: dict[str, Any] | None, folder: str | None) -> list[str]:
    """The preview's "file 10 − 2 sold since 02:00 = 8" lines (none without an as-of)."""
    sold = (report or {}).get("sold_since")
    if not sold or not folder:
        return []
    try:
        st = (Path(folder) / "plan.csv").stat()
    except OSError:
        return []
    # The page polls while applying: read the plan once (it never changes once written).
    return list(_sold_lines(folder, st.st_mtime_ns, json.dumps(sold, sort_keys=True),
                            str((report or {}).get("started_at") or "")))


@lru_cache(maxsize=16)
def _sold_lines(folder: str, mtime_ns: int, sold: str, started_at: str) -> tuple[str, ...]:
    import polars as pl

    from invsync.html.sold_since import sold_lines

    try:
        plan = pl.read_csv(Path(folder) / "plan.csv", infer_schema=False)
    except (OSError, pl.exceptions.PolarsError):
        return ()
    return tuple(sold_lines(json.loads(sold), plan, started_at or None))


def _changes(folder: str | None) -> tuple[list[dict[str, Any]], int]:
    """The plan's changes, biggest drops first (drops to 0 before other drops of the same size)."""
    if not folder:
        return [], 0
    try:
        st = (Path(folder) / "plan.csv").stat()
    except OSError:
        return [], 0
    # A plan.csv never changes once written; the page polls while applying, so sort it once.
    rows, total = _sorted_changes(folder, st.st_mtime_ns, st.st_size)
    return [dict(r) for r in rows], total


@lru_cache(maxsize=16)
def _sorted_changes(folder: str, mtime_ns: int, size: int) -> tuple[list[dict[str, Any]], int]:
    import polars as pl

    from invsync.stages.ingest import unescape_formulas

    plan = pl.read_csv(Path(folder) / "plan.csv", infer_schema=False)
    if plan.height == 0:
        return [], 0
    # plan.csv's level columns are "before"/"after" (with "read_at"), formerly "old"/"new".
    renames = {a: b for a, b in (("before", "old"), ("after", "new")) if a in plan.columns}
    plan = plan.drop([b for b in renames.values() if b in plan.columns]).rename(renames)
    if "read_at" not in plan.columns:
        plan = plan.with_columns(read_at=pl.lit(None, pl.String))
    plan = plan.with_columns(
        unescape_formulas(pl.col("item")).alias("item"),
        *(pl.col(c).cast(pl.Int64, strict=False) for c in ("location_id", "old", "new", "row")),
    ).with_columns(delta=pl.col("new") - pl.col("old"))  # unknown before: unknown difference
    # Only the first MAX_CHANGES are shown: a top-k, not a sort of a million-row plan.
    rows = plan.lazy().sort(["delta", "new", "location_id", "item"], nulls_last=True).head(
        MAX_CHANGES).select("location_id", "identifier", "item", "old", "new", "delta",
                            "row", "read_at").collect().to_dicts()
    return rows, plan.height


def _samples(table: StockTable, n: int = 4) -> dict[str, list[str]]:
    import polars as pl

    out = {}
    for header in table.headers:
        values = table.frame.select(pl.col(header).drop_nulls().head(n)).to_series().to_list()
        out[header] = [str(v)[:60] for v in values]
    return out


def _sheet_names(path: Path) -> list[str]:
    try:
        import fastexcel

        return list(fastexcel.read_excel(str(path)).sheet_names)
    except Exception:  # the file was already read once; names are a convenience
        return []


def _who(holder: dict[str, Any] | None) -> str:
    """A lock holder in words: the run and when it started."""
    if holder and holder.get("run_id"):
        return f"run {holder['run_id']}, started {holder.get('started', '?')}"
    return "another run"
