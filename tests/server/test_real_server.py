"""Every IO type, streaming with a client that goes away, and every error status, through a
real `tiffin serve` process on a free port."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.server.conftest import Server, start_server

SERVICE = """
import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel

import tiffin

STREAMS = Path("streams.log")


class Point(BaseModel):
    x: float
    y: float


@tiffin.service(name="everything", timeout=1, max_concurrency=1, max_queue=0)
class Everything:
    @tiffin.api
    def model(self, point: Point) -> Point:
        return Point(x=point.y, y=point.x)

    @tiffin.api
    def array(self, rows: Annotated[np.ndarray, tiffin.Shape(-1, 2)]) -> np.ndarray:
        return rows * 2

    @tiffin.api
    def frame(self, table: pd.DataFrame) -> pd.DataFrame:
        return table.assign(total=table["a"] + table["b"])

    @tiffin.api
    def upload(self, document: Path) -> int:
        return len(document.read_bytes())

    @tiffin.api
    def thumbnail(self, picture: Image.Image) -> Image.Image:
        return picture.resize((2, 2))

    @tiffin.api
    def shout(self, text: str) -> str:
        return text.upper()

    @tiffin.api
    def numbers(self, n: int) -> Iterator[int]:
        try:
            for i in range(n):
                yield i
                time.sleep(0.05)
        finally:
            with STREAMS.open("a") as log:
                log.write(f"closed after {i}\\n")

    @tiffin.api
    async def ticks(self, n: int) -> AsyncIterator[str]:
        try:
            for i in range(n):
                yield f"tick {i}"
                await asyncio.sleep(0.05)
        finally:
            with STREAMS.open("a") as log:
                log.write(f"async closed after {i}\\n")

    @tiffin.api
    def fail(self) -> int:
        raise KeyError("missing")

    @tiffin.api
    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("everything")
    (directory / "everything.py").write_text(SERVICE, encoding="utf-8")
    (directory / "tiffin.yaml").write_text("settings:\n  max_body_size: 4096\n")
    running = start_server(directory, "everything:Everything", home=directory / "home")
    yield running
    running.stop()


def test_every_io_type(server: Server) -> None:
    url = server.url
    assert httpx.post(f"{url}/model", json={"point": {"x": 1, "y": 2}}).json() == {
        "x": 2.0,
        "y": 1.0,
    }
    assert httpx.post(f"{url}/array", json={"rows": [[1, 2], [3, 4]]}).json() == [
        [2, 4],
        [6, 8],
    ]
    npy = io.BytesIO()
    np.save(npy, np.array([[0.5, 1.5]]))
    binary = httpx.post(
        f"{url}/array",
        content=npy.getvalue(),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert binary.headers["content-type"] == "application/x-npy"
    assert np.load(io.BytesIO(binary.content)).tolist() == [[1.0, 3.0]]

    frame = httpx.post(f"{url}/frame", json={"table": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]})
    assert frame.json() == [{"a": 1, "b": 2, "total": 3}, {"a": 3, "b": 4, "total": 7}]
    csv = httpx.post(
        f"{url}/frame",
        content=b"a,b\n5,6\n",
        headers={"content-type": "text/csv", "accept": "text/csv"},
    )
    assert pd.read_csv(io.StringIO(csv.text)).to_dict("records") == [{"a": 5, "b": 6, "total": 11}]

    upload = httpx.post(f"{url}/upload", files={"document": ("notes.txt", b"twelve bytes")})
    assert upload.json() == 12

    picture = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(picture, format="PNG")
    thumb = httpx.post(
        f"{url}/thumbnail", content=picture.getvalue(), headers={"content-type": "image/png"}
    )
    assert thumb.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumb.content)).size == (2, 2)

    assert httpx.post(f"{url}/shout", json={"text": "hi"}).json() == "HI"
    plain = httpx.post(
        f"{url}/shout",
        content=b"quiet",
        headers={"content-type": "text/plain", "accept": "text/plain"},
    )
    assert plain.text == "QUIET"


def _streams_log(server: Server) -> str:
    log = Path(server.stdout).parent / "streams.log"
    return log.read_text() if log.exists() else ""


def test_streams_and_a_client_that_disconnects(server: Server) -> None:
    with httpx.stream("POST", f"{server.url}/numbers", json={"n": 3}) as whole:
        assert whole.headers["content-type"] == "text/event-stream"
        assert whole.read() == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"

    for route, closed in (("/numbers", "closed after"), ("/ticks", "async closed after")):
        before = _streams_log(server).count(closed)
        with httpx.stream("POST", f"{server.url}{route}", json={"n": 1000}) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line)
            assert first.startswith("data: ")
        # the client went away after one event: the generator is stopped, not run to 1000
        deadline = time.monotonic() + 10
        while _streams_log(server).count(closed) == before:
            assert time.monotonic() < deadline, f"{route}: the generator was not closed"
            time.sleep(0.05)
        last = [line for line in _streams_log(server).splitlines() if line.startswith(closed)]
        assert int(last[-1].rsplit(" ", 1)[1]) < 100


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["type"], body["message"]


def test_each_error_status_with_its_body(server: Server) -> None:
    url = server.url
    assert _error(
        httpx.post(f"{url}/model", content=b"{", headers={"content-type": "application/json"})
    )[:2] == (400, "MalformedRequest")
    assert _error(httpx.get(f"{url}/model"))[:2] == (405, "MethodNotAllowed")
    assert _error(httpx.post(f"{url}/nothing", json={}))[:2] == (404, "RouteNotFound")
    assert _error(httpx.post(f"{url}/shout", json={"text": "x" * 5000}))[:2] == (
        413,
        "PayloadTooLarge",
    )
    assert _error(httpx.post(f"{url}/model", content=b"x", headers={"content-type": "text/csv"}))[
        :2
    ] == (415, "UnsupportedMediaType")
    status, kind, message = _error(httpx.post(f"{url}/model", json={"point": {"x": 1}}))
    assert (status, kind) == (422, "ValidationFailed")
    assert message.startswith("Invalid request to API 'model': 'point.y' is required.")

    failed = httpx.post(f"{url}/fail", json={}, headers={"x-request-id": "trace-me"})
    assert _error(failed) == (
        500,
        "ServiceError",
        "API 'fail' failed: the service's code raised KeyError. The server log has the "
        "traceback under request id trace-me.",
    )
    assert "KeyError: 'missing'" in server.log()

    timed_out = httpx.post(f"{url}/sleep", json={"seconds": 3}, timeout=10)
    assert _error(timed_out)[:2] == (504, "RequestTimeout")
    # the sleeping thread still holds the only slot, and nothing may queue: 503
    busy = httpx.post(f"{url}/sleep", json={"seconds": 0})
    assert _error(busy)[:2] == (503, "ServiceUnavailable")
    assert busy.headers["retry-after"] == "1"
    # the worker keeps serving once the slow call is done
    deadline = time.monotonic() + 10
    while httpx.post(f"{url}/sleep", json={"seconds": 0}).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_api_keys_through_a_real_server(tmp_path: Path) -> None:
    (tmp_path / "everything.py").write_text(SERVICE, encoding="utf-8")
    (tmp_path / "tiffin.yaml").write_text(
        "service: everything:Everything\nsettings:\n  api_keys: [k-123]\n"
    )
    running = start_server(tmp_path, home=tmp_path / "home")
    try:
        refused = httpx.post(f"{running.url}/shout", json={"text": "a"})
        assert _error(refused) == (
            401,
            "Unauthorized",
            "This server needs an API key. Send it as 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>'.",
        )
        assert refused.headers["www-authenticate"] == 'Bearer realm="tiffin"'
        allowed = httpx.post(
            f"{running.url}/shout", json={"text": "a"}, headers={"Authorization": "Bearer k-123"}
        )
        assert allowed.json() == "A"
        assert httpx.get(f"{running.url}/readyz").status_code == 200
    finally:
        assert running.stop() == 0
    assert "k-123" not in running.log()
