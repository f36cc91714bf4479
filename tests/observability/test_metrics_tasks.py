"""The task metrics of a real ``tiffin serve`` with two workers: submissions, outcomes,
run times, runs in progress and the queue's depth, each the exact sum over both."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx

from tests.conftest import wait_until
from tests.observability.test_metrics_served import scrape, value
from tests.server.conftest import Server, start_server

SERVICE = """
import os
from pathlib import Path

import tiffin


@tiffin.service(name="jobs", workers=2)
class Jobs:
    @tiffin.task
    def ok(self, x: int) -> int:
        return x

    @tiffin.task(retries=1, retry_backoff=0)
    def boom(self) -> int:
        raise ValueError("boom")

    @tiffin.task
    def hold(self) -> int:
        context = tiffin.task_context()
        while not Path("release").exists():
            if context.wait_cancelled(0.01):
                return 0
        return os.getpid()
"""


def start(directory: Path, task_concurrency: int) -> Server:
    (directory / "jobs.py").write_text(SERVICE, encoding="utf-8")
    (directory / "tiffin.yaml").write_text(
        f"settings:\n  task_concurrency: {task_concurrency}\n", encoding="utf-8"
    )
    return start_server(directory, "jobs:Jobs", "--log-format", "json", home=directory / "home")


def submit(server: Server, task: str, **body: object) -> str:
    response = httpx.post(f"{server.url}/tasks/{task}", json=body, timeout=10)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["id"]
    return task_id


def status(server: Server, task: str, task_id: str) -> str:
    found: str = httpx.get(f"{server.url}/tasks/{task}/{task_id}", timeout=10).json()["status"]
    return found


def finished(server: Server, task: str, task_id: str) -> bool:
    return status(server, task, task_id) in ("completed", "failed")


def cancel(server: Server, task: str, task_id: str) -> None:
    response = httpx.post(f"{server.url}/tasks/{task}/{task_id}/cancel", timeout=10)
    assert response.status_code in (200, 202), response.text


def test_outcomes_runs_and_runs_in_progress(tmp_path: Path) -> None:
    server = start(tmp_path, task_concurrency=2)
    try:
        holds = [submit(server, "hold") for _ in range(3)]
        wait_until(lambda: value(scrape(server.url), "tiffin_tasks_running", task="hold") == 3)
        cancel(server, "hold", holds[0])
        wait_until(lambda: status(server, "hold", holds[0]) == "cancelled")
        oks = [submit(server, "ok", x=i) for i in range(5)]
        booms = [submit(server, "boom") for _ in range(2)]
        (tmp_path / "release").touch()
        for task, ids in (("ok", oks), ("boom", booms), ("hold", holds[1:])):
            for task_id in ids:
                wait_until(partial(finished, server, task, task_id))
        samples = scrape(server.url)
        expected = {
            # task: submitted, completed, failed, retried, cancelled, runs
            "ok": (5, 5, 0, 0, 0, 5),
            "boom": (2, 0, 2, 2, 0, 4),
            "hold": (3, 2, 0, 0, 1, 3),
        }
        for task, (submitted, completed, failed, retried, cancelled, runs) in expected.items():
            assert value(samples, "tiffin_tasks_submitted_total", task=task) == submitted
            assert value(samples, "tiffin_tasks_completed_total", task=task) == completed
            assert value(samples, "tiffin_tasks_failed_total", task=task) == failed
            assert value(samples, "tiffin_tasks_retried_total", task=task) == retried
            assert value(samples, "tiffin_tasks_cancelled_total", task=task) == cancelled
            assert value(samples, "tiffin_task_duration_seconds_count", task=task) == runs
            assert value(samples, "tiffin_tasks_running", task=task) == 0
        # the depth is read every few seconds: it comes down to nothing queued
        wait_until(
            lambda: all(
                value(scrape(server.url), "tiffin_tasks_queued", task=task) == 0
                for task in expected
            )
        )
    finally:
        server.stop()


def test_queue_depth_and_cancelled_queued_tasks(tmp_path: Path) -> None:
    server = start(tmp_path, task_concurrency=0)  # nothing runs: tasks stay queued
    try:
        ids = [submit(server, "ok", x=i) for i in range(4)]
        submit(server, "boom")
        wait_until(lambda: value(scrape(server.url), "tiffin_tasks_queued", task="ok") == 4)
        samples = scrape(server.url)
        assert value(samples, "tiffin_tasks_queued", task="boom") == 1
        assert value(samples, "tiffin_tasks_queued", task="hold") == 0
        for task_id in ids[:3]:
            cancel(server, "ok", task_id)
        cancel(server, "ok", ids[0])  # cancelled already: not counted again
        wait_until(lambda: value(scrape(server.url), "tiffin_tasks_queued", task="ok") == 1)
        samples = scrape(server.url)
        assert value(samples, "tiffin_tasks_submitted_total", task="ok") == 4
        assert value(samples, "tiffin_tasks_cancelled_total", task="ok") == 3
        assert value(samples, "tiffin_tasks_completed_total", task="ok") == 0
        assert value(samples, "tiffin_task_duration_seconds_count", task="ok") == 0
        assert value(samples, "tiffin_tasks_running", task="ok") == 0
    finally:
        server.stop()
