"""`invsync sandbox`: run the local stand-in store (see invsync.sandbox.server).

Only click is imported at module level: the main CLI imports this module on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pathlib import Path

_RATE = click.FloatRange(0, 1)
_MS = click.IntRange(min=0)
FAULTS: tuple[tuple[tuple[str, ...], click.ParamType[Any, Any] | None, str], ...] = (
    (("--latency-ms",), _MS, "Delay added to every API request."),
    (("--error-rate",), _RATE, "Share of API requests answered 500/502/503."),
    (("--bare-429-rate",), _RATE, "Share of API requests answered 429 without rate-limit "
     "headers."),
    (("--drop-rate",), _RATE, "Share of PUTs applied and then left unanswered."),
    (("--vague-422",), None, "422 titles never name the offending item."),
    (("--apply-delay-ms", "--apply-lag-ms"), _MS,
     "Read-after-write lag: reads return the old level for this long after a write."),
)
"""The fault options, in --help order: (flags, type, help). The first flag names the
keyword of ``SandboxConfig`` it sets; off (0, or a flag not given) by default. A type of
None is an on/off flag."""


def fault_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add an option for each entry of :data:`FAULTS` to ``command``."""
    for flags, kind, text in reversed(FAULTS):
        name = flags[0].removeprefix("--").replace("-", "_")
        if kind is None:
            command = click.option(*flags, name, is_flag=True, help=text)(command)
        else:
            zero = 0.0 if isinstance(kind, click.FloatRange) else 0
            command = click.option(*flags, name, default=zero, show_default=True, type=kind,
                                   help=text)(command)
    return command


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to bind; 0 picks a free one (printed on start).",
)
@click.option(
    "--catalog",
    "catalog",
    default=None,
    type=click.Path(dir_okay=False),
    help="Catalog CSV: sku,product_id,variant_id,tracking [the demo catalogue shipped in "
    "the package, the same as sample_data/catalog.csv].",
)
@click.option(
    "--store-hash",
    envvar="BIGCOMMERCE_STORE_HASH",
    default="sandbox",
    show_default=True,
    show_envvar=True,
    help="Store hash served under /stores/{hash}/v3.",
)
@click.option(
    "--locations",
    "locations_csv",
    type=click.Path(dir_okay=False, exists=True),
    help="Locations CSV: id,code,label,enabled (default: 1 and 2 enabled, 3 disabled).",
)
@click.option(
    "--quota", type=click.IntRange(min=1), help="Requests per window (default: no limit)."
)
@click.option("--window-ms", default=30000, show_default=True, type=click.IntRange(min=1))
@fault_options
@click.option("--seed", type=int, help="Seed for fault injection (deterministic faults).")
@click.option(
    "--record-answers",
    is_flag=True,
    help="Keep every answer's JSON body in /_sandbox/requests (for conformance tests).",
)
@click.option(
    "--update-stock-behavior",
    type=click.Choice(["order_placed", "order_completed_or_shipped"]),
    default="order_placed",
    show_default=True,
    help="When an order placed in the sandbox takes its units off stock (orders).",
)
@click.option(
    "--no-orders-scope",
    "orders_scope",
    flag_value=False,
    default=True,
    help="The token lacks the orders scope: order reads answer 403.",
)
def sandbox(
    host: str,
    port: int,
    catalog: str | None,
    store_hash: str,
    locations_csv: str | None,
    quota: int | None,
    window_ms: int,
    seed: int | None,
    record_answers: bool,
    update_stock_behavior: str = "order_placed",
    orders_scope: bool = True,
    **faults: Any,
) -> None:
    """Run a local stand-in for a BigCommerce store's inventory API.

    The accepted token comes from INVSYNC_SANDBOX_TOKEN, else BIGCOMMERCE_ACCESS_TOKEN,
    else "sandbox-token"; an optional read-only token from INVSYNC_SANDBOX_READ_ONLY_TOKEN.
    """
    import os
    from pathlib import Path

    from invsync.surfaces.web.cli import need_web_extra

    need_web_extra("the sandbox store")
    from invsync.sandbox import server as sb

    token = (
        os.environ.get("INVSYNC_SANDBOX_TOKEN")
        or os.environ.get("BIGCOMMERCE_ACCESS_TOKEN")
        or "sandbox-token"
    )
    try:
        config = sb.SandboxConfig(
            catalog_path=Path(catalog) if catalog else default_catalog(),
            token=token,
            read_only_token=os.environ.get("INVSYNC_SANDBOX_READ_ONLY_TOKEN") or None,
            store_hash=store_hash,
            quota=quota,
            window_ms=window_ms,
            seed=seed,
            record_answers=record_answers,
            update_stock_behavior=update_stock_behavior,
            orders_scope=orders_scope,
            **faults,
        )
        if locations_csv:
            config.locations = sb.load_locations(locations_csv)
        sb.serve(config, host=host, port=port)
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    sandbox()


def default_catalog() -> Path:
    """The demo catalogue installed with the package (``invsync sandbox`` works anywhere)."""
    from pathlib import Path

    return Path(__file__).resolve().parents[1] / "sandbox" / "catalog.csv"
