"""What a running task can learn about itself: ``tiffin.task_context()``.

Cancelling a running task is cooperative: a ``def`` task runs in a thread, which cannot
be stopped from outside, so it looks at ``task_context().cancelled`` between steps and
returns early. An ``async def`` task is also cancelled the asyncio way (``CancelledError``
at its next ``await``). Either way, a task asked to cancel ends as ``cancelled``.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar

from tiffin.exceptions import ServiceDefinitionError

__all__ = ["TaskContext", "task_context"]

_current: ContextVar[TaskContext] = ContextVar("tiffin_task")


class TaskContext:
    """The task being run by the code that asks: its id, name, attempt, and whether it
    has been asked to stop.

    Attributes:
        id: the task's id, as the submitter got it.
        task: the task's name.
        attempt: 1 for the first run, 2 for the first retry (or the first run again after
            its worker was lost), and so on.

    Example:
        ctx = tiffin.task_context()
        for chunk in chunks:
            if ctx.cancelled:
                return None
            process(chunk)
    """

    __slots__ = ("_cancelled", "attempt", "id", "task")

    def __init__(self, id: str, task: str, attempt: int) -> None:
        self.id = id
        self.task = task
        self.attempt = attempt
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether a cancel of this task was asked for; a task that sees it should return."""
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Sleep up to ``timeout`` seconds, waking at once when the task is cancelled;
        returns ``cancelled``. Use it in place of ``time.sleep`` between steps."""
        return self._cancelled.wait(timeout)

    def cancel(self) -> None:
        """Mark the task cancelled (the runner does this when a cancel arrives)."""
        self._cancelled.set()

    def enter(self) -> None:
        """Make this the context that ``task_context()`` returns in the current context."""
        _current.set(self)

    def __repr__(self) -> str:
        return f"<tiffin task context {self.task} {self.id} attempt {self.attempt}>"


def task_context() -> TaskContext:
    """The ``TaskContext`` of the task whose code calls it.

    Raises:
        ServiceDefinitionError: called outside a ``@tiffin.task`` method (in an API, say).

    Example:
        @tiffin.task
        def crunch(self, n: int) -> int:
            ctx = tiffin.task_context()
            print(ctx.id, ctx.attempt, ctx.cancelled)
    """
    try:
        return _current.get()
    except LookupError:
        raise ServiceDefinitionError(
            "tiffin.task_context() was called outside a task. Call it from a method marked "
            "@tiffin.task, while the server runs it."
        ) from None
