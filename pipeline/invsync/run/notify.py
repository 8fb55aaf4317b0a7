"""Webhook notifications after a run (the ``[notify]`` section of the config).

The CLI calls :func:`notify_run` once a run's folder is complete, so the message carries
the final counts and points at a report that exists. A notification that cannot be
delivered never changes the run's outcome or exit code: it is noted in ``report.json``
(rewritten atomically) and on stderr. Messages hold only the run's summary and counts,
never the access token; a webhook URL (often a secret itself) is named only by its host,
in notes, messages and logs at every verbosity (the HTTP library's own log lines too).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from invsync.config_errors import usage_error_from
from invsync.errors import UsageError
from invsync.run.config import DEFAULT_ON, EVENTS, NotifySection
from invsync.stages.report import RunReport, summary_line
from invsync.store.limits import RetryPolicy

log = logging.getLogger("invsync.notify")

_THRESHOLDS = ("rejected_share", "volume_drop")


@dataclass(frozen=True)
class Hook:
    """One receiver and the events it is told about."""

    url: str
    on: tuple[str, ...]
    thresholds: bool
    """Also told of the threshold events (``urls``: always, as before hooks existed)."""


def notify_config(section: dict[str, Any]) -> dict[str, Any]:
    """The ``[notify]`` section checked (by :class:`~invsync.run.config.NotifySection`) with
    its defaults; raise :class:`UsageError` (exit 64) naming the key if it is bad."""
    from pydantic import ValidationError

    try:
        checked = NotifySection.model_validate(section)
    except ValidationError as exc:
        raise usage_error_from(exc, NotifySection, prefix=("notify",)) from None
    on = list(DEFAULT_ON) if checked.on is None else list(checked.on)
    urls = [checked.urls] if isinstance(checked.urls, str) else list(checked.urls or [])
    if checked.url:
        urls.insert(0, checked.url)
    hooks = [Hook(u, tuple(on), True) for u in urls]
    hooks += [Hook(h.url, tuple(DEFAULT_ON if h.on is None else h.on), False)
              for h in checked.hooks or []]
    if not hooks:
        raise UsageError('[notify]: give url = "https://...", urls = [...] or '
                         "[[notify.hooks]] tables (http or https)")
    out: dict[str, Any] = {"urls": [h.url for h in hooks], "on": on, "hooks": hooks}
    for key in _THRESHOLDS:
        if getattr(checked, key) is not None:
            out[key] = float(getattr(checked, key))
    out["timeout_s"] = float(10 if checked.timeout_s is None else checked.timeout_s)
    out["attempts"] = 3 if checked.attempts is None else checked.attempts
    out["report_base_url"] = checked.report_base_url
    for hook in hooks:
        _hide_url(hook.url)
    return out


def events_for(report: RunReport, cfg: dict[str, Any],
               previous: dict[str, Any] | None,
               previous_same_source: dict[str, Any] | None) -> list[str]:
    """Every event of ``report`` that some receiver of ``cfg`` may be told (dry runs: none).

    ``previous`` is the report of the last successful run of the same store and profile,
    ``previous_same_source`` that of the last successful run of the same source. Which
    receiver is told which of them is :func:`events_for_hook`.
    """
    if report.status == "dry_run":
        return []
    found: list[str] = []
    if report.brakes or report.exit_code == 3:
        found.append("brake")
    elif report.status in ("failed", "interrupted", "partial", "succeeded"):
        found.append(report.status)
    if report.resumed_from or any(n.startswith("took over the lock") for n in report.notes):
        found.append("resumed")
    if previous is not None and previous.get("status") != report.status:
        found.append("status_changed")
    c = report.counts
    share = cfg.get("rejected_share")
    if share is not None and c.rows and c.rejected / c.rows > share:
        found.append("rejected_share")
    drop = cfg.get("volume_drop")
    before = _rows(previous_same_source)
    if drop is not None and before and c.rows < drop * before:
        found.append("volume_drop")
    # The legacy answer: what the top-level `on` selects, plus the thresholds.
    return [e for e in found if e in cfg["on"] or e in _THRESHOLDS]


def events_for_hook(events: list[str], hook: Hook) -> list[str]:
    """The events one receiver is told of."""
    return [e for e in events if e in hook.on or (hook.thresholds and e in _THRESHOLDS)]


def _rows(report: dict[str, Any] | None) -> int:
    return int(((report or {}).get("counts") or {}).get("rows") or 0)


def _previous_runs(report: RunReport) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The last successful run of this store and profile, and of this run's source.

    A run that failed before reading its file (a 401, an outage) or a braked file says
    nothing about what a normal night looks like: only ``succeeded`` and ``partial``
    runs count.
    """
    from invsync.state.history import last_successful

    store = report.store or {}
    folder = Path(report.report_dir) if report.report_dir else None
    if folder is None:
        return None, None
    source = (report.input or {}).get("source"), (report.input or {}).get("path")
    return (last_successful(folder.parent, store.get("store_hash"), store.get("profile"),
                            before=report.run_id),
            last_successful(folder.parent, store.get("store_hash"), store.get("profile"),
                            before=report.run_id, source=source))


_WHY = {
    "failed": "the run failed", "interrupted": "the run was interrupted (SIGTERM/SIGINT)",
    "resumed": "this run finished an interrupted run", "brake": "a safety brake tripped",
    "partial": "some rows were rejected", "succeeded": "the run succeeded",
    "status_changed": "the outcome differs from the last successful run",
    "rejected_share": "the share of rejected rows is above [notify] rejected_share",
    "volume_drop": "the file has far fewer rows than the last good run of the same source "
                   "([notify] volume_drop)",
}


def report_link(report: RunReport, base_url: str | None) -> str:
    """Where the run's report is: a URL under ``report_base_url``, else the file path."""
    if base_url and report.report_dir:
        from urllib.parse import quote

        return f"{base_url.rstrip('/')}/{quote(Path(report.report_dir).name)}/report.html"
    return str(Path(report.report_dir) / "report.html") if report.report_dir else "-"


def alert_text(report: RunReport, events: list[str], *, last_good: dict[str, Any] | None,
               link: str) -> str:
    """The human message: store and profile, the numbers, why it fired, the report link."""
    store = report.store or {}
    profile = store.get("profile")
    where = f"store {store.get('store_hash') or '-'}" + (f", profile {profile}" if profile
                                                         else "")
    c = report.counts
    numbers = (f"{c.rows:,} rows, {c.accepted:,} updated, {c.rejected:,} rejected, "
               f"{c.refused:,} refused")
    before = _rows(last_good)
    if before:
        numbers += f"; last good run {before:,} rows"
    if report.resumed_from:
        numbers += f"; finished interrupted run {report.resumed_from}" + (
            " (it stopped before writing its report)" if report.resumed_from_no_report else "")
    why = "; ".join(_WHY[e] for e in events)
    details = [b.get("message", "") for b in report.brakes if isinstance(b, dict)]
    if report.error and not details:
        details.append(report.error)
    lines = [f"invsync {events[0]} ({where}): {report.status}, exit {report.exit_code}",
             numbers, f"why: {why}"]
    lines += [f"detail: {d}" for d in details if d]
    lines += [summary_line(report), f"report: {link}"]
    return "\n".join(lines)


def payload(report: RunReport, events: list[str], *, last_good: dict[str, Any] | None = None,
            base_url: str | None = None) -> dict[str, Any]:
    """The JSON body: Slack/Teams ``text`` plus structured fields."""
    line = summary_line(report)
    store = report.store or {}
    link = report_link(report, base_url)
    return {
        "text": alert_text(report, events, last_good=last_good, link=link),
        "event": events[0], "events": events, "run_id": report.run_id,
        "profile": store.get("profile"), "store_hash": store.get("store_hash"),
        "status": report.status, "exit_code": report.exit_code,
        "counts": report.counts.__dict__, "error": report.error,
        "report_dir": report.report_dir, "report_url": link, "summary": line,
        "resumed_from": report.resumed_from,
        "last_good_rows": _rows(last_good) or None,
    }


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


_hidden: dict[str, str] = {}
"""Each webhook URL and what stands for it in logs (its host)."""


class _HostOnly(logging.Filter):
    """Rewrites log records of the HTTP libraries that quote a webhook URL: host only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _hidden:
            return True
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot format is not ours to fix
            return True
        changed = text
        for url, host in _hidden.items():
            changed = changed.replace(url, host)
            path = url[len(host):]
            if len(path) > 1:
                changed = changed.replace(path, "/[redacted]")
        if changed != text:
            record.msg, record.args = changed, ()
        return True


_FILTER = _HostOnly()


def _hide_url(url: str) -> None:
    """Never log ``url`` beyond its host (httpx logs each request's URL at -v)."""
    host = _host(url)
    _hidden[url] = host
    for name in ("httpx", "httpcore", "httpcore.http11", "httpcore.connection", "asyncio"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    from invsync.redact import MIN_FREE_LENGTH, register

    secret = url[len(host):]
    if len(secret) >= MIN_FREE_LENGTH:
        register(secret)  # its path and query, wherever else it might turn up


async def _post_async(url: str, data: bytes, timeout_s: float) -> int:
    import httpx

    async with httpx.AsyncClient(timeout=timeout_s) as client:
        response = await client.post(url, content=data,
                                     headers={"Content-Type": "application/json"})
        return response.status_code


def _attempt(url: str, data: bytes, timeout_s: float) -> int:
    """One POST, bounded as a whole (connect, send and read): a receiver that drips its
    answer a byte at a time cannot hold the run longer than ``timeout_s``."""
    import asyncio

    def once() -> int:
        return asyncio.run(asyncio.wait_for(_post_async(url, data, timeout_s), timeout_s))

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return once()  # no loop in this thread (the CLI, a worker thread)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:  # called from inside an event loop
        return pool.submit(once).result()


WEBHOOK_DELAYS = RetryPolicy(base_delay_s=0.5, max_delay_s=5.0)
"""The store's retry policy with a webhook's delays: full jitter, each wait at most 0.5 s
doubled per attempt and never over 5 s (``attempts`` and ``timeout_s`` come from
``[notify]``)."""


def webhook_retry(attempts: int, timeout_s: float) -> RetryPolicy:
    """The retry policy of one webhook delivery: ``[notify] attempts`` and ``timeout_s``."""
    return replace(WEBHOOK_DELAYS, max_attempts=attempts, timeout_s=timeout_s)


def post(url: str, body: dict[str, Any], *, timeout_s: float, attempts: int,
         rng: random.Random | None = None,
         sleep: Callable[[float], None] = time.sleep) -> str | None:
    """POST ``body`` with bounded retries; None when delivered, else why not.

    Between attempts it waits :meth:`RetryPolicy.backoff` (jittered, as the store's
    requests do: receivers that failed together do not all get the retry at once).
    """
    import httpx

    policy = webhook_retry(attempts, timeout_s)
    rng = rng or random.Random()
    data = json.dumps(body, default=str).encode()
    problem = "not sent"
    for attempt in range(1, policy.max_attempts + 1):
        try:
            status = _attempt(url, data, policy.timeout_s)
            if status < 300:
                return None
            problem = f"HTTP {status}"
            if status < 500 and status != 429:
                return problem  # the receiver refused this body: resending will not help
        except TimeoutError:
            problem = f"no answer within {timeout_s:g} s"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt < policy.max_attempts:
            sleep(policy.backoff(attempt, rng))
    return f"{problem} after {attempts} attempt(s)"


def notify_run(report: RunReport, settings: Any) -> list[str]:
    """Send the notifications ``settings.notify`` asks for; return the delivery problems.

    Each receiver (``urls``, each ``[[notify.hooks]]``) is told only the events its ``on``
    lists. Problems are also appended to the report's notes and ``report.json`` is
    rewritten; the run's status and exit code are never changed.
    """
    cfg = notify_config(settings.notify)
    previous, same_source = _previous_runs(report)
    found = _all_events(report, cfg, previous, same_source)
    problems = []
    for hook in cfg["hooks"]:
        told = events_for_hook(found, hook)
        if not told:
            continue
        body = payload(report, told, last_good=same_source or previous,
                       base_url=cfg.get("report_base_url"))
        problem = post(hook.url, body, timeout_s=cfg["timeout_s"], attempts=cfg["attempts"])
        if problem:
            problems.append(f"notification ({told[0]}) to {_host(hook.url)} failed: {problem}")
        else:
            log.info("notified %s of %s", _host(hook.url), ", ".join(told))
    if problems:
        from invsync.disk import write_atomic

        report.notes.extend(problems)
        path = Path(report.report_dir) / "report.json"
        write_atomic(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False).encode())
    return problems


def _all_events(report: RunReport, cfg: dict[str, Any], previous: dict[str, Any] | None,
                same_source: dict[str, Any] | None) -> list[str]:
    """Every event of the run, whatever the top-level ``on`` (hooks choose their own)."""
    every = {**cfg, "on": list(EVENTS)}
    return events_for(report, every, previous, same_source)
