"""A tiny webhook receiver for tests: ``python webhook_receiver.py OUT.jsonl [STATUS] [drip]``.

Listens on 127.0.0.1 on a free port, prints ``listening on http://127.0.0.1:PORT``, and
appends every POST body (decoded JSON, or the raw text) as one line to OUT.jsonl, then
answers STATUS (default 200). With ``drip`` it answers one byte every 0.2 s, for ever
(a receiver that keeps a per-read timeout from ever firing).
"""

from __future__ import annotations

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

OUT = Path(sys.argv[1])
STATUS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
DRIP = len(sys.argv) > 3 and sys.argv[3] == "drip"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        try:
            record = {"path": self.path, "content_type": self.headers.get("Content-Type"),
                      "body": json.loads(body)}
        except ValueError:
            record = {"path": self.path, "raw": body}
        with OUT.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if DRIP:
            self._drip()
            return
        self.send_response(STATUS)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def _drip(self) -> None:
        head = f"HTTP/1.1 {STATUS} OK\r\nContent-Length: 100000\r\n\r\n".encode()
        try:
            for byte in head + b"." * 100000:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass  # the client gave up: what this receiver is for

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
