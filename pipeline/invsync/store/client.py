"""An asyncio httpx client for the BigCommerce inventory API, aware of its rate limit.

The client owns the transport concerns: authentication, the shared per-store request
quota (``X-Rate-Limit-*``), bounded exponential backoff with jitter for 429/5xx/timeouts
and lost answers. It raises :class:`Refused` for a 422 so that the submit stage can
isolate the refused items. The access token only ever travels in a request header.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from invsync.errors import (
    AuthError,
    FatalError,
    Refused,
    RetryableError,
    StoreError,
    UsageError,
)
from invsync.redact import Secret, redact
from invsync.store.limits import (
    MAX_ITEMS_PER_REQUEST,
    MAX_PAGES,
    WRITTEN_OUT,
    EncodedItems,
    RetryPolicy,
    reserved_requests,
)
from invsync.store.pages import READS_IN_FLIGHT, Listing, json_page
from invsync.tables import Location

log = logging.getLogger("invsync.client")

__all__ = ["PutResult", "RateLimiter", "StoreClient"]

_TLS: dict[bool, ssl.SSLContext] = {}


def _tls_context(verify: bool) -> ssl.SSLContext:
    """One TLS context per process, as httpx would make it (``SSL_CERT_FILE`` and all):
    loading the CA bundle takes ~0.2 s, and a run makes several clients."""
    if verify not in _TLS:
        _TLS[verify] = httpx.create_ssl_context(verify=verify)
    return _TLS[verify]


@dataclass
class PutResult:
    """A write the store accepted."""

    transaction_id: str
    attempts: int


@dataclass
class RateLimiter:
    """Shares the store's request quota between concurrent requests.

    The store reports how many requests are left in its window and when the window
    resets; once the requests left are all spoken for by requests in flight, new ones
    wait for the reset instead of running into 429s. Once the quota is known, this
    client's own requests are also paced: at most its share of the quota is started in
    any stretch of one window's length, so no window of the store (whatever its phase,
    and however the store's clock or the network delay differ from this one's) receives
    more than that share from it, the first window of a run included.
    """

    margin_s: float = 0.05
    max_wait_s: float = 60.0
    """A window reset further away than this is taken as this far (the store may lie)."""
    left: int | None = None
    reset_at: float = 0.0
    in_flight: int = 0
    blocked_until: float = 0.0
    waited_s: float = 0.0
    quota: int | None = None
    """Requests a window, as the store last said (``X-Rate-Limit-Requests-Quota``)."""
    window_s: float | None = None
    answered: bool = False
    """Whether any answer came back yet: until one does, the quota is unknown, so only one
    request goes out (a burst of ``concurrency`` could run straight into 429s)."""
    on_wait: Callable[[dict[str, Any]], None] | None = None
    """Told of the quota (``kind: quota``, when first known or changed) and of each wait for
    it (``kind: wait``, once per window): ``wait_s``, ``quota``, ``window_s``."""
    share: float = 1.0
    """The share of each window's quota this client uses (``[store] quota_share``): it
    waits for the next window while fewer requests than the rest are left."""
    _told_until: float = 0.0
    _told_at: float = -math.inf
    _started: deque[float] = field(default_factory=deque)
    """When each request of the last window's length was let go (for the pacing)."""
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def acquire(self, deadline: float = math.inf) -> None:
        """Wait until a request may be sent without exceeding the quota.

        Raises :class:`StoreError` at once when that wait would pass ``deadline``
        (a ``time.monotonic()`` value): sleeping would only end in failing later.
        """
        async with self._cond:
            while True:
                now = time.monotonic()
                wait = 0.0
                if self.blocked_until > now:
                    wait = self.blocked_until - now
                elif (paced := self._pace(now)) > 0:
                    wait = paced
                elif self.left is not None and self.left - self.in_flight \
                        - reserved_requests(self.quota, self.share) <= 0:
                    if self.reset_at > now:
                        wait = self.reset_at - now
                    else:
                        # A new window: the quota the store last stated (until an answer
                        # of this window says more), else unknown.
                        if self.quota is not None and self.window_s and self.window_s > 0:
                            self.left, self.reset_at = self.quota, now + self.window_s
                        else:
                            self.left = None
                        continue
                if wait <= 0:
                    if not self.answered and self.in_flight >= 1:
                        # The first request learns the quota; the others wait for its answer.
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._cond.wait(), timeout=1.0)
                        continue
                    self.in_flight += 1
                    self._started.append(now)
                    return
                if now + wait > deadline:
                    raise StoreError(
                        f"the store's rate limit asks to wait {wait:,.0f} s, more than the "
                        f"{max(deadline - now, 0):.0f} s left of the retry budget "
                        f"(retry.max_total_s without progress)")
                self.waited_s += wait
                self._tell(now, wait)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout=wait)

    def _pace(self, now: float) -> float:
        """How long until one more request keeps this client within its share of the
        quota over the last window's length (0: it may go now)."""
        if not self.quota or not self.window_s:
            return 0.0
        usable = self.quota - reserved_requests(self.quota, self.share)
        span = self.window_s + self.margin_s
        started = self._started
        while started and started[0] <= now - span:
            started.popleft()
        if len(started) < usable:
            return 0.0
        return started[len(started) - usable] + span - now

    def _tell(self, now: float, wait: float) -> None:
        """Report a wait for the quota once, not once per request held back by it."""
        if self.on_wait is None or now + wait <= self._told_until + 0.5:
            return
        # Paced requests wait often, briefly: at most one report a window.
        if now < self._told_at + (self.window_s or 0.0):
            return
        self._told_until, self._told_at = now + wait, now
        self.on_wait({"kind": "wait", "wait_s": round(wait, 3), "quota": self.quota,
                      "window_s": self.window_s})

    async def release(self, headers: httpx.Headers | None) -> None:
        """Record the quota the store reported in an answer (or none, on failure)."""
        async with self._cond:
            self.in_flight -= 1
            if headers is not None:
                self.answered = True
                left = _int_header(headers, "x-rate-limit-requests-left")
                reset_ms = _int_header(headers, "x-rate-limit-time-reset-ms")
                window_ms = _int_header(headers, "x-rate-limit-time-window-ms") or 0
                if window_ms <= 0:  # none, or nonsense: a window must move time forward
                    window_ms = 30000
                # A window longer than max_wait_s is waited as max_wait_s, like any reset.
                window_s = min(window_ms / 1000, self.max_wait_s)
                quota = _int_header(headers, "x-rate-limit-requests-quota")
                if quota is not None and quota > 0 and reset_ms is not None \
                        and (quota, window_s) != (self.quota, self.window_s):
                    self.quota, self.window_s = quota, window_s
                    if self.on_wait is not None:
                        self.on_wait({"kind": "quota", "quota": quota,
                                      "window_s": self.window_s})
                if left is not None and reset_ms is not None:
                    reset_s = min(max(reset_ms, 0) / 1000, self.max_wait_s)
                    reset_at = time.monotonic() + reset_s + self.margin_s
                    same_window = abs(reset_at - self.reset_at) < window_s / 4
                    # Answers arrive out of order: within one window the lowest count is newest.
                    if self.left is not None and same_window:
                        self.left = min(self.left, left)
                    else:
                        self.left = left
                        self.reset_at = reset_at
            self._cond.notify_all()

    async def block(self, seconds: float) -> None:
        """Hold every request back for ``seconds`` (after a 429)."""
        async with self._cond:
            seconds = min(seconds, self.max_wait_s)
            self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)
            self.left = None
            # What is left is unknown again: one request goes first and learns it.
            self.answered = False


def _written_out_trace(traced: bool) -> dict[str, Any] | None:
    """httpcore's ``trace`` extension telling :data:`WRITTEN_OUT` (when the sending task
    set it) that the request is written out; None when nobody asks. A transport that is
    not httpcore's (``traced`` false) tells nothing: the request counts as out at once."""
    written = WRITTEN_OUT.get()
    if written is None:
        return None
    if not traced:
        written()
        return None

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            written()

    return {"trace": trace}


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except (ValueError, OverflowError):
        return None


class StoreClient:
    """The store's inventory API, used as ``async with StoreClient(...) as client``.

    Everything that can go wrong below this class (any ``httpx`` error, an answer that is
    not the JSON it should be) comes out as an :mod:`invsync.errors` exception with a
    one-line message, and no text from the store leaves it without :func:`redact`.
    """

    def __init__(
        self,
        api_url: str,
        store_hash: str,
        token: Secret | str,
        *,
        concurrency: int = 16,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify_tls: bool = True,
        seed: int | None = None,
        on_retry: Callable[[dict[str, Any]], None] | None = None,
        max_pages: int = MAX_PAGES,
        on_rate_wait: Callable[[dict[str, Any]], None] | None = None,
        quota_share: float = 1.0,
    ) -> None:
        if not store_hash:
            raise UsageError("no store hash: pass --store-hash or set BIGCOMMERCE_STORE_HASH")
        self.base = f"{api_url.rstrip('/')}/stores/{store_hash}/v3"
        self.root = f"{api_url.rstrip('/')}/stores/{store_hash}"
        """Paths that start with ``/v2/`` (the order reads) hang off this instead of ``base``."""
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter(max_wait_s=self.retry.max_wait_s, on_wait=on_rate_wait,
                                   share=quota_share)
        self.max_pages = max_pages
        self._rng = random.Random(seed)
        self._on_retry = on_retry
        # The token is added to each request, never kept in the client's default headers
        # (httpx masks only Authorization in their repr).
        self._token = token if isinstance(token, Secret) else Secret(token)
        self._last_progress = time.monotonic()
        self._active = 0
        self.requests_sent = 0
        self.responses_429 = 0
        self._traced = transport is None
        """httpx's own transport (httpcore): it says when a request is written out."""
        self._http = httpx.AsyncClient(
            headers={"Accept": "application/json",
                     "Content-Type": "application/json", "User-Agent": "invsync/0.1"},
            timeout=httpx.Timeout(self.retry.timeout_s, connect=10.0),
            # Reads may overlap even when writes go one at a time (store/pages.py).
            limits=httpx.Limits(max_connections=max(concurrency, READS_IN_FLIGHT) + 1,
                                max_keepalive_connections=max(concurrency, READS_IN_FLIGHT) + 1),
            transport=transport,
            # A plain-HTTP store (the sandbox) never uses TLS, and redirects are not
            # followed: it is spared loading the CA bundle.
            verify=_tls_context(verify_tls) if self.base.lower().startswith("https:")
            else False,
        )

    def __repr__(self) -> str:
        return f"StoreClient({self.base!r})"

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def put_absolute(self, items: list[dict[str, Any]] | EncodedItems,
                           reason: str | None) -> PutResult:
        """Set absolute levels for up to 2000 items; raises :class:`Refused` on a 422.

        ``items`` may come already serialised (:class:`EncodedItems`): a batch's body is
        then built without a Python object per item.
        """
        if len(items) > MAX_ITEMS_PER_REQUEST:
            raise ValueError(f"at most {MAX_ITEMS_PER_REQUEST} items per request")
        body: bytes | dict[str, Any]
        if isinstance(items, EncodedItems):
            body = b'{"items":' + items.json + (
                b',"reason":' + json.dumps(reason).encode() if reason else b"") + b"}"
        else:
            body = {"items": items}
            if reason:
                body["reason"] = reason
        response, attempts = await self._request("PUT", "/inventory/adjustments/absolute", body)
        try:
            txid = _json(response, "PUT /inventory/adjustments/absolute")["transaction_id"]
        except (StoreError, KeyError, TypeError):
            txid = None
        # null, "" or a non-scalar is no confirmation: the write's fate is unknown.
        if isinstance(txid, bool) or not isinstance(txid, str | int) or not str(txid).strip():
            raise StoreError(
                f"the store accepted a write but sent no transaction_id "
                f"(HTTP {response.status_code})"
            )
        # Store text, like any other: a proxy that echoes headers must not carry the token.
        return PutResult(transaction_id=redact(str(txid)), attempts=attempts)

    async def get_locations(self) -> list[Location]:
        """Every location of the store (all pages)."""
        out = []
        async for entry in self._pages("/inventory/locations", {}):
            try:
                out.append(Location(id=whole_number(entry["id"]),
                                    code=str(entry.get("code") or ""),
                                    enabled=bool(entry.get("enabled", True)),
                                    label=str(entry.get("label") or "")))
            except (KeyError, TypeError, ValueError):
                raise StoreError("GET /inventory/locations: the store listed a location "
                                 "without a whole-number id") from None
        return out

    async def get_answer(self, path: str, params: dict[str, str]) -> tuple[bytes, str]:
        """The body of the answer to one ``GET path`` (retried like every request) and its
        content type (``""`` when none is given), for a message when the body is no page."""
        response, _ = await self._request("GET", path, None, params=params)
        return response.content, response.headers.get("content-type", "").split(";")[0]

    async def iter_items(self, location_ids: list[int],
                         filters: dict[str, str] | None = None,
                         on_total: Callable[[int | None], None] | None = None) -> Any:
        """Yield ``GET /inventory/items`` entries (identity + per-location levels), paged;
        ``filters`` narrows the listing (e.g. ``{"sku:in": "A,B"}``); ``on_total`` is told
        the entries the store says it lists, once the first page is in."""
        params = {"location_id:in": ",".join(str(i) for i in sorted(location_ids)),
                  **(filters or {})}
        async for entry in self._pages("/inventory/items", params, on_total):
            yield entry

    async def _pages(self, path: str, params: dict[str, str],
                     on_total: Callable[[int | None], None] | None = None) -> Any:
        """Every entry of a paged listing, read as the run's reads are (a
        :class:`~invsync.store.pages.Listing` of :func:`~invsync.store.pages.json_page`
        pages): one page parser, one set of checks on the store's pagination; ``on_total``
        is told the entries the store says it lists, once the first page is in."""
        listing = Listing(self, path, params, json_page)
        if on_total is not None:
            on_total((await listing.first()).total)
        async for page in listing.pages():
            for entry in page.entries:
                yield entry

    def _deadline(self, started: float) -> float:
        """When a request started at ``started`` must give up: ``max_total_s`` after the
        earlier of its start and the run's last progress."""
        return min(started, self._last_progress) + self.retry.max_total_s

    async def _request(
        self, method: str, path: str, body: Any, params: dict[str, str] | None = None
    ) -> tuple[httpx.Response, int]:
        """Send with retries; return the final 2xx answer and the attempts it took."""
        started = time.monotonic()
        if self._active == 0:
            # Local work between requests (validating, journaling) is not the store stalling.
            self._last_progress = max(self._last_progress, started)
        self._active += 1
        try:
            return await self._attempts(method, path, body, params, started)
        finally:
            self._active -= 1

    async def _attempts(self, method: str, path: str, body: Any, params: dict[str, str] | None,
                        started: float) -> tuple[httpx.Response, int]:
        content = body if isinstance(body, bytes) else (
            json.dumps(body, separators=(",", ":")).encode() if body is not None else None)
        attempt = 0
        maybe_applied = False  # could any attempt so far have been applied?
        while True:
            attempt += 1
            deadline = self._deadline(started)
            try:
                await self.limiter.acquire(deadline)
            except StoreError as exc:
                exc.maybe_applied = maybe_applied
                raise
            headers: httpx.Headers | None = None
            failure: RetryableError
            try:
                async with asyncio.timeout(max(0.0, min(self.retry.timeout_s,
                                                        deadline - time.monotonic()))):
                    response = await self._http.request(
                        method, (self.root if path.startswith("/v2/") else self.base) + path,
                        content=content, params=params,
                        headers={"X-Auth-Token": self._token.reveal()},
                        extensions=_written_out_trace(self._traced))
                headers = response.headers
                self.requests_sent += 1
                self._raise_for_status(response, attempt)
                self._last_progress = time.monotonic()
                return response, attempt
            except Refused:
                self._last_progress = time.monotonic()  # a definitive answer
                raise
            except FatalError as exc:
                exc.maybe_applied = maybe_applied
                raise
            except RetryableError as exc:
                failure = exc
                maybe_applied = maybe_applied or exc.status != 429
            except TimeoutError:
                self.requests_sent += 1
                maybe_applied = True
                failure = RetryableError(f"no complete answer in time (retry.timeout_s = "
                                         f"{self.retry.timeout_s:g} s)")
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self.requests_sent += 1  # tried, though nothing reached the store
                failure = RetryableError(f"{type(exc).__name__} talking to the store: "
                                         f"{redact(str(exc))[:200]}")
            except (httpx.TimeoutException, httpx.NetworkError,
                    httpx.RemoteProtocolError) as exc:
                self.requests_sent += 1
                maybe_applied = True
                failure = RetryableError(f"{type(exc).__name__} talking to the store")
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
                # Anything else httpx can raise (a bad URL or scheme, a local protocol
                # error, an undecodable body): the same again will not help. Its text may
                # quote a header, so only its kind is told.
                if isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects):
                    maybe_applied = True  # the store answered: it may have applied a write
                raise self._fatal(StoreError(
                    f"{method} {path} could not be sent to {self.base.split('/stores/')[0]}: "
                    f"{type(exc).__name__}"), maybe_applied) from None
            finally:
                await self.limiter.release(headers)
            now = time.monotonic()
            deadline = self._deadline(started)
            asked = failure.wait_s
            wait = max(min(asked, self.retry.max_wait_s), self.retry.backoff(attempt, self._rng))
            if attempt >= self.retry.max_attempts or now + wait >= deadline:
                why = ""
                if asked > 0 and now + min(asked, self.retry.max_wait_s) >= deadline:
                    why = (f"; the store asked to wait {asked:,.0f} s, more than the "
                           f"{max(deadline - now, 0):.0f} s left (retry.max_total_s = "
                           f"{self.retry.max_total_s:g} s without progress)")
                raise self._fatal(StoreError(
                    f"the store kept failing: {method} {path} gave up after {attempt} attempts "
                    f"in {now - started:.0f} s (last: {failure}){why}"), maybe_applied)
            if failure.status == 429:
                await self.limiter.block(wait)
            if self._on_retry:
                self._on_retry({"method": method, "path": path, "attempt": attempt,
                                "status": failure.status, "wait_s": round(wait, 3),
                                "error": str(failure)})
            log.info("retrying %s %s in %.2f s after %s (attempt %d)", method, path, wait,
                     failure, attempt)
            await asyncio.sleep(wait)

    @staticmethod
    def _fatal(exc: FatalError, maybe_applied: bool) -> FatalError:
        exc.maybe_applied = maybe_applied
        return exc

    def _raise_for_status(self, response: httpx.Response, attempt: int) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if status == 401:
            raise AuthError("the store refused the access token (HTTP 401): check "
                            "BIGCOMMERCE_ACCESS_TOKEN and the store hash")
        if status == 403:
            raise AuthError("the access token lacks a scope this needs (HTTP 403): it needs "
                            "store_inventory (modify) and store_locations_read_only")
        if status == 429:
            self.responses_429 += 1
            retry_after = _int_header(response.headers, "x-retry-after") or 0
            reset_ms = _int_header(response.headers, "x-rate-limit-time-reset-ms") or 0
            raise RetryableError("HTTP 429 Too Many Requests", status=429,
                                 wait_s=max(retry_after, reset_ms / 1000, 0))
        if status in (500, 502, 503, 504) or status == 408:
            raise RetryableError(f"HTTP {status}", status=status)
        title, errors = _problem(response)
        where = f"{response.request.method} {_path(response)}"
        if status == 422 and response.request.method == "PUT":
            raise Refused(title, errors, attempt)
        # A read the store refuses (422 included) is a failed run, not a rejected row.
        raise StoreError(f"unexpected HTTP {status} from {where}: {title}")


def _path(response: httpx.Response) -> str:
    """The request's path below ``/v3`` (the store hash left out)."""
    path = response.request.url.path
    return "/" + path.split("/v3/", 1)[1] if "/v3/" in path else path


def whole_number(value: Any) -> int:
    """A whole number from JSON (``12``, ``12.0``, ``"12"``); ValueError/TypeError otherwise."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(f"not a whole number: {type(value).__name__}")


def _json(response: httpx.Response, what: str) -> Any:
    """The answer's JSON, or :class:`StoreError` naming what was asked."""
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise StoreError(f"{what}: the store answered HTTP {response.status_code} with "
                         f"something that is not JSON ({redact(kind)[:60]})") from None


def _problem(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    """The title (redacted, one line) and ``errors`` of a problem answer."""
    try:
        payload = response.json()
    except (ValueError, UnicodeDecodeError):
        return _one_line(response.text), {}
    if not isinstance(payload, dict):
        return _one_line(str(payload)), {}
    errors = payload.get("errors")
    return _one_line(str(payload.get("title") or payload.get("detail") or "")), (
        errors if isinstance(errors, dict) else {})


def _one_line(text: str, limit: int = 300) -> str:
    """Store text made safe to keep: redacted, whitespace runs as one space, bounded."""
    return " ".join(redact(text).split())[:limit]
