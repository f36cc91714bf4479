"""Framework handlers: how one kind of model is saved to files and loaded back.

A handler is a subclass of ``Framework`` registered under the ``tiffin.frameworks``
entry point group; tiffin's own handlers are registered the same way a plugin package
registers its own::

    # a plugin's pyproject.toml
    [project.entry-points."tiffin.frameworks"]
    lightgbm = "tiffin_lightgbm:LightGBMFramework"

When ``save`` is given no framework, the object's class and its bases are matched
against each handler's ``modules`` (without importing any framework), and plain
``pickle`` is used when none matches.
"""

from __future__ import annotations

import functools
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from tiffin.exceptions import FrameworkError, InvalidArgument
from tiffin.extras import load_plugin
from tiffin.storage import Staging

__all__ = ["ENTRY_POINT_GROUP", "Framework", "available", "detect", "get", "refresh"]

ENTRY_POINT_GROUP = "tiffin.frameworks"


class Framework(ABC):
    """How to save and load one kind of model. Subclass it in a plugin to add a framework.

    Class attributes:
        name: the framework's name as written in ``model.yaml`` and passed as ``framework=``.
        modules: top-level modules whose objects this handler saves, e.g. ``("sklearn",)``.
        package: the distribution whose version is recorded, e.g. ``"scikit-learn"``.
        extra: the tiffin extra that installs it, named in "not installed" errors.

    Example:
        class JoblibFramework(Framework):
            name = "joblib"
            def save(self, obj, target):
                joblib.dump(obj, target.path / "model.joblib")
                return {}
            def load(self, path, options, **kwargs):
                return joblib.load(path / "model.joblib")
    """

    name: ClassVar[str]
    modules: ClassVar[tuple[str, ...]] = ()
    package: ClassVar[str | None] = None
    extra: ClassVar[str | None] = None

    def handles(self, obj: Any) -> bool:
        """Whether this handler can save ``obj``; asked only when ``modules`` matched."""
        return True

    def version(self) -> str | None:
        """The installed version of ``package``, recorded in ``model.yaml``."""
        if self.package is None:
            return None
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def signatures(self, obj: Any) -> dict[str, dict[str, Any]]:
        """Default signatures (method name -> options) when the caller gives none."""
        return {}

    @abstractmethod
    def save(self, obj: Any, target: Staging) -> dict[str, Any]:
        """Write ``obj`` as files under ``target.path`` (``target.open(name)`` hashes while
        writing). Returns options recorded in ``model.yaml`` and given back to ``load``."""

    def reject_unknown(
        self, kwargs: Mapping[str, Any], what: str, accepted: tuple[str, ...] = ()
    ) -> None:
        """Refuse ``load()`` arguments the handler does not take, so a misspelt one fails
        instead of being ignored. ``what`` names the model, e.g. ``"a torch model"``."""
        if not kwargs:
            return
        got = ", ".join(sorted(kwargs))
        if accepted:
            names = [f"{name}=" for name in accepted]
            takes = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            message = f"Loading {what} takes {takes}, but got {got}. Remove the other arguments."
        else:
            message = f"Loading {what} takes no arguments, but got {got}. Call load() without them."
        raise InvalidArgument(message, detail={"framework": self.name, "arguments": sorted(kwargs)})

    @abstractmethod
    def load(self, path: Path, options: Mapping[str, Any], **kwargs: Any) -> Any:
        """Load the model saved under ``path``. ``kwargs`` come from ``Model.load(...)``."""


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def refresh() -> None:
    """Forget the registered frameworks, so plugins installed since are found."""
    _entry_points.cache_clear()
    get.cache_clear()
    _by_module.cache_clear()


def available() -> list[str]:
    """Names of every registered framework."""
    return sorted(_entry_points())


@functools.cache
def get(name: str) -> Framework:
    """The handler registered as ``name``."""
    entry = _entry_points().get(name)
    if entry is None:
        raise InvalidArgument(
            f"Unknown framework '{name}'. Known frameworks: {', '.join(available())}. "
            f"A plugin adds one under the '{ENTRY_POINT_GROUP}' entry point group.",
            detail={"framework": name, "known": available()},
        )
    cls: type[Framework] = load_plugin(
        entry,
        Framework,
        kind="framework",
        base_name="tiffin.models.Framework",
        error=FrameworkError,
        detail={"framework": name, "entry_point": entry.value},
    )
    return cls()


@functools.cache
def _by_module() -> dict[str, tuple[str, ...]]:
    """Top-level module -> names of the frameworks declaring it; built once, so a plugin
    that fails to import is tried once, not on every save."""
    index: dict[str, list[str]] = {}
    for name in available():
        try:
            modules = get(name).modules
        except FrameworkError:
            continue  # reported when that framework is asked for by name
        for module in modules:
            index.setdefault(module, []).append(name)
    return {module: tuple(names) for module, names in index.items()}


def detect(obj: Any) -> Framework:
    """The handler for ``obj``: the first whose ``modules`` include the top-level module of
    the object's class or one of its bases and that accepts it; ``pickle`` otherwise."""
    index = _by_module()
    for cls in type(obj).__mro__:
        for name in index.get(cls.__module__.partition(".")[0], ()):
            handler = get(name)
            if handler.handles(obj):
                return handler
    return get("pickle")
