"""``tiffin monitor``: the monitors services logged to with ``tiffin.monitor``, and how far
their data has drifted from a reference data set.

    tiffin monitor list
    tiffin monitor report iris --reference train.parquet --window 24h --html drift.html
    tiffin monitor report iris --reference train.csv --since 2026-11-24T08:00 -o json

Times are UTC: ``--since`` and ``--until`` take an ISO-8601 time (UTC unless it names
its offset) or a duration before now (``90m``, ``2h``, ``7d``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from tiffin.cli.output import OUTPUT_OPTION, human_size, print_json, print_table
from tiffin.cli.settings import settings_from
from tiffin.exceptions import InvalidArgument
from tiffin.extras import import_optional
from tiffin.observability.monitor_store import list_monitors, monitoring_root, utc

__all__ = ["monitor", "parse_duration", "parse_time"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_WINDOW = "1h"
"""The window a report covers when none is given: the live drift's default
(``monitor_drift_window``), so the report and the gauge agree."""


def parse_duration(text: str, option: str) -> float:
    """``'90m'`` -> ``5400.0`` seconds."""
    found = _DURATION.match(text)
    if found is None or float(found.group(1)) <= 0:
        raise InvalidArgument(
            f"{option} {text!r} is not a duration. Write a number and a unit: 30s, 15m, 1h, "
            "7d or 2w.",
            detail={"option": option, "value": text},
        )
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_time(text: str, option: str, now: float) -> float:
    """An ISO-8601 time (UTC unless it has an offset) or a duration before ``now``, as
    Unix seconds."""
    if _DURATION.match(text):
        return now - parse_duration(text, option)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgument(
            f"{option} {text!r} is neither a time nor a duration. Write a UTC time like "
            "2026-11-24T08:00 or a duration before now like 2h.",
            detail={"option": option, "value": text},
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@click.group()
def monitor() -> None:
    """Data monitoring: what services logged with tiffin.monitor, and its drift."""


@monitor.command("list")
@OUTPUT_OPTION
@click.pass_context
def list_(ctx: click.Context, *, output: str) -> None:
    """List the monitors in the store, by service."""
    root = monitoring_root(settings_from(ctx))
    found = list_monitors(root)
    if output == "json":
        print_json([m.to_dict() for m in found])
        return
    rows = [
        [
            m.service,
            m.name,
            str(m.files),
            human_size(m.size),
            "-" if m.newest is None else utc(m.newest),
        ]
        for m in found
    ]
    print_table(
        ["SERVICE", "MONITOR", "FILES", "SIZE", "LAST WRITTEN (UTC)"],
        rows,
        empty=f"No monitors in {root}. A service makes one when an API calls "
        "tiffin.monitor(name).log(...).",
    )


@monitor.command("report")
@click.argument("name")
@click.option(
    "--reference",
    "-r",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The data set to compare with: Parquet, CSV or JSON lines, a column per feature.",
)
@click.option("--service", help="The service whose monitor it is, when several have one.")
@click.option(
    "--window",
    help=f"How far back from --until the report looks: 30m, 24h, 7d [default: {DEFAULT_WINDOW}].",
)
@click.option("--since", help="Where the window starts: a UTC time (2026-11-24T08:00) or 2h ago.")
@click.option("--until", help="Where the window ends: a UTC time or a duration ago [default: now].")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the report, with plots, to this HTML file.",
)
@click.option(
    "--psi-threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=0.2,
    show_default=True,
    help="The PSI from which a feature counts as drifted.",
)
@click.option(
    "--alpha",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="The p-value under which a shift counts as more than chance.",
)
@OUTPUT_OPTION
@click.pass_context
def report(
    ctx: click.Context,
    *,
    name: str,
    reference: Path,
    service: str | None,
    window: str | None,
    since: str | None,
    until: str | None,
    html_path: Path | None,
    psi_threshold: float,
    alpha: float,
    output: str,
) -> None:
    """Compare what monitor NAME logged over a window with a reference data set: PSI and
    a Kolmogorov-Smirnov test for each numeric feature, PSI and a chi-squared test for
    each categorical one. A feature has drifted when its PSI is at least --psi-threshold
    and its p-value is below --alpha."""
    if window is not None and since is not None:
        raise InvalidArgument(
            "Give --window or --since, not both: --window counts back from --until.",
            detail={"options": ["--window", "--since"]},
        )
    now = time.time()
    end = parse_time(until, "--until", now) if until is not None else now
    if since is not None:
        start = parse_time(since, "--since", now)
    else:
        start = end - parse_duration(window or DEFAULT_WINDOW, "--window")
    if start >= end:
        raise InvalidArgument(
            f"The window starts ({utc(start)}) after it ends ({utc(end)}). Give a --since "
            "before --until.",
            detail={"since": utc(start), "until": utc(end)},
        )
    import_optional("numpy", "monitor", purpose="to measure drift")
    import_optional("scipy", "monitor", purpose="to measure drift")
    from tiffin.observability import drift_report

    found, context = drift_report.build(
        monitoring_root(settings_from(ctx)),
        name,
        reference,
        service=service,
        since=start,
        until=end,
        psi_threshold=psi_threshold,
        alpha=alpha,
    )
    if html_path is not None:
        html_path.write_text(drift_report.render_html(found, context), encoding="utf-8")
    if output == "json":
        print_json(drift_report.to_json(found, context, html_path))
        return
    head, tail = drift_report.summary(found, context)
    click.echo(head)
    print_table(drift_report.COLUMNS, drift_report.rows(found), empty="No feature to compare.")
    for line in tail:
        click.echo(line)
    if html_path is not None:
        click.echo(f"Report with plots: {html_path}")
