"""``invsync doctor``: check, in seconds and before the first night, what would make a run fail.

Each check is one line, ``ok`` or ``fail``, and a failed one says how to fix it. Nothing
in the store changes: the write scope is tested with an adjustment of no items.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

from invsync.redact import redact_url
from invsync.run.config import Settings
from invsync.terminal import one_line

MAX_CLOCK_SKEW_S = 120.0
"""More than this between this host's clock and the store's ``Date`` header is a fail:
run ids, reports and ``baseline_every`` use the local clock."""


@dataclass(frozen=True)
class Check:
    """One line of the doctor's answer."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The check as a JSON event's fields."""
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


def folder_check(name: str, folder: Path) -> Check:
    """``folder`` can be created, written, and no other user may read or write it."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".invsync-doctor-")
        os.close(fd)
        os.unlink(probe)
        st = os.stat(folder)
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        return Check(name, False, f"{folder} is not writable ({why})",
                     f"create it for the user that runs invsync: install -d -m 700 {folder}")
    if st.st_uid != os.getuid():
        return Check(name, False, f"{folder} belongs to uid {st.st_uid}, not to this user "
                                  f"({os.getuid()})",
                     f"chown the folder to the user that runs invsync: chown $(id -un) {folder}")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check(name, False, f"{folder} is open to other users "
                                  f"(mode {stat.S_IMODE(st.st_mode):o})",
                     f"chmod 700 {folder}")
    return Check(name, True, f"{folder} is writable and private")


def _scope_fix(settings: Settings, what: str) -> str:
    return (f"create an API account for store {settings.store_hash} with the {what} scope "
            f"and set BIGCOMMERCE_ACCESS_TOKEN to its token")


class _Store:
    """Plain requests to the store for the checks (no retries: the doctor reports)."""

    def __init__(self, settings: Settings, timeout_s: float) -> None:
        import httpx

        token = settings.token.reveal() if settings.token else ""
        self.base = f"{settings.api_url.rstrip('/')}/stores/{settings.store_hash}"
        self.client = httpx.Client(timeout=timeout_s, verify=settings.verify_tls,
                                   headers={"X-Auth-Token": token,
                                            "Accept": "application/json"})

    def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.client.request(method, f"{self.base}{path}", **kw)

    def close(self) -> None:
        self.client.close()


def _token_and_read(store: _Store, settings: Settings) -> tuple[list[Check], Any]:
    import httpx

    try:
        response = store.request("GET", "/v3/inventory/locations")
    except httpx.HTTPError as exc:
        return [Check("store reachable", False, f"{redact_url(settings.api_url)}: "
                      f"{type(exc).__name__}",
                      "check the API URL, DNS, proxy and firewall (HTTPS to the API host)")], None
    checks = [Check("store reachable", True, f"{redact_url(settings.api_url)} answered")]
    if response.status_code == 401:
        return [*checks, Check("token accepted", False, "the store answered 401",
                               "the token is wrong or revoked: set BIGCOMMERCE_ACCESS_TOKEN to "
                               "a current token of this store")], response
    if response.status_code == 403:
        return [*checks, Check("token accepted", True, "the store knows the token"),
                         Check("inventory read scope", False, "403 reading locations",
                               _scope_fix(settings, "Information & Settings read-only and "
                                                    "Products modify (inventory)"))], response
    if response.status_code >= 300:
        return [*checks, Check("token accepted", False,
                               f"HTTP {response.status_code} reading locations",
                               "check the store hash and the API URL")], response
    return [*checks, Check("token accepted", True, "the store accepted the token")], response


def _write_scope(store: _Store, settings: Settings) -> Check:
    import httpx

    try:  # an adjustment of no items: the store checks the scope, nothing changes
        response = store.request("PUT", "/v3/inventory/adjustments/absolute",
                                 json={"reason": "invsync doctor (no items)", "items": []})
    except httpx.HTTPError as exc:
        return Check("inventory write scope", False, type(exc).__name__, "try again")
    if response.status_code in (401, 403):
        return Check("inventory write scope", False,
                     f"HTTP {response.status_code} to an empty adjustment",
                     _scope_fix(settings, "Products modify (inventory)"))
    return Check("inventory write scope", True, "an empty adjustment was accepted "
                                                 "(nothing changed)")


def _locations(response: Any, settings: Settings) -> Check:
    try:
        listed = response.json().get("data") or []
    except (ValueError, AttributeError):
        return Check("locations", False, "the locations answer is not JSON",
                     "check the API URL: it must be the store API's host")
    by_id = {int(loc.get("id", -1)): loc for loc in listed if isinstance(loc, dict)}
    wanted = settings.location_id
    loc = by_id.get(wanted)
    known = ", ".join(f"{i}{'' if v.get('enabled', True) else ' (disabled)'}"
                      for i, v in sorted(by_id.items())) or "none"
    if loc is None:
        return Check("locations", False, f"location {wanted} does not exist (store has: "
                                         f"{known})",
                     "set location_id in the config (or --location-id) to one of those")
    if loc.get("enabled") is False:
        return Check("locations", False, f"location {wanted} is disabled (store has: {known})",
                     "enable it in the store's control panel or choose another location_id")
    return Check("locations", True, f"location {wanted} exists and is enabled "
                                    f"(store has: {known})")


def _quota(response: Any) -> Check:
    headers = response.headers
    quota = headers.get("x-rate-limit-requests-quota")
    window = headers.get("x-rate-limit-time-window-ms")
    if not quota or not window:
        return Check("quota headers", False, "the store sent no X-Rate-Limit headers",
                     "invsync then paces itself by 429 answers only; check that the API URL "
                     "is the store API and no proxy strips headers")
    left = headers.get("x-rate-limit-requests-left", "?")
    return Check("quota headers", True, f"{quota} requests per {int(window) / 1000:g} s "
                                        f"({left} left now)")


def _clock(response: Any) -> Check:
    date = response.headers.get("date")
    if not date:
        return Check("clock", False, "the store sent no Date header", "")
    try:
        skew = time.time() - parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return Check("clock", False, f"unreadable Date header {date!r}", "")
    if abs(skew) > MAX_CLOCK_SKEW_S:
        return Check("clock", False, f"this host's clock is {skew:+,.0f} s off the store's",
                     "run NTP (timedatectl set-ntp true, or chrony)")
    return Check("clock", True, f"within {abs(skew):.0f} s of the store's Date header")


def _orders_scope(store: _Store, settings: Settings) -> Check | None:
    """Only when ``as_of`` is configured (orders since a time are read then)."""
    import httpx

    if getattr(settings, "as_of", None) in (None, "", False):
        return None
    try:
        response = store.request("GET", "/v2/orders", params={"limit": 1})
    except httpx.HTTPError as exc:
        return Check("orders read scope", False, type(exc).__name__, "try again")
    if response.status_code in (200, 204):
        return Check("orders read scope", True, "orders can be read (as_of is set)")
    return Check("orders read scope", False, f"HTTP {response.status_code} reading orders",
                 _scope_fix(settings, "Orders read-only"))


def run_checks(settings: Settings, *, timeout_s: float = 10.0) -> list[Check]:
    """Every check, in order; the store checks only when the settings name a store."""
    from invsync.state.journal import host_lock_dir

    checks = [folder_check("state folder", settings.state_dir),
              folder_check("report folder", settings.reports),
              folder_check("lock folder", host_lock_dir())]
    if not settings.store_hash or not settings.token:
        missing = "store hash" if not settings.store_hash else "access token"
        return [*checks, Check("store settings", False, f"no {missing}",
                               "set BIGCOMMERCE_STORE_HASH and BIGCOMMERCE_ACCESS_TOKEN "
                               "(or store_hash/access_token in the config)")]
    try:
        store = _Store(settings, timeout_s)
    except (OSError, ValueError, ImportError) as exc:  # this machine's TLS or proxy setup
        return [*checks, Check("store reachable", False, f"no HTTP client: {one_line(exc)}",
                               "check SSL_CERT_FILE/SSL_CERT_DIR (a PEM bundle) and "
                               "HTTP_PROXY/HTTPS_PROXY/ALL_PROXY")]
    try:
        found, response = _token_and_read(store, settings)
        checks += found
        if response is None or not found[-1].ok:
            return checks
        checks.append(_write_scope(store, settings))
        orders = _orders_scope(store, settings)
        if orders is not None:
            checks.append(orders)
        checks += [_locations(response, settings), _quota(response), _clock(response)]
    finally:
        store.close()
    return checks
