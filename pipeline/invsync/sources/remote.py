"""Where the file lives: a local folder, an fsspec file system (SFTP, FTP, S3, GCS, Azure)
or an HTTP(S) URL, behind one small interface: list, stat, read, move, delete.

Every network wait is bounded by the source's ``timeout_s``. Failures become
:class:`~invsync.sources.errors.SourceError` (exit 2) with a message that names the source
without its password; a missing backend becomes a message naming the extra to install.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import errno
import fnmatch
import glob
import hashlib
import logging
import os
import posixpath
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from invsync.disk import make_private_dir, open_nofollow, write_atomic
from invsync.redact import redact, redact_url
from invsync.sources.errors import CopyNotKeptError, MissingExtraError, SourceError
from invsync.sources.spec import SourceSpec

log = logging.getLogger("invsync.sources")

CHUNK = 1 << 20
MAX_BYTES = 2 << 30
"""A download stops (exit 2) past this size (2 GiB): every wait is bounded, and so is a
server that never stops sending."""
EXTRAS = {"sftp": "sftp", "ftp": "ftp", "ftps": "ftp", "s3": "s3", "gs": "gcs", "gcs": "gcs",
          "az": "azure", "abfs": "azure"}
"""The extra (``pip install 'invsync[EXTRA]'``) each scheme's backend comes with."""


@dataclass(frozen=True)
class RemoteFile:
    """One file found at the source."""

    path: str
    size: int | None
    mtime: float | None
    """Seconds since the epoch (None: the server does not say)."""
    etag: str | None = None

    @property
    def name(self) -> str:
        """The file's name (for a URL: the last part of its path, without the query)."""
        path = urlsplit(self.path).path if "://" in self.path else self.path
        return posixpath.basename(path.rstrip("/"))

    @property
    def shown_path(self) -> str:
        """The path as it may be stored or shown (a URL's secret query values redacted)."""
        return redact_url(self.path) if "://" in self.path else self.path

    def identity(self) -> tuple[str, int | None, float | None]:
        """What the watch ledger knows a file by (path as stored, size, mtime)."""
        return (self.shown_path, self.size, self.mtime)


@dataclass
class Download:
    """What :meth:`Remote.download` wrote."""

    sha256: str
    size: int
    not_modified: bool = False
    etag: str | None = None
    last_modified: str | None = None
    file: RemoteFile | None = None


class Remote:
    """A source's file system (see the subclasses)."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec

    def list(self) -> list[RemoteFile]:
        """The files the source's path or glob matches."""
        raise NotImplementedError

    def stat(self, path: str) -> RemoteFile | None:
        """The file at ``path`` now (None if it is gone)."""
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def open(self, path: str) -> BinaryIO:
        raise NotImplementedError

    def download(self, file: RemoteFile, dest: Path, *, etag: str | None = None,
                 last_modified: str | None = None) -> Download:
        """Copy ``file`` to ``dest`` (written whole or not at all) and hash it."""
        with self._errors(f"reading {file.path}"):
            return _copy(self.open(file.path), dest, file, self.spec.timeout_s)

    def move(self, path: str, folder: str) -> str:
        """Move ``path`` into ``folder`` (relative to its own folder); the new path."""
        raise NotImplementedError

    def delete(self, path: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Drop the connection (if any)."""

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (SourceError, MissingExtraError):
            raise
        except Exception as exc:
            raise SourceError(f"{self.spec.display}: {doing}: {describe(exc, self.spec)}") \
                from None


def describe(exc: BaseException, spec: SourceSpec) -> str:
    """A one-line account of a backend's exception, without any secret."""
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, TimeoutError | socket.timeout) or "timed out" in text.lower() \
            or "Timeout" in name or "protocol banner" in text or text == "No existing session":
        return f"no answer within {spec.timeout_s:g} s (timeout_s); {name}"
    if name == "AuthenticationException" or text.startswith("530") or "Authentication" in text:
        return "the server refused the login (wrong user name, password or key)"
    if isinstance(exc, ConnectionRefusedError) or name == "NoValidConnectionsError" \
            or "Connection refused" in text:
        return "connection refused (is the server running, is the port right?)"
    if isinstance(exc, FileNotFoundError):
        return f"no such file ({text or name})"
    if isinstance(exc, PermissionError):
        return f"permission denied ({text or name})"
    secrets = [s.reveal() for s in (spec.password, spec.secret_access_key, spec.key_passphrase,
                                    spec.session_token) if s]
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return redact(f"{name}: {text}" if text else name)


MIN_PROGRESS = 64 << 10
"""A download that receives less than this within ``timeout_s`` (and has not ended) is given
up (exit 2): each read answering in time does not bound a server that drips bytes."""


_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
"""What only the copy's side of a download can fail with (its disk)."""


def _copy(stream: BinaryIO, dest: Path, file: RemoteFile | None,
          timeout_s: float | None = None) -> Download:
    """Write ``stream`` to ``dest`` through a temporary file, hashing it on the way."""
    digest = hashlib.sha256()
    size = 0
    limit = MAX_BYTES
    make_private_dir(dest.parent)
    part = dest.with_name(dest.name + ".part")
    window_start, window_size = time.monotonic(), 0
    try:
        with stream, open_nofollow(part, "wb") as out:  # 0600: the merchant's bytes
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if size > limit:
                    raise SourceError(f"the file is larger than {limit >> 20} MiB: not a stock "
                                      f"file, or a server that never stops sending")
                if timeout_s and time.monotonic() - window_start > timeout_s:
                    if size - window_size < MIN_PROGRESS:
                        raise SourceError(f"the server sends too slowly (less than "
                                          f"{MIN_PROGRESS >> 10} KiB in {timeout_s:g} s, "
                                          f"timeout_s)")
                    window_start, window_size = time.monotonic(), size
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
    except OSError as exc:
        if exc.errno not in _FULL_OR_READ_ONLY:
            raise
        # The copy's disk (the state folder), not the source: "reading FILE: OSError" sent
        # the operator to the wrong place.
        raise CopyNotKeptError(f"the file could not be copied into the state folder "
                               f"{dest.parent} ({exc.strerror}): nothing was sent; make "
                               f"room there, then run the same command again") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
    return Download(sha256=digest.hexdigest(), size=size, file=file)


def _to_epoch(value: Any) -> float | None:
    """An mtime as fsspec backends give it (datetime, epoch, ``YYYYMMDDhhmmss``) as epoch."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return float(value.timestamp())
    if isinstance(value, int | float):
        return float(value)
    text = str(value).split(".")[0]
    with contextlib.suppress(ValueError):
        return datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text).timestamp()
    return None


class LocalRemote(Remote):
    """A local path or glob (a drop folder)."""

    def list(self) -> list[RemoteFile]:
        paths = sorted(glob.glob(self.spec.path)) if self.spec.has_glob else [self.spec.path]
        return [f for f in (self.stat(p) for p in paths) if f is not None]

    def stat(self, path: str) -> RemoteFile | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceError(f"{path}: {exc.strerror or exc}") from None
        if not os.path.isfile(path):
            return None
        return RemoteFile(path=path, size=st.st_size, mtime=st.st_mtime)

    def open(self, path: str) -> BinaryIO:
        return open(path, "rb")

    def move(self, path: str, folder: str) -> str:
        target_dir = Path(path).parent / folder
        target_dir.mkdir(parents=True, exist_ok=True)
        target = _free_name(target_dir / Path(path).name, lambda p: p.exists())
        os.replace(path, target)
        return str(target)

    def delete(self, path: str) -> None:
        os.unlink(path)


def _free_name(target: Path, taken: Any) -> Path:
    """``target``, or ``target`` with a time stamp when that name is taken."""
    if not taken(target):
        return target
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return target.with_name(f"{target.stem}.{stamp}{target.suffix}")


class FsspecRemote(Remote):
    """SFTP, FTP(S), S3, GCS and Azure through fsspec and its backends."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._fs: Any = None

    @property
    def fs(self) -> Any:
        if self._fs is None:
            with self._errors("connecting"):
                self._fs = _connect(self.spec)
        return self._fs

    def list(self) -> list[RemoteFile]:
        spec = self.spec
        with self._errors("listing"):
            if spec.has_glob:
                found = self.fs.glob(spec.path, detail=True)
                infos = found.values() if isinstance(found, dict) else \
                    [self.fs.info(p) for p in found]
                infos = [self._followed(i) for i in infos]
            else:
                try:
                    infos = [self.fs.info(spec.path)]
                except FileNotFoundError:
                    infos = []
            files = [self._file(i) for i in infos if i.get("type", "file") == "file"]
            if not files:
                self._check_bucket()
        return files

    def _followed(self, info: dict[str, Any]) -> dict[str, Any]:
        """A listing's symbolic link as what it points to (a plain path reads through it;
        a dangling link is no file)."""
        if info.get("type") != "link":
            return info
        try:
            return dict(self.fs.info(info["name"]))
        except (FileNotFoundError, OSError):
            return {"type": "missing"}

    def _check_bucket(self) -> None:
        """Nothing matched: a bucket that does not exist is not "the export did not arrive"
        but a source that cannot be read (exit 2)."""
        if self.spec.scheme not in ("s3", "gs", "gcs", "az", "abfs"):
            return
        bucket = self.spec.path.split("/", 1)[0]
        if not self.fs.exists(bucket):
            raise SourceError(f"{self.spec.display}: no bucket {bucket!r} there (or no "
                              f"access to it): check the url and endpoint_url")

    def _file(self, info: dict[str, Any]) -> RemoteFile:
        mtime = None
        for key in ("mtime", "LastModified", "last_modified", "modify", "updated", "time"):
            if info.get(key) is not None:
                mtime = _to_epoch(info[key])
                break
        etag = info.get("ETag") or info.get("etag")
        path = str(info["name"])
        if self.spec.scheme in ("sftp", "ftp", "ftps") and not path.startswith("/"):
            path = "/" + path
        return RemoteFile(path=path, size=info.get("size"), mtime=mtime,
                          etag=str(etag).strip('"') if etag else None)

    def stat(self, path: str) -> RemoteFile | None:
        with self._errors(f"checking {path}"):
            try:
                fs = self.fs
                if hasattr(fs, "invalidate_cache"):
                    fs.invalidate_cache()
                info = fs.info(path)
            except FileNotFoundError:
                return None
        return self._file(info) if info.get("type", "file") == "file" else None

    def open(self, path: str) -> BinaryIO:
        return cast(BinaryIO, self.fs.open(path, "rb"))

    def move(self, path: str, folder: str) -> str:
        parent = posixpath.dirname(path.rstrip("/"))
        target_dir = posixpath.join(parent, folder.strip("/"))
        with self._errors(f"moving {path} to {folder}"):
            fs = self.fs
            if self.spec.scheme not in ("s3", "gs", "gcs", "az", "abfs"):
                fs.makedirs(target_dir, exist_ok=True)
            target = str(_free_name(Path(posixpath.join(target_dir, posixpath.basename(path))),
                                    lambda p: fs.exists(str(p))))
            fs.mv(path, target)
            return target

    def delete(self, path: str) -> None:
        with self._errors(f"deleting {path}"):
            self.fs.rm(path)

    def close(self) -> None:
        fs, self._fs = self._fs, None
        client = getattr(fs, "client", None)
        if client is not None and hasattr(client, "close"):
            with contextlib.suppress(Exception):
                client.close()
        ftp = getattr(fs, "ftp", None)
        if ftp is not None and hasattr(ftp, "close"):
            with contextlib.suppress(Exception):
                ftp.close()


def _import(scheme: str) -> None:
    """Import the backend of ``scheme``, or say which extra brings it."""
    modules = {"sftp": ["fsspec", "paramiko"], "ftp": ["fsspec"], "ftps": ["fsspec"],
               "s3": ["fsspec", "s3fs"], "gs": ["fsspec", "gcsfs"], "gcs": ["fsspec", "gcsfs"],
               "az": ["fsspec", "adlfs"], "abfs": ["fsspec", "adlfs"]}[scheme]
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            extra = EXTRAS[scheme]
            raise MissingExtraError(
                f"{scheme}:// sources need the {extra!r} extra (the {module} package): "
                f"pip install 'invsync[{extra}]'") from None


def _connect(spec: SourceSpec) -> Any:
    """An fsspec file system for ``spec``, connected and with bounded waits."""
    _import(spec.scheme)
    if spec.scheme == "sftp":
        return _sftp(spec)
    if spec.scheme in ("ftp", "ftps"):
        return _ftp(spec)
    if spec.scheme == "s3":
        return _s3(spec)
    import fsspec

    protocol = {"gs": "gcs", "abfs": "az"}.get(spec.scheme, spec.scheme)
    return fsspec.filesystem(protocol, skip_instance_cache=True)


def _tls_context(spec: SourceSpec) -> ssl.SSLContext:
    """A context that checks the server's certificate (against ``ca_file`` if set)."""
    context = ssl.create_default_context(cafile=str(spec.ca_file) if spec.ca_file else None)
    if not spec.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _ftp(spec: SourceSpec) -> Any:
    import ftplib

    from fsspec.implementations.ftp import FTPFileSystem

    class CheckedFTP(FTPFileSystem):  # type: ignore[misc]  # fsspec ships no type hints
        """fsspec's FTP, whose FTPS checks the server's certificate (ftplib's default
        context does not) before the password is sent."""

        def _connect(self) -> None:
            if not self.tls:
                super()._connect()
                return
            self.ftp = ftplib.FTP_TLS(context=_tls_context(spec), timeout=self.timeout,
                                      encoding=self.encoding)
            self.ftp.connect(self.host, self.port)
            self.ftp.login(*self.cred)  # AUTH TLS first, then the password

    return CheckedFTP(spec.host, port=spec.port or 21, username=spec.username or "anonymous",
                      password=spec.password.reveal() if spec.password else "",
                      timeout=spec.timeout_s, tls=spec.scheme == "ftps" or spec.tls,
                      skip_instance_cache=True)


def _s3(spec: SourceSpec) -> Any:
    import s3fs

    options: dict[str, Any] = {
        "skip_instance_cache": True, "anon": spec.anonymous,
        "config_kwargs": {"connect_timeout": spec.timeout_s, "read_timeout": spec.timeout_s,
                          "retries": {"max_attempts": 2}},
    }
    if spec.endpoint_url:
        options["endpoint_url"] = spec.endpoint_url
    if spec.region:
        options["client_kwargs"] = {"region_name": spec.region}
    if spec.access_key_id:
        options["key"] = spec.access_key_id
    if spec.secret_access_key:
        options["secret"] = spec.secret_access_key.reveal()
    if spec.session_token:
        options["token"] = spec.session_token.reveal()
    return s3fs.S3FileSystem(**options)


def sha256_fingerprint(key_bytes: bytes) -> str:
    """An SSH host key's fingerprint as OpenSSH prints it: ``SHA256:<base64, no padding>``."""
    digest = base64.b64encode(hashlib.sha256(key_bytes).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _sftp(spec: SourceSpec) -> Any:
    import paramiko
    from fsspec.implementations.sftp import SFTPFileSystem

    # paramiko logs each failure at ERROR from its own thread; the one-line error says it.
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)

    class CheckHostKey(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]  # untyped library
        """Accept the server only if its key is the configured one (or in known_hosts)."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            presented = sha256_fingerprint(key.asbytes())
            if spec.host_key:
                if presented == spec.host_key.strip():
                    return
                raise SourceError(
                    f"{spec.display}: the server's host key is {presented}, not the "
                    f"host_key {spec.host_key} of the config: refused (the server was "
                    f"replaced, or someone is in between); nothing was sent to it")
            known = _known_host(spec, hostname, key)
            if known:
                return
            raise SourceError(
                f"{spec.display}: the server's host key {presented} is not known: set "
                f"host_key = \"{presented}\" in [sources.{spec.name or 'NAME'}] once you have "
                f"checked it with the server's owner (or add it to known_hosts)")

    kwargs: dict[str, Any] = {
        "port": spec.port or 22, "username": spec.username, "timeout": spec.timeout_s,
        "banner_timeout": spec.timeout_s, "auth_timeout": spec.timeout_s,
        "channel_timeout": spec.timeout_s, "host_key_policy": CheckHostKey(),
        "allow_agent": False, "look_for_keys": False, "skip_instance_cache": True,
    }
    if spec.password:
        kwargs["password"] = spec.password.reveal()
    if spec.key_file:
        kwargs["key_filename"] = str(spec.key_file)
        if spec.key_passphrase:
            kwargs["passphrase"] = spec.key_passphrase.reveal()
    if not spec.password and not spec.key_file:
        kwargs["allow_agent"] = kwargs["look_for_keys"] = True
    fs = SFTPFileSystem(spec.host, **kwargs)
    channel = fs.ftp.get_channel()
    if channel is not None:
        channel.settimeout(spec.timeout_s)
    return fs


def _known_host(spec: SourceSpec, hostname: str, key: Any) -> bool:
    """Is ``key`` the one known_hosts (the configured file, else ~/.ssh/known_hosts) holds?"""
    import paramiko

    path = spec.known_hosts or Path.home() / ".ssh" / "known_hosts"
    if not path.is_file():
        return False
    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except (OSError, paramiko.SSHException):
        return False
    names = [hostname] if (spec.port or 22) == 22 else [f"[{hostname}]:{spec.port}"]
    return any(keys.check(n, key) for n in names)


class HttpRemote(Remote):
    """One URL over HTTP(S), fetched with a conditional GET (ETag / Last-Modified)."""

    def _client(self) -> Any:
        import httpx

        verify: Any = _tls_context(self.spec) if self.spec.verify_tls else False
        headers = {k: v.reveal() for k, v in self.spec.headers.items()}
        origin = httpx.URL(self.spec.path)

        def own_origin_only(request: Any) -> None:
            # httpx drops only Authorization on a redirect to another origin: the source's
            # other headers (X-Api-Key ...) must not follow it either.
            url = request.url
            if (url.scheme, url.host, url.port) != (origin.scheme, origin.host, origin.port):
                for name in headers:
                    request.headers.pop(name, None)

        spec = self.spec
        # The login of the source (url or table) as Basic auth; httpx drops it on a redirect
        # to another origin.
        auth = httpx.BasicAuth(spec.username or "", spec.password.reveal()) \
            if spec.password else None
        return httpx.Client(timeout=spec.timeout_s, verify=verify, headers=headers,
                            auth=auth, follow_redirects=True,
                            event_hooks={"request": [own_origin_only]})

    def list(self) -> list[RemoteFile]:
        # HEAD: its Last-Modified and size tell `watch` that the answer changed.
        found = self.stat(self.spec.path)
        return [found] if found is not None else []

    def stat(self, path: str) -> RemoteFile | None:
        with self._errors("checking"), self._client() as client:
            response = client.head(path)
            if response.status_code == 404:
                return None
            if response.status_code in (405, 501):  # no HEAD here: assume it is there
                return RemoteFile(path=path, size=None, mtime=None)
            _raise_for(response, self.spec)
            return _http_file(path, response)

    def download(self, file: RemoteFile, dest: Path, *, etag: str | None = None,
                 last_modified: str | None = None) -> Download:
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        with self._errors("downloading"), self._client() as client, \
                client.stream("GET", file.path, headers=headers) as response:
            if response.status_code == 304:
                return Download(sha256="", size=0, not_modified=True, etag=etag,
                                last_modified=last_modified, file=file)
            _raise_for(response, self.spec)
            found = _http_file(file.path, response)
            # Chunks as they arrive (not 1 MiB at a time), so that a dripping server is seen.
            done = _copy(_Stream(response.iter_bytes()), dest, found,  # type: ignore[arg-type]
                         self.spec.timeout_s)
            done.etag = response.headers.get("etag")
            done.last_modified = response.headers.get("last-modified")
        if _is_web_page(dest):
            dest.unlink()
            raise SourceError(f"{self.spec.display}: the server answered a web page (HTML), "
                              f"not a stock file: a login or error page? nothing was sent")
        return done

    def move(self, path: str, folder: str) -> str:
        raise SourceError(f"{self.spec.display}: an http(s) source cannot be moved")

    def delete(self, path: str) -> None:
        raise SourceError(f"{self.spec.display}: an http(s) source cannot be deleted")


def _is_web_page(path: Path) -> bool:
    """Does the downloaded file start like an HTML page (never a CSV or XLSX file)?"""
    with path.open("rb") as fh:
        head = fh.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _raise_for(response: Any, spec: SourceSpec) -> None:
    if response.status_code in (401, 403):
        raise SourceError(f"{spec.display}: the server refused access (HTTP "
                          f"{response.status_code}): check the headers (or username and "
                          f"password) of the source's config")
    if response.status_code >= 400:
        raise SourceError(f"{spec.display}: HTTP {response.status_code}")


def _http_file(path: str, response: Any) -> RemoteFile:
    size = response.headers.get("content-length")
    modified = response.headers.get("last-modified")
    mtime = None
    if modified:
        with contextlib.suppress(TypeError, ValueError):
            mtime = email.utils.parsedate_to_datetime(modified).timestamp()
    return RemoteFile(path=path, size=int(size) if size and size.isdigit() else None,
                      mtime=mtime, etag=response.headers.get("etag"))


class _Stream:
    """An iterator of byte chunks as a readable, closable stream (for :func:`_copy`)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, _size: int = -1) -> bytes:
        return next(self._chunks, b"")

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def remote_for(spec: SourceSpec) -> Remote:
    """The :class:`Remote` that reads ``spec``."""
    if spec.is_http:
        return HttpRemote(spec)
    if spec.scheme == "file":
        return LocalRemote(spec)
    _import(spec.scheme)  # say which extra is missing before anything else
    return FsspecRemote(spec)


def copy_file(src: Path, dest: Path) -> None:
    """Copy a fetched file into a run folder, readable by this user only (0600 in a 0700
    folder, like the run's other files): the file at the source may be one that others
    could not read (a drop folder's symbolic link to a private file, a 0600 export)."""
    make_private_dir(dest.parent)
    with src.open("rb") as fh:
        write_atomic(dest, lambda out: shutil.copyfileobj(fh, out))


def matches(name: str, pattern: str) -> bool:
    """Does file name ``name`` match the glob ``pattern``'s last part?"""
    return fnmatch.fnmatchcase(name, posixpath.basename(pattern))
