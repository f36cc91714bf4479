"""The iris classifier as a service: `tiffin serve service:Iris` from this directory."""

from __future__ import annotations

from typing import Annotated

import numpy as np

import tiffin

Features = Annotated[np.ndarray, tiffin.Shape(-1, 4), tiffin.DType("float64")]
CLASSES = ("setosa", "versicolor", "virginica")


@tiffin.service(timeout=10)
class Iris:
    """Classifies iris flowers from four measurements in centimetres."""

    model = tiffin.models.ref("iris:latest")

    def __init__(self) -> None:
        self.clf = self.model.load()

    @tiffin.api
    def predict(self, features: Features) -> list[str]:
        """The species of each row of [sepal length, sepal width, petal length, petal width]."""
        return [CLASSES[int(label)] for label in self.clf.predict(features)]
