"""A copy of the quickstart project and its model, for tests that build bundles."""

from __future__ import annotations

import shutil
from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tiffin.models import Model, ModelStore

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"


def quickstart_project(directory: Path) -> Path:
    """Copy the quickstart's service and tiffin.yaml into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("service.py", "tiffin.yaml"):
        shutil.copyfile(QUICKSTART / name, directory / name)
    return directory


def iris_model(store: ModelStore) -> Model:
    """A small logistic regression on iris, saved as ``iris``."""
    features, labels = load_iris(return_X_y=True)
    return store.save("iris", LogisticRegression(max_iter=1000).fit(features, labels))
