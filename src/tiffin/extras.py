"""Optional packages, imported through one helper that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from tiffin.exceptions import MissingDependency

__all__ = ["import_optional"]


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
