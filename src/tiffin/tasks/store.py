"""The task store: one durable queue and result store, with a SQLite and a Redis backend.

A task's life, and the store operation that moves it on:

    submit ──> queued ──claim──> running ──complete──> completed
                 ^                  │ ────fail──────> failed      (no retries left)
                 │                  │ ────fail──────> queued      (retried at run_at)
                 │                  │ ────release───> queued      (its worker is stopping)
                 └── lease expired ─┘                             (its worker died)
    cancel: queued -> cancelled at once; running -> cancel_requested, and the task ends
    as cancelled however it ends.

- **Leases.** ``claim`` gives the task to one owner (a runner in one worker) until
  ``lease_until``; the owner renews the lease while the task runs. A lease that expires
  means the owner died: the next ``claim`` puts the task back in the queue first, counting
  it in ``lost``, so it runs again (at least once). A task lost ``LOST_LIMIT`` times (its
  code kills the process, say) is failed instead of being run again.
- **Ownership.** ``complete``, ``fail`` and ``release`` change only a task its caller
  still owns, so a result from an owner whose lease expired is dropped, and each task
  has at most one stored result however often it ran.
- **Results** are kept for the task's ``ttl`` after it finishes, then ``purge`` deletes
  them; a task past its expiry reads as missing even before that.
- **Callbacks.** A finished task with a callback URL is marked ``pending`` and leased for
  ``CALLBACK_LEASE`` seconds to whoever finished it; if that process dies before it has
  delivered, ``claim_callback`` hands the delivery to another runner once the lease ends.

Every operation takes ``now`` (seconds since the epoch) from its caller, so the
behaviour in time is the same on every backend and can be tested without waiting.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "CALLBACK_LEASE",
    "FINISHED",
    "LOST_LIMIT",
    "STATUSES",
    "Renewal",
    "Status",
    "TaskRecord",
    "TaskStore",
    "lost_error",
    "new_id",
]

Status = Literal["queued", "running", "completed", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "completed", "failed", "cancelled")
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

LOST_LIMIT = 3
"""Times a task's worker may die while running it before the task is failed."""
CALLBACK_LEASE = 120.0
"""Seconds a runner has to deliver a callback before another runner may take it over."""


def new_id(now: float) -> str:
    """A task id: 32 hex digits, the first 12 the submission time in milliseconds, so ids
    sort by age; the rest random."""
    return f"{int(now * 1000) & (2**48 - 1):012x}{secrets.token_hex(10)}"


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class TaskRecord:
    """One task as the store holds it.

    Attributes:
        id, task: its id and the task's name.
        status: one of ``STATUSES``.
        payload: the submitted arguments, as the JSON body they came in.
        ttl: seconds its result is kept once it has finished.
        submitted_at, run_at: when it was submitted; when it may run next (a retry waits).
        attempts: runs started; errors: runs that raised; lost: runs whose worker died.
        result: the JSON of its return value, once completed.
        error: ``{"type", "message"}`` of its last failure, unless it has completed since.
        started_at, finished_at, expires_at: when its last run started; when it finished;
            when it will be purged.
        owner, lease_until: the runner holding it while it runs, and until when.
        cancel_requested: a cancel was asked for while it ran.
        callback: the URL to tell when it finishes; callback_status: ``pending``,
            ``delivered`` or ``failed``; callback_until: the end of the delivery's lease.
    """

    id: str
    task: str
    status: str
    payload: bytes
    ttl: float
    submitted_at: float
    run_at: float
    attempts: int = 0
    errors: int = 0
    lost: int = 0
    result: bytes | None = None
    error: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    owner: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    callback: str | None = None
    callback_status: str | None = None
    callback_until: float | None = None

    @classmethod
    def submitted(
        cls, task: str, payload: bytes, *, ttl: float, callback: str | None, now: float
    ) -> TaskRecord:
        """A task just submitted: a new id, queued, due at once."""
        return cls(
            id=new_id(now),
            task=task,
            status="queued",
            payload=payload,
            ttl=ttl,
            submitted_at=now,
            run_at=now,
            callback=callback,
        )

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        """The task's status as the server shows it (no arguments, no result)."""
        return {
            "id": self.id,
            "task": self.task,
            "status": self.status,
            "attempts": self.attempts,
            "submitted_at": _iso(self.submitted_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "expires_at": _iso(self.expires_at),
            "cancel_requested": self.cancel_requested,
            "error": self.error,
            "callback": self.callback,
            "callback_status": self.callback_status,
        }


@dataclass(frozen=True)
class Renewal:
    """What ``TaskStore.renew`` found: the tasks still held, and those of them that have
    been asked to cancel."""

    held: frozenset[str]
    cancel: frozenset[str]


class TaskStore(ABC):
    """The one interface every task backend implements; see the module docstring.

    Calls block (a backend talks to a file or a server); ``tiffin.tasks.queue.TaskQueue``
    runs them off the event loop. Every method that changes a task returns it as it is
    after the change, or None when there was nothing to change.
    """

    url: str
    """Where the store is, for messages (no password)."""

    @abstractmethod
    def submit(
        self, task: str, payload: bytes, *, ttl: float, callback: str | None, now: float
    ) -> TaskRecord:
        """Queue a new task, runnable at once."""

    @abstractmethod
    def get(self, task_id: str, *, now: float) -> TaskRecord | None:
        """The task, or None if there is none or its result has expired."""

    @abstractmethod
    def list(self, task: str, *, status: str | None, limit: int, now: float) -> list[TaskRecord]:
        """Up to ``limit`` tasks named ``task`` (in ``status``, when given), newest first."""

    @abstractmethod
    def claim(
        self, tasks: Collection[str], owner: str, *, lease: float, now: float
    ) -> TaskRecord | None:
        """Take the runnable task among ``tasks`` that has waited longest, for ``owner``,
        until ``now + lease``; first put tasks whose lease expired back in the queue."""

    @abstractmethod
    def renew(self, task_ids: Collection[str], owner: str, *, lease: float, now: float) -> Renewal:
        """Extend ``owner``'s lease on each of ``task_ids`` it still holds."""

    @abstractmethod
    def complete(self, task_id: str, owner: str, result: bytes, *, now: float) -> TaskRecord | None:
        """Store the result of a task ``owner`` holds (cancelled instead, if a cancel was
        asked for); None if ``owner`` no longer holds it."""

    @abstractmethod
    def fail(
        self,
        task_id: str,
        owner: str,
        error: dict[str, Any],
        *,
        retry_at: float | None,
        now: float,
    ) -> TaskRecord | None:
        """Record that a run raised ``error``: queue the task again at ``retry_at``, or
        fail it when that is None (cancelled instead, if a cancel was asked for)."""

    @abstractmethod
    def release(self, task_id: str, owner: str, *, now: float) -> bool:
        """Give a task ``owner`` holds back to the queue, to run at once elsewhere."""

    @abstractmethod
    def cancel(self, task_id: str, *, now: float) -> TaskRecord | None:
        """Cancel a queued task; mark a running one ``cancel_requested``; leave a finished
        one as it is. None if there is no such task."""

    @abstractmethod
    def claim_callback(self, *, now: float) -> TaskRecord | None:
        """A finished task whose callback is pending and whose delivery lease has ended,
        leased now to the caller for ``CALLBACK_LEASE`` seconds."""

    @abstractmethod
    def callback_done(self, task_id: str, *, delivered: bool, now: float) -> None:
        """Record that a callback was delivered, or given up on."""

    @abstractmethod
    def purge(self, *, now: float) -> int:
        """Delete finished tasks whose results have expired; how many went."""

    @abstractmethod
    def depth(self, tasks: Collection[str], *, now: float) -> dict[str, int]:
        """How many tasks of each name are queued (waiting to run, or for a retry)."""

    @abstractmethod
    def close(self) -> None:
        """Close connections; the store is not used after."""


def lost_error(lost: int) -> dict[str, Any]:
    """The error of a task given up after its worker died ``lost`` times running it."""
    return {
        "type": "WorkerLost",
        "message": (
            f"The worker running this task stopped without finishing it {lost} times (a "
            "crash, running out of memory, or a kill), so it is not run again. Look in the "
            "server's log for why the worker stopped."
        ),
    }
