"""Every error tiffin raises, in one tree.

Each class carries the HTTP status a server answers with and the exit code the CLI
returns, so the same error reads the same wherever it surfaces. A client can re-raise
the class named in an error body's ``type``.

    TiffinError                      500  exit 1   base of everything below
    ├── ConfigError                  500  exit 2   bad settings, tiffin.yaml or TIFFIN_* value
    ├── InvalidArgument              400  exit 2   a value a caller passed is wrong
    │   └── InvalidTag               400  exit 2   a tag that is empty, too long, or badly formed
    ├── NotFound                     404  exit 3   something asked for does not exist
    │   └── ModelNotFound            404  exit 3   no model with that name, version or alias
    ├── AlreadyExists                409  exit 4   creating something that is already there
    │   └── ModelExists              409  exit 4   a model version that is already in the store
    ├── Conflict                     409  exit 4   the request contradicts the store's state
    ├── ArchiveError                 400  exit 5   an archive that cannot be imported
    │   ├── CorruptArchive           400  exit 5   unreadable, truncated, or a hash mismatch
    │   └── UnsafeArchive            400  exit 5   a member that would land outside its target
    ├── MissingDependency            500  exit 6   an optional package (an extra) is not installed
    ├── FrameworkError               500  exit 7   a framework handler failed to save or load
    └── IntegrityError               500  exit 8   a stored file is missing or fails its sha256

Every message says what went wrong and ends with what to do about it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "ArchiveError",
    "ConfigError",
    "Conflict",
    "CorruptArchive",
    "FrameworkError",
    "IntegrityError",
    "InvalidArgument",
    "InvalidTag",
    "MissingDependency",
    "ModelExists",
    "ModelNotFound",
    "NotFound",
    "TiffinError",
    "UnsafeArchive",
    "error_class",
]


class TiffinError(Exception):
    """Base of every error tiffin raises.

    Args:
        message: a sentence saying what went wrong, ending with what to do.
        detail: structured facts about the error (field names, paths, tags) that a
            program can read; it is sent as ``detail`` in an HTTP error body.
    """

    status_code: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = dict(detail or {})

    def to_dict(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body an HTTP server answers with."""
        return {
            "error": {"type": type(self).__name__, "message": self.message, "detail": self.detail}
        }


class ConfigError(TiffinError):
    """Raised when settings, ``tiffin.yaml`` or a ``TIFFIN_*`` variable hold a bad value."""

    exit_code = 2


class InvalidArgument(TiffinError):
    """Raised when a value passed to a tiffin function or command is wrong."""

    status_code = 400
    exit_code = 2


class InvalidTag(InvalidArgument):
    """Raised when a tag is empty, too long, or contains characters a tag cannot hold."""


class NotFound(TiffinError):
    """Raised when something asked for does not exist."""

    status_code = 404
    exit_code = 3


class ModelNotFound(NotFound):
    """Raised when no saved model matches a name, version or alias."""


class AlreadyExists(TiffinError):
    """Raised when creating something that already exists."""

    status_code = 409
    exit_code = 4


class ModelExists(AlreadyExists):
    """Raised when saving or importing a model version that is already in the store."""


class Conflict(TiffinError):
    """Raised when an operation contradicts the store's state (e.g. deleting an aliased version)."""

    status_code = 409
    exit_code = 4


class ArchiveError(TiffinError):
    """Raised when an archive cannot be imported; nothing was written."""

    status_code = 400
    exit_code = 5


class CorruptArchive(ArchiveError):
    """Raised for an unreadable or truncated archive, or a file whose sha256 does not match."""


class UnsafeArchive(ArchiveError):
    """Raised when an archive member would be written outside its target or is not a plain file."""


class MissingDependency(TiffinError):
    """Raised when an optional package is needed but not installed; names the extra to install."""

    exit_code = 6


class FrameworkError(TiffinError):
    """Raised when a framework handler fails to save or load a model."""

    exit_code = 7


class IntegrityError(TiffinError):
    """Raised when a file in the store is missing or no longer matches its recorded sha256."""

    exit_code = 8


def describe(exc: BaseException) -> str:
    """``"ValueError: bad value"`` for use inside a sentence (no doubled full stop)."""
    text = str(exc).strip().rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _subclasses(cls: type[TiffinError]) -> list[type[TiffinError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_subclasses(sub))
    return found


def error_class(name: str) -> type[TiffinError]:
    """The ``TiffinError`` subclass called ``name``, or ``TiffinError`` when none is.

    Used to re-raise, on the calling side, the error a server answered with.
    """
    for cls in _subclasses(TiffinError):
        if cls.__name__ == name:
            return cls
    return TiffinError
