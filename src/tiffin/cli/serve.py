"""``tiffin serve``: serve a service over HTTP with worker processes."""

from __future__ import annotations

from pathlib import Path

import click

from tiffin.cli.settings import settings_from
from tiffin.exceptions import InvalidArgument
from tiffin.server import supervisor

__all__ = ["serve"]


@click.command()
@click.argument("service", required=False)
@click.option("--host", help="Address to listen on [env: TIFFIN_HOST; default: 0.0.0.0].")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one [env: TIFFIN_PORT; default: 3000].",
)
@click.option(
    "--grpc-port",
    type=click.IntRange(0, 65535),
    help="Also answer gRPC (the Open Inference Protocol) on this port; 0 picks a free one. "
    "Needs tiffin[grpc] [env: TIFFIN_GRPC_PORT].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes; with 2 or more a supervisor replaces one that dies "
    "[env: TIFFIN_WORKERS; default: @tiffin.service(workers=...) or 1].",
)
@click.option(
    "--reload",
    is_flag=True,
    help="Restart the worker when a .py file under this directory changes (development; "
    "one worker).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds an API call may run before the caller gets 504 [env: TIFFIN_TIMEOUT].",
)
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    help="Seconds requests in flight get to finish after SIGTERM [env: TIFFIN_GRACE_PERIOD].",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    help="'json' lines, 'console' lines, or 'auto': console on a terminal, else JSON "
    "[env: TIFFIN_LOG_FORMAT].",
)
@click.pass_context
def serve(
    ctx: click.Context,
    *,
    service: str | None,
    host: str | None,
    port: int | None,
    grpc_port: int | None,
    workers: int | None,
    reload: bool,
    timeout: float | None,
    grace_period: float | None,
    log_format: str | None,
) -> None:
    """Serve SERVICE over HTTP (and gRPC, with --grpc-port) until stopped (Ctrl+C or
    SIGTERM).

    SERVICE is module:Class (e.g. service:Iris) or path/to/file.py:Class, looked up from
    the current directory; without it, the top-level 'service:' of ./tiffin.yaml. Flags
    override tiffin.yaml, TIFFIN_* variables and @tiffin.service(...) arguments.
    """
    target = service or settings_from(ctx).service
    if not target:
        raise InvalidArgument(
            "No service to serve. Pass one, as in 'tiffin serve service:Iris', or name it in "
            "tiffin.yaml with 'service: service:Iris'."
        )
    root_flags = (ctx.find_root().obj or {}).get("flags", {})
    flags = {
        **root_flags,
        "host": host,
        "port": port,
        "grpc_port": grpc_port,
        "workers": workers,
        "timeout": timeout,
        "grace_period": grace_period,
        "log_format": log_format,
    }
    supervisor.serve(
        target,
        directory=Path.cwd(),
        flags={key: value for key, value in flags.items() if value is not None},
        reload=reload,
        on_ready=click.echo,
    )
