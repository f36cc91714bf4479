"""``/docs``: served by tiffin alone (no CDN), and rendered by a real browser."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import tiffin
from tests.conftest import need
from tests.server.asgi import live_server
from tiffin.testing import TestClient


class Point(BaseModel):
    """A point in the plane."""

    x: float
    y: float


class Tagged(BaseModel):
    point: Point
    labels: list[str]


@tiffin.service(name="atlas")
class Atlas:
    """Places, for the docs tests."""

    @tiffin.api
    def add(self, a: float, b: float = 1.0) -> float:
        """Add two numbers.

        The second one is optional."""
        return a + b

    @tiffin.api(route="/v1/tag")
    def tag(self, point: Point, labels: list[str] | None = None) -> Tagged:
        """Label a point."""
        return Tagged(point=point, labels=labels or [])

    @tiffin.api
    def count(self, n: int) -> Iterator[dict[str, int]]:
        """Count to n."""
        for i in range(n):
            if n == 99 and i == 2:
                raise RuntimeError("stream broke")
            yield {"i": i}


class Links(HTMLParser):
    """Every ``src`` and ``href`` of a page, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.links.append(value)


_KINDS = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


def self_contained(
    client: TestClient, path: str, title: str, *, links: set[str], assets: str
) -> dict[str, str]:
    """The page at ``path`` and its assets (the links under ``assets``), by suffix, once
    checked: the page has ``title`` and exactly ``links``; each asset answers 200 with
    its content type; and none of them refers to another site (the SVG namespace, a
    name and not a place to load from, excepted)."""
    page = client.http.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert title in page.text
    parser = Links()
    parser.feed(page.text)
    assert set(parser.links) == links
    bodies = {".html": page.text}
    for link in parser.links:
        if link.startswith(assets):
            response = client.http.get(link)
            assert response.status_code == 200, link
            assert response.headers["content-type"] == _KINDS[Path(link).suffix]
            bodies[Path(link).suffix] = response.text
    assert set(bodies) == {".html", ".js", ".css"}
    for body in bodies.values():
        text = body.replace('"http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text)
    return bodies


@pytest.fixture(scope="module")
def atlas() -> Iterator[TestClient]:
    with TestClient(Atlas) as client:
        yield client


def test_the_page_and_its_assets_come_from_tiffin_alone(atlas: TestClient) -> None:
    bodies = self_contained(
        atlas,
        "/docs",
        "<title>atlas · API</title>",
        links={"data:,", "/docs/docs.css", "/docs/docs.js", "/openapi.json", "/metrics"},
        assets="/docs/",
    )
    for link in ("/openapi.json", "/metrics"):  # the page's other links answer too
        assert atlas.http.get(link).status_code == 200, link
    assert "@import" not in bodies[".css"]
    assert "url(" not in bodies[".css"]


def test_docs_paths(atlas: TestClient) -> None:
    assert atlas.http.get("/docs/").text == atlas.http.get("/docs").text
    missing = atlas.http.get("/docs/missing.js")
    assert missing.status_code == 404
    assert (
        missing.json()["error"]["message"]
        == "No documentation page at /docs/missing.js. Open /docs."
    )
    assert atlas.http.post("/docs").status_code == 405


def test_docs_need_a_key_only_when_asked_to() -> None:
    with TestClient(Atlas, api_keys=("k",)) as open_docs:
        assert open_docs.http.get("/docs").status_code == 200
        assert open_docs.http.get("/openapi.json").status_code == 200
    with TestClient(Atlas, api_keys=("k",), docs_need_key=True) as closed:
        assert closed.http.get("/openapi.json").status_code == 401
        headers = {"Authorization": "Bearer k"}
        assert closed.http.get("/openapi.json", headers=headers).status_code == 200
        assert closed.http.get("/docs/docs.js", headers=headers).status_code == 200


# -- in a real browser -------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium() -> str:
    path = shutil.which("chromium")
    need(path is not None, "chromium (apt-get install chromium)")
    assert path is not None
    return path


def dump_dom(url: str, profile: Path, budget_ms: int) -> str:
    """The DOM headless chromium has built from ``url`` after ``budget_ms`` of virtual time."""
    done = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def devtools_page(profile: Path, *flags: str) -> Iterator[str]:
    """Headless chromium with its DevTools port open: the DevTools WebSocket URL of its
    page. Chromium is stopped at the end."""
    browser = subprocess.Popen(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            assert browser.poll() is None, "chromium exited"
            time.sleep(0.05)
        port = port_file.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        page: str = next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]
        yield page
    finally:
        browser.terminate()
        browser.wait(30)


@pytest.fixture(scope="module")
def atlas_url() -> Iterator[str]:
    with live_server(Atlas) as url:
        yield url


def test_the_page_renders_every_api_in_chromium(atlas_url: str, tmp_path: Path) -> None:
    dom = dump_dom(f"{atlas_url}/docs", tmp_path / "profile", 10000)
    for name, route in (("add", "/add"), ("tag", "/v1/tag"), ("count", "/count")):
        assert f'id="api-{name}"' in dom
        assert f'<code class="route">{route}</code>' in dom
        assert f'href="#api-{name}"' in dom
    assert "Add two numbers." in dom
    assert "The second one is optional." in dom
    assert "A point in the plane." in dom  # the nested model's fields are shown
    assert "A stream of events" in dom
    assert 'class="error"' not in dom


class DevTools:
    """One page of a headless chromium, driven over the DevTools protocol."""

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket
        self.sent = 0

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        self.sent += 1
        await self.websocket.send(json.dumps({"id": self.sent, "method": method, "params": params}))
        while True:
            message: dict[str, Any] = json.loads(await self.websocket.recv())
            if message.get("id") == self.sent:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.command(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")


SEND = """(async () => {
  const section = document.getElementById("api-%s");
  const body = %s;
  if (body !== null) section.querySelector("textarea").value = body;
  const send = section.querySelector("button.send");
  send.click();  // disables the button until the answer is shown
  for (let i = 0; i < 400 && send.disabled; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return {
    status: section.querySelector(".status").innerText,
    body: section.querySelector(".response-body").innerText,
    events: [...section.querySelectorAll("li.event")].map((e) => e.className + " " + e.innerText),
  };
})()"""


def test_send_shows_status_request_id_and_the_answer_in_chromium(
    atlas_url: str, tmp_path: Path
) -> None:
    need(importlib.util.find_spec("websockets") is not None, "websockets (pip install websockets)")
    import websockets

    with devtools_page(tmp_path / "profile") as page:

        async def main() -> None:
            async with websockets.connect(page, max_size=None) as ws:
                tools = DevTools(ws)
                await tools.command("Page.navigate", url=f"{atlas_url}/docs")
                for _ in range(400):
                    if await tools.evaluate("document.querySelectorAll('section.api').length"):
                        break
                    await asyncio.sleep(0.025)
                example = await tools.evaluate("document.querySelector('#api-tag textarea').value")
                assert json.loads(example) == {"point": {"x": 0, "y": 0}, "labels": None}
                assert await tools.evaluate("document.getElementById('health').textContent") == (
                    "ready"
                )

                added = await tools.evaluate(SEND % ("add", json.dumps('{"a": 2, "b": 3}')))
                assert added["status"].startswith("200 OK")
                assert re.search(r"X-Request-ID [0-9a-f]{32}", added["status"])
                assert added["body"] == "5"

                tagged = await tools.evaluate(SEND % ("tag", "null"))
                assert json.loads(tagged["body"]) == {"point": {"x": 0, "y": 0}, "labels": []}

                invalid = await tools.evaluate(SEND % ("add", json.dumps('{"b": 3}')))
                assert invalid["status"].startswith("422")
                assert json.loads(invalid["body"])["error"]["type"] == "ValidationFailed"

                counted = await tools.evaluate(SEND % ("count", json.dumps('{"n": 99}')))
                assert counted["events"][:2] == ['event {"i": 0}', 'event {"i": 1}']
                assert counted["events"][2].startswith("event error error\n")
                assert "ServiceError" in counted["events"][2]

        asyncio.run(main())
