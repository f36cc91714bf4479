"""Run tiffin ASGI apps for tests: in-process with lifespan (``serving``), or behind a real
uvicorn server on a free port in a thread (``live_server``)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tiffin import config
from tiffin.server import App, create_app
from tiffin.service import spec_of


class Lifespan:
    """Runs an app's ASGI lifespan protocol: ``await start()`` then ``await stop()``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def _send(self, message: Any) -> None:
        await self.outbox.put(dict(message))

    async def start(self) -> dict[str, Any]:
        self.task = asyncio.create_task(self.app({"type": "lifespan"}, self._receive, self._send))
        await self.inbox.put({"type": "lifespan.startup"})
        return await self.outbox.get()

    async def stop(self) -> dict[str, Any]:
        await self.inbox.put({"type": "lifespan.shutdown"})
        message = await self.outbox.get()
        assert self.task is not None
        await self.task
        return message


@asynccontextmanager
async def serving(service: type, **overrides: Any) -> AsyncIterator[tuple[httpx.AsyncClient, App]]:
    """An httpx client talking to ``service``'s app in-process (started and stopped), and
    the app."""
    spec = spec_of(service)
    app = create_app(spec, config.load(code=spec.config, flags=overrides))
    lifespan = Lifespan(app)
    started = await lifespan.start()
    assert started["type"] == "lifespan.startup.complete", started
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, app
    await lifespan.stop()


@contextmanager
def live_server(service: type, **settings: Any) -> Iterator[str]:
    """Serve ``service`` with uvicorn on 127.0.0.1 and a free port, in a thread; yields
    its URL once ``/readyz`` answers 200, and stops the server after."""
    spec = spec_of(service)
    app = create_app(spec, config.load(code=spec.config, flags=settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, ws="none", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while True:
            assert thread.is_alive(), "the server thread exited before it was ready"
            assert time.monotonic() < deadline, f"{url}/readyz did not answer 200 in time"
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def fuzz(base_url: str, workdir: Path, *, examples: int = 40) -> None:
    """Run schemathesis against ``base_url``'s /openapi.json: generated valid and invalid
    requests for every operation; any 5xx, or a status, header, content type or body the
    schema does not describe, fails the test with schemathesis' report."""
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--max-examples",
            str(examples),
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=workdir,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
