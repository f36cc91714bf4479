"""The work behind each scenario, shared by every system so that all of them compute the
same answer from the same model files.

It needs numpy only (and scikit-learn to unpickle the iris model), so it imports in the
peers' virtual environments as well as in tiffin's. The model files are written once per
run by ``bench/scenarios.py`` into the directory named by ``$BENCH_DATA``:

    iris.pkl   the quickstart's LogisticRegression, as saved in tiffin's model store
    mlp.npz    the MLP's weights (256 -> 4096 -> 4096 -> 10, float32)
"""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

IRIS_CLASSES = ("setosa", "versicolor", "virginica")
MLP_SIZES = (256, 4096, 4096, 10)
MLP_MAX_BATCH = 64
"""The most rows in one batched call, for every system that batches."""
MLP_BATCH_WAIT_MS = 10
"""The wait window given to systems whose knob is one (LitServe's ``batch_timeout``)."""
MLP_QUEUE_PROMISE_MS = 100
"""tiffin's ``max_latency_ms``: not a window but a promise about queue wait (a request that
cannot start within it is refused with 503). A 64-row call of this MLP takes ~20 ms here,
so a 10 ms promise could not be kept at concurrency 64; 100 ms is a realistic SLO."""


def data_dir() -> Path:
    """Where the model files are: ``$BENCH_DATA``."""
    return Path(os.environ["BENCH_DATA"])


def load_iris() -> Any:
    """The quickstart's iris classifier (a scikit-learn LogisticRegression)."""
    with (data_dir() / "iris.pkl").open("rb") as file:
        return pickle.load(file)


def iris_predict(clf: Any, features: np.ndarray) -> list[str]:
    """The species of each row, as the quickstart service answers."""
    return [IRIS_CLASSES[int(label)] for label in clf.predict(features)]


class Mlp:
    """A multi-layer perceptron in numpy: ReLU between dense layers, the class with the
    highest score out. One row costs almost as much as many (the weights are read from
    memory once per call), which is what makes batching pay."""

    def __init__(self, weights: Mapping[str, np.ndarray]) -> None:
        self.layers = [(weights[f"w{i}"], weights[f"b{i}"]) for i in range(1, len(MLP_SIZES))]

    @staticmethod
    def random_weights(seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        weights = {}
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(MLP_SIZES), 1):
            scale = np.float32(1 / np.sqrt(fan_in))
            weights[f"w{i}"] = rng.standard_normal((fan_in, fan_out), np.float32) * scale
            weights[f"b{i}"] = rng.standard_normal(fan_out, np.float32) * np.float32(0.1)
        return weights

    @classmethod
    def load(cls) -> Mlp:
        with np.load(data_dir() / "mlp.npz") as weights:
            return cls(dict(weights))

    def scores(self, rows: np.ndarray) -> np.ndarray:
        out = rows
        for i, (weight, bias) in enumerate(self.layers):
            out = out @ weight + bias
            if i < len(self.layers) - 1:
                np.maximum(out, 0, out=out)
        return out

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The class of each row of ``rows`` (shape ``(n, 256)``), as int64 of shape ``(n,)``."""
        labels: np.ndarray = self.scores(rows).argmax(axis=1)
        return labels


def count_positive(values: np.ndarray) -> int:
    """The large-body scenario's model: how many of the values are above zero."""
    return int(np.count_nonzero(values > 0))
