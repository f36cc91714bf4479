"""Test a service in-process, for your own tests: the real ASGI app, no socket.

``TestClient(Service)`` builds the service's app with hermetic settings (the service's
own arguments plus the overrides you give; no environment, no files), runs its startup
(``__init__``, model loading, ``@tiffin.on_startup`` hooks) and, on ``close()`` or at the
end of a ``with`` block, its shutdown. Each API is a method, as on ``tiffin.Client``;
``.http`` is an ``httpx.Client`` for raw requests; ``.service`` is the service instance.

Example (a pytest test next to ``service.py``):

    import pytest
    from tiffin.testing import TestClient
    from service import Iris

    @pytest.fixture
    def iris():
        with TestClient(Iris, timeout=5) as client:
            yield client

    def test_predict(iris):
        assert iris.predict(features=[[5.1, 3.5, 1.4, 0.2]]) == [0]

    def test_bad_input_is_a_422(iris):
        response = iris.http.post("/predict", json={"features": "oops"})
        assert response.status_code == 422

A streaming API's events are delivered when its generator ends (the in-process
transport buffers each response), so test streams that finish.

Tasks run as they do in a server, in the background on the app's event loop, over a
SQLite store in a temporary directory that ``close()`` removes (pass ``tasks_url=`` to
use another); ``client.<task>.submit(...).wait()`` returns the result:

    def test_report(service):
        job = service.report.submit(rows=[[1.0, 2.0]])
        assert job.wait(timeout=10) == {"mean": 1.5}
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import anyio.from_thread
import httpx

from tiffin import config
from tiffin.client import Client, _endpoints
from tiffin.config import Settings
from tiffin.exceptions import ServiceError
from tiffin.server import App, create_app, openapi
from tiffin.service import spec_of

__all__ = ["TestClient"]

_BASE_URL = "http://testserver"


class _Lifespan:
    """Drives the app's ASGI lifespan protocol on the portal's event loop."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _send(self, message: Any) -> None:
        await self._outbox.put(dict(message))

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self._app(scope, self._inbox.get, self._send))
        await self._inbox.put({"type": "lifespan.startup"})
        message = await self._outbox.get()
        if message["type"] != "lifespan.startup.complete":
            await self._task
            error = self._app.startup_error
            if isinstance(error, Exception):
                raise error
            raise ServiceError(
                f"Service '{self._app.spec.name}' failed to start: {message.get('message')}. "
                "The log above has the traceback."
            )

    async def shutdown(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        await self._outbox.get()
        if self._task is not None:
            await self._task


class _InProcess(httpx.BaseTransport):
    """Sends each request to the ASGI app, on the event loop the app started on."""

    def __init__(self, app: App, portal: anyio.from_thread.BlockingPortal) -> None:
        self._asgi = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._portal.call(self._send, request, request.read())

    async def _send(self, request: httpx.Request, body: bytes) -> httpx.Response:
        forwarded = httpx.Request(
            request.method, request.url, headers=request.headers, content=body
        )
        response = await self._asgi.handle_async_request(forwarded)
        content = await response.aread()
        return httpx.Response(response.status_code, headers=response.headers, content=content)


class TestClient(Client):
    """A service's real ASGI app run in-process, with a ``tiffin.Client`` interface.

    Args:
        service: the ``@tiffin.service`` class.
        api_key: sent with every API method call (not with raw ``.http`` requests).
        headers: extra headers sent with every API method call.
        **settings: settings overriding the service's own, e.g. ``timeout=5`` or
            ``api_keys=("k",)``; nothing is read from the environment or from files (and
            tasks are kept in a temporary store unless ``tasks_url`` is given).

    Attributes:
        http: an ``httpx.Client`` on the app, for raw requests: ``.http.get("/readyz")``.
        app: the ASGI app. settings: its settings. service: the service instance.

    Startup runs when the client is made: an error in the service's ``__init__`` or a
    startup hook is raised from ``TestClient(...)`` as it was raised.

    Example:
        with TestClient(Iris, api_keys=("k",), api_key="k") as client:
            client.predict(features=[[5.1, 3.5, 1.4, 0.2]])   # -> [0]
            client.http.post("/predict", json={}).status_code   # -> 401
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(
        self,
        service: type,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        **settings: Any,
    ) -> None:
        spec = spec_of(service)
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if spec.tasks and settings.get("tasks_url") is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="tiffin-tasks-")
            settings = {**settings, "tasks_url": f"sqlite:///{self._scratch.name}/tasks.db"}
        self.settings: Settings = config.load(code=spec.config, flags=settings)
        self.app = create_app(spec, self.settings)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self._lifespan: _Lifespan = self._portal.call(_Lifespan, self.app)
        try:
            self._portal.call(self._lifespan.startup)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            if self._scratch is not None:
                self._scratch.cleanup()
            raise
        http = httpx.Client(transport=_InProcess(self.app, self._portal), base_url=_BASE_URL)
        super().__init__(_BASE_URL, api_key=api_key, headers=headers, http=http)
        self._apis = _endpoints(openapi.build(spec))  # known at once; no request needed
        self._closed = False

    @property
    def service(self) -> Any:
        """The running instance of the service class."""
        return self.app.runtime.instance

    def close(self) -> None:
        """Run the service's shutdown (``@tiffin.on_shutdown`` hooks) and stop the app."""
        if self._closed:
            return
        self._closed = True
        try:
            self.http.close()
            self._portal.call(self._lifespan.shutdown)
        finally:
            self._portal_cm.__exit__(None, None, None)
            if self._scratch is not None:
                self._scratch.cleanup()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
