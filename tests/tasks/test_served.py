"""Tasks in real ``tiffin serve`` processes: killed with SIGKILL mid-task and restarted on
the same store, and stopped with SIGTERM while tasks run and wait."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import wait_until
from tests.server.conftest import Server, start_server
from tiffin.tasks.queue import open_store

SERVICE = '''
import os
import time
from pathlib import Path

import tiffin


@tiffin.service(name="worky")
class Worky:
    @tiffin.api
    def linger(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @tiffin.task
    def work(self, n: int, seconds: float) -> int:
        """Record each run's start and end in effects.txt; only a first run is slow."""
        attempt = tiffin.task_context().attempt
        with Path("effects.txt").open("a") as effects:
            effects.write(f"start {n} {attempt} {os.getpid()}\\n")
        time.sleep(seconds if attempt == 1 else 0.1)
        with Path("effects.txt").open("a") as effects:
            effects.write(f"end {n} {attempt}\\n")
        return n * 10
'''


def project(directory: Path, settings: str) -> Path:
    (directory / "worky.py").write_text(SERVICE, encoding="utf-8")
    (directory / "tiffin.yaml").write_text(f"settings: {settings}\n", encoding="utf-8")
    return directory / "effects.txt"


def lines(effects: Path) -> list[str]:
    return effects.read_text().splitlines() if effects.exists() else []


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def kill_everything(server: Server) -> None:
    """SIGKILL the server and its workers (with several), with no chance to stop cleanly:
    a supervisor is frozen first, so it neither restarts a worker nor tells one to stop."""
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    workers = children(pid)
    for worker in workers:
        os.kill(worker, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    server.process.wait(10)
    for worker in workers:
        wait_until(functools.partial(gone, worker), what=f"worker {worker} to exit")


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie left for init to reap counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def submit(url: str, n: int, seconds: float) -> str:
    answer = httpx.post(f"{url}/tasks/work", json={"n": n, "seconds": seconds}, timeout=10)
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["id"]
    return task_id


def test_tasks_of_a_killed_server_run_again_and_complete_once(tmp_path: Path) -> None:
    """Two tasks running and two queued when the server is killed: after a restart on the
    same store, the queued ones run once and the running ones run again (attempt 2, once
    their lease has run out); each ends completed, with one result."""
    effects = project(tmp_path, "{task_lease: 2, task_concurrency: 2}")
    home = tmp_path / "home"
    server = start_server(tmp_path, "worky:Worky", "--workers", "1", home=home)
    try:
        ids = [submit(server.url, n, 60.0 if n < 2 else 0.2) for n in range(4)]
        wait_until(
            lambda: {line.split()[1] for line in lines(effects)} == {"0", "1"},
            what="the first two tasks to start",
        )
        kill_everything(server)
    finally:
        server.stop()
    assert lines(effects)[2:] == []  # nothing else started or ended

    server = start_server(tmp_path, "worky:Worky", "--workers", "1", home=home)
    try:
        statuses: list[dict[str, Any]] = []

        def all_completed() -> bool:
            statuses[:] = [
                httpx.get(f"{server.url}/tasks/work/{task_id}", timeout=10).json()
                for task_id in ids
            ]
            return all(status["status"] == "completed" for status in statuses)

        wait_until(all_completed, what="every task to complete")
        assert [s["attempts"] for s in statuses] == [2, 2, 1, 1]
        results = [
            httpx.get(f"{server.url}/tasks/work/{task_id}/result", timeout=10).json()
            for task_id in ids
        ]
        assert results == [0, 10, 20, 30]
        listed = httpx.get(f"{server.url}/tasks/work", timeout=10).json()["tasks"]
        assert sorted(t["id"] for t in listed) == sorted(ids)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        assert 'tiffin_tasks_completed_total{task="work"} 4.0' in metrics
    finally:
        assert server.stop() == 0

    recorded = [line.split()[:3] for line in lines(effects)]
    starts = sorted((n, attempt) for kind, n, attempt in recorded if kind == "start")
    ends = sorted((n, attempt) for kind, n, attempt in recorded if kind == "end")
    # at least once: the two running tasks started twice; each task ended once
    assert starts == [("0", "1"), ("0", "2"), ("1", "1"), ("1", "2"), ("2", "1"), ("3", "1")]
    assert ends == [("0", "2"), ("1", "2"), ("2", "1"), ("3", "1")]


def test_sigterm_stops_claiming_and_lets_running_tasks_finish(tmp_path: Path) -> None:
    """While the server drains a slow request after SIGTERM, the running task finishes
    and the queued one is not started, though a task slot has come free: it stays
    queued in the store for the next server."""
    effects = project(tmp_path, "{task_lease: 2, task_concurrency: 1, grace_period: 10}")
    home = tmp_path / "home"
    server = start_server(tmp_path, "worky:Worky", "--workers", "1", home=home)
    answers: list[float] = []
    try:
        running = submit(server.url, 0, 1.0)
        waiting = submit(server.url, 1, 0.1)
        wait_until(lambda: lines(effects) != [], what="the first task to start")

        def linger() -> None:
            response = httpx.post(f"{server.url}/linger", json={"seconds": 3.0}, timeout=30)
            answers.append(response.json())

        request = threading.Thread(target=linger)
        request.start()
        time.sleep(0.3)  # the request is in flight
        os.kill(server.process.pid, signal.SIGTERM)
        assert server.process.wait(30) == 0
        request.join(10)
    finally:
        server.stop()
    assert answers == [3.0]
    assert [line.split()[:3] for line in lines(effects)] == [
        ["start", "0", "1"],
        ["end", "0", "1"],
    ]
    store = open_store(None, service="worky", home=home)
    try:
        done = store.get(running, now=time.time())
        left = store.get(waiting, now=time.time())
        assert done is not None
        assert (done.status, done.result) == ("completed", b"0")
        assert left is not None
        assert (left.status, left.attempts) == ("queued", 0)
    finally:
        store.close()
