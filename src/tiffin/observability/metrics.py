"""Prometheus metrics of the server, correct across worker processes.

With several workers, each process writes its samples to memory-mapped files in a
shared directory (prometheus_client's multiprocess mode, switched on by the supervisor
through ``PROMETHEUS_MULTIPROC_DIR`` before the worker imports anything) and ``/metrics``
sums them, so any worker answers for all.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = ["LATENCY_BUCKETS", "TASK_BUCKETS", "ServerMetrics", "TaskMetrics"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
TASK_BUCKETS = (
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
)  # fmt: skip


class ServerMetrics:
    """The server's metrics: requests by API and status, latency, requests in flight.

    Args:
        apis: the API names, so their series exist (at zero) from the start.
    """

    def __init__(self, apis: list[str]) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tiffin_requests",
            "HTTP requests answered, by API (or endpoint) and status code.",
            ["api", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tiffin_request_duration_seconds",
            "Time from receiving a request to sending its response, by API.",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "tiffin_requests_in_flight",
            "Requests being handled right now, by API.",
            ["api"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self._latency = {api: self.latency.labels(api) for api in apis}
        self._in_flight = {api: self.in_flight.labels(api) for api in apis}
        self._counts: dict[tuple[str, int], Any] = {}

    def started(self, api: str) -> None:
        """A request to ``api`` began."""
        self._in_flight[api].inc()

    def finished(self, api: str, status: int, seconds: float) -> None:
        """A request to ``api`` was answered with ``status`` after ``seconds``."""
        self._in_flight[api].dec()
        self._latency[api].observe(seconds)
        self.count(api, status)

    def count(self, api: str, status: int) -> None:
        """Count a response (also for requests that never reached an API)."""
        key = (api, status)
        counter = self._counts.get(key)
        if counter is None:
            counter = self._counts[key] = self.requests.labels(api, str(status))
        counter.inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every worker's metrics."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class TaskMetrics:
    """The metrics of a service's ``@tiffin.task`` jobs, by task: submitted, completed,
    failed, retried and cancelled; time per run; runs in progress; and the queue's depth
    (read from the store every few seconds, so it counts every worker's and replica's
    tasks).

    Args:
        registry: the server's registry (``ServerMetrics.registry``).
        tasks: the task names, so their series exist (at zero) from the start.
    """

    def __init__(self, registry: CollectorRegistry, tasks: list[str]) -> None:
        def counter(name: str, text: str) -> dict[str, Any]:
            metric = Counter(name, text, ["task"], registry=registry)
            return {task: metric.labels(task) for task in tasks}

        self.submitted = counter("tiffin_tasks_submitted", "Tasks submitted, by task.")
        self.completed = counter("tiffin_tasks_completed", "Tasks that completed, by task.")
        self.failed = counter(
            "tiffin_tasks_failed", "Tasks failed for good (no retries left), by task."
        )
        self.retried = counter(
            "tiffin_tasks_retried", "Runs that raised and were queued to run again, by task."
        )
        self.cancelled = counter("tiffin_tasks_cancelled", "Tasks cancelled, by task.")
        duration = Histogram(
            "tiffin_task_duration_seconds",
            "Time one run of a task took, whatever its outcome, by task.",
            ["task"],
            buckets=TASK_BUCKETS,
            registry=registry,
        )
        running = Gauge(
            "tiffin_tasks_running",
            "Task runs in progress, by task.",
            ["task"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        queued = Gauge(
            "tiffin_tasks_queued",
            "Tasks waiting to run (or to be retried), by task, as last read from the store.",
            ["task"],
            multiprocess_mode="mostrecent",
            registry=registry,
        )
        self._duration = {task: duration.labels(task) for task in tasks}
        self._running = {task: running.labels(task) for task in tasks}
        self._queued = {task: queued.labels(task) for task in tasks}

    def started(self, task: str) -> None:
        """A run of ``task`` began."""
        self._running[task].inc()

    def ended(self, task: str, seconds: float) -> None:
        """A run of ``task`` ended after ``seconds``, whatever its outcome."""
        self._running[task].dec()
        self._duration[task].observe(seconds)

    def outcome(self, task: str, status: str) -> None:
        """Count what a run led to: ``completed``, ``failed``, ``cancelled``, or ``queued``
        (a retry)."""
        counters = {
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "queued": self.retried,
        }
        counters[status][task].inc()

    def depth(self, counts: dict[str, int]) -> None:
        """Record how many tasks of each name are queued."""
        for task, count in counts.items():
            self._queued[task].set(count)
