"""A task as a client sees it: ``client.<task>`` is a ``TaskMethod``, ``submit()`` returns
a ``TaskHandle``, and ``status()`` a ``TaskInfo``; ``AsyncTaskMethod`` and
``AsyncTaskHandle`` are the same for ``tiffin.AsyncClient``, as coroutines.

The handles send their requests through the client that made them (``tiffin.Client``,
``tiffin.AsyncClient``, ``tiffin.testing.TestClient``), so they share its address, keys,
timeouts and connection pool, and raise the errors the server answers with as the same
``TiffinError`` classes.

    job = client.report.submit(rows=[[1.0, 2.0]])   # 202: queued
    job.status().status                             # 'queued', 'running', 'completed', ...
    job.wait(timeout=600)                           # the result; TaskFailed if it failed
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tiffin.exceptions import InvalidArgument, RequestTimeout, TaskNotCompleted, TiffinError
from tiffin.tasks.store import FINISHED

__all__ = ["AsyncTaskHandle", "AsyncTaskMethod", "TaskHandle", "TaskInfo", "TaskMethod"]


class _Client(Protocol):
    """What a ``TaskHandle`` needs of ``tiffin.Client``."""

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
    ) -> Any: ...

    def _task_body(self, name: str, kwargs: Mapping[str, Any]) -> bytes: ...


class _AsyncClient(Protocol):
    """What an ``AsyncTaskHandle`` needs of ``tiffin.AsyncClient``."""

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
    ) -> Any: ...

    def _task_body(self, name: str, kwargs: Mapping[str, Any]) -> bytes: ...

    async def _task_route(self, name: str) -> str: ...


def _keywords_only(name: str, args: tuple[Any, ...]) -> None:
    if args:
        raise TypeError(
            f"Task '{name}' takes keyword arguments only: client.{name}.submit(name=value, ...)."
        )


def _listing(status: str | None, limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if status is not None:
        params["status"] = status
    return params


def _moment(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass(frozen=True)
class TaskInfo:
    """A task's status, as ``GET /tasks/<name>/<id>`` answers it.

    Attributes:
        id, task: the task's id and name.
        status: ``queued``, ``running``, ``completed``, ``failed`` or ``cancelled``.
        attempts: runs started (retries, and runs again after a worker died, count).
        submitted_at, started_at, finished_at, expires_at: when it was submitted, its last
            run started, it finished, and its result will be removed (UTC).
        cancel_requested: a cancel was asked for while it ran.
        error: ``{"type", "message"}`` of its last failure, if any.
        callback, callback_status: the URL told when it finishes, and whether that
            worked (``pending``, ``delivered``, ``failed``).
    """

    id: str
    task: str
    status: str
    attempts: int
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    cancel_requested: bool
    error: dict[str, Any] | None
    callback: str | None
    callback_status: str | None

    @property
    def finished(self) -> bool:
        """Whether it has completed, failed or been cancelled."""
        return self.status in FINISHED

    @classmethod
    def from_json(cls, data: Any) -> TaskInfo:
        """Read the status document the server answers with."""
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise TiffinError(
                f"The server answered with something that is not a task's status: "
                f"{str(data)[:200]!r}. Check that the URL is a tiffin server's."
            )
        return cls(
            id=data["id"],
            task=str(data.get("task", "")),
            status=str(data.get("status", "")),
            attempts=int(data.get("attempts") or 0),
            submitted_at=_moment(data.get("submitted_at")),
            started_at=_moment(data.get("started_at")),
            finished_at=_moment(data.get("finished_at")),
            expires_at=_moment(data.get("expires_at")),
            cancel_requested=bool(data.get("cancel_requested")),
            error=data.get("error") if isinstance(data.get("error"), dict) else None,
            callback=data.get("callback"),
            callback_status=data.get("callback_status"),
        )


class _Polling:
    """How ``wait()`` polls a task: at first often, then every ``poll`` seconds, until a
    deadline."""

    def __init__(self, handle_id: str, name: str, timeout: float | None, poll: float) -> None:
        if poll <= 0:
            raise InvalidArgument(f"wait(poll={poll!r}) must be a number of seconds above 0.")
        self.id = handle_id
        self.name = name
        self.timeout = timeout
        self.poll = poll
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pause = min(0.05, poll)

    def next_pause(self, info: TaskInfo) -> float:
        """Seconds to sleep before the next look; raises ``RequestTimeout`` past the deadline."""
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left <= 0:
            raise RequestTimeout(
                f"Task {self.id} ('{self.name}') is still {info.status} after {self.timeout:g} "
                "s. Wait longer, or look again later with "
                f"client.{self.name}.get({self.id!r}).status().",
                detail={"task": self.name, "id": self.id, "status": info.status},
            )
        pause = self.pause
        self.pause = min(self.pause * 2, self.poll)
        return pause if left is None else min(pause, left)


def _cancelled(info: TaskInfo) -> TaskNotCompleted:
    return TaskNotCompleted(
        f"Task {info.id} ('{info.task}') was cancelled, so it has no result. Submit it again "
        "to run it.",
        detail={"task": info.task, "id": info.id, "status": info.status},
    )


class TaskHandle:
    """A submitted task of a ``Client``: look at it, collect its result, cancel it.

    Example:
        job = client.report.submit(rows=[[1.0, 2.0]])
        job.status().status          # 'queued'
        job.wait(timeout=600)        # the result once it has completed
        job.cancel()
    """

    def __init__(self, client: _Client, task: str, task_id: str) -> None:
        self.client = client
        self.task = task
        self.id = task_id
        self._path = f"/tasks/{task}/{task_id}"

    def status(self) -> TaskInfo:
        """The task's status now."""
        return TaskInfo.from_json(self.client._exchange("GET", self._path))

    def result(self) -> Any:
        """The result of the completed task. Raises ``TaskNotCompleted`` while it is queued
        or running (or once cancelled), ``TaskFailed`` if it failed, ``TaskNotFound``
        once its result has expired."""
        return self.client._exchange("GET", self._path + "/result")

    def cancel(self) -> TaskInfo:
        """Cancel it if queued, or ask it to stop if running; its status after. Raises
        ``Conflict`` if it has completed or failed already."""
        return TaskInfo.from_json(self.client._exchange("POST", self._path + "/cancel"))

    def wait(self, timeout: float | None = None, *, poll: float = 1.0) -> Any:
        """Wait until the task finishes; its result. Raises ``TaskFailed`` if it failed,
        ``TaskNotCompleted`` if it was cancelled, ``RequestTimeout`` after ``timeout``
        seconds (``None``: no limit). Looks every ``poll`` seconds at most."""
        polling = _Polling(self.id, self.task, timeout, poll)
        while not (info := self.status()).finished:
            time.sleep(polling.next_pause(info))
        if info.status == "cancelled":
            raise _cancelled(info)
        return self.result()

    def __repr__(self) -> str:
        return f"<tiffin task {self.task} {self.id}>"


class TaskMethod:
    """A task of the server, as ``client.<task>`` gives it.

    Example:
        job = client.report.submit(rows=[[1.0, 2.0]])
        client.report.with_callback("https://example.com/done").submit(rows=[[3.0]])
        [info.id for info in client.report.list(status="failed")]
    """

    def __init__(
        self,
        client: _Client,
        name: str,
        route: str,
        description: str = "",
        callback: str | None = None,
    ) -> None:
        self.client = client
        self.name = self.__name__ = name
        self.route = route
        self._description = description
        self._callback = callback
        self.__doc__ = f"Task: POST {route}\n\n{description}".strip()

    def submit(self, *args: Any, **kwargs: Any) -> TaskHandle:
        """Queue the task with these keyword arguments; a handle to it, at once."""
        _keywords_only(self.name, args)
        params = None if self._callback is None else {"callback": self._callback}
        body = self.client._task_body(self.name, kwargs)
        info = TaskInfo.from_json(
            self.client._exchange("POST", self.route, params=params, content=body)
        )
        return TaskHandle(self.client, self.name, info.id)

    def with_callback(self, url: str) -> TaskMethod:
        """The same task, submitted with a callback: when it finishes, the server POSTs its
        status and result to ``url``."""
        return TaskMethod(self.client, self.name, self.route, self._description, url)

    def get(self, task_id: str) -> TaskHandle:
        """A handle to a task submitted before (no request is made)."""
        return TaskHandle(self.client, self.name, task_id)

    def list(self, *, status: str | None = None, limit: int = 100) -> list[TaskInfo]:
        """This task's tasks the server still keeps, newest first (``status``: only those)."""
        found = self.client._exchange("GET", self.route, params=_listing(status, limit))
        return [TaskInfo.from_json(item) for item in found.get("tasks", [])]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"'{self.name}' is a task, not an API: submit it with "
            f"client.{self.name}.submit(...), then .wait() for its result."
        )

    def __repr__(self) -> str:
        return f"<tiffin task {self.name} POST {self.route}>"


class AsyncTaskHandle:
    """A submitted task of an ``AsyncClient``; see ``TaskHandle``, whose methods these
    are, as coroutines.

    Example:
        job = await client.report.submit(rows=[[1.0, 2.0]])
        await job.wait(timeout=600)
    """

    def __init__(self, client: _AsyncClient, task: str, task_id: str) -> None:
        self.client = client
        self.task = task
        self.id = task_id
        self._path = f"/tasks/{task}/{task_id}"

    async def status(self) -> TaskInfo:
        """The task's status now."""
        return TaskInfo.from_json(await self.client._exchange("GET", self._path))

    async def result(self) -> Any:
        """The result of the completed task; see ``TaskHandle.result``."""
        return await self.client._exchange("GET", self._path + "/result")

    async def cancel(self) -> TaskInfo:
        """Cancel it, or ask it to stop; see ``TaskHandle.cancel``."""
        return TaskInfo.from_json(await self.client._exchange("POST", self._path + "/cancel"))

    async def wait(self, timeout: float | None = None, *, poll: float = 1.0) -> Any:
        """Wait until the task finishes; its result. See ``TaskHandle.wait``."""
        polling = _Polling(self.id, self.task, timeout, poll)
        while not (info := await self.status()).finished:
            await asyncio.sleep(polling.next_pause(info))
        if info.status == "cancelled":
            raise _cancelled(info)
        return await self.result()

    def __repr__(self) -> str:
        return f"<tiffin task {self.task} {self.id}>"


class AsyncTaskMethod:
    """A task of the server, as ``AsyncClient.<task>`` gives it; see ``TaskMethod``.

    Example:
        job = await client.report.submit(rows=[[1.0, 2.0]])
        infos = await client.report.list(status="running")
    """

    def __init__(self, client: _AsyncClient, name: str, callback: str | None = None) -> None:
        self.client = client
        self.name = self.__name__ = self.__qualname__ = name
        self._callback = callback

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncTaskHandle:
        """Queue the task with these keyword arguments; a handle to it, at once."""
        _keywords_only(self.name, args)
        route = await self.client._task_route(self.name)
        params = None if self._callback is None else {"callback": self._callback}
        body = self.client._task_body(self.name, kwargs)
        answer = await self.client._exchange("POST", route, params=params, content=body)
        return AsyncTaskHandle(self.client, self.name, TaskInfo.from_json(answer).id)

    def with_callback(self, url: str) -> AsyncTaskMethod:
        """The same task, submitted with a callback URL; see ``TaskMethod.with_callback``."""
        return AsyncTaskMethod(self.client, self.name, url)

    def get(self, task_id: str) -> AsyncTaskHandle:
        """A handle to a task submitted before (no request is made)."""
        return AsyncTaskHandle(self.client, self.name, task_id)

    async def list(self, *, status: str | None = None, limit: int = 100) -> list[TaskInfo]:
        """This task's tasks the server still keeps, newest first."""
        route = await self.client._task_route(self.name)
        found = await self.client._exchange("GET", route, params=_listing(status, limit))
        return [TaskInfo.from_json(item) for item in found.get("tasks", [])]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"'{self.name}' is a task, not an API: submit it with "
            f"await client.{self.name}.submit(...), then await .wait() for its result."
        )

    def __repr__(self) -> str:
        return f"<tiffin task {self.name}>"
