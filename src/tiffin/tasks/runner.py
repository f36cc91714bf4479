"""The task runner of one worker: claims tasks from the store and runs them.

- **A budget of its own.** At most ``task_concurrency`` tasks run at once per worker, a
  ``def`` task in a thread of its own, so tasks never take the threads or the
  ``max_concurrency`` slots that API calls use (one thread per run: a task's run is long
  next to the cost of starting a thread). An ``async def`` task runs on the
  event loop, as an ``async def`` API does: it must not block.
- **Claiming.** The runner asks the store for work when it has a free slot: at once
  after a submission to this worker or a task's end, else every ``POLL`` seconds, which
  is also how it finds tasks submitted to other workers and retries coming due.
- **Leases.** Every ``min(1 s, task_lease / 3)`` it renews the lease of each task it
  runs, and learns which have been asked to cancel. If the worker dies, the leases run
  out and another worker (or this one, restarted) runs those tasks again, with the
  attempt count one higher.
- **Outcomes.** A result is stored as the JSON of the return value. A run that raises
  (or passes its ``timeout``) is retried after the task's backoff while retries remain,
  then failed with the error; a task asked to cancel ends as cancelled. The store keeps
  only an owner's outcome, so a task has at most one result.
- **Stopping.** ``drain()`` stops claiming (the app calls it on SIGTERM); ``stop()``
  waits for running tasks until a deadline, then gives the rest back to the queue so
  another worker takes them at once, instead of after their lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from tiffin.config import Settings
from tiffin.exceptions import TiffinError, describe
from tiffin.observability import tracing
from tiffin.observability.metrics import TaskMetrics
from tiffin.service import Task
from tiffin.tasks.context import TaskContext
from tiffin.tasks.queue import TaskQueue
from tiffin.tasks.store import TaskRecord, TaskStore

if TYPE_CHECKING:
    import httpx

__all__ = ["HOUSEKEEPING", "POLL", "TaskRunner"]

POLL = 0.5
"""Seconds between looks at the store while this worker has nothing to start."""
HOUSEKEEPING = 60.0
"""Seconds between purges of expired results."""
_DEPTH = 5.0  # seconds between reads of the queue's depth, for the metric
_DELIVERY_GRACE = 2.0  # seconds deliveries in flight get at shutdown before they are left

log = logging.getLogger("tiffin.tasks")


def _in_thread(call: Callable[[], Any], name: str) -> asyncio.Future[Any]:
    """Run ``call`` in a new daemon thread, in a copy of the current context; a future of
    its outcome. A daemon thread, unlike a pool's, never keeps the process from exiting:
    a task that does not stop when asked is left behind, its task back in the queue."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = context.run(call)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # SystemExit, say: it must not stop the loop
                exc = RuntimeError(f"the task raised {type(exc).__name__}")
            done = partial(settle, partial(future.set_exception, exc))
        else:
            done = partial(settle, partial(future.set_result, result))
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(done)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


def _trouble(what: str, exc: Exception) -> None:
    """Log a failure of the runner's own work: a store error in a line (it says what to
    do), anything else with its traceback."""
    if isinstance(exc, TiffinError):
        log.warning("%s: %s", what, exc.message)
    else:
        log.error("%s: %s", what, describe(exc), exc_info=exc)


class _Run:
    """One task this runner is running."""

    __slots__ = ("context", "inner", "orphan", "record", "started")

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self.context = TaskContext(record.id, record.task, record.attempts)
        self.inner: asyncio.Future[Any] | None = None  # an async task's own coroutine
        self.orphan: asyncio.Future[Any] | None = None  # a thread left running past timeout
        self.started = time.perf_counter()

    def cancel(self) -> None:
        self.context.cancel()
        if self.inner is not None:
            self.inner.cancel()


class TaskRunner:
    """Runs a service's tasks in one worker; see the module docstring.

    Args:
        queue: the service's task queue (its store open).
        tasks: the service's tasks, by name.
        settings: ``task_concurrency``, ``task_lease``.
        metrics: where runs and outcomes are counted, if anywhere.

    Example:
        runner = TaskRunner(queue, spec.tasks, settings)
        await runner.start(instance)
        ...
        runner.drain()
        await runner.stop(deadline=time.monotonic() + 30)
    """

    def __init__(
        self,
        queue: TaskQueue,
        tasks: Mapping[str, Task[Any, Any]],
        settings: Settings,
        metrics: TaskMetrics | None = None,
    ) -> None:
        self.queue = queue
        self.tasks = dict(tasks)
        self.concurrency = settings.task_concurrency
        self.lease = settings.task_lease
        self.metrics = metrics
        self._tracer = tracing.tracer(settings)  # a span per run, when tracing
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.instance: Any = None
        self.draining = False
        self._beat = min(1.0, self.lease / 3)
        self._running: dict[str, _Run] = {}
        self._executions: set[asyncio.Task[None]] = set()
        self._orphans = 0  # threads still running a task that timed out
        self._deliveries: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._http: httpx.AsyncClient | None = None

    @property
    def store(self) -> TaskStore:
        assert self.queue.store is not None
        return self.queue.store

    def _busy(self) -> int:
        return len(self._running) + self._orphans

    # -- life ------------------------------------------------------------------------

    async def start(self, instance: Any) -> None:
        """Start claiming and running tasks on ``instance`` (the service)."""
        self.instance = instance
        self.queue.on_submit = self.wake
        self.queue.on_cancel = self.cancel_here
        self._loops = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._upkeep())]
        if self.concurrency > 0:
            self._loops.append(asyncio.create_task(self._claim()))

    def wake(self) -> None:
        """Look for work now (a task was submitted, or a slot came free)."""
        self._wake.set()

    def drain(self) -> None:
        """Stop claiming tasks; those running go on."""
        if not self.draining:
            self.draining = True
            self._wake.set()

    def cancel_here(self, task_id: str) -> None:
        """Tell a task that runs in this worker that a cancel was asked for."""
        run = self._running.get(task_id)
        if run is not None:
            run.cancel()

    async def stop(self, deadline: float) -> None:
        """Drain, wait for running tasks until ``deadline`` (``time.monotonic()``), give
        those still running back to the queue, and stop."""
        self.drain()
        pending = set(self._executions)
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        for task_id, run in list(self._running.items()):
            run.context.cancel()  # a task that looks can stop; its outcome is not kept
            try:
                if await self.queue.call(self.store.release, task_id, self.owner):
                    log.info(
                        "Task %s (%s) was still running at shutdown; it is back in the queue.",
                        task_id,
                        run.record.task,
                        extra={"task_id": task_id, "task": run.record.task},
                    )
            except TiffinError as exc:
                log.warning("Could not give task %s back to the queue: %s", task_id, exc.message)
        for execution in self._executions:
            execution.cancel()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._executions, *self._loops, return_exceptions=True)
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=_DELIVERY_GRACE)
            for delivery in self._deliveries:
                delivery.cancel()  # its lease runs out, and another worker delivers it
            await asyncio.gather(*self._deliveries, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    # -- loops -----------------------------------------------------------------------

    async def _idle(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _claim(self) -> None:
        names = list(self.tasks)
        while not self.draining:
            self._wake.clear()
            if self._busy() >= self.concurrency:
                await self._idle(None)
                continue
            try:
                record = await self.queue.call(
                    self.store.claim, names, self.owner, lease=self.lease
                )
                if record is not None and self._stopping():  # the stop came meanwhile
                    await self.queue.call(self.store.release, record.id, self.owner)
                    return
            except Exception as exc:
                _trouble("Could not claim a task", exc)
                await self._idle(POLL * 4)
                continue
            if record is None:
                await self._idle(POLL)
            else:
                self._begin(record)

    def _stopping(self) -> bool:
        return self.draining

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat)
            ids = list(self._running)
            if not ids:
                continue
            try:
                renewal = await self.queue.call(self.store.renew, ids, self.owner, lease=self.lease)
            except Exception as exc:
                _trouble("Could not renew the leases of running tasks", exc)
                continue
            for task_id in renewal.cancel:
                self.cancel_here(task_id)
            for task_id in set(ids) - renewal.held:
                run = self._running.get(task_id)
                if run is not None and not run.context.cancelled:
                    # finished just now, or this worker stalled past its lease and the task
                    # went to another: stop it here, its outcome would be dropped anyway
                    log.warning(
                        "Task %s (%s) is no longer held by this worker; stopping it here.",
                        task_id,
                        run.record.task,
                        extra={"task_id": task_id, "task": run.record.task},
                    )
                    run.cancel()

    async def _upkeep(self) -> None:
        """Purge expired results, deliver callbacks whose deliverer died, read the queue's
        depth for the metric."""
        last_purge = last_depth = 0.0
        while True:
            now = time.monotonic()
            try:
                if now - last_purge >= HOUSEKEEPING:
                    last_purge = now
                    purged = await self.queue.call(self.store.purge)
                    if purged:
                        log.debug("Purged %d expired task results.", purged)
                if self.metrics is not None and now - last_depth >= _DEPTH:
                    last_depth = now
                    self.metrics.depth(await self.queue.call(self.store.depth, list(self.tasks)))
                while not self.draining:
                    record = await self.queue.call(self.store.claim_callback)
                    if record is None:
                        break
                    self._notify(record)
            except Exception as exc:
                _trouble("Task housekeeping failed", exc)
            await asyncio.sleep(POLL)

    # -- running a task --------------------------------------------------------------

    def _begin(self, record: TaskRecord) -> None:
        run = _Run(record)
        self._running[record.id] = run
        if self.metrics is not None:
            self.metrics.started(record.task)
        execution = asyncio.create_task(self._execute(run))
        self._executions.add(execution)
        execution.add_done_callback(self._executions.discard)

    async def _execute(self, run: _Run) -> None:
        record = run.record
        task = self.tasks[record.task]
        try:
            await self._outcome(run, task)
        except Exception as exc:  # the store failed in a way it does not translate
            _trouble(f"Running task {record.id} failed", exc)
        finally:
            self._running.pop(record.id, None)
            if self.metrics is not None:
                self.metrics.ended(record.task, time.perf_counter() - run.started)
            if run.orphan is not None and not run.orphan.done():
                self._orphans += 1  # its thread still holds a slot, until it returns
                run.orphan.add_done_callback(self._orphan_done)
            self.wake()

    def _orphan_done(self, _: object) -> None:
        self._orphans -= 1
        self.wake()

    async def _outcome(self, run: _Run, task: Task[Any, Any]) -> None:
        record = run.record
        try:
            kwargs = task.io.decode(record.payload, "application/json")
        except TiffinError as exc:  # the task's parameters changed since it was submitted
            await self._failed(run, task, exc, retry=False)
            return
        try:
            result = await self._call(run, task, kwargs)
            body, _ = task.io.encode(result)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the runner is stopping; the task went back to the queue
            await self._failed(run, task, None, retry=False)  # cancelled on request
            return
        except Exception as exc:
            await self._failed(run, task, exc, retry=True)
            return
        finally:
            task.io.cleanup(kwargs)
        try:
            finished = await self.queue.call(self.store.complete, record.id, self.owner, body)
        except TiffinError as exc:
            log.error("Could not store the result of task %s: %s", record.id, exc.message)
            return  # its lease runs out and it runs again
        self._finished(record, finished)

    async def _call(self, run: _Run, task: Task[Any, Any], kwargs: dict[str, Any]) -> Any:
        method = getattr(self.instance, task.attribute)
        if self._tracer is not None:
            method = self._tracer.task(task, run.record, method)
        run.context.enter()  # in this asyncio task's context, which the call inherits
        if task.is_async:
            run.inner = asyncio.ensure_future(method(**kwargs))
            if run.context.cancelled:
                run.inner.cancel()
            async with asyncio.timeout(task.timeout):
                return await run.inner
        waiting = _in_thread(partial(method, **kwargs), f"tiffin-task-{task.name}")
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), task.timeout)
        except TimeoutError:
            run.orphan = waiting
            raise

    def _error(self, run: _Run, task: Task[Any, Any], exc: BaseException) -> dict[str, Any]:
        if isinstance(exc, TiffinError):
            return {"type": type(exc).__name__, "message": exc.message}
        if isinstance(exc, TimeoutError) and task.timeout is not None:
            return {
                "type": "TimeoutError",
                "message": f"The run did not finish within the task's timeout of "
                f"{task.timeout:g} s. Give it more with @tiffin.task(timeout=...), or less "
                "work per task.",
            }
        return {
            "type": type(exc).__name__,
            "message": f"The task's code raised {type(exc).__name__}. The server log has the "
            f"traceback under task id {run.record.id}.",
        }

    async def _failed(
        self, run: _Run, task: Task[Any, Any], exc: BaseException | None, *, retry: bool
    ) -> None:
        record = run.record
        if exc is None:
            error = {"type": "Cancelled", "message": "The task was cancelled while it ran."}
            retry_at = None
        else:
            error = self._error(run, task, exc)
            failures = record.errors + 1
            retry = retry and failures <= task.retries
            retry_at = time.time() + task.backoff(failures) if retry else None
            log.error(
                "Task %s (%s) attempt %d failed: %s%s",
                record.id,
                record.task,
                record.attempts,
                describe(exc),
                f"; retrying in {task.backoff(failures):g} s" if retry else "",
                exc_info=None if isinstance(exc, TiffinError) else exc,
                extra={"task_id": record.id, "task": record.task, "attempt": record.attempts},
            )
        try:
            finished = await self.queue.call(
                self.store.fail, record.id, self.owner, error, retry_at=retry_at
            )
        except TiffinError as store_error:
            log.error("Could not record the failure of task %s: %s", record.id, store_error.message)
            return
        self._finished(record, finished)

    def _finished(self, record: TaskRecord, finished: TaskRecord | None) -> None:
        if finished is None:
            log.warning(
                "Task %s (%s) ended here after another worker took it over; this outcome is "
                "dropped.",
                record.id,
                record.task,
                extra={"task_id": record.id, "task": record.task},
            )
            return
        if self.metrics is not None:
            self.metrics.outcome(record.task, finished.status)
        if finished.status == "queued":  # a retry: look for it when it comes due
            delay = max(0.0, finished.run_at - time.time())
            asyncio.get_running_loop().call_later(delay, self.wake)
        if finished.callback_status == "pending" and finished.finished:
            self._notify(finished)

    # -- callbacks -------------------------------------------------------------------

    def _notify(self, record: TaskRecord) -> None:
        delivery = asyncio.create_task(self._deliver(record))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._deliveries.discard)

    async def _deliver(self, record: TaskRecord) -> None:
        # httpx is imported with the first callback: a worker without one never needs it
        import httpx

        from tiffin.tasks import webhook

        if self._http is None:
            self._http = httpx.AsyncClient()
        delivered = await webhook.deliver(record, self._http)
        try:
            await self.queue.call(self.store.callback_done, record.id, delivered=delivered)
        except TiffinError as exc:
            log.warning("Could not record the callback of task %s: %s", record.id, exc.message)
