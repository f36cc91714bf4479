"""@tiffin.service, @tiffin.api, Batch, hooks and depends: checked when the class is made."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import numpy as np
import pytest

import tiffin
from tiffin.exceptions import ServiceDefinitionError
from tiffin.service import Api, spec_of


def message_of(action: Any) -> str:
    with pytest.raises(ServiceDefinitionError) as caught:
        action()
    return caught.value.message


@tiffin.service(name="iris", workers=2, timeout=5, max_concurrency=4, max_queue=0)
class Iris:
    """Classifies flowers."""

    model = tiffin.models.ref("iris:latest")

    def __init__(self) -> None:
        self.bias = 1.0

    @tiffin.api
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predict classes."""
        result: np.ndarray = features.sum(axis=1) + self.bias
        return result

    @tiffin.api(name="proba", route="/v1/proba", doc="Probabilities.", batch=tiffin.Batch())
    def predict_proba(self, features: list[list[float]]) -> list[float]:
        return [sum(row) for row in features]

    @tiffin.on_startup
    def warm(self) -> None: ...


def test_the_spec_records_everything() -> None:
    spec = spec_of(Iris)
    assert spec.name == "iris"
    assert spec.config == {"workers": 2, "timeout": 5, "max_concurrency": 4, "max_queue": 0}
    assert list(spec.apis) == ["predict", "proba"]
    assert spec.routes().keys() == {"/predict", "/v1/proba"}
    assert spec.apis["proba"].doc == "Probabilities."
    assert spec.apis["predict"].doc == "Predict classes."
    assert spec.apis["proba"].batch == tiffin.Batch(max_size=32, max_latency_ms=10.0, dim=0)
    assert list(spec.models) == ["model"]
    assert str(spec.models["model"].tag) == "iris:latest"
    assert spec.hooks["on_startup"] == ["warm"]
    assert spec_of(Iris()) is spec


def test_the_class_is_still_a_plain_class() -> None:
    iris = Iris()
    assert iris.predict(np.ones((2, 3))).tolist() == [4.0, 4.0]
    assert iris.predict_proba([[1.0, 2.0]]) == [3.0]
    assert isinstance(Iris.predict, Api)
    assert Iris.predict.route == "/predict"


def test_default_name_is_the_class_name_lowercased() -> None:
    @tiffin.service
    class TextEncoder:
        @tiffin.api
        def encode(self, text: str) -> list[int]:
            return [len(text)]

    assert spec_of(TextEncoder).name == "textencoder"
    assert spec_of(TextEncoder).config == {}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_size": 0}, "Batch(max_size=0) must be a whole number of at least 1."),
        ({"max_size": 2.5}, "Batch(max_size=2.5) must be a whole number of at least 1."),
        (
            {"max_latency_ms": 0},
            "Batch(max_latency_ms=0) must be a number of milliseconds above 0.",
        ),
        ({"dim": -1}, "Batch(dim=-1) must be an axis number, 0 or more."),
    ],
)
def test_batch_is_checked_when_made(kwargs: dict[str, Any], expected: str) -> None:
    assert message_of(lambda: tiffin.Batch(**kwargs)) == expected


def test_api_arguments_are_checked() -> None:
    def method(self: Any, x: int) -> int:
        return x

    assert message_of(lambda: tiffin.api(name="not ok")(method)) == (
        "@tiffin.api(name='not ok') on 'method' must be a Python identifier, e.g. 'predict'."
    )
    assert message_of(lambda: tiffin.api(route="predict")(method)) == (
        "@tiffin.api(route='predict') on 'method' must be a path starting with '/', made of "
        "letters, digits and '_-./', e.g. '/v1/predict'."
    )
    assert message_of(lambda: tiffin.api(route="/metrics")(method)) == (
        "@tiffin.api(route='/metrics') on 'method' is reserved for tiffin's own endpoints "
        "(/docs, /openapi.json, /livez, /readyz, /metrics, /v2, /tasks). Choose another route."
    )
    not_a_batch: Any = {"max_size": 4}
    assert message_of(lambda: tiffin.api(batch=not_a_batch)(method)) == (
        "@tiffin.api(batch=...) on 'method' must be a tiffin.Batch(...), not dict."
    )
    static: Any = staticmethod(method)
    assert message_of(lambda: tiffin.api(static)) == (
        "@tiffin.api decorates a plain method (def method(self, ...)), not staticmethod."
    )

    def no_self(x: int) -> int:
        return x

    assert message_of(lambda: tiffin.api(no_self)) == (
        "API 'no_self' must be a method whose first parameter is 'self'."
    )


def test_parameters_need_annotations_and_names() -> None:
    def untyped(self: Any, x, y: int) -> int:  # type: ignore[no-untyped-def]
        return int(y)

    assert message_of(lambda: tiffin.api(untyped)) == (
        "Parameter 'x' of API 'untyped' has no type annotation; the request schema is built "
        "from annotations. Annotate it, e.g. 'x: list[float]'."
    )

    def star(self: Any, *rows: int) -> int:
        return 0

    assert message_of(lambda: tiffin.api(star)) == (
        "API 'star' takes *rows; an API's parameters are named fields of its request. List each "
        "parameter explicitly."
    )


def test_streams_must_be_generators_and_cannot_be_batched() -> None:
    def not_a_generator(self: Any, n: int) -> Iterator[int]:
        return iter(range(n))

    assert message_of(lambda: tiffin.api(not_a_generator)).startswith(
        "API 'not_a_generator' is annotated to return a stream but is not a generator"
    )

    def stream(self: Any, n: int) -> Iterator[int]:
        yield from range(n)

    assert message_of(lambda: tiffin.api(batch=tiffin.Batch())(stream)) == (
        "API 'stream' streams its result, so it cannot be batched. Remove batch=."
    )


def test_service_arguments_are_checked() -> None:
    class Plain:
        @tiffin.api
        def go(self) -> int:
            return 1

    cases = [
        ({"workers": 0}, "@tiffin.service(workers=0) on 'Plain' must be a whole number above 0."),
        (
            {"timeout": -1},
            "@tiffin.service(timeout=-1) on 'Plain' must be a number of seconds above 0.",
        ),
        (
            {"max_concurrency": True},
            "@tiffin.service(max_concurrency=True) on 'Plain' must be a whole number above 0.",
        ),
        (
            {"max_queue": -1},
            "@tiffin.service(max_queue=-1) on 'Plain' must be a whole number, 0 or more.",
        ),
        (
            {"name": "Bad Name"},
            "@tiffin.service(name='Bad Name') on 'Plain' must use lowercase letters, digits, '.', "
            "'_' and '-' (at most 63), e.g. 'iris'.",
        ),
        (
            {"resources": {"cpu": "1", "tpu": 2}},
            "@tiffin.service(resources=...) on 'Plain' has unknown keys tpu. Known: cpu, gpu, "
            "gpu_type, memory.",
        ),
    ]
    for kwargs, expected in cases:
        assert message_of(lambda kwargs=kwargs: tiffin.service(**kwargs)(Plain)) == expected


def test_a_service_needs_an_api_and_unique_names_and_routes() -> None:
    class Empty:
        def helper(self) -> None: ...

    assert message_of(lambda: tiffin.service(Empty)) == (
        "Service 'Empty' has no API. Mark at least one method with @tiffin.api."
    )

    class SameRoute:
        @tiffin.api(route="/go")
        def one(self) -> int:
            return 1

        @tiffin.api(route="/go")
        def two(self) -> int:
            return 2

    assert message_of(lambda: tiffin.service(SameRoute)) == (
        "APIs 'one' and 'two' of 'SameRoute' share the route '/go'. Give one another route=."
    )

    class SameName:
        @tiffin.api(name="go")
        def one(self) -> int:
            return 1

        @tiffin.api(name="go", route="/other")
        def two(self) -> int:
            return 2

    assert message_of(lambda: tiffin.service(SameName)) == (
        "Two APIs of 'SameName' are named 'go'. Give one another name=."
    )


def test_depends_checks_its_target() -> None:
    assert message_of(lambda: tiffin.depends(dict)) == (
        "tiffin.depends(<class 'dict'>) needs a class decorated with @tiffin.service, or the URL "
        "of a running tiffin server."
    )
    assert message_of(lambda: tiffin.depends("iris:3000")) == (
        "tiffin.depends('iris:3000'): a remote service is given by its URL, e.g. "
        "'http://iris:3000'."
    )

    @tiffin.service
    class Uses:
        iris = tiffin.depends(Iris)
        remote = tiffin.depends("http://iris:3000")

        @tiffin.api
        def go(self) -> int:
            return 1

    spec = spec_of(Uses)
    assert spec.dependencies["iris"].target is Iris
    assert spec.dependencies["remote"].is_remote
    assert message_of(lambda: Uses().iris) == (
        "Dependency 'iris' is resolved when the service starts; create the service with "
        "tiffin.testing.TestClient or serve it, rather than calling the class directly."
    )


def test_spec_of_a_plain_class() -> None:
    assert message_of(lambda: spec_of(dict)) == (
        "'dict' is not a tiffin service. Decorate the class with @tiffin.service."
    )


def test_a_subclass_of_a_service_is_not_silently_the_parent() -> None:
    class Child(Iris):
        pass

    assert message_of(lambda: spec_of(Child)) == (
        "'Child' is not a tiffin service. Decorate the class with @tiffin.service."
    )
    spec = spec_of(tiffin.service(Child))
    assert list(spec.apis) == ["predict", "proba"]


def test_shape_and_dtype_markers_are_checked() -> None:
    assert message_of(lambda: tiffin.Shape(0, 4)) == (
        "Shape(0, 4) is not valid: give each axis's size as a positive int, or -1 for any size, "
        "e.g. Shape(-1, 4)."
    )

    def bad_dtype(self: Any, x: Annotated[np.ndarray, tiffin.DType("floaty")]) -> int:
        return 0

    assert message_of(lambda: tiffin.api(bad_dtype)).startswith(
        "DType('floaty') is not a numpy dtype ("
    )


def test_batched_apis_take_joinable_parameters_only() -> None:
    def scalar(self: Any, features: np.ndarray, threshold: float) -> np.ndarray:
        return features

    assert message_of(lambda: tiffin.api(batch=tiffin.Batch())(scalar)) == (
        "API 'scalar' is batched, so each parameter is joined with other requests' along "
        "dim 0; 'threshold' cannot be. Batched parameters are numpy arrays, torch tensors, "
        "pandas DataFrames or lists; move other values into the service (or remove batch=)."
    )

    def nothing(self: Any) -> int:
        return 1

    assert message_of(lambda: tiffin.api(batch=tiffin.Batch())(nothing)).startswith(
        "API 'nothing' is batched but takes no parameters"
    )

    def fine(self: Any, rows: list[list[float]], more: np.ndarray) -> list[float]:
        return [sum(r) for r in rows]

    assert tiffin.api(batch=tiffin.Batch(max_size=4))(fine).batch == tiffin.Batch(max_size=4)
