"""A saved model (``Model``) and what ``model.yaml`` records about it (``ModelInfo``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from tiffin.exceptions import FrameworkError, MissingDependency, TiffinError, describe
from tiffin.models import frameworks
from tiffin.storage.digest import entry_digest
from tiffin.tag import Tag

__all__ = ["FileEntry", "FrameworkInfo", "Model", "ModelInfo", "Signature"]


class FileEntry(BaseModel):
    """One stored file: its digest and size in bytes. The digest is BLAKE3 (``blake3``);
    models saved before BLAKE3 record ``sha256`` instead. An entry has exactly one, and
    dumps only the one it has, as the manifest holds it.

    Example:
        entry = model.info.files["model.pkl"]
        entry.algorithm, entry.digest, entry.size   # ("blake3", "9f2c...", 1024)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    blake3: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)

    @model_validator(mode="before")
    @classmethod
    def _one_digest(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            entry_digest(data)  # the ValueError names what is wrong
        return data

    @model_serializer(mode="wrap")
    def _without_absent_digest(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}

    @property
    def algorithm(self) -> str:
        """``"blake3"``, or ``"sha256"`` for a file saved before BLAKE3."""
        return "sha256" if self.blake3 is None else "blake3"

    @property
    def digest(self) -> str:
        """The file's hex digest, of ``algorithm``."""
        digest = self.blake3 or self.sha256
        assert digest is not None
        return digest


class FrameworkInfo(BaseModel):
    """Which handler saved the model, the framework's version, and the handler's options."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class Signature(BaseModel):
    """How a model method may be called: whether calls can be batched, and along which axis."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batchable: bool = False
    batch_dim: int = 0


class ModelInfo(BaseModel):
    """The contents of ``model.yaml``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    version: str
    created_at: datetime
    framework: FrameworkInfo
    python_version: str
    tiffin_version: str
    signatures: dict[str, Signature] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    size: int = Field(ge=0)
    files: dict[str, FileEntry]

    @property
    def tag(self) -> Tag:
        return Tag(self.name, self.version)


class Model:
    """A model in the store.

    Attributes:
        tag: its full ``name:version``.
        path: the directory holding its files.
        info: what ``model.yaml`` records.

    Example:
        model = tiffin.models.get("iris:latest")
        clf = model.load()
        model.info.metadata["acc"]
    """

    __slots__ = ("info", "path", "tag")

    def __init__(self, tag: Tag, path: Path, info: ModelInfo) -> None:
        self.tag = tag
        self.path = path
        self.info = info

    @property
    def framework(self) -> frameworks.Framework:
        """The handler that saved this model (``MissingDependency`` if its plugin is gone)."""
        name = self.info.framework.name
        if name not in frameworks.available():
            raise MissingDependency(
                f"Model '{self.tag}' was saved with the '{name}' framework, which no installed "
                f"package provides. Install the plugin that registers '{name}' under the "
                f"'{frameworks.ENTRY_POINT_GROUP}' entry point group.",
                detail={"framework": name, "tag": str(self.tag)},
            )
        return frameworks.get(name)

    def load(self, **kwargs: Any) -> Any:
        """Load the model object; ``kwargs`` go to the framework (e.g. ``providers=`` for ONNX).
        The time each load takes is on ``/metrics`` as ``tiffin_model_load_seconds``."""
        handler = self.framework
        started = time.perf_counter()
        try:
            loaded = handler.load(self.path, self.info.framework.options, **kwargs)
        except TiffinError:
            raise
        except Exception as exc:
            raise FrameworkError(
                f"The '{handler.name}' framework could not load model '{self.tag}': "
                f"{describe(exc)}. Check it with 'tiffin models get {self.tag}' "
                "(framework versions) and 'tiffin models verify', or save it again.",
                detail={"framework": handler.name, "tag": str(self.tag)},
            ) from exc
        # Imported on first load, not with this module: prometheus_client takes ~45 ms to
        # import, which a script that only saves models should not pay.
        from tiffin.observability.metrics import model_loaded

        model_loaded(self.info.name, self.info.version, time.perf_counter() - started)
        return loaded

    def to_dict(self) -> dict[str, Any]:
        """What ``tiffin models get --output json`` prints."""
        return {"tag": str(self.tag), "path": str(self.path), **self.info.model_dump(mode="json")}

    def __repr__(self) -> str:
        return f'Model(tag="{self.tag}")'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and (self.tag, self.path) == (other.tag, other.path)

    def __hash__(self) -> int:
        return hash((self.tag, self.path))
