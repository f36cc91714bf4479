"""The model store: save trained models with versions, find them, and load them back.

The functions here act on the store in ``$TIFFIN_HOME`` (default ``~/.tiffin``); build
a ``ModelStore`` to use another directory.

Example:
    model = tiffin.models.save("iris", clf, metadata={"acc": 0.97})
    tiffin.models.get("iris:latest").load().predict(X)
    tiffin.models.alias(model.tag, "production")
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiffin import config as _config
from tiffin.exceptions import ConfigError as _ConfigError
from tiffin.models.frameworks import Framework
from tiffin.models.model import FileEntry, FrameworkInfo, Model, ModelInfo, Signature
from tiffin.models.store import ModelBuilder, ModelRef, ModelStore

if TYPE_CHECKING:  # annotations only: Tag is exported as tiffin.Tag, not tiffin.models.Tag
    from tiffin.storage.remote import ItemProgress, RemoteStore, Transfer
    from tiffin.tag import Tag

__all__ = [
    "FileEntry",
    "Framework",
    "FrameworkInfo",
    "Model",
    "ModelBuilder",
    "ModelInfo",
    "ModelRef",
    "ModelStore",
    "Signature",
    "alias",
    "aliases",
    "create",
    "delete",
    "export",
    "get",
    "import_",
    "list",
    "pull",
    "push",
    "ref",
    "save",
    "unalias",
]


def save(
    name: str,
    obj: Any,
    *,
    framework: str | Framework | None = None,
    metadata: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    signatures: Mapping[str, Mapping[str, Any] | Signature] | builtins.list[str] | None = None,
) -> Model:
    """Save ``obj`` as a new version of ``name``; see ``ModelStore.save``.

    Example:
        tiffin.models.save("iris", clf, metadata={"acc": 0.97})  # Model(tag="iris:2026...")
    """
    return ModelStore.default().save(
        name, obj, framework=framework, metadata=metadata, labels=labels, signatures=signatures
    )


def create(
    name: str,
    *,
    framework: str | Framework = "files",
    metadata: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    signatures: Mapping[str, Mapping[str, Any] | Signature] | builtins.list[str] | None = None,
) -> ModelBuilder:
    """Save a model that is a directory of files; see ``ModelStore.create``.

    Example:
        with tiffin.models.create("tokenizer") as m:
            (m.path / "vocab.txt").write_text(vocab)
    """
    return ModelStore.default().create(
        name, framework=framework, metadata=metadata, labels=labels, signatures=signatures
    )


def get(tag: str | Tag) -> Model:
    """The model ``tag`` means (``name``, ``name:latest``, ``name:version``, ``name:alias``)."""
    return ModelStore.default().get(tag)


def list(
    name: str | None = None, *, labels: Mapping[str, str] | None = None
) -> builtins.list[Model]:
    """Saved models, optionally only ``name``'s and those carrying every label given."""
    return ModelStore.default().list(name, labels=labels)


def delete(tag: str | Tag, *, force: bool = False) -> Tag:
    """Delete one model version; ``force`` also removes aliases that point to it."""
    return ModelStore.default().delete(tag, force=force)


def alias(tag: str | Tag, alias: str) -> Tag:
    """Point ``name:alias`` at the version ``tag`` means, moving the alias if it exists."""
    return ModelStore.default().alias(tag, alias)


def unalias(name: str, alias: str) -> None:
    """Remove the alias ``name:alias``."""
    ModelStore.default().unalias(name, alias)


def aliases(name: str) -> dict[str, str]:
    """``{alias: version}`` for a model name."""
    return ModelStore.default().aliases(name)


def export(
    tag: str | Tag, dest: Path | str, *, progress: Callable[[int], None] | None = None
) -> Path:
    """Write a model to one archive file (``.tar``, or gzip-compressed ``.tar.gz``)."""
    return ModelStore.default().export(tag, dest, progress=progress)


def import_(source: Path | str, *, progress: Callable[[int], None] | None = None) -> Model:
    """Import a model archive written by ``export``; unsafe or corrupt archives are refused."""
    return ModelStore.default().import_(source, progress=progress)


def _remote(remote: str | RemoteStore | None, verb: str) -> str | RemoteStore:
    if remote is None:
        remote = _config.current().remote
    if not remote:
        raise _ConfigError(
            f"No remote store to {verb}. Pass one, e.g. remote='s3://bucket/models', or set "
            "TIFFIN_REMOTE (the 'remote' setting).",
            detail={"setting": "remote"},
        )
    return remote


def push(
    tag: str | Tag,
    remote: str | RemoteStore | None = None,
    *,
    progress: ItemProgress | None = None,
) -> Transfer:
    """Copy a model to a remote store (default: the ``remote`` setting, TIFFIN_REMOTE);
    see ``ModelStore.push``.

    Example:
        tiffin.models.push("iris:latest", "s3://team-models/prod")
    """
    return ModelStore.default().push(tag, _remote(remote, "push to"), progress=progress)


def pull(
    tag: str | Tag,
    remote: str | RemoteStore | None = None,
    *,
    progress: ItemProgress | None = None,
) -> Model:
    """Copy a model from a remote store (default: the ``remote`` setting) into the local
    store, verified, and return it; see ``ModelStore.pull``.

    Example:
        tiffin.models.pull("iris:production", "s3://team-models/prod").load()
    """
    store = ModelStore.default()
    return store.get(store.pull(tag, _remote(remote, "pull from"), progress=progress).tag)


def ref(tag: str) -> ModelRef:
    """A lazy reference to a model, resolved when first used; services declare models with it.

    Example:
        class Iris:
            model = tiffin.models.ref("iris:latest")
    """
    return ModelRef(tag)
