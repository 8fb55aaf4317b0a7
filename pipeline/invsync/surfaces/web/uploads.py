"""Uploads on the page and the API: stored, mapped, planned, applied — through the library.

An upload lives in ``<state-dir>/portal/uploads/<random id>/`` (the file as sent, under a
fixed name, and ``meta.json``). Its preview is a dry run of :func:`invsync.run.sync.sync_file`
(a run folder like any other, with ``plan.csv``); applying it pushes exactly that
``plan.csv`` (``sync --plan-file`` semantics), under the same store lock as the CLI, so a
preview that went stale is refused and nothing is sent. History is the run folders.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
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
    map_columns,
    normalise_header,
    read_unmapped,
)
from invsync.stages.validate import QuantityRules
from invsync.surfaces.web.auth import _write_private, portal_dir

log = logging.getLogger("invsync.web")

STATUSES = ("planned", "applying", "succeeded", "partial", "failed", "stale", "discarded")
FILES = ("report.html", "rejected.csv", "rejected.xlsx", "plan.csv")
SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".xls")
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
               "its changes may already be in the store. The next upload or sync (or "
               "invsync resume) finishes the interrupted run; preview again to see the "
               "store's levels now")


class UploadError(Exception):
    """A request about an upload that cannot be done; ``http`` is the HTTP status."""

    def __init__(self, http: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.http = http
        self.extra = extra


@dataclass
class Progress:
    """What an apply in flight is doing (in memory only)."""

    phase: str = "starting"
    holder: str | None = None
    batches_total: int = 0
    batches_done: int = 0
    items_total: int = 0
    items_done: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
            raise UploadError(400, f"unknown text encoding {encoding!r}") from None
    if header_row is not None and header_row < 1:
        raise UploadError(400, "the header row must be 1 or more")
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
    return base[:200] or "upload"


class Portal:
    """The uploads of one store, and the work done on them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = portal_dir(settings.state_dir) / "uploads"
        self.maps_path = portal_dir(settings.state_dir) / "mappings.json"
        self._lock = threading.RLock()
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
            if meta.get("status") == "applying":
                # Batches may have reached the store before the stop: never say "nothing".
                meta.update(status="failed", interrupted=True, error=INTERRUPTED)
                _write_private(meta_path, meta)

    def path_of(self, upload_id: str) -> Path:
        if not _ID.match(upload_id or ""):
            raise UploadError(404, "no such upload")
        return self.dir / upload_id

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
        return self.path_of(meta["upload_id"]) / meta["stored_name"]

    def create(self, *, user: str, filename: str, data: Any, location_id: int | None,
               sheet: str | None, duplicates: str | None, column_map: dict[str, str],
               encoding: str | None = None, header_row: int | None = None) -> dict[str, Any]:
        """Store an uploaded file (``data``: a binary file object) under a random id."""
        name = clean_filename(filename)
        suffix = Path(name).suffix.lower()
        if suffix not in SUFFIXES:
            raise UploadError(400, "only CSV or Excel files can be uploaded "
                                   f"({', '.join(SUFFIXES)})")
        if duplicates not in (None, "", "reject", "sum", "last"):
            raise UploadError(400, "duplicates must be reject, sum or last")
        if location_id is not None and location_id < 1:
            raise UploadError(400, "the location must be a positive whole number")
        for target in column_map.values():
            if target not in (*IDENTIFIERS, "location_id", "quantity", "ignore"):
                raise UploadError(400, f"cannot map a column onto {target!r}")
        encoding, header_row = check_reading(encoding, header_row)
        upload_id = secrets.token_hex(16)
        folder = self.path_of(upload_id)
        folder.mkdir(parents=True, mode=0o700)
        stored = f"upload{suffix}"
        fd = os.open(folder / stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := data.read(1 << 20):
                out.write(chunk)
        meta = {"upload_id": upload_id, "user": user, "filename": name, "stored_name": stored,
                "created": utc_now(),
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
        meta = self.get(upload_id)
        if meta["status"] not in ("new", "unmapped"):
            raise UploadError(409, "this upload's columns are already settled")
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
        """Work out the changes (a dry run, nothing sent); the upload becomes ``planned``."""
        from invsync.run.sync import sync_file

        meta = self.get(upload_id)
        if meta["status"] in ("applying", "succeeded", "partial", "discarded"):
            raise UploadError(409, f"this upload is {meta['status']}", status=meta["status"])
        try:
            inspection = self.inspect(meta)
        except UploadError as exc:
            # An unreadable file: its page and the API say why, not a blank "new" upload.
            self.failed(upload_id, str(exc))
            raise
        encoding, header_row = self.reading(meta)
        if inspection.mapping is None:
            problem = inspection.problem or "columns not recognised"
            if header_row is None:  # the header may be further down than invsync looks
                problem = f"{problem.rstrip('.')}. {HEADER_HINT}"
            meta = self._update(upload_id, status="unmapped", error=problem,
                                sheets=inspection.sheets)
            raise UploadError(422, problem, status="unmapped", headers=inspection.headers)
        table_map = self._column_map(meta, inspection.headers)
        settings = replace(
            self.settings, dry_run=True, source="portal", plan_file=False, full=False,
            zero_missing=False, baseline="snapshot", location_id=int(meta["location_id"]),
            sheet=meta.get("sheet"), duplicates=meta["duplicates"], column_map=table_map,
            encoding=encoding, header_row=header_row)
        report = sync_file(self.file_path(meta), settings, command="plan",
                           origin=self.origin(meta))
        if report.status != "dry_run":
            return self._update(upload_id, status="failed", plan_run_id=report.run_id,
                                plan_dir=report.report_dir, interrupted=False,
                                error=self.plain_error(meta, report.error or "the preview failed"))
        # A new preview replaces the old one, and any refused (stale) attempt to apply it.
        return self._update(upload_id, status="planned", plan_run_id=report.run_id,
                            plan_dir=report.report_dir, error=None, brakes=report.brakes,
                            interrupted=False,
                            column_map=meta.get("column_map") or {}, run_id=None,
                            run_dir=None, transaction_ids=[], sheets=inspection.sheets,
                            sheet_used=report.input.get("sheet"),
                            encoding_used=report.input.get("encoding"),
                            header_row_used=report.input.get("header_row"))

    def choose_sheet(self, upload_id: str, sheet: str) -> None:
        """Preview another sheet of the workbook next time."""
        meta = self.get(upload_id)
        if sheet not in (meta.get("sheets") or []):
            raise UploadError(400, "the workbook has no such sheet")
        if meta["status"] not in ("planned", "stale", "failed", "unmapped", "new"):
            raise UploadError(409, f"this upload is {meta['status']}", status=meta["status"])
        self._update(upload_id, sheet=sheet)

    def choose_reading(self, upload_id: str, encoding: str | None,
                       header_row: int | None) -> None:
        """Read the file with this text encoding and header row (``None``: automatic) next
        time it is previewed; the column map is worked out again for what is read then."""
        encoding, header_row = check_reading(encoding, header_row)
        meta = self.get(upload_id)
        if meta["status"] not in ("planned", "stale", "failed", "unmapped", "new"):
            raise UploadError(409, f"this upload is {meta['status']}", status=meta["status"])
        self._update(upload_id, encoding=encoding, header_row=header_row, encoding_used=None,
                     header_row_used=None)

    def failed(self, upload_id: str, message: str) -> None:
        """Record why an upload could not be previewed (unless it got further already)."""
        with self._lock:
            if self.get(upload_id)["status"] in ("new", "unmapped", "planned", "stale"):
                self._update(upload_id, status="failed", error=message)

    def plain_error(self, meta: dict[str, Any], message: str) -> str:
        """An error message naming the file as the person called it, not where it is kept."""
        stored = str(self.file_path(meta))
        message = message.replace(stored, meta["filename"]).replace("--map ", "the column map ")
        # The CLI's words for the choices the page offers as "Text encoding and header row".
        message = message.replace("name the encoding with --encoding",
                                  f"pick its text encoding under \"{READING}\"")
        message = message.replace("(--encoding)", f"(\"{READING}\")")
        return re.sub(r"--header-row (\d+)", r"header row \1", message)

    # -- apply --------------------------------------------------------------------------
    def discard(self, upload_id: str) -> dict[str, Any]:
        meta = self.get(upload_id)
        if meta["status"] not in ("new", "unmapped", "planned", "stale", "failed"):
            raise UploadError(409, f"this upload is {meta['status']}", status=meta["status"])
        return self._update(upload_id, status="discarded")

    def apply(self, upload_id: str, *, override_brakes: bool = False) -> dict[str, Any]:
        """Start pushing exactly the previewed plan in the background; 409 unless ``planned``.

        When the preview tripped a safety brake, ``override_brakes`` must say it is meant.
        """
        with self._lock:
            meta = self.get(upload_id)
            if meta["status"] == "stale":
                raise UploadError(409, "the store's levels changed since this preview; "
                                       "preview again", status="stale")
            if meta["status"] != "planned":
                raise UploadError(409, f"this upload is {meta['status']}, not planned",
                                  status=meta["status"])
            if meta.get("brakes") and not override_brakes:
                names = ", ".join(b.get("name", "?") for b in meta["brakes"])
                raise UploadError(409, f"the preview tripped a safety brake ({names}): "
                                       f"confirm with override_brakes", status="planned")
            meta = self._update(upload_id, status="applying", error=None, interrupted=False)
            self.progress[upload_id] = Progress()
            thread = threading.Thread(target=self._apply, args=(upload_id, override_brakes),
                                      name=f"invsync-apply-{upload_id[:8]}", daemon=True)
            self._threads[upload_id] = thread
            thread.start()
        return meta

    def shutdown(self, grace_s: float, give_up: Callable[[], bool] = lambda: False) -> list[str]:
        """The server stops: let applies in progress finish for up to ``grace_s`` (or until
        ``give_up()``), then record those still running as cut off; their ids."""
        running = {uid: t for uid, t in list(self._threads.items()) if t.is_alive()}
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
                if thread.is_alive() and self.get(uid)["status"] == "applying":
                    self._update(uid, status="failed", interrupted=True, error=INTERRUPTED)
                    left.append(uid)
        for uid in left:
            log.warning("upload %s was cut off while being applied: some of its changes may "
                        "be in the store; the next upload or sync finishes its run", uid)
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

    def _apply_inner(self, upload_id: str, allow_zeroing: bool) -> None:
        from invsync.run.sync import sync_file

        meta = self.get(upload_id)
        progress = self.progress[upload_id]
        settings = replace(
            self.settings, dry_run=False, plan_file=True, source="portal", full=False,
            zero_missing=False, baseline="snapshot", location_id=int(meta["location_id"]),
            sheet=None, column_map={}, duplicates="reject", encoding=None, header_row=None,
            # plan.csv holds final levels: quantity rules were applied when it was made
            rules=QuantityRules(),
            brakes=replace(self.settings.brakes, allow_zeroing=allow_zeroing))

        def on_event(name: str, data: dict[str, Any]) -> None:
            if name == "submit_started":
                progress.phase = "sending"
                progress.batches_total = int(data.get("batches") or 0)
                progress.items_total = int(data.get("items") or 0)
            elif name == "batch":
                progress.batches_done += 1
                progress.items_done += int(data.get("items") or 0)

        def on_lock_wait(name: str, data: dict[str, Any]) -> None:
            if name == "lock_wait":
                progress.phase, progress.holder = "waiting", _who(data.get("holder"))
            elif name == "run_started":
                progress.phase, progress.holder = "checking", None
            on_event(name, data)

        # The run waits for the store's lock itself (a CLI run, another upload), telling
        # the progress view who holds it; past LOCK_WAIT_S it gives up without sending.
        try:
            report = sync_file(Path(meta["plan_dir"]) / "plan.csv",
                               replace(settings, wait_lock_s=LOCK_WAIT_S),
                               on_event=on_lock_wait, origin=self.origin(meta))
        except LockedError:
            self._update(upload_id, status="failed",
                         error=f"the store stayed busy: {progress.holder or 'another run'}; "
                               f"try again later")
            return
        common = {"run_id": report.run_id, "run_dir": report.report_dir,
                  "transaction_ids": report.transaction_ids}
        if report.exit_code == ExitCode.SAFETY_BRAKE and not report.brakes:
            # A plan push refused without a tripped brake: the levels moved since the plan.
            self._update(upload_id, status="stale", error=report.error, **common)
        elif report.status in ("succeeded", "partial"):
            # Rows the preview rejected were left out: for the file as a whole, partial.
            invalid = ((_report(meta.get("plan_dir")) or {}).get("counts") or {}).get("invalid")
            status = "partial" if invalid else report.status
            self._update(upload_id, status=status, error=None, **common)
        else:
            self._update(upload_id, status="failed",
                         error=report.error or "the run failed", brakes=report.brakes, **common)

    def lock_holder(self) -> str | None:
        """Who holds this store's lock (a run in progress), or None when it is free."""
        from invsync.state.journal import StoreLock, host_lock
        from invsync.state.snapshot import SnapshotStore

        s = self.settings
        store = s.store_hash or "offline"
        locks = (StoreLock(SnapshotStore(s.state_dir, store, s.api_url, s.profile).store_dir,
                           store), host_lock(s.api_url, store))
        for lock in locks:
            holder = lock.holder()
            if holder is not None:
                return _who(holder)
        return None

    # -- what pages and the API show ----------------------------------------------------
    def describe(self, upload_id: str) -> dict[str, Any]:
        """The API shape of an upload: status, counts, rejected rows, changes, brakes."""
        from invsync.surfaces.web.messages import reason_text, web_brake

        meta = self.get(upload_id)
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
            "counts": (shown or {}).get("counts") or {},
            "rejected": rejected, "refused": refused,
            "changes": changes[:MAX_CHANGES], "changes_total": total,
            "brakes": [web_brake(b) for b in meta.get("brakes") or []],
            "plan_run_id": meta.get("plan_run_id"),
            "error": meta.get("error"),
        }
        if meta.get("interrupted") and meta["status"] == "failed" and not run_report:
            # Cut off by a server stop: whether the store applied them is not known.
            counts = dict(out["counts"])
            counts["unconfirmed"] = (counts.get("unconfirmed") or 0) + (counts.get("not_sent") or 0)
            counts["not_sent"] = 0
            out.update(counts=counts, interrupted=True)
        out["files"] = [n for n in FILES if self._find_file(meta, n) is not None]
        if meta.get("run_id"):
            out["run_id"] = meta["run_id"]
            out["transaction_ids"] = meta.get("transaction_ids") or []
        if meta["status"] == "applying" and upload_id in self.progress:
            out["progress"] = self.progress[upload_id].to_dict()
        return out

    def file(self, upload_id: str, name: str) -> Path:
        """One of the upload's run files: the apply run's report, else the preview's."""
        meta = self.get(upload_id)
        if name == "original":
            return self.file_path(meta)
        if name not in FILES:
            raise UploadError(404, "no such file")
        found = self._find_file(meta, name)
        if found is None:
            raise UploadError(404, f"this upload has no {name}")
        return found

    @staticmethod
    def _find_file(meta: dict[str, Any], name: str) -> Path | None:
        folders = [meta.get("plan_dir")]
        if name == "report.html" and meta.get("run_dir"):
            folders.insert(0, meta["run_dir"])
        for folder in folders:
            if folder and (Path(folder) / name).is_file():
                return Path(folder) / name
        return None

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """Uploads, newest first (for the upload page's own list)."""
        out = []
        for meta_path in self.dir.glob("*/meta.json") if self.dir.exists() else []:
            try:
                out.append(json.loads(meta_path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda m: m.get("created") or "", reverse=True)[:limit]


def _report(folder: str | None) -> dict[str, Any] | None:
    if not folder:
        return None
    try:
        return dict(json.loads((Path(folder) / "report.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


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
    # plan.csv says before/after now; this page's rows still call them old/new.
    plan = plan.rename({"before": "old", "after": "new"}, strict=False)
    if plan.height == 0:
        return [], 0
    plan = plan.with_columns(
        unescape_formulas(pl.col("item")).alias("item"),
        *(pl.col(c).cast(pl.Int64, strict=False) for c in ("location_id", "old", "new", "row")),
    ).with_columns(delta=pl.col("new") - pl.col("old").fill_null(0))
    # Only the first MAX_CHANGES are shown: a top-k, not a sort of a million-row plan.
    rows = plan.lazy().sort(["delta", "new", "location_id", "item"], nulls_last=True).head(
        MAX_CHANGES).select("location_id", "identifier", "item", "old", "new", "delta",
                            "row").collect().to_dicts()
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
