"""The HTTP routes of a service's durable tasks, and their queue and runner in the app.

A service with ``@tiffin.task`` methods gets, for each task ``<name>``:

    POST /tasks/<name>[?callback=URL]    submit: 202, the task's status (and Location)
    GET  /tasks/<name>[?status=&limit=]  its tasks, newest first: {"tasks": [status, ...]}
    GET  /tasks/<name>/<id>              status: queued, running, completed, failed,
                                         cancelled; attempts, times, error
    GET  /tasks/<name>/<id>/result       200 the result (as the API would answer it);
                                         409 TaskNotCompleted while queued or running, or
                                         once cancelled; 500 TaskFailed with the error
    POST /tasks/<name>/<id>/cancel       200 cancelled; 202 a running task was asked to
                                         stop; 409 it has completed or failed already

An unknown id is a 404 ``TaskNotFound``. The app opens the store and starts each
worker's task runner in its lifespan startup, and stops them in its shutdown; the runner
stops claiming tasks the moment SIGTERM arrives (a handler is put in front of the
server's own), and tasks get what remains of ``grace_period`` to finish. None of this
touches an API request: the collection paths are entries of the app's route table, and
the others are looked for only when the table has no match.

    tasks = TaskRoutes(app, spec, settings, registry)   # app: tiffin.server.App
    route_table.update(tasks.routes())                  # POST/GET /tasks/<name>
    tasks.item                                          # the handler of the other paths
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any, Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry

from tiffin.config import Settings
from tiffin.exceptions import InvalidArgument, RouteNotFound
from tiffin.io import dumps
from tiffin.observability.metrics import TaskMetrics
from tiffin.server.request import Handler, Receive, Request, Scope, Send
from tiffin.service import ServiceSpec, Task
from tiffin.tasks.queue import MAX_LIST, TaskQueue
from tiffin.tasks.runner import TaskRunner
from tiffin.tasks.store import TaskRecord

__all__ = ["TaskRoutes"]

log = logging.getLogger("tiffin.server")


class _App(Protocol):
    """What the task routes need of ``tiffin.server.App``."""

    async def _respond(
        self,
        send: Send,
        request: Request,
        status: int,
        body: bytes,
        *,
        content_type: bytes = ...,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int: ...

    async def _body(self, receive: Receive, request: Request) -> bytes: ...

    def _only(self, scope: Scope, *methods: str) -> None: ...


class TaskRoutes:
    """The tasks of one service in its app: their routes, queue and runner.

    Args:
        app: the app that answers with its responses, reads bodies and checks methods.
        spec: the service, with at least one task.
        settings: resolved settings (the task store, concurrency, ``grace_period``).
        registry: the metrics registry the task metrics join.

    Example:
        tasks = TaskRoutes(app, spec, settings, app.metrics.registry)
        await tasks.open()
        await tasks.start(instance)
    """

    def __init__(
        self, app: _App, spec: ServiceSpec, settings: Settings, registry: CollectorRegistry
    ) -> None:
        self.spec = spec
        self.settings = settings
        metrics = TaskMetrics(registry, list(spec.tasks))
        self.queue = TaskQueue(spec, settings, metrics)
        self.runner = TaskRunner(self.queue, spec.tasks, settings, metrics)
        self._respond = app._respond
        self._body = app._body
        self._only = app._only
        self._started = False
        self._drain_started: float | None = None
        self._restore_signals: list[tuple[int, Any, Any]] = []

    def routes(self) -> dict[str, Handler]:
        """The route table's entries: each task's collection path."""
        return {task.route: partial(self.collection, task) for task in self.spec.tasks.values()}

    # -- lifetime --------------------------------------------------------------------

    async def open(self) -> None:
        """Open the task store."""
        await self.queue.open()

    async def start(self, instance: Any) -> None:
        """Start this worker's runner on the service instance, and stop it claiming tasks
        on SIGTERM or SIGINT."""
        await self.runner.start(instance)
        self._started = True
        self._drain_on_signals()

    async def close(self) -> None:
        """Close the task store."""
        await self.queue.close()

    def _drain_on_signals(self) -> None:
        """Stop claiming tasks on SIGTERM or SIGINT, before the server's own handler runs
        (which then drains HTTP connections, and only after that runs the shutdown)."""
        if threading.current_thread() is not threading.main_thread():
            return  # a server run in a thread (tests) is stopped by its shutdown alone
        loop = asyncio.get_running_loop()
        runner = self.runner

        def chain(previous: Any) -> Callable[[int, FrameType | None], None]:
            def handler(signum: int, frame: FrameType | None) -> None:
                if self._drain_started is None:
                    self._drain_started = time.monotonic()
                    with contextlib.suppress(RuntimeError):  # the loop has closed
                        loop.call_soon_threadsafe(runner.drain)
                if callable(previous):
                    previous(signum, frame)

            return handler

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            installed = chain(previous)
            signal.signal(sig, installed)
            self._restore_signals.append((sig, installed, previous))

    async def stop(self) -> None:
        """Let running tasks finish within what is left of ``grace_period`` since the stop
        began, then put the rest back in the queue."""
        for sig, installed, previous in self._restore_signals:
            if signal.getsignal(sig) is installed:  # the server has not put its own back
                signal.signal(sig, previous)
        self._restore_signals.clear()
        if not self._started:
            return
        began = self._drain_started if self._drain_started is not None else time.monotonic()
        try:
            await self.runner.stop(began + self.settings.grace_period)
        except Exception:
            log.exception("The task runner of %s failed to stop cleanly", self.spec.name)

    # -- routes ----------------------------------------------------------------------

    async def collection(
        self, task: Task[Any, Any], scope: Scope, receive: Receive, send: Send, request: Request
    ) -> int:
        """``POST /tasks/<name>`` submits a task; ``GET`` lists its tasks."""
        self._only(scope, "POST", "GET")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["method"] == "GET":
            limit = _query(query, "limit") or "100"
            if not limit.isdigit():
                raise InvalidArgument(
                    f"limit={limit!r} is not a whole number. Ask for 1 to {MAX_LIST} tasks.",
                    detail={"limit": limit},
                )
            found = await self.queue.list(task, _query(query, "status"), int(limit))
            body = dumps({"tasks": [record.to_json() for record in found]})
            return await self._respond(send, request, 200, body)
        payload = await self._body(receive, request)
        record = await self.queue.submit(
            task, payload, request.content_type, _query(query, "callback")
        )
        location = f"{task.route}/{record.id}".encode()
        return await self._status(send, request, record, 202, [(b"location", location)])

    async def item(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        """``/tasks/<name>/<id>`` (status), ``.../result`` and ``.../cancel``."""
        path: str = scope["path"]
        name, _, rest = path.removeprefix("/tasks/").partition("/")
        task_id, _, action = rest.partition("/")
        task = self.spec.tasks.get(name)
        if task is None or not task_id or action not in ("", "result", "cancel"):
            tasks = ", ".join(sorted(t.route for t in self.spec.tasks.values()))
            raise RouteNotFound(
                f"No task endpoint at {path}. This service's tasks are at {tasks}; each "
                "task's status is at /tasks/<name>/<id>, its result at .../result; /docs "
                "lists them.",
                detail={"path": path},
            )
        if action == "cancel":
            self._only(scope, "POST")
            record = await self.queue.cancel(task, task_id)
            status = 202 if record.status == "running" else 200
            return await self._status(send, request, record, status)
        self._only(scope, "GET")
        if action == "result":
            body = await self.queue.result(task, task_id)
            return await self._respond(send, request, 200, body)
        record = await self.queue.get(task, task_id)
        return await self._status(send, request, record, 200)

    async def _status(
        self,
        send: Send,
        request: Request,
        record: TaskRecord,
        status: int,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        return await self._respond(send, request, status, dumps(record.to_json()), extra=extra)


def _query(query: dict[str, list[str]], name: str) -> str | None:
    """The last value of a query parameter, or None."""
    values = query.get(name)
    return values[-1] if values else None
