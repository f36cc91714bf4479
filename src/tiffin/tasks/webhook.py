"""Completion callbacks: tell a URL the submitter gave that its task has finished.

When a task with a callback finishes (completed, failed or cancelled), the server POSTs
its status to the URL as JSON, with the result under ``"result"`` for a completed task:

    POST <callback>
    Content-Type: application/json
    X-Tiffin-Task-Id: 0192f3a4b5c6e1f2a3b4c5d6e7f8a9b0

    {"id": "0192...", "task": "report", "status": "completed", "attempts": 1, ...,
     "result": {"mean": 4.2}}

Any 2xx answer is a delivery. Anything else (or no answer within ``TIMEOUT``) is tried
again, ``ATTEMPTS`` times in all, waiting ``BACKOFF`` seconds and then twice as long
each time. Deliveries run beside the tasks, never in a task's slot; one whose worker
stops before it is done is taken over by another worker (see ``tiffin.tasks.store``),
so a receiver may, rarely, get the same task twice: make it idempotent on the id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import orjson

from tiffin.tasks.store import TaskRecord

__all__ = ["ATTEMPTS", "BACKOFF", "TIMEOUT", "body", "deliver"]

ATTEMPTS = 5
BACKOFF = 1.0
TIMEOUT = 10.0

log = logging.getLogger("tiffin.tasks")


def body(record: TaskRecord) -> bytes:
    """The JSON a callback for ``record`` carries: its status, and its result if any."""
    document: dict[str, Any] = record.to_json()
    if record.status == "completed" and record.result is not None:
        document["result"] = orjson.Fragment(record.result)
    return orjson.dumps(document)


async def deliver(record: TaskRecord, http: httpx.AsyncClient) -> bool:
    """POST ``record``'s callback until it is taken or ``ATTEMPTS`` have failed; whether
    it was taken."""
    assert record.callback is not None
    content = body(record)
    headers = {
        "content-type": "application/json",
        "user-agent": "tiffin",
        "x-tiffin-task-id": record.id,
    }
    problem = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            await asyncio.sleep(BACKOFF * 2 ** (attempt - 1))
        try:
            response = await http.post(
                record.callback, content=content, headers=headers, timeout=TIMEOUT
            )
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if response.is_success:
            return True
        problem = f"it answered {response.status_code}"
    log.warning(
        "Could not deliver the callback of task %s to %s after %d attempts (%s); giving up.",
        record.id,
        record.callback,
        ATTEMPTS,
        problem,
        extra={"task_id": record.id, "task": record.task},
    )
    return False
