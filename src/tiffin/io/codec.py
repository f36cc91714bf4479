"""Codecs: how a value of one Python type crosses the wire.

A codec is made for one annotation (``np.ndarray``, ``pandas.DataFrame``, ...) with its
constraints (``Annotated[np.ndarray, Shape(-1, 4), DType("float32")]``) and turns wire
values into Python objects and back. Plain JSON types and pydantic models need no codec:
pydantic handles them.

Beyond JSON, a codec may read whole request bodies of its own media types (a ``.npy``
array, a CSV table, a PNG image), file parts of a ``multipart/form-data`` request, and
answer with a body of its own media type when the client's ``Accept`` header asks for one.

Codecs are a plugin point: a package adds one by registering a ``Codec`` subclass under
the ``tiffin.io_types`` entry point group; tiffin's own codecs are registered the same way::

    # a plugin's pyproject.toml
    [project.entry-points."tiffin.io_types"]
    fraction = "tiffin_fractions:FractionCodec"
"""

from __future__ import annotations

import functools
import importlib.metadata
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import orjson

from tiffin.exceptions import ServiceDefinitionError
from tiffin.extras import load_plugin

__all__ = ["ENTRY_POINT_GROUP", "Codec", "Upload", "codec_for", "either", "negotiate", "refresh"]

ENTRY_POINT_GROUP = "tiffin.io_types"


@dataclass(frozen=True)
class Upload:
    """A file sent for one parameter: a part of a ``multipart/form-data`` request.

    Attributes:
        data: the file's bytes.
        media_type: the part's ``Content-Type`` (``text/plain`` for a plain form field,
            ``application/octet-stream`` for a file part that names none).
        filename: the file name the client gave, if any; never trust it as a path.

    Example:
        Upload(b"a,b\\n1,2\\n", "text/csv", "table.csv")
    """

    data: bytes
    media_type: str
    filename: str | None = None


def either(items: Sequence[str]) -> str:
    """``"a"``, ``"a or b"``, ``"a, b or c"``: alternatives for a message."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def negotiate(accept: str, offered: Sequence[str]) -> str | None:
    """The type of ``offered`` that an ``Accept`` header asks for by name, or None.

    Wildcards (``*/*``, ``image/*``) do not count: a codec answers with its own media
    type only when the client names it. Of several named, the highest ``q`` wins, then
    the first listed; ``q=0`` refuses a type.

    Example:
        negotiate("image/jpeg, */*;q=0.1", ("image/png", "image/jpeg"))  # "image/jpeg"
    """
    best: str | None = None
    best_q = 0.0
    for item in accept.split(","):
        media_type, _, params = item.partition(";")
        media_type = media_type.strip().lower()
        if media_type not in offered:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = media_type, q
    return best


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


class Codec(ABC):
    """How values of one Python type are read from and written to requests and responses.

    Subclass it to teach tiffin a new parameter or return type, and register the class
    under the ``tiffin.io_types`` entry point group.

    Class attributes:
        name: a short name for the type, used in messages.
        media_types: request/response bodies other than JSON this codec reads and writes
            (e.g. ``("application/x-npy",)``); an API whose only parameter has such a codec
            accepts that body directly, and an API with such a parameter (unless the codec
            is ``native``) accepts ``multipart/form-data`` with the value as a file part.
        file: True for types whose values are files, with no JSON form (``pathlib.Path``,
            images): they arrive as a multipart file part or a raw body, and a result is
            always answered with ``to_body``.
        native: True for types pydantic validates itself (``str``): the request model
            keeps the annotation as written, and the codec only adds media types.
        priority: codecs with a higher priority are asked first.

    Example:
        class DecimalCodec(Codec):
            name = "decimal"
            @classmethod
            def create(cls, annotation, metadata):
                return cls() if annotation is decimal.Decimal else None
            def json_schema(self): return {"type": "string", "format": "decimal"}
            def from_json(self, value): return decimal.Decimal(str(value))
            def to_json(self, obj): return str(obj)
    """

    name: ClassVar[str]
    media_types: ClassVar[tuple[str, ...]] = ()
    file: ClassVar[bool] = False
    native: ClassVar[bool] = False
    priority: ClassVar[int] = 0

    @classmethod
    @abstractmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> Self | None:
        """A codec for ``annotation`` (with ``Annotated`` metadata), or None if not handled.

        Must not import heavy packages unless the annotation is theirs.
        Raise ``ServiceDefinitionError`` for constraints that make no sense.
        """

    @abstractmethod
    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the value in a JSON body."""

    @abstractmethod
    def from_json(self, value: Any) -> Any:
        """The Python object for a value decoded from JSON; raise ``ValueError`` with a
        sentence saying what is wrong when the value is not acceptable."""

    @abstractmethod
    def to_json(self, obj: Any) -> Any:
        """A value ``orjson`` can serialise (numpy arrays are fine) for ``obj``."""

    def response_schema(self) -> dict[str, Any]:
        """The JSON schema of a result in a JSON response (by default ``json_schema``)."""
        return self.json_schema()

    def response_media_types(self) -> tuple[str, ...]:
        """Response bodies other than JSON that ``to_body`` writes (by default
        ``media_types``)."""
        return self.media_types

    def from_body(self, body: bytes, media_type: str) -> Any:
        """The Python object for a whole request body of one of ``media_types``; raise
        ``ValueError`` saying what is wrong when the body is not acceptable.

        A codec that declares ``media_types`` must override this."""
        raise ServiceDefinitionError(
            f"The IO type '{self.name}' ({type(self).__qualname__}) declares the media types "
            f"{', '.join(self.media_types)} but does not implement from_body(). Fix the "
            "plugin that provides it.",
        )

    def from_upload(self, upload: Upload) -> Any:
        """The Python object for a file part of a multipart request; raise ``ValueError``
        saying what is wrong when it is not acceptable.

        By default a part of one of ``media_types`` is read with ``from_body`` and a JSON
        part with ``from_json``.
        """
        if upload.media_type in self.media_types:
            return self.from_body(upload.data, upload.media_type)
        if _is_json(upload.media_type):
            try:
                value = orjson.loads(upload.data)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON ({exc})") from None
            return self.from_json(value)
        kinds = either([*self.media_types, "application/json"])
        raise ValueError(f"is a part of type '{upload.media_type}'; send it as {kinds}")

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        """A non-JSON response body and its media type for ``obj`` when the client accepts
        one (see ``negotiate``), else None. A ``file`` codec always returns a body."""
        return None

    def release(self, value: Any) -> None:  # noqa: B027 (a hook: most codecs hold nothing)
        """Free what decoding ``value`` holds (a temporary file, say) once the API has
        answered. Called for every decoded value of this codec; must not raise."""


def refresh() -> None:
    """Forget the registered codecs, so plugins installed since are found."""
    _codec_classes.cache_clear()


@functools.cache
def _codec_classes() -> tuple[type[Codec], ...]:
    found: list[type[Codec]] = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        cls: type[Codec] = load_plugin(
            entry,
            Codec,
            kind="IO type",
            base_name="tiffin.io.Codec",
            error=ServiceDefinitionError,
            detail={"entry_point": entry.value},
        )
        found.append(cls)
    found.sort(key=lambda cls: -cls.priority)
    return tuple(found)


def codec_for(annotation: Any, metadata: tuple[Any, ...] = ()) -> Codec | None:
    """The codec of the first registered type that handles ``annotation``, or None."""
    for cls in _codec_classes():
        codec = cls.create(annotation, metadata)
        if codec is not None:
            return codec
    return None
