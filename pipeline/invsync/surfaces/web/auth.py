"""Who may use the upload page: users, API keys, sessions, login throttling.

Users and keys live in ``<state-dir>/portal/`` (files mode 0600, never in the config file).
A password is kept only as a salted scrypt hash; an API key (printed once) only as a
SHA-256 of its secret part (it is 256 random bits, so a slow hash adds nothing). Every
comparison is constant-time, and an unknown user costs the same scrypt as a known one.
Sessions are kept in ``sessions.json`` there too (private, only a hash of each session
id), so they survive a restart of the server; they end after an idle and an absolute time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invsync.clock import utc_now
from invsync.disk import write_atomic
from invsync.errors import UsageError

SCRYPT = {"n": 2**14, "r": 8, "p": 1}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
KEY_PREFIX = "isk"
MIN_PASSWORD = 8


def portal_dir(state_dir: Path) -> Path:
    """``<state-dir>/portal``: users, keys, remembered column maps, uploads."""
    return Path(state_dir) / "portal"


def _hash_password(password: str, salt: bytes, params: dict[str, int]) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=params["n"], r=params["r"],
                          p=params["p"], maxmem=64 << 20, dklen=32)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write JSON readable by the owner only, atomically (the one atomic-write routine)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp makes the temporary file 0600, and the rename keeps that mode.
    write_atomic(path, json.dumps(data, indent=2).encode("utf-8"))


def _read(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


class Accounts:
    """Users (name → scrypt hash) and API keys (id → SHA-256 of the secret), on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = portal_dir(state_dir)
        self.users_path = self.dir / "users.json"
        self.keys_path = self.dir / "keys.json"
        self._dummy = (secrets.token_bytes(16), SCRYPT)

    # -- users ------------------------------------------------------------------------
    def add_user(self, name: str, password: str) -> bool:
        """Create or replace ``name``'s password; True when the user is new."""
        if not NAME.match(name):
            raise UsageError("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
        if len(password) < MIN_PASSWORD:
            raise UsageError(f"the password must have at least {MIN_PASSWORD} characters")
        users = _read(self.users_path)
        salt = secrets.token_bytes(16)
        new = name not in users
        users[name] = {"scrypt": _hash_password(password, salt, SCRYPT).hex(),
                       "salt": salt.hex(), **SCRYPT,
                       "created": utc_now()}
        _write_private(self.users_path, users)
        return new

    def remove_user(self, name: str) -> bool:
        users = _read(self.users_path)
        if users.pop(name, None) is None:
            return False
        _write_private(self.users_path, users)
        return True

    def users(self) -> dict[str, dict[str, Any]]:
        return {k: {"created": v.get("created")} for k, v in _read(self.users_path).items()}

    def password_stamp(self, name: str) -> str | None:
        """A mark of ``name``'s current password (changes with every new password); None
        when there is no such user. Sessions signed in under another mark are ended."""
        record = _read(self.users_path).get(name)
        if record is None:
            return None
        return hashlib.sha256(bytes.fromhex(record["salt"])).hexdigest()[:32]

    def check_password(self, name: str, password: str) -> bool:
        """True when ``password`` is ``name``'s; the same work whether or not ``name`` exists."""
        record = _read(self.users_path).get(name)
        if record is None:
            salt, params = self._dummy
            _hash_password(password, salt, params)
            return False
        params = {k: int(record[k]) for k in ("n", "r", "p")}
        got = _hash_password(password, bytes.fromhex(record["salt"]), params)
        return hmac.compare_digest(got, bytes.fromhex(record["scrypt"]))

    # -- API keys -----------------------------------------------------------------------
    def add_key(self, name: str) -> str:
        """Make an API key for ``name``; returns it (shown once, stored only hashed)."""
        if not NAME.match(name):
            raise UsageError("a key name is 1-64 letters, digits, '.', '_', '@' or '-'")
        keys = _read(self.keys_path)
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        keys[key_id] = {"name": name, "sha256": hashlib.sha256(secret.encode()).hexdigest(),
                        "created": utc_now()}
        _write_private(self.keys_path, keys)
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def remove_key(self, name_or_id: str) -> int:
        keys = _read(self.keys_path)
        kept = {k: v for k, v in keys.items() if name_or_id not in (k, v.get("name"))}
        if len(kept) != len(keys):
            _write_private(self.keys_path, kept)
        return len(keys) - len(kept)

    def keys(self) -> dict[str, dict[str, Any]]:
        return {k: {"name": v.get("name"), "created": v.get("created")}
                for k, v in _read(self.keys_path).items()}

    def check_key(self, presented: str) -> str | None:
        """The key's name when ``presented`` is a valid key, else None."""
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        record = _read(self.keys_path).get(parts[1])
        digest = hashlib.sha256(parts[2].encode()).hexdigest()
        expected = record["sha256"] if record else "0" * 64
        if hmac.compare_digest(digest, expected) and record is not None:
            return f"key:{record.get('name')}"
        return None


@dataclass
class Session:
    """One signed-in browser."""

    user: str
    csrf: str
    created: float
    seen: float
    stamp: str | None = None
    """The user's password mark at sign-in (:meth:`Accounts.password_stamp`)."""


class Sessions:
    """Signed-in browsers, ended after ``idle_s`` without use or ``max_s`` after sign-in.

    With a ``state_dir`` they are kept in ``<state-dir>/portal/sessions.json`` (mode 0600,
    keyed by a SHA-256 of the session id, never the id itself), so a restart of the server
    signs nobody out; without one, in memory only.
    """

    SAVE_SEEN_EVERY_S = 60.0
    """How stale the recorded last use may get on disk (saved at most this often)."""

    def __init__(self, state_dir: Path | None = None, *, idle_s: float = 30 * 60,
                 max_s: float = 12 * 3600) -> None:
        self.idle_s, self.max_s = idle_s, max_s
        self.path = portal_dir(state_dir) / "sessions.json" if state_dir else None
        self._lock = threading.Lock()
        self._by_key: dict[str, Session] = {}
        self._saved_at = 0.0
        if self.path is not None:
            self._load()

    @staticmethod
    def _key(sid: str) -> str:
        return hashlib.sha256(sid.encode()).hexdigest()

    def _load(self) -> None:
        assert self.path is not None
        try:
            records = _read(self.path)
        except UsageError:
            records = {}  # an unreadable file only signs everyone out
        for key, rec in records.items():
            try:
                self._by_key[key] = Session(user=str(rec["user"]), csrf=str(rec["csrf"]),
                                            created=float(rec["created"]),
                                            seen=float(rec["seen"]), stamp=rec.get("stamp"))
            except (KeyError, TypeError, ValueError):
                continue

    def _save(self, now: float) -> None:
        """Write the live sessions (caller holds the lock)."""
        self._saved_at = now
        if self.path is None:
            return
        live = {k: s.__dict__ for k, s in self._by_key.items() if not self._over(s, now)}
        with contextlib.suppress(OSError):  # a full disk: sessions last until a restart
            _write_private(self.path, live)

    def _over(self, session: Session, now: float) -> bool:
        return now - session.seen > self.idle_s or now - session.created > self.max_s

    def create(self, user: str, stamp: str | None = None) -> tuple[str, Session]:
        now = time.time()
        sid = secrets.token_urlsafe(32)
        session = Session(user=user, csrf=secrets.token_urlsafe(32), created=now, seen=now,
                          stamp=stamp)
        with self._lock:
            self._by_key[self._key(sid)] = session
            self._save(now)
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.time()
        key = self._key(sid)
        with self._lock:
            session = self._by_key.get(key)
            if session is None:
                return None
            if self._over(session, now):
                del self._by_key[key]
                self._save(now)
                return None
            session.seen = now
            if now - self._saved_at > self.SAVE_SEEN_EVERY_S:
                self._save(now)
            return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            if self._by_key.pop(self._key(sid or ""), None) is not None:
                self._save(time.time())

    def end_user(self, user: str) -> None:
        with self._lock:
            for key in [k for k, s in self._by_key.items() if s.user == user]:
                del self._by_key[key]
            self._save(time.time())


@dataclass
class Throttle:
    """At most ``limit`` failed sign-ins per ``window_s`` per (user, address) and per address."""

    limit: int = 5
    window_s: float = 60.0
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def _keys(self, user: str, address: str) -> tuple[tuple[tuple[str, str], int], ...]:
        # Per address, a little looser: one person mistyping several names is normal.
        return (((user.lower(), address), self.limit), (("", address), self.limit * 4))

    def blocked(self, user: str, address: str) -> float:
        """Seconds to wait before trying again (0: may try now)."""
        now = time.monotonic()
        with self._lock:
            return self._wait(user, address, now)

    def _wait(self, user: str, address: str, now: float) -> float:
        waits = []
        for key, limit in self._keys(user, address):
            q = self._recent(key, now)
            if len(q) >= limit:
                waits.append(self.window_s - (now - q[0]))
        return max(waits, default=0.0)

    def begin(self, user: str, address: str) -> float:
        """Check and count a sign-in attempt in one step: the seconds to wait (nothing
        counted), or 0 with the attempt counted as a failure until :meth:`succeeded`. So
        many guesses at once get at most ``limit`` password checks, not one each."""
        now = time.monotonic()
        with self._lock:
            wait = self._wait(user, address, now)
            if wait > 0:
                return wait
            for key, _ in self._keys(user, address):
                self._recent(key, now).append(now)
            return 0.0

    def failed(self, user: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key, _ in self._keys(user, address):
                self._recent(key, now).append(now)

    def succeeded(self, user: str, address: str) -> None:
        """A right password: the user's failures are forgotten, and this attempt is not
        one of the address's."""
        with self._lock:
            self._failures.pop((user.lower(), address), None)
            q = self._failures.get(("", address))
            if q:
                q.pop()
