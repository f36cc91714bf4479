"""Generic Python objects, saved with pickle protocol 5.

Large contiguous buffers (numpy arrays, for instance) are written out of band into
``buffers.bin``, each aligned to 64 bytes, and loaded by mapping that file: loading a
model made of big arrays copies nothing, and every process that loads it shares the
same pages.
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
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        if spans and max(offset + length for offset, length in spans) > size:
            raise EOFError(f"{path} is shorter than model.yaml records")
        # A private mapping of the stored file: no copy and no page zeroing, writable
        # (copy-on-write), and worker processes loading the same model share its pages in
        # the page cache. (MAP_POPULATE would copy every page of a writable private
        # mapping up front, so the kernel is only asked to read ahead.) Stored files are
        # never changed in place.
        memory = mmap.mmap(
            stream.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
    if hasattr(mmap, "MADV_WILLNEED"):
        memory.madvise(mmap.MADV_WILLNEED)
    view = memoryview(memory)
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
        self.reject_unknown(kwargs, "a pickled model")
        return load(path, options)
