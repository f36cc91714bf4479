"""Tasks through ``tiffin.Client``, ``AsyncClient`` and ``TestClient``, over a real HTTP
server, on both stores."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

import tiffin
from tests.server.asgi import live_server
from tiffin.client import AsyncTaskHandle, TaskHandle, TaskInfo
from tiffin.exceptions import (
    Conflict,
    InvalidArgument,
    RequestTimeout,
    TaskFailed,
    TaskNotCompleted,
    TaskNotFound,
    ValidationFailed,
)
from tiffin.testing import TestClient


@tiffin.service(name="crunch")
class Crunch:
    def __init__(self) -> None:
        self.gate = threading.Event()

    @tiffin.api
    def ping(self) -> str:
        return "pong"

    @tiffin.task
    def total(self, values: list[float]) -> float:
        return sum(values)

    @tiffin.task(retries=1, retry_backoff=0.01)
    def broken(self) -> None:
        raise KeyError("gone")

    @tiffin.task
    def gated(self) -> str:
        context = tiffin.task_context()
        while not self.gate.wait(0.01):
            if context.cancelled:
                return "cancelled"
        return "open"


def test_submit_wait_status_list_cancel(tasks_url: str) -> None:
    with live_server(Crunch, tasks_url=tasks_url, task_concurrency=1) as url:
        client = tiffin.Client(url)
        job = client.total.submit(values=[1.5, 2.5])
        assert isinstance(job, TaskHandle)
        assert job.wait(timeout=10) == 4.0
        info = job.status()
        assert isinstance(info, TaskInfo)
        assert (info.id, info.task, info.status, info.attempts) == (job.id, "total", "completed", 1)
        assert info.finished
        assert info.submitted_at is not None
        assert info.submitted_at.tzinfo is not None
        assert job.result() == 4.0
        assert client.total.get(job.id).result() == 4.0
        assert [i.id for i in client.total.list()] == [job.id]
        assert client.total.list(status="failed") == []

        failing = client.broken.submit()
        with pytest.raises(TaskFailed) as failed:
            failing.wait(timeout=10)
        assert failed.value.detail["error"]["type"] == "KeyError"
        assert failed.value.detail["attempts"] == 2

        running = client.gated.submit()
        queued = client.gated.submit()  # one slot: it waits
        deadline = time.monotonic() + 10
        while running.status().status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(TaskNotCompleted) as early:
            running.result()
        assert early.value.detail["status"] == "running"
        with pytest.raises(RequestTimeout, match=r"is still running after 0\.2 s"):
            running.wait(timeout=0.2, poll=0.05)
        assert queued.cancel().status == "cancelled"
        with pytest.raises(TaskNotCompleted, match="was cancelled, so it has no result"):
            queued.wait(timeout=5)
        assert running.cancel().cancel_requested
        with pytest.raises(TaskNotCompleted):
            running.wait(timeout=10)
        assert running.status().status == "cancelled"
        with pytest.raises(Conflict):
            job.cancel()

        with pytest.raises(TaskNotFound):
            client.total.get("f" * 32).status()
        with pytest.raises(ValidationFailed):
            client.total.submit(values="many")
        with pytest.raises(TypeError, match=r"'total' is a task, not an API: submit it with"):
            client.total(values=[1.0])
        with pytest.raises(TypeError, match="keyword arguments only"):
            client.total.submit([1.0])
        with pytest.raises(AttributeError, match=r"'ping' is an API, not a task"):
            client.ping.submit()
        with pytest.raises(InvalidArgument, match="a task's arguments are stored as JSON"):
            client.total.submit(values=b"bytes")
        assert client.ping() == "pong"
        client.close()


def test_the_async_client(tmp_path: Path) -> None:
    async def main(url: str) -> None:
        client = tiffin.AsyncClient(url)  # the APIs not read yet
        job = await client.total.submit(values=[1.0, 2.0])
        assert isinstance(job, AsyncTaskHandle)
        assert await job.wait(timeout=10) == 3.0
        assert (await job.status()).status == "completed"
        assert [i.id for i in await client.total.list()] == [job.id]
        with pytest.raises(TaskFailed):
            await (await client.broken.submit()).wait(timeout=10)
        with pytest.raises(AttributeError, match=r"'ping' is an API, not a task"):
            await client.ping.submit()
        with pytest.raises(TypeError, match=r"'total' is a task, not an API"):
            await client.total(values=[1.0])
        async with tiffin.AsyncClient(url) as connected:  # the APIs read
            again = await connected.total.submit(values=[5.0])
            assert await connected.total.get(again.id).wait(timeout=10) == 5.0
            with pytest.raises(TaskNotFound):
                await connected.total.get("0" * 32).result()
        await client.aclose()

    with live_server(Crunch, home=tmp_path) as url:
        asyncio.run(main(url))


def test_the_test_client_runs_tasks_in_a_temporary_store() -> None:
    with TestClient(Crunch) as client:
        assert client.total.submit(values=[2.0, 3.0]).wait(timeout=10) == 5.0
        store = client.settings.tasks_url
        assert store is not None
        path = Path(store.removeprefix("sqlite:///"))
        assert path.is_file()
        client.service.gate.set()
        assert client.gated.submit().wait(timeout=10) == "open"
    assert not path.exists()
