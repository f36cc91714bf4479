"""A service's tasks as the server exposes them: submit, status, result, cancel, list.

``TaskQueue`` opens the store the settings name and runs every store call in one thread
of its own, so a slow disk or a distant Redis never holds up the event loop (nor the
API requests on it). Its methods raise the errors the HTTP answers are made from:
``TaskNotFound`` (404), ``TaskNotCompleted`` (409, with the task's status) and
``TaskFailed`` (500, with the task's error).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tiffin.config import Settings
from tiffin.exceptions import (
    ConfigError,
    Conflict,
    InvalidArgument,
    TaskFailed,
    TaskNotCompleted,
    TaskNotFound,
    UnsupportedMediaType,
)
from tiffin.observability.metrics import TaskMetrics
from tiffin.service import ServiceSpec, Task
from tiffin.tasks.redis import RedisStore
from tiffin.tasks.sqlite import SQLiteStore
from tiffin.tasks.store import STATUSES, TaskRecord, TaskStore

__all__ = ["MAX_LIST", "TaskQueue", "open_store"]

T = TypeVar("T")

MAX_LIST = 1000
"""The most tasks one list request returns."""

_ID = re.compile(r"[0-9a-f]{32}")
_JSON = ("", "application/json")


def open_store(url: str | None, *, service: str, home: Path, durable: bool = False) -> TaskStore:
    """The store ``url`` names (``redis://``, ``rediss://`` or ``sqlite:///path``), or by
    default the SQLite file ``<home>/tasks/<service>.db``.

    Raises:
        ConfigError: the URL names no known store, or the store cannot be opened.
        MissingDependency: a Redis URL without the ``redis`` package installed.

    Example:
        store = open_store("redis://localhost:6379/0", service="iris", home=Path.home())
    """
    if url is None:
        return SQLiteStore(home / "tasks" / f"{service}.db", durable=durable)
    if url.startswith("sqlite:///"):
        return SQLiteStore(Path(url.removeprefix("sqlite:///")), durable=durable)
    if url.startswith(("redis://", "rediss://")):
        return RedisStore(url, service=service)
    raise ConfigError(
        f"The task store URL {url!r} names no known store. Use redis://host:port/db, "
        "rediss://... or sqlite:///path/to/file.db (setting tasks_url, TIFFIN_TASKS_URL).",
        detail={"url": url},
    )


def _is_json(content_type: str, body: bytes) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type in _JSON or media_type.endswith("+json"):
        return True
    # `curl -d '{...}'` labels a JSON body as a form; it is read as the JSON it is
    return media_type == "application/x-www-form-urlencoded" and body.lstrip().startswith(b"{")


def _check_callback(url: str) -> None:
    """Refuse a callback that is not an absolute http or https URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"The callback {url!r} is not an http:// or https:// URL. Pass the full address "
            "the server should POST the finished task to, e.g. ?callback=https://example.com/done.",
            detail={"callback": url},
        )


class TaskQueue:
    """The tasks of one service, over the store its settings name.

    Args:
        spec: the service.
        settings: its settings (``tasks_url``, ``home``, ``task_result_ttl``).
        metrics: where submissions are counted, if anywhere.

    Attributes:
        on_submit: called (on the event loop) after each submission; the worker's runner
            sets it so a task submitted here starts without waiting for its next poll.
        on_cancel: called with a task's id after a cancel of a running task is recorded;
            the runner tells the task at once if it runs in this worker.
    """

    def __init__(
        self, spec: ServiceSpec, settings: Settings, metrics: TaskMetrics | None = None
    ) -> None:
        self.spec = spec
        self.tasks = spec.tasks
        self.settings = settings
        self.metrics = metrics
        self.store: TaskStore | None = None
        self.on_submit: Callable[[], None] = lambda: None
        self.on_cancel: Callable[[str], None] = lambda task_id: None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"tiffin-{spec.name}-tasks")

    async def open(self) -> None:
        """Open (or create) the store; raises ``ConfigError`` when it cannot be."""
        settings = self.settings
        self.store = await self._run(
            lambda: open_store(
                settings.tasks_url,
                service=self.spec.name,
                home=settings.home,
                durable=settings.durable_writes,
            )
        )

    async def close(self) -> None:
        """Close the store and stop its thread."""
        if self.store is not None:
            await self._run(self.store.close)
            self.store = None
        self._executor.shutdown(wait=False)

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``method(*args, now=<the time it runs>, **kwargs)``, in the store's thread."""
        return await self._run(lambda: method(*args, now=time.time(), **kwargs))

    def _store(self) -> TaskStore:
        if self.store is None:
            raise ConfigError(
                f"The task store of service '{self.spec.name}' is not open; it opens when "
                "the server starts."
            )
        return self.store

    # -- what the routes do ----------------------------------------------------------

    async def submit(
        self, task: Task[Any, Any], body: bytes, content_type: str, callback: str | None
    ) -> TaskRecord:
        """Check a submission's arguments as the task's code would get them, then queue it.

        Raises the same 4xx errors an API call with that body would, so a task that could
        never run is refused now, not failed later.
        """
        if not _is_json(content_type, body):
            raise UnsupportedMediaType(
                f"Task '{task.name}' takes its arguments as a JSON object, not "
                f"'{content_type}'; a task's arguments are stored until it runs. Send "
                "Content-Type: application/json.",
                detail={"content_type": content_type, "accepted": ["application/json"]},
            )
        if callback is not None:
            _check_callback(callback)
        task.io.cleanup(task.io.decode(body, content_type))
        payload = body if body.strip() else b"{}"
        ttl = task.result_ttl or self.settings.task_result_ttl
        record = await self.call(
            self._store().submit, task.name, payload, ttl=ttl, callback=callback
        )
        if self.metrics is not None:
            self.metrics.submitted[task.name].inc()
        self.on_submit()
        return record

    async def get(self, task: Task[Any, Any], task_id: str) -> TaskRecord:
        """The task ``task_id`` of ``task``; raises ``TaskNotFound``."""
        record = None
        if _ID.fullmatch(task_id):
            record = await self.call(self._store().get, task_id)
        if record is None or record.task != task.name:
            raise self._not_found(task, task_id)
        return record

    async def result(self, task: Task[Any, Any], task_id: str) -> bytes:
        """The JSON of a completed task's result; raises ``TaskNotCompleted`` while it is
        queued or running (or when it was cancelled), ``TaskFailed`` when it failed."""
        record = await self.get(task, task_id)
        if record.status == "completed" and record.result is not None:
            return record.result
        detail: dict[str, Any] = {"task": task.name, "id": task_id, "status": record.status}
        if record.status == "failed":
            error = record.error or {"type": "Error", "message": "The task failed."}
            tries = f"{record.attempts} attempt{'s' if record.attempts != 1 else ''}"
            raise TaskFailed(
                f"Task {task_id} ('{task.name}') failed after {tries}: {error.get('message')}",
                detail={**detail, "attempts": record.attempts, "error": error},
            )
        if record.status == "cancelled":
            raise TaskNotCompleted(
                f"Task {task_id} ('{task.name}') was cancelled, so it has no result. Submit it "
                "again to run it.",
                detail=detail,
            )
        raise TaskNotCompleted(
            f"Task {task_id} ('{task.name}') is {record.status}; it has no result yet. Ask "
            f"again later: GET /tasks/{task.name}/{task_id} shows when its status is "
            "'completed'.",
            detail=detail,
        )

    async def cancel(self, task: Task[Any, Any], task_id: str) -> TaskRecord:
        """Cancel a queued task, or ask a running one to stop; a cancelled one stays so.
        Raises ``Conflict`` for a task that has completed or failed already."""
        before = await self.get(task, task_id)
        record = await self.call(self._store().cancel, task_id)
        if record is None:
            raise self._not_found(task, task_id)
        queued = before.status == "queued"
        if queued and record.status == "cancelled" and self.metrics is not None:
            self.metrics.outcome(task.name, "cancelled")  # a running one counts as it ends
        if record.status in ("completed", "failed"):
            raise Conflict(
                f"Task {task_id} ('{task.name}') has {record.status} already, so there is "
                "nothing to cancel.",
                detail={"task": task.name, "id": task_id, "status": record.status},
            )
        if record.status == "running":
            self.on_cancel(task_id)
        return record

    async def list(self, task: Task[Any, Any], status: str | None, limit: int) -> list[TaskRecord]:
        """Up to ``limit`` of ``task``'s tasks, newest first, in ``status`` when given."""
        if status is not None and status not in STATUSES:
            raise InvalidArgument(
                f"There is no task status {status!r}. Use one of {', '.join(STATUSES)}.",
                detail={"status": status},
            )
        if not 1 <= limit <= MAX_LIST:
            raise InvalidArgument(
                f"limit={limit} is out of range; ask for 1 to {MAX_LIST} tasks.",
                detail={"limit": limit},
            )
        return await self.call(self._store().list, task.name, status=status, limit=limit)

    def _not_found(self, task: Task[Any, Any], task_id: str) -> TaskNotFound:
        ttl = task.result_ttl or self.settings.task_result_ttl
        return TaskNotFound(
            f"Task '{task.name}' has no task {task_id!r}: it never existed, or it finished "
            f"more than {ttl:g} s ago and was removed. GET /tasks/{task.name} lists its "
            "tasks.",
            detail={"task": task.name, "id": task_id},
        )
