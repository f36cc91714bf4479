"""Export a stored item to one archive file, and import it back, treating archives as untrusted.

An archive is a tar file (gzip-compressed when its name ends in ``.tar.gz`` or ``.tgz``)
holding one directory, ``<name>-<version>/``, whose first member is the item's manifest
and whose other members are exactly the files the manifest lists.

Import reads the archive as a stream and refuses, before anything is published:
members outside that directory (``..``, absolute paths), links and special files, files
the manifest does not list or lists twice, missing files, and any file whose size or
digest (with the algorithm its entry names) differs from the manifest. Files are written
under the store's staging directory and the item is renamed into place only once every
check has passed, so a refused archive leaves the store exactly as it was.
"""

from __future__ import annotations

import gzip
import os
import secrets
import shutil
import tarfile
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import BaseModel, ValidationError

from tiffin.exceptions import CorruptArchive, InvalidArgument, NotFound, UnsafeArchive
from tiffin.storage.digest import CHUNK, HashingWriter, entry_digest, table_digests, valid_entry
from tiffin.storage.local import LocalStore, safe_relpath
from tiffin.tag import Tag

__all__ = ["MAX_MANIFEST_BYTES", "export_item", "import_item", "manifest_schema"]

MAX_MANIFEST_BYTES = 16 << 20

Progress = Callable[[int], None]


class _CountingReader:
    """Wraps a binary stream and reports how many bytes were read from it."""

    def __init__(self, stream: IO[bytes], progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        if self._progress is not None and data:
            self._progress(len(data))
        return data


def export_item(
    store: LocalStore, tag: Tag, dest: Path, *, progress: Progress | None = None
) -> Path:
    """Write the resolved item ``tag`` to the archive file ``dest``.

    The archive appears at ``dest`` only once complete. ``progress`` is called with the
    number of bytes of item files added each time more are.
    """
    manifest = store.manifest(tag)
    base = store.path(tag)
    prefix = f"{tag.name}-{tag.version}"
    dest = dest.expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.partial")
    mtime = int(os.stat(base / store.kind.manifest).st_mtime)
    try:
        compressed = dest.name.endswith((".tar.gz", ".tgz"))
        tar = (
            tarfile.open(partial, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=6)  # noqa: SIM115
            if compressed
            else tarfile.open(partial, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        )
        with tar:
            members = [store.kind.manifest, *manifest.get("files", {})]
            for rel in members:
                path = base / rel
                info = tarfile.TarInfo(f"{prefix}/{rel}")
                try:
                    info.size = path.stat().st_size
                except FileNotFoundError:
                    raise store.damaged(tag, rel) from None
                if rel in manifest["files"] and info.size != manifest["files"][rel]["size"]:
                    raise store.damaged(tag, rel)
                info.mode = 0o644
                info.mtime = mtime
                with open(path, "rb") as stream:
                    tracked = _CountingReader(
                        stream, progress if rel in manifest["files"] else None
                    )
                    tar.addfile(info, tracked)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest


def _corrupt(source: Path, problem: str, **detail: Any) -> CorruptArchive:
    return CorruptArchive(
        f"Archive {source} is corrupt: {problem}. Nothing was imported; export it again "
        "from its source.",
        detail={"archive": str(source), **detail},
    )


def _unsafe(source: Path, member: str, problem: str) -> UnsafeArchive:
    return UnsafeArchive(
        f"Archive {source} is unsafe: member '{member}' {problem}. Nothing was imported; "
        "only import archives written by 'export'.",
        detail={"archive": str(source), "member": member},
    )


def _check_manifest(source: Path, manifest_name: str, data: Any) -> tuple[Tag, dict[str, Any]]:
    if not isinstance(data, dict):
        raise _corrupt(source, f"its {manifest_name} is not a mapping")
    try:
        tag = Tag(str(data.get("name", "")), str(data.get("version", "")))
    except Exception as exc:
        raise _corrupt(source, f"its {manifest_name} has a bad name or version ({exc})") from None
    files = data.get("files")
    if not isinstance(files, dict):
        raise _corrupt(source, f"its {manifest_name} has no 'files' table")
    for rel, entry in files.items():
        try:
            safe_relpath(str(rel))
        except ValueError as exc:
            raise _unsafe(
                source,
                str(rel),
                f"is listed in {manifest_name} with a path that escapes the item ({exc})",
            ) from None
        if rel == manifest_name:
            raise _corrupt(source, f"its {manifest_name} lists itself")
        if not valid_entry(entry):
            raise _corrupt(
                source,
                f"the entry for '{rel}' in its {manifest_name} needs a size and one "
                "digest, blake3 or sha256 (64 hex digits)",
            )
    return tag, files


def _copy_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, algorithm: str
) -> str:
    """Write ``member`` to ``target``; its hex digest of ``algorithm``."""
    stream = tar.extractfile(member)
    assert stream is not None
    with HashingWriter(target, algorithm) as out:
        while chunk := stream.read(CHUNK):
            out.write(chunk)
    return out.digest


def manifest_schema(
    source: Path, schema: type[BaseModel], manifest_name: str
) -> Callable[[Mapping[str, Any]], None]:
    """A ``validate`` for ``import_item``: the manifest must be a valid ``schema``, or the
    archive is refused as corrupt, naming the first bad field."""

    def validate(manifest: Mapping[str, Any]) -> None:
        try:
            schema.model_validate(manifest)
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"])
            raise CorruptArchive(
                f"Archive {source} is corrupt: its {manifest_name} has a bad '{field}' "
                f"({problem['msg']}). Nothing was imported; export it again from its source.",
                detail={"archive": str(source), "field": field},
            ) from None

    return validate


def import_item(
    store: LocalStore,
    source: Path,
    *,
    validate: Callable[[Mapping[str, Any]], None] | None = None,
    progress: Progress | None = None,
) -> tuple[Tag, bool]:
    """Import the archive ``source`` into ``store``.

    ``validate`` checks the item-specific manifest fields and raises to refuse it.
    ``progress`` is called with the number of archive bytes read. Returns the item's tag
    and whether it was added (False when an identical version was already there).
    Raises ``CorruptArchive`` or ``UnsafeArchive`` and writes nothing for a bad archive.
    """
    source = source.expanduser()
    if not source.is_file():
        if source.exists():
            raise InvalidArgument(
                f"{source} is not a file. Give the path of an archive written by "
                f"'{store.kind.command} export'.",
                detail={"archive": str(source)},
            )
        raise NotFound(
            f"Archive {source} does not exist. Check the path.",
            detail={"archive": str(source)},
        )
    manifest_name = store.kind.manifest
    scratch: Path | None = None
    try:
        with open(source, "rb") as raw:
            reader = _CountingReader(raw, progress)
            try:
                with tarfile.open(fileobj=reader, mode="r|*") as tar:  # type: ignore[call-overload]
                    tag, added, scratch = _read_archive(store, source, tar, manifest_name, validate)
            # Only what reading a bad archive raises: a full disk or a permission error
            # while writing the store is not the archive's fault and propagates as it is.
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
                raise _corrupt(source, f"it cannot be read as a tar archive ({exc})") from None
    finally:
        if scratch is not None and scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return tag, added


def _read_manifest(
    source: Path, tar: tarfile.TarFile, manifest_name: str
) -> tuple[str, bytes, dict[str, Any]]:
    first = tar.next()
    if first is None:
        raise _corrupt(source, "it is empty")
    prefix, _, rest = first.name.partition("/")
    if rest != manifest_name or not first.isfile():
        raise _corrupt(source, f"its first member is '{first.name}', not '<item>/{manifest_name}'")
    if first.size > MAX_MANIFEST_BYTES:
        raise _corrupt(
            source,
            f"its {manifest_name} is {first.size} bytes, over the {MAX_MANIFEST_BYTES} byte limit",
        )
    stream = tar.extractfile(first)
    assert stream is not None
    manifest_bytes = stream.read()
    try:
        data = yaml.safe_load(manifest_bytes)
    except yaml.YAMLError as exc:
        raise _corrupt(source, f"its {manifest_name} is not valid YAML ({exc})") from None
    return prefix, manifest_bytes, data


def _member_path(source: Path, member: tarfile.TarInfo, prefix: str) -> str | None:
    """The member's path inside the item, or None for a directory; raises if unsafe."""
    name = member.name
    if not name.startswith(prefix + "/"):
        raise _unsafe(source, name, f"is outside the item's directory '{prefix}/'")
    try:
        rel = safe_relpath(
            name[len(prefix) + 1 :].rstrip("/") if member.isdir() else name[len(prefix) + 1 :]
        )
    except ValueError as exc:
        raise _unsafe(source, name, f"has a path that escapes the item ({exc})") from None
    if member.issym() or member.islnk():
        raise _unsafe(source, name, f"is a link (to '{member.linkname}'); links are refused")
    if member.isdir():
        return None
    if not member.isfile():
        raise _unsafe(source, name, "is not a regular file")
    return rel


def _extract(
    *,
    source: Path,
    tar: tarfile.TarFile,
    prefix: str,
    files: Mapping[str, Any],
    manifest_name: str,
    scratch: Path,
) -> None:
    seen: set[str] = set()
    while (member := tar.next()) is not None:
        rel = _member_path(source, member, prefix)
        if rel is None:
            continue
        if rel not in files:
            raise _corrupt(
                source,
                f"member '{member.name}' is not listed in its {manifest_name}",
                member=member.name,
            )
        if rel in seen:
            raise _corrupt(source, f"member '{member.name}' appears twice", member=member.name)
        seen.add(rel)
        expected = files[rel]
        if member.size != expected["size"]:
            raise _corrupt(
                source,
                f"'{rel}' is {member.size} bytes but {manifest_name} says {expected['size']}",
                member=member.name,
            )
        target = scratch / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        algorithm, recorded = entry_digest(expected)
        if _copy_member(tar, member, target, algorithm) != recorded:
            raise _corrupt(
                source,
                f"the {algorithm} of '{rel}' does not match its {manifest_name}",
                member=member.name,
            )
    missing = sorted(set(files) - seen)
    if missing:
        raise _corrupt(
            source,
            f"it lacks {len(missing)} file(s) its {manifest_name} lists: {', '.join(missing[:5])}",
            missing=missing,
        )


def _read_archive(
    store: LocalStore,
    source: Path,
    tar: tarfile.TarFile,
    manifest_name: str,
    validate: Callable[[Mapping[str, Any]], None] | None,
) -> tuple[Tag, bool, Path | None]:
    prefix, manifest_bytes, data = _read_manifest(source, tar, manifest_name)
    tag, files = _check_manifest(source, manifest_name, data)
    if validate is not None:
        validate(data)
    if (store.path(tag) / manifest_name).is_file():
        return tag, _same_or_raise(store, source, tag, files), None
    store.check_not_alias(tag)
    scratch = store.scratch()
    try:
        _extract(
            source=source,
            tar=tar,
            prefix=prefix,
            files=files,
            manifest_name=manifest_name,
            scratch=scratch,
        )
        (scratch / manifest_name).write_bytes(manifest_bytes)
        published = store.publish(scratch, tag)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if not published:
        return tag, _same_or_raise(store, source, tag, files), scratch
    return tag, True, None


def _same_or_raise(store: LocalStore, source: Path, tag: Tag, files: Mapping[str, Any]) -> bool:
    if table_digests(store.manifest(tag).get("files", {})) == table_digests(files):
        return False
    kind = store.kind
    raise kind.exists(
        f"{kind.noun.capitalize()} '{tag}' already exists with different content than archive "
        f"{source}. Delete it first with '{kind.command} delete {tag}' to replace it.",
        detail={"tag": str(tag), "archive": str(source)},
    )
