"""The server's recent metrics, sampled into memory: what ``/dashboard`` charts and
alert rules are measured on.

Every ``history_interval`` seconds (5 by default) each worker reads the server's
metrics as ``/metrics`` reports them: with several workers, summed over all of them
(prometheus_client's multiprocess files), so every worker keeps the same history and
whichever answers ``/dashboard/data`` answers for the whole server. The read runs in a
thread beside the event loop, never on a request's path, and costs a request nothing.

Each read is a *snapshot* of cumulative values: by API, requests answered, with 4xx
and with 5xx, the latency histogram's buckets, requests in flight, and the batch size
histogram's buckets (batched APIs); and each drift score (``tiffin_drift_score`` by
``monitor`` and ``feature``, the highest where several workers report one; absent
until data monitoring reports one). Two snapshots in a row make a *point*, what
happened between them, ready to chart::

    t              the later snapshot's time (Unix seconds)
    rate           requests answered per second
    errors         5xx answers per second          client_errors   4xx answers per second
    p50, p90, p99  request latency, seconds        in_flight       requests in flight
    batch_mean, batch_p50, batch_p99               rows per batched call (batched APIs)

by API and for all APIs together (``total``). A ring buffer keeps the last hour of both
(720 of each at 5 s). Alert rules ask for a measure over a window (``error_rate``,
``quantile``, ``drift``), which compares the newest snapshot with the one a window
before it.

Quantiles come from histogram bucket counts by linear interpolation inside a bucket,
as Prometheus' ``histogram_quantile`` computes them, so a p99 here is the p99 a PromQL
query over the same buckets gives; one that falls in the last, unbounded bucket is
that bucket's lower bound. A counter that went down (its process restarted) counts from
zero.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from tiffin.observability.metrics import ServerMetrics

__all__ = ["FIELDS", "SPAN", "ApiSnapshot", "Buckets", "History", "Snapshot"]

SPAN = 3600.0
"""Seconds of history kept."""
FIELDS = (
    "rate",
    "errors",
    "client_errors",
    "p50",
    "p90",
    "p99",
    "in_flight",
    "batch_mean",
    "batch_p50",
    "batch_p99",
)
"""The values of a point, by API, in this order."""

log = logging.getLogger("tiffin.server")

Point = tuple[float | None, ...]
"""One API's values between two snapshots, in the order of ``FIELDS``."""


@dataclass(frozen=True, slots=True)
class Buckets:
    """A histogram's cumulative bucket counts (``counts[i]`` observations at or below
    ``bounds[i]``; the last bound is infinity) and the sum of its observations."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float = 0.0

    @property
    def count(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    def since(self, older: Buckets | None) -> Buckets:
        """What was observed after ``older``: everything, when ``older`` is missing, has
        other bounds, or counted more (a reset)."""
        if older is None or older.bounds != self.bounds or older.count > self.count:
            return self
        return Buckets(
            self.bounds,
            tuple(max(0.0, new - old) for new, old in zip(self.counts, older.counts, strict=True)),
            max(0.0, self.sum - older.sum),
        )

    def plus(self, other: Buckets) -> Buckets:
        """Both histograms' observations, as one (the same bounds); ``self`` otherwise."""
        if other.bounds != self.bounds:
            return self
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return Buckets(self.bounds, counts, self.sum + other.sum)

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile of the observations, as ``histogram_quantile`` gives it;
        None when there are none."""
        total = self.count
        if total <= 0:
            return None
        rank = q * total
        lower, below = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.counts, strict=True):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                if inside <= 0:
                    return bound
                return lower + (bound - lower) * (rank - below) / inside
            lower, below = bound, cumulative
        return lower

    def mean(self) -> float | None:
        total = self.count
        return self.sum / total if total > 0 else None


@dataclass(frozen=True, slots=True)
class ApiSnapshot:
    """One API's cumulative values at one time."""

    requests: float
    client_errors: float
    errors: float
    latency: Buckets
    in_flight: float
    batch: Buckets | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's metrics at one time (Unix seconds): by API, and each drift score by
    ``(monitor, feature)``."""

    time: float
    apis: dict[str, ApiSnapshot]
    drift: dict[tuple[str, str], float]


_EMPTY = Buckets((), ())


class _Reading:
    """The samples of one read, gathered by API."""

    def __init__(self, apis: Iterable[str]) -> None:
        self.requests: dict[str, list[float]] = {api: [0.0, 0.0, 0.0] for api in apis}
        self.latency: dict[str, dict[float, float]] = {}
        self.latency_sum: dict[str, float] = {}
        self.in_flight: dict[str, float] = {}
        self.batch: dict[str, dict[float, float]] = {}
        self.batch_sum: dict[str, float] = {}
        self.drift: dict[tuple[str, str], float] = {}

    def add(self, name: str, labels: dict[str, str], value: float) -> None:
        api = labels.get("api", "")
        if name == "tiffin_requests_total":
            counts = self.requests.setdefault(api, [0.0, 0.0, 0.0])
            counts[0] += value
            status = labels.get("status", "")
            if status.startswith("4"):
                counts[1] += value
            elif status.startswith("5"):
                counts[2] += value
        elif name == "tiffin_request_duration_seconds_bucket":
            bound = float(labels["le"])
            self.latency.setdefault(api, {})[bound] = value
        elif name == "tiffin_request_duration_seconds_sum":
            self.latency_sum[api] = value
        elif name == "tiffin_requests_in_flight":
            self.in_flight[api] = self.in_flight.get(api, 0.0) + value
        elif name == "tiffin_batch_size_bucket":
            bound = float(labels["le"])
            self.batch.setdefault(api, {})[bound] = value
        elif name == "tiffin_batch_size_sum":
            self.batch_sum[api] = value
        elif name == "tiffin_drift_score" and not math.isnan(value):
            key = (labels.get("monitor", ""), labels.get("feature", ""))
            self.drift[key] = max(value, self.drift.get(key, -math.inf))

    def snapshot(self, now: float) -> Snapshot:
        apis = {}
        for api in sorted(set(self.requests) | set(self.latency)):
            total, client_errors, errors = self.requests.get(api, (0.0, 0.0, 0.0))
            batch = self.batch.get(api)
            apis[api] = ApiSnapshot(
                requests=total,
                client_errors=client_errors,
                errors=errors,
                latency=_buckets(self.latency.get(api), self.latency_sum.get(api, 0.0)),
                in_flight=self.in_flight.get(api, 0.0),
                batch=None if batch is None else _buckets(batch, self.batch_sum.get(api, 0.0)),
            )
        return Snapshot(now, apis, self.drift)


def _buckets(found: dict[float, float] | None, total: float) -> Buckets:
    if not found:
        return _EMPTY
    bounds = tuple(sorted(found))
    return Buckets(bounds, tuple(found[bound] for bound in bounds), total)


def _rounded(value: float | None) -> float | None:
    """Four significant digits: plenty for a chart, and a short JSON number."""
    if value is None:
        return None
    return float(f"{value:.4g}")


def _counted(new: float, old: float) -> float:
    """How much a counter grew; all of it when it went down (a reset)."""
    return new - old if new >= old else new


class History:
    """An hour of the server's metrics, sampled every ``interval`` seconds; a part of
    ``App.background`` (see the module docstring).

    Args:
        metrics: the server's metrics, read as ``/metrics`` reads them.
        apis: the service's API names, listed even before their first request.
        interval: seconds between two samples.

    Example:
        history = History(app.metrics, ["predict"], interval=5.0)
        await history.start()
        history.error_rate(300, api="predict")  # 0.0125, or None without requests
    """

    def __init__(self, metrics: ServerMetrics, apis: Iterable[str], *, interval: float) -> None:
        self.metrics = metrics
        self.apis = tuple(apis)
        self.interval = interval
        size = math.ceil(SPAN / interval) + 1
        self.snapshots: deque[Snapshot] = deque(maxlen=size)
        self.points: deque[tuple[float, dict[str, Point], dict[tuple[str, str], float]]] = deque(
            maxlen=size - 1
        )
        self._listeners: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    # -- sampling --------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` on the event loop after each sample is added."""
        self._listeners.append(listener)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tiffin-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        started = time.monotonic()
        ticks = 0
        failed = False
        while True:
            try:
                self.metrics.flush()  # here, on the loop that records requests
                snapshot = await asyncio.to_thread(self._collect)
            except Exception:
                if not failed:  # once, not every few seconds
                    log.exception("Reading the server's metrics for its history failed.")
                failed = True
            else:
                failed = False
                self.add(snapshot)
                for listener in self._listeners:
                    try:
                        listener()
                    except Exception:
                        log.exception("%r failed on a new sample of the history.", listener)
            # on a fixed grid, so samples stay `interval` apart however long a read took
            ticks = max(ticks + 1, math.ceil((time.monotonic() - started) / self.interval))
            await asyncio.sleep(started + ticks * self.interval - time.monotonic())

    def _metrics(self) -> Iterable[Metric]:
        directory = self.metrics.multiprocess_dir
        if directory:
            collector = MultiProcessCollector(None, path=directory)  # type: ignore[no-untyped-call]
            found: Iterable[Metric] = collector.collect()  # type: ignore[no-untyped-call]
            return found
        return self.metrics.registry.collect()

    def read(self) -> Snapshot:
        """A snapshot of the server's metrics now (reads files in multiprocess mode); call
        it where the requests are recorded, on the event loop."""
        self.metrics.flush()
        return self._collect()

    def _collect(self) -> Snapshot:
        """``read`` without the flush: what the last one passed on, for a thread."""
        reading = _Reading(self.apis)
        for metric in self._metrics():
            if not metric.name.startswith("tiffin_"):
                continue
            for sample in metric.samples:
                reading.add(sample.name, sample.labels, sample.value)
        # to the millisecond, as /dashboard/data gives it, so ?since= compares equal
        return reading.snapshot(round(time.time(), 3))

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot``, and the point it makes with the one before."""
        if self.snapshots:
            previous = self.snapshots[-1]
            if snapshot.time > previous.time:
                apis = _points(previous, snapshot)
                self.points.append((snapshot.time, apis, snapshot.drift))
        self.snapshots.append(snapshot)

    # -- what the dashboard shows ----------------------------------------------------

    def data(self, since: float = 0.0) -> dict[str, Any]:
        """The points after ``since`` (Unix seconds), column by column, for JSON::

        {"interval": 5.0, "span": 3600.0, "fields": [...], "t": [...],
         "total": {"rate": [...], ...}, "apis": {"predict": {"rate": [...], ...}},
         "batched": ["predict"], "drift": [{"monitor", "feature", "values": [...]}]}
        """
        chosen = [point for point in self.points if point[0] > since]
        names = sorted({api for _, apis, _ in chosen for api in apis} - {""} | set(self.apis))

        def columns(api: str) -> dict[str, list[float | None]]:
            rows = [apis.get(api) for _, apis, _ in chosen]
            return {
                field: [None if row is None else row[i] for row in rows]
                for i, field in enumerate(FIELDS)
            }

        drift_keys = sorted({key for _, _, drift in chosen for key in drift})
        latest = self.snapshots[-1].apis if self.snapshots else {}
        batched = [api for api in names if api in latest and latest[api].batch is not None]
        return {
            "interval": self.interval,
            "span": SPAN,
            "fields": list(FIELDS),
            "t": [t for t, _, _ in chosen],
            "total": columns(""),
            "apis": {api: columns(api) for api in names},
            "batched": batched,
            "drift": [
                {
                    "monitor": monitor,
                    "feature": feature,
                    "values": [drift.get((monitor, feature)) for _, _, drift in chosen],
                }
                for monitor, feature in drift_keys
            ],
        }

    # -- what alert rules measure ----------------------------------------------------

    def window(self, seconds: float) -> tuple[Snapshot, Snapshot] | None:
        """The newest snapshot and the one ``seconds`` before it (the oldest kept, when
        the history is shorter); None before there are two."""
        if len(self.snapshots) < 2:
            return None
        newest = self.snapshots[-1]
        start = newest.time - seconds + self.interval / 2  # a sample a little late still counts
        older = self.snapshots[0]
        for snapshot in reversed(self.snapshots):
            if snapshot.time <= start and snapshot is not newest:
                older = snapshot
                break
        return older, newest

    def error_rate(self, seconds: float, api: str | None = None) -> float | None:
        """The share of requests answered with a 5xx status over the last ``seconds``,
        of ``api`` or of every API; None when there were no requests."""
        found = self.window(seconds)
        if found is None:
            return None
        older, newest = found
        total = errors = 0.0
        for name, now in _selected(newest, api):
            then = older.apis.get(name)
            total += _counted(now.requests, then.requests if then else 0.0)
            errors += _counted(now.errors, then.errors if then else 0.0)
        return errors / total if total > 0 else None

    def quantile(self, q: float, seconds: float, api: str | None = None) -> float | None:
        """The ``q``-quantile of request latency in seconds over the last ``seconds``, of
        ``api`` or of every API; None when there were no requests."""
        found = self.window(seconds)
        if found is None:
            return None
        older, newest = found
        merged: Buckets | None = None
        for name, now in _selected(newest, api):
            then = older.apis.get(name)
            observed = now.latency.since(then.latency if then else None)
            merged = observed if merged is None else merged.plus(observed)
        return None if merged is None else merged.quantile(q)

    def drift(
        self, seconds: float, monitor: str | None = None, feature: str | None = None
    ) -> tuple[float, str, str] | None:
        """The highest mean drift score over the last ``seconds`` among the scores of
        ``monitor`` and ``feature`` (each: all, when None), with its monitor and feature;
        None when there is none."""
        if not self.snapshots:
            return None
        start = self.snapshots[-1].time - seconds + self.interval / 2
        sums: dict[tuple[str, str], list[float]] = {}
        for index, snapshot in enumerate(reversed(self.snapshots)):
            if index and snapshot.time <= start:
                break
            for key, value in snapshot.drift.items():
                if (monitor is None or key[0] == monitor) and (
                    feature is None or key[1] == feature
                ):
                    total = sums.setdefault(key, [0.0, 0.0])
                    total[0] += value
                    total[1] += 1
        if not sums:
            return None
        means = {key: total / count for key, (total, count) in sums.items()}
        worst = max(means, key=lambda key: means[key])
        return means[worst], worst[0], worst[1]


def _selected(snapshot: Snapshot, api: str | None) -> list[tuple[str, ApiSnapshot]]:
    if api is None:
        return list(snapshot.apis.items())
    found = snapshot.apis.get(api)
    return [] if found is None else [(api, found)]


def _points(older: Snapshot, newer: Snapshot) -> dict[str, Point]:
    """Each API's point between two snapshots, and all APIs' together under ``""``."""
    seconds = newer.time - older.time
    points: dict[str, Point] = {}
    total_requests = total_client = total_errors = total_in_flight = 0.0
    total_latency: Buckets | None = None
    total_batch: Buckets | None = None
    for api, now in newer.apis.items():
        then = older.apis.get(api)
        requests = _counted(now.requests, then.requests if then else 0.0)
        client = _counted(now.client_errors, then.client_errors if then else 0.0)
        errors = _counted(now.errors, then.errors if then else 0.0)
        latency = now.latency.since(then.latency if then else None)
        batch = None
        if now.batch is not None:
            batch = now.batch.since(then.batch if then else None)
            total_batch = batch if total_batch is None else total_batch.plus(batch)
        points[api] = _point(
            seconds,
            requests=requests,
            client_errors=client,
            errors=errors,
            latency=latency,
            in_flight=now.in_flight,
            batch=batch,
        )
        total_requests += requests
        total_client += client
        total_errors += errors
        total_in_flight += now.in_flight
        total_latency = latency if total_latency is None else total_latency.plus(latency)
    points[""] = _point(
        seconds,
        requests=total_requests,
        client_errors=total_client,
        errors=total_errors,
        latency=total_latency or _EMPTY,
        in_flight=total_in_flight,
        batch=total_batch,
    )
    return points


def _point(
    seconds: float,
    *,
    requests: float,
    client_errors: float,
    errors: float,
    latency: Buckets,
    in_flight: float,
    batch: Buckets | None,
) -> Point:
    has_batches = batch is not None and batch.count > 0
    return (
        _rounded(requests / seconds),
        _rounded(errors / seconds),
        _rounded(client_errors / seconds),
        _rounded(latency.quantile(0.5)),
        _rounded(latency.quantile(0.9)),
        _rounded(latency.quantile(0.99)),
        _rounded(in_flight),
        _rounded(batch.mean()) if batch is not None and has_batches else None,
        _rounded(batch.quantile(0.5)) if batch is not None and has_batches else None,
        _rounded(batch.quantile(0.99)) if batch is not None and has_batches else None,
    )
