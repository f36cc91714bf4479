"""Find a service class from a reference such as ``service:Iris``.

A reference is ``module:Class`` (a module importable from the serve directory, dotted
for packages), ``path/to/file.py:Class`` (a file, relative to the serve directory), or
either without ``:Class`` when the module defines exactly one service. Whatever goes
wrong is a ``TiffinError`` saying which part of the reference to fix; an exception
raised by the user's own module names its type, message and the line that raised it.

Example:
    spec = load_service("service:Iris", Path.cwd())
    spec.name  # 'iris'
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType

from tiffin.exceptions import (
    InvalidArgument,
    NotFound,
    ServiceDefinitionError,
    TiffinError,
    describe,
)
from tiffin.service.definition import ServiceSpec, spec_of

__all__ = ["load_service", "locate"]

_MISSING = object()
_EXAMPLE = "Write it as module:Class (e.g. service:Iris) or path/to/file.py:Class."


def load_service(target: str, directory: Path) -> ServiceSpec:
    """Import the service ``target`` names and return its spec.

    ``directory`` goes first on ``sys.path`` (for a file, its folder goes there too), so
    the user's module and its siblings import the way they would from that directory.

    Args:
        target: ``module:Class``, ``path/to/file.py:Class``, or a module or file alone
            when it defines exactly one service.
        directory: where module names and relative paths are looked up.

    Raises:
        InvalidArgument: ``target`` is not written as a reference.
        NotFound: no such module, file or class.
        ServiceDefinitionError: the module failed to import, or the name is not a service.

    Example:
        spec = load_service("service:Iris", Path("examples/quickstart"))
    """
    module_ref, attribute = _split(target)
    directory = directory.resolve()
    if module_ref.endswith(".py") or "/" in module_ref or os.sep in module_ref:
        module = _import_file(directory / module_ref, directory)
    else:
        module = _import_module(module_ref, directory)
    return _service_in(module, module_ref, attribute, target)


def locate(exc: BaseException, directory: Path) -> str | None:
    """Where ``exc`` was raised, as ``file:line``: the innermost line of the user's code
    (under ``directory``, outside installed packages) when there is one, else the
    innermost line of all. Paths under ``directory`` are shown relative to it."""
    directory = directory.resolve()
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(exc.filename, directory)}:{exc.lineno}"
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<")
    ]
    if not frames:
        return None
    own = [frame for frame in frames if _is_users(frame.filename, directory)]
    frame = (own or frames)[-1]
    return f"{_shown(frame.filename, directory)}:{frame.lineno}"


def _split(target: str) -> tuple[str, str | None]:
    module_ref, sep, attribute = target.strip().rpartition(":")
    if not sep:
        module_ref, attribute = attribute, ""
    names = attribute.split(".") if attribute else []
    if not module_ref or (sep and not names) or not all(n.isidentifier() for n in names):
        raise InvalidArgument(
            f"'{target}' does not name a service. {_EXAMPLE}", detail={"service": target}
        )
    return module_ref, attribute or None


def _on_path(folder: Path) -> None:
    entry = str(folder)
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)


def _forget_other(name: str, directory: Path) -> None:
    """Drop an imported module of the same top-level name that came from elsewhere, when
    ``directory`` has its own: the service in ``directory`` is the one asked for."""
    top = name.split(".", maxsplit=1)[0]
    known = sys.modules.get(top)
    if known is None or not ((directory / f"{top}.py").is_file() or (directory / top).is_dir()):
        return
    where = getattr(known, "__file__", None)
    if where is not None and Path(where).resolve().is_relative_to(directory):
        return
    for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
        del sys.modules[key]


def _import_module(name: str, directory: Path) -> ModuleType:
    _on_path(directory)
    _forget_other(name, directory)
    importlib.invalidate_caches()  # the file may be newer than the finders' directory caches
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            looked = name.replace(".", "/")
            raise NotFound(
                f"No module '{name}' in {directory} (looked for {looked}.py and "
                f"{looked}/__init__.py). Check the name, or run 'tiffin serve' from the "
                "directory that holds it.",
                detail={"module": name, "directory": str(directory)},
            ) from None
        raise _import_failed(name, exc, directory) from exc
    except TiffinError:
        raise
    except (Exception, SystemExit) as exc:
        raise _import_failed(name, exc, directory) from exc


def _import_file(path: Path, directory: Path) -> ModuleType:
    path = path.resolve()
    if not path.is_file():
        raise NotFound(
            f"No file {path}. Check the path; it is taken relative to {directory}.",
            detail={"path": str(path)},
        )
    _on_path(path.parent)
    _on_path(directory)
    name = path.stem
    known = sys.modules.get(name)
    if known is not None:
        if getattr(known, "__file__", None) == str(path):
            return known
        name = f"_tiffin_service_{name}"  # never replace an imported module of that name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ServiceDefinitionError(
            f"{path} cannot be imported as a Python module. Give a .py file.",
            detail={"path": str(path)},
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as a normal import does
    try:
        spec.loader.exec_module(module)
    except TiffinError:
        del sys.modules[name]
        raise
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise _import_failed(_shown(str(path), directory), exc, directory) from exc
    return module


def _import_failed(name: str, exc: BaseException, directory: Path) -> ServiceDefinitionError:
    where = locate(exc, directory)
    todo = (
        "Install the missing package, or fix the import."
        if isinstance(exc, ModuleNotFoundError)
        else "Fix the error in your code and run again."
    )
    return ServiceDefinitionError(
        f"Importing '{name}' failed{f' at {where}' if where else ''}: {describe(exc)}. {todo}",
        detail={"module": name, "error": type(exc).__name__, "where": where},
    )


def _services(module: ModuleType) -> list[str]:
    found = []
    for attribute, value in vars(module).items():
        if isinstance(value, type) and value.__module__ == module.__name__:
            spec = getattr(value, "__tiffin_service__", None)
            if isinstance(spec, ServiceSpec) and spec.cls is value:
                found.append(attribute)
    return found


def _service_in(
    module: ModuleType, module_ref: str, attribute: str | None, target: str
) -> ServiceSpec:
    services = _services(module)
    if attribute is None:
        if len(services) == 1:
            return spec_of(getattr(module, services[0]))
        if not services:
            raise NotFound(
                f"'{module_ref}' defines no @tiffin.service class. Decorate one, or name the "
                f"class to serve as {module_ref}:Class.",
                detail={"module": module_ref},
            )
        raise InvalidArgument(
            f"'{module_ref}' defines several services ({', '.join(services)}). Say which, "
            f"e.g. {module_ref}:{services[0]}.",
            detail={"module": module_ref, "services": services},
        )
    found: object = module
    for part in attribute.split("."):
        found = getattr(found, part, _MISSING)
        if found is _MISSING:
            known = f"Services in it: {', '.join(services)}" if services else "It defines none"
            raise NotFound(
                f"'{module_ref}' has no attribute '{attribute}'. {known}; check the name "
                "after ':'.",
                detail={"module": module_ref, "attribute": attribute, "services": services},
            )
    if not isinstance(found, type):
        raise ServiceDefinitionError(
            f"'{target}' is {type(found).__name__}, not a class. Name a class decorated "
            "with @tiffin.service.",
            detail={"service": target},
        )
    return spec_of(found)


def _is_users(filename: str, directory: Path) -> bool:
    return filename.startswith(str(directory) + os.sep) and "site-packages" not in filename


def _shown(filename: str, directory: Path) -> str:
    prefix = str(directory) + os.sep
    return filename[len(prefix) :] if filename.startswith(prefix) else filename
