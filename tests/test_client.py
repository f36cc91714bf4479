"""``tiffin.Client`` and ``tiffin.AsyncClient`` against a real server on a free port."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import BaseModel

import tiffin
from tests.server.asgi import live_server
from tiffin.client import AsyncStream, Stream
from tiffin.exceptions import (
    InvalidArgument,
    ModelNotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    RouteNotFound,
    ServiceError,
    ServiceUnavailable,
    TiffinError,
    Unauthorized,
    ValidationFailed,
)


def free_url() -> str:
    """The URL of a port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Point(BaseModel):
    x: float
    y: float


@tiffin.service(name="calc")
class Calc:
    """Arithmetic for the client tests."""

    @tiffin.api
    def add(self, a: float, b: float = 1.0) -> float:
        """Add two numbers.

        Returns a + b."""
        return a + b

    @tiffin.api
    def echo(self, value: Any) -> Any:
        return value

    @tiffin.api(route="/v1/scale", name="scale")
    async def scale_points(self, points: list[Point], factor: float = 2.0) -> list[Point]:
        return [Point(x=p.x * factor, y=p.y * factor) for p in points]

    @tiffin.api
    def total(self, values: np.ndarray) -> dict[str, Any]:
        return {"sum": float(values.sum()), "shape": list(values.shape)}

    @tiffin.api
    def count(self, n: int) -> Iterator[int]:
        for i in range(n):
            if i == 2 and n == 99:
                raise RuntimeError("stream broke")
            yield i

    @tiffin.api
    def broken(self) -> int:
        raise ZeroDivisionError("division by zero")

    @tiffin.api
    def lookup(self, tag: str) -> str:
        raise ModelNotFound(
            f"Model '{tag}' not found. Run 'tiffin models list' to see saved models.",
            detail={"tag": tag},
        )

    @tiffin.api
    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    @tiffin.api
    def size(self, upload: Path, label: str = "") -> dict[str, Any]:
        return {"bytes": upload.stat().st_size, "label": label}


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with live_server(Calc, timeout=1.0, max_body_size=100_000) as address:
        yield address


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    with live_server(Calc, api_keys=("k",)) as address:
        yield address


@pytest.fixture
def client(url: str) -> Iterator[tiffin.Client]:
    with tiffin.Client(url) as made:
        yield made


def run(main: Callable[[], Any]) -> None:
    asyncio.run(main())


async def collect(items: AsyncIterable[Any], into: list[Any]) -> None:
    async for item in items:
        into.append(item)


# -- calls -------------------------------------------------------------------------------


def test_json_types_pydantic_models_and_numpy_arrays(client: tiffin.Client) -> None:
    assert client.add(a=2, b=3) == 5.0
    assert client.add(a=2) == 3.0
    value = {"text": "tiffin", "list": [1, 2.5, None, True], "nested": {"a": []}}
    assert client.echo(value=value) == value
    assert client.echo(value="plain") == "plain"
    assert client.echo(value=None) is None
    scaled = client.scale(points=[Point(x=1, y=2), {"x": 0.5, "y": 0}], factor=3)
    assert scaled == [{"x": 3.0, "y": 6.0}, {"x": 1.5, "y": 0.0}]
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert client.total(values=values) == {"sum": 15.0, "shape": [2, 3]}
    assert client.echo(value={"scalar": np.int64(7), "row": np.ones(2)}) == {
        "scalar": 7,
        "row": [1.0, 1.0],
    }
    assert client.call("add", a=1, b=1) == 2.0
    assert client.health() is True


def test_files_are_sent_as_multipart_parts(client: tiffin.Client, tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"x" * 10)
    assert client.size(upload=path, label="a path") == {"bytes": 10, "label": "a path"}
    assert client.size(upload=b"abc") == {"bytes": 3, "label": ""}
    with path.open("rb") as file:
        assert client.size(upload=file, label="7") == {"bytes": 10, "label": "7"}
    with path.open() as text, pytest.raises(InvalidArgument, match="open it with 'rb'"):
        client.size(upload=text)


def test_apis_are_listed_described_and_checked_by_name(client: tiffin.Client) -> None:
    names = dir(client)
    for name in ("add", "broken", "count", "echo", "scale", "total", "close", "health"):
        assert name in names
    assert str(inspect.signature(client.add)) == "(*, a, b=1.0)"
    assert client.add.__doc__ == "POST /add\n\nAdd two numbers.\n\nReturns a + b."
    assert repr(client.scale) == "<tiffin API scale POST /v1/scale>"

    with pytest.raises(AttributeError) as missing:
        client.predict(x=1)
    assert str(missing.value) == (
        f"The server at {client.url} has no API 'predict'. Its APIs are: add, broken, count, "
        f"echo, lookup, scale, size, slow, total (see {client.url}/docs)."
    )
    with pytest.raises(AttributeError, match="no API 'predict'"):
        client.call("predict")
    assert not hasattr(client, "predict")
    with pytest.raises(TypeError, match=r"keyword arguments only: client.add\(a=..., b=...\)"):
        client.add(1, 2)


def test_unknown_arguments_reach_the_server_which_names_them(client: tiffin.Client) -> None:
    with pytest.raises(ValidationFailed) as failed:
        client.add(a=1, c=2)
    assert failed.value.detail["errors"] == [
        {"loc": "c", "msg": "is not a parameter of this API (it takes the keys 'a', 'b')"}
    ]


# -- streams -----------------------------------------------------------------------------


def test_a_stream_is_an_iterator_of_items(client: tiffin.Client) -> None:
    items = client.count(n=3)
    assert isinstance(items, Stream)
    assert list(items) == [0, 1, 2]
    assert list(client.count(n=0)) == []

    received: list[Any] = []
    with pytest.raises(ServiceError) as failed:
        received.extend(client.count(n=99))  # keeps what came before the error
    assert received == [0, 1]
    request_id = failed.value.detail["request_id"]
    assert failed.value.message == (
        "API 'count' failed: the service's code raised RuntimeError. The server log has the "
        f"traceback under request id {request_id}."
    )

    with client.count(n=10_000) as endless:  # leaving early ends the request
        assert next(endless) == 0
    assert client.add(a=1) == 2.0


def test_async_streams_with_an_error_mid_stream(url: str) -> None:
    async def main() -> None:
        async with tiffin.AsyncClient(url) as client:
            assert [item async for item in client.count(n=3)] == [0, 1, 2]
            received: list[Any] = []
            with pytest.raises(ServiceError, match="raised RuntimeError"):
                await collect(client.count(n=99), received)
            assert received == [0, 1]

            stream = await client.count(n=2)
            assert isinstance(stream, AsyncStream)
            async with stream:
                assert [item async for item in stream] == [0, 1]
            async with await client.count(n=10_000) as endless:
                assert await anext(endless) == 0

            with pytest.raises(TypeError, match=r"does not stream.*await client.add"):
                async for _ in client.add(a=1):
                    pass

    run(main)


# -- errors ------------------------------------------------------------------------------


def test_every_error_comes_back_as_its_class(client: tiffin.Client, url: str) -> None:
    with pytest.raises(ValidationFailed) as invalid:
        client.add(a="not a number")
    assert invalid.value.status_code == 422
    assert invalid.value.message.startswith("Invalid request to API 'add': 'a' Input should be")
    assert invalid.value.detail["errors"][0]["loc"] == "a"
    with pytest.raises(ValidationFailed, match="'a' is required"):
        client.add()

    with pytest.raises(ServiceError) as failed:
        client.broken()
    request_id = failed.value.detail["request_id"]
    assert len(request_id) == 32
    assert failed.value.detail == {"request_id": request_id, "api": "broken"}
    assert f"under request id {request_id}" in failed.value.message

    with pytest.raises(ModelNotFound) as missing:
        client.lookup(tag="iris:v9")
    assert missing.value.message == (
        "Model 'iris:v9' not found. Run 'tiffin models list' to see saved models."
    )
    assert missing.value.detail == {"tag": "iris:v9"}

    with pytest.raises(RequestTimeout) as slow:
        client.slow(seconds=1.5)
    assert slow.value.detail == {"timeout": 1.0, "api": "slow"}

    with pytest.raises(PayloadTooLarge, match="this server takes at most 100000"):
        client.total(values=np.zeros(50_000))

    with tiffin.Client(url + "/nothing-here") as wrong, pytest.raises(RouteNotFound) as route:
        wrong.add(a=1)
    assert route.value.detail == {"path": "/nothing-here/openapi.json"}


def test_a_client_timeout_is_a_request_timeout(url: str) -> None:
    with tiffin.Client(url, timeout=0.1) as impatient, pytest.raises(RequestTimeout) as late:
        impatient.slow(seconds=0.5)
    assert "did not answer in time" in late.value.message
    assert "timeout=300" in late.value.message


def test_api_keys_are_sent_as_bearer_tokens(keyed_url: str) -> None:
    with tiffin.Client(keyed_url) as anonymous:
        assert anonymous.health() is True  # probes need no key
        with pytest.raises(Unauthorized) as missing:
            anonymous.add(a=1)
        assert missing.value.message.startswith("This server needs an API key.")
    with tiffin.Client(keyed_url, api_key="wrong") as wrong, pytest.raises(Unauthorized) as bad:
        wrong.add(a=1)
    assert bad.value.message.startswith("The API key sent is not valid.")
    with tiffin.Client(keyed_url, api_key="k") as keyed:
        assert keyed.add(a=1) == 2.0
    headers = {"Authorization": "Bearer k"}
    with tiffin.Client(keyed_url, headers=headers) as by_header:
        assert by_header.add(a=1) == 2.0

    async def main() -> None:
        async with tiffin.AsyncClient(keyed_url, api_key="wrong") as client:
            with pytest.raises(Unauthorized):
                await client.add(a=1)
        async with tiffin.AsyncClient(keyed_url, api_key="k") as client:
            assert await client.add(a=1) == 2.0

    run(main)


def test_a_server_that_is_not_there(tmp_path: Path) -> None:
    url = free_url()
    with tiffin.Client(url) as client:
        assert client.health() is False
        with pytest.raises(ServiceUnavailable) as down:
            client.add(a=1)
    assert down.value.message.startswith(f"Cannot connect to a tiffin server at {url} (")
    assert down.value.message.endswith(
        "Start one with 'tiffin serve module:Class', or check the URL."
    )
    assert down.value.detail == {"url": f"{url}/openapi.json"}
    assert down.value.status_code == 503

    async def main() -> None:
        client = tiffin.AsyncClient(url)
        assert await client.health() is False
        with pytest.raises(ServiceUnavailable, match="tiffin serve"):
            await client.add(a=1)
        await client.aclose()
        with pytest.raises(ServiceUnavailable, match="Cannot connect"):
            async with tiffin.AsyncClient(url):
                pass

    run(main)


def test_answers_from_something_that_is_not_tiffin() -> None:
    """A proxy in front of the server, say: no tiffin error body, or no OpenAPI document."""

    def proxy(request: httpx.Request) -> httpx.Response:
        if request.url.host != "proxy":
            return httpx.Response(418)
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json={"paths": {"/add": {"post": {"operationId": "add"}}}})
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    http = httpx.Client(transport=httpx.MockTransport(proxy))
    with (
        tiffin.Client("http://proxy", http=http) as client,
        pytest.raises(ServiceUnavailable) as bad,
    ):
        client.add(a=1)
    assert bad.value.message == (
        "POST http://proxy/add answered 502 Bad Gateway: <html>Bad Gateway</html>. Check that "
        "http://proxy is a tiffin server, and look in its log."
    )
    assert bad.value.detail == {
        "status": 502,
        "url": "http://proxy/add",
        "body": "<html>Bad Gateway</html>",
    }
    assert not http.is_closed  # a client passed in stays open
    with tiffin.Client("http://teapot", http=http) as other, pytest.raises(RequestError) as odd:
        other.add(a=1)
    assert odd.value.message == (
        "GET http://teapot/openapi.json answered 418 I'm a teapot. Check that http://teapot is "
        "a tiffin server, and look in its log."
    )
    http.close()


def test_a_document_without_apis_is_not_a_tiffin_server() -> None:
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, json={})))
    with tiffin.Client("http://other", http=http) as client, pytest.raises(TiffinError) as wrong:
        client.add(a=1)
    assert wrong.value.message == (
        "http://other/openapi.json lists no tiffin APIs. Check that http://other is the "
        "address of a tiffin server."
    )
    http.close()


def test_server_sent_event_framing() -> None:
    """Comments, multi-line data, CRLF and CR line ends, named and unknown events."""
    body = (
        b": a comment\r\n"
        b"data: 1\r\n\r\n"
        b"data: [1,\n"
        b"data: 2]\n\n"
        b"event: keep-alive\ndata: ignored\n\n"
        b'id: 7\rdata:{"no": "space"}\r\r'
        b"data\n\n"  # a field without a colon: an event with empty data, skipped
        b"event: error\n"
        b'data: {"error": {"type": "RequestTimeout", "message": "Too slow.", "detail": {"a": 1}}}'
        b"\n\n"
    )

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/openapi.json":
            stream: dict[str, Any] = {"200": {"content": {"text/event-stream": {}}}}
            paths = {"/tokens": {"post": {"operationId": "tokens", "responses": stream}}}
            return httpx.Response(200, json={"paths": paths})
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    http = httpx.Client(transport=httpx.MockTransport(server))
    received: list[Any] = []
    with tiffin.Client("http://sse", http=http) as client, pytest.raises(RequestTimeout) as error:
        received.extend(client.tokens())
    assert received == [1, [1, 2], {"no": "space"}]
    assert error.value.message == "Too slow."
    assert error.value.detail == {"a": 1}
    http.close()


def test_arguments_are_checked_where_they_are_given() -> None:
    with pytest.raises(InvalidArgument, match="must start with http:// or https://"):
        tiffin.Client("localhost:3000")
    with pytest.raises(InvalidArgument, match=r"use tiffin\.AsyncClient"):
        tiffin.Client("http://x", http=httpx.AsyncClient())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"use tiffin\.Client"):
        tiffin.AsyncClient("http://x", http=httpx.Client())  # type: ignore[arg-type]
    assert repr(tiffin.Client("http://x/")) == "<Client http://x>"


# -- async -------------------------------------------------------------------------------


def test_async_client_calls_and_errors(url: str) -> None:
    async def main() -> None:
        lazy = tiffin.AsyncClient(url)
        with pytest.raises(AttributeError, match=r"no API 'predict'\. Its APIs are: add,"):
            await lazy.predict(x=1)  # unknown until the APIs are read, then refused
        assert "add" in dir(lazy)
        with pytest.raises(AttributeError, match="no API 'predict'"):
            lazy.predict  # noqa: B018 - known at once now
        await lazy.aclose()

        async with tiffin.AsyncClient(url) as client:
            assert "scale" in dir(client)
            assert await client.add(a=2, b=3) == 5.0
            assert await client.call("add", a=1) == 2.0
            scaled = await client.scale(points=[Point(x=1, y=2)])
            assert scaled == [{"x": 2.0, "y": 4.0}]
            assert await client.total(values=np.ones((2, 2))) == {"sum": 4.0, "shape": [2, 2]}
            assert await client.health() is True
            with pytest.raises(ValidationFailed, match="'a' is required"):
                await client.add()
            with pytest.raises(ServiceError) as failed:
                await client.broken()
            assert failed.value.detail["api"] == "broken"
            with pytest.raises(ModelNotFound):
                await client.lookup(tag="x")
            with pytest.raises(RequestError):
                await client.add(a=1, c=2)
            results = await asyncio.gather(*(client.add(a=i) for i in range(20)))
            assert results == [i + 1.0 for i in range(20)]

    run(main)


def test_async_client_over_a_given_http_client(url: str) -> None:
    async def main() -> None:
        async with httpx.AsyncClient() as http:
            client = tiffin.AsyncClient(url, http=http)
            assert await client.add(a=1) == 2.0
            await client.close()
            assert not http.is_closed

    run(main)
