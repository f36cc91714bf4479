"""``numpy.ndarray`` parameters and results, with optional dtype and shape constraints.

    def predict(self, features: Annotated[np.ndarray, Shape(-1, 4), DType("float32")]) -> np.ndarray

In JSON an array is nested lists. An API whose only parameter is an array also accepts
the array as a ``.npy`` body (``Content-Type: application/x-npy``), and answers with one
when asked (``Accept: application/x-npy``): no JSON parsing for large arrays.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from typing import Any, Self, get_args, get_origin

from tiffin.exceptions import ServiceDefinitionError
from tiffin.io.codec import Codec, Upload, negotiate

__all__ = ["DType", "NDArrayCodec", "Shape"]

NPY = "application/x-npy"
_OFFERED = ("application/json", NPY)
_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True, init=False)
class Shape:
    """The shape an array parameter must have; ``-1`` for any size along that axis.

    Example:
        features: Annotated[np.ndarray, Shape(-1, 4)]   # any number of rows of 4
    """

    dims: tuple[int, ...]

    def __init__(self, *dims: int) -> None:
        if not dims or not all(isinstance(d, int) and d >= -1 and d != 0 for d in dims):
            raise ServiceDefinitionError(
                f"Shape{dims} is not valid: give each axis's size as a positive int, or -1 for "
                "any size, e.g. Shape(-1, 4).",
            )
        object.__setattr__(self, "dims", tuple(dims))


@dataclass(frozen=True)
class DType:
    """The dtype an array parameter is converted to, e.g. ``DType("float32")``."""

    name: str


def _is_ndarray(annotation: Any) -> bool:
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return False
    return annotation is numpy.ndarray or get_origin(annotation) is numpy.ndarray


def _schema_for(ndim: int | None, kind: str) -> dict[str, Any]:
    leaf: dict[str, Any] = {
        "type": {"b": "boolean", "i": "integer", "u": "integer"}.get(kind, "number")
    }
    if ndim is None:
        return {
            "type": "array",
            "items": {},
            "description": "an array of numbers, nested to any depth",
        }
    schema = leaf
    for _ in range(ndim):
        schema = {"type": "array", "items": schema}
    return schema


class NDArrayCodec(Codec):
    """Reads nested JSON lists (or a ``.npy`` body) into an array and writes arrays back."""

    name = "ndarray"
    media_types = (NPY,)

    def __init__(self, shape: Shape | None, dtype: Any | None) -> None:
        self.shape = shape
        self.dtype = dtype

    @classmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> Self | None:
        if not _is_ndarray(annotation):
            return None
        import numpy as np

        shape = next((m for m in metadata if isinstance(m, Shape)), None)
        dtype_marker = next((m for m in metadata if isinstance(m, DType)), None)
        dtype: Any = None
        if dtype_marker is not None:
            try:
                dtype = np.dtype(dtype_marker.name)
            except TypeError as exc:
                raise ServiceDefinitionError(
                    f"DType({dtype_marker.name!r}) is not a numpy dtype ({exc}). Use a name such "
                    "as 'float32', 'int64' or 'bool'.",
                ) from None
        else:  # npt.NDArray[np.float32] carries its dtype in the annotation
            args = get_args(annotation)
            if len(args) == 2:
                scalar = get_args(args[1])
                if scalar and isinstance(scalar[0], type) and issubclass(scalar[0], np.generic):
                    dtype = np.dtype(scalar[0])
        if dtype is not None and dtype.kind not in "biuf":
            raise ServiceDefinitionError(
                f"Array parameters hold numbers or booleans; dtype {dtype} is not supported.",
            )
        return cls(shape, dtype)

    def json_schema(self) -> dict[str, Any]:
        ndim = len(self.shape.dims) if self.shape else None
        schema = _schema_for(ndim, self.dtype.kind if self.dtype is not None else "f")
        if self.shape:
            level = schema
            for size in self.shape.dims:
                if size != -1:
                    level["minItems"] = level["maxItems"] = size
                level = level["items"]
        return schema

    def _check(self, array: Any) -> Any:
        if array.dtype.kind not in "biuf":
            raise ValueError("must be an array of numbers")
        if self.shape is not None:
            dims = self.shape.dims
            if array.ndim != len(dims) or any(
                want not in (-1, got) for want, got in zip(dims, array.shape, strict=True)
            ):
                wanted = "(" + ", ".join("any" if d == -1 else str(d) for d in dims) + ")"
                raise ValueError(f"must have shape {wanted}, got {tuple(array.shape)}")
        return array

    def from_json(self, value: Any) -> Any:
        import numpy as np

        if isinstance(value, (str, bytes, dict)) or value is None:
            raise ValueError("must be an array (nested lists of numbers)")
        try:
            array = np.asarray(value, dtype=self.dtype)
        except (ValueError, TypeError, OverflowError) as exc:
            reason = "its rows have different lengths" if "inhomogeneous" in str(exc) else str(exc)
            raise ValueError(f"is not a valid array: {reason}") from None
        return self._check(array)

    def to_json(self, obj: Any) -> Any:
        return obj

    def from_body(self, body: bytes, media_type: str) -> Any:
        import numpy as np

        if not body.startswith(_MAGIC):
            raise ValueError(
                "is not a .npy file (it does not start with the .npy magic bytes); send an array "
                "written by numpy.save"
            )
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"is not a valid .npy body: {exc}") from None
        if self.dtype is not None:
            array = array.astype(self.dtype, copy=False)
        return self._check(array)

    def from_upload(self, upload: Upload) -> Any:
        # clients label a .npy file part as they like; its magic bytes tell
        if upload.data.startswith(_MAGIC):
            return self.from_body(upload.data, NPY)
        return super().from_upload(upload)

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        if negotiate(accept, _OFFERED) != NPY:
            return None
        import numpy as np

        out = io.BytesIO()
        np.save(out, np.asarray(obj), allow_pickle=False)
        return out.getvalue(), NPY
