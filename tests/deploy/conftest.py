"""A built quickstart bundle in a throwaway home, for the deploy tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bundles.project import iris_model, quickstart_project
from tiffin.bundles import Bundle, BundleStore
from tiffin.bundles.build import build
from tiffin.models import ModelStore


@pytest.fixture
def model_store(home: Path) -> ModelStore:
    """The model store in the test's home, holding the quickstart's ``iris`` model."""
    store = ModelStore(home)
    iris_model(store)
    return store


@pytest.fixture
def bundle_store(home: Path) -> BundleStore:
    """The bundle store in the test's home."""
    return BundleStore(home)


@pytest.fixture
def bundle(tmp_path: Path, model_store: ModelStore, bundle_store: BundleStore) -> Bundle:
    """The quickstart built into a bundle (``quickstart:<version>``)."""
    project = quickstart_project(tmp_path / "project")
    return build(project, bundles=bundle_store, models=model_store)
