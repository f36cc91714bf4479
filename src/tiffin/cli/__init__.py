"""The ``tiffin`` command. Thin: every command is a call a user could make from Python.

Errors from tiffin print one line to standard error and exit with the error's
``exit_code``; ``--debug`` (or ``TIFFIN_DEBUG=1``) prints the traceback too.
"""

from __future__ import annotations

import importlib
import os
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from tiffin.exceptions import TiffinError, describe

__all__ = ["cli", "main"]


def _version() -> str:
    try:
        return version("tiffin")
    except PackageNotFoundError:
        return "unknown"


_COMMANDS = {
    "build": "tiffin.cli.bundles:build",
    "bundles": "tiffin.cli.bundles:bundles",
    "containerize": "tiffin.cli.containerize:containerize",
    "deploy": "tiffin.cli.deploy:deploy",
    "models": "tiffin.cli.models:models",
    "monitor": "tiffin.cli.monitor:monitor",
    "serve": "tiffin.cli.serve:serve",
}
"""Each command and where it is defined: imported when it runs (or for --help), so
``tiffin serve`` does not load what only the other commands use (tables, progress bars)."""


class _Root(click.Group):
    """Turns errors into one readable line and the error's exit code, and imports each
    command when it is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = _COMMANDS.get(cmd_name)
        if where is None:
            return super().get_command(ctx, cmd_name)
        module, _, name = where.partition(":")
        command: click.Command = getattr(importlib.import_module(module), name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TiffinError as exc:
            if self._debug(ctx):
                traceback.print_exc()
            click.echo(f"Error: {exc.message}", err=True)
            ctx.exit(exc.exit_code)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if self._debug(ctx):
                traceback.print_exc()
            else:
                click.echo(
                    f"Error: unexpected {describe(exc)}. Run again with --debug for the traceback.",
                    err=True,
                )
            ctx.exit(1)

    @staticmethod
    def _debug(ctx: click.Context) -> bool:
        flags = (ctx.obj or {}).get("flags", {})
        return bool(flags.get("debug")) or os.environ.get("TIFFIN_DEBUG", "").lower() in {
            "1",
            "true",
            "yes",
        }


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="tiffin", message="%(prog)s %(version)s")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help="tiffin's home directory [env: TIFFIN_HOME; default: ~/.tiffin].",
)
@click.option("--debug", is_flag=True, default=None, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, debug: bool | None) -> None:
    """tiffin: take a trained model to production."""
    ctx.ensure_object(dict)["flags"] = {"home": home, "debug": debug}


def main() -> None:
    """Entry point of the ``tiffin`` console script."""
    cli.main(prog_name="tiffin")
