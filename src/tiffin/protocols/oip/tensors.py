"""Tensors of the Open Inference Protocol, and which APIs it serves as models.

An API is a model when each of its parameters is tensor-like:

    ===============================================  ==========  ==================
    parameter annotation                             datatype    shape
    ===============================================  ==========  ==================
    ``np.ndarray`` / ``torch.Tensor`` with ``DType``  its dtype   ``Shape`` or [-1]
    ``np.ndarray`` without one                       FP32 (any)  ``Shape`` or [-1]
    ``bool`` / ``int`` / ``float``                   BOOL/INT64/FP64   [1]
    ``str`` / ``bytes``                              BYTES       [1]
    ``list[...]`` of those, nested                   the item's  [-1] per level
    ===============================================  ==========  ==================

Inputs are named after the parameters. The result is one output named ``output``: a
tensor-like return value as such, anything else (a pydantic model, a dict) as a BYTES
tensor of shape [1] holding its JSON. A stream, or an API with another kind of
parameter (a file, a table, a pydantic model), is not a model; its HTTP API serves it.

A tensor's values cross the wire as nested or flat JSON lists, as raw little-endian
bytes (the binary extension over HTTP, ``raw_*_contents`` over gRPC), or as typed
repeated fields (gRPC ``contents``); ``decode_*`` and ``encode_*`` here do all three.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin

import numpy as np

from tiffin.exceptions import ValidationFailed
from tiffin.io import dumps
from tiffin.io.numpy import NDArrayCodec
from tiffin.service import Api

__all__ = [
    "DATATYPES",
    "Model",
    "TensorSpec",
    "datatype_of",
    "decode_bytes",
    "decode_json",
    "encode_bytes",
    "encode_json",
    "models_of",
]

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
"""Each datatype of the protocol, with the numpy dtype of its elements (little-endian)."""

_BY_DTYPE = {dtype.str.lstrip("<|="): name for name, dtype in DATATYPES.items() if name != "BYTES"}
_SCALARS: dict[Any, str] = {bool: "BOOL", int: "INT64", float: "FP64", str: "BYTES", bytes: "BYTES"}
_LISTS = (list, tuple, Sequence, typing.Sequence)
OUTPUT = "output"  # the one output's name (tiffin.protocols.oip.OUTPUT)


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The protocol's datatype for a numpy dtype; BYTES for strings and objects."""
    name = _BY_DTYPE.get(dtype.str.lstrip("<>|="))
    if name is not None:
        return name
    if dtype.kind in "USO":
        return "BYTES"
    raise ValueError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def _refuse(message: str, loc: str = "(inputs)") -> ValidationFailed:
    return ValidationFailed(message, detail={"errors": [{"loc": loc, "msg": message}]})


def _numpy_dtype(datatype: str, name: str) -> np.dtype[Any]:
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise _refuse(
            f"Input '{name}' has datatype '{datatype}', which this server does not take. "
            f"Use one of {', '.join(DATATYPES)}.",
            name,
        )
    return dtype


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape
    ):
        raise _refuse(
            f"Input '{name}' has shape {shape!r}; a shape is a list of sizes (whole numbers "
            "from 0 up), e.g. [2, 4].",
            name,
        )
    return tuple(shape)


def _count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def decode_json(name: str, datatype: str, shape: Any, data: Any) -> np.ndarray:
    """The array for a tensor given as JSON ``data`` (flat, or nested like the shape)."""
    dtype = _numpy_dtype(datatype, name)
    dims = _shape(shape, name)
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat: Any = np.empty(_count(dims), dtype=object)
            values = np.asarray(data, dtype=object).reshape(-1)
            if values.size == flat.size:
                for i, value in enumerate(values):
                    if not isinstance(value, str | bytes):
                        raise ValueError(f"element {i} is {type(value).__name__}, not a string")
                    flat[i] = value
            array = flat if values.size == flat.size else values
        else:
            if datatype == "BOOL" and not _all_bools(data):
                raise ValueError("BOOL data must be true or false")
            array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        reason = "its rows have different lengths" if "inhomogeneous" in str(exc) else str(exc)
        raise _refuse(
            f"Input '{name}' does not hold {datatype} data: {reason}.",
            name,
        ) from None
    return _reshape(array, dims, name)


def _all_bools(data: Any) -> bool:
    if isinstance(data, list):
        return all(_all_bools(item) for item in data)
    return isinstance(data, bool)


def _reshape(array: Any, dims: tuple[int, ...], name: str) -> np.ndarray:
    if array.size != _count(dims):
        raise _refuse(
            f"Input '{name}' has {array.size} element{'s' if array.size != 1 else ''}, but "
            f"its shape {list(dims)} needs {_count(dims)}. Send as many values as the shape "
            "says.",
            name,
        )
    return array.reshape(dims)  # type: ignore[no-any-return]


def decode_bytes(name: str, datatype: str, shape: Any, raw: bytes | memoryview) -> np.ndarray:
    """The array for a tensor given as raw bytes: little-endian, row-major; a BYTES
    element is its length as 4 little-endian bytes, then its bytes."""
    dtype = _numpy_dtype(datatype, name)
    dims = _shape(shape, name)
    if datatype != "BYTES":
        expected = _count(dims) * dtype.itemsize
        if len(raw) != expected:
            raise _refuse(
                f"Input '{name}' has {len(raw)} bytes of data, but {datatype} of shape "
                f"{list(dims)} is {expected} bytes. Send as many values as the shape says.",
                name,
            )
        return np.frombuffer(raw, dtype=dtype).reshape(dims)
    view = memoryview(raw)
    items: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise _refuse(f"Input '{name}' has BYTES data cut off inside a length prefix.", name)
        size = int.from_bytes(view[offset : offset + 4], "little")
        offset += 4
        if offset + size > len(view):
            raise _refuse(
                f"Input '{name}' has BYTES data cut off inside element {len(items)}.", name
            )
        items.append(bytes(view[offset : offset + size]))
        offset += size
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return _reshape(array, dims, name)


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return str(value).encode()


def encode_bytes(array: np.ndarray, datatype: str) -> bytes:
    """Raw bytes for an array, the inverse of ``decode_bytes``."""
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
    parts = []
    for value in array.reshape(-1):
        data = _as_bytes(value)
        parts.append(len(data).to_bytes(4, "little"))
        parts.append(data)
    return b"".join(parts)


def encode_json(array: np.ndarray, datatype: str) -> list[Any]:
    """The flat JSON list for an array (BYTES elements as UTF-8 text)."""
    if datatype != "BYTES":
        return array.reshape(-1).tolist()
    return [
        value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        for value in array.reshape(-1)
    ]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, datatype and shape (-1: any size) as model metadata shows it."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class _Kind:
    """How values of one annotation come from a tensor: an ``array`` as it is, a
    ``scalar`` from a one-element tensor, a ``list`` as nested lists of ``depth``."""

    kind: str
    datatype: str
    shape: tuple[int, ...]
    depth: int = 0
    text: bool = False
    dtype: np.dtype[Any] | None = None


def _strip(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``Annotated`` and ``| None``, and whether None was allowed."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return _strip(args[0])[0], True
    return annotation, False


def _kind(annotation: Any, codec: Any) -> _Kind | None:
    """How a parameter or result of this annotation maps to a tensor, or None."""
    if isinstance(codec, NDArrayCodec):
        dims = codec.shape.dims if codec.shape is not None else (-1,)
        datatype = datatype_of(codec.dtype) if codec.dtype is not None else "FP32"
        return _Kind("array", datatype, dims, dtype=codec.dtype)
    if codec is not None and not codec.native:
        return None
    base, _ = _strip(annotation)
    if base in _SCALARS:
        return _Kind("scalar", _SCALARS[base], (1,), text=base is str)
    depth = 0
    while get_origin(base) in _LISTS or base in _LISTS:
        args = [arg for arg in get_args(base) if arg is not Ellipsis]
        if len(args) != 1:
            return None
        base, _ = _strip(args[0])
        depth += 1
    if depth and base in _SCALARS:
        return _Kind("list", _SCALARS[base], (-1,) * depth, depth=depth, text=base is str)
    return None


class Model:
    """One API served as a model: its input and output tensors, and the conversions
    between them and the API's arguments and result. ``models_of`` makes them."""

    def __init__(self, api: Api[Any, Any], inputs: dict[str, _Kind], output: _Kind | None):
        self.api = api
        self.name = api.name
        self._inputs = inputs
        self._output = output
        self._required = frozenset(p.name for p in api.io.params if p.required)
        self.inputs = tuple(
            TensorSpec(name, kind.datatype, kind.shape) for name, kind in inputs.items()
        )
        self.outputs = (
            TensorSpec(OUTPUT, output.datatype, output.shape)
            if output is not None
            else TensorSpec(OUTPUT, "BYTES", (1,)),
        )

    def metadata(self, version: str) -> dict[str, Any]:
        """The model's metadata, as the protocol's model metadata response shows it."""
        return {
            "name": self.name,
            "versions": [version] if version else [],
            "platform": "tiffin",
            "inputs": [spec.metadata() for spec in self.inputs],
            "outputs": [spec.metadata() for spec in self.outputs],
        }

    def arguments(self, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The API's arguments for the request's input tensors, by name. Raises
        ``ValidationFailed`` naming the input for an unknown, missing or misfitting one."""
        unknown = [name for name in tensors if name not in self._inputs]
        if unknown:
            raise _refuse(
                f"Model '{self.name}' has no input {', '.join(repr(n) for n in unknown)}; "
                f"its inputs are {self._names()}.",
                unknown[0],
            )
        missing = [name for name in self._required if name not in tensors]
        if missing:
            raise _refuse(
                f"Model '{self.name}' needs the input {', '.join(repr(n) for n in missing)}; "
                f"its inputs are {self._names()}.",
                missing[0],
            )
        return {name: self._argument(name, array) for name, array in tensors.items()}

    def _names(self) -> str:
        return ", ".join(f"'{name}'" for name in self._inputs) or "none"

    def _argument(self, name: str, array: np.ndarray) -> Any:
        kind = self._inputs[name]
        if kind.kind == "array":
            if array.dtype == object:
                raise _refuse(
                    f"Input '{name}' is BYTES, but model '{self.name}' takes {kind.datatype} "
                    "numbers there.",
                    name,
                )
            return array
        if kind.kind == "scalar":
            if array.size != 1:
                raise _refuse(
                    f"Input '{name}' of model '{self.name}' is one value: send shape [1], "
                    f"not {list(array.shape)}.",
                    name,
                )
            value = array.reshape(-1)[0]
            return _text(value) if kind.text else value.item() if hasattr(value, "item") else value
        if array.ndim != kind.depth:
            raise _refuse(
                f"Input '{name}' of model '{self.name}' has {kind.depth} dimension"
                f"{'s' if kind.depth != 1 else ''} ({list(kind.shape)}), not "
                f"{array.ndim} ({list(array.shape)}).",
                name,
            )
        if kind.text:
            return np.vectorize(_text, otypes=[object])(array).tolist() if array.size else []
        return array.tolist()

    def output(self, result: Any) -> tuple[np.ndarray, str]:
        """The output tensor for the API's result, and its datatype."""
        kind = self._output
        if kind is None:
            array = np.empty(1, dtype=object)
            array[0] = dumps(result)
            return array, "BYTES"
        if hasattr(result, "detach"):  # a torch tensor
            result = result.detach().cpu().numpy()
        if kind.datatype == "BYTES":
            array = np.asarray(result, dtype=object)
            if kind.kind == "scalar":
                array = array.reshape(1)
            return array, "BYTES"
        dtype = kind.dtype if kind.kind == "array" else DATATYPES[kind.datatype]
        array = np.asarray(result, dtype=dtype)
        if kind.kind == "scalar":
            array = array.reshape(1)
        return array, datatype_of(array.dtype)


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def models_of(apis: Mapping[str, Api[Any, Any]]) -> dict[str, Model]:
    """The APIs that are models (see the module docstring), by name."""
    models = {}
    for name, api in apis.items():
        if api.io.stream or not api.io.params:
            continue
        inputs = {}
        for param in api.io.params:
            kind = _kind(param.annotation, param.codec)
            if kind is None:
                break
            inputs[param.name] = kind
        else:
            models[name] = Model(api, inputs, _kind(api.io.output, api.io.output_codec))
    return models
