"""``str`` parameters and results as plain text, beside their JSON form.

    @tiffin.api
    def summarise(self, text: str) -> str: ...

An API whose only parameter is a ``str`` also takes the text itself as the body
(``Content-Type: text/plain``, UTF-8), and an API returning ``str`` answers with the text
itself when the client asks for it (``Accept: text/plain``); otherwise a JSON string.
pydantic still validates the value, so ``Annotated[str, Field(max_length=100)]`` holds
for a text body too.
"""

from __future__ import annotations

from typing import Any, Self

from tiffin.io.codec import Codec, Upload, negotiate

__all__ = ["TEXT", "TextCodec"]

TEXT = "text/plain"
_OFFERED = ("application/json", TEXT)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"is not UTF-8 text (byte {exc.start} cannot be decoded); send text encoded as UTF-8"
        ) from None


class TextCodec(Codec):
    """Reads a ``text/plain`` body or part as a ``str``, and answers ``text/plain`` when asked.

    Example:
        curl -H 'Content-Type: text/plain' -H 'Accept: text/plain' -d 'some text' \\
            localhost:3000/summarise
    """

    name = "text"
    media_types = (TEXT,)
    native = True

    @classmethod
    def create(cls, annotation: Any, metadata: tuple[Any, ...]) -> Self | None:
        return cls() if annotation is str else None

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def from_json(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    def to_json(self, obj: Any) -> Any:
        return obj

    def from_body(self, body: bytes, media_type: str) -> Any:
        return _decode(body)

    def from_upload(self, upload: Upload) -> Any:
        # a text file is text whatever type the client labelled it with
        return _decode(upload.data)

    def to_body(self, obj: Any, accept: str) -> tuple[bytes, str] | None:
        if negotiate(accept, _OFFERED) != TEXT:
            return None
        if not isinstance(obj, str):
            raise TypeError(f"a text result must be a str, not {type(obj).__name__}")
        return obj.encode("utf-8"), "text/plain; charset=utf-8"
