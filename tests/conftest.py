"""Fixtures shared by every test."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tiffin import config
from tiffin.models import ModelStore
from tiffin.observability.metrics import FLUSH_S

REQUIRE_ALL = os.environ.get("TIFFIN_TEST_REQUIRE_ALL") == "1"


def need(available: bool, what: str) -> None:
    """Skip the test when ``what`` is missing, or fail under ``TIFFIN_TEST_REQUIRE_ALL=1``
    (CI), so integration tests never silently stop running there."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required when TIFFIN_TEST_REQUIRE_ALL=1")
    pytest.skip(what)


def wait_until(check: Callable[[], object], seconds: float = 20.0, what: str = "") -> None:
    """Poll ``check`` until it is true; fail, naming ``what``, after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what or 'the condition'}"
        time.sleep(0.02)


def metrics_passed_on() -> None:
    """Wait until every worker of a server has passed the requests it answered on to
    ``/metrics``: each does so ``FLUSH_S`` after a request (``ServerMetrics``)."""
    time.sleep(FLUSH_S + 0.25)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty TIFFIN_HOME, also seen by ``tiffin.config.current()``."""
    path = tmp_path / "home"
    monkeypatch.setenv("TIFFIN_HOME", str(path))
    config.current.cache_clear()
    yield path
    config.current.cache_clear()


@pytest.fixture
def store(home: Path) -> ModelStore:
    """A model store in an empty home."""
    return ModelStore(home)


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has exited and been reaped (so no process has it now)."""
    with subprocess.Popen(["true"]) as proc:
        proc.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    return proc.pid
