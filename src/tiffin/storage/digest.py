"""sha256 of stored files, computed while they are written when possible.

Writing and hashing both release the GIL, so ``HashingWriter`` hashes each large chunk
on a helper thread while the calling thread writes it: saving costs about
``max(write, hash)`` instead of their sum.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

__all__ = ["CHUNK", "HashingWriter", "sha256_file"]

CHUNK = 8 << 20
# Below this size a thread hand-off costs more than hashing inline.
_PARALLEL_MIN = 1 << 20


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """The hex sha256 of a file's bytes, reading it in large chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while n := stream.readinto(view):
            digest.update(view[:n])
            if progress is not None:
                progress(n)
    return digest.hexdigest()


class HashingWriter:
    """A binary file opened for writing that keeps the sha256 and size of what it wrote.

    Example:
        with HashingWriter(path) as out:
            out.write(data)
        out.sha256, out.size
    """

    def __init__(self, path: Path, *, progress: Callable[[int], None] | None = None) -> None:
        self.path = path
        self.size = 0
        self._digest = hashlib.sha256()
        self._file: BinaryIO = open(path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
        self._pool: ThreadPoolExecutor | None = None
        self._progress = progress
        self._sha256: str | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data).cast("B")
        total = view.nbytes
        if total < _PARALLEL_MIN:
            self._digest.update(view)
            self._write_all(view)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="tiffin-sha256")
            for start in range(0, total, CHUNK):
                chunk = view[start : start + CHUNK]
                hashed = self._pool.submit(self._digest.update, chunk)
                self._write_all(chunk)
                hashed.result()
        self.size += total
        return total

    def _write_all(self, view: memoryview) -> None:
        written = 0
        while written < view.nbytes:
            written += self._file.write(view[written:]) or 0
        if self._progress is not None:
            self._progress(view.nbytes)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def tell(self) -> int:
        return self.size

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if not self._file.closed:
            self._file.close()
            self._sha256 = self._digest.hexdigest()

    def fsync(self) -> None:
        os.fsync(self._file.fileno())

    @property
    def closed(self) -> bool:
        return self._file.closed

    @property
    def sha256(self) -> str:
        """The hex digest; available once the writer is closed."""
        if self._sha256 is None:
            raise RuntimeError("HashingWriter.sha256 is known only after close()")
        return self._sha256

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
