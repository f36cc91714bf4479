"""sha256 while writing (``HashingWriter``) and of whole files (``sha256_file``)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from tiffin.storage.digest import CHUNK, HashingWriter, sha256_file


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [10], [100, 200, 300], [(1 << 20) + 3], [CHUNK * 2 + 5, 7], [7, CHUNK + 1, 9]],
    ids=["nothing", "empty", "small", "several", "one-large", "multi-chunk", "mixed"],
)
def test_hash_and_size_match_what_was_written(tmp_path: Path, sizes: list[int]) -> None:
    rng = random.Random(len(sizes))
    pieces = [rng.randbytes(n) for n in sizes]
    seen: list[int] = []
    path = tmp_path / "out.bin"
    with HashingWriter(path, progress=seen.append) as out:
        for piece in pieces:
            assert out.write(piece) == len(piece)
        assert out.tell() == sum(sizes)
    whole = b"".join(pieces)
    assert out.closed
    assert path.read_bytes() == whole
    assert out.size == len(whole)
    assert out.sha256 == hashlib.sha256(whole).hexdigest()
    assert sum(seen) == len(whole)
    assert sha256_file(path) == out.sha256


def test_writes_memoryviews_of_any_shape(tmp_path: Path) -> None:
    data = bytes(range(256)) * 16
    with HashingWriter(tmp_path / "out.bin") as out:
        out.write(memoryview(data).cast("B", (64, 64)))
        out.write(bytearray(b"tail"))
    assert out.sha256 == hashlib.sha256(data + b"tail").hexdigest()


def test_hash_is_known_only_after_close(tmp_path: Path) -> None:
    out = HashingWriter(tmp_path / "out.bin")
    out.write(b"abc")
    with pytest.raises(RuntimeError, match=r"known only after close\(\)"):
        _ = out.sha256
    out.close()
    out.close()  # closing twice is harmless
    assert out.sha256 == hashlib.sha256(b"abc").hexdigest()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        HashingWriter(path)
    assert path.read_bytes() == b"keep"


def test_sha256_file_reports_progress(tmp_path: Path) -> None:
    data = random.Random(0).randbytes(CHUNK + 100)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    seen: list[int] = []
    assert sha256_file(path, seen.append) == hashlib.sha256(data).hexdigest()
    assert seen == [CHUNK, 100]
