"""``tiffin build``: a project directory in, a bundle in the bundle store out.

The steps, each of which can refuse with an error naming what to fix:

1. Read the build spec (``tiffin.bundles.spec``) and import the service, as
   ``tiffin serve`` would: a service that cannot be imported cannot be bundled.
2. Pin the models: every ``tiffin.models.ref(...)`` of the service (and of services it
   depends on in-process) and every tag in the spec's ``models:`` is resolved to one
   exact version, recorded with the sha256 of its file table.
3. Select the source with ``include`` / ``exclude`` (plus the default excludes).
4. Lock the Python requirements: the spec's (a list, a file, or the project's
   dependencies) or, when it names none, the installed distributions that the source
   imports; plus what the models' frameworks need and tiffin's own dependencies; then
   each one, and everything it depends on, pinned to the version installed here.
5. Write it all under the store's staging directory, with ``bundle.yaml`` and the
   Dockerfile, and publish it in one rename.

The bundle's ``digest`` covers the source, the lock file, the setup script, the models'
digests and the spec, not versions or times: two builds of unchanged inputs have the
same digest.
"""

from __future__ import annotations

import ast
import fnmatch
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
import tomllib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from tiffin import config
from tiffin.bundles.bundle import (
    DOCKERFILE,
    LOCK_FILE,
    SETUP_SCRIPT,
    SOURCE_DIR,
    Bundle,
    BundleInfo,
    ModelPin,
)
from tiffin.bundles.spec import DEFAULT_EXCLUDE, BuildSpec, load_spec
from tiffin.bundles.store import BundleStore
from tiffin.exceptions import ConfigError, ModelNotFound
from tiffin.models import Model, ModelStore
from tiffin.models.frameworks import available as available_frameworks
from tiffin.models.frameworks import get as get_framework
from tiffin.service import ServiceSpec
from tiffin.service.loader import load_service
from tiffin.storage.local import files_digest
from tiffin.tag import Tag

__all__ = ["build", "lock_requirements", "select_files"]

_SETTINGS_NOT_RECORDED = frozenset({"home", "debug", "service"})


def _glob(pattern: str) -> re.Pattern[str]:
    """A gitignore-like glob as a regex over a POSIX relative path: ``*`` stays within
    one directory, ``**`` crosses any number of them."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


class _Matcher:
    """Matches relative paths against globs. A pattern with no ``/`` matches a file's
    name at any depth; one ending in ``/`` matches a directory at any depth (and
    everything in it); any other pattern matches the whole path from the project root."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.names: list[str] = []
        self.dirs: list[str] = []
        self.paths: list[re.Pattern[str]] = []
        for given in patterns:
            pattern = given.strip().removeprefix("./")
            if not pattern:
                continue
            if pattern.endswith("/") and "/" not in pattern[:-1]:
                self.dirs.append(pattern[:-1])
            elif "/" not in pattern:
                self.names.append(pattern)
            else:
                self.paths.append(_glob(pattern.rstrip("/")))

    def directory(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return (
            any(fnmatch.fnmatchcase(name, d) for d in self.dirs)
            or any(fnmatch.fnmatchcase(name, n) for n in self.names)
            or any(p.fullmatch(rel) for p in self.paths)
        )

    def file(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(name, n) for n in self.names) or any(
            p.fullmatch(rel) for p in self.paths
        )


def select_files(directory: Path, include: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """The files under ``directory`` that ``include`` selects and neither the default
    excludes nor ``exclude`` drop, as sorted POSIX relative paths.

    Example:
        select_files(Path("."), ["**"], ["data/"])  # ['service.py', 'tiffin.yaml', ...]
    """
    keep = _Matcher(include)
    drop = _Matcher([*DEFAULT_EXCLUDE, *exclude])
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        base = Path(root).relative_to(directory).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if not drop.directory(prefix + d))
        for name in sorted(files):
            rel = prefix + name
            if not drop.file(rel) and keep.file(rel):
                found.append(rel)
    return sorted(found)


# -- requirements --------------------------------------------------------------------


def _marker_environment() -> dict[str, str]:
    return {key: str(value) for key, value in default_environment().items()}


def _requirement(text: str, where: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise ConfigError(
            f"'{text}' in {where} is not a valid Python requirement ({exc}). Write it as "
            "'name', 'name>=1.2' or 'name[extra]==1.2'.",
            detail={"requirement": text, "source": where},
        ) from None


def lock_requirements(requirements: Iterable[str], *, where: str = "the requirements") -> list[str]:
    """Each requirement and everything it needs, pinned to the version installed in this
    environment, as sorted ``name==version`` lines.

    Raises:
        ConfigError: a requirement is not installed, or the installed version does not
            satisfy it; the message names the requirement and how to fix it.
    """
    environment = _marker_environment()
    pinned: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    queue: list[tuple[Requirement, str]] = [(_requirement(r, where), where) for r in requirements]
    while queue:
        req, origin = queue.pop()
        key = canonicalize_name(req.name)
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(
                f"'{req}' (from {origin}) is not installed here, so its exact version cannot "
                f"be locked. Install it (pip install '{req}'), or set 'python: lock: false' "
                "in tiffin.yaml to keep the requirements as written.",
                detail={"requirement": str(req), "source": origin},
            ) from None
        version = dist.version
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            raise ConfigError(
                f"'{req}' (from {origin}) does not match the installed {dist.name} {version}. "
                f"Install a matching version (pip install '{req}') or change the requirement.",
                detail={"requirement": str(req), "installed": version, "source": origin},
            )
        pinned[key] = f"{key}=={version}"
        for extra in ("", *sorted(req.extras)):
            if (key, extra) in done:
                continue
            done.add((key, extra))
            for text in dist.requires or []:
                sub = Requirement(text)
                if sub.marker is not None and not sub.marker.evaluate(
                    {**environment, "extra": extra}
                ):
                    continue
                queue.append((sub, f"{key}'s dependencies"))
    return [pinned[key] for key in sorted(pinned)]


def _imported_modules(directory: Path, files: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for rel in files:
        if not rel.endswith(".py"):
            continue
        try:
            tree = ast.parse((directory / rel).read_bytes(), filename=rel)
        except (SyntaxError, ValueError):
            continue  # the import of the service already proved the code it runs parses
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _requirements_from_imports(directory: Path, files: list[str]) -> list[str]:
    """The installed distributions that provide what the source imports (not the
    standard library, not the project's own modules, not tiffin)."""
    local = {rel.split("/")[0].removesuffix(".py") for rel in files}
    by_module = importlib.metadata.packages_distributions()
    names: set[str] = set()
    for module in _imported_modules(directory, files):
        if module in sys.stdlib_module_names or module in local or module == "tiffin":
            continue
        for dist in by_module.get(module, []):
            if canonicalize_name(dist) != "tiffin":
                names.add(dist)
    return sorted(names, key=canonicalize_name)


def _spec_requirements(spec: BuildSpec, directory: Path, files: list[str]) -> tuple[list[str], str]:
    python = spec.python
    if python.requirements_file is not None:
        path = directory / python.requirements_file
        if not path.is_file():
            raise ConfigError(
                f"python.requirements_file '{python.requirements_file}' does not exist in "
                f"{directory}. Fix the path in tiffin.yaml.",
                detail={"key": "python.requirements_file", "path": str(path)},
            )
        lines = [
            line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()
        ]
        for line in lines:
            if line.startswith("-"):
                raise ConfigError(
                    f"{path} has the pip option '{line}'; a bundle's requirements file may hold "
                    "requirements only. Put index URLs under 'python:' in tiffin.yaml.",
                    detail={"key": "python.requirements_file", "line": line},
                )
        return [*python.requirements, *(line for line in lines if line)], "file"
    if python.project:
        pyproject = directory / "pyproject.toml"
        try:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(
                f"python.project is set but {pyproject} cannot be read ({exc}). Fix the file "
                "or list the requirements under python.requirements.",
                detail={"key": "python.project", "path": str(pyproject)},
            ) from None
        return [*python.requirements, *project.get("dependencies", [])], "project"
    if python.requirements:
        return list(python.requirements), "requirements"
    return _requirements_from_imports(directory, files), "imports"


def _framework_requirements(models: Iterable[Model]) -> list[str]:
    found = []
    known = available_frameworks()
    for model in models:
        name = model.info.framework.name
        package = get_framework(name).package if name in known else None
        if package:
            found.append(package)
    return found


def _tiffin_requirements() -> list[str]:
    environment = _marker_environment()
    found = []
    for text in importlib.metadata.distribution("tiffin").requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({**environment, "extra": ""}):
            found.append(text)
    return found


# -- models --------------------------------------------------------------------------


def _pin_models(
    service: ServiceSpec, extra: Iterable[str], store: ModelStore
) -> tuple[list[ModelPin], list[Model]]:
    pins: dict[str, ModelPin] = {}
    models: dict[str, Model] = {}

    def find(tag: Tag | str, needed_by: str) -> Model:
        try:
            return store.get(tag)
        except ModelNotFound:
            raise ModelNotFound(
                f"{needed_by} needs model '{tag}', which is not in the model store at "
                f"{store.home}. Save it first (tiffin.models.save), import it ('tiffin models "
                "import FILE'), or point TIFFIN_HOME at the store that has it.",
                detail={"tag": str(tag), "home": str(store.home)},
            ) from None

    for current in service.related():
        for attribute, ref in current.models.items():
            model = find(ref.tag, f"Service '{current.name}' ({current.cls.__name__}.{attribute})")
            key = str(ref.tag)
            pins.setdefault(
                key,
                ModelPin(
                    tag=str(model.tag),
                    sha256=files_digest(model.info.model_dump(mode="json")["files"]),
                    ref=key,
                    attribute=attribute,
                ),
            )
            models[str(model.tag)] = model
    for tag in extra:
        model = find(tag, "The build spec's 'models:'")
        if str(model.tag) not in models:
            pins[f"models:{model.tag}"] = ModelPin(
                tag=str(model.tag),
                sha256=files_digest(model.info.model_dump(mode="json")["files"]),
            )
            models[str(model.tag)] = model
    return list(pins.values()), list(models.values())


# -- build ---------------------------------------------------------------------------


def _settings(service: ServiceSpec, directory: Path) -> dict[str, Any]:
    resolved = config.load(code=service.config, directory=directory)
    data = resolved.model_dump(mode="json")
    return {k: v for k, v in data.items() if k not in _SETTINGS_NOT_RECORDED}


def _tiffin_version() -> str:
    try:
        return importlib.metadata.version("tiffin")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _content_digest(files: Mapping[str, Mapping[str, Any]], fields: Mapping[str, Any]) -> str:
    hashed = {rel: entry for rel, entry in files.items() if rel != DOCKERFILE}
    digest = hashlib.sha256(files_digest(hashed).encode())
    digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def build(
    directory: Path | str,
    *,
    service: str | None = None,
    version: str | None = None,
    labels: Mapping[str, str] | None = None,
    bundles: BundleStore | None = None,
    models: ModelStore | None = None,
) -> Bundle:
    """Build the project in ``directory`` into a new bundle version; see the module docstring.

    Args:
        directory: the project: its tiffin.yaml (or pyproject.toml) and source.
        service: the entry point, overriding the spec's ``service:``.
        version: the bundle's version (default: a new one from the time).
        labels: labels added to the spec's.
        bundles: the store to write to (default: the one the settings point to).
        models: the store the models are pinned from (default: the settings' one).

    Raises:
        ConfigError: a bad spec, a missing file it names, or a requirement that cannot
            be locked.
        ModelNotFound: a model the service needs is not in the model store.
        ServiceDefinitionError, NotFound: the service cannot be imported.

    Example:
        bundle = tiffin.bundles.build("examples/quickstart")
    """
    directory = Path(directory).resolve()
    spec = load_spec(directory, service=service)
    settings = config.current()
    bundles = bundles or BundleStore.from_settings(settings)
    models = models or ModelStore.from_settings(settings)
    loaded = load_service(spec.service, directory)
    recorded_settings = _settings(loaded, directory)
    pins, pinned_models = _pin_models(loaded, spec.models, models)
    files = select_files(directory, spec.include, spec.exclude)
    if spec.image.setup_script is not None and not (directory / spec.image.setup_script).is_file():
        raise ConfigError(
            f"image.setup_script '{spec.image.setup_script}' does not exist in {directory}. "
            "Fix the path in tiffin.yaml.",
            detail={"key": "image.setup_script"},
        )
    requirements, source_of_requirements = _spec_requirements(spec, directory, files)
    wanted = [*requirements, *_framework_requirements(pinned_models), *_tiffin_requirements()]
    if spec.python.lock:
        lock_lines = lock_requirements(wanted, where="the bundle's requirements")
    else:
        lock_lines = list(dict.fromkeys(wanted))
    name = spec.name or loaded.name
    description = spec.description
    if description is None:
        description = " ".join((loaded.cls.__doc__ or "").split())
    fields: dict[str, Any] = {
        "service": spec.service,
        "service_name": loaded.name,
        "description": description,
        "labels": {**spec.labels, **dict(labels or {})},
        "apis": sorted(loaded.apis),
        "tasks": sorted(loaded.tasks),
        "models": [pin.model_dump(mode="json") for pin in pins],
        "settings": recorded_settings,
        "envs": dict(spec.envs),
        "python": {
            "requirements": source_of_requirements,
            "lock": spec.python.lock,
            "index_url": spec.python.index_url,
            "extra_index_urls": list(spec.python.extra_index_urls),
        },
        "image": spec.image.model_dump(mode="json"),
        "kubernetes": spec.kubernetes.model_dump(mode="json"),
        "python_version": platform.python_version(),
        "tiffin_version": _tiffin_version(),
    }
    with bundles.items.stage(name, version) as staging:
        for rel in files:
            target = staging.path / SOURCE_DIR / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(directory / rel, target)
        (staging.path / LOCK_FILE).write_text(
            "".join(line + "\n" for line in lock_lines), encoding="utf-8"
        )
        if spec.image.setup_script is not None:
            script = staging.path / SETUP_SCRIPT
            script.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(directory / spec.image.setup_script, script)
        table = staging.file_table()
        fields["digest"] = _content_digest(table, fields)
        dockerfile = staging.path / DOCKERFILE
        dockerfile.parent.mkdir(parents=True, exist_ok=True)
        dockerfile.write_text(
            _dockerfile(staging.tag, staging.created_at, fields), encoding="utf-8"
        )
        tag, manifest = staging.commit(_ordered(fields))
    return Bundle(tag, bundles.items.path(tag), BundleInfo.model_validate(manifest))


def _ordered(fields: Mapping[str, Any]) -> dict[str, Any]:
    first = ("service", "service_name", "description", "labels", "digest")
    return {**{k: fields[k] for k in first}, **{k: v for k, v in fields.items() if k not in first}}


def _dockerfile(tag: Tag, created_at: datetime, fields: Mapping[str, Any]) -> str:
    from tiffin.deploy.container import render_dockerfile  # deploy builds on bundles

    info = BundleInfo.model_validate(
        {
            "name": tag.name,
            "version": tag.version,
            "created_at": created_at.astimezone(UTC),
            **fields,
            "size": 0,
            "files": {},
        }
    )
    return render_dockerfile(info)
