"""Every error tiffin raises, in one tree.

Each class carries the HTTP status a server answers with and the exit code the CLI
returns, so the same error reads the same wherever it surfaces. A client can re-raise
the class named in an error body's ``type``.

    TiffinError                      500  exit 1   base of everything below
    ├── ConfigError                  500  exit 2   bad settings, tiffin.yaml or TIFFIN_* value
    ├── InvalidArgument              400  exit 2   a value a caller passed is wrong
    │   └── InvalidTag               400  exit 2   a tag that is empty, too long, or badly formed
    ├── NotFound                     404  exit 3   something asked for does not exist
    │   ├── ModelNotFound            404  exit 3   no model with that name, version or alias
    │   ├── BundleNotFound           404  exit 3   no bundle with that name, version or alias
    │   └── TaskNotFound             404  exit 3   no task with that id (or its result has expired)
    ├── AlreadyExists                409  exit 4   creating something that is already there
    │   ├── ModelExists              409  exit 4   a model version that is already in the store
    │   └── BundleExists             409  exit 4   a bundle version that is already in the store
    ├── Conflict                     409  exit 4   the request contradicts the store's state
    │   └── TaskNotCompleted         409  exit 4   a task's result asked for before it completed
    ├── ArchiveError                 400  exit 5   an archive that cannot be imported
    │   ├── CorruptArchive           400  exit 5   unreadable, truncated, or a hash mismatch
    │   └── UnsafeArchive            400  exit 5   a member that would land outside its target
    ├── RequestError                 400  exit 2   an HTTP request the server cannot take
    │   ├── MalformedRequest         400  exit 2   a body that cannot be parsed (e.g. bad JSON)
    │   ├── Unauthorized             401  exit 2   no valid API key
    │   ├── RouteNotFound            404  exit 3   no API at that path
    │   ├── MethodNotAllowed         405  exit 2   the path exists, the HTTP method does not
    │   ├── PayloadTooLarge          413  exit 2   a body over the server's size limit
    │   ├── UnsupportedMediaType     415  exit 2   a Content-Type the API does not take
    │   └── ValidationFailed         422  exit 2   a body that does not match the API's schema
    ├── ServiceUnavailable           503  exit 9   busy (queue full) or not ready; retry later
    ├── RequestTimeout               504  exit 9   the API did not answer within its timeout
    ├── ServiceError                 500  exit 9   the service's own code raised
    │   └── TaskFailed               500  exit 9   a task's code raised on its last attempt
    ├── ServiceDefinitionError       500  exit 2   a @tiffin.service / @tiffin.api used wrongly
    ├── MissingDependency            500  exit 6   an optional package (an extra) is not installed
    ├── FrameworkError               500  exit 7   a framework handler failed to save or load
    ├── IntegrityError               500  exit 8   a stored file is missing or fails its digest
    └── DeployError                  500  exit 10  a container engine or deployment step failed

Every message says what went wrong and ends with what to do about it.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "ArchiveError",
    "BundleExists",
    "BundleNotFound",
    "ConfigError",
    "Conflict",
    "CorruptArchive",
    "DeployError",
    "FrameworkError",
    "IntegrityError",
    "InvalidArgument",
    "InvalidTag",
    "MalformedRequest",
    "MethodNotAllowed",
    "MissingDependency",
    "ModelExists",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "RequestError",
    "RequestTimeout",
    "RouteNotFound",
    "ServiceDefinitionError",
    "ServiceError",
    "ServiceUnavailable",
    "TaskFailed",
    "TaskNotCompleted",
    "TaskNotFound",
    "TiffinError",
    "Unauthorized",
    "UnsafeArchive",
    "UnsupportedMediaType",
    "ValidationFailed",
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


class BundleNotFound(NotFound):
    """Raised when no built bundle matches a name, version or alias."""


class TaskNotFound(NotFound):
    """Raised when no task has the id asked for: it never existed, or it finished longer
    ago than its result is kept."""


class AlreadyExists(TiffinError):
    """Raised when creating something that already exists."""

    status_code = 409
    exit_code = 4


class ModelExists(AlreadyExists):
    """Raised when saving or importing a model version that is already in the store."""


class BundleExists(AlreadyExists):
    """Raised when importing a bundle version that is already in the store."""


class Conflict(TiffinError):
    """Raised when an operation contradicts the store's state (e.g. deleting an aliased version)."""

    status_code = 409
    exit_code = 4


class TaskNotCompleted(Conflict):
    """Raised when a task's result is asked for while it is queued or running, or after it
    was cancelled; ``detail["status"]`` says which."""


class ArchiveError(TiffinError):
    """Raised when an archive cannot be imported; nothing was written."""

    status_code = 400
    exit_code = 5


class CorruptArchive(ArchiveError):
    """Raised for an unreadable or truncated archive, or a file whose digest does not match."""


class UnsafeArchive(ArchiveError):
    """Raised when an archive member would be written outside its target or is not a plain file."""


class RequestError(TiffinError):
    """Base of errors in an HTTP request that the server refuses (4xx)."""

    status_code = 400
    exit_code = 2


class MalformedRequest(RequestError):
    """Raised for a body that cannot be parsed: invalid JSON, bad encoding, broken multipart."""


class Unauthorized(RequestError):
    """Raised when API keys are required and the request has no valid one."""

    status_code = 401


class RouteNotFound(RequestError):
    """Raised for a path where the service has no API."""

    status_code = 404
    exit_code = 3


class MethodNotAllowed(RequestError):
    """Raised when the path exists but not for that HTTP method."""

    status_code = 405


class PayloadTooLarge(RequestError):
    """Raised for a request body over the server's ``max_body_size``."""

    status_code = 413


class UnsupportedMediaType(RequestError):
    """Raised for a ``Content-Type`` the API does not accept."""

    status_code = 415


class ValidationFailed(RequestError):
    """Raised when a request body does not match the API's schema; ``detail["errors"]``
    lists each problem with its location."""

    status_code = 422


class ServiceUnavailable(TiffinError):
    """Raised when the server is too busy (its wait queue is full) or not ready yet."""

    status_code = 503
    exit_code = 9


class RequestTimeout(TiffinError):
    """Raised when an API call runs past its timeout."""

    status_code = 504
    exit_code = 9


class ServiceError(TiffinError):
    """Raised when the service's own code fails; the body carries the request id to find
    the traceback in the server's log."""

    exit_code = 9


class TaskFailed(ServiceError):
    """Raised for the result of a task whose code raised on its last attempt;
    ``detail["error"]`` is the error it failed with."""


class ServiceDefinitionError(TiffinError):
    """Raised when ``@tiffin.service``, ``@tiffin.api`` or ``tiffin.depends`` is used wrongly;
    raised at import time, when the class is decorated."""

    exit_code = 2


class MissingDependency(TiffinError):
    """Raised when an optional package is needed but not installed; names the extra to install."""

    exit_code = 6


class FrameworkError(TiffinError):
    """Raised when a framework handler fails to save or load a model."""

    exit_code = 7


class IntegrityError(TiffinError):
    """Raised when a file in the store is missing or no longer matches its recorded digest."""

    exit_code = 8


class DeployError(TiffinError):
    """Raised when a container engine is missing or fails, or a deployment step cannot run."""

    exit_code = 10


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
