"""A versioned store of items (models, bundles) in a local directory.

Layout under the store's root (``$TIFFIN_HOME/models`` for models)::

    <name>/<version>/           one item: its files and its manifest (``model.yaml``)
    <name>/.aliases/<alias>     a small file holding the version an alias points to
    .staging/<pid>-<random>/    an item being written
    .trash/<pid>-<random>/      an item being deleted

An item is written under ``.staging`` and renamed into place in one step once it is
complete, so readers see the whole item or nothing: a save that raises or is killed
leaves only a staging directory behind, which no listing shows and the next save of a
live process removes. Two processes saving the same name get distinct versions: the
rename fails for the second one, which takes a new version and tries again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self

import yaml

from tiffin.exceptions import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidArgument,
    NotFound,
    TiffinError,
)
from tiffin.storage.digest import DEFAULT, HashingWriter, entry_digest, file_digest
from tiffin.tag import LATEST, Tag, new_version

__all__ = [
    "ItemKind",
    "LocalStore",
    "Staging",
    "dump_manifest",
    "files_digest",
    "read_manifest",
    "safe_relpath",
]

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass(frozen=True)
class ItemKind:
    """What a store holds, for paths and messages.

    Attributes:
        noun: "model" or "bundle".
        manifest: the manifest's file name, e.g. "model.yaml".
        command: the CLI group that manages it, e.g. "tiffin models".
        not_found: raised when a tag resolves to nothing.
        exists: raised when a version is already present.
    """

    noun: str
    manifest: str
    command: str
    not_found: type[NotFound]
    exists: type[AlreadyExists]


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse a manifest file into a mapping."""
    with open(path, encoding="utf-8") as stream:
        try:
            data = yaml.load(stream, Loader=_Loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise TiffinError(
                f"{path} is not valid YAML ({exc}). The item is damaged; delete it.",
                detail={"path": str(path)},
            ) from None
    if not isinstance(data, dict):
        raise TiffinError(f"{path} does not hold a mapping. The item is damaged; delete it.")
    return data


def dump_manifest(data: Mapping[str, Any]) -> str:
    """Render a manifest as YAML, keeping the key order given."""
    text: str = yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    return text


def files_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """One sha256 for a manifest's file table: equal exactly when every path and every
    file's digest are equal, whatever order the table is in. Each file contributes its
    hex digest, whichever algorithm its entry records, so a table keeps the value it had
    before BLAKE3 (what bundles built then pin their models by)."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(f"{rel}\0{entry_digest(files[rel])[1]}\n".encode())
    return digest.hexdigest()


def safe_relpath(name: str) -> str:
    """Check that ``name`` is a plain relative POSIX path that stays inside its directory.

    Raises ``ValueError`` describing the problem otherwise.
    """
    if not name or "\\" in name or "\x00" in name:
        raise ValueError(f"{name!r} is not a plain relative path")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise ValueError(f"{name!r} is an absolute path")
    if any(part in ("..", ".", "") for part in name.split("/")):
        raise ValueError(f"{name!r} contains '..', '.' or an empty part")
    return path.as_posix()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _scratch_name() -> str:
    return f"{os.getpid()}-{secrets.token_hex(6)}"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Staging:
    """An item being written. Write files under ``path`` (or through ``open``), then
    ``commit`` publishes it atomically; ``discard`` (or leaving a ``with`` block with an
    exception) removes it without a trace.
    """

    def __init__(self, store: LocalStore, path: Path, tag: Tag, *, auto_version: bool) -> None:
        self.store = store
        self.path = path
        self.tag = tag
        self.created_at = datetime.now(UTC)
        self._auto_version = auto_version
        self._digests: dict[str, tuple[str, int]] = {}
        self._writers: list[HashingWriter] = []
        self._done = False

    def open(self, relpath: str, *, progress: Callable[[int], None] | None = None) -> HashingWriter:
        """Create ``relpath`` under the item for writing; it is hashed as it is written."""
        target = self.path / safe_relpath(relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        writer = HashingWriter(target, progress=progress)
        self._writers.append(writer)
        return writer

    def file_table(self) -> dict[str, dict[str, Any]]:
        """``{relative path: {"blake3", "size"}}`` of every file written so far; refuses
        links, special files and a file named like the manifest."""
        for writer in self._writers:
            writer.close()
            rel = writer.path.relative_to(self.path).as_posix()
            self._digests[rel] = (writer.digest, writer.size)
        manifest = self.store.kind.manifest
        table: dict[str, dict[str, Any]] = {}
        for root, dirs, files in os.walk(self.path):
            dirs.sort()
            for entry in sorted(files) + [d for d in dirs if os.path.islink(Path(root, d))]:
                full = Path(root, entry)
                rel = full.relative_to(self.path).as_posix()
                if rel == manifest:
                    raise InvalidArgument(
                        f"A {self.store.kind.noun} cannot hold a file named '{manifest}': "
                        "tiffin writes it. Rename that file.",
                        detail={"path": rel},
                    )
                if full.is_symlink() or not full.is_file():
                    raise InvalidArgument(
                        f"'{rel}' in the {self.store.kind.noun} being saved is not a regular file "
                        "(symbolic links and special files cannot be stored). Copy the file it "
                        "points to instead.",
                        detail={"path": rel},
                    )
                known = self._digests.get(rel)
                if known is None:
                    known = (file_digest(full, DEFAULT), full.stat().st_size)
                table[rel] = {DEFAULT: known[0], "size": known[1]}
        return table

    def commit(self, fields: Mapping[str, Any]) -> tuple[Tag, dict[str, Any]]:
        """Write the manifest and move the item into the store in one step.

        ``fields`` are the item-specific manifest entries; ``name``, ``version``,
        ``created_at``, ``size`` and ``files`` are filled in here.
        Returns the final tag and the manifest written.
        """
        files = self.file_table()
        kind = self.store.kind
        while True:
            manifest: dict[str, Any] = {
                "name": self.tag.name,
                "version": self.tag.version,
                "created_at": self.created_at.isoformat(),
                **fields,
                "size": sum(entry["size"] for entry in files.values()),
                "files": files,
            }
            manifest_path = self.path / kind.manifest
            manifest_path.write_text(dump_manifest(manifest), encoding="utf-8")
            if self.store.durable:
                for rel in files:
                    _fsync_path(self.path / rel)
                _fsync_path(manifest_path)
                _fsync_path(self.path)
            if not self.store.publish(self.path, self.tag):
                if not self._auto_version:
                    raise kind.exists(
                        f"{kind.noun.capitalize()} '{self.tag}' already exists. Save under "
                        f"another version, or delete it first with '{kind.command} delete "
                        f"{self.tag}'.",
                        detail={"tag": str(self.tag)},
                    ) from None
                self.created_at = datetime.now(UTC)
                self.tag = self.tag.with_version(new_version(self.created_at))
                continue
            self.path = self.store.path(self.tag)
            self._done = True
            return self.tag, manifest

    def discard(self) -> None:
        """Remove everything written so far."""
        for writer in self._writers:
            writer.close()
        if not self._done:
            shutil.rmtree(self.path, ignore_errors=True)
            self._done = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._done:
            self.discard()


class LocalStore:
    """Versioned items under ``root``, for one ``ItemKind``.

    Args:
        root: the store's directory, created on first write.
        kind: what the store holds.
        durable: fsync files and directories before an item becomes visible, so a power
            loss cannot leave a half-written item (slower; a process crash is safe either way).
    """

    def __init__(self, root: Path, kind: ItemKind, *, durable: bool = False) -> None:
        self.root = root
        self.kind = kind
        self.durable = durable

    # -- writing ---------------------------------------------------------------------

    def stage(self, name: str, version: str | None = None) -> Staging:
        """Start writing a new item. ``version`` is generated when not given."""
        if version == LATEST:
            raise InvalidArgument(
                f"'{LATEST}' cannot be used as a version: it always means the newest one. "
                "Choose another version or leave it out to have one generated.",
                detail={"version": version},
            )
        tag = Tag(name, version or new_version())
        if version is not None:
            self.check_not_alias(tag)
        return Staging(self, self.scratch(), tag, auto_version=version is None)

    def check_not_alias(self, tag: Tag) -> None:
        """Refuse to add the version ``tag`` when it is already an alias of that name,
        which would leave ``name:version`` meaning two things."""
        target = self.aliases(tag.name).get(str(tag.version))
        if target is not None:
            raise Conflict(
                f"'{tag}' is an alias of version '{target}', so it cannot be a version too. "
                f"Choose another version, or remove the alias first ('{self.kind.command} "
                f"alias {tag} --remove').",
                detail={"tag": str(tag), "alias_of": target},
            )

    def scratch(self) -> Path:
        """A new empty directory under ``.staging`` to build an item in."""
        staging_root = self.root / ".staging"
        staging_root.mkdir(parents=True, exist_ok=True)
        self.sweep()
        path = staging_root / _scratch_name()
        path.mkdir()
        return path

    def publish(self, staged: Path, tag: Tag) -> bool:
        """Rename a complete staged item into place in one step.

        Returns False, leaving ``staged`` where it is, when that version already exists.
        """
        parent = self.root / tag.name
        parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, parent / str(tag.version))
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                return False
            raise
        if self.durable:
            _fsync_path(parent)
        return True

    def sweep(self) -> None:
        """Remove staging and trash directories left by processes that no longer run."""
        for folder in (self.root / ".staging", self.root / ".trash"):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                pid_text = entry.name.split("-", 1)[0]
                if pid_text.isdigit() and not _pid_alive(int(pid_text)):
                    shutil.rmtree(entry, ignore_errors=True)

    # -- reading ---------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every name with at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if not entry.name.startswith(".") and entry.is_dir() and self._version_dirs(entry)
        )

    def _version_dirs(self, name_dir: Path) -> list[Path]:
        manifest = self.kind.manifest
        try:
            return [
                entry
                for entry in name_dir.iterdir()
                if not entry.name.startswith(".") and (entry / manifest).is_file()
            ]
        except FileNotFoundError:
            return []

    def versions(self, name: str) -> list[tuple[str, dict[str, Any]]]:
        """``(version, manifest)`` for every version of ``name``, oldest first."""
        Tag(name)
        found = []
        for entry in self._version_dirs(self.root / name):
            try:
                manifest = read_manifest(entry / self.kind.manifest)
            except FileNotFoundError:  # deleted while listing
                continue
            found.append((entry.name, manifest))
        found.sort(key=lambda item: (str(item[1].get("created_at", "")), item[0]))
        return found

    def items(self, name: str | None = None) -> Iterator[tuple[Tag, dict[str, Any]]]:
        """Every item (of one name, or all), by name then oldest first."""
        for each in [name] if name is not None else self.names():
            for version, manifest in self.versions(each):
                yield Tag(each, version), manifest

    def _not_found(self, tag: Tag, why: str | None = None) -> NotFound:
        kind = self.kind
        if not self._version_dirs(self.root / tag.name):
            message = (
                f"No {kind.noun} named '{tag.name}'. Run '{kind.command} list' to see saved "
                f"{kind.noun}s."
            )
        else:
            message = (
                f"{kind.noun.capitalize()} '{tag}' not found{why or ''}. Run "
                f"'{kind.command} list {tag.name}' to see saved versions."
            )
        return kind.not_found(message, detail={"tag": str(tag)})

    def resolve(self, tag: Tag | str) -> Tag:
        """The concrete ``name:version`` that ``tag`` means (``latest`` and aliases resolved)."""
        tag = Tag.parse(tag) if isinstance(tag, str) else tag
        if tag.is_latest:
            versions = self.versions(tag.name)
            if not versions:
                raise self._not_found(tag)
            return tag.with_version(versions[-1][0])
        assert tag.version is not None
        if (self.root / tag.name / tag.version / self.kind.manifest).is_file():
            return tag
        target = self.aliases(tag.name).get(tag.version)
        if target is None:
            raise self._not_found(tag)
        if not (self.root / tag.name / target / self.kind.manifest).is_file():
            raise self._not_found(
                tag, f": alias '{tag.version}' points to deleted version '{target}'"
            )
        return tag.with_version(target)

    def path(self, tag: Tag) -> Path:
        """The directory of a resolved tag."""
        return self.root / tag.name / str(tag.version)

    def manifest(self, tag: Tag) -> dict[str, Any]:
        """The manifest of a resolved tag."""
        try:
            return read_manifest(self.path(tag) / self.kind.manifest)
        except FileNotFoundError:
            raise self._not_found(tag) from None

    def damaged(self, tag: Tag, rel: str) -> IntegrityError:
        """The error for a file of a stored item that is missing or altered."""
        return IntegrityError(
            f"File '{rel}' of {self.kind.noun} '{tag}' is missing or does not match its "
            f"recorded digest. Delete it with '{self.kind.command} delete {tag}' and save or "
            "import it again.",
            detail={"tag": str(tag), "path": rel},
        )

    def verify(self, tag: Tag) -> None:
        """Check every file of a resolved item against the digest in its manifest, with
        the algorithm that entry records."""
        manifest = self.manifest(tag)
        base = self.path(tag)
        for rel, entry in manifest.get("files", {}).items():
            path = base / safe_relpath(rel)
            algorithm, expected = entry_digest(entry)
            if not path.is_file() or file_digest(path, algorithm) != expected:
                raise self.damaged(tag, rel)

    # -- aliases ---------------------------------------------------------------------

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` for a name."""
        folder = self.root / Tag(name).name / ".aliases"
        if not folder.is_dir():
            return {}
        found = {}
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            try:
                found[entry.name] = entry.read_text(encoding="utf-8").strip()
            except FileNotFoundError:
                continue
        return found

    def set_alias(self, tag: Tag | str, alias: str) -> Tag:
        """Point ``name:alias`` at the version ``tag`` resolves to; move it if it exists."""
        target = self.resolve(tag)
        alias_tag = Tag(target.name, alias)
        if alias == LATEST:
            raise InvalidArgument(
                f"'{LATEST}' cannot be an alias: it always means the newest version. "
                "Choose another alias name.",
                detail={"alias": alias},
            )
        if (self.path(alias_tag) / self.kind.manifest).is_file():
            raise InvalidArgument(
                f"'{alias}' is already a version of '{target.name}', so it cannot be an alias. "
                "Choose another alias name.",
                detail={"alias": alias},
            )
        folder = self.root / target.name / ".aliases"
        folder.mkdir(exist_ok=True)
        scratch = folder / f".{_scratch_name()}"
        scratch.write_text(f"{target.version}\n", encoding="utf-8")
        os.replace(scratch, folder / alias)
        return target

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove the alias ``name:alias``."""
        tag = Tag(name, alias)
        try:
            (self.root / name / ".aliases" / alias).unlink()
        except FileNotFoundError:
            raise self.kind.not_found(
                f"'{tag}' is not an alias. Run '{self.kind.command} alias {name}' to list "
                "its aliases.",
                detail={"tag": str(tag)},
            ) from None

    # -- deleting --------------------------------------------------------------------

    def check_delete(self, tag: Tag | str, *, force: bool = False) -> tuple[Tag, list[str]]:
        """What ``delete`` would remove: the resolved tag and the aliases pointing at it.
        Raises ``Conflict`` for an aliased version unless ``force``; changes nothing."""
        resolved = self.resolve(tag)
        pointing = [a for a, v in self.aliases(resolved.name).items() if v == resolved.version]
        if pointing and not force:
            names = ", ".join(f"'{resolved.name}:{a}'" for a in pointing)
            raise Conflict(
                f"{self.kind.noun.capitalize()} '{resolved}' is aliased as {names}. Move the "
                f"alias first ('{self.kind.command} alias <tag> {pointing[0]}'), or delete "
                "with --force to remove the aliases too.",
                detail={"tag": str(resolved), "aliases": pointing},
            )
        return resolved, pointing

    def delete(self, tag: Tag | str, *, force: bool = False) -> Tag:
        """Delete one version. An aliased version is kept unless ``force``, which also
        removes the aliases pointing at it."""
        resolved, pointing = self.check_delete(tag, force=force)
        for alias in pointing:
            (self.root / resolved.name / ".aliases" / alias).unlink(missing_ok=True)
        trash = self.root / ".trash"
        trash.mkdir(exist_ok=True)
        doomed = trash / _scratch_name()
        try:
            os.rename(self.path(resolved), doomed)
        except FileNotFoundError:
            raise self._not_found(resolved) from None
        shutil.rmtree(doomed, ignore_errors=True)
        name_dir = self.root / resolved.name
        if not self._version_dirs(name_dir):
            shutil.rmtree(name_dir / ".aliases", ignore_errors=True)
            with contextlib.suppress(OSError):  # a concurrent save just added a version
                name_dir.rmdir()
        return resolved
