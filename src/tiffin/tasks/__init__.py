"""Durable background tasks: the store, the queue the server exposes, and the runner.

``@tiffin.task`` (``tiffin.service``) declares a task; this package keeps and runs it:

- ``store``: the one interface of a durable queue and result store (``TaskStore``) and
  the record it keeps (``TaskRecord``); ``sqlite`` and ``redis`` implement it.
- ``queue``: ``TaskQueue``, what the HTTP routes call (submit, status, result, cancel,
  list), with the store's calls in a thread of their own.
- ``runner``: ``TaskRunner``, which claims and runs tasks in each worker.
- ``context``: ``task_context()``, what a running task knows about itself.
- ``webhook``: completion callbacks.
- ``handles``: a task as a client sees it (``client.<task>.submit()`` and its handle).

Only ``context`` is imported with ``tiffin``; the server loads the rest, and the
client ``handles``.
"""

from tiffin.tasks.context import TaskContext, task_context

__all__ = ["TaskContext", "task_context"]
