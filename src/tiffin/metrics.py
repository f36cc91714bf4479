"""Your service's own metrics, on ``/metrics`` beside tiffin's, from every worker.

Each function returns a prometheus_client metric (``Counter``, ``Gauge``,
``Histogram``), so ``.inc()``, ``.set()``, ``.observe()``, ``.time()`` and
``.labels(...)`` work as prometheus_client documents them. Define a metric once: at
module level or in the service's class body (both run when the module is imported), or
in ``__init__``.

    import tiffin

    predictions = tiffin.metrics.counter(
        "iris_predictions", "Predictions made, by predicted class.", labels=["label"]
    )

    @tiffin.service(workers=2)
    class Iris:
        @tiffin.api
        def predict(self, features: np.ndarray) -> np.ndarray:
            labels = self.clf.predict(features)
            for label in labels:
                predictions.labels(str(label)).inc()
            return labels

With several workers, ``/metrics`` (answered by any of them) shows every worker's
values together: a counter's or a histogram's are added up, over every worker the
server has run; a gauge's are combined as its ``combine`` says, over the workers alive
now. A metric defined while the service's module is imported, which happens in the
server's main process before the workers are started, is fine: each worker writes its
own values from its start. A gauge keeps the value it was given during the import;
counts made during the import are not any worker's, so no worker shows them (with
``start_method: spawn`` each worker imports the module itself, and counts its own).

A name is letters, digits, ``_`` and ``:``, not starting with a digit; names starting
with ``tiffin_`` are tiffin's own. A counter's name may end in ``_total`` or not:
``/metrics`` shows ``<name>_total`` either way. Defining a metric again with the same
name, kind, description, labels and options (a module imported a second time) returns
the one defined first; anything else under a name in use raises ``InvalidArgument``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar, cast

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import DuplicateTimeseries

from tiffin.exceptions import InvalidArgument
from tiffin.observability.metrics import REGISTRY, defined, keep

__all__ = ["DEFAULT_BUCKETS", "counter", "gauge", "histogram"]

DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""A histogram's buckets when none are given: upper bounds in seconds, for timings."""

_M = TypeVar("_M", bound=MetricWrapperBase)

_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMBINE = {
    "sum": "livesum",
    "max": "livemax",
    "min": "livemin",
    "latest": "livemostrecent",
    "each": "liveall",
}
# Labels a kind of metric cannot have: a histogram's bucket bound, and the worker's pid
# that a gauge's series get when ``combine="each"``.
_RESERVED = {"counter": (), "gauge": ("pid",), "histogram": ("le",)}


def counter(name: str, documentation: str, labels: Iterable[str] = ()) -> Counter:
    """A counter: a total that only goes up (``.inc()``, ``.inc(amount)``).

    Args:
        name: the metric's name (``/metrics`` shows ``<name>_total``).
        documentation: what it counts, one sentence (its ``# HELP`` line).
        labels: the names of its labels; give their values with ``.labels(...)``.

    Example:
        errors = tiffin.metrics.counter("iris_bad_rows", "Rows refused.", labels=["why"])
        errors.labels("nan").inc()
    """
    family = name.removesuffix("_total")
    names = _check("counter", family, documentation, labels)
    return _define(
        ("counter", documentation, names),
        family,
        lambda: Counter(family, documentation, names, registry=REGISTRY),
    )


def gauge(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    *,
    combine: Literal["sum", "max", "min", "latest", "each"] = "sum",
) -> Gauge:
    """A gauge: a value that goes up and down (``.set()``, ``.inc()``, ``.dec()``).

    Args:
        name: the metric's name.
        documentation: what it measures, one sentence (its ``# HELP`` line).
        labels: the names of its labels; give their values with ``.labels(...)``.
        combine: how the values of the workers alive now make the one ``/metrics``
            shows: ``sum``, ``max``, ``min``, ``latest`` (the one set last), or
            ``each`` (one series per worker, with a ``pid`` label). A worker that has
            exited no longer counts. ``set_function`` works with one worker only.

    Example:
        cached = tiffin.metrics.gauge("iris_cache_entries", "Entries in the cache.")
        cached.set(len(self.cache))
    """
    if combine not in _COMBINE:
        raise InvalidArgument(
            f"Gauge '{name}': combine={combine!r} is not one of "
            f"{', '.join(repr(c) for c in _COMBINE)}. Pick how the workers' values combine.",
            detail={"metric": name, "combine": combine},
        )
    names = _check("gauge", name, documentation, labels)
    mode: Any = _COMBINE[combine]
    return _define(
        ("gauge", documentation, names, combine),
        name,
        lambda: Gauge(name, documentation, names, multiprocess_mode=mode, registry=REGISTRY),
    )


def histogram(
    name: str,
    documentation: str,
    labels: Iterable[str] = (),
    *,
    buckets: Sequence[float] = DEFAULT_BUCKETS,
) -> Histogram:
    """A histogram: observations counted in buckets, with their count and sum
    (``.observe(value)``, ``with .time():``).

    Args:
        name: the metric's name (``/metrics`` shows ``<name>_bucket``, ``_count``, ``_sum``).
        documentation: what it observes, one sentence (its ``# HELP`` line).
        labels: the names of its labels; give their values with ``.labels(...)``.
        buckets: the buckets' upper bounds, in increasing order (``+Inf`` is added).

    Example:
        confidence = tiffin.metrics.histogram(
            "iris_confidence", "Top class probability.", buckets=(0.5, 0.8, 0.9, 0.99)
        )
        confidence.observe(float(probabilities.max()))
    """
    names = _check("histogram", name, documentation, labels)
    try:
        bounds = tuple(float(bound) for bound in buckets)
    except (TypeError, ValueError):
        bounds = ()
    if not bounds or list(bounds) != sorted(set(bounds)):
        raise InvalidArgument(
            f"Histogram '{name}': buckets={tuple(buckets)!r} are not numbers in increasing "
            "order. Give the buckets' upper bounds from smallest to largest.",
            detail={"metric": name},
        )
    return _define(
        ("histogram", documentation, names, bounds),
        name,
        lambda: Histogram(name, documentation, names, buckets=bounds, registry=REGISTRY),
    )


def _check(kind: str, name: str, documentation: str, labels: Iterable[str]) -> tuple[str, ...]:
    """Validate a definition; returns the label names as a tuple."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{name!r} is not a valid metric name. Use letters, digits, '_' and ':', not "
            "starting with a digit (e.g. 'iris_predictions').",
            detail={"metric": str(name)},
        )
    if name.startswith("tiffin_"):
        raise InvalidArgument(
            f"Metric '{name}': names starting with 'tiffin_' are tiffin's own metrics. Name "
            "yours after your service (e.g. 'iris_predictions').",
            detail={"metric": name},
        )
    if not isinstance(documentation, str) or not documentation.strip():
        raise InvalidArgument(
            f"Metric '{name}' has no description. Say in a sentence what it "
            f"{'counts' if kind == 'counter' else 'measures'}; it is its # HELP line.",
            detail={"metric": name},
        )
    if isinstance(labels, str):
        raise InvalidArgument(
            f"Metric '{name}': labels={labels!r} is one string. Give a list of label names, "
            f"e.g. labels=[{labels!r}].",
            detail={"metric": name},
        )
    names = tuple(labels)
    for label in names:
        if not isinstance(label, str) or not _LABEL.fullmatch(label) or label.startswith("__"):
            raise InvalidArgument(
                f"Metric '{name}': {label!r} is not a valid label name. Use letters, digits "
                "and '_', not starting with a digit or '__'.",
                detail={"metric": name, "label": str(label)},
            )
        if label in _RESERVED[kind]:
            raise InvalidArgument(
                f"Metric '{name}': a {kind} cannot have a label named '{label}'; tiffin or "
                "Prometheus gives its series that label. Pick another name.",
                detail={"metric": name, "label": label},
            )
    if len(set(names)) != len(names):
        raise InvalidArgument(
            f"Metric '{name}' names a label twice: {', '.join(names)}. Give each once.",
            detail={"metric": name},
        )
    return names


def _define(definition: tuple[Any, ...], name: str, make: Callable[[], _M]) -> _M:
    """The metric kept under ``name`` if ``definition`` matches it, else a new one."""
    found = defined(name)
    if found is not None:
        existing, kept = found
        if existing == definition:
            return cast(_M, kept)  # the same definition: the same kind
        raise InvalidArgument(
            f"Metric '{name}' is defined already, as {_describe(existing)}; this definition "
            f"is {_describe(definition)}. Give this metric another name, or define it the "
            "same way.",
            detail={"metric": name},
        )
    try:
        metric = make()
    except DuplicateTimeseries as exc:
        taken = ", ".join(sorted(exc.duplicates))
        raise InvalidArgument(
            f"Metric '{name}' would show series named {taken}, which another metric shows "
            "already. Give it another name.",
            detail={"metric": name, "series": sorted(exc.duplicates)},
        ) from None
    keep(name, definition, metric)
    return metric


def _describe(definition: tuple[Any, ...]) -> str:
    kind, documentation, labels, *options = definition
    text = f"a {kind} ({documentation!r}) with labels ({', '.join(labels)})"
    if kind == "gauge":
        text += f", combine={options[0]!r}"
    elif kind == "histogram":
        text += f", buckets={options[0]!r}"
    return text
