"""How the CLI shows things: tables for people, JSON for scripts, progress bars for long work."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from tiffin.exceptions import InvalidArgument

__all__ = [
    "OUTPUT_OPTION",
    "human_size",
    "key_values",
    "print_json",
    "print_table",
    "progress_bar",
]

OUTPUT_OPTION = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="'table' for people, 'json' for scripts.",
)


def human_size(size: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to standard output."""
    click.echo(json.dumps(data, indent=2, default=str))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, empty: str) -> None:
    """A table on standard output, or the ``empty`` sentence when there are no rows."""
    if not rows:
        click.echo(empty)
        return
    console = Console()
    if not console.is_terminal:  # piped: never wrap, a script may cut columns
        console = Console(width=100_000)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for i, column in enumerate(columns):
        table.add_column(column, no_wrap=i == 0, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A byte-counting progress bar on standard error, shown only on a terminal.

    Yields a callback taking the number of bytes just done.
    """
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.advance(task, done)


def key_values(pairs: Sequence[str], option: str, example: str = "team=ml") -> dict[str, str]:
    """``KEY=VALUE`` option values as a mapping; a value without ``=`` is an error that
    names ``option`` and shows ``example``."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgument(
                f"{option} {pair!r} is not KEY=VALUE. Write it like {option} {example}.",
                detail={"option": option, "value": pair},
            )
        found[key] = value
    return found
