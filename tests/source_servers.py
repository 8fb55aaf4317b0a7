"""Real servers for the source tests, each a process on 127.0.0.1 that prints ``PORT n``.

    python source_servers.py sftp ROOT USER PASSWORD HOST_KEY_FILE
    python source_servers.py ftp ROOT USER PASSWORD [CERT KEY]   (with CERT: FTPS)
    python source_servers.py s3
    python source_servers.py https ROOT CERT KEY LOG [TOKEN]
    python source_servers.py hang

sftp is asyncssh's server (chrooted to ROOT), ftp pyftpdlib, s3 moto in server mode, https
a small file server with ETag/Last-Modified (and 304s), which with TOKEN answers 401 to a
request without ``Authorization: Bearer TOKEN``; hang accepts connections and never answers.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _say_port(port: int) -> None:
    print(f"PORT {port}", flush=True)


def sftp(root: str, user: str, password: str, key_file: str) -> None:
    import asyncssh

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, given: str) -> bool:
            return username == user and given == password

    async def main() -> None:
        key = asyncssh.read_private_key(key_file)
        server = await asyncssh.create_server(
            Server, "127.0.0.1", 0, server_host_keys=[key],
            sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=root.encode()))
        _say_port(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def ftp(root: str, user: str, password: str, cert: str = "", key: str = "") -> None:
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import FTPServer

    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, root, perm="elradfmwMT")
    handler = FTPHandler
    if cert:  # FTPS (explicit, AUTH TLS), the data connection protected too
        from pyftpdlib.handlers import TLS_FTPHandler

        handler = TLS_FTPHandler
        handler.certfile, handler.keyfile = cert, key
        handler.tls_control_required = handler.tls_data_required = True
    handler.authorizer = authorizer
    server = FTPServer(("127.0.0.1", 0), handler)
    _say_port(server.address[1])
    server.serve_forever()


def s3() -> None:
    from moto.server import ThreadedMotoServer

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _say_port(port)
    while True:
        time.sleep(3600)


def https(root: str, cert: str, key: str, log: str, token: str = "") -> None:
    import ssl

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                self._answer(401, b"no")
                return
            path = Path(root) / self.path.split("?")[0].lstrip("/")
            if not path.is_file():
                self._answer(404, b"missing")
                return
            data = path.read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            modified = email.utils.formatdate(path.stat().st_mtime, usegmt=True)
            if self.headers.get("If-None-Match") == etag:
                self._answer(304, b"", etag=etag, modified=modified)
                return
            self._answer(200, data, etag=etag, modified=modified)

        def _answer(self, status: int, body: bytes, etag: str = "", modified: str = "") -> None:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"{self.command} {self.path} {status}\n")
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", modified)
            self.send_header("Content-Length", str(len(body)) if status != 304 else "0")
            self.end_headers()
            if status != 304 and self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    _say_port(server.server_address[1])
    server.serve_forever()


def hang() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    _say_port(listener.getsockname()[1])
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # accepted, never answered


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    {"sftp": sftp, "ftp": ftp, "s3": s3, "https": https, "hang": hang}[kind](*args)
