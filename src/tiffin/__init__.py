"""tiffin: take a trained model to production.

Example:
    import tiffin
    tiffin.models.save("iris", clf, metadata={"acc": 0.97})
    tiffin.models.get("iris:latest").load()
"""

from importlib.metadata import PackageNotFoundError, version

from tiffin import config, models
from tiffin.client import AsyncClient, Client
from tiffin.config import Settings
from tiffin.exceptions import (
    AlreadyExists,
    ArchiveError,
    ConfigError,
    Conflict,
    CorruptArchive,
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
)
from tiffin.tag import Tag

try:
    __version__ = version("tiffin")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "AlreadyExists",
    "ArchiveError",
    "AsyncClient",
    "Batch",
    "Client",
    "Columns",
    "ConfigError",
    "Conflict",
    "CorruptArchive",
    "DType",
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
    "Settings",
    "Shape",
    "Tag",
    "TiffinError",
    "Unauthorized",
    "UnsafeArchive",
    "UnsupportedMediaType",
    "ValidationFailed",
    "__version__",
    "api",
    "config",
    "depends",
    "models",
    "on_shutdown",
    "on_startup",
    "readiness",
    "service",
]
