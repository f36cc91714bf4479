"""Fixtures shared by every test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiffin import config
from tiffin.models import ModelStore

REQUIRE_ALL = os.environ.get("TIFFIN_TEST_REQUIRE_ALL") == "1"


def need(available: bool, what: str) -> None:
    """Skip the test when ``what`` is missing, or fail under ``TIFFIN_TEST_REQUIRE_ALL=1``
    (CI), so integration tests never silently stop running there."""
    if available:
        return
    if REQUIRE_ALL:
        pytest.fail(f"{what} is required when TIFFIN_TEST_REQUIRE_ALL=1")
    pytest.skip(what)


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
