"""``multipart/form-data`` request bodies, split into their parts.

The server has read the whole body already (bounded by ``max_body_size``), so parts are
kept in memory; the codec of each part's parameter decides what becomes of it (a
temporary file for a ``pathlib.Path``, an image, a table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tiffin.exceptions import MalformedRequest

__all__ = ["MULTIPART", "Part", "parse"]

MULTIPART = "multipart/form-data"

# python-multipart logs a warning for every malformed body before raising; the error the
# client gets says the same, so the parser writes to a logger that is never enabled.
_SILENT = logging.Logger("tiffin.io.multipart", logging.CRITICAL + 1)

_HINT = (
    "Send multipart/form-data as an HTTP client builds it (curl -F 'name=@file', "
    "httpx files=...), with one part per parameter."
)


@dataclass(frozen=True)
class Part:
    """One part of a multipart body.

    Attributes:
        name: the ``name`` of its ``Content-Disposition``: the parameter it is for.
        filename: the ``filename`` of its ``Content-Disposition``, if it has one.
        media_type: its ``Content-Type`` without parameters, or None when it has none.
        data: its bytes.
    """

    name: str
    filename: str | None
    media_type: str | None
    data: bytes


class _Collector:
    """The parser's callbacks: gathers headers and data of each part."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, str], bytes]] = []
        self.headers: dict[str, str] = {}
        self.field = bytearray()
        self.value = bytearray()
        self.data: list[bytes] = []
        self.ended = False

    def on_part_begin(self) -> None:
        self.headers = {}
        self.data = []

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field.decode("latin-1").lower()] = self.value.decode("latin-1")
        self.field.clear()
        self.value.clear()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.data.append(data[start:end])

    def on_part_end(self) -> None:
        self.parts.append((self.headers, b"".join(self.data)))

    def on_end(self) -> None:
        self.ended = True


def _malformed(problem: str) -> MalformedRequest:
    return MalformedRequest(
        f"The multipart body cannot be parsed: {problem}. {_HINT}",
        detail={"problem": problem},
    )


def parse(body: bytes, content_type: str) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in order.

    Args:
        body: the whole request body.
        content_type: the request's ``Content-Type`` header, with its ``boundary``.

    Raises:
        MalformedRequest: no boundary, a broken or truncated body, or a part without a
            ``Content-Disposition: form-data; name=...`` header.

    Example:
        parse(b'--x\\r\\nContent-Disposition: form-data; name="n"\\r\\n\\r\\n3\\r\\n--x--\\r\\n',
              "multipart/form-data; boundary=x")
    """
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise MalformedRequest(
            "The multipart body has no boundary: the Content-Type header must read "
            f"'multipart/form-data; boundary=...'. {_HINT}",
            detail={"problem": "no boundary"},
        )
    collector = _Collector()
    callbacks = {
        "on_part_begin": collector.on_part_begin,
        "on_header_field": collector.on_header_field,
        "on_header_value": collector.on_header_value,
        "on_header_end": collector.on_header_end,
        "on_part_data": collector.on_part_data,
        "on_part_end": collector.on_part_end,
        "on_end": collector.on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.logger = _SILENT
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise _malformed(str(exc).rstrip(".")) from None
    except ValueError as exc:  # a boundary the parser refuses
        raise _malformed(str(exc).rstrip(".")) from None
    if not collector.ended:
        raise _malformed("it ends before its closing boundary")
    parts = []
    for index, (headers, data) in enumerate(collector.parts):
        kind, options = parse_options_header(headers.get("content-disposition"))
        name = options.get(b"name")
        if kind != b"form-data" or name is None:
            raise _malformed(
                f"part {index + 1} has no 'Content-Disposition: form-data; name=\"...\"' header"
            )
        filename = options.get(b"filename")
        media_type = headers.get("content-type")
        parts.append(
            Part(
                name=name.decode("utf-8", "replace"),
                filename=None if filename is None else filename.decode("utf-8", "replace"),
                media_type=None
                if media_type is None
                else media_type.partition(";")[0].strip().lower() or None,
                data=data,
            )
        )
    return parts
