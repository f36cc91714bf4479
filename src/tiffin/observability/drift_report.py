"""A drift report, for people and for scripts: terminal rows, a JSON document, and one
self-contained HTML page.

The page needs nothing but a browser: its plots are inline SVG (a bar of each feature's
PSI against the threshold, and for each feature the shares of the reference and of the
logged records per bin, or per category), its style is inline, and it runs no script;
hovering a bar shows its figures.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiffin.exceptions import NotFound
from tiffin.observability.drift import DriftReport, FeatureDrift, Histogram, Profile, compare
from tiffin.observability.monitor_store import (
    MonitorInfo,
    find_monitor,
    read_reference,
    read_window,
    to_columns,
    utc,
)

__all__ = ["COLUMNS", "Context", "build", "render_html", "rows", "summary", "to_json"]

COLUMNS = ("FEATURE", "KIND", "TEST", "STATISTIC", "P-VALUE", "PSI", "REFERENCE", "LOGGED", "DRIFT")
"""The terminal table's columns."""
_HEADINGS = (
    "feature",
    "kind",
    "test",
    "statistic",
    "p-value",
    "PSI",
    "reference",
    "logged",
    "drift",
)

_TEST_NAMES = {"ks": "KS", "chi2": "chi2"}
_REFERENCE_COLOUR = "#9aa5b1"
_LOGGED_COLOUR = "#2f6fde"
_DRIFT_COLOUR = "#d64545"


@dataclass(frozen=True)
class Context:
    """What a report is about: the monitor, its service, the window (Unix seconds), how
    many records it held, and the reference file."""

    monitor: str
    service: str
    since: float | None
    until: float
    records: int
    reference: Path


def number(value: float) -> str:
    """A statistic as the table shows it: four decimals, or three significant digits
    for small p-values."""
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}"


def rows(report: DriftReport) -> list[list[str]]:
    """The terminal table's rows, one per feature (``COLUMNS``)."""
    return [
        [
            f.feature,
            f.kind,
            _TEST_NAMES[f.test],
            number(f.statistic),
            number(f.p_value),
            number(f.psi),
            str(f.reference_count),
            str(f.current_count),
            "yes" if f.drifted else "no",
        ]
        for f in report.features
    ]


def _window(context: Context) -> str:
    since = "the first record" if context.since is None else utc(context.since)
    return f"from {since} to {utc(context.until)}"


def summary(report: DriftReport, context: Context) -> tuple[str, list[str]]:
    """The line above the table and the lines below it."""
    head = (
        f"Monitor {context.monitor} (service {context.service}): {context.records} records "
        f"{_window(context)}, against {report.reference_rows} reference rows "
        f"({context.reference.name})."
    )
    drifted = report.drifted
    tail = [
        f"{len(drifted)} of {len(report.features)} features drifted"
        + (f": {', '.join(drifted)}." if drifted else ".")
        + f" (Drift: PSI >= {report.psi_threshold:g} and p-value < {report.alpha:g}.)"
    ]
    if report.not_logged:
        tail.append(f"In the reference, not logged: {', '.join(report.not_logged)}.")
    if report.not_in_reference:
        tail.append(f"Logged, not in the reference: {', '.join(report.not_in_reference)}.")
    if report.no_values:
        tail.append(f"Logged without a value to compare: {', '.join(report.no_values)}.")
    return head, tail


def to_json(report: DriftReport, context: Context, html_path: Path | None) -> dict[str, Any]:
    """The report as one JSON document."""
    return {
        "monitor": context.monitor,
        "service": context.service,
        "since": None if context.since is None else utc(context.since),
        "until": utc(context.until),
        "records": context.records,
        "reference": {"path": str(context.reference), "rows": report.reference_rows},
        "psi_threshold": report.psi_threshold,
        "alpha": report.alpha,
        "features": [f.to_dict() for f in report.features],
        "drifted": report.drifted,
        "not_logged": report.not_logged,
        "not_in_reference": report.not_in_reference,
        "no_values": report.no_values,
        "html": None if html_path is None else str(html_path),
    }


def build(
    root: Path,
    name: str,
    reference: Path,
    *,
    service: str | None = None,
    since: float | None = None,
    until: float | None = None,
    psi_threshold: float = 0.2,
    alpha: float = 0.05,
) -> tuple[DriftReport, Context]:
    """The drift of monitor ``name`` (in the store at ``root``) from ``since`` to
    ``until`` (Unix seconds; None: from the first record, to now) against ``reference``.

    Raises:
        NotFound: no such monitor, no reference file, or no record in the window.
        InvalidArgument: a reference tiffin cannot read, or no feature in common.
        IntegrityError: a store file that is not valid.

    Example:
        report, context = build(root, "iris", Path("reference.parquet"), since=time() - 3600)
    """
    found = find_monitor(root, name, service)
    profile = Profile(read_reference(reference))
    until = time.time() if until is None else until
    records = read_window(found.directory, since=since, until=until)
    if not records:
        raise _nothing_logged(found, since, until)
    current = to_columns(records)
    report = compare(
        profile,
        current,
        psi_threshold=psi_threshold,
        alpha=alpha,
        about=(f"The reference {reference}", f"monitor '{name}'"),
    )
    context = Context(name, found.service, since, until, len(records), reference)
    return report, context


def _nothing_logged(found: MonitorInfo, since: float | None, until: float) -> NotFound:
    window = "" if since is None else f" from {utc(since)} to {utc(until)}"
    if found.newest is None:
        advice = (
            "It has no records yet: a service writes them when an API calls "
            f"tiffin.monitor('{found.name}').log(...)."
        )
    else:
        advice = (
            f"Its newest record is from about {utc(found.newest)}: widen the window "
            "(--window 24h) or move it (--since, --until)."
        )
    return NotFound(
        f"Monitor '{found.name}' logged nothing{window}. {advice}",
        detail={"monitor": found.name, "service": found.service},
    )


# -- HTML ------------------------------------------------------------------------------

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1f2933; margin: 2rem auto;
  max-width: 60rem; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; } h2 { font-size: 1.15rem; margin: 0; }
.meta { color: #52606d; margin-top: 0; }
table { border-collapse: collapse; margin: 1rem 0; width: 100%; }
th, td { padding: 0.3rem 0.6rem; text-align: right; border-bottom: 1px solid #e4e7eb; }
th:nth-child(-n+3), td:nth-child(-n+3) { text-align: left; }
.drift { color: #d64545; font-weight: 600; }
.badge { font-size: 0.75rem; padding: 0.1rem 0.45rem; border-radius: 0.6rem;
  background: #e4e7eb; margin-left: 0.5rem; vertical-align: middle; }
.badge.drift { background: #fde8e8; }
section { margin: 1.5rem 0; } svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px system-ui, sans-serif; fill: #52606d; }
"""


def render_html(report: DriftReport, context: Context) -> str:
    """The report as one HTML page with inline SVG plots."""
    head, tail = summary(report, context)
    escape = html.escape
    table = "".join(
        f"<tr class='{'drift' if f.drifted else 'ok'}'><td>{escape(f.feature)}</td>"
        f"<td>{f.kind}</td><td>{_TEST_NAMES[f.test]}</td>"
        f"<td>{number(f.statistic)}</td><td>{number(f.p_value)}</td><td>{number(f.psi)}</td>"
        f"<td>{f.reference_count}</td><td>{f.current_count}</td>"
        f"<td>{'yes' if f.drifted else 'no'}</td></tr>"
        for f in report.features
    )
    sections = "".join(_section(f) for f in report.features)
    notes = "".join(f"<p>{escape(line)}</p>" for line in tail)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Drift of monitor {escape(context.monitor)}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>Drift of monitor {escape(context.monitor)}</h1>"
        f"<p class='meta'>{escape(head)}</p>{notes}"
        f"<h2>Population stability index</h2>{_psi_chart(report)}"
        "<table><thead><tr>"
        + "".join(f"<th>{c}</th>" for c in _HEADINGS)
        + f"</tr></thead><tbody>{table}</tbody></table>{sections}</body></html>\n"
    )


def _section(feature: FeatureDrift) -> str:
    badge = "drift" if feature.drifted else "no drift"
    test = "Kolmogorov-Smirnov" if feature.test == "ks" else "chi-squared"
    return (
        f"<section id='feature-{html.escape(feature.feature)}'>"
        f"<h2>{html.escape(feature.feature)}"
        f"<span class='badge{' drift' if feature.drifted else ''}'>{badge}</span></h2>"
        f"<p class='meta'>{feature.kind}; PSI {number(feature.psi)}; {test} statistic "
        f"{number(feature.statistic)}, p-value {number(feature.p_value)}; "
        f"{feature.reference_count} reference values, {feature.current_count} logged.</p>"
        f"{_histogram(feature.feature, feature.histogram)}</section>"
    )


def _psi_chart(report: DriftReport) -> str:
    """One horizontal bar per feature, and the threshold as a dashed line."""
    label_width, bar_width, row = 160, 420, 22
    height = row * len(report.features) + 30
    top = max([f.psi for f in report.features] + [report.psi_threshold * 1.5])
    scale = bar_width / top
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' viewBox='0 0 "
        f"{label_width + bar_width + 70} {height}' width='{label_width + bar_width + 70}' "
        f"height='{height}'><title>PSI of each feature</title>"
    ]
    for i, f in enumerate(report.features):
        y = 10 + i * row
        colour = _DRIFT_COLOUR if f.drifted else _LOGGED_COLOUR
        parts.append(
            f"<text x='{label_width - 8}' y='{y + 14}' text-anchor='end'>"
            f"{html.escape(_short(f.feature, 24))}</text>"
            f"<rect x='{label_width}' y='{y + 3}' width='{max(f.psi * scale, 1):.1f}' "
            f"height='{row - 8}' fill='{colour}'><title>{html.escape(f.feature)}: PSI "
            f"{number(f.psi)}</title></rect>"
            f"<text x='{label_width + max(f.psi * scale, 1) + 6:.1f}' y='{y + 14}'>"
            f"{number(f.psi)}</text>"
        )
    x = label_width + report.psi_threshold * scale
    parts.append(
        f"<line x1='{x:.1f}' x2='{x:.1f}' y1='5' y2='{height - 18}' stroke='{_DRIFT_COLOUR}' "
        f"stroke-dasharray='4 3'/><text x='{x:.1f}' y='{height - 4}' text-anchor='middle'>"
        f"threshold {report.psi_threshold:g}</text></svg>"
    )
    return "".join(parts)


def _histogram(name: str, histogram: Histogram) -> str:
    """The shares of the reference and of the logged records in each bin, side by side."""
    width, height, left, bottom = 640, 220, 44, 46
    plot_w, plot_h = width - left - 28, height - bottom - 24
    count = len(histogram.labels)
    slot = plot_w / max(count, 1)
    top = max(histogram.reference + histogram.current + [1e-9])
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}'><title>{html.escape(name)}: reference and logged "
        "shares per bin</title>",
        f"<line x1='{left}' x2='{left + plot_w}' y1='{24 + plot_h}' y2='{24 + plot_h}' "
        "stroke='#cbd2d9'/>",
        f"<text x='{left - 6}' y='{28}' text-anchor='end'>{top:.0%}</text>"
        f"<text x='{left - 6}' y='{24 + plot_h}' text-anchor='end'>0%</text>",
        f"<rect x='{left}' y='4' width='10' height='10' fill='{_REFERENCE_COLOUR}'/>"
        f"<text x='{left + 14}' y='13'>reference</text>"
        f"<rect x='{left + 90}' y='4' width='10' height='10' fill='{_LOGGED_COLOUR}'/>"
        f"<text x='{left + 104}' y='13'>logged</text>",
    ]
    for i, label in enumerate(histogram.labels):
        x = left + i * slot
        for j, (share, colour, side) in enumerate(
            (
                (histogram.reference[i], _REFERENCE_COLOUR, "reference"),
                (histogram.current[i], _LOGGED_COLOUR, "logged"),
            )
        ):
            bar = share / top * plot_h
            parts.append(
                f"<rect x='{x + slot * (0.1 + 0.4 * j):.1f}' y='{24 + plot_h - bar:.1f}' "
                f"width='{slot * 0.4:.1f}' height='{bar:.1f}' fill='{colour}'>"
                f"<title>{html.escape(label)}: {side} {share:.1%}</title></rect>"
            )
    parts.append(_axis_labels(histogram, left, slot, 24 + plot_h))
    parts.append("</svg>")
    return "".join(parts)


def _axis_labels(histogram: Histogram, left: float, slot: float, y: float) -> str:
    if histogram.edges is not None:  # numbers: the edges at the start, middle and end
        edges = histogram.edges
        marks = sorted({0, len(edges) // 2, len(edges) - 1})
        return "".join(
            f"<text x='{left + i * slot:.1f}' y='{y + 16}' text-anchor='middle'>"
            f"{edges[i]:.4g}</text>"
            for i in marks
        )
    return "".join(
        f"<text x='{left + (i + 0.5) * slot:.1f}' y='{y + 16}' text-anchor='middle'>"
        f"{html.escape(_short(label, max(int(slot / 7), 3)))}</text>"
        for i, label in enumerate(histogram.labels)
    )


def _short(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
