"""Merging the inputs of several requests into one batch, and splitting the output back.

Supported values: numpy arrays, torch tensors, pandas DataFrames (and Series), and lists.
Each is concatenated along the batch's ``dim``; a request's *rows* are its size along
that axis. Two requests can share a batch only when everything but that axis matches
(the same trailing shape and dtype, the same columns), so one request of an odd shape
never makes a batch fail for the others: it is batched with its own kind instead.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["concat", "kind_of", "rows_of", "split"]


def _module(value: Any) -> str:
    return type(value).__module__.partition(".")[0]


def rows_of(value: Any, dim: int) -> int:
    """How many rows ``value`` holds along ``dim``."""
    if isinstance(value, list):
        if dim != 0:
            raise ValueError("lists can only be batched along dim 0")
        return len(value)
    shape = getattr(value, "shape", None)
    if shape is None:
        raise ValueError(f"a {type(value).__name__} cannot be batched")
    if dim >= len(shape):
        raise ValueError(f"has {len(shape)} dimension(s), so it cannot be batched along dim {dim}")
    return int(shape[dim])


def kind_of(value: Any, dim: int) -> tuple[Any, ...]:
    """What must match for two values to be concatenated: type, dtype, the other axes."""
    if isinstance(value, list):
        return ("list",)
    module = _module(value)
    shape = tuple(value.shape)
    rest = shape[:dim] + shape[dim + 1 :]
    if module == "pandas":
        columns = tuple(value.columns) if hasattr(value, "columns") else (value.name,)
        return ("pandas", type(value).__name__, columns)
    return (module, str(value.dtype), rest, str(getattr(value, "device", "")))


def concat(values: Sequence[Any], dim: int) -> Any:
    """One value holding ``values`` one after the other along ``dim``."""
    if len(values) == 1:
        return values[0]
    first = values[0]
    if isinstance(first, list):
        return [item for value in values for item in value]
    module = _module(first)
    if module == "numpy":
        return sys.modules["numpy"].concatenate(values, axis=dim)
    if module == "torch":
        return sys.modules["torch"].cat(list(values), dim=dim)
    if module == "pandas":
        return sys.modules["pandas"].concat(list(values), axis=dim, ignore_index=dim == 0)
    raise ValueError(f"a {type(first).__name__} cannot be batched")


def split(output: Any, sizes: Sequence[int], dim: int) -> list[Any]:
    """``output`` cut into consecutive parts of ``sizes`` rows along ``dim``."""
    total = sum(sizes)
    got = rows_of(output, dim) if not isinstance(output, tuple) else len(output)
    if got != total:
        raise ValueError(f"returned {got} rows for {total} input rows")
    if len(sizes) == 1:
        return [output]
    parts = []
    start = 0
    for size in sizes:
        end = start + size
        if isinstance(output, list | tuple):
            parts.append(output[start:end])
        elif _module(output) == "pandas":
            part = output.iloc[start:end] if dim == 0 else output.iloc[:, start:end]
            parts.append(part.reset_index(drop=True) if dim == 0 else part)
        else:
            index = (slice(None),) * dim + (slice(start, end),)
            parts.append(output[index])
        start = end
    return parts
