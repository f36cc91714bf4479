"""BentoML's services for the benchmark, written as BentoML's documentation shows for
BentoML >= 1.2: a ``@bentoml.service`` class, one worker, ``@bentoml.api`` methods, and
``batchable=True`` for adaptive batching. Served with
``bentoml serve bench.services.bentoml_services:<Class>`` from the repository root, in
``bench/.venv-bentoml``."""

from __future__ import annotations

import bentoml
import numpy as np
from bench.services.workload import (
    MLP_MAX_BATCH,
    Mlp,
    count_positive,
    iris_predict,
    load_iris,
)

MAX_LATENCY_MS = 1000
"""BentoML's max_latency_ms is a deadline for the whole request, past which it answers
503, not a wait window: at 10 ms (tiffin's setting) it refuses nearly every request once
a 64-row call takes longer than that. 1000 is the value in BentoML's adaptive batching
guide."""


@bentoml.service(workers=1)
class Iris:
    def __init__(self) -> None:
        self.clf = load_iris()

    @bentoml.api
    def predict(self, features: np.ndarray) -> list[str]:
        return iris_predict(self.clf, features)


@bentoml.service(workers=1)
class MlpBatched:
    def __init__(self) -> None:
        self.mlp = Mlp.load()

    # BentoML stacks the requests' arrays along batch_dim and splits the result back.
    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=MLP_MAX_BATCH,
        max_latency_ms=MAX_LATENCY_MS,
    )
    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.mlp(features.astype(np.float32, copy=False))


@bentoml.service(workers=1)
class LargeBody:
    @bentoml.api
    def predict(self, values: np.ndarray) -> int:
        return count_positive(values)
