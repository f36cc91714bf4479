"""The build spec: what ``tiffin build`` puts in a bundle, read from ``tiffin.yaml``
(top-level keys) or ``[tool.tiffin]`` in ``pyproject.toml``.

    service: service:Iris               # the entry point, module:Class (required)
    name: iris                          # default: the service's name
    description: Classifies iris flowers # default: the service class's docstring
    labels: {team: vision}
    include: ["**"]                     # globs, relative to the project directory
    exclude: ["data/", "*.ipynb"]       # on top of the defaults (.git, .venv, caches, ...)
    python:
      requirements: [scikit-learn>=1.3] # or requirements_file: requirements.txt,
                                        # or project: true (pyproject's dependencies);
                                        # none: found from the source's imports
      lock: true                        # pin exact versions from this environment
    envs: {OMP_NUM_THREADS: "1"}        # environment of the server, in the image too
    image:
      base: python:3.11-slim
      system_packages: [libgomp1]
      setup_script: setup.sh            # run as root while the image is built
    kubernetes: {replicas: 2, cpu: "1", memory: 1Gi}
    models: ["tokenizer:v3"]            # more models than the service's tiffin.models.ref()s
    settings: {timeout: 10}             # server settings (see tiffin.config)

A key the spec does not know, or a value of the wrong type, is an error naming the key
and the file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tiffin.config import project_file
from tiffin.exceptions import ConfigError

__all__ = [
    "DEFAULT_EXCLUDE",
    "BuildSpec",
    "ImageSpec",
    "KubernetesSpec",
    "PythonSpec",
    "default_base_image",
    "load_spec",
]

DEFAULT_EXCLUDE = (
    ".git/",
    ".hg/",
    ".svn/",
    ".venv/",
    "venv/",
    "env/",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".tox/",
    ".nox/",
    "*.egg-info/",
    ".ipynb_checkpoints/",
    "node_modules/",
    ".DS_Store",
    ".tiffin/",
)
"""Never bundled, whatever ``include`` says; a trailing ``/`` means a directory anywhere."""


def default_base_image() -> str:
    """The slim official image of the Python running tiffin, e.g. ``python:3.11-slim``."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


class _Strict(BaseModel):
    # validators built on first use (defer_build): serving from source, which imports
    # this module, never validates a bundle's build spec
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class PythonSpec(_Strict):
    """The Python packages the bundle needs.

    Attributes:
        requirements: requirement strings (``scikit-learn>=1.3``).
        requirements_file: a requirements file, relative to the project directory.
        project: use the ``[project] dependencies`` of the project's ``pyproject.toml``.
        lock: pin each requirement, and what it depends on, to the version installed in
            the environment running ``tiffin build``; off, the requirements are kept as
            written.
        index_url, extra_index_urls: package indexes for ``pip install`` in the image.
    """

    requirements: list[str] = Field(default_factory=list)
    requirements_file: str | None = None
    project: bool = False
    lock: bool = True
    index_url: str | None = None
    extra_index_urls: list[str] = Field(default_factory=list)


class ImageSpec(_Strict):
    """How the container image is made.

    Attributes:
        base: the base image; a Debian-based image with Python 3 (and its ``venv``
            module) installed. Default: the official slim image of this Python.
        python: the interpreter in the base image that makes the image's virtual env.
        system_packages: Debian packages installed with apt-get.
        setup_script: a shell script, relative to the project directory, run as root
            after the system packages.
    """

    base: str = Field(default_factory=default_base_image)
    python: str = "python3"
    system_packages: list[str] = Field(default_factory=list)
    setup_script: str | None = None


class KubernetesSpec(_Strict):
    """Defaults for ``tiffin deploy kubernetes``; each can be overridden on the command line.

    Attributes:
        namespace: the namespace written into the manifests (none: the kubectl context's).
        image: the image reference the Deployment runs (default: the bundle's
            ``name:version``, as ``tiffin containerize`` tags it).
        replicas: pods when no autoscaler runs (``max_replicas`` equal to ``min_replicas``).
        min_replicas, max_replicas: the HorizontalPodAutoscaler's range.
        target_cpu: average CPU use, in percent of the request, the autoscaler keeps.
        cpu, memory: the container's requests; limits: ``cpu_limit`` (none: no CPU
            limit, so a pod is never throttled) and ``memory_limit`` (default ``memory``).
        min_available: pods the PodDisruptionBudget keeps during voluntary disruptions.
        service_type: the Service's type (ClusterIP, NodePort, LoadBalancer).
        env: environment variables of the container, on top of the bundle's ``envs``.
    """

    namespace: str | None = None
    image: str | None = None
    replicas: int = Field(default=1, ge=1)
    min_replicas: int | None = Field(default=None, ge=1)
    max_replicas: int | None = Field(default=None, ge=1)
    target_cpu: int = Field(default=70, ge=1, le=100)
    cpu: str = "500m"
    memory: str = "512Mi"
    cpu_limit: str | None = None
    memory_limit: str | None = None
    min_available: int = Field(default=1, ge=0)
    service_type: str = "ClusterIP"
    env: dict[str, str] = Field(default_factory=dict)


class BuildSpec(_Strict):
    """Everything ``tiffin build`` reads from the project; see the module docstring."""

    service: str
    name: str | None = None
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    include: list[str] = Field(default_factory=lambda: ["**"])
    exclude: list[str] = Field(default_factory=list)
    python: PythonSpec = Field(default_factory=PythonSpec)
    envs: dict[str, str] = Field(default_factory=dict)
    image: ImageSpec = Field(default_factory=ImageSpec)
    kubernetes: KubernetesSpec = Field(default_factory=KubernetesSpec)
    models: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


def load_spec(directory: Path, *, service: str | None = None) -> BuildSpec:
    """Read the build spec of the project in ``directory``.

    Args:
        directory: the project directory.
        service: the entry point, overriding the file's ``service:``.

    Raises:
        ConfigError: the file cannot be parsed, names a key the spec does not know, holds
            a value of the wrong type, or no service is named anywhere.
    """
    data, path = project_file(directory)
    if path is None:
        where = f"{directory} (no tiffin.yaml or pyproject.toml)"
    else:
        where = str(path) if path.name == "tiffin.yaml" else f"{path} [tool.tiffin]"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} must hold a mapping of build keys, not {type(data).__name__}.",
            detail={"source": where},
        )
    if service is not None:
        data = {**data, "service": service}
    if not data.get("service"):
        raise ConfigError(
            f"No service to build in {where}. Name it with 'service: module:Class' in "
            "tiffin.yaml (e.g. 'service: service:Iris'), or pass it: 'tiffin build service:Iris'.",
            detail={"source": where, "key": "service"},
        )
    try:
        return BuildSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(root)"
        if first["type"] == "extra_forbidden":
            parent = first["loc"][:-1]
            model: type[BaseModel] = BuildSpec
            for part in parent:
                annotation = model.model_fields[str(part)].annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                    model = annotation
            known = ", ".join(sorted(model.model_fields))
            message = f"Unknown build key '{key}' in {where}. Known keys here: {known}."
        else:
            message = (
                f"Bad value for build key '{key}' in {where}: {first['msg']}. Fix it in {where}."
            )
        raise ConfigError(
            message, detail={"key": key, "source": where, "problem": first["msg"]}
        ) from None
