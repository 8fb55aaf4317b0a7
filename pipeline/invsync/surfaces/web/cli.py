"""``invsync serve`` (the upload page) and ``invsync portal ...`` (its users and API keys)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from invsync.surfaces.options import _config_options

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
STOP_GRACE_S = 60.0
"""How long a stopping server lets an apply in progress finish."""


WEB_EXTRA = "pip install 'invsync[web]'"


def need_web_extra(what: str = "the upload page (invsync serve)") -> None:
    """Stop with a plain message naming the extra when the web stack is not installed."""
    import importlib

    missing = []
    for name in ("starlette", "uvicorn", "multipart"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise click.UsageError(f"{what} needs the web extra, which is not installed "
                               f"(missing: {', '.join(missing)}); install it with: "
                               f"{WEB_EXTRA}")


def _settings(config_path: Path | None, flags: dict[str, Any]) -> Any:
    from invsync.run.config import load_settings

    return load_settings(config_path, flags)


def _state_options(fn: Any) -> Any:
    fn = click.option("--state-dir", type=click.Path(path_type=Path),
                      help="Where users and uploads are kept [$XDG_STATE_HOME/invsync].")(fn)
    return _config_options(fn)


@click.command(context_settings=CONTEXT)
@_state_options
@click.option("--store-hash", help="Store hash [env BIGCOMMERCE_STORE_HASH].")
@click.option("--api-url", help="API base [env BIGCOMMERCE_API_URL].")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Run folders.")
@click.option("--location-id", type=int, help="Default location offered on the page [1].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but 127.0.0.1 needs TLS in front.")
@click.option("--port", type=int, default=8000, show_default=True, help="0 picks a free port.")
@click.option("--behind-https", is_flag=True,
              help="Served through an HTTPS reverse proxy: cookies get the Secure flag.")
@click.option("--max-upload-mb", type=float, default=50, show_default=True,
              help="Largest file accepted.")
@click.option("--session-idle-minutes", type=float, default=30, show_default=True,
              help="Sign out after this long without use.")
@click.option("--session-hours", type=float, default=12, show_default=True,
              help="Sign out this long after signing in, whatever happens.")
@click.option("--no-verify-tls", "verify_tls", flag_value=False, default=None,
              help="Turn TLS certificate checks off (never in production).")
def serve(config_path: Path | None, host: str, port: int, behind_https: bool,
          max_upload_mb: float, session_idle_minutes: float, session_hours: float,
          **flags: Any) -> None:
    """Serve the merchant upload page: sign in, upload, map, preview, confirm, history.

    Users come from 'invsync portal add-user'. The store's token comes from
    BIGCOMMERCE_ACCESS_TOKEN or the config file, as for sync; it never reaches a page.
    """
    import logging

    need_web_extra()
    from invsync.surfaces.web.app import Options, create_app
    from invsync.surfaces.web.auth import Accounts

    settings = _settings(config_path, flags)
    settings.check(needs_store=True)
    if max_upload_mb <= 0 or session_idle_minutes <= 0 or session_hours <= 0:
        raise click.UsageError("sizes and times must be positive")
    log = logging.getLogger("invsync.web")
    if not Accounts(settings.state_dir).users():
        click.echo("invsync serve: no users yet; add one with: invsync portal add-user NAME",
                   err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: put a TLS reverse proxy in front (see the README) and "
                    "pass --behind-https", host)
        click.echo(f"invsync serve: listening on {host}, not only this machine: serve it "
                   f"through an HTTPS reverse proxy and pass --behind-https", err=True)
    app = create_app(settings, Options(behind_https=behind_https, max_upload_mb=max_upload_mb,
                                       idle_minutes=session_idle_minutes,
                                       max_hours=session_hours))
    _run(app, host, port, behind_proxy=behind_https)


def _run(app: Any, host: str, port: int, *, behind_proxy: bool = False) -> None:
    """Bind first, print one 'listening on' line, then serve until SIGTERM/SIGINT."""
    import asyncio
    import socket

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    click.echo(f"invsync upload page listening on http://{shown}:{bound}", err=False)
    sys.stdout.flush()
    # Behind the proxy, the client's address (for sign-in throttling) is the one it
    # forwards, trusted only from 127.0.0.1 (uvicorn's forwarded_allow_ips default).
    config = uvicorn.Config(app, log_level="info", access_log=True, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=5,
                            proxy_headers=behind_proxy, forwarded_allow_ips="127.0.0.1")
    portal = getattr(getattr(app, "state", None), "portal", None)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            await super().shutdown(sockets=sockets)
            if portal is not None:
                # An apply in progress is let finish (a second Ctrl-C stops waiting); one
                # still running then is recorded as cut off, never left "applying".
                await asyncio.to_thread(portal.shutdown, STOP_GRACE_S, lambda: self.force_exit)

    try:
        Server(config).run(sockets=[sock])
    finally:
        sock.close()


@click.group(context_settings=CONTEXT)
def portal() -> None:
    """Users and API keys of the upload page (kept hashed in <state-dir>/portal/)."""


def _accounts(config_path: Path | None, state_dir: Path | None,
              profile: str | None = None) -> Any:
    from invsync.surfaces.web.auth import Accounts

    return Accounts(_settings(config_path, {"state_dir": state_dir,
                                            "profile": profile}).state_dir)


def _read_password() -> str:
    """From a terminal without echo (asked twice); otherwise the first line of stdin."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


@portal.command("add-user", context_settings=CONTEXT)
@click.argument("name")
@_state_options
def add_user(name: str, config_path: Path | None, state_dir: Path | None,
             profile: str | None) -> None:
    """Add user NAME (or set a new password); the password is read from stdin."""
    accounts = _accounts(config_path, state_dir, profile)
    new = accounts.add_user(name, _read_password())
    click.echo(f"{'added' if new else 'changed the password of'} user {name!r} "
               f"({accounts.users_path})")


@portal.command("remove-user", context_settings=CONTEXT)
@click.argument("name")
@_state_options
def remove_user(name: str, config_path: Path | None, state_dir: Path | None,
             profile: str | None) -> None:
    """Remove user NAME (a running server signs them out at their next request)."""
    if not _accounts(config_path, state_dir, profile).remove_user(name):
        raise click.ClickException(f"no user {name!r}")
    click.echo(f"removed user {name!r}")


@portal.command("list-users", context_settings=CONTEXT)
@_state_options
def list_users(config_path: Path | None, state_dir: Path | None,
             profile: str | None) -> None:
    """List the users (names and when they were added)."""
    for name, info in sorted(_accounts(config_path, state_dir, profile).users().items()):
        click.echo(f"{name}\t{info.get('created') or ''}")


@portal.command("add-key", context_settings=CONTEXT)
@click.argument("name")
@_state_options
def add_key(name: str, config_path: Path | None, state_dir: Path | None,
             profile: str | None) -> None:
    """Make an API key named NAME for scripts; it is printed once and stored hashed."""
    click.echo(_accounts(config_path, state_dir, profile).add_key(name))


@portal.command("remove-key", context_settings=CONTEXT)
@click.argument("name_or_id")
@_state_options
def remove_key(name_or_id: str, config_path: Path | None, state_dir: Path | None,
             profile: str | None) -> None:
    """Revoke the API key(s) with this name or id."""
    if not _accounts(config_path, state_dir, profile).remove_key(name_or_id):
        raise click.ClickException(f"no key {name_or_id!r}")
    click.echo(f"removed key(s) {name_or_id!r}")
