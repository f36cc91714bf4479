"""multipart/form-data requests: how each part becomes a parameter, and the 400/415/422 a
client gets for a body that is broken or does not fit the API."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import numpy as np
from pydantic import BaseModel

import tiffin
from tests.server.asgi import serving


class Point(BaseModel):
    x: float
    y: float


@tiffin.service(name="forms")
class Forms:
    """Forms for tests."""

    @tiffin.api
    def place(
        self,
        scan: Path,
        where: Point,
        mode: Literal["fast", "exact"] = "fast",
        tags: list[str] | None = None,
        weights: Annotated[np.ndarray, tiffin.Shape(-1)] | None = None,
    ) -> dict[str, Any]:
        return {
            "scan": scan.read_bytes().decode(),
            "where": where.model_dump(),
            "mode": mode,
            "tags": tags,
            "weights": None if weights is None else weights.tolist(),
        }

    @tiffin.api
    def total(self, values: np.ndarray) -> float:
        return float(values.sum())

    @tiffin.api
    def plain(self, n: int) -> int:
        return n


def run(test: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serving(Forms) as (client, _):
            await test(client)

    asyncio.run(main())


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def form(*parts: bytes, boundary: bytes = b"XyZ") -> tuple[bytes, dict[str, str]]:
    """A multipart body made by hand, for bodies no HTTP client would build."""
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    body += b"--" + boundary + b"--\r\n"
    return body, {"content-type": f"multipart/form-data; boundary={boundary.decode()}"}


def field(
    name: str, value: bytes, content_type: str | None = None, filename: str | None = None
) -> bytes:
    file = "" if filename is None else f'; filename="{filename}"'
    head = f'Content-Disposition: form-data; name="{name}"{file}\r\n'.encode()
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n".encode()
    return head + b"\r\n" + value


def npy(array: Any) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asarray(array))
    return out.getvalue()


def test_each_part_becomes_a_parameter() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        body, headers = form(
            field("scan", b"scanned", "image/x-anything"),
            field("where", b'{"x": 1, "y": 2.5}'),
            field("mode", b"exact"),
            field("tags", b'["a", "b"]', "application/json; charset=utf-8"),
            field("weights", b"[0.5, 1.5]"),
        )
        response = await client.post("/place", content=body, headers=headers)
        assert response.status_code == 200
        assert response.json() == {
            "scan": "scanned",
            "where": {"x": 1.0, "y": 2.5},
            "mode": "exact",
            "tags": ["a", "b"],
            "weights": [0.5, 1.5],
        }
        # an array may also come as a .npy file part, and a JSON value as a file
        files = await client.post(
            "/place",
            files={
                "scan": ("s.txt", b"s"),
                "where": ("where.json", b'{"x": 0, "y": 0}', "application/json"),
                "weights": ("w.npy", npy([1, 2, 3]), "application/x-npy"),
            },
        )
        assert files.status_code == 200
        assert files.json()["weights"] == [1.0, 2.0, 3.0]
        assert files.json()["where"] == {"x": 0.0, "y": 0.0}

        npy_part = await client.post("/total", files={"values": ("v.npy", npy([[1, 2], [3, 4]]))})
        assert npy_part.json() == 10.0
        json_field = await client.post("/total", files={"values": (None, b"[1, 2]")})
        assert json_field.json() == 3.0

    run(test)


def test_parts_that_do_not_fit_are_422() -> None:
    hint = "Send multipart/form-data with the parts 'scan', 'where', 'mode', 'tags', 'weights'"

    def invalid(loc: str, msg: str) -> dict[str, Any]:
        return {
            "type": "ValidationFailed",
            "message": f"Invalid request to API 'place': '{loc}' {msg}. {hint}; /docs shows "
            "the schema.",
            "detail": {"errors": [{"loc": loc, "msg": msg}]},
        }

    async def test(client: httpx.AsyncClient) -> None:
        scan = field("scan", b"s", "text/plain")
        cases = [
            (
                field("where", b'{"x": 1,', "application/json"),
                "where",
                "is not valid JSON (unexpected end of data: line 1 column 9 (char 8))",
            ),
            (
                field("where", b"somewhere"),
                "where",
                "Input should be a valid dictionary or instance of Point",
            ),
            (
                field("where", b"\xff\xfe"),
                "where",
                "is neither JSON nor UTF-8 text; send the value as JSON",
            ),
            (
                field("weights", b"not npy", "application/x-npy"),
                "weights",
                "is not a .npy file (it does not start with the .npy magic bytes); send an array "
                "written by numpy.save",
            ),
            (
                field("weights", b"1,2", "text/csv", filename="w.csv"),
                "weights",
                "is a part of type 'text/csv'; send it as application/x-npy or application/json",
            ),
        ]
        where = field("where", b'{"x": 1, "y": 2}')
        for part, loc, msg in cases:
            parts = [scan, field("mode", b"fast"), part] + ([where] if loc != "where" else [])
            body, headers = form(*parts)
            response = await client.post("/place", content=body, headers=headers)
            assert response.status_code == 422, part
            assert error_of(response) == invalid(loc, msg), part

        several = await client.post("/place", files={"mode": (None, b"slow"), "nope": (None, b"1")})
        assert error_of(several)["detail"]["errors"] == [
            {
                "loc": "nope",
                "msg": "is not a parameter of this API (it takes the parts 'scan', 'where', "
                "'mode', 'tags', 'weights')",
            }
        ]
        incomplete = await client.post("/place", files={"mode": (None, b"slow")})
        assert error_of(incomplete)["detail"]["errors"] == [
            {"loc": "scan", "msg": "is required"},
            {"loc": "where", "msg": "is required"},
            {"loc": "mode", "msg": "Input should be 'fast' or 'exact'"},
        ]
        assert error_of(incomplete)["message"].startswith(
            "Invalid request to API 'place': 'scan' is required (and 2 more). "
        )

    run(test)


def test_a_broken_body_is_400() -> None:
    hint = (
        "Send multipart/form-data as an HTTP client builds it (curl -F 'name=@file', httpx "
        "files=...), with one part per parameter."
    )
    good, headers = form(field("scan", b"s"))

    def malformed(problem: str) -> dict[str, Any]:
        return {
            "type": "MalformedRequest",
            "message": f"The multipart body cannot be parsed: {problem}. {hint}",
            "detail": {"problem": problem},
        }

    async def test(client: httpx.AsyncClient) -> None:
        no_boundary = await client.post(
            "/place", content=good, headers={"content-type": "multipart/form-data"}
        )
        assert no_boundary.status_code == 400
        assert error_of(no_boundary) == {
            "type": "MalformedRequest",
            "message": "The multipart body has no boundary: the Content-Type header must read "
            f"'multipart/form-data; boundary=...'. {hint}",
            "detail": {"problem": "no boundary"},
        }
        cases = [
            (good[: len(good) // 2], "it ends before its closing boundary"),
            (b"", "it ends before its closing boundary"),
            (b"plain text", "Expected boundary character 45, got 112 at index 2"),
            (
                form(b"Content-Disposition form-data\r\n\r\nx")[0],
                "Found invalid character 32 in header at 26",
            ),
            (
                form(b"Content-Type: text/plain\r\n\r\nx")[0],
                "part 1 has no 'Content-Disposition: form-data; name=\"...\"' header",
            ),
            (
                form(field("scan", b"s"), b'Content-Disposition: attachment; name="a"\r\n\r\nx')[0],
                "part 2 has no 'Content-Disposition: form-data; name=\"...\"' header",
            ),
        ]
        for body, problem in cases:
            response = await client.post("/place", content=body, headers=headers)
            assert response.status_code == 400, body
            assert error_of(response) == malformed(problem), body

    run(test)


def test_only_apis_that_take_files_take_multipart() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        response = await client.post("/plain", files={"n": (None, b"1")})
        assert response.status_code == 415
        assert error_of(response) == {
            "type": "UnsupportedMediaType",
            "message": "API 'plain' does not take 'multipart/form-data' bodies. Send "
            "application/json (set the Content-Type header).",
            "detail": {"content_type": "multipart/form-data", "accepted": ["application/json"]},
        }

    run(test)
