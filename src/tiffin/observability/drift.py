"""Drift: how far what a monitor logged has moved from a reference data set.

Each feature the reference and the logged records both have is compared on its own. Its
kind comes from the reference: **numeric** when every value there is a number (booleans
are not), else **categorical** (values compared as text). Missing values (None, NaN) are
left out; so are values of a numeric feature that are not numbers.

- **Population stability index** (PSI), for both kinds: ``sum((a - e) * ln(a / e))``
  over bins, where ``e`` and ``a`` are the shares of the reference and of the logged
  records in each bin. A numeric feature's bins are cut at the reference's deciles (fewer
  where the deciles coincide), so each holds a tenth of the reference; a categorical
  feature's bins are its categories, those seen only in the logged records included. An
  empty bin counts as a share of ``EPSILON`` (1e-4), so the index stays finite. Read it
  as: below 0.1 no real change, 0.1 to 0.2 some, above 0.2 a shift worth acting on.
- **Kolmogorov-Smirnov**, for numeric features: the two-sample statistic (the largest
  gap between the two empirical distribution functions) and its two-sided p-value,
  exact for small samples and asymptotic for large ones (``scipy.stats.ks_2samp``).
- **Chi-squared**, for categorical features: the test of homogeneity of the 2 x k table
  of counts per category (reference, logged), without continuity correction
  (``scipy.stats.chi2_contingency``).

A feature has **drifted** when its PSI is at least ``psi_threshold`` (0.2) *and* its
test's p-value is below ``alpha`` (0.05): the shift is both large enough to matter and
more than the noise of a small window. (With many records any shift is significant; with
few, the PSI of an unchanged feature can be large by chance.)

The live drift of a server (``LiveDrift``) is the PSI alone, computed by one worker at a
time every ``monitor_drift_interval`` seconds over the newest ``monitor_drift_window``
seconds of records (at most ``LIVE_LIMIT`` of them), and set as the gauge
``tiffin_drift_score{monitor, feature}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from prometheus_client import Gauge

from tiffin.exceptions import InvalidArgument
from tiffin.extras import import_optional
from tiffin.observability.monitor_store import (
    Columns,
    read_reference,
    read_window,
    to_columns,
)

__all__ = [
    "EPSILON",
    "LIVE_LIMIT",
    "DriftReport",
    "FeatureDrift",
    "Histogram",
    "LiveDrift",
    "Profile",
    "chi2_test",
    "compare",
    "ks_test",
    "population_stability_index",
]

EPSILON = 1e-4
"""The share an empty bin counts as in the PSI."""
BINS = 10
"""PSI bins of a numeric feature: the reference's deciles."""
LIVE_LIMIT = 50_000
"""The most records one live drift computation reads (the newest)."""
_PLOT_BINS = 20
_PLOT_CATEGORIES = 12

log = logging.getLogger("tiffin.monitoring")

Kind = Literal["numeric", "categorical"]


# -- the statistics ------------------------------------------------------------------


def population_stability_index(expected: Any, actual: Any) -> float:
    """The PSI of ``actual`` against ``expected``: counts (or shares) over the same bins.

    Example:
        population_stability_index([25, 25, 25, 25], [10, 20, 30, 40])  # 0.2282
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = np.maximum(e / e.sum(), EPSILON)
    a = np.maximum(a / a.sum(), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_test(reference: Any, current: Any) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov statistic and two-sided p-value."""
    stats = import_optional("scipy.stats", "monitor", purpose="for the Kolmogorov-Smirnov test")
    result = stats.ks_2samp(np.asarray(reference, float), np.asarray(current, float))
    return float(result.statistic), float(result.pvalue)


def chi2_test(reference: Any, current: Any) -> tuple[float, float]:
    """The chi-squared statistic and p-value of the 2 x k table of counts per category
    (``reference`` and ``current`` count the same categories, in the same order)."""
    table = np.asarray([reference, current], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:  # one category: nothing can differ
        return 0.0, 1.0
    stats = import_optional("scipy.stats", "monitor", purpose="for the chi-squared test")
    result = stats.chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def _numbers(values: Sequence[Any]) -> np.ndarray | None:
    """The numbers among ``values`` as floats (None and NaN left out), or None when a
    value is something else."""
    kept = []
    for value in values:
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        kept.append(value)
    array = np.asarray(kept, dtype=float)
    finite: np.ndarray = array[~np.isnan(array)]
    return finite


def _only_numbers(values: Sequence[Any]) -> np.ndarray:
    array = np.asarray(
        [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)], float
    )
    finite: np.ndarray = array[~np.isnan(array)]
    return finite


def _categories(values: Sequence[Any]) -> list[str]:
    return [
        v if isinstance(v, str) else str(v)
        for v in values
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]


# -- the reference, prepared -----------------------------------------------------------


@dataclass(frozen=True)
class _Feature:
    kind: Kind
    values: np.ndarray | list[str]
    edges: np.ndarray | None = None  # numeric: the inner edges of the PSI bins
    counts: Any = None  # numeric: an array per bin; categorical: a Counter


class Profile:
    """A reference data set prepared for comparisons: each feature's kind, its PSI bins
    and its counts in them, worked out once.

    Example:
        profile = Profile(read_reference(Path("reference.parquet")))
        profile.psi(to_columns(records))   # {"sepal_length": 0.03, ...}
    """

    def __init__(self, reference: Columns) -> None:
        self.rows = max((len(v) for v in reference.values()), default=0)
        self.features: dict[str, _Feature] = {}
        for name, values in reference.items():
            numbers = _numbers(values)
            if numbers is not None and numbers.size:
                edges = np.unique(np.quantile(numbers, np.linspace(0, 1, BINS + 1)[1:-1]))
                counts = _bin_counts(numbers, edges)
                self.features[name] = _Feature("numeric", numbers, edges, counts)
            else:
                categories = _categories(values)
                if categories:
                    self.features[name] = _Feature(
                        "categorical", categories, counts=Counter(categories)
                    )

    def psi(self, current: Columns) -> dict[str, float]:
        """The PSI of each feature ``current`` shares with the reference (and has values of)."""
        found = {}
        for name, values in current.items():
            feature = self.features.get(name)
            if feature is None:
                continue
            binned = self.binned(name, values)
            if binned.values:
                found[name] = population_stability_index(binned.expected, binned.actual)
        return found

    def binned(self, name: str, values: Sequence[Any]) -> _Binned:
        """The reference's and ``values``' counts in the PSI bins of feature ``name``."""
        feature = self.features[name]
        if feature.kind == "numeric":
            numbers = _only_numbers(values)
            actual = _bin_counts(numbers, feature.edges)
            return _Binned([], feature.counts.tolist(), actual.tolist(), numbers.tolist())
        categories = _categories(values)
        seen = Counter(categories)
        labels = list(feature.counts) + [c for c in seen if c not in feature.counts]
        expected = [feature.counts[c] for c in labels]
        return _Binned(labels, expected, [seen[c] for c in labels], categories)


@dataclass(frozen=True)
class _Binned:
    labels: list[str]  # categorical only: the category of each bin
    expected: list[int]
    actual: list[int]
    values: list[Any]  # the values counted


def _bin_counts(values: np.ndarray, edges: Any) -> np.ndarray:
    """How many values fall in each bin between ``edges`` (a value on an edge counts in
    the bin above it)."""
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


# -- comparing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    """What a feature's plot shows: a label per bin and each side's share in it."""

    labels: list[str]
    reference: list[float]
    current: list[float]
    edges: list[float] | None = None


@dataclass(frozen=True)
class FeatureDrift:
    """How one feature moved."""

    feature: str
    kind: Kind
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    psi: float
    reference_count: int
    current_count: int
    drifted: bool
    histogram: Histogram = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "kind": self.kind,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "psi": self.psi,
            "reference_count": self.reference_count,
            "current_count": self.current_count,
            "drift": self.drifted,
        }


@dataclass(frozen=True)
class DriftReport:
    """Every common feature's drift; the features only one side has; and those logged
    without a value the comparison can use (none, or text for a numeric feature)."""

    features: list[FeatureDrift]
    not_logged: list[str]
    not_in_reference: list[str]
    no_values: list[str]
    reference_rows: int
    current_rows: int
    psi_threshold: float
    alpha: float

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]


def compare(
    reference: Columns | Profile,
    current: Columns,
    *,
    psi_threshold: float = 0.2,
    alpha: float = 0.05,
    about: tuple[str, str] = ("The reference", "the logged records"),
) -> DriftReport:
    """Compare ``current`` with ``reference``, feature by feature; ``about`` names the
    two in an error.

    Raises:
        InvalidArgument: they have no feature in common.

    Example:
        report = compare(read_reference(path), to_columns(records))
        report.drifted   # ["petal_length"]
    """
    profile = reference if isinstance(reference, Profile) else Profile(reference)
    common = [name for name in current if name in profile.features]
    if not common:
        raise InvalidArgument(
            f"{about[0]} and {about[1]} have no feature in common: the reference has "
            f"{_names(profile.features)}; the monitor logged {_names(current)}. Name the "
            "reference's columns as the features are logged.",
            detail={"reference": sorted(profile.features), "logged": sorted(current)},
        )
    features = []
    no_values = []
    for name in common:
        feature = profile.features[name]
        binned = profile.binned(name, current[name])
        if not binned.values:
            no_values.append(name)
            continue
        psi = population_stability_index(binned.expected, binned.actual)
        if feature.kind == "numeric":
            statistic, p_value = ks_test(feature.values, binned.values)
            histogram = _numeric_histogram(np.asarray(feature.values), np.asarray(binned.values))
        else:
            statistic, p_value = chi2_test(binned.expected, binned.actual)
            histogram = _category_histogram(binned)
        features.append(
            FeatureDrift(
                feature=name,
                kind=feature.kind,
                test="ks" if feature.kind == "numeric" else "chi2",
                statistic=statistic,
                p_value=p_value,
                psi=psi,
                reference_count=len(feature.values),
                current_count=len(binned.values),
                drifted=psi >= psi_threshold and p_value < alpha,
                histogram=histogram,
            )
        )
    return DriftReport(
        features=features,
        not_logged=sorted(set(profile.features) - set(current)),
        not_in_reference=sorted(set(current) - set(profile.features)),
        no_values=no_values,
        reference_rows=profile.rows,
        current_rows=max((len(v) for v in current.values()), default=0),
        psi_threshold=psi_threshold,
        alpha=alpha,
    )


def _names(names: Mapping[str, Any]) -> str:
    shown = sorted(names)[:10]
    more = f" and {len(names) - len(shown)} more" if len(names) > len(shown) else ""
    return (", ".join(shown) + more) if shown else "none"


def _numeric_histogram(reference: np.ndarray, current: np.ndarray) -> Histogram:
    """Equal-width bins over the range both sides share most of (0.5th to 99.5th
    percentile of the two together), the tails folded into the end bins."""
    both = np.concatenate([reference, current])
    low, high = np.quantile(both, [0.005, 0.995])
    if high <= low:
        low, high = float(both.min()) - 0.5, float(both.max()) + 0.5
    edges = np.linspace(low, high, _PLOT_BINS + 1)

    def shares(values: np.ndarray) -> list[float]:
        counts = np.histogram(np.clip(values, low, high), edges)[0]
        return (counts / max(values.size, 1)).tolist()  # type: ignore[no-any-return]

    labels = [f"{edges[i]:.4g} to {edges[i + 1]:.4g}" for i in range(_PLOT_BINS)]
    return Histogram(labels, shares(reference), shares(current), edges.tolist())


def _category_histogram(binned: _Binned) -> Histogram:
    """The most common categories (of both sides together), the rest as ``(other)``."""
    expected = np.asarray(binned.expected, float) / max(sum(binned.expected), 1)
    actual = np.asarray(binned.actual, float) / max(sum(binned.actual), 1)
    order = np.argsort(-(expected + actual), kind="stable")
    top, rest = order[:_PLOT_CATEGORIES], order[_PLOT_CATEGORIES:]
    labels = [binned.labels[i] for i in top]
    shares = expected[top].tolist(), actual[top].tolist()
    if rest.size:
        labels.append("(other)")
        shares[0].append(float(expected[rest].sum()))
        shares[1].append(float(actual[rest].sum()))
    return Histogram(labels, shares[0], shares[1])


# -- live, in a server -----------------------------------------------------------------


class LiveDrift:
    """The live drift of a service's monitors, set as a gauge every ``interval`` seconds.

    Args:
        directory: the service's directory in the store.
        references: monitor name -> reference file (None: every other monitor).
        gauge: ``tiffin_drift_score``, labelled ``monitor`` and ``feature``.
        interval: seconds between two computations.
        window: seconds of the newest records each covers.

    Every worker of a server has one, and they take turns: a computation holds a lock on
    ``<directory>/.drift.lock``, and one that finds the last computation (by any worker)
    less than half an interval old leaves it at that.
    """

    def __init__(
        self,
        directory: Path,
        references: Mapping[str | None, Path],
        gauge: Gauge,
        *,
        interval: float,
        window: float,
    ) -> None:
        self.directory = directory
        self.references = dict(references)
        self.gauge = gauge
        self.interval = interval
        self.window = window
        self.profiles: dict[Path, Profile] = {}
        self._task: asyncio.Task[None] | None = None
        self._warned: set[str] = set()

    async def start(self) -> None:
        """Read the references (a bad one stops the start, with why) and begin."""
        self.profiles = await asyncio.to_thread(self._load)
        self._task = asyncio.create_task(self._run(), name="tiffin-live-drift")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _load(self) -> dict[Path, Profile]:
        return {path: Profile(read_reference(path)) for path in set(self.references.values())}

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.measure)
            except Exception:
                log.exception("The live drift of %s could not be measured", self.directory)
            await asyncio.sleep(self.interval)

    def measure(self, now: float | None = None) -> dict[str, dict[str, float]] | None:
        """Measure every monitor's drift now and set the gauge; returns the PSI by monitor
        and feature, or None when it was another worker's turn."""
        now = time.time() if now is None else now
        with _turn(self.directory, now, self.interval) as mine:
            if not mine:
                return None
            found: dict[str, dict[str, float]] = {}
            for monitor in sorted(self._monitors()):
                path = self.references.get(monitor.name, self.references.get(None))
                if path is None:
                    continue
                skipped: list[Path] = []
                records = read_window(
                    monitor, since=now - self.window, limit=LIVE_LIMIT, strict=False,
                    skipped=skipped,
                )  # fmt: skip
                for bad in skipped:
                    self._warn(str(bad), "Left out of the live drift, unreadable: %s", bad)
                if not records:
                    continue
                scores = self.profiles[path].psi(to_columns(records))
                if not scores:
                    self._warn(
                        monitor.name,
                        "Monitor %s has no feature in common with its reference %s",
                        monitor.name,
                        path,
                    )
                for feature, value in scores.items():
                    self.gauge.labels(monitor.name, feature).set(value)
                found[monitor.name] = scores
            return found

    def _monitors(self) -> list[Path]:
        try:
            return [p for p in self.directory.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    def _warn(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


@contextlib.contextmanager
def _turn(directory: Path, now: float, interval: float) -> Iterator[bool]:
    """Whether this process measures now: it holds the lock, and the last measurement
    (written in the lock file) is at least half an interval old."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".drift.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            last = float(os.pread(fd, 64, 0) or b"0")
        except ValueError:
            last = 0.0
        if now - last < interval / 2:
            yield False
            return
        yield True
        stamp = repr(now).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, stamp, 0)
    finally:
        os.close(fd)  # releases the lock
