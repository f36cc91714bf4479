"""Adaptive batching: concurrent requests to one API merged into one call of its function.

The algorithm is *dispatch when idle*, one batch in flight, driven by events (no polling):

- When a request arrives and the function is idle, it runs at once, alone: a lone
  request never waits for company, so batching costs it nothing.
- While a batch runs, new requests queue. The moment it finishes, everything queued (up
  to ``max_size`` rows, oldest first) becomes the next batch. So batches grow exactly as
  fast as load does: under light load they stay small and fast; under heavy load each
  call carries up to ``max_size`` rows and the fixed cost of a call is shared.
- One refinement, for load that comes in waves: when a batch has just answered many
  callers, they tend to send their next requests together a moment later, so the queue
  is briefly almost empty. Dispatching at once would alternate a one-row call with a
  full one (measured with 64 closed-loop clients on an MLP whose call costs ~2.5 ms
  fixed: batches of 1, 63, 1, 63...). So if the last batch was bigger than what is
  queued and it finished moments ago, the next batch waits for the queue to refill to
  that size, but never longer than the fixed cost ``b`` of a call (the time one
  extra call would cost everyone) and never past anyone's ``max_latency_ms``. A request
  that finds the model idle still runs at once.
- ``max_latency_ms`` bounds how long a request waits in the queue before its batch
  starts. Each arrival's wait is estimated from the batch now running and the batches
  queued ahead of it, using a least-squares fit ``t = a*n + b`` of recent batch times
  against their sizes; a request that would wait longer is refused at once with 503
  (and counted), instead of joining a queue it cannot leave in time.

Why this design: a fixed wait window (collect for N ms, then run) taxes every request
with the window even when the model is idle, which is the common case at low load; a
latency model that decides to *wait* for a bigger batch only pays when calls are
expensive and arrivals regular, and with one batch in flight the queue that builds
during a call already gives the batch its size. Measurements are in the closing notes
of the batching work and in ``make bench``.

A request is never split across batches (its rows stay together, even if they are more
than ``max_size``: such a request runs alone). Requests whose values cannot be joined
(another trailing shape, dtype, device or set of columns) go in separate batches, so an
odd request never fails the others. If the function raises, or returns a number of rows
that does not match its inputs, exactly the requests of that batch fail.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from tiffin.batching.concat import concat, kind_of, rows_of, split
from tiffin.exceptions import ServiceUnavailable, ValidationFailed

if TYPE_CHECKING:
    from tiffin.observability.tracing import Tracer

__all__ = ["BatchMetrics", "Batcher", "LatencyModel"]

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_TIME_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


class BatchMetrics:
    """The batching metrics of one app: batch sizes, queue waits, execution times, refusals."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.size = Histogram(
            "tiffin_batch_size",
            "Rows in each batched call, by API.",
            ["api"],
            buckets=_SIZE_BUCKETS,
            registry=registry,
        )
        self.wait = Histogram(
            "tiffin_batch_queue_wait_seconds",
            "Time a request waited for its batch to start, by API.",
            ["api"],
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "tiffin_batch_execution_seconds",
            "Time each batched call took, by API.",
            ["api"],
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.refused = Counter(
            "tiffin_batch_refused",
            "Requests refused because they could not start within max_latency_ms, by API.",
            ["api"],
            registry=registry,
        )


class LatencyModel:
    """A least-squares fit ``t = a*n + b`` of batch time against batch size, weighting
    recent batches more (each new sample decays the old ones by ``decay``)."""

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    @property
    def ready(self) -> bool:
        return self._w > 0

    def add(self, rows: int, seconds: float) -> None:
        d = self.decay
        self._w = self._w * d + 1
        self._n = self._n * d + rows
        self._t = self._t * d + seconds
        self._nn = self._nn * d + rows * rows
        self._nt = self._nt * d + rows * seconds

    def fit(self) -> tuple[float, float]:
        """``(a, b)`` of ``t = a*n + b``: seconds per row, and the fixed seconds per call."""
        if not self._w:
            return 0.0, 0.0
        mean_n, mean_t = self._n / self._w, self._t / self._w
        spread = self._nn / self._w - mean_n * mean_n
        slope = (self._nt / self._w - mean_n * mean_t) / spread if spread > 1e-9 else 0.0
        slope = max(slope, 0.0)
        return slope, max(mean_t - slope * mean_n, 0.0)

    def predict(self, rows: int) -> float:
        """Expected seconds for a batch of ``rows`` rows (0 before any sample)."""
        slope, intercept = self.fit()
        return intercept + slope * rows


@dataclass(eq=False)
class _Pending:
    kwargs: dict[str, Any]
    rows: int
    kind: tuple[Any, ...]
    future: asyncio.Future[Any]
    arrived: float = field(default_factory=time.perf_counter)
    span: Any = None  # the request's span, when tracing


class Batcher:
    """Merges concurrent calls of one API into batched calls of its function.

    Args:
        api: the API's name, for messages and metrics.
        params: the parameter names; each is concatenated along ``dim``.
        max_size: the most rows in one call.
        max_latency_ms: the longest a request may wait for its batch to start.
        dim: the axis along which values are joined and the output split.
        call: runs the function with merged keyword arguments (the server decides where:
            the event loop for ``async def``, a thread for ``def``).
        metrics: where to record batch sizes, waits, times and refusals.
        tracer: records each request's wait and each batch's call as spans, when tracing.
    """

    def __init__(
        self,
        api: str,
        params: tuple[str, ...],
        *,
        max_size: int,
        max_latency_ms: float,
        dim: int,
        call: Callable[[dict[str, Any]], Awaitable[Any]],
        metrics: BatchMetrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.api = api
        self.params = params
        self.max_size = max_size
        self.max_latency = max_latency_ms / 1000
        self.dim = dim
        self._call = call
        self._tracer = tracer
        self.model = LatencyModel()
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._worker: asyncio.Task[None] | None = None
        self._running_since = 0.0
        self._running_estimate = 0.0
        self._last_size = 0
        self._last_done = 0.0
        self._target = 0
        self._filled = asyncio.Event()
        self._size = metrics.size.labels(api) if metrics else None
        self._wait = metrics.wait.labels(api) if metrics else None
        self._run = metrics.run.labels(api) if metrics else None
        self._refused = metrics.refused.labels(api) if metrics else None

    def _rows(self, kwargs: dict[str, Any]) -> tuple[int, tuple[Any, ...]]:
        counts = {}
        kinds = []
        for name in self.params:
            value = kwargs[name]
            try:
                counts[name] = rows_of(value, self.dim)
                kinds.append(kind_of(value, self.dim))
            except ValueError as exc:
                raise ValidationFailed(
                    f"Invalid request to API '{self.api}': '{name}' {exc}.",
                    detail={"errors": [{"loc": name, "msg": str(exc)}]},
                ) from None
        if len(set(counts.values())) > 1:
            shown = ", ".join(f"'{name}' has {rows}" for name, rows in counts.items())
            raise ValidationFailed(
                f"Invalid request to API '{self.api}': its batched parameters must have the "
                f"same number of rows along dim {self.dim}, but {shown}.",
                detail={"errors": [{"loc": "(body)", "msg": f"row counts differ: {shown}"}]},
            )
        rows = next(iter(counts.values())) if counts else 1
        if rows == 0:
            raise ValidationFailed(
                f"Invalid request to API '{self.api}': it holds no rows. Send at least one.",
                detail={"errors": [{"loc": self.params[0], "msg": "holds no rows"}]},
            )
        return rows, tuple(kinds)

    def estimated_wait(self, rows: int) -> float:
        """Seconds a request of ``rows`` arriving now would wait for its batch to start."""
        if self._worker is None or not self.model.ready:
            return 0.0
        now = time.perf_counter()
        remaining = max(self._running_estimate - (now - self._running_since), 0.0)
        batches_ahead = (self._queued_rows + rows - 1) // self.max_size
        return remaining + batches_ahead * self.model.predict(self.max_size)

    async def submit(self, kwargs: dict[str, Any]) -> Any:
        """Run ``kwargs`` as part of a batch and return this request's share of the output."""
        rows, kind = self._rows(kwargs)
        wait = self.estimated_wait(rows)
        if wait > self.max_latency:
            if self._refused is not None:
                self._refused.inc()
            raise ServiceUnavailable(
                f"API '{self.api}' cannot start this request within its max_latency_ms of "
                f"{self.max_latency * 1000:g} ms (about {wait * 1000:.0f} ms of batches are "
                "queued ahead). Retry after a moment, or add workers or replicas.",
                detail={"retry_after": 1, "estimated_wait_ms": round(wait * 1000, 1)},
            )
        pending = _Pending(kwargs, rows, kind, asyncio.get_running_loop().create_future())
        if self._tracer is not None:
            pending.span = self._tracer.current()
        self._queue.append(pending)
        self._queued_rows += rows
        if self._target and self._queued_rows >= self._target:
            self._filled.set()
        if self._worker is None:
            # A context of its own: one copied from this request would make the ids of
            # this request those of every batch the task runs (in log lines and traces).
            self._worker = asyncio.get_running_loop().create_task(
                self._drain(), context=contextvars.Context()
            )
        return await pending.future

    def _take(self) -> list[_Pending]:
        """The next batch: the oldest request and every later one of the same kind that
        still fits in ``max_size`` rows, in arrival order."""
        while self._queue and self._queue[0].future.done():  # its caller gave up
            self._queued_rows -= self._queue.popleft().rows
        if not self._queue:
            return []
        first = self._queue.popleft()
        self._queued_rows -= first.rows
        batch, rows = [first], first.rows
        kept: deque[_Pending] = deque()
        while self._queue and rows < self.max_size:
            pending = self._queue.popleft()
            if pending.future.done():
                self._queued_rows -= pending.rows
            elif pending.kind == first.kind and rows + pending.rows <= self.max_size:
                batch.append(pending)
                rows += pending.rows
                self._queued_rows -= pending.rows
            else:
                kept.append(pending)
                if pending.kind == first.kind:
                    break  # the next one in line does not fit: keep arrival order
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _hold(self) -> tuple[float, int]:
        """How long the next batch may wait for more rows, and how many it waits for."""
        target = min(self._last_size, self.max_size)
        if not self._queue or self._queued_rows >= target:
            return 0.0, 0
        _, fixed = self.model.fit()
        now = time.perf_counter()
        if now - self._last_done > fixed:  # the wave is over: the model was idle
            return 0.0, 0
        budget = self.max_latency - (now - self._queue[0].arrived)
        return max(min(fixed, budget), 0.0), target

    async def _drain(self) -> None:
        try:
            while self._queue:
                hold, target = self._hold()
                if hold > 0:
                    self._target = target
                    self._filled.clear()
                    try:
                        await asyncio.wait_for(self._filled.wait(), hold)
                    except TimeoutError:
                        pass
                    finally:
                        self._target = 0
                batch = self._take()
                if batch:
                    await self._run_batch(batch)
        finally:
            self._worker = None

    async def _run_batch(self, batch: list[_Pending]) -> None:
        sizes = [pending.rows for pending in batch]
        total = sum(sizes)
        started = time.perf_counter()
        self._running_since = started
        self._running_estimate = self.model.predict(total)
        if self._wait is not None:
            for pending in batch:
                self._wait.observe(started - pending.arrived)
        try:
            merged = {
                name: concat([pending.kwargs[name] for pending in batch], self.dim)
                for name in self.params
            }
            output = await (
                self._call(merged)
                if self._tracer is None
                else self._tracer.batch(self.api, batch, started, self._call, merged)
            )
            parts = split(output, sizes, self.dim)
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        except BaseException:  # cancelled (the server is stopping): so are its requests
            for pending in batch:
                pending.future.cancel()
            raise
        finally:
            self._last_done = time.perf_counter()
            self._last_size = total
            seconds = self._last_done - started
            self.model.add(total, seconds)
            if self._size is not None and self._run is not None:
                self._size.observe(total)
                self._run.observe(seconds)
        for pending, part in zip(batch, parts, strict=True):
            if not pending.future.done():
                pending.future.set_result(part)
