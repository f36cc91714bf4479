"""Drive a tiffin ASGI app in-process, lifespan included, for the server tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

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
