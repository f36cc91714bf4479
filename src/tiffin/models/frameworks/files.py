"""A model that is a directory of files the user wrote (``tiffin.models.create``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tiffin.exceptions import InvalidArgument
from tiffin.models.frameworks import Framework
from tiffin.storage import Staging

__all__ = ["FilesFramework"]


class FilesFramework(Framework):
    """Files written directly into the model's directory; ``load()`` returns that directory."""

    name = "files"

    def save(self, obj: Any, target: Staging) -> dict[str, Any]:
        raise InvalidArgument(
            "The 'files' framework has no object to save. Use "
            "'with tiffin.models.create(name) as model:' and write files under model.path.",
        )

    def load(self, path: Path, options: Mapping[str, Any], **kwargs: Any) -> Path:
        self.reject_unknown(kwargs, "a directory model")
        return path
