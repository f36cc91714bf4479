"""Which APIs the Open Inference Protocol serves as models, and its tensor encodings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import numpy as np
import pytest
import torch

import tiffin
from tiffin.exceptions import ValidationFailed
from tiffin.protocols.oip.tensors import (
    datatype_of,
    decode_bytes,
    decode_json,
    encode_bytes,
    encode_json,
    models_of,
)
from tiffin.service import spec_of


@tiffin.service
class Shapes:
    @tiffin.api
    def tensor(self, x: Annotated[torch.Tensor, tiffin.Shape(-1, 2)]) -> torch.Tensor:
        return x + 1

    @tiffin.api
    def optional(self, x: list[list[float]], scale: float | None = None) -> list[float]:
        return [sum(row) * (scale or 1) for row in x]

    @tiffin.api
    def text(self, word: str) -> str:
        return word[::-1]

    @tiffin.api
    def nothing(self) -> int:
        return 1

    @tiffin.api
    def stream(self, n: int) -> Iterator[int]:
        yield from range(n)

    @tiffin.api
    def mapping(self, x: dict[str, float]) -> float:
        return sum(x.values())


def test_which_apis_are_models_and_their_tensors() -> None:
    models = models_of(spec_of(Shapes).apis)
    assert sorted(models) == ["optional", "tensor", "text"]
    assert models["tensor"].metadata("")["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 2]}
    ]
    assert models["optional"].metadata("3")["versions"] == ["3"]
    assert [spec.metadata() for spec in models["optional"].inputs] == [
        {"name": "x", "datatype": "FP64", "shape": [-1, -1]},
        {"name": "scale", "datatype": "FP64", "shape": [1]},
    ]
    assert models["text"].outputs[0].metadata() == {
        "name": "output",
        "datatype": "BYTES",
        "shape": [1],
    }


def test_arguments_and_outputs_of_each_kind() -> None:
    models = models_of(spec_of(Shapes).apis)
    text = models["text"]
    assert text.arguments({"word": np.array([b"abc"], dtype=object)}) == {"word": "abc"}
    array, datatype = text.output("cba")
    assert (array.tolist(), datatype) == (["cba"], "BYTES")
    tensor = models["tensor"]
    result, datatype = tensor.output(torch.ones(1, 2))
    assert (result.tolist(), datatype) == ([[1.0, 1.0]], "FP32")
    nested = models["optional"].arguments({"x": np.ones((2, 2))})
    assert nested == {"x": [[1.0, 1.0], [1.0, 1.0]]}


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP16", [1.5, -2.0]),
        ("UINT8", [0, 255]),
        ("INT32", [-(2**31), 2**31 - 1]),
        ("BOOL", [True, False]),
        ("BYTES", [b"", "é".encode()]),
    ],
)
def test_raw_bytes_round_trip(datatype: str, values: list[object]) -> None:
    array = decode_json("t", datatype, [2], values)
    raw = encode_bytes(array, datatype)
    again = decode_bytes("t", datatype, [2], raw)
    assert again.tolist() == array.tolist()
    assert datatype == "BYTES" or datatype_of(again.dtype) == datatype


def test_json_of_bytes_is_text() -> None:
    array = decode_bytes("t", "BYTES", [1], b"\x02\x00\x00\x00hi")
    assert encode_json(array, "BYTES") == ["hi"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x02\x00", "Input 't' has BYTES data cut off inside a length prefix."),
        (b"\x05\x00\x00\x00hi", "Input 't' has BYTES data cut off inside element 0."),
    ],
)
def test_truncated_bytes_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        decode_bytes("t", "BYTES", [1], raw)
    assert raised.value.message == message


def test_bytes_data_must_be_strings() -> None:
    with pytest.raises(ValidationFailed) as raised:
        decode_json("t", "BYTES", [2], ["a", 1])
    assert raised.value.message == (
        "Input 't' does not hold BYTES data: element 1 is int, not a string."
    )
