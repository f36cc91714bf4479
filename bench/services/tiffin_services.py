"""tiffin's services for the benchmark; the tiny-model scenario serves the quickstart's
``examples/quickstart/service.py:Iris`` itself, and ``IrisMonitored``, the same service
with data monitoring on. Served with ``tiffin serve bench/services/tiffin_services.py:<Class>``
from the repository root."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from bench.services.workload import (
    IRIS_CLASSES,
    MLP_MAX_BATCH,
    MLP_QUEUE_PROMISE_MS,
    MLP_SIZES,
    Mlp,
    count_positive,
)

import tiffin
from tiffin.observability.monitoring import monitor

Features = Annotated[np.ndarray, tiffin.Shape(-1, 4), tiffin.DType("float64")]
IRIS_COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
Rows = Annotated[np.ndarray, tiffin.Shape(-1, MLP_SIZES[0]), tiffin.DType("float32")]
Values = Annotated[np.ndarray, tiffin.Shape(-1), tiffin.DType("float64")]


@tiffin.service(timeout=10)
class IrisMonitored:
    """The quickstart's iris service, logging every request's features and prediction
    to a monitor (every record kept: sample rate 1)."""

    model = tiffin.models.ref("iris:latest")

    def __init__(self) -> None:
        self.clf = self.model.load()
        self.monitor = monitor("iris")

    @tiffin.api
    def predict(self, features: Features) -> list[str]:
        labels = [IRIS_CLASSES[int(label)] for label in self.clf.predict(features)]
        self.monitor.log(features, labels, names=IRIS_COLUMNS)
        return labels


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
