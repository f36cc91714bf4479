"""Codecs: how a value of one Python type crosses the wire.

A codec is made for one annotation (``np.ndarray``, ``pandas.DataFrame``, ...) with its
constraints (``Annotated[np.ndarray, Shape(-1, 4), DType("float32")]``) and turns wire
values into Python objects and back. Plain JSON types and pydantic models need no codec:
pydantic handles them.

Codecs are a plugin point: a package adds one by registering a ``Codec`` subclass under
the ``tiffin.io_types`` entry point group; tiffin's own codecs are registered the same way.
"""

from __future__ import annotations

import functools
import importlib.metadata
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

from tiffin.exceptions import ServiceDefinitionError

__all__ = ["ENTRY_POINT_GROUP", "Codec", "codec_for"]

ENTRY_POINT_GROUP = "tiffin.io_types"


class Codec(ABC):
    """How values of one Python type are read from and written to requests and responses.

    Subclass it to teach tiffin a new parameter or return type, and register the class
    under the ``tiffin.io_types`` entry point group.

    Class attributes:
        name: a short name for the type, used in messages.
        media_types: request/response bodies other than JSON this codec reads and writes
            (e.g. ``("application/x-npy",)``); an API whose only parameter has such a codec
            accepts that body directly.

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

    def from_body(self, body: bytes, media_type: str) -> Any:
        """The Python object for a whole request body of one of ``media_types``."""
        raise NotImplementedError

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        """A non-JSON response body for ``obj`` when the client accepts one, else None."""
        return None


@functools.cache
def _codec_classes() -> tuple[type[Codec], ...]:
    found: list[type[Codec]] = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as exc:
            raise ServiceDefinitionError(
                f"The IO type plugin '{entry.name}' ({entry.value}) failed to import: {exc}. "
                "Reinstall the package that provides it.",
                detail={"entry_point": entry.value},
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Codec)):
            raise ServiceDefinitionError(
                f"The IO type plugin '{entry.name}' ({entry.value}) is not a subclass of "
                "tiffin.io.Codec. Fix the plugin's entry point.",
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
