"""Files: a ``pathlib.Path`` parameter receives an upload, a ``Path`` result sends a file.

    @tiffin.api
    def transcribe(self, audio: Path, language: str = "en") -> str: ...

    @tiffin.api
    def render(self, spec: dict[str, Any]) -> Path: ...

An upload arrives as a part of a ``multipart/form-data`` request named after the
parameter (``curl -F audio=@talk.wav``), or, for an API whose only parameter is a file, as
the whole body (``Content-Type: application/octet-stream``). It is written to a temporary
file whose name keeps the upload's suffix (``.wav``); the file is removed once the API has
answered, whether it succeeded or raised, so copy it to keep it.

A ``Path`` result is answered with the file's bytes and a ``Content-Type`` guessed from its
name; the file is the service's own and is left where it is.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Self

from tiffin.io.codec import Codec, Upload

__all__ = ["OCTET_STREAM", "PathCodec"]

OCTET_STREAM = "application/octet-stream"
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,16}")


def _suffix(filename: str | None) -> str:
    """The upload's suffix, if it is a plain one: never part of a path from the client."""
    if not filename:
        return ""
    suffix = os.path.splitext(filename.replace("\\", "/").rpartition("/")[2])[1]
    return suffix.lower() if _SUFFIX.fullmatch(suffix) else ""


class PathCodec(Codec):
    """Saves an uploaded file to a temporary ``Path``, and sends a returned ``Path``'s bytes.

    Example:
        curl -F 'document=@report.pdf' localhost:3000/summarise
        curl --data-binary @report.pdf -H 'Content-Type: application/octet-stream' \\
            localhost:3000/summarise
    """

    name = "file"
    media_types = (OCTET_STREAM,)
    file = True

    @classmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> Self | None:
        return cls() if annotation is Path else None

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "binary", "description": "a file"}

    def response_media_types(self) -> tuple[str, ...]:
        return ("*/*",)

    def from_json(self, value: Any) -> Any:
        raise ValueError("is a file; send it as a part of a multipart/form-data request")

    def to_json(self, obj: Any) -> Any:
        raise TypeError("a file has no JSON form")

    def _save(self, data: bytes, filename: str | None) -> Path:
        descriptor, name = tempfile.mkstemp(prefix="tiffin-upload-", suffix=_suffix(filename))
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(data)
        except BaseException:
            os.unlink(name)
            raise
        return Path(name)

    def from_body(self, body: bytes, media_type: str) -> Any:
        return self._save(body, None)

    def from_upload(self, upload: Upload) -> Any:
        return self._save(upload.data, upload.filename)

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        path = Path(obj)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OSError(f"the file {str(path)!r} cannot be read ({exc.strerror})") from None
        return data, mimetypes.guess_type(path.name)[0] or OCTET_STREAM

    def release(self, value: Any) -> None:
        # already moved away, or a directory the service made there: nothing to free
        with contextlib.suppress(OSError):
            Path(value).unlink(missing_ok=True)
