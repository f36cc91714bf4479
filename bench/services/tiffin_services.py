"""tiffin's services for the benchmark; the tiny-model scenario serves the quickstart's
``examples/quickstart/service.py:Iris`` itself. Served with
``tiffin serve bench/services/tiffin_services.py:<Class>`` from the repository root."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from bench.services.workload import (
    MLP_MAX_BATCH,
    MLP_QUEUE_PROMISE_MS,
    MLP_SIZES,
    Mlp,
    count_positive,
)

import tiffin

Rows = Annotated[np.ndarray, tiffin.Shape(-1, MLP_SIZES[0]), tiffin.DType("float32")]
Values = Annotated[np.ndarray, tiffin.Shape(-1), tiffin.DType("float64")]


@tiffin.service
class MlpBatched:
    """The MLP with adaptive batching: concurrent requests share one model call."""

    model = tiffin.models.ref("bench-mlp:latest")

    def __init__(self) -> None:
        self.mlp = Mlp(self.model.load())

    @tiffin.api(batch=tiffin.Batch(max_size=MLP_MAX_BATCH, max_latency_ms=MLP_QUEUE_PROMISE_MS))
    def predict(self, features: Rows) -> np.ndarray:
        return self.mlp(features)


@tiffin.service
class MlpUnbatched:
    """The same MLP, one model call per request."""

    model = tiffin.models.ref("bench-mlp:latest")

    def __init__(self) -> None:
        self.mlp = Mlp(self.model.load())

    @tiffin.api
    def predict(self, features: Rows) -> np.ndarray:
        return self.mlp(features)


@tiffin.service
class LargeBody:
    """A 1 MB JSON array in, one number out: the cost of reading a large body."""

    @tiffin.api
    def predict(self, values: Values) -> int:
        return count_positive(values)
