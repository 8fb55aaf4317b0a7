"""A small misbehaving store on 127.0.0.1: answers what a test decides, or forwards to a sandbox.

``MisbehavingStore(respond, upstream)`` runs an HTTP server in a thread of the test process.
For each request, ``respond(request)`` returns a :class:`Reply` (sent as is, optionally one
byte every ``drip_s`` seconds) or ``None`` to forward the request to ``upstream`` (a real
sandbox process); ``respond`` may also change the forwarded answer through ``request.alter``.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float | None = None
    """Send the body one byte every ``drip_s`` seconds (forever if ``endless``)."""
    endless: bool = False

    def set_header(self, name: str, value: str) -> None:
        """Set ``name`` (case-insensitively replacing what the upstream sent)."""
        self.headers = {k: v for k, v in self.headers.items() if k.lower() != name.lower()}
        self.headers[name] = value

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> Reply:
        return cls(status, json.dumps(payload).encode(),
                   {"Content-Type": "application/json", **headers})


@dataclass
class Request:
    method: str
    path: str
    """Below ``/stores/{hash}/v3`` (``/inventory/locations``)."""
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    alter: Callable[[Reply], Reply] | None = None


Respond = Callable[[Request], Reply | None]


class MisbehavingStore:
    """The server; ``url`` is its base URL, ``requests`` every request it got."""

    def __init__(self, respond: Respond, upstream: str | None = None) -> None:
        self.respond = respond
        self.upstream = upstream
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                path = url.path.split("/v3", 1)[1] if "/v3" in url.path else url.path
                req = Request(self.command, path, dict(parse_qsl(url.query)),
                              dict(self.headers.items()), body)
                store.requests.append(req)
                reply = store.respond(req)
                if reply is None:
                    reply = store.forward(self.command, self.path, req)
                    if req.alter is not None:
                        reply = req.alter(reply)
                self.send(reply)

            do_GET = do_PUT = do_POST = _any

            def send(self, reply: Reply) -> None:
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    length = 10**9 if reply.endless else len(reply.body)
                    self.send_header("Content-Length", str(length))
                    self.end_headers()
                    if reply.drip_s is None:
                        self.wfile.write(reply.body)
                        return
                    self.wfile.flush()
                    sent = 0
                    while not store.stopping.is_set() and (reply.endless
                                                           or sent < len(reply.body)):
                        chunk = reply.body[sent:sent + 1] or b" "
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        sent += 1
                        time.sleep(reply.drip_s)
                    self.close_connection = True
                except OSError:  # the client gave up: what this server is for
                    self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def forward(self, method: str, path: str, req: Request) -> Reply:
        assert self.upstream is not None, f"nothing to forward {method} {path} to"
        target = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("host", "content-length", "connection")}
            conn.request(method, path, body=req.body or None, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            kept = {k: v for k, v in resp.getheaders()
                    if k.lower() not in ("content-length", "connection", "transfer-encoding",
                                         "date", "server")}
            return Reply(resp.status, body, kept)
        finally:
            conn.close()

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]


@contextmanager
def misbehaving_store(respond: Respond, upstream: str | None = None
                      ) -> Iterator[MisbehavingStore]:
    """Run a :class:`MisbehavingStore` for the ``with`` block, then stop it."""
    store = MisbehavingStore(respond, upstream)
    store.thread.start()
    try:
        yield store
    finally:
        store.stopping.set()
        store.server.shutdown()
        store.server.server_close()
        store.thread.join(timeout=10)


class HoldPuts:
    """A responder for :func:`misbehaving_store`: while armed, it forwards the first ``let``
    PUTs and holds each later one until :meth:`stop` (then answers it 503, never forwarded):
    a write in flight that never lands. Reads always pass.

    With ``apply``, a held PUT is forwarded first (the store applies it) and only its answer
    is held: a write the store applied that its sender never hears about.
    """

    def __init__(self, let: int = 1, *, armed: bool = True, apply: bool = False) -> None:
        self.let, self.armed, self.apply = let, armed, apply
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._puts = 0

    def __call__(self, req: Request) -> Reply | None:
        if req.method != "PUT" or not self.armed:
            return None
        with self._lock:
            self._puts += 1
            mine = self._puts
        if mine <= self.let:
            return None
        if self.apply:
            req.alter = self._hold_answer
            return None
        self._hold()
        return Reply.json(503, {"title": "held by the test, never forwarded"})

    def _hold(self) -> None:
        self.held.set()
        self.release.wait(timeout=120)

    def _hold_answer(self, reply: Reply) -> Reply:
        self._hold()
        return Reply.json(503, {"title": "applied, but its answer was held by the test"})

    def stop(self) -> None:
        """Answer the held PUTs (503) and forward every later request."""
        self.armed = False
        self.release.set()
