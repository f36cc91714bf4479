"""Files: uploads to a temporary pathlib.Path (multipart parts or a raw body), removed after
the request whatever happened; a Path result sent as the file's bytes."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tiffin
from tests.server.asgi import serving
from tiffin.exceptions import ServiceDefinitionError

# the paths each API was given, to check after the request that they are gone
RECEIVED: list[Path] = []
OCTET = {"content-type": "application/octet-stream"}


@tiffin.service(name="files")
class Files:
    """Files for tests."""

    @tiffin.api
    def inspect(self, document: Path, note: str = "", pages: int = 1) -> dict[str, Any]:
        """Read an uploaded document."""
        RECEIVED.append(document)
        return {
            "text": document.read_text(),
            "suffix": document.suffix,
            "in_temp": document.parent == Path(tempfile.gettempdir()),
            "note": note,
            "pages": pages,
        }

    @tiffin.api
    def checksum(self, blob: Path) -> str:
        RECEIVED.append(blob)
        return hashlib.sha256(blob.read_bytes()).hexdigest()

    @tiffin.api
    async def crash(self, upload: Path) -> int:
        RECEIVED.append(upload)
        raise RuntimeError("the model fell over")

    @tiffin.api
    def maybe(self, attachment: Path | None = None) -> int:
        if attachment is not None:
            RECEIVED.append(attachment)
        return -1 if attachment is None else attachment.stat().st_size

    @tiffin.api
    def export(self, text: str, name: str) -> Path:
        """Write a file and send it back."""
        path = Path(tempfile.gettempdir(), name)
        path.write_text(text)
        return path

    @tiffin.api
    def lost(self) -> Path:
        return Path(tempfile.gettempdir(), "never-written.txt")


@pytest.fixture(autouse=True)
def uploads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Uploads land in an empty folder of this test's own."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    RECEIVED.clear()
    yield folder
    RECEIVED.clear()


def run(test: Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serving(Files) as (client, _):
            await test(client)

    asyncio.run(main())


def error_of(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


def test_a_multipart_upload_is_a_temporary_file_removed_after(uploads: Path) -> None:
    async def test(client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/inspect",
            files={"document": ("notes.TXT", b"hello file", "text/plain")},
            data={"note": "12", "pages": "3"},
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        # a str field stays text ("12"), other fields are read as JSON (3)
        assert response.json() == {
            "text": "hello file",
            "suffix": ".txt",
            "in_temp": True,
            "note": "12",
            "pages": 3,
        }
        assert len(RECEIVED) == 1
        assert RECEIVED[0].parent == uploads
        assert not RECEIVED[0].exists()
        assert list(uploads.iterdir()) == []

        # the client's file name gives only a plain suffix, never a path
        for filename, suffix in [
            ("../../etc/cron.d/evil.sh", ".sh"),
            ("C:\\Users\\me\\scan.PDF", ".pdf"),
            ("archive.tar.gz", ".gz"),
            ("odd.<script>", ""),
            ("no-suffix", ""),
            ("", ""),
        ]:
            answer = await client.post(
                "/inspect", files={"document": (filename, b"x", "application/octet-stream")}
            )
            assert answer.status_code == 200, filename
            assert answer.json()["suffix"] == suffix, filename
            assert answer.json()["in_temp"] is True
        # a part without a file name is a file all the same
        field = await client.post("/inspect", files={"document": (None, b"typed in")})
        assert field.json()["text"] == "typed in"
        assert list(uploads.iterdir()) == []

    run(test)


def test_a_raw_body_for_an_api_whose_only_parameter_is_a_file(uploads: Path) -> None:
    payload = bytes(range(256)) * 100

    async def test(client: httpx.AsyncClient) -> None:
        raw = await client.post("/checksum", content=payload, headers=OCTET)
        assert raw.status_code == 200
        assert raw.json() == hashlib.sha256(payload).hexdigest()
        form = await client.post("/checksum", files={"blob": ("data.bin", payload)})
        assert form.json() == hashlib.sha256(payload).hexdigest()
        empty = await client.post("/checksum", content=b"", headers=OCTET)
        assert empty.json() == hashlib.sha256(b"").hexdigest()
        assert [p.exists() for p in RECEIVED] == [False, False, False]

        # with more parameters, a raw body cannot say which one it is
        other = await client.post("/inspect", content=b"x", headers=OCTET)
        assert other.status_code == 415
        assert error_of(other) == {
            "type": "UnsupportedMediaType",
            "message": "API 'inspect' does not take 'application/octet-stream' bodies. Send "
            "multipart/form-data (set the Content-Type header).",
            "detail": {
                "content_type": "application/octet-stream",
                "accepted": ["multipart/form-data"],
            },
        }
        pdf = await client.post("/checksum", content=b"%PDF", headers={"content-type": "a/pdf"})
        assert pdf.status_code == 415
        assert error_of(pdf)["message"] == (
            "API 'checksum' does not take 'a/pdf' bodies. Send multipart/form-data or "
            "application/octet-stream (set the Content-Type header)."
        )
        assert list(uploads.iterdir()) == []

    run(test)


def test_the_file_is_removed_when_the_api_raises(uploads: Path) -> None:
    async def test(client: httpx.AsyncClient) -> None:
        response = await client.post("/crash", files={"upload": ("a.txt", b"boom")})
        assert response.status_code == 500
        assert error_of(response)["type"] == "ServiceError"
        assert len(RECEIVED) == 1
        assert not RECEIVED[0].exists()
        raw = await client.post("/crash", content=b"boom", headers=OCTET)
        assert raw.status_code == 500
        assert list(uploads.iterdir()) == []

    run(test)


def test_bad_uploads_are_refused_and_leave_no_file(uploads: Path) -> None:
    hint = "Send multipart/form-data with the parts 'document', 'note', 'pages'"

    def invalid(loc: str, msg: str) -> dict[str, Any]:
        return {
            "type": "ValidationFailed",
            "message": f"Invalid request to API 'inspect': '{loc}' {msg}. {hint}; /docs shows "
            "the schema.",
            "detail": {"errors": [{"loc": loc, "msg": msg}]},
        }

    async def test(client: httpx.AsyncClient) -> None:
        # a file cannot travel in JSON: a path there is never read from the server's disk
        as_json = await client.post("/inspect", json={"document": "/etc/passwd"})
        assert as_json.status_code == 422
        assert error_of(as_json) == invalid(
            "document", "is a file; send it as a part of a multipart/form-data request"
        )

        missing = await client.post("/inspect", files={"note": (None, b"hi")})
        assert missing.status_code == 422
        assert error_of(missing) == invalid("document", "is required")

        # the file was written, then another field failed: the file is removed
        bad_field = await client.post(
            "/inspect", files={"document": ("a.txt", b"x")}, data={"pages": "many"}
        )
        assert bad_field.status_code == 422
        assert error_of(bad_field) == invalid(
            "pages", "Input should be a valid integer, unable to parse string as an integer"
        )

        unknown = await client.post(
            "/inspect", files={"document": ("a.txt", b"x"), "attachment": ("b.txt", b"y")}
        )
        assert unknown.status_code == 422
        assert error_of(unknown) == invalid(
            "attachment",
            "is not a parameter of this API (it takes the parts 'document', 'note', 'pages')",
        )

        twice = await client.post(
            "/inspect",
            files=[("document", ("a.txt", b"x")), ("document", ("b.txt", b"y"))],
        )
        assert twice.status_code == 422
        assert error_of(twice) == invalid(
            "document", "was sent in more than one part; send one part per parameter"
        )
        assert RECEIVED == []
        assert list(uploads.iterdir()) == []

    run(test)


def test_an_optional_file() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        without = await client.post("/maybe", json={})
        assert without.json() == -1
        null = await client.post("/maybe", json={"attachment": None})
        assert null.json() == -1
        given = await client.post("/maybe", files={"attachment": ("a.bin", b"12345")})
        assert given.json() == 5
        raw = await client.post("/maybe", content=b"123", headers=OCTET)
        assert raw.json() == 3
        assert [p.exists() for p in RECEIVED] == [False, False]

    run(test)


def test_a_path_result_is_sent_as_the_file(uploads: Path) -> None:
    async def test(client: httpx.AsyncClient) -> None:
        for name, content_type in [
            ("report.txt", "text/plain"),
            ("data.json", "application/json"),
            ("page.html", "text/html"),
            ("blob.unknownsuffix", "application/octet-stream"),
        ]:
            response = await client.post("/export", json={"text": "ä content", "name": name})
            assert response.status_code == 200
            assert response.headers["content-type"] == content_type
            assert response.content == "ä content".encode()
            # the service's own file is left where it is
            assert (uploads / name).read_text() == "ä content"

        lost = await client.post("/lost", json={})
        assert lost.status_code == 500
        missing = uploads / "never-written.txt"
        assert error_of(lost) == {
            "type": "ServiceError",
            "message": "API 'lost' returned a value of type PosixPath that cannot be sent "
            f"(OSError: the file '{missing}' cannot be read (No such file or directory)). Fix "
            "the service to return what its annotation says (Path).",
            "detail": {"api": "lost"},
        }

    run(test)


def test_openapi_describes_uploads_and_files() -> None:
    async def test(client: httpx.AsyncClient) -> None:
        doc = (await client.get("/openapi.json")).json()
        inspect = doc["paths"]["/inspect"]["post"]
        content = inspect["requestBody"]["content"]
        assert list(content) == ["multipart/form-data"]
        form = content["multipart/form-data"]
        assert form["schema"]["required"] == ["document"]
        assert form["schema"]["properties"]["document"] == {
            "type": "string",
            "format": "binary",
            "description": "a file",
            "title": "Document",
        }
        assert form["schema"]["properties"]["pages"] == {
            "type": "integer",
            "default": 1,
            "title": "Pages",
        }
        assert form["encoding"] == {"document": {"contentType": "application/octet-stream"}}

        checksum = doc["paths"]["/checksum"]["post"]["requestBody"]["content"]
        assert list(checksum) == ["multipart/form-data", "application/octet-stream"]
        assert checksum["application/octet-stream"] == {
            "schema": {"type": "string", "format": "binary"}
        }
        # an optional file leaves JSON possible
        maybe = doc["paths"]["/maybe"]["post"]["requestBody"]["content"]
        assert list(maybe) == [
            "application/json",
            "multipart/form-data",
            "application/octet-stream",
        ]
        assert maybe["application/json"]["schema"]["properties"]["attachment"]["anyOf"] == [
            {"type": "string", "format": "binary", "description": "a file"},
            {"type": "null"},
        ]

        export = doc["paths"]["/export"]["post"]["responses"]["200"]
        assert export == {
            "description": "The file the API returned, with a Content-Type guessed from its name.",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }

    run(test)


def test_a_stream_of_files_is_refused_at_definition() -> None:
    with pytest.raises(ServiceDefinitionError) as caught:

        class Streams:
            @tiffin.api
            def frames(self, n: int) -> Iterator[Path]:
                yield Path(str(n))

    assert caught.value.message == (
        "API 'frames' streams file items, but each event of a stream is JSON and a file has no "
        "JSON form. Return one file instead, or stream JSON values."
    )
