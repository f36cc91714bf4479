"""Optional code: packages imported through one helper that names the extra to install,
and plugins loaded from their entry points through one that says what is wrong with one."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from tiffin.exceptions import MissingDependency, TiffinError

__all__ = ["import_optional", "load_plugin"]


def import_optional(module: str, extra: str, *, purpose: str = "") -> ModuleType:
    """Import ``module``, or raise ``MissingDependency`` saying which extra provides it.

    Args:
        module: the module to import, e.g. ``"sklearn"``.
        extra: the tiffin extra that installs it, e.g. ``"sklearn"``.
        purpose: what needs it, for the message, e.g. ``"to load model 'iris:v1'"``.

    Example:
        torch = import_optional("torch", "torch", purpose="to save a torch.nn.Module")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        need = f" {purpose}" if purpose else ""
        raise MissingDependency(
            f"The package '{module}' is needed{need} but is not installed. "
            f"Run: pip install 'tiffin[{extra}]'",
            detail={"module": module, "extra": extra, "reason": str(exc)},
        ) from exc


def load_plugin(
    entry: importlib.metadata.EntryPoint,
    base: type,
    *,
    kind: str,
    base_name: str,
    error: type[TiffinError],
    detail: Mapping[str, Any],
    remedy: str = "Reinstall the package that provides it.",
) -> type:
    """The class a plugin's entry point names; ``error`` when it fails to import or is
    not a subclass of ``base``.

    Args:
        entry: the entry point.
        base: the class a plugin subclasses.
        kind: what the plugin adds, for messages, e.g. ``"protocol"``.
        base_name: ``base`` as users import it, e.g. ``"tiffin.protocols.Protocol"``.
        error: the error class to raise.
        detail: the error's detail.
        remedy: what to do when the plugin fails to import.

    Example:
        cls = load_plugin(entry, Codec, kind="IO type", base_name="tiffin.io.Codec",
                          error=ServiceDefinitionError, detail={"entry_point": entry.value})
    """
    plugin = f"The {kind} plugin '{entry.name}' ({entry.value})"
    try:
        cls = entry.load()
    except Exception as exc:
        raise error(f"{plugin} failed to import: {exc}. {remedy}", detail=dict(detail)) from exc
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise error(
            f"{plugin} is not a subclass of {base_name}. Fix the plugin's entry point.",
            detail=dict(detail),
        )
    return cls
