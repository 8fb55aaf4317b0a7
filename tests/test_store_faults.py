"""A misbehaving store never hangs a run, never leaks the token, never ends in a traceback.

The real CLI (a child process) against a real sandbox process, with a small misbehaving
server (``tests/misbehaving.py``) in front of it or in its place: reads the store refuses,
tokens it refuses, waits it asks for that never end, pagination that never ends, bodies that
drip, pages of HTML, error bodies that echo the token back.
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from conftest import (
    SAMPLE,
    TOKEN,
    CliResult,
    env_at,
    env_for,
    output,
    retry_config,
    run_invsync,
    state_store_dir,
)
from misbehaving import Reply, Request, misbehaving_store

from invsync.sandbox.process import SandboxProcess

Factory = Callable[..., SandboxProcess]
NIGHT1 = SAMPLE / "night1.csv"
NIGHT2 = SAMPLE / "night2.csv"


FAST = {"max_attempts": 10, "base_delay_s": 0.02, "max_delay_s": 0.2, "max_total_s": 5.0,
        "timeout_s": 2.0}


def fast_config(directory: Path, **retry: float) -> Path:
    """conftest's :func:`retry_config` with this file's defaults (``FAST``)."""
    return retry_config(directory, **{**FAST, **retry})


def one_clean_error(result: CliResult) -> str:
    """The run's error line; no traceback anywhere."""
    text = output(result)
    assert "Traceback" not in text, text
    errors = [line for line in result.stderr.splitlines() if line.startswith("invsync: ")]
    assert errors, text
    return errors[-1]


def small_stock(path: Path, n: int = 5) -> Path:
    with (SAMPLE / "catalog.csv").open(encoding="utf-8") as fh:
        skus = [r["sku"] for r in csv.DictReader(fh) if r["tracking"] != "none"][:n]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sku", "location_id", "quantity"])
        for i, sku in enumerate(skus):
            w.writerow([sku, 1, 10 + i])
    return path


def problem(title: str) -> Reply:
    return Reply.json(422, {"status": 422, "title": title, "type": "x", "errors": {}},
                      **{"Content-Type": "application/problem+json"})


# ---- 6. a read the store refuses is a failed run -----------------------------------------


def test_a_read_refused_with_422_fails_every_command_with_exit_2_and_a_report(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    refuse: set[str] = set()

    def respond(req: Request) -> Reply | None:
        if req.method == "GET" and req.path in refuse:
            return problem(f"Invalid value for filter on {req.path}")
        return None

    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        first = run_invsync(["sync", str(NIGHT1)], env)
        assert first.returncode == 0, output(first)
        run_dir = first.report_dir()

        refuse.add("/inventory/items")
        drift = run_invsync(["drift"], env)
        assert drift.returncode == 2, output(drift)
        assert "HTTP 422" in one_clean_error(drift)

        verify = run_invsync(["verify", run_dir.name], env)
        assert verify.returncode == 2, output(verify)
        assert "GET /inventory/items" in one_clean_error(verify)
        recorded = json.loads((run_dir / "verify.json").read_text())
        assert recorded["status"] == "failed" and "HTTP 422" in recorded["error"]

        for command in ("sync", "plan"):
            result = run_invsync([command, str(NIGHT2), "--baseline", "live"], env)
            assert result.returncode == 2, (command, output(result))
            report = result.report()
            assert report["status"] == "failed" and report["exit_code"] == 2
            assert "GET /inventory/items" in report["error"] and "422" in report["error"]

        refuse.add("/inventory/locations")
        result = run_invsync(["sync", str(NIGHT2)], env)
        assert result.returncode == 2, output(result)
        assert "GET /inventory/locations" in result.report()["error"]
        assert not [r for r in store.requests if r.method == "PUT"][-1:] or \
            len(store.paths("PUT")) == 2  # night1's two batches only: nothing sent since


# ---- 7. a token the store refuses, a missing store hash ----------------------------------


def test_plan_with_a_refused_token_fails_like_sync(sandbox: SandboxProcess,
                                                   tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path, token="not-the-" + TOKEN)
    for command in ("plan", "sync"):
        result = run_invsync([command, str(NIGHT1)], env)
        assert result.returncode == 2, (command, output(result))
        report = result.report()
        assert report["status"] == "failed" and "HTTP 401" in report["error"]


def test_a_missing_store_hash_is_exit_64_before_any_request(sandbox: SandboxProcess,
                                                            tmp_path: Path) -> None:
    env = env_for(sandbox, tmp_path)
    del env["BIGCOMMERCE_STORE_HASH"]
    commands = [["plan", str(NIGHT1)], ["sync", str(NIGHT1)], ["sync", str(NIGHT1), "--dry-run"],
                ["sync", str(NIGHT1), "--baseline", "live", "--dry-run"], ["drift"],
                ["verify", "last"]]
    for args in commands:
        result = run_invsync(args, env, timeout=60)
        assert result.returncode == 64, (args, output(result))
        assert "store hash" in output(result) and "Traceback" not in output(result)
    assert sandbox.requests() == []


# ---- 8. waits the store asks for are bounded; so is the run -------------------------------


def test_a_429_asking_to_wait_100000_s_fails_the_run_in_time(sandbox: SandboxProcess,
                                                             tmp_path: Path) -> None:
    def respond(req: Request) -> Reply:
        return Reply.json(429, {"title": "Too many requests"}, **{"X-Retry-After": "100000"})

    with misbehaving_store(respond) as store:
        env = env_at(store.url, tmp_path, sandbox)
        # timeout: cannot hang (the store asks for 100,000 s; max_total_s is 5)
        result = run_invsync(["sync", str(NIGHT1), "--config", str(fast_config(tmp_path))], env,
                             timeout=60)
        asked = len(store.requests)
    assert result.returncode == 2, output(result)
    assert "asked to wait 100,000 s" in result.report()["error"]
    assert asked == 1, "a wait longer than max_total_s is not waited: no second request"


def test_a_quota_reset_900000_s_away_stops_the_run_with_what_was_confirmed_recorded(
        sandbox: SandboxProcess, tmp_path: Path) -> None:
    stuck = {"on": True}

    def respond(req: Request) -> Reply | None:
        if req.method == "PUT" and stuck["on"]:
            def alter(reply: Reply) -> Reply:
                reply.set_header("X-Rate-Limit-Requests-Left", "0")
                reply.set_header("X-Rate-Limit-Time-Reset-Ms", "900000000")
                return reply
            req.alter = alter
        return None

    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        config = fast_config(tmp_path)
        args = ["sync", str(NIGHT1), "--config", str(config), "--batch-size", "1000",
                "--concurrency", "1"]
        result = run_invsync(args, env, timeout=60)  # cannot hang: the reset is 10 days away
        assert result.returncode == 2, output(result)
        report = result.report()
        assert "rate limit asks to wait" in report["error"]
        assert report["counts"]["accepted"] == 1000 and report["counts"]["unconfirmed"] == 0
        snapshot = pl.read_parquet(state_store_dir(tmp_path / "state") / "snapshot.parquet")
        assert snapshot.height == 1000
        assert len(store.paths("PUT")) == 1

        stuck["on"] = False
        again = run_invsync(args, env, timeout=120)
        assert again.returncode == 0, output(again)
        # What the store does not hold yet: not the 1000 confirmed, nor the 246 zeros.
        assert again.report()["counts"]["submitted"] == 3114 - 246 - 1000


def test_a_body_dripping_one_byte_a_second_fails_the_run_in_time(sandbox: SandboxProcess,
                                                                  tmp_path: Path) -> None:
    def respond(req: Request) -> Reply:
        return Reply(200, b'{"data": [', {"Content-Type": "application/json"}, drip_s=1.0,
                     endless=True)

    with misbehaving_store(respond) as store:
        env = env_at(store.url, tmp_path, sandbox)
        config = fast_config(tmp_path, timeout_s=2.0, max_total_s=6.0)
        # timeout: cannot hang (15x max_total_s; the body never ends)
        result = run_invsync(["sync", str(NIGHT1), "--config", str(config)], env, timeout=90)
    assert result.returncode == 2, output(result)
    assert "no complete answer in time" in result.report()["error"]


# ---- 9. pagination that never ends --------------------------------------------------------


def _entries(page: int) -> list[dict[str, Any]]:
    return [{"identity": {"sku": f"P{page}-{i}", "product_id": None, "variant_id": None},
             "locations": [{"location_id": 1, "total_inventory_onhand": i}]}
            for i in range(1000)]


@pytest.mark.parametrize(("fresh_pages", "total", "expected"), [
    (True, 3000, "more than plausible"),
    (False, None, "page 2 repeats page 1"),
])
def test_pagination_claiming_59766830_pages_fails_clearly(
        sandbox: SandboxProcess, tmp_path: Path, fresh_pages: bool, total: int | None,
        expected: str) -> None:
    def respond(req: Request) -> Reply | None:
        if req.method == "GET" and req.path == "/inventory/items":
            page = int(req.query["page"]) if fresh_pages else 1
            pagination: dict[str, Any] = {"total_pages": 59766830, "per_page": 1000,
                                          "current_page": int(req.query["page"])}
            if total is not None:
                pagination["total"] = total
            return Reply.json(200, {"data": _entries(page), "meta": {"pagination": pagination}})
        return None

    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        result = run_invsync(["plan", str(NIGHT1), "--baseline", "live"], env, timeout=90)
        pages = len([p for p in store.paths("GET") if p == "/inventory/items"])
    assert result.returncode == 2, output(result)
    assert pages <= 3, pages  # it stopped at once, not after 59,766,830 pages
    error = result.report()["error"]
    assert "GET /inventory/items" in error and expected in error, error


# ---- 15, 20. tokens that cannot be sent ---------------------------------------------------


def test_a_token_with_trailing_whitespace_works(sandbox: SandboxProcess, tmp_path: Path) -> None:
    result = run_invsync(["sync", str(small_stock(tmp_path / "s.csv"))],
                         env_for(sandbox, tmp_path, token=f"{TOKEN} \r\n\t"))
    assert result.returncode == 0, output(result)


@pytest.mark.parametrize("bad", ["\x07", "ä", "\x1b[2J"])
def test_a_token_with_a_control_or_non_ascii_character_is_exit_64_and_never_shown(
        sandbox: SandboxProcess, tmp_path: Path, bad: str) -> None:
    token = f"tok-{uuid.uuid4().hex}{bad}{uuid.uuid4().hex}"
    env = env_for(sandbox, tmp_path, token=token)
    for args in (["sync", str(NIGHT1)], ["plan", str(NIGHT1)], ["drift"]):
        result = run_invsync(args, env)
        assert result.returncode == 64, (args, output(result))
        line = one_clean_error(result)
        assert "access token" in line
        for part in token.split(bad):
            assert part[4:] not in output(result)
    assert sandbox.requests() == []


def test_an_api_url_with_a_bad_scheme_is_exit_64(sandbox: SandboxProcess,
                                                 tmp_path: Path) -> None:
    env = env_at("htp://127.0.0.1:9", tmp_path, sandbox)
    result = run_invsync(["sync", str(NIGHT1)], env)
    assert result.returncode == 64, output(result)
    assert "API URL" in one_clean_error(result)


# ---- 20. answers that are not JSON --------------------------------------------------------


def test_an_html_page_for_the_locations_is_a_failed_run(sandbox: SandboxProcess,
                                                        tmp_path: Path) -> None:
    def respond(req: Request) -> Reply:
        return Reply(200, b"<html><body><h1>Scheduled maintenance</h1></body></html>",
                     {"Content-Type": "text/html; charset=utf-8"})

    with misbehaving_store(respond) as store:
        env = env_at(store.url, tmp_path, sandbox)
        result = run_invsync(["sync", str(NIGHT1)], env)
        plan = run_invsync(["plan", str(NIGHT1)], env)
    for r in (result, plan):
        assert r.returncode == 2, output(r)
        error = r.report()["error"]
        assert "GET /inventory/locations" in error and "not JSON (text/html)" in error
        assert "Traceback" not in output(r)


# ---- 16. error bodies that echo the token -------------------------------------------------


def test_error_bodies_echoing_the_token_leave_it_in_no_report_log_or_output(
        sandbox_factory: Factory, tmp_path: Path) -> None:
    token = "tok-" + uuid.uuid4().hex
    sb = sandbox_factory(token=token)
    mode = {"echo": "put"}

    def dump(req: Request) -> str:
        return "; ".join(f"{k}: {v}" for k, v in req.headers.items()) + " " + json.dumps(
            req.headers)

    def respond(req: Request) -> Reply | None:
        if mode["echo"] == "put" and req.method == "PUT":
            return problem(f"Invalid request, you sent {dump(req)}")
        if mode["echo"] == "get" and req.method == "GET":
            return Reply(400, f"Bad request. Headers: {dump(req)}".encode(),
                         {"Content-Type": "text/plain", "X-Echo-Token": token})
        return None

    stock = small_stock(tmp_path / "s.csv")
    with misbehaving_store(respond, sb.url) as store:
        env = env_at(store.url, tmp_path, sb, token=token)
        refused = run_invsync(["-vv", "sync", str(stock)], env)
        assert refused.returncode == 1, output(refused)
        assert refused.report()["counts"]["refused"] == 5
        mode["echo"] = "get"
        failed = run_invsync(["-vv", "sync", str(stock)], env)
        assert failed.returncode == 2, output(failed)
        as_json = run_invsync(["--log-format", "json", "-vv", "sync", str(stock)], env)
        assert as_json.returncode == 2, output(as_json)
        assert any(token in r.headers.get("X-Auth-Token", "") for r in store.requests)
    assert "[redacted]" in failed.report()["error"]
    for result in (refused, failed, as_json):
        assert token not in output(result), output(result)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"report.json", "report.html", "summary.md", "rejected.csv"} <= {p.name
                                                                          for p in written}
    for path in written:
        assert token.encode() not in path.read_bytes(), f"the token leaked into {path}"


# ---- 21. batches the store refused for the token ------------------------------------------


def test_a_batch_refused_with_401_is_not_sent_not_unconfirmed(sandbox: SandboxProcess,
                                                              tmp_path: Path) -> None:
    refuse = {"on": True}

    def respond(req: Request) -> Reply | None:
        if req.method == "PUT" and refuse["on"]:
            return Reply.json(401, {"status": 401, "title": "Unauthorized"})
        return None

    stock = small_stock(tmp_path / "s.csv")
    with misbehaving_store(respond, sandbox.url) as store:
        env = env_at(store.url, tmp_path, sandbox)
        result = run_invsync(["sync", str(stock)], env)
        assert result.returncode == 2, output(result)
        report = result.report()
        counts = report["counts"]
        assert counts["unconfirmed"] == 0 and counts["not_sent"] == 5, counts
        assert counts["submitted"] == 0 and counts["refused"] == 0, counts
        assert report["batches"][0]["status"] == "failed"
        assert report["batches"][0]["not_applied"] == 5
        plan = pl.read_csv(result.report_dir() / "plan.csv")
        assert set(plan["status"].to_list()) == {"not_sent"}
        refuse["on"] = False
        again = run_invsync(["sync", str(stock)], env)
        assert again.returncode == 0, output(again)
        assert again.report()["counts"]["accepted"] == 5
        assert len(store.paths("PUT")) == 2
