"""A service whose APIs cover the Open Inference Protocol's datatypes, served in process
by the HTTP tests and by a real ``tiffin serve`` (this file copied next to it) for the
client tests."""

from __future__ import annotations

import threading
import time
from typing import Annotated

import numpy as np
from pydantic import BaseModel

import tiffin

Rows = Annotated[np.ndarray, tiffin.Shape(-1, 3), tiffin.DType("float32")]
Pairs = Annotated[np.ndarray, tiffin.Shape(-1, 2), tiffin.DType("float32")]
Flags = Annotated[np.ndarray, tiffin.DType("bool")]


class Summary(BaseModel):
    count: int
    mean: float


class Person(BaseModel):
    name: str


@tiffin.service(name="tensors")
class Tensors:
    """One API per kind of tensor."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.lock = threading.Lock()

    @tiffin.api
    def scale(self, x: Rows, factor: float = 2.0) -> Rows:
        """FP32 in and out, with an optional FP64 scalar."""
        return x * np.float32(factor)

    @tiffin.api
    def total(self, values: list[int]) -> int:
        """INT64 in, one INT64 out."""
        return sum(values)

    @tiffin.api
    def shout(self, words: list[str]) -> list[str]:
        """BYTES in and out."""
        return [word.upper() + "!" for word in words]

    @tiffin.api
    def invert(self, flags: Flags) -> Flags:
        """BOOL in and out."""
        return ~flags

    @tiffin.api
    def summary(self, values: list[float]) -> Summary:
        """A result that is no tensor: one BYTES element holding its JSON."""
        return Summary(count=len(values), mean=sum(values) / len(values))

    @tiffin.api
    def greet(self, person: Person) -> str:
        """Not a model: its input is a pydantic model."""
        return f"hello {person.name}"

    @tiffin.api
    def fail(self, values: list[float]) -> float:
        raise RuntimeError("the model broke")

    @tiffin.api(batch=tiffin.Batch(max_size=16, max_latency_ms=200))
    def double(self, x: Pairs) -> Pairs:
        """Batched: records how many rows each call took; slow enough that calls
        arriving while one runs wait for the next batch together."""
        with self.lock:
            self.batches.append(len(x))
        time.sleep(0.05)
        return x * 2

    @tiffin.api
    def batch_sizes(self) -> list[int]:
        with self.lock:
            return list(self.batches)
