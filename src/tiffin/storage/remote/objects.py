"""A remote store that is a tree of objects: a shared directory (``file:///mnt/models``,
for NFS and tests) or object storage through fsspec (``s3://bucket/prefix``, and
``gs://``, ``az://`` ... when their package is installed).

Layout under the URL's path::

    chunks/<ab>/<sha256>                     a chunk's bytes, named by their sha256
    files/<ab>/<digest>.json                 a stored file's chunk list, named by the
                                             digest its manifest entry records
    <kind>s/<name>/versions/<version>.json   a version's record (manifest, who, when)
    <kind>s/<name>/aliases/<alias>           {"version": ...}: where the alias points

Every object is written whole in one step: a temporary file renamed into place in a
directory, a single PUT in object storage. A record is created only if absent (a hard
link in a directory, ``If-None-Match: *`` in S3), so two clients pushing the same version
cannot both win; an alias is replaced in one write, so readers see the old target or the
new one. S3 credentials, region and endpoint come from the usual AWS settings
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_S3`` for MinIO, Ceph or another S3-compatible server).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tiffin.exceptions import ConfigError, IntegrityError, TiffinError, describe
from tiffin.extras import import_optional
from tiffin.storage.remote.store import ChunkList, Record, RemoteStore, who

__all__ = ["ObjectStore"]

_KIND = re.compile(r"[a-z][a-z0-9_]*")

# scheme -> (the fsspec implementation's package, the tiffin extra installing it)
_PACKAGES = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}
# what to set when credentials are missing or refused, by scheme
_CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and "
    "AWS_ENDPOINT_URL_S3 for an S3-compatible server other than AWS",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS to a service account key file",
    "az": "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME and "
    "AZURE_STORAGE_ACCOUNT_KEY",
}


class _Tree(ABC):
    """Whole objects under a root, by POSIX key."""

    @abstractmethod
    def where(self, key: str) -> str:
        """The object's address, for messages."""

    @abstractmethod
    def read(self, key: str) -> bytes | None: ...

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for key in keys:
            data = self.read(key)
            if data is not None:
                found[key] = data
        return found

    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Replace the object in one step."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write the object in one step only if it is absent; False when it exists."""

    @abstractmethod
    def size(self, key: str) -> int | None: ...

    @abstractmethod
    def children(self, key: str) -> list[str]:
        """Names directly under ``key``, sorted; none when it does not exist."""

    @abstractmethod
    def remove(self, key: str) -> bool: ...


class _Directory(_Tree):
    """A local or network-mounted directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def where(self, key: str) -> str:
        return str(self.root / key)

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _scratch(self, key: str, data: bytes) -> tuple[Path, Path]:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        with open(scratch, "xb") as out:
            out.write(data)
        return target, scratch

    def write(self, key: str, data: bytes) -> None:
        target, scratch = self._scratch(key, data)
        try:
            os.replace(scratch, target)
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise

    def create(self, key: str, data: bytes) -> bool:
        target, scratch = self._scratch(key, data)
        try:
            os.link(scratch, target)  # fails if the target exists, on NFS too
        except FileExistsError:
            return False
        finally:
            scratch.unlink(missing_ok=True)
        return True

    def size(self, key: str) -> int | None:
        try:
            return (self.root / key).stat().st_size
        except (FileNotFoundError, NotADirectoryError):
            return None

    def children(self, key: str) -> list[str]:
        try:
            return sorted(e.name for e in (self.root / key).iterdir() if not e.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def remove(self, key: str) -> bool:
        try:
            (self.root / key).unlink()
        except FileNotFoundError:
            return False
        return True


class _Objects(_Tree):
    """Objects in a bucket through an fsspec filesystem."""

    def __init__(self, fs: Any, root: str, url: str, scheme: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.url = url
        self.scheme = {"s3a": "s3", "gcs": "gs", "abfs": "az", "abfss": "az"}.get(scheme, scheme)

    def where(self, key: str) -> str:
        return f"{self.scheme}://{self.root}/{key}"

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    @contextlib.contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Turn the filesystem's errors into tiffin's, with what to set or check."""
        try:
            yield
        except TiffinError:
            raise
        except Exception as exc:
            raise self.translate(exc, action) from exc

    def translate(self, exc: Exception, action: str) -> TiffinError:
        names = {cls.__name__ for cls in type(exc).__mro__}
        settings = _CREDENTIALS.get(self.scheme, "the credentials of the storage service")
        detail = {"url": self.url, "reason": describe(exc)}
        if names & {"NoCredentialsError", "PartialCredentialsError", "DefaultCredentialsError"}:
            return ConfigError(
                f"No credentials to {action} {self.url}. Set {settings}.", detail=detail
            )
        if isinstance(exc, PermissionError):
            return ConfigError(
                f"{self.url} refused to {action} ({describe(exc)}): the credentials are wrong "
                f"or lack permission. Check {settings}.",
                detail=detail,
            )
        if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError"} or (
            isinstance(exc, ConnectionError)
        ):
            return ConfigError(
                f"Cannot reach the storage service to {action} {self.url} ({describe(exc)}). "
                "Check the network and the endpoint (AWS_ENDPOINT_URL_S3 for an S3-compatible "
                "server).",
                detail=detail,
            )
        return TiffinError(
            f"Could not {action} {self.url}: {describe(exc)}. Check the store and try again; "
            "a push or pull that was interrupted resumes where it stopped.",
            detail=detail,
        )

    def check(self) -> None:
        """Fail now, with advice, when the credentials or the bucket are wrong."""
        bucket = self.root.split("/", 1)[0]
        with self.errors("open"):
            try:
                self.fs.info(bucket)
                return
            except FileNotFoundError:
                pass
        raise ConfigError(
            f"The bucket '{bucket}' of {self.url} does not exist. Create it (e.g. 'aws s3 mb "
            f"{self.scheme}://{bucket}') or fix the URL.",
            detail={"url": self.url, "bucket": bucket},
        )

    def read(self, key: str) -> bytes | None:
        with self.errors("read from"):
            try:
                data: bytes = self.fs.cat_file(self._path(key))
            except FileNotFoundError:
                return None
        return data

    def read_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if not keys:
            return {}
        paths = {self._path(key): key for key in keys}
        with self.errors("read from"):
            found = self.fs.cat(list(paths), on_error="omit")
        return {paths[path]: data for path, data in found.items() if path in paths}

    def write(self, key: str, data: bytes) -> None:
        with self.errors("write to"):
            self.fs.pipe_file(self._path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        with self.errors("write to"):
            try:
                self.fs.pipe_file(self._path(key), data, mode="create")
            except FileExistsError:
                return False
            except OSError as exc:  # S3-compatible servers answer 412 without the condition
                if exc.errno == errno.EINVAL and "condition" in str(exc).lower():
                    return False
                raise
        return True

    def size(self, key: str) -> int | None:
        with self.errors("read from"):
            try:
                return int(self.fs.info(self._path(key))["size"])
            except FileNotFoundError:
                return None

    def children(self, key: str) -> list[str]:
        with self.errors("list"):
            try:
                found = self.fs.ls(self._path(key), detail=False)
            except FileNotFoundError:
                return []
        prefix = self._path(key).rstrip("/") + "/"
        return sorted(
            {
                path.rstrip("/")[len(prefix) :]
                for path in found
                if path.startswith(prefix) and path.rstrip("/") != prefix.rstrip("/")
            }
        )

    def remove(self, key: str) -> bool:
        if self.size(key) is None:
            return False
        with self.errors("delete from"):
            try:
                self.fs.rm_file(self._path(key))
            except FileNotFoundError:
                return False
        return True


def _directory(url: str) -> Path:
    if "://" not in url:
        return Path(url).expanduser().resolve()
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
        raise ConfigError(
            f"{url} is not a file URL of an absolute path. Write it as file:///absolute/path "
            "(three slashes).",
            detail={"url": url},
        )
    return Path(unquote(parts.path))


def _filesystem(url: str, scheme: str) -> tuple[Any, str]:
    package, extra = _PACKAGES.get(scheme, ("fsspec", "s3"))
    purpose = f"to use {scheme}:// remote stores"
    fsspec = import_optional("fsspec", extra, purpose=purpose)
    import_optional(package, extra, purpose=purpose)
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if scheme in ("s3", "s3a"):
        options["config_kwargs"] = {
            "connect_timeout": 10,
            "read_timeout": 120,
            "retries": {"max_attempts": 3, "mode": "standard"},
        }
    fs, root = fsspec.core.url_to_fs(url, **options)
    if not root.strip("/"):
        raise ConfigError(
            f"{url} names no bucket. Write it as {scheme}://bucket or {scheme}://bucket/prefix.",
            detail={"url": url},
        )
    return fs, str(root)


class ObjectStore(RemoteStore):
    """Items in a directory or an object store; see the module docstring for the layout.

    Example:
        remote = ObjectStore.from_url("s3://team-models/prod")
        remote.names("model")
    """

    schemes = ("file", *_PACKAGES)

    def __init__(self, url: str, tree: _Tree, **options: Any) -> None:
        super().__init__(url, **options)
        self._tree = tree

    @classmethod
    def from_url(cls, url: str) -> ObjectStore:
        bare, options = cls.options(url)
        if "artifacts" in options:
            raise ConfigError(
                f"'artifacts=' applies to a database registry (sqlite://, postgresql://), not "
                f"to {url}, which keeps its own artifacts. Remove the option.",
                detail={"url": url},
            )
        scheme = bare.split("://", 1)[0].lower() if "://" in bare else "file"
        tree: _Tree
        if scheme == "file":
            tree = _Directory(_directory(bare))
        else:
            fs, root = _filesystem(bare, scheme)
            tree = _Objects(fs, root, bare, scheme)
            tree.check()
        return cls(bare, tree, **options)

    # -- keys --------------------------------------------------------------------------

    @staticmethod
    def chunk_key(digest: str) -> str:
        return f"chunks/{digest[:2]}/{digest}"

    @staticmethod
    def list_key(digest: str) -> str:
        return f"files/{digest[:2]}/{digest}.json"

    @staticmethod
    def _items(kind: str) -> str:
        if not _KIND.fullmatch(kind):
            raise ValueError(f"{kind!r} is not an item kind")
        return f"{kind}s"

    def record_key(self, kind: str, name: str, version: str) -> str:
        return f"{self._items(kind)}/{name}/versions/{version}.json"

    def alias_key(self, kind: str, name: str, alias: str) -> str:
        return f"{self._items(kind)}/{name}/aliases/{alias}"

    # -- chunks ------------------------------------------------------------------------

    def has_chunk(self, digest: str, size: int) -> bool:
        return self._tree.size(self.chunk_key(digest)) == size

    def put_chunk(self, digest: str, data: bytes) -> None:
        self._tree.write(self.chunk_key(digest), data)

    def get_chunk(self, digest: str) -> bytes:
        key = self.chunk_key(digest)
        data = self._tree.read(key)
        if data is None:
            raise IntegrityError(
                f"Chunk {self._tree.where(key)} is missing from {self.url}. Push the item "
                "again from a machine that has it.",
                detail={"url": self.url, "chunk": digest},
            )
        return data

    def chunk_list(self, digest: str) -> ChunkList | None:
        key = self.list_key(digest)
        data = self._tree.read(key)
        return None if data is None else ChunkList.from_json(data, self._tree.where(key))

    def put_chunk_list(self, digest: str, chunks: ChunkList) -> None:
        self._tree.write(self.list_key(digest), chunks.to_json())

    # -- the index ---------------------------------------------------------------------

    def names(self, kind: str) -> list[str]:
        return self._tree.children(self._items(kind))

    def records(self, kind: str, name: str) -> list[Record]:
        folder = f"{self._items(kind)}/{name}/versions"
        keys = [f"{folder}/{entry}" for entry in self._tree.children(folder)]
        found = self._tree.read_many([k for k in keys if k.endswith(".json")])
        return [Record.from_json(data, self._tree.where(key)) for key, data in found.items()]

    def record(self, kind: str, name: str, version: str) -> Record | None:
        key = self.record_key(kind, name, version)
        data = self._tree.read(key)
        return None if data is None else Record.from_json(data, self._tree.where(key))

    def add_record(self, kind: str, record: Record) -> bool:
        return self._tree.create(
            self.record_key(kind, record.name, record.version), record.to_json()
        )

    def aliases(self, kind: str, name: str) -> dict[str, str]:
        folder = f"{self._items(kind)}/{name}/aliases"
        keys = [f"{folder}/{entry}" for entry in self._tree.children(folder)]
        found = {}
        for key, data in self._tree.read_many(keys).items():
            try:
                found[key.rsplit("/", 1)[1]] = str(json.loads(data)["version"])
            except (ValueError, KeyError, TypeError):
                raise IntegrityError(
                    f"The alias {self._tree.where(key)} is damaged. Set it again with "
                    f"'tiffin {kind}s alias NAME:VERSION ALIAS --remote {self.url}'.",
                    detail={"url": self.url, "alias": key},
                ) from None
        return dict(sorted(found.items()))

    def set_alias(self, kind: str, name: str, alias: str, version: str) -> None:
        body = {"version": version, "by": who(), "at": datetime.now(UTC).isoformat()}
        self._tree.write(self.alias_key(kind, name, alias), json.dumps(body).encode())

    def remove_alias(self, kind: str, name: str, alias: str) -> bool:
        return self._tree.remove(self.alias_key(kind, name, alias))
