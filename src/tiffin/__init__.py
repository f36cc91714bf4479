"""tiffin: take a trained model to production.

Example:
    import tiffin
    tiffin.models.save("iris", clf, metadata={"acc": 0.97})
    tiffin.models.get("iris:latest").load()
"""

from importlib.metadata import PackageNotFoundError, version

from tiffin import config, models
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
    MissingDependency,
    ModelExists,
    ModelNotFound,
    NotFound,
    TiffinError,
    UnsafeArchive,
)
from tiffin.tag import Tag

try:
    __version__ = version("tiffin")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

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
    "Settings",
    "Tag",
    "TiffinError",
    "UnsafeArchive",
    "__version__",
    "config",
    "models",
]
