"""Digests while writing (``HashingWriter``), of whole files (``file_digest``), and of
manifest entries (``entry_digest``)."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import blake3
import pytest

from tiffin.storage.digest import (
    _PARALLEL_MIN,
    CHUNK,
    DEFAULT,
    HashingWriter,
    entry_digest,
    file_digest,
    hasher,
    valid_entry,
)


def _hex(algorithm: str, data: bytes) -> str:
    return (
        blake3.blake3(data).hexdigest()
        if algorithm == "blake3"
        else hashlib.sha256(data).hexdigest()
    )


@pytest.mark.parametrize(
    "sizes",
    [[], [0], [10], [100, 200, 300], [(1 << 20) + 3], [CHUNK * 2 + 5, 7], [7, CHUNK + 1, 9]],
    ids=["nothing", "empty", "small", "several", "one-large", "multi-chunk", "mixed"],
)
@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_hash_and_size_match_what_was_written(
    tmp_path: Path, sizes: list[int], algorithm: str
) -> None:
    rng = random.Random(len(sizes))
    pieces = [rng.randbytes(n) for n in sizes]
    seen: list[int] = []
    path = tmp_path / "out.bin"
    with HashingWriter(path, algorithm, progress=seen.append) as out:
        for piece in pieces:
            assert out.write(piece) == len(piece)
        assert out.tell() == sum(sizes)
    whole = b"".join(pieces)
    assert out.closed
    assert out.algorithm == algorithm
    assert path.read_bytes() == whole
    assert out.size == len(whole)
    assert out.digest == _hex(algorithm, whole)
    assert sum(seen) == len(whole)
    assert file_digest(path, algorithm) == out.digest


def test_blake3_is_the_default(tmp_path: Path) -> None:
    """Small writes are hashed inline, large ones (over 1 MiB, several chunks) on the
    helper thread; both give the BLAKE3 of the bytes."""
    assert DEFAULT == "blake3"
    small = b"tiffin" * 100
    large = random.Random(1).randbytes(CHUNK * 3 + 17)
    assert len(small) < _PARALLEL_MIN < len(large)
    for name, data in (("small", small), ("large", large)):
        with HashingWriter(tmp_path / name) as out:
            out.write(data)
        assert out.algorithm == "blake3"
        assert out.digest == blake3.blake3(data).hexdigest()
        assert file_digest(tmp_path / name) == out.digest


def test_writes_memoryviews_of_any_shape(tmp_path: Path) -> None:
    data = bytes(range(256)) * 16
    with HashingWriter(tmp_path / "out.bin") as out:
        out.write(memoryview(data).cast("B", (64, 64)))
        out.write(bytearray(b"tail"))
    assert out.digest == blake3.blake3(data + b"tail").hexdigest()


def test_hash_is_known_only_after_close(tmp_path: Path) -> None:
    out = HashingWriter(tmp_path / "out.bin")
    out.write(b"abc")
    with pytest.raises(RuntimeError, match=r"known only after close\(\)"):
        _ = out.digest
    out.close()
    out.close()  # closing twice is harmless
    assert out.digest == blake3.blake3(b"abc").hexdigest()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        HashingWriter(path)
    assert path.read_bytes() == b"keep"


def test_file_digest_reports_progress(tmp_path: Path) -> None:
    data = random.Random(0).randbytes(CHUNK + 100)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    seen: list[int] = []
    assert file_digest(path, progress=seen.append) == blake3.blake3(data).hexdigest()
    assert seen == [CHUNK, 100]
    assert file_digest(path, "sha256") == hashlib.sha256(data).hexdigest()


def test_an_unknown_algorithm_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown digest algorithm 'md5'; known: blake3, sha256$"
    ):
        hasher("md5")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"blake3": "ab" * 32, "size": 3}, ("blake3", "ab" * 32)),
        ({"sha256": "cd" * 32, "size": 3}, ("sha256", "cd" * 32)),
    ],
    ids=["blake3", "sha256"],
)
def test_entry_digest_names_the_algorithm(entry: dict[str, Any], expected: tuple[str, str]) -> None:
    assert entry_digest(entry) == expected
    assert valid_entry(entry)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"size": 3},
            "a file entry needs exactly one digest, blake3 or sha256; it has neither",
        ),
        (
            {"blake3": "ab" * 32, "sha256": "cd" * 32, "size": 3},
            "a file entry needs exactly one digest, blake3 or sha256; it has blake3 and sha256",
        ),
        (
            {"blake3": "AB" * 32, "size": 3},
            "the blake3 of a file entry must be 64 lowercase hex digits",
        ),
        ({"sha256": 7, "size": 3}, "the sha256 of a file entry must be 64 lowercase hex digits"),
    ],
    ids=["neither", "both", "uppercase", "not-a-string"],
)
def test_entry_digest_refuses_an_entry_without_exactly_one_digest(
    entry: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        entry_digest(entry)
    assert not valid_entry(entry)


@pytest.mark.parametrize(
    "entry",
    [
        None,
        [],
        {"blake3": "ab" * 32},
        {"blake3": "ab" * 32, "size": -1},
        {"blake3": "ab" * 32, "size": "3"},
    ],
    ids=["none", "list", "no-size", "negative-size", "text-size"],
)
def test_valid_entry_needs_a_size(entry: object) -> None:
    assert not valid_entry(entry)
