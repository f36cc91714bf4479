"""Push an item from the local store to a remote store, and pull it back.

Each file is cut into chunks (``RemoteStore.chunk_size``) that move in parallel
(``RemoteStore.concurrency`` at once), each named by its sha256:

push
    A chunk already in the remote store is not sent again, so a push that was interrupted
    sends only what is missing when run again. The whole file's digest (with the
    algorithm its manifest entry names: BLAKE3, or sha256 in older manifests) is
    recomputed as its chunks are read and must match the local manifest before its
    chunk list, keyed by that digest, is written; the record (the version) is written
    last, in one step that fails if the version exists, so a remote version is complete
    or absent, and of two clients pushing the same version one wins and the other finds
    it (identical: nothing to do; different: refused).

pull
    Chunks are written at their offsets into ``<store>/.partial/<digest>``, a file that
    outlives an interrupted pull: run again, the chunks already there (checked against
    their sha256) are kept and only the rest is fetched. Every chunk is checked against
    its sha256 as it arrives, and every file against the digest the remote manifest
    records; the files then move into the local store's staging directory and the item
    is published in one rename. A mismatch raises ``IntegrityError`` and publishes nothing.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import functools
import hashlib
import math
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from tiffin.exceptions import IntegrityError
from tiffin.storage.digest import entry_digest, hasher, table_digests
from tiffin.storage.local import LocalStore, dump_manifest, safe_relpath
from tiffin.storage.remote.store import (
    ChunkList,
    Record,
    RemoteStore,
    check_manifest,
    open_remote,
    who,
)
from tiffin.tag import Tag

__all__ = ["ItemProgress", "Progress", "Transfer", "connect", "pull_item", "push_item"]

Progress = Callable[[int], None]
ItemProgress = Callable[[Tag, int], Progress]
"""Called when an item starts moving, with its tag and size in bytes; returns the
callback that is then given the number of bytes done each time more are."""

PARTIAL_DIR = ".partial"
_STALE_SECONDS = 7 * 24 * 3600
_T = TypeVar("_T")


@dataclass(frozen=True)
class Transfer:
    """What a push or pull did.

    Attributes:
        tag: the item's ``name:version``.
        remote: the remote store's URL.
        added: False when that version was already there, identical, and nothing moved.
        moved: bytes of chunks sent (push) or received (pull).
        reused: bytes that were already where they were going (chunks or files pushed
            before, chunks a previous pull had fetched).
        files: how many files the item has.
    """

    tag: Tag
    remote: str
    added: bool
    moved: int = 0
    reused: int = 0
    files: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": str(self.tag),
            "remote": self.remote,
            "added": self.added,
            "moved": self.moved,
            "reused": self.reused,
            "files": self.files,
        }


@contextlib.contextmanager
def connect(remote: str | RemoteStore) -> Iterator[RemoteStore]:
    """The store ``remote`` names (a URL is opened, and closed afterwards)."""
    if isinstance(remote, RemoteStore):
        yield remote
        return
    with open_remote(remote) as store:
        yield store


class _InOrderDigest:
    """The digest (of ``algorithm``) of a file whose chunks complete in any order: each
    ``done(i)`` lets whichever thread finds the next chunk ready hash it (read back from
    the file, which the page cache still holds), so hashing overlaps the transfer and
    holds no chunks in memory."""

    def __init__(self, fd: int, spans: list[tuple[int, int, str]], algorithm: str) -> None:
        self._fd = fd
        self._spans = spans
        self._digest = hasher(algorithm)
        self._ready: set[int] = set()
        self._next = 0
        self._busy = False
        self._lock = threading.Lock()

    def done(self, index: int) -> None:
        with self._lock:
            self._ready.add(index)
            if self._busy:
                return
            self._busy = True
        while True:
            with self._lock:
                if self._next not in self._ready:
                    self._busy = False
                    return
                offset, length, _ = self._spans[self._next]
                self._ready.discard(self._next)
            self._digest.update(_read(self._fd, length, offset))
            with self._lock:
                self._next += 1

    def hexdigest(self) -> str:
        assert self._next == len(self._spans), "not every chunk is done"
        return self._digest.hexdigest()


def _read(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def _write(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _run(
    tasks: Iterable[Callable[[], _T]], concurrency: int, on_done: Callable[[_T], None]
) -> None:
    """Run ``tasks`` on ``concurrency`` threads, calling ``on_done`` in this thread with
    each result; the first error (from a task or ``on_done``) cancels what has not
    started, waits for what has, and propagates."""
    with ThreadPoolExecutor(concurrency, thread_name_prefix="tiffin-transfer") as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in as_completed(futures):
                on_done(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _cut(size: int, chunk_size: int) -> ChunkList:
    """Where the chunks of a ``size``-byte file fall (their digests still unknown)."""
    return ChunkList(size, chunk_size, ("0" * 64,) * math.ceil(size / chunk_size))


@dataclass
class _File:
    """One file on the move: where it is, its digest (``algorithm``, ``digest``: what
    its chunk list is keyed by), how it is cut, what is left of it."""

    rels: list[str]
    algorithm: str
    digest: str
    fd: int
    chunks: ChunkList
    path: Path | None = None
    resumed: bool = False
    digests: list[str] = field(default_factory=list)
    left: int = 0

    def __post_init__(self) -> None:
        self.spans = self.chunks.spans()
        self.hasher = _InOrderDigest(self.fd, self.spans, self.algorithm)
        self.digests = [""] * len(self.chunks.chunks)
        self.left = len(self.chunks.chunks)


class _Mover(abc.ABC):
    """Moves the chunks of a set of files in parallel, counting bytes and reporting
    progress from the calling thread; subclasses say how one chunk moves and what happens
    when a file is complete."""

    def __init__(self, remote: RemoteStore, advance: Progress | None) -> None:
        self.remote = remote
        self.advance = advance
        self.moved = 0
        self.reused = 0
        self.files: list[_File] = []

    def count(self, done: int, moved: int = 0) -> None:
        self.moved += moved
        self.reused += done - moved
        if self.advance is not None and done:
            self.advance(done)

    @abc.abstractmethod
    def chunk(self, item: _File, index: int) -> tuple[_File, int, int]:
        """Move chunk ``index`` of ``item``; ``(item, its length, bytes actually sent)``."""

    @abc.abstractmethod
    def finish(self, item: _File) -> None:
        """Complete ``item`` once all its chunks have moved."""

    def _done(self, result: tuple[_File, int, int]) -> None:
        item, length, moved = result
        self.count(length, moved)
        item.left -= 1
        if item.left == 0:
            self.finish(item)

    def run(self) -> None:
        for item in self.files:
            if item.left == 0:  # an empty file
                self.finish(item)
        tasks = [
            functools.partial(self.chunk, item, index)
            for item in self.files
            for index in range(item.left)
        ]
        _run(tasks, self.remote.concurrency, self._done)

    def close(self) -> None:
        for item in self.files:
            os.close(item.fd)


# -- push ------------------------------------------------------------------------------


def push_item(
    local: LocalStore,
    tag: Tag | str,
    remote: RemoteStore,
    *,
    progress: ItemProgress | None = None,
) -> Transfer:
    """Copy the item ``tag`` means in ``local`` to ``remote`` under the same version.

    Returns what moved; pushing a version the remote has identically moves nothing.
    Raises ``AlreadyExists`` (the kind's) when the remote has that version with other
    files, ``Conflict`` when the version is an alias there, and ``IntegrityError`` when
    a local file no longer matches its digest.
    """
    kind = local.kind
    resolved = local.resolve(tag)
    assert resolved.version is not None
    manifest = local.manifest(resolved)
    files: Mapping[str, Mapping[str, Any]] = manifest.get("files") or {}
    existing = remote.record(kind.noun, resolved.name, resolved.version)
    if existing is not None:
        _same_or_raise(local, remote, existing, files)
        return Transfer(resolved, remote.url, added=False, files=len(files))
    remote.check_version_free(kind, resolved)
    advance = progress(resolved, int(manifest.get("size") or 0)) if progress else None
    sender = _Sender(local, resolved, remote, advance)
    try:
        sender.prepare(files)
        sender.run()
    finally:
        sender.close()
    record = Record(resolved.name, resolved.version, manifest, who(), datetime.now(UTC))
    added = remote.add_record(kind.noun, record)
    if not added:  # another client pushed it meanwhile
        existing = remote.record(kind.noun, resolved.name, resolved.version)
        assert existing is not None
        _same_or_raise(local, remote, existing, files)
    return Transfer(resolved, remote.url, added, sender.moved, sender.reused, len(files))


class _Sender(_Mover):
    def __init__(
        self, local: LocalStore, tag: Tag, remote: RemoteStore, advance: Progress | None
    ) -> None:
        super().__init__(remote, advance)
        self.local = local
        self.tag = tag

    def prepare(self, files: Mapping[str, Mapping[str, Any]]) -> None:
        base = self.local.path(self.tag)
        seen: set[str] = set()
        for rel, entry in files.items():
            (algorithm, digest), size = entry_digest(entry), int(entry["size"])
            if digest in seen or self.remote.chunk_list(digest) is not None:
                self.count(size)  # pushed before, with another version or another path
                continue
            seen.add(digest)
            try:
                fd = os.open(base / safe_relpath(rel), os.O_RDONLY)
            except FileNotFoundError:
                raise self.local.damaged(self.tag, rel) from None
            cut = _cut(size, self.remote.chunk_size)
            self.files.append(_File([rel], algorithm, digest, fd, cut))
            if os.fstat(fd).st_size != size:
                raise self.local.damaged(self.tag, rel)

    def chunk(self, item: _File, index: int) -> tuple[_File, int, int]:
        offset, length, _ = item.spans[index]
        data = _read(item.fd, length, offset)
        if len(data) != length:
            raise self.local.damaged(self.tag, item.rels[0])
        digest = _sha256(data)
        item.digests[index] = digest
        moved = 0
        if not self.remote.has_chunk(digest, length):
            self.remote.put_chunk(digest, data)
            moved = length
        item.hasher.done(index)
        return item, length, moved

    def finish(self, item: _File) -> None:
        if item.hasher.hexdigest() != item.digest:
            raise self.local.damaged(self.tag, item.rels[0])
        final = ChunkList(item.chunks.size, item.chunks.chunk_size, tuple(item.digests))
        self.remote.put_chunk_list(item.digest, final)


def _same_or_raise(
    local: LocalStore,
    remote: RemoteStore,
    record: Record,
    files: Mapping[str, Mapping[str, Any]],
) -> None:
    if table_digests(files) == table_digests(record.files):
        return
    kind = local.kind
    raise kind.exists(
        f"{kind.noun.capitalize()} '{record.tag}' is already in {remote.url} with other "
        f"files than the local one, so it was not pushed. Save the local {kind.noun} "
        "under another version and push that.",
        detail={"tag": str(record.tag), "remote": remote.url},
    )


# -- pull ------------------------------------------------------------------------------


def pull_item(
    local: LocalStore,
    tag: Tag | str,
    remote: RemoteStore,
    *,
    progress: ItemProgress | None = None,
    validate: Callable[[Record], Any] | None = None,
) -> Transfer:
    """Copy the item ``tag`` means in ``remote`` into ``local``, verified, in one step.

    ``validate`` checks the record's item-specific fields and raises to refuse it.
    Returns what moved; pulling a version the local store has identically moves nothing.
    Raises ``IntegrityError`` when a chunk or file does not match its digest (nothing is
    published then), and the kind's ``AlreadyExists`` when the local store has that
    version with other files.
    """
    kind = local.kind
    record = remote.resolve(kind, tag)
    check_manifest(kind, record.manifest, f"{kind.noun} '{record.tag}' in {remote.url}")
    if validate is not None:
        validate(record)
    if (local.path(record.tag) / kind.manifest).is_file():
        return _local_same_or_raise(local, remote, record)
    local.check_not_alias(record.tag)
    advance = progress(record.tag, record.size) if progress else None
    receiver = _Receiver(local, record, remote, advance)
    try:
        receiver.prepare()
        receiver.run()
        added = receiver.publish()
    finally:
        receiver.close()
    if not added:  # another pull published it meanwhile
        return _local_same_or_raise(local, remote, record)
    return Transfer(
        record.tag, remote.url, True, receiver.moved, receiver.reused, len(record.files)
    )


class _Receiver(_Mover):
    def __init__(
        self, local: LocalStore, record: Record, remote: RemoteStore, advance: Progress | None
    ) -> None:
        super().__init__(remote, advance)
        self.local = local
        self.record = record
        self.where = f"{local.kind.noun} '{record.tag}' in {remote.url}"

    def _refuse(self, problem: str, **detail: Any) -> IntegrityError:
        noun = self.local.kind.noun
        return IntegrityError(
            f"{problem} Nothing was pulled. Push the {noun} again from a machine that has "
            "a good copy.",
            detail={"tag": str(self.record.tag), "remote": self.remote.url, **detail},
        )

    def prepare(self) -> None:
        folder = self.local.root / PARTIAL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        _sweep(folder)
        by_digest: dict[tuple[str, str], list[str]] = {}
        for rel, entry in self.record.files.items():
            by_digest.setdefault(entry_digest(entry), []).append(rel)
        for (algorithm, digest), rels in by_digest.items():
            chunks = self.remote.chunk_list(digest)
            size = int(self.record.files[rels[0]]["size"])
            if chunks is None or chunks.size != size:
                problem = (
                    "is missing from it"
                    if chunks is None
                    else f"has a chunk list of {chunks.size} bytes, not {size}"
                )
                raise self._refuse(f"File '{rels[0]}' of {self.where} {problem}.", path=rels[0])
            path, fd, resumed = _open_partial(folder, digest, size)
            self.files.append(_File(rels, algorithm, digest, fd, chunks, path, resumed))

    def chunk(self, item: _File, index: int) -> tuple[_File, int, int]:
        offset, length, digest = item.spans[index]
        if item.resumed and _sha256(_read(item.fd, length, offset)) == digest:
            item.hasher.done(index)
            return item, length, 0
        data = self.remote.get_chunk(digest)
        if len(data) != length or _sha256(data) != digest:
            raise self._refuse(
                f"Chunk {index + 1} of {len(item.chunks.chunks)} of file '{item.rels[0]}' of "
                f"{self.where} does not match its sha256: the remote copy is damaged or was "
                "altered.",
                path=item.rels[0],
                chunk=digest,
            )
        _write(item.fd, data, offset)
        item.hasher.done(index)
        return item, length, length

    def finish(self, item: _File) -> None:
        if item.hasher.hexdigest() != item.digest:
            assert item.path is not None
            item.path.unlink(missing_ok=True)
            raise self._refuse(
                f"File '{item.rels[0]}' of {self.where} does not match the {item.algorithm} "
                f"its {self.local.kind.manifest} records: the remote copy is damaged or was "
                "altered.",
                path=item.rels[0],
            )
        self.count(item.chunks.size * (len(item.rels) - 1))  # the same bytes at other paths

    def publish(self) -> bool:
        """Move the verified files into a staging directory and publish the item; False
        when that version appeared in the local store meanwhile."""
        scratch = self.local.scratch()
        try:
            for item in self.files:
                assert item.path is not None
                if self.local.durable:
                    os.fsync(item.fd)
                first = scratch / safe_relpath(item.rels[0])
                first.parent.mkdir(parents=True, exist_ok=True)
                os.rename(item.path, first)
                for rel in item.rels[1:]:
                    copy = scratch / safe_relpath(rel)
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(first, copy)
            manifest = scratch / self.local.kind.manifest
            manifest.write_text(dump_manifest(self.record.manifest), encoding="utf-8")
            if self.local.durable:
                for path in (manifest, scratch):
                    _fsync(path)
            if self.local.publish(scratch, self.record.tag):
                return True
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        shutil.rmtree(scratch, ignore_errors=True)
        return False

    def close(self) -> None:
        super().close()  # releases the partial files' locks
        for item in self.files:
            assert item.path is not None
            if item.path.name != item.digest:  # a private partial file cannot be resumed
                item.path.unlink(missing_ok=True)


def _local_same_or_raise(local: LocalStore, remote: RemoteStore, record: Record) -> Transfer:
    if table_digests(local.manifest(record.tag)["files"]) == table_digests(record.files):
        return Transfer(record.tag, remote.url, added=False, files=len(record.files))
    kind = local.kind
    raise kind.exists(
        f"{kind.noun.capitalize()} '{record.tag}' is in the local store with other files "
        f"than in {remote.url}, so it was not pulled. Delete the local one first with "
        f"'{kind.command} delete {record.tag}' to replace it.",
        detail={"tag": str(record.tag), "remote": remote.url},
    )


def _open_partial(folder: Path, digest: str, size: int) -> tuple[Path, int, bool]:
    """The partial file to pull the file ``digest`` into, locked for this process, and
    whether it holds what an earlier pull fetched. A file another process is pulling
    right now gets a private partial file instead (no resume, no interference)."""
    path = folder / digest
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        path = folder / f"{digest}.{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    resumed = size > 0 and os.fstat(fd).st_size == size
    if not resumed:
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
    return path, fd, resumed


def _sweep(folder: Path) -> None:
    """Remove partial files no pull has touched for a week."""
    now = time.time()
    for entry in folder.iterdir():
        with contextlib.suppress(OSError):
            if now - entry.stat().st_mtime > _STALE_SECONDS:
                entry.unlink()
