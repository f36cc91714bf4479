"""Real ``tiffin serve`` processes for the server tests.

``start_server`` writes nothing itself: give it a directory holding the service module,
and it runs ``tiffin serve ... --host 127.0.0.1 --port 0`` there, reads the URL from the
"Serving ..." line, and waits for ``/readyz``. Standard output and error go to files, so
a test can read the logs at any time without a pipe filling up.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

TIFFIN = Path(sys.executable).with_name("tiffin")
STARTUP_SECONDS = 30.0

PROBE = '''
import gc
import os
import time
from pathlib import Path

import tiffin


@tiffin.service(name="probe")
class Probe:
    """APIs that let tests look at processes."""

    def __init__(self) -> None:
        self.made_at_start = [[]]  # a container the garbage collector tracks

    @tiffin.api
    def collector(self) -> dict[str, int]:
        """Whether the collector runs, and still walks what the service made at start."""
        walked = any(each is self.made_at_start for each in gc.get_objects())
        return {"pid": os.getpid(), "enabled": gc.isenabled(), "walks_start_up": walked}

    @tiffin.api
    def predict(self, x: float) -> float:
        return x * 2

    @tiffin.api
    def pid(self) -> int:
        return os.getpid()

    @tiffin.api
    async def busy_pid(self) -> int:
        time.sleep(0.05)  # holds the worker's event loop, so others take new connections
        return os.getpid()

    @tiffin.api
    def crash(self) -> None:
        os._exit(1)

    @tiffin.api
    def slow(self, value: int, seconds: float = 1.0) -> int:
        with Path("started.txt").open("a") as marks:
            marks.write(f"{value}\\n")
        time.sleep(seconds)
        return value
'''


def environment(home: Path) -> dict[str, str]:
    """This process's environment without TIFFIN_* settings, with an empty home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIFFIN_")}
    env["TIFFIN_HOME"] = str(home)
    return env


@dataclass
class Server:
    """A running ``tiffin serve`` and where its output goes."""

    url: str
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(encoding="utf-8")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``; the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
        return self.process.wait(timeout)


def launch(directory: Path, *args: str, home: Path) -> subprocess.Popen[bytes]:
    """Start ``tiffin serve ARGS`` in ``directory``, output to serve.out and serve.err."""
    with (
        (directory / "serve.out").open("wb") as out,
        (directory / "serve.err").open("wb") as err,
    ):
        return subprocess.Popen(
            [str(TIFFIN), "serve", *args],
            cwd=directory,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=environment(home),
        )


def wait_for_url(process: subprocess.Popen[bytes], stdout: Path, stderr: Path) -> str:
    """The URL from the "Serving ..." line, once the server has printed it."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        found = re.search(r"^Serving \S+ at (http://\S+) ", stdout.read_text(), re.MULTILINE)
        if found:
            return found.group(1)
        if process.poll() is not None:
            pytest.fail(f"tiffin serve exited with {process.returncode}:\n{stderr.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"tiffin serve was not ready within {STARTUP_SECONDS} s:\n{stderr.read_text()}")


def start_server(directory: Path, *args: str, home: Path) -> Server:
    """Run ``tiffin serve ARGS --host 127.0.0.1 --port 0`` in ``directory`` and wait until
    ``/readyz`` answers 200. The caller stops it (``Server.stop``)."""
    process = launch(directory, *args, "--host", "127.0.0.1", "--port", "0", home=home)
    server = Server("", process, directory / "serve.out", directory / "serve.err")
    try:
        server.url = wait_for_url(process, server.stdout, server.stderr)
        deadline = time.monotonic() + STARTUP_SECONDS
        while httpx.get(f"{server.url}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "/readyz did not answer 200 in time"
            time.sleep(0.05)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(*args)`` starts ``tiffin serve ARGS`` in ``tmp_path`` (which holds the
    probe service as probe.py); every server started is stopped at the end."""
    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    started: list[Server] = []

    def start(*args: str) -> Server:
        server = start_server(tmp_path, *args, home=tmp_path / "home")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One probe server with two workers and JSON logs, shared by a module's tests."""
    directory = tmp_path_factory.mktemp("probe")
    (directory / "probe.py").write_text(PROBE, encoding="utf-8")
    server = start_server(
        directory,
        "probe:Probe",
        "--workers",
        "2",
        "--log-format",
        "json",
        home=directory / "home",
    )
    yield server
    server.stop()
