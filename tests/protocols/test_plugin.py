"""The example protocol plugin (examples/jsonrpc_protocol), installed by pip as its README
says, found through its entry point, and called in-process and through a real
``tiffin serve``."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import pandas as pd
import pytest
from pydantic import BaseModel

import tiffin
from tests.server.asgi import serving
from tests.server.conftest import start_server
from tiffin import protocols
from tiffin.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "jsonrpc_protocol"
README = (EXAMPLE / "README.md").read_text(encoding="utf-8")


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


def commands(text: str) -> list[str]:
    """The commands of a README's console blocks (the lines after ``$ ``), each with the
    lines it continues on."""
    found = []
    for block in re.findall(r"```console\n(.*?)```", text, flags=re.DOTALL):
        for command in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            found.append(command.strip())
    return found


def curl_calls(text: str) -> list[tuple[str, str]]:
    """Each ``curl ... -d 'BODY'`` of a README with the output shown after it."""
    return re.findall(r"^\$ curl .*?-d '(.*?)'\n(.*?)\n", text, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the example is installed into by pip, offline, as the README says."""
    assert "jsonrpc" not in protocols.installed(), (
        "tiffin-jsonrpc is installed in this environment, so these tests cannot tell its "
        "copy from theirs; run 'pip uninstall tiffin-jsonrpc' first."
    )
    (install,) = [c for c in commands(README) if c.startswith("pip install ")]
    source = ROOT / install.removeprefix("pip install ")
    work = tmp_path_factory.mktemp("jsonrpc")
    # a copy, so the build's files (build/, *.egg-info) are not written into the project
    copy = work / "source"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), copy],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


@contextmanager
def installed(site: Path) -> Iterator[type[protocols.Protocol]]:
    """The plugin installed in ``site`` found by tiffin while inside, forgotten after."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        protocols.refresh()
        try:
            yield protocols.installed()["jsonrpc"]
        finally:
            sys.modules.pop("tiffin_jsonrpc", None)
    protocols.refresh()


@pytest.fixture
def plugin(site: Path) -> Iterator[type[protocols.Protocol]]:
    with installed(site) as cls:
        yield cls


class Point(BaseModel):
    x: float
    y: float


@tiffin.service(name="calc", timeout=5)
class Calc:
    """APIs that show each kind of JSON-RPC answer."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.meeting = asyncio.Barrier(2)

    @tiffin.api
    def add(self, a: float, b: float) -> float:
        return a + b

    @tiffin.api
    def scale(self, values: Annotated[np.ndarray, tiffin.DType("float64")]) -> np.ndarray:
        return values * 2

    @tiffin.api
    def middle(self, a: Point, b: Point) -> Point:
        return Point(x=(a.x + b.x) / 2, y=(a.y + b.y) / 2)

    @tiffin.api
    def table(self, n: int) -> pd.DataFrame:
        return pd.DataFrame({"i": range(n), "square": [i * i for i in range(n)]})

    @tiffin.api
    def note(self, text: str) -> None:
        self.notes.append(text)

    @tiffin.api
    def read_notes(self) -> list[str]:
        return self.notes

    @tiffin.api
    async def meet(self, name: str) -> str:
        """Returns only once another call is waiting here too."""
        await self.meeting.wait()
        return name

    @tiffin.api
    async def sleep(self, seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @tiffin.api
    def broken(self) -> int:
        raise ZeroDivisionError("division by zero")

    @tiffin.api
    def raw(self) -> bytes:
        return b"\x00"

    @tiffin.api
    def count(self, n: int) -> Iterator[int]:
        yield from range(n)


def rpc(method: str, params: Any = None, id_: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id_ is not None:
        message["id"] = id_
    return message


def error(code: int, message: str, data: Any = None, id_: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "error": body, "id": id_}


def test_pip_installs_the_plugin_and_tiffin_finds_it_only_while_on_the_path(site: Path) -> None:
    assert "jsonrpc" not in protocols.installed()
    assert (site / "tiffin_jsonrpc-0.1.0.dist-info" / "entry_points.txt").is_file()
    with installed(site) as cls:
        assert cls.name == "jsonrpc"
        assert Path(inspect.getfile(cls)).parent == site  # the copy pip installed
        assert sorted(protocols.installed()) == ["jsonrpc", "oip"]
    assert "jsonrpc" not in protocols.installed()
    assert "tiffin_jsonrpc" not in sys.modules


def test_calls_answer_with_the_json_of_the_apis_own_routes(
    plugin: type[protocols.Protocol],
) -> None:
    async def main() -> None:
        async with serving(Calc) as (client, app):
            assert plugin in [type(p) for p in app.protocols]
            response = await client.post(
                "/jsonrpc", json=rpc("add", {"a": 1, "b": 2}), headers={"X-Request-ID": "r-1"}
            )
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.headers["x-request-id"] == "r-1"
            assert response.content == b'{"jsonrpc":"2.0","result":3.0,"id":1}'

            for method, params, result in [
                ("scale", {"values": [1, 2.5]}, [2.0, 5.0]),
                ("middle", {"a": {"x": 0, "y": 0}, "b": {"x": 2, "y": 4}}, {"x": 1.0, "y": 2.0}),
                ("table", {"n": 3}, [{"i": i, "square": i * i} for i in range(3)]),
                ("note", {"text": "hello"}, None),
                ("read_notes", None, ["hello"]),
            ]:
                answer = await client.post("/jsonrpc", json=rpc(method, params, id_="x"))
                assert answer.json() == {"jsonrpc": "2.0", "result": result, "id": "x"}, method

            listed = await client.post("/jsonrpc", json=rpc("system.listMethods"))
            assert listed.json()["result"] == [
                "add", "broken", "meet", "middle", "note", "raw", "read_notes", "scale",
                "sleep", "table",
            ]  # fmt: skip

    run(main())


def test_a_batch_runs_its_calls_together_and_leaves_notifications_unanswered(
    plugin: type[protocols.Protocol],
) -> None:
    async def main() -> None:
        async with serving(Calc) as (client, _):
            batch = [
                rpc("meet", {"name": "ann"}, id_=1),
                rpc("note", {"text": "quiet"}, id_=None),
                rpc("nope", id_=None),  # a notification's error is not answered either
                rpc("meet", {"name": "bob"}, id_="two"),
            ]
            response = await client.post("/jsonrpc", json=batch)
            assert response.status_code == 200
            assert response.json() == [
                {"jsonrpc": "2.0", "result": "ann", "id": 1},
                {"jsonrpc": "2.0", "result": "bob", "id": "two"},
            ]

            only_notifications = [rpc("note", {"text": "more"}, id_=None)] * 2
            silent = await client.post("/jsonrpc", json=only_notifications)
            assert (silent.status_code, silent.content) == (204, b"")
            alone = await client.post("/jsonrpc", json=rpc("note", {"text": "last"}, id_=None))
            assert (alone.status_code, alone.content) == (204, b"")

            notes = await client.post("/jsonrpc", json=rpc("read_notes"))
            assert notes.json()["result"] == ["quiet", "more", "more", "last"]

    run(main())


def test_errors_are_json_rpc_error_objects_with_tiffins_messages(
    plugin: type[protocols.Protocol],
) -> None:
    async def main() -> None:
        async with serving(Calc) as (client, _):

            async def call(body: Any) -> Any:
                response = await client.post("/jsonrpc", json=body, headers={"X-Request-ID": "r-2"})
                assert response.status_code == 200
                return response.json()

            apis = "add, broken, meet, middle, note, raw, read_notes, scale, sleep, table"
            assert await call(rpc("nope")) == error(
                -32601,
                f"Service 'calc' has no API 'nope' that answers once (its APIs: {apis}).",
                {"type": "RouteNotFound", "detail": {"api": "nope"}},
            )
            streams = await call(rpc("count", {"n": 2}))
            assert streams["error"]["code"] == -32601

            errors = [{"loc": "b", "msg": "is required"}]
            assert await call(rpc("add", {"a": 1})) == error(
                -32602,
                "Invalid request to API 'add': 'b' is required. Send a JSON object with the "
                "keys 'a', 'b'; /docs shows the schema.",
                {"type": "ValidationFailed", "detail": {"errors": errors}},
            )
            extra = await call(rpc("add", {"a": 1, "b": 2, "c": 3}, id_="e"))
            assert extra["error"]["data"]["detail"]["errors"] == [
                {"loc": "c", "msg": "is not a parameter of this API (it takes the arguments "
                 "'a', 'b')"}
            ]  # fmt: skip
            assert await call(rpc("add", [1, 2])) == error(
                -32602,
                "Method 'add' takes its params by name, not by position. Send params as an "
                "object of the API's arguments.",
            )

            assert await call(rpc("broken")) == error(
                -32000,
                "API 'broken' failed: the service's code raised ZeroDivisionError. The server "
                "log has the traceback under request id r-2.",
                {"type": "ServiceError", "detail": {"request_id": "r-2", "api": "broken"}},
            )
            assert await call(rpc("raw")) == error(
                -32603,
                "Method 'raw' returned a bytes, which has no JSON form (Type is not JSON "
                "serializable: bytes). Fix the service to return what its annotation says.",
            )

            invalid = error(
                -32600,
                'Not a JSON-RPC 2.0 request. Send {"jsonrpc": "2.0", "method": "<api>", '
                '"params": {...}, "id": <string or number>}.',
                id_=None,
            )
            for body in (
                {"method": "add", "id": 1},  # no "jsonrpc": "2.0"
                {"jsonrpc": "2.0", "method": 5, "id": 1},
                {"jsonrpc": "2.0", "method": "add", "params": 3, "id": 1},
                {"jsonrpc": "2.0", "method": "add", "id": True},
                "add",
            ):
                assert await call(body) == invalid, body
            assert await call([1, rpc("add", {"a": 1, "b": 1}, id_=7)]) == [
                invalid,
                {"jsonrpc": "2.0", "result": 2.0, "id": 7},
            ]
            assert await call([]) == error(
                -32600, "The batch is empty. Send at least one request.", id_=None
            )

            malformed = await client.post("/jsonrpc", content=b'{"jsonrpc": "2.0", "method"')
            assert malformed.status_code == 200
            assert malformed.json() == error(
                -32700,
                "The body is not JSON (Expecting ':' delimiter: line 1 column 28 (char 27)). "
                "Send a request object.",
                id_=None,
            )
            not_utf8 = await client.post("/jsonrpc", content=b"\xff\xfe\xfa")
            assert not_utf8.json()["error"]["code"] == -32700

    run(main())


def test_requests_the_server_refuses_get_json_rpc_errors_with_their_http_status(
    plugin: type[protocols.Protocol],
) -> None:
    async def main() -> None:
        async with serving(Calc, api_keys=("k-1",), max_body_size=200) as (client, _):
            got = await client.get("/jsonrpc", headers={"X-API-Key": "k-1"})
            assert got.status_code == 405
            assert got.headers["allow"] == "POST"
            assert got.json() == error(
                -32000,
                "/jsonrpc takes POST, not GET.",
                {"type": "MethodNotAllowed", "detail": {"allowed": ["POST"]}},
                id_=None,
            )

            keyless = await client.post("/jsonrpc", json=rpc("add", {"a": 1, "b": 2}))
            assert keyless.status_code == 401
            assert keyless.json() == error(
                -32000,
                "This server needs an API key. Send it as 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'.",
                {"type": "Unauthorized", "detail": {}},
                id_=None,
            )

            big = rpc("note", {"text": "x" * 300})
            too_big = await client.post("/jsonrpc", json=big, headers={"X-API-Key": "k-1"})
            assert too_big.status_code == 413
            assert too_big.json()["error"]["code"] == -32000
            assert too_big.json()["error"]["data"]["type"] == "PayloadTooLarge"

            keyed = await client.post(
                "/jsonrpc", json=rpc("add", {"a": 1, "b": 2}), headers={"X-API-Key": "k-1"}
            )
            assert keyed.json() == {"jsonrpc": "2.0", "result": 3.0, "id": 1}

    run(main())


def test_a_call_past_the_timeout_is_a_server_error(plugin: type[protocols.Protocol]) -> None:
    async def main() -> None:
        async with serving(Calc, timeout=0.2) as (client, _):
            response = await client.post("/jsonrpc", json=rpc("sleep", {"seconds": 5}))
            answer = response.json()["error"]
            assert answer["code"] == -32000
            assert answer["data"]["type"] == "RequestTimeout"
            assert answer["message"].startswith("API 'sleep' did not answer within 0.2 s")

    run(main())


def test_the_protocols_setting_chooses_among_installed_protocols(
    plugin: type[protocols.Protocol],
) -> None:
    async def main() -> None:
        async with serving(Calc, protocols=("oip",)) as (client, app):
            assert [p.name for p in app.protocols] == ["oip"]
            missing = await client.post("/jsonrpc", json=rpc("add", {"a": 1, "b": 2}))
            assert missing.status_code == 404
            assert missing.json()["error"]["type"] == "RouteNotFound"
        async with serving(Calc, protocols=("jsonrpc",)) as (client, app):
            assert [p.name for p in app.protocols] == ["jsonrpc"]
            assert (await client.get("/v2")).status_code == 404
            answer = await client.post("/jsonrpc", json=rpc("add", {"a": 1, "b": 2}))
            assert answer.json()["result"] == 3.0
        with pytest.raises(ConfigError) as raised:
            async with serving(Calc, protocols=("nope",)):
                pass
        assert raised.value.message == (
            "The protocols setting names 'nope', which is not installed. Installed: jsonrpc, "
            "oip. Install the plugin, or fix TIFFIN_PROTOCOLS."
        )

    run(main())


def test_a_real_server_serves_the_installed_plugin_as_the_readme_shows(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "pip install ./examples/jsonrpc_protocol" in commands(README)
    serve = [c for c in commands(README) if c.startswith("tiffin serve ")]
    assert serve == ["tiffin serve calc:Calculator --port 3000"]
    (service,) = re.findall(r"```python\n# calc.py\n(.*?)```", README, flags=re.DOTALL)
    (tmp_path / "calc.py").write_text(service, encoding="utf-8")
    calls = curl_calls(README)
    assert len(calls) == 2

    # the server's processes find the plugin the way they would in a real environment
    path = [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    server = start_server(tmp_path, "calc:Calculator", home=tmp_path / "home")
    try:
        for body, shown in calls:
            response = httpx.post(f"{server.url}/jsonrpc", content=body, timeout=10)
            assert response.status_code == 200
            assert response.text == shown
    finally:
        assert server.stop() == 0
