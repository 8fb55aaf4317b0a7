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
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from pipeline.errors import AuthError, Refused, RetryableError, StoreError
from pipeline.limits import MAX_ITEMS_PER_REQUEST, MAX_PAGE_SIZE, RetryPolicy
from pipeline.validate import Location

log = logging.getLogger("invsync.client")

__all__ = ["MAX_ITEMS_PER_REQUEST", "MAX_PAGE_SIZE", "PutResult", "RateLimiter", "Refused",
           "RetryPolicy", "StoreClient"]



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
    wait for the reset instead of running into 429s.
    """

    margin_s: float = 0.05
    left: int | None = None
    reset_at: float = 0.0
    in_flight: int = 0
    blocked_until: float = 0.0
    waited_s: float = 0.0
    _cond: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def acquire(self) -> None:
        """Wait until a request may be sent without exceeding the quota."""
        async with self._cond:
            while True:
                now = time.monotonic()
                wait = 0.0
                if self.blocked_until > now:
                    wait = self.blocked_until - now
                elif self.left is not None and self.left - self.in_flight <= 0:
                    if self.reset_at > now:
                        wait = self.reset_at - now
                    else:
                        self.left = None  # a new window: unknown until the next answer
                if wait <= 0:
                    self.in_flight += 1
                    return
                self.waited_s += wait
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), timeout=wait)

    async def release(self, headers: httpx.Headers | None) -> None:
        """Record the quota the store reported in an answer (or none, on failure)."""
        async with self._cond:
            self.in_flight -= 1
            if headers is not None:
                left = _int_header(headers, "x-rate-limit-requests-left")
                reset_ms = _int_header(headers, "x-rate-limit-time-reset-ms")
                window_ms = _int_header(headers, "x-rate-limit-time-window-ms") or 30000
                if left is not None and reset_ms is not None:
                    reset_at = time.monotonic() + reset_ms / 1000 + self.margin_s
                    same_window = abs(reset_at - self.reset_at) < window_ms / 4000
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
            self.blocked_until = max(self.blocked_until, time.monotonic() + seconds)
            self.left = None


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


class StoreClient:
    """The store's inventory API, used as ``async with StoreClient(...) as client``."""

    def __init__(
        self,
        api_url: str,
        store_hash: str,
        token: str,
        *,
        concurrency: int = 4,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify_tls: bool = True,
        seed: int | None = None,
        on_retry: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.base = f"{api_url.rstrip('/')}/stores/{store_hash}/v3"
        self.retry = retry or RetryPolicy()
        self.limiter = RateLimiter()
        self._rng = random.Random(seed)
        self._on_retry = on_retry
        self.requests_sent = 0
        self.responses_429 = 0
        self._http = httpx.AsyncClient(
            headers={"X-Auth-Token": token, "Accept": "application/json",
                     "Content-Type": "application/json", "User-Agent": "invsync/0.1"},
            timeout=httpx.Timeout(self.retry.timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=max(concurrency, 1) + 1,
                                max_keepalive_connections=max(concurrency, 1) + 1),
            transport=transport,
            verify=verify_tls,
        )

    async def __aenter__(self) -> StoreClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def put_absolute(self, items: list[dict[str, Any]], reason: str | None) -> PutResult:
        """Set absolute levels for up to 2000 items; raises :class:`Refused` on a 422."""
        if len(items) > MAX_ITEMS_PER_REQUEST:
            raise ValueError(f"at most {MAX_ITEMS_PER_REQUEST} items per request")
        body: dict[str, Any] = {"items": items}
        if reason:
            body["reason"] = reason
        response, attempts = await self._request("PUT", "/inventory/adjustments/absolute", body)
        try:
            txid = response.json()["transaction_id"]
        except (ValueError, KeyError, TypeError):
            txid = None
        # null, "" or a non-scalar is no confirmation: the write's fate is unknown.
        if isinstance(txid, bool) or not isinstance(txid, str | int) or not str(txid).strip():
            raise StoreError(
                f"the store accepted a write but sent no transaction_id "
                f"(HTTP {response.status_code})"
            )
        return PutResult(transaction_id=str(txid), attempts=attempts)

    async def get_locations(self) -> list[Location]:
        """Every location of the store (all pages)."""
        out = []
        async for entry in self._pages("/inventory/locations", {}):
            out.append(Location(id=int(entry["id"]), code=str(entry.get("code") or ""),
                                enabled=bool(entry.get("enabled", True)),
                                label=str(entry.get("label") or "")))
        return out

    async def iter_items(self, location_ids: list[int]) -> Any:
        """Yield ``GET /inventory/items`` entries (identity + per-location levels), paged."""
        params = {"location_id:in": ",".join(str(i) for i in sorted(location_ids))}
        async for entry in self._pages("/inventory/items", params):
            yield entry

    async def _pages(self, path: str, params: dict[str, str]) -> Any:
        page = 1
        while True:
            query = {**params, "page": str(page), "limit": str(MAX_PAGE_SIZE)}
            response, _ = await self._request("GET", path, None, params=query)
            payload = response.json()
            yield_from = payload.get("data") or []
            for entry in yield_from:
                yield entry
            pagination = (payload.get("meta") or {}).get("pagination") or {}
            total_pages = int(pagination.get("total_pages") or 1)
            if page >= total_pages or not yield_from:
                return
            page += 1

    async def _request(
        self, method: str, path: str, body: Any, params: dict[str, str] | None = None
    ) -> tuple[httpx.Response, int]:
        """Send with retries; return the final 2xx answer and the attempts it took."""
        started = time.monotonic()
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire()
            headers: httpx.Headers | None = None
            try:
                response = await self._http.request(method, self.base + path,
                                                    content=content, params=params)
                headers = response.headers
                self.requests_sent += 1
                self._raise_for_status(response, attempt)
                return response, attempt
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                self.requests_sent += 1
                failure = RetryableError(f"{type(exc).__name__} talking to the store")
            except RetryableError as exc:
                failure = exc
            finally:
                await self.limiter.release(headers)
            elapsed = time.monotonic() - started
            if attempt >= self.retry.max_attempts or elapsed >= self.retry.max_total_s:
                raise StoreError(
                    f"the store kept failing: {method} {path} gave up after {attempt} attempts "
                    f"in {elapsed:.0f} s (last: {failure})"
                )
            wait = max(failure.wait_s, self.retry.backoff(attempt, self._rng))
            if failure.status == 429:
                await self.limiter.block(wait)
            if self._on_retry:
                self._on_retry({"method": method, "path": path, "attempt": attempt,
                                "status": failure.status, "wait_s": round(wait, 3),
                                "error": str(failure)})
            log.info("retrying %s %s in %.2f s after %s (attempt %d)", method, path, wait,
                     failure, attempt)
            await asyncio.sleep(wait)

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
                                 wait_s=max(retry_after, reset_ms / 1000))
        if status in (500, 502, 503, 504) or status == 408:
            raise RetryableError(f"HTTP {status}", status=status)
        if status == 422:
            title, errors = _problem(response)
            raise Refused(title, errors, attempt)
        title, _ = _problem(response)
        raise StoreError(f"unexpected HTTP {status} from {response.request.method} "
                         f"{response.request.url.path}: {title}")


def _problem(response: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300], {}
    if not isinstance(payload, dict):
        return str(payload)[:300], {}
    errors = payload.get("errors")
    return str(payload.get("title") or payload.get("detail") or ""), (
        errors if isinstance(errors, dict) else {})
