"""Prometheus metrics of the server, correct across worker processes.

With several workers, each process writes its samples to memory-mapped files in a
shared directory (prometheus_client's multiprocess mode, switched on by the supervisor
through ``PROMETHEUS_MULTIPROC_DIR`` before the worker creates any metric; a worker
forked from the supervisor, which imported the service without it, switches with
``use_multiprocess``) and ``/metrics`` sums them, so any worker answers for all. A
worker passes its request counts on half a second (``FLUSH_S``) after a request, so
another worker's scrape sees them that late at most (``ServerMetrics`` says why).
Counters and histograms add up over every worker the server has run, an exited one's
counts included, so a total never goes back when a worker is replaced (a worker killed
outright loses what it had not passed on yet). Gauges combine the
values of the workers alive now (the supervisor marks an exited worker dead), so an
exited worker's value is neither left over nor counted twice; the drift score alone
keeps the newest reading, whichever worker made it.

Every metric tiffin serves on ``/metrics`` (a counter ``x`` is written ``x_total``):

    tiffin_requests_total                    counter    api, status
        Requests to an API answered, by status code: HTTP requests to its route and
        calls through a protocol (the Open Inference Protocol over HTTP or gRPC). A
        request turned away before it reaches the API (no valid key, 401; a wrong
        method, 405) is not counted.
    tiffin_request_duration_seconds          histogram  api
        Time from receiving an API request to sending its response.
    tiffin_requests_in_flight                gauge      api
        API requests being answered right now, summed over live workers.
    tiffin_batch_size                        histogram  api
        Rows in each call of a batched API's method.
    tiffin_batch_queue_wait_seconds          histogram  api
        Time a request to a batched API waited for its batch to start.
    tiffin_batch_execution_seconds           histogram  api
        Time each call of a batched API's method took.
    tiffin_batch_refused_total               counter    api
        Requests refused (503) because they could not start within max_latency_ms.
    tiffin_tasks_submitted_total             counter    task
        Tasks submitted.
    tiffin_tasks_completed_total             counter    task
        Tasks that completed.
    tiffin_tasks_failed_total                counter    task
        Tasks failed for good (their last attempt raised).
    tiffin_tasks_retried_total               counter    task
        Runs that raised and put their task back in the queue to run again.
    tiffin_tasks_cancelled_total             counter    task
        Tasks cancelled (while queued, or while running).
    tiffin_task_duration_seconds             histogram  task
        Time one run of a task took, whatever its outcome.
    tiffin_tasks_running                     gauge      task
        Task runs in progress, summed over live workers.
    tiffin_tasks_queued                      gauge      task
        Tasks waiting to run or to be retried, as the store last said (read every 5 s
        by each worker; the most recent reading wins, so it counts every worker's and
        every replica's tasks once).
    tiffin_model_load_seconds                histogram  model, version
        Time each load of a saved model took (``Model.load``, ``ModelRef.load``), by
        model name and version: one observation per load in each worker.
    tiffin_process_cpu_seconds_total         counter    process, pid
        CPU time (user and system) the process has used, for the supervisor
        (``process="supervisor"``) and each live worker (``process="worker"``).
    tiffin_process_resident_memory_bytes     gauge      process, pid
        Resident memory of each of those processes.
    tiffin_process_start_time_seconds        gauge      process, pid
        When each of those processes started, in seconds since the epoch.
    tiffin_monitor_records_total             counter    monitor
        Records ``tiffin.monitor`` wrote to the monitoring store.
    tiffin_monitor_dropped_total             counter    monitor
        Records ``tiffin.monitor`` dropped (its queue was full, or the store could not
        be written).
    tiffin_drift_score                       gauge      monitor, feature
        Population stability index of a monitored feature over the last
        ``monitor_drift_window`` against ``monitor_reference`` (the newest reading of
        any worker), when a reference is set.

Beside these come the service's own metrics (``tiffin.metrics``), with the names it
gives them.

Process CPU and memory are read from ``/proc`` when ``/metrics`` is asked for, for the
supervisor (the worker's parent) and each process it has started, rather than sampled
by each worker into the shared files: the values are those of the moment of the scrape,
a worker that has exited is gone from the next scrape (its pid is no longer among the
supervisor's children), none is counted twice after a restart, the supervisor (which
writes no metrics) is included, and nothing runs between scrapes. A scrape reads one
small file per process (and, on a kernel that does not list a process's children, the
parent of every process). prometheus_client's own ``ProcessCollector`` cannot be used: in
multiprocess mode it would report only the worker that happens to answer. Outside
Linux only the answering process's CPU time is reported.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

__all__ = [
    "FLUSH_S",
    "LATENCY_BUCKETS",
    "MODEL_LOAD_BUCKETS",
    "REGISTRY",
    "TASK_BUCKETS",
    "ProcessMetrics",
    "ServerMetrics",
    "TaskMetrics",
    "defined",
    "keep",
    "model_loaded",
    "use_multiprocess",
]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
)  # fmt: skip
TASK_BUCKETS = (
    0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
)  # fmt: skip
MODEL_LOAD_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip

FLUSH_S = 0.5
"""Seconds from the first request after a flush of ``ServerMetrics`` to the next flush."""

_PROC = "/proc"  # where the kernel tells about processes

REGISTRY = CollectorRegistry(auto_describe=True)
"""The metrics of the process rather than of one app: model load times and the
service's own metrics (``tiffin.metrics``). They are defined once, often while a
module is imported, and every app in the process shows them on ``/metrics``."""

# REGISTRY's metrics by name, with what defined them (to tell a second, identical
# definition from a clash), so a forked worker can rebind them (``use_multiprocess``).
_DEFINED: dict[str, tuple[tuple[Any, ...], MetricWrapperBase]] = {}


def defined(name: str) -> tuple[tuple[Any, ...], MetricWrapperBase] | None:
    """The definition and metric kept under ``name``, if any."""
    return _DEFINED.get(name)


def keep(name: str, definition: tuple[Any, ...], metric: MetricWrapperBase) -> None:
    """Keep ``metric`` (registered in ``REGISTRY``) under ``name``, with what defined it."""
    _DEFINED[name] = (definition, metric)


_model_load = Histogram(
    "tiffin_model_load_seconds",
    "Time each load of a saved model took, by model name and version.",
    ["model", "version"],
    buckets=MODEL_LOAD_BUCKETS,
    registry=REGISTRY,
)
keep("tiffin_model_load_seconds", ("histogram",), _model_load)


def model_loaded(name: str, version: str, seconds: float) -> None:
    """Record that model ``name:version`` took ``seconds`` to load."""
    _model_load.labels(name, version).observe(seconds)


def use_multiprocess(directory: str) -> None:
    """Make this process write its metrics to files in ``directory`` from now on
    (prometheus_client's multiprocess mode), as a worker started with
    ``PROMETHEUS_MULTIPROC_DIR`` does; for a worker just forked from the supervisor.

    The supervisor imported the service without that mode, so the metrics of
    ``REGISTRY`` defined then (by the service's module, or by tiffin) hold their values
    in the process's memory, where ``/metrics`` would never see them. Each is given
    values of the new kind here: counters and histograms start from zero, since what
    was counted before the fork happened in the supervisor, not in this worker; a gauge
    keeps the value it had, as it would if this worker had imported the module itself.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    for _, metric in _DEFINED.values():
        _rebind(metric)


def _rebind(metric: MetricWrapperBase) -> None:
    # prometheus_client makes a metric's values in _metric_init, with the ValueClass of
    # the moment; a labelled metric keeps its children in _metrics.
    parent = bool(metric._labelnames) and not metric._labelvalues
    children = list(metric._metrics.values()) if parent else [metric]
    for child in children:
        if isinstance(child, Gauge):
            value = child._value.get()
            child._metric_init()
            child.set(value)
        else:
            child._metric_init()  # type: ignore[no-untyped-call]


class ProcessMetrics:
    """CPU time, resident memory and start time of the server's processes, read from
    ``/proc`` at each scrape: the supervisor (this process's parent) and each process
    it has started, when ``supervised``; else this process alone. The module docstring
    says why at scrape time.

    Args:
        supervised: whether this process is a worker of a supervisor (it has a shared
            metrics directory).
    """

    def __init__(self, *, supervised: bool) -> None:
        self.supervised = supervised
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._boot: float | None = None
        self._children_file: bool | None = None  # whether the kernel lists children

    def collect(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily(
            "tiffin_process_cpu_seconds",
            "CPU time (user and system) the process has used, for the supervisor and each "
            "live worker.",
            labels=["process", "pid"],
        )
        memory = GaugeMetricFamily(
            "tiffin_process_resident_memory_bytes",
            "Resident memory of the process, for the supervisor and each live worker.",
            labels=["process", "pid"],
        )
        started = GaugeMetricFamily(
            "tiffin_process_start_time_seconds",
            "When the process started, in seconds since the epoch, for the supervisor and "
            "each live worker.",
            labels=["process", "pid"],
        )
        boot = self._boot_time()
        if boot is None:  # no /proc: this process's CPU time is all there is to tell
            cpu.add_metric(["worker", str(os.getpid())], time.process_time())
            yield cpu
            return
        for role, pid in self._processes():
            stat = _stat(pid)
            if stat is None:  # exited (or a zombie) since it was listed
                continue
            _, cpu_ticks, start_ticks, resident_pages = stat
            labels = [role, str(pid)]
            cpu.add_metric(labels, cpu_ticks / self._ticks)
            memory.add_metric(labels, float(resident_pages * self._page))
            started.add_metric(labels, boot + start_ticks / self._ticks)
        yield cpu
        yield memory
        yield started

    def _boot_time(self) -> float | None:
        if self._boot is None and sys.platform == "linux":
            try:
                with open(f"{_PROC}/stat", "rb") as stat:
                    for line in stat:
                        if line.startswith(b"btime "):
                            self._boot = float(line.split()[1])
                            break
            except OSError:
                pass
        return self._boot

    def _processes(self) -> list[tuple[str, int]]:
        own = os.getpid()
        if self.supervised:
            supervisor = os.getppid()
            workers = self._children(supervisor)
            if own in workers:
                return [("supervisor", supervisor)] + [("worker", pid) for pid in workers]
        return [("worker", own)]

    def _children(self, parent: int) -> list[int]:
        """The processes ``parent`` has started (and not yet reaped)."""
        if self._children_file is None:  # not on a kernel built without CONFIG_PROC_CHILDREN
            self._children_file = os.path.exists(f"{_PROC}/{parent}/task/{parent}/children")
        found: list[int] = []
        if self._children_file:
            try:
                threads = os.listdir(f"{_PROC}/{parent}/task")
            except OSError:
                return []
            for thread in threads:
                try:
                    with open(f"{_PROC}/{parent}/task/{thread}/children", "rb") as children:
                        found.extend(int(pid) for pid in children.read().split())
                except OSError:
                    continue  # the thread has ended
            return sorted(found)
        for entry in os.scandir(_PROC):  # else: every process's parent
            if entry.name.isdigit():
                stat = _stat(int(entry.name))
                if stat is not None and stat[0] == parent:
                    found.append(int(entry.name))
        return sorted(found)


def _stat(pid: int) -> tuple[int, int, int, int] | None:
    """``(parent pid, CPU ticks, start ticks after boot, resident pages)`` of a live
    process, from ``/proc/<pid>/stat``; None for one that has exited or is a zombie."""
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as file:
            data = file.read()
    except OSError:
        return None
    # after "pid (comm) ": state, ppid, ... utime (14th field), stime, ... starttime
    # (22nd), vsize, rss (24th); comm may hold spaces and parentheses, hence rindex
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19]), int(fields[21])


class _Joined:
    """The metrics of several registries, as one collector."""

    def __init__(self, *registries: CollectorRegistry) -> None:
        self.registries = registries

    def collect(self) -> Iterable[Metric]:
        for registry in self.registries:
            yield from registry.collect()


class ServerMetrics:
    """The server's metrics: requests by API and status, latency, requests in flight;
    and, on ``/metrics``, every other metric of the process and of the server's other
    workers.

    A request adds to plain numbers of this object (``started``, ``finished``), which
    reach the Prometheus metrics in one step (``flush``): when ``/metrics`` or the
    dashboard's history reads them, when the server stops, and ``FLUSH_S`` after the
    first request since the last flush (so another worker's scrape sees them). Recording
    each request in prometheus_client directly took a lock per value and a walk over the
    latency buckets in Python: ~44,000 instructions a request, a twenty-fifth of the
    iris quickstart's whole request, where a tally is a few additions and a bisect. A
    worker killed outright loses at most the last ``FLUSH_S`` of its counts. Called on
    the event loop only.

    Args:
        apis: the API names, so their series exist (at zero) from the start.
    """

    def __init__(self, apis: list[str]) -> None:
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tiffin_requests",
            "Requests to an API answered, by API and status code.",
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
        # what requests added since the last flush
        self._bounds = (*LATENCY_BUCKETS, math.inf)
        self._buckets = {api: [0] * len(self._bounds) for api in apis}
        self._seconds = dict.fromkeys(apis, 0.0)
        self._counts: dict[tuple[str, int], int] = {}
        self._running = dict.fromkeys(apis, 0)
        self._shown = dict.fromkeys(apis, 0)  # requests in flight as the gauge says
        self._timer: asyncio.TimerHandle | None = None
        for api in apis:
            self.latency.labels(api)
            self.in_flight.labels(api)
        # What /metrics shows: every worker's files, or this process's registries.
        self._exposed = CollectorRegistry(auto_describe=False)
        if self.multiprocess_dir:
            MultiProcessCollector(self._exposed, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            self._exposed.register(_Joined(self.registry, REGISTRY))
        self._exposed.register(ProcessMetrics(supervised=bool(self.multiprocess_dir)))

    def started(self, api: str) -> None:
        """A request to ``api`` began."""
        self._running[api] += 1
        if self._timer is None:
            self._schedule()

    def finished(self, api: str, status: int, seconds: float) -> None:
        """A request to ``api`` was answered with ``status`` after ``seconds``."""
        self._running[api] -= 1
        self._buckets[api][bisect_left(self._bounds, seconds)] += 1
        self._seconds[api] += seconds
        self.count(api, status)

    def count(self, api: str, status: int) -> None:
        """Count a response (also for requests that never reached an API)."""
        key = (api, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._timer is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: nothing would flush later
            self.flush()
            return
        self._timer = loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Add what requests recorded since the last flush to the Prometheus metrics."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for api, running in self._running.items():
            if running != self._shown[api]:
                self.in_flight.labels(api).set(running)
                self._shown[api] = running
        for api, buckets in self._buckets.items():
            if not any(buckets):
                continue
            # prometheus_client keeps a histogram's buckets as one value each (made
            # cumulative when collected) and their sum: what ``observe`` adds to
            child = self.latency.labels(api)
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)
                    buckets[index] = 0
            child._sum.inc(self._seconds[api])
            self._seconds[api] = 0.0
        counts, self._counts = self._counts, {}
        for (api, status), count in counts.items():
            self.requests.labels(api, str(status)).inc(count)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of every worker's metrics."""
        self.flush()
        return generate_latest(self._exposed), CONTENT_TYPE_LATEST


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
            multiprocess_mode="livemostrecent",
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
