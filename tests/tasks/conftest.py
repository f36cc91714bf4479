"""Task stores for the task tests: a SQLite file, and a real Redis server.

``redis_url`` starts ``redis-server`` once per session on a free port, in a temporary
directory, with persistence off, and stops it by its pid at the end; each test that
uses it starts from an empty database.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tiffin.tasks.queue import open_store
from tiffin.tasks.store import TaskStore

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a redis-server of this session's own."""
    need(
        REDIS_SERVER is not None,
        "redis-server is not installed (apt-get install redis-server)",
    )
    need(
        _has_redis_client(),
        "the redis package is not installed (pip install 'tiffin[redis]')",
    )
    assert REDIS_SERVER is not None
    directory = tmp_path_factory.mktemp("redis")
    port = _free_port()
    process = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=directory,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, "redis-server exited at start"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer PING in time"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(10)


def _has_redis_client() -> bool:
    try:
        import redis  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """``redis_server``'s URL, its database emptied first."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    return redis_server


@pytest.fixture(params=["sqlite", "redis"])
def tasks_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A task store URL: a new SQLite file, or an emptied Redis database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasks.db'}"
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def task_store(tasks_url: str, tmp_path: Path) -> Iterator[TaskStore]:
    """An empty store of each kind, for service 'svc'."""
    opened = open_store(tasks_url, service="svc", home=tmp_path)
    yield opened
    opened.close()
