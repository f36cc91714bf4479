"""tiffin: take a trained model to production.

Example:
    import tiffin
    tiffin.models.save("iris", clf, metadata={"acc": 0.97})
    tiffin.models.get("iris:latest").load()
"""

from typing import TYPE_CHECKING, Any

from tiffin import config, models
from tiffin.config import Settings
from tiffin.exceptions import (
    AlreadyExists,
    ArchiveError,
    BundleExists,
    BundleNotFound,
    ConfigError,
    Conflict,
    CorruptArchive,
    DeployError,
    FrameworkError,
    IntegrityError,
    InvalidArgument,
    InvalidTag,
    MalformedRequest,
    MethodNotAllowed,
    MissingDependency,
    ModelExists,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    RouteNotFound,
    ServiceDefinitionError,
    ServiceError,
    ServiceUnavailable,
    TaskFailed,
    TaskNotCompleted,
    TaskNotFound,
    TiffinError,
    Unauthorized,
    UnsafeArchive,
    UnsupportedMediaType,
    ValidationFailed,
)
from tiffin.io import Columns, DType, Shape
from tiffin.service import (
    Batch,
    api,
    depends,
    on_shutdown,
    on_startup,
    readiness,
    service,
    task,
)
from tiffin.tag import Tag
from tiffin.tasks import TaskContext, task_context

if TYPE_CHECKING:
    from tiffin import metrics
    from tiffin.client import AsyncClient, Client
    from tiffin.observability.monitoring import Monitor, monitor

__version__: str


def __getattr__(name: str) -> Any:
    # The client (and httpx under it) and the package's version are read on first use:
    # a service that imports tiffin to be served needs neither, and each costs memory in
    # every worker and time at every start.
    if name in {"Client", "AsyncClient"}:
        from tiffin import client

        return getattr(client, name)
    # prometheus_client with them: a script that only saves models needs neither
    if name == "metrics":
        import tiffin.metrics

        return tiffin.metrics
    if name in {"monitor", "Monitor"}:
        from tiffin.observability import monitoring

        value = getattr(monitoring, name)
        globals()[name] = value
        return value
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("tiffin")
        except PackageNotFoundError:  # running from a source tree that is not installed
            return "0.0.0"
    raise AttributeError(f"module 'tiffin' has no attribute {name!r}")


__all__ = [
    "AlreadyExists",
    "ArchiveError",
    "AsyncClient",
    "Batch",
    "BundleExists",
    "BundleNotFound",
    "Client",
    "Columns",
    "ConfigError",
    "Conflict",
    "CorruptArchive",
    "DType",
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
    "Monitor",
    "NotFound",
    "PayloadTooLarge",
    "RequestError",
    "RequestTimeout",
    "RouteNotFound",
    "ServiceDefinitionError",
    "ServiceError",
    "ServiceUnavailable",
    "Settings",
    "Shape",
    "Tag",
    "TaskContext",
    "TaskFailed",
    "TaskNotCompleted",
    "TaskNotFound",
    "TiffinError",
    "Unauthorized",
    "UnsafeArchive",
    "UnsupportedMediaType",
    "ValidationFailed",
    "__version__",
    "api",
    "config",
    "depends",
    "metrics",
    "models",
    "monitor",
    "on_shutdown",
    "on_startup",
    "readiness",
    "service",
    "task",
    "task_context",
]
