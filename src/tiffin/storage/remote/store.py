"""What every remote store is: an index of item versions and aliases, plus the bytes of
their files cut into content-addressed chunks, reached by URL.

A remote store keeps, for each kind of item (``model``, ``bundle``):

    records   one per ``name:version``: the item's manifest exactly as the local store
              wrote it, who pushed it and when; created once, never changed
    aliases   ``name:alias`` -> version, each replaced in one atomic write
    chunk lists   per stored file (keyed by the hex digest its manifest entry records,
              BLAKE3 or sha256): its size, the chunk size and the sha256 of every
              chunk, in order
    chunks    the bytes, keyed by their own sha256

``RemoteStore`` is the interface a kind of store implements; ``open_remote`` finds the
implementation for a URL's scheme among the classes registered under the
``tiffin.stores`` entry point group, where tiffin registers its own (``file``, ``s3``
and other fsspec schemes, ``sqlite``, ``postgresql``) the same way a plugin would.
"""

from __future__ import annotations

import functools
import getpass
import importlib.metadata
import json
import math
import os
import re
import socket
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlencode

from tiffin.exceptions import (
    ConfigError,
    Conflict,
    IntegrityError,
    InvalidArgument,
    TiffinError,
)
from tiffin.storage.digest import valid_entry
from tiffin.storage.local import ItemKind, files_digest, safe_relpath
from tiffin.tag import LATEST, Tag

__all__ = [
    "CHUNK_SIZE",
    "CONCURRENCY",
    "ENTRY_POINT_GROUP",
    "ChunkList",
    "Record",
    "RemoteStore",
    "check_manifest",
    "metadata_text",
    "open_remote",
    "refresh",
    "schemes",
    "split_options",
    "who",
]

ENTRY_POINT_GROUP = "tiffin.stores"
CHUNK_SIZE = 16 << 20
"""Files are cut into chunks of this many bytes (the last one shorter): each chunk is one
object, sent or fetched on its own, so a large file moves over several connections at
once and an interrupted transfer resumes at chunk granularity."""
CONCURRENCY = 8
"""Chunks in flight at once. With 16 MiB chunks this holds at most 128 MiB in memory."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
_OPTIONS = ("chunk_size", "concurrency")


def metadata_text(value: Any) -> str:
    """How a metadata value is compared with a ``KEY=VALUE`` filter: strings as they are,
    anything else as JSON (``0.97``, ``true``, ``[1, 2]``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def who() -> str:
    """``user@host`` of this process, recorded with every push."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, as in some containers
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True)
class Record:
    """One item version in a remote index.

    Attributes:
        name, version: the item's tag.
        manifest: the item's manifest (``model.yaml`` / ``bundle.yaml``) as a mapping.
        pushed_by: ``user@host`` that pushed it.
        pushed_at: when it was pushed (UTC).
    """

    name: str
    version: str
    manifest: Mapping[str, Any]
    pushed_by: str
    pushed_at: datetime

    @property
    def tag(self) -> Tag:
        return Tag(self.name, self.version)

    @property
    def files(self) -> Mapping[str, Mapping[str, Any]]:
        files: Mapping[str, Mapping[str, Any]] = self.manifest.get("files") or {}
        return files

    @property
    def digest(self) -> str:
        """The sha256 of the file table (what a bundle pins a model by)."""
        return files_digest(self.files)

    @property
    def size(self) -> int:
        return int(self.manifest.get("size") or 0)

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at", ""))

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "pushed_by": self.pushed_by,
                "pushed_at": self.pushed_at.isoformat(),
                "manifest": self.manifest,
            },
            default=str,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str, where: str) -> Record:
        try:
            raw = json.loads(data)
            return cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                manifest=dict(raw["manifest"]),
                pushed_by=str(raw.get("pushed_by", "")),
                pushed_at=datetime.fromisoformat(raw["pushed_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"The record at {where} is damaged ({exc}). Push that version again, or "
                "restore the record from a backup of the remote store.",
                detail={"where": where},
            ) from None


@dataclass(frozen=True)
class ChunkList:
    """How one stored file is cut: its size, the chunk size, and each chunk's sha256."""

    size: int
    chunk_size: int
    chunks: tuple[str, ...]

    def spans(self) -> list[tuple[int, int, str]]:
        """``(offset, length, sha256)`` of every chunk."""
        return [
            (i * self.chunk_size, min(self.chunk_size, self.size - i * self.chunk_size), digest)
            for i, digest in enumerate(self.chunks)
        ]

    def to_json(self) -> bytes:
        return json.dumps(
            {"size": self.size, "chunk_size": self.chunk_size, "chunks": list(self.chunks)}
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str, where: str) -> ChunkList:
        try:
            raw = json.loads(data)
            found = cls(int(raw["size"]), int(raw["chunk_size"]), tuple(raw["chunks"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"The chunk list at {where} is damaged ({exc}). Push the item again to rewrite it.",
                detail={"where": where},
            ) from None
        found.check(where)
        return found

    def check(self, where: str) -> None:
        """Refuse a chunk list whose chunk count does not fit its sizes."""
        expected = math.ceil(self.size / self.chunk_size) if self.chunk_size > 0 else -1
        if (
            self.size < 0
            or self.chunk_size <= 0
            or len(self.chunks) != expected
            or not all(isinstance(c, str) and _SHA256.fullmatch(c) for c in self.chunks)
        ):
            raise IntegrityError(
                f"The chunk list at {where} does not fit its sizes. Push the item again "
                "to rewrite it.",
                detail={"where": where},
            )


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """Take tiffin's own query options (``chunk_size``, ``concurrency``, ``artifacts``)
    out of ``url``; returns the URL without them and the options."""
    base, _, query = url.partition("?")  # not urlsplit: it drops the empty host of sqlite:////
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in (*_OPTIONS, "artifacts"):
            ours[key] = value
        else:
            theirs.append((key, value))
    return (f"{base}?{urlencode(theirs)}" if theirs else base), ours


def _positive(options: Mapping[str, str], key: str, default: int, url: str) -> int:
    text = options.get(key)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(
            f"'{key}={text}' in the remote URL {url} is not a positive whole number. Fix "
            "the URL, or leave the option out.",
            detail={"url": url, "option": key},
        )
    return value


class RemoteStore(ABC):
    """A remote store of models and bundles. Subclass it and register the class under the
    ``tiffin.stores`` entry point group to add a URL scheme.

    Low-level methods take the item kind as its noun (``"model"``, ``"bundle"``); the
    concrete methods at the end add tag resolution and the checks every store shares.

    Args:
        url: the URL the store was opened with (credentials are never part of messages).
        chunk_size: the size of the chunks files are cut into when pushed here.
        concurrency: how many chunks move at once.

    Example:
        with open_remote("s3://models/team") as remote:
            remote.resolve(MODELS, "iris:production").version
    """

    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, url: str, *, chunk_size: int = CHUNK_SIZE, concurrency: int = CONCURRENCY
    ) -> None:
        self.url = url
        self.chunk_size = chunk_size
        self.concurrency = concurrency

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> RemoteStore:
        """Open the store ``url`` names; raises ``ConfigError`` for a URL it cannot use."""

    @classmethod
    def options(cls, url: str) -> tuple[str, dict[str, Any]]:
        """``url`` without tiffin's query options, and the keyword arguments they give."""
        bare, found = split_options(url)
        return bare, {
            "chunk_size": _positive(found, "chunk_size", CHUNK_SIZE, url),
            "concurrency": _positive(found, "concurrency", CONCURRENCY, url),
            **({"artifacts": found["artifacts"]} if "artifacts" in found else {}),
        }

    # -- chunks ------------------------------------------------------------------------

    @abstractmethod
    def has_chunk(self, digest: str, size: int) -> bool:
        """Whether the chunk ``digest`` is stored with ``size`` bytes."""

    @abstractmethod
    def put_chunk(self, digest: str, data: bytes) -> None:
        """Store a chunk; it becomes visible complete or not at all."""

    @abstractmethod
    def get_chunk(self, digest: str) -> bytes:
        """The bytes stored as chunk ``digest``; ``IntegrityError`` when it is missing."""

    @abstractmethod
    def chunk_list(self, digest: str) -> ChunkList | None:
        """How the file whose manifest entry records the hex ``digest`` was cut, or None
        when no file with it was pushed."""

    @abstractmethod
    def put_chunk_list(self, digest: str, chunks: ChunkList) -> None:
        """Record how the file with the hex ``digest`` is cut, once all its chunks are
        stored."""

    # -- the index ---------------------------------------------------------------------

    @abstractmethod
    def names(self, kind: str) -> list[str]:
        """Every name with at least one version, sorted."""

    @abstractmethod
    def records(self, kind: str, name: str) -> list[Record]:
        """Every version of ``name``, in any order."""

    @abstractmethod
    def record(self, kind: str, name: str, version: str) -> Record | None:
        """One version, or None."""

    @abstractmethod
    def add_record(self, kind: str, record: Record) -> bool:
        """Add a version in one atomic step; False, writing nothing, when it exists."""

    @abstractmethod
    def aliases(self, kind: str, name: str) -> dict[str, str]:
        """``{alias: version}`` for ``name``."""

    @abstractmethod
    def set_alias(self, kind: str, name: str, alias: str, version: str) -> None:
        """Point ``name:alias`` at ``version`` in one atomic step (readers see the old
        version or the new one, never neither)."""

    @abstractmethod
    def remove_alias(self, kind: str, name: str, alias: str) -> bool:
        """Remove an alias; False when there was none."""

    def search(
        self,
        kind: str,
        name: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[Record]:
        """Versions of ``name`` (or of every name) having every label and top-level
        metadata value given (compared as ``metadata_text``), by name then oldest first.
        Stores with a query language override this to filter where the data is."""
        found = []
        for each in [name] if name is not None else self.names(kind):
            for record in self.records(kind, each):
                have = record.manifest.get("labels") or {}
                meta = record.manifest.get("metadata") or {}
                if all(have.get(k) == v for k, v in (labels or {}).items()) and all(
                    k in meta and metadata_text(meta[k]) == v for k, v in (metadata or {}).items()
                ):
                    found.append(record)
        return _sorted(found)

    def close(self) -> None:  # noqa: B027 - a store without connections has nothing to do
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- what every store shares -------------------------------------------------------

    def resolve(self, kind: ItemKind, tag: Tag | str) -> Record:
        """The record ``tag`` means here (``name``, ``latest``, a version or an alias)."""
        tag = Tag.parse(tag) if isinstance(tag, str) else tag
        if tag.is_latest:
            versions = _sorted(self.records(kind.noun, tag.name))
            if not versions:
                raise self._not_found(kind, tag)
            return self._check_record(versions[-1], tag.name, versions[-1].version)
        assert tag.version is not None
        record = self.record(kind.noun, tag.name, tag.version)
        if record is not None:
            return self._check_record(record, tag.name, tag.version)
        target = self.aliases(kind.noun, tag.name).get(tag.version)
        record = None if target is None else self.record(kind.noun, tag.name, target)
        if record is None:
            raise self._not_found(kind, tag)
        assert target is not None
        return self._check_record(record, tag.name, target)

    def _check_record(self, record: Record, name: str, version: str) -> Record:
        """Refuse a record that is not the version asked for: a damaged or altered
        index must not make a pull write another name or version than it names."""
        if (record.name, record.version) != (name, version):
            raise IntegrityError(
                f"The record of '{name}:{version}' in {self.url} describes "
                f"'{record.name}:{record.version}' instead: the index is damaged or was "
                "altered. Push that version again.",
                detail={"tag": f"{name}:{version}", "remote": self.url},
            )
        record.tag  # noqa: B018 - a valid name and version, or InvalidTag
        return record

    def _not_found(self, kind: ItemKind, tag: Tag) -> Exception:
        if not self.records(kind.noun, tag.name):
            message = (
                f"No {kind.noun} named '{tag.name}' in {self.url}. Run '{kind.command} list "
                f"--remote {self.url}' to see what it holds, or push one with "
                f"'{kind.command} push {tag.name} --to {self.url}'."
            )
        else:
            message = (
                f"{kind.noun.capitalize()} '{tag}' not found in {self.url}. Run "
                f"'{kind.command} list {tag.name} --remote {self.url}' to see its versions."
            )
        return kind.not_found(message, detail={"tag": str(tag), "remote": self.url})

    def point_alias(self, kind: ItemKind, tag: Tag | str, alias: str) -> Tag:
        """Point ``name:alias`` at the version ``tag`` means here; moving an alias that
        exists is one atomic step."""
        target = self.resolve(kind, tag).tag
        Tag(target.name, alias)  # a valid version word
        if alias == LATEST:
            raise InvalidArgument(
                f"'{LATEST}' cannot be an alias: it always means the newest version. "
                "Choose another alias name.",
                detail={"alias": alias},
            )
        if self.record(kind.noun, target.name, alias) is not None:
            raise InvalidArgument(
                f"'{alias}' is already a version of '{target.name}' in {self.url}, so it "
                "cannot be an alias. Choose another alias name.",
                detail={"alias": alias, "remote": self.url},
            )
        assert target.version is not None
        self.set_alias(kind.noun, target.name, alias, target.version)
        return target

    def drop_alias(self, kind: ItemKind, name: str, alias: str) -> None:
        """Remove ``name:alias``; ``NotFound`` when it is not an alias here."""
        tag = Tag(name, alias)
        if not self.remove_alias(kind.noun, name, alias):
            raise kind.not_found(
                f"'{tag}' is not an alias in {self.url}. Run '{kind.command} alias {name} "
                f"--remote {self.url}' to list its aliases.",
                detail={"tag": str(tag), "remote": self.url},
            )

    def check_version_free(self, kind: ItemKind, tag: Tag) -> None:
        """Refuse to add the version ``tag`` when it is an alias of that name here."""
        assert tag.version is not None
        target = self.aliases(kind.noun, tag.name).get(tag.version)
        if target is not None:
            raise Conflict(
                f"'{tag}' is an alias of version '{target}' in {self.url}, so it cannot be "
                f"pushed as a version. Remove the alias first ('{kind.command} alias {tag} "
                f"--remove --remote {self.url}').",
                detail={"tag": str(tag), "alias_of": target, "remote": self.url},
            )


def check_manifest(kind: ItemKind, manifest: Mapping[str, Any], where: str) -> None:
    """Refuse a manifest from a remote store whose file table could write outside the
    item or does not say what to verify: paths must stay inside, every entry needs a
    size and one digest (``valid_entry``)."""
    files = manifest.get("files")
    if not isinstance(files, Mapping):
        raise IntegrityError(
            f"The {kind.manifest} of {where} has no file table. Push that version again.",
            detail={"where": where},
        )
    for rel, entry in files.items():
        try:
            safe_relpath(str(rel))
        except ValueError as exc:
            raise IntegrityError(
                f"The {kind.manifest} of {where} lists a file outside the item ({exc}); "
                "nothing was pulled. Do not use this remote version.",
                detail={"where": where, "path": str(rel)},
            ) from None
        if rel == kind.manifest or not valid_entry(entry):
            raise IntegrityError(
                f"The {kind.manifest} of {where} has a bad entry for '{rel}' (it needs a "
                "size and one digest, blake3 or sha256). Push that version again.",
                detail={"where": where, "path": str(rel)},
            )


def _sorted(records: Sequence[Record]) -> list[Record]:
    return sorted(records, key=lambda r: (r.name, r.created_at, r.version))


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def schemes() -> list[str]:
    """Every URL scheme a registered store handles."""
    return sorted(_entry_points())


def _scheme(url: str) -> str:
    if "://" not in url:
        return "file"  # a plain path names a shared directory
    return url.split("://", 1)[0].lower().split("+", 1)[0]


def open_remote(url: str) -> RemoteStore:
    """Open the remote store ``url`` names, with the class registered for its scheme.

    Forms: ``file:///mnt/models`` (or a plain path), ``s3://bucket/prefix`` (and other
    fsspec schemes such as ``gs://``, ``az://`` when their package is installed),
    ``sqlite:///registry.db``, ``postgresql://user@host/db``; a SQL registry keeps
    artifacts in the database unless ``?artifacts=URL`` names a store for them.

    Example:
        with open_remote("file:///mnt/models") as remote:
            remote.names("model")
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(
            "No remote store given. Pass its URL (e.g. --to s3://bucket/models) or set "
            "TIFFIN_REMOTE.",
            detail={"url": url},
        )
    url = url.strip()
    scheme = _scheme(url)
    entry = _entry_points().get(scheme)
    if entry is None:
        raise ConfigError(
            f"No remote store handles '{scheme}://' URLs ({url}). Known schemes: "
            f"{', '.join(schemes())}. A plugin adds one under the '{ENTRY_POINT_GROUP}' "
            "entry point group.",
            detail={"url": url, "scheme": scheme, "known": schemes()},
        )
    try:
        cls = entry.load()
    except TiffinError:  # e.g. MissingDependency naming the extra to install
        raise
    except Exception as exc:
        raise ConfigError(
            f"The remote store plugin for '{scheme}' ({entry.value}) failed to import: "
            f"{exc}. Reinstall the package that provides it.",
            detail={"scheme": scheme, "entry_point": entry.value},
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, RemoteStore)):
        raise ConfigError(
            f"The remote store plugin for '{scheme}' ({entry.value}) is not a subclass of "
            "tiffin.storage.remote.RemoteStore. Fix the plugin's entry point.",
            detail={"scheme": scheme, "entry_point": entry.value},
        )
    return cls.from_url(url)


def refresh() -> None:
    """Forget the registered stores, so plugins installed since are found."""
    _entry_points.cache_clear()
