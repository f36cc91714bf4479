"""The limit for Python HTTP serving: a bare ASGI app, no framework, that does the same
work as the other systems: it reads the body, parses it with the standard ``json``
module, calls the same model and returns the same JSON. Served by uvicorn with httptools
and uvloop, one worker, no access log:

    BENCH_SERVICE=iris uvicorn bench.services.bare:app --loop uvloop --http httptools

``$BENCH_SERVICE`` picks the scenario: ``iris``, ``mlp`` (batched) or ``large-body``.
The model is called on the event loop, except the MLP, whose batches run in a thread
while the loop keeps reading requests. A request that finds the model idle runs at once;
the next batch is whatever queued meanwhile (up to ``MLP_MAX_BATCH`` rows), after a 1 ms
pause when the last batch had more than one row and the queue is not full, so that the
clients just answered can send again and join it (about 20% more throughput at 64
connections here than dispatching at once).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np
from bench.services.workload import MLP_MAX_BATCH, Mlp, count_positive, iris_predict, load_iris

_GATHER_S = 0.001
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class _MlpBatcher:
    """Merges concurrent calls into one model call, run in a thread."""

    def __init__(self, mlp: Mlp) -> None:
        self.mlp = mlp
        self.pending: deque[tuple[np.ndarray, asyncio.Future[list[int]]]] = deque()
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, body: dict[str, Any]) -> list[int]:
        rows = np.asarray(body["features"], dtype=np.float32)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[int]] = loop.create_future()
        self.pending.append((rows, future))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        previous = 0
        while self.pending:
            if previous > 1 and len(self.pending) < MLP_MAX_BATCH:
                # under load, the clients of the batch just answered are sending again:
                # let them join instead of running a batch of one in between
                await asyncio.sleep(_GATHER_S)
            batch = [self.pending.popleft()]
            previous = len(batch[0][0])
            while self.pending and previous + len(self.pending[0][0]) <= MLP_MAX_BATCH:
                batch.append(self.pending.popleft())
                previous += len(batch[-1][0])
            try:
                labels = await loop.run_in_executor(
                    None, self.mlp, np.concatenate([rows for rows, _ in batch])
                )
            except Exception as exc:  # each caller gets the model's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for rows, future in batch:
                if not future.done():  # its client may have gone
                    future.set_result(labels[start : start + len(rows)].tolist())
                start += len(rows)


def _handler(service: str) -> Handler:
    if service == "iris":
        clf = load_iris()

        async def iris(body: dict[str, Any]) -> Any:
            return iris_predict(clf, np.asarray(body["features"], dtype=np.float64))

        return iris
    if service == "mlp":
        return _MlpBatcher(Mlp.load())
    if service == "large-body":

        async def large_body(body: dict[str, Any]) -> Any:
            return count_positive(np.asarray(body["values"], dtype=np.float64))

        return large_body
    raise SystemExit(f"BENCH_SERVICE={service!r} is not one of iris, mlp, large-body")


_predict = _handler(os.environ.get("BENCH_SERVICE", "iris"))
_JSON = [(b"content-type", b"application/json")]


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    chunks = []
    more = True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    if scope["path"] == "/readyz":
        await _respond(send, 200, b'"ok"')
    elif scope["path"] == "/predict" and scope["method"] == "POST":
        answer = await _predict(json.loads(b"".join(chunks)))
        await _respond(send, 200, json.dumps(answer).encode())
    else:
        await _respond(send, 404, b'"not found"')
