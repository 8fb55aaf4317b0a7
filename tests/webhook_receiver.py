"""A tiny webhook receiver for tests: ``python webhook_receiver.py OUT.jsonl [STATUS]``.

Listens on 127.0.0.1 on a free port, prints ``listening on http://127.0.0.1:PORT``, and
appends every POST body (decoded JSON, or the raw text) as one line to OUT.jsonl, then
answers STATUS (default 200).
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

OUT = Path(sys.argv[1])
STATUS = int(sys.argv[2]) if len(sys.argv) > 2 else 200


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
        self.send_response(STATUS)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
