"""Who may use the upload page: users, API keys, sessions, login throttling.

Users and keys live in ``<state-dir>/portal/`` (files mode 0600, never in the config file).
A password is kept only as a salted scrypt hash; an API key (printed once) only as a
SHA-256 of its secret part (it is 256 random bits, so a slow hash adds nothing). Every
comparison is constant-time, and an unknown user costs the same scrypt as a known one.
Sessions live in the server's memory and end after an idle and an absolute time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from invsync.clock import utc_now
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
    """Write JSON readable by the owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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


@dataclass
class Sessions:
    """Sessions in memory, ended after ``idle_s`` without use or ``max_s`` after sign-in."""

    idle_s: float = 30 * 60
    max_s: float = 12 * 3600
    _by_id: dict[str, Session] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def create(self, user: str) -> tuple[str, Session]:
        now = time.monotonic()
        sid = secrets.token_urlsafe(32)
        session = Session(user=user, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        with self._lock:
            self._by_id[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle_s or now - session.created > self.max_s:
                del self._by_id[sid]
                return None
            session.seen = now
            return session

    def end(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def end_user(self, user: str) -> None:
        with self._lock:
            for sid in [k for k, s in self._by_id.items() if s.user == user]:
                del self._by_id[sid]


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

    def blocked(self, user: str, address: str) -> float:
        """Seconds to wait before trying again (0: may try now)."""
        now = time.monotonic()
        with self._lock:
            waits = []
            # Per address, a little looser: one person mistyping several names is normal.
            for key, limit in (((user.lower(), address), self.limit),
                               (("", address), self.limit * 4)):
                q = self._recent(key, now)
                if len(q) >= limit:
                    waits.append(self.window_s - (now - q[0]))
            return max(waits, default=0.0)

    def failed(self, user: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in ((user.lower(), address), ("", address)):
                self._recent(key, now).append(now)

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._failures.pop((user.lower(), address), None)
