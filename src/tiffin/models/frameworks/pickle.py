"""Generic Python objects, saved with pickle protocol 5.

Large contiguous buffers (numpy arrays, for instance) are written out of band into
``buffers.bin``, each aligned to 64 bytes, and read back with ``readinto`` into one
huge-page-backed allocation, so loading a model made of big arrays costs about one
copy from the page cache rather than several.
"""

from __future__ import annotations

import mmap
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tiffin.models.frameworks import Framework
from tiffin.storage import Staging
from tiffin.storage.digest import HashingWriter

__all__ = ["PickleFramework", "dump", "load"]

PICKLE_FILE = "model.pkl"
BUFFERS_FILE = "buffers.bin"
# Buffers smaller than this stay inside the pickle stream.
OUT_OF_BAND_MIN = 1 << 20
_ALIGN = 64


def dump(obj: Any, target: Staging) -> dict[str, Any]:
    """Pickle ``obj`` into ``target``; returns the options ``load`` needs."""
    spans: list[list[int]] = []
    buffers: HashingWriter | None = None

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        nonlocal buffers
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: keep it in band
            return True
        if raw.nbytes < OUT_OF_BAND_MIN:
            return True
        if buffers is None:
            buffers = target.open(BUFFERS_FILE)
        pad = -buffers.tell() % _ALIGN
        if pad:
            buffers.write(b"\0" * pad)
        spans.append([buffers.tell(), raw.nbytes])
        buffers.write(raw)
        return False

    try:
        with target.open(PICKLE_FILE) as stream:
            pickle.dump(obj, stream, protocol=5, buffer_callback=out_of_band)
    finally:
        if buffers is not None:
            buffers.close()
    return {"buffers": spans} if spans else {}


def _read_buffers(path: Path, spans: list[list[int]]) -> list[memoryview]:
    size = os.path.getsize(path)
    memory = mmap.mmap(-1, max(size, 1))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    view = memoryview(memory)
    with open(path, "rb", buffering=0) as stream:
        done = 0
        while done < size:
            n = stream.readinto(view[done : done + (64 << 20)])
            if not n:
                raise EOFError(f"{path} is shorter than recorded")
            done += n
    return [view[offset : offset + length] for offset, length in spans]


def load(path: Path, options: Mapping[str, Any]) -> Any:
    """Load what ``dump`` wrote under ``path``."""
    spans = options.get("buffers") or []
    buffers = _read_buffers(path / BUFFERS_FILE, spans) if spans else []
    with open(path / PICKLE_FILE, "rb") as stream:
        return pickle.load(stream, buffers=buffers)


class PickleFramework(Framework):
    """Any picklable Python object (the fallback when no other framework matches).

    Loading runs the pickle, so load only models you or your registry trust.
    """

    name = "pickle"

    def signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        for method in ("predict", "__call__"):
            if callable(getattr(obj, method, None)):
                return {method: {}}
        return {}

    def save(self, obj: Any, target: Staging) -> dict[str, Any]:
        return dump(obj, target)

    def load(self, path: Path, options: Mapping[str, Any], **kwargs: Any) -> Any:
        return load(path, options)
