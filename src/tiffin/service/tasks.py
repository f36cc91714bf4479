"""``@tiffin.task``: a service method that runs as a durable background job.

A caller submits a task and collects its result later; the server keeps the queue and
the results in a store (``tiffin.tasks``) and runs each task in a worker, outside the
request path. What this module checks is everything that can be known from the method
alone: its options, and that its arguments and result can be stored as JSON.

Example:
    @tiffin.service
    class Reports:
        @tiffin.task(retries=2, retry_backoff=5.0)
        def monthly(self, month: str) -> dict[str, float]: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from tiffin.exceptions import ServiceDefinitionError
from tiffin.io import ApiIO

__all__ = ["MAX_BACKOFF", "Task", "task"]

P = ParamSpec("P")
R = TypeVar("R")

MAX_BACKOFF = 3600.0
"""The longest wait before a retry, in seconds, however many failures came before it."""


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isidentifier()


class Task(Generic[P, R]):
    """A task method of a service: what ``@tiffin.task`` turns a method into.

    A task is a job a caller submits and collects later: the server stores its arguments,
    answers with a task id at once, and runs it in the background, outside the request
    path. On an instance it is the plain bound method; on the class it describes the task.
    """

    def __init__(
        self,
        func: Callable[P, R],
        *,
        name: str | None,
        doc: str | None,
        retries: int,
        retry_backoff: float,
        timeout: float | None,
        result_ttl: float | None,
    ) -> None:
        self.func = func
        self.name = name or func.__name__
        self.route = f"/tasks/{self.name}"
        self.doc = doc if doc is not None else inspect.cleandoc(func.__doc__ or "")
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.timeout = timeout
        self.result_ttl = result_ttl
        self.is_async = inspect.iscoroutinefunction(func)
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise ServiceDefinitionError(
                f"Task '{self.name}' is a generator; a task's result is stored whole, so it "
                "cannot stream. Return the result (a list, say), or make it an @tiffin.api."
            )
        self.io = ApiIO(func, self.name)
        if self.io.stream:
            raise ServiceDefinitionError(
                f"Task '{self.name}' is annotated to return a stream; a task's result is "
                "stored whole. Annotate the value it returns."
            )
        if self.io.files:
            names = ", ".join(f"'{param.name}'" for param in self.io.files)
            raise ServiceDefinitionError(
                f"Task '{self.name}' takes files ({names}); a task's arguments are stored as "
                "JSON until it runs. Pass a reference the task can read (a path or URL) instead."
            )
        output = self.io.output_codec
        if output is not None and output.file:
            raise ServiceDefinitionError(
                f"Task '{self.name}' returns a {output.name}; a task's result is stored as JSON. "
                "Store the file where callers can fetch it and return its location instead."
            )

    def backoff(self, failures: int) -> float:
        """Seconds to wait before the retry that follows the ``failures``-th failure:
        ``retry_backoff`` doubled for each failure before it, at most ``MAX_BACKOFF``."""
        return min(self.retry_backoff * 2.0 ** (failures - 1), MAX_BACKOFF)

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    @overload
    def __get__(self, instance: None, owner: type) -> Task[P, R]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Callable[..., R]: ...
    def __get__(self, instance: object | None, owner: type) -> Any:
        if instance is None:
            return self
        return self.func.__get__(instance, owner)

    def __repr__(self) -> str:
        return f"<tiffin task {self.name} {self.route}>"


def _number(value: Any, *, integer: bool = False) -> bool:
    kind = int if integer else int | float
    return isinstance(value, kind) and not isinstance(value, bool)


def _check_task_args(
    func: Any,
    *,
    name: str | None,
    doc: str | None,
    retries: Any,
    retry_backoff: Any,
    timeout: Any,
    result_ttl: Any,
) -> None:
    label = getattr(func, "__name__", repr(func))
    if isinstance(func, staticmethod | classmethod) or not inspect.isfunction(func):
        raise ServiceDefinitionError(
            f"@tiffin.task decorates a plain method (def {label}(self, ...)), not "
            f"{type(func).__name__}."
        )
    if name is not None and (not isinstance(name, str) or not _is_name(name)):
        raise ServiceDefinitionError(
            f"@tiffin.task(name={name!r}) on '{label}' must be a Python identifier, e.g. 'report'."
        )
    if doc is not None and not isinstance(doc, str):
        raise ServiceDefinitionError(f"@tiffin.task(doc=...) on '{label}' must be a string.")
    if not _number(retries, integer=True) or retries < 0:
        raise ServiceDefinitionError(
            f"@tiffin.task(retries={retries!r}) on '{label}' must be a whole number, 0 or more: "
            "how many times a task that raised is run again."
        )
    if not _number(retry_backoff) or retry_backoff < 0:
        raise ServiceDefinitionError(
            f"@tiffin.task(retry_backoff={retry_backoff!r}) on '{label}' must be a number of "
            "seconds, 0 or more."
        )
    for key, value in (("timeout", timeout), ("result_ttl", result_ttl)):
        if value is not None and (not _number(value) or value <= 0):
            raise ServiceDefinitionError(
                f"@tiffin.task({key}={value!r}) on '{label}' must be a number of seconds above 0, "
                "or None."
            )
    params = list(inspect.signature(func).parameters)
    if not params or params[0] != "self":
        raise ServiceDefinitionError(
            f"Task '{label}' must be a method whose first parameter is 'self'."
        )


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    doc: str | None = None,
    retries: int = 0,
    retry_backoff: float = 1.0,
    timeout: float | None = None,
    result_ttl: float | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    doc: str | None = None,
    retries: int = 0,
    retry_backoff: float = 1.0,
    timeout: float | None = None,
    result_ttl: float | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Make a service method a durable background task, bare or with options.

    The server takes a submission at ``POST /tasks/<name>`` (the arguments as a JSON
    object, as for an API), stores it and answers 202 with the task's id; a worker runs it
    later, in a thread of its own for a ``def`` method. Status, result and cancellation
    are at ``/tasks/<name>/<id>``; the stored queue outlives a restart, and a task that was
    running when its worker died runs again. Inside the method, ``tiffin.task_context()``
    gives the task's id, attempt number and whether a cancel was asked for.

    Args:
        name: the task's name (default: the method's name).
        doc: its description in ``/docs`` (default: the method's docstring).
        retries: how many times a task that raised runs again before it is failed.
        retry_backoff: seconds before the first retry; each further retry waits twice as
            long as the one before (at most an hour).
        timeout: seconds one attempt may run before it counts as failed (default: no limit).
            A ``def`` method cannot be stopped, so its thread runs on until it returns.
        result_ttl: seconds the result is kept once the task has finished (default: the
            ``task_result_ttl`` setting).

    Example:
        @tiffin.task(retries=3, retry_backoff=2.0, result_ttl=3600)
        def report(self, rows: list[list[float]]) -> dict[str, float]: ...
    """

    def decorate(function: Callable[P, R]) -> Task[P, R]:
        _check_task_args(
            function,
            name=name,
            doc=doc,
            retries=retries,
            retry_backoff=retry_backoff,
            timeout=timeout,
            result_ttl=result_ttl,
        )
        return Task(
            function,
            name=name,
            doc=doc,
            retries=retries,
            retry_backoff=retry_backoff,
            timeout=timeout,
            result_ttl=result_ttl,
        )

    if func is not None:
        return decorate(func)
    return decorate
