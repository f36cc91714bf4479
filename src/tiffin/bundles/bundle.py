"""A built bundle (``Bundle``) and what ``bundle.yaml`` records about it (``BundleInfo``).

A bundle is a directory in the bundle store::

    bundle.yaml              this record: service, models pinned by version and sha256,
                             requirements, settings, versions, and every file's digest
    src/                     the service's source, as selected by include / exclude
    requirements.lock.txt    the Python requirements, pinned to exact versions
    container/Dockerfile     the image recipe (``tiffin containerize`` writes it afresh
                             with its options)
    container/setup.sh       the spec's setup script, when it has one
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tiffin.bundles.spec import ImageSpec, KubernetesSpec
from tiffin.models.model import FileEntry
from tiffin.tag import Tag

__all__ = [
    "DOCKERFILE",
    "LOCK_FILE",
    "SETUP_SCRIPT",
    "SOURCE_DIR",
    "Bundle",
    "BundleInfo",
    "ModelPin",
]

SOURCE_DIR = "src"
LOCK_FILE = "requirements.lock.txt"
DOCKERFILE = "container/Dockerfile"
SETUP_SCRIPT = "container/setup.sh"


class ModelPin(BaseModel):
    """A model the bundle serves: the exact version, and the sha256 of its file table
    (``tiffin.storage.local.files_digest``) when the bundle was built.

    Attributes:
        tag: ``name:version``.
        sha256: the digest the model must still have for the bundle to serve it.
        ref: the tag the service asks for (``iris:latest``), or None for a model named
            in the spec's ``models:``.
        attribute: the service attribute holding the reference (``model``), if any.
    """

    # validator built on first use: serving from source imports this module, not a bundle
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    tag: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    ref: str | None = None
    attribute: str | None = None


class BundleInfo(BaseModel):
    """The contents of ``bundle.yaml``.

    Attributes:
        service: the entry point, ``module:Class``, relative to ``src/``.
        service_name: the name ``@tiffin.service`` gives the service.
        digest: the content hash: equal for two builds of unchanged sources, models,
            requirements and spec, whatever their versions and creation times.
        apis, tasks: the names of the service's APIs and tasks.
        settings: the server settings resolved at build time (code, tiffin.yaml).
        envs: environment variables of the server.
        python: how requirements were given (``requirements``, ``file``, ``project``,
            ``imports``) and whether they were locked.
    """

    # validator built on first use, as ModelPin's
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    name: str
    version: str
    created_at: datetime
    service: str
    service_name: str
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    digest: str
    apis: list[str] = Field(default_factory=list)
    tasks: list[str] = Field(default_factory=list)
    models: list[ModelPin] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    envs: dict[str, str] = Field(default_factory=dict)
    python: dict[str, Any] = Field(default_factory=dict)
    image: ImageSpec = Field(default_factory=ImageSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    python_version: str
    tiffin_version: str
    size: int = Field(ge=0)
    files: dict[str, FileEntry]

    @property
    def tag(self) -> Tag:
        return Tag(self.name, self.version)


class Bundle:
    """A bundle in the store.

    Attributes:
        tag: its full ``name:version``.
        path: the directory holding it.
        info: what ``bundle.yaml`` records.

    Example:
        bundle = BundleStore.default().get("iris:latest")
        bundle.source        # the directory tiffin serve runs the service from
        bundle.info.models   # [ModelPin(tag='iris:2026...', sha256='...', ...)]
    """

    __slots__ = ("info", "path", "tag")

    def __init__(self, tag: Tag, path: Path, info: BundleInfo) -> None:
        self.tag = tag
        self.path = path
        self.info = info

    @property
    def source(self) -> Path:
        """The service's source directory inside the bundle."""
        return self.path / SOURCE_DIR

    @property
    def lock_file(self) -> Path:
        """The pinned requirements."""
        return self.path / LOCK_FILE

    @property
    def dockerfile(self) -> Path:
        """The Dockerfile written at build time (default containerize options)."""
        return self.path / DOCKERFILE

    @property
    def setup_script(self) -> Path | None:
        """The image setup script, if the spec named one."""
        path = self.path / SETUP_SCRIPT
        return path if path.is_file() else None

    def to_dict(self) -> dict[str, Any]:
        """What ``tiffin bundles get --output json`` prints."""
        return {"tag": str(self.tag), "path": str(self.path), **self.info.model_dump(mode="json")}

    def __repr__(self) -> str:
        return f'Bundle(tag="{self.tag}")'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bundle) and (self.tag, self.path) == (other.tag, other.path)

    def __hash__(self) -> int:
        return hash((self.tag, self.path))
