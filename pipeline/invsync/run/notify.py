"""Webhook notifications after a run (the ``[notify]`` section of the config).

The CLI calls :func:`notify_run` once a run's folder is complete, so the message carries
the final counts and points at a report that exists. A notification that cannot be
delivered never changes the run's outcome or exit code: it is noted in ``report.json``
(rewritten atomically) and on stderr. Messages hold only the run's summary and counts,
never the access token; a webhook URL (often a secret itself) is named only by its host.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from invsync.errors import UsageError
from invsync.stages.report import RunReport, summary_line

log = logging.getLogger("invsync.notify")

EVENTS = ("failed", "interrupted", "brake", "partial", "succeeded", "status_changed",
          "stale_file")
"""What ``on`` may list. ``rejected_share`` and ``volume_drop`` fire when their threshold is set."""
DEFAULT_ON = ("failed", "interrupted", "brake", "stale_file")
_KEYS = {"url", "urls", "on", "rejected_share", "volume_drop", "timeout_s", "attempts"}


def notify_config(section: dict[str, Any]) -> dict[str, Any]:
    """The checked ``[notify]`` section with defaults; raise :class:`UsageError` if it is bad."""
    unknown = set(section) - _KEYS
    if unknown:
        raise UsageError(f"[notify]: unknown key(s) {', '.join(sorted(unknown))}")
    urls = section.get("urls", [])
    urls = [urls] if isinstance(urls, str) else list(urls)
    if section.get("url"):
        urls.insert(0, section["url"])
    if not urls or not all(isinstance(u, str) and u.startswith(("http://", "https://"))
                           for u in urls):
        raise UsageError("[notify]: give url = \"https://...\" or urls = [...] (http or https)")
    on = section.get("on", list(DEFAULT_ON))
    on = [on] if isinstance(on, str) else list(on)
    bad = [e for e in on if e not in EVENTS]
    if bad:
        raise UsageError(f"[notify] on: unknown event(s) {', '.join(map(str, bad))} "
                         f"(known: {', '.join(EVENTS)})")
    out: dict[str, Any] = {"urls": urls, "on": on}
    for key in ("rejected_share", "volume_drop"):
        value = section.get(key)
        if value is not None:
            if not isinstance(value, int | float) or not 0 <= value <= 1:
                raise UsageError(f"[notify] {key} must be a share between 0 and 1")
            out[key] = float(value)
    try:
        out["timeout_s"] = float(section.get("timeout_s", 10))
        out["attempts"] = int(section.get("attempts", 3))
    except (TypeError, ValueError):
        raise UsageError("[notify] timeout_s and attempts must be numbers") from None
    if out["timeout_s"] <= 0 or not 1 <= out["attempts"] <= 10:
        raise UsageError("[notify] timeout_s must be positive and attempts 1 to 10")
    return out


def events_for(report: RunReport, cfg: dict[str, Any],
               previous: dict[str, Any] | None,
               previous_same_source: dict[str, Any] | None) -> list[str]:
    """The events of ``report`` that ``cfg`` asks to be told about (dry runs: none).

    ``previous`` is the report of the previous run of the same store and profile,
    ``previous_same_source`` that of the previous run that read the same input path.
    """
    if report.status == "dry_run":
        return []
    on = set(cfg["on"])
    found: list[str] = []
    if report.brakes or report.exit_code == 3:
        found.append("brake")
    elif report.status == "failed":
        found.append("failed")
    elif report.status in ("partial", "succeeded"):
        found.append(report.status)
    if report.resumed_from or any(n.startswith("took over the lock") for n in report.notes):
        found.append("interrupted")
    if previous is not None and previous.get("status") != report.status:
        found.append("status_changed")
    events = [e for e in found if e in on]
    c = report.counts
    share = cfg.get("rejected_share")
    if share is not None and c.rows and c.rejected / c.rows > share:
        events.append("rejected_share")
    drop = cfg.get("volume_drop")
    if drop is not None and previous_same_source is not None:
        before = int((previous_same_source.get("counts") or {}).get("rows") or 0)
        if before and c.rows < drop * before:
            events.append("volume_drop")
    return events


def _previous_runs(report: RunReport) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The previous real run of this store and profile, and of this input path."""
    from invsync.state.history import list_runs

    folder = Path(report.report_dir)
    store = report.store or {}
    earlier = [r.report for r in list_runs(folder.parent, store.get("store_hash"))
               if r.run_id < report.run_id and r.report.get("status") != "dry_run"
               and (r.report.get("store") or {}).get("profile") == store.get("profile")]
    path = (report.input or {}).get("path")
    same = [r for r in earlier if (r.get("input") or {}).get("path") == path]
    return (earlier[0] if earlier else None), (same[0] if same else None)


def payload(report: RunReport, events: list[str]) -> dict[str, Any]:
    """The JSON body: Slack/Teams ``text`` plus structured fields."""
    line = summary_line(report)
    profile = (report.store or {}).get("profile")
    where = f"[{profile}] " if profile else ""
    text = f"{where}{events[0]}: {line}"
    if report.error:
        text += f"\nerror: {report.error}"
    text += f"\nreport: {Path(report.report_dir) / 'report.html'}"
    return {
        "text": text, "event": events[0], "events": events, "run_id": report.run_id,
        "profile": profile, "store_hash": (report.store or {}).get("store_hash"),
        "status": report.status, "exit_code": report.exit_code,
        "counts": report.counts.__dict__, "error": report.error,
        "report_dir": report.report_dir, "summary": line,
    }


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def post(url: str, body: dict[str, Any], *, timeout_s: float, attempts: int) -> str | None:
    """POST ``body`` with bounded retries; None when delivered, else why not."""
    import httpx

    data = json.dumps(body, default=str).encode()
    problem = "not sent"
    for attempt in range(1, attempts + 1):
        try:
            response = httpx.post(url, content=data, timeout=timeout_s,
                                  headers={"Content-Type": "application/json"})
            if response.status_code < 300:
                return None
            problem = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                return problem  # the receiver refused this body: resending will not help
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        if attempt < attempts:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
    return f"{problem} after {attempts} attempt(s)"


def notify_run(report: RunReport, settings: Any) -> list[str]:
    """Send the notifications ``settings.notify`` asks for; return the delivery problems.

    Problems are also appended to the report's notes and ``report.json`` is rewritten; the
    run's status and exit code are never changed.
    """
    cfg = notify_config(settings.notify)
    events = events_for(report, cfg, *_previous_runs(report))
    if not events:
        return []
    body = payload(report, events)
    problems = []
    for url in cfg["urls"]:
        problem = post(url, body, timeout_s=cfg["timeout_s"], attempts=cfg["attempts"])
        if problem:
            problems.append(f"notification ({events[0]}) to {_host(url)} failed: {problem}")
        else:
            log.info("notified %s of %s", _host(url), ", ".join(events))
    if problems:
        from invsync.disk import write_atomic

        report.notes.extend(problems)
        path = Path(report.report_dir) / "report.json"
        write_atomic(path, json.dumps(report.to_dict(), indent=2, ensure_ascii=False).encode())
    return problems
