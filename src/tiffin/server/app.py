"""The ASGI app built from a service.

Every service gets, beside its APIs: ``/livez``, ``/readyz``, ``/metrics``,
``/openapi.json``, ``/docs`` and ``/dashboard``. The request path is kept short on
purpose: routes are one dict lookup, headers are read in one pass, a request body is
decoded with one JSON parse and one pydantic validation, and nothing is logged until the
response is sent.
A ``def`` API whose calls are short runs inline on the event loop instead of paying a
thread hop per call (``tiffin.server.inline`` says when, and what that gives up); the
access-log line is a tuple queued for the log's writer thread
(``tiffin.observability.logging``); request ids come from a generator that does not
release the GIL (``tiffin.server.request``). Against the app before these (iris
quickstart, one worker, 2-core VM): a lone request 356 -> 259 us at the median (a bare
ASGI app calling the model: 262 us), and 3,729 -> 4,539 requests/s on 8 connections.

Errors are JSON ``{"error": {"type", "message", "detail"}}`` with the status of the
``TiffinError`` class named in ``type``; an exception in the service's code is a 500
carrying the request id, and its traceback is logged with that id.

How an API's method runs once a request is read (inline, in a thread, batched; within
the timeout and the concurrency limit) is ``tiffin.server.calls``; the serving protocols
mounted beside the service's routes (the Open Inference Protocol, plugins) and their gRPC
server are ``tiffin.server.mounts``.

A service with ``@tiffin.task`` methods also gets each task's routes under ``/tasks/``,
and its task store and runner opened and started in the lifespan; ``tiffin.server.tasks``
holds them. None of that touches an API request: a task path other than a task's own is
looked for only when the route table has no match.
"""

from __future__ import annotations

import asyncio
import contextvars
import hmac
import inspect
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from tiffin.config import Settings
from tiffin.exceptions import (
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    ServiceUnavailable,
    TiffinError,
    Unauthorized,
    describe,
)
from tiffin.io import dumps
from tiffin.observability import ServerMetrics, tracing
from tiffin.observability.alerts import Alerts
from tiffin.observability.context import request_id as current_request_id
from tiffin.observability.dashboard import Dashboard
from tiffin.observability.history import History
from tiffin.observability.logging import AccessLog, BodyLog
from tiffin.observability.monitoring import Monitoring
from tiffin.server import docs, openapi
from tiffin.server.calls import Calls
from tiffin.server.heap import LARGE_BYTES, HeapTrim
from tiffin.server.mounts import Mounts, ProtocolRoute, error_headers
from tiffin.server.request import Handler, Receive, Request, Scope, Send, new_request_id
from tiffin.server.runtime import ServiceRuntime
from tiffin.server.tasks import TaskRoutes
from tiffin.service import Api, ServiceSpec

__all__ = ["App", "create_app"]

log = logging.getLogger("tiffin.server")

_JSON = b"application/json"


class App:
    """An ASGI application serving one service.

    Args:
        spec: the service (``tiffin.service.spec_of(MyService)``).
        settings: resolved settings (limits, keys, CORS, logging).
        remote: makes the client for a dependency given by URL.
        version: the version served (a bundle's), for protocols that report one.

    Example:
        app = App(spec_of(Iris), tiffin.config.load())
        uvicorn.run(app)
    """

    def __init__(
        self,
        spec: ServiceSpec,
        settings: Settings,
        *,
        remote: Callable[[str], Any],
        version: str = "",
    ) -> None:
        self.spec = spec
        self.version = version
        self.settings = settings
        self.tracer = tracing.tracer(settings, spec)  # None when tracing is off
        self.runtime = ServiceRuntime(spec, remote=remote)
        self.metrics = ServerMetrics(list(spec.apis))
        self.calls = Calls(spec, settings, self.runtime, self.metrics.registry, self.tracer)
        self.limit = self.calls.limit
        self.heap = HeapTrim()
        self.executor = self.calls.executor
        self.startup_error: BaseException | None = None
        self._access = AccessLog()
        self._bodies = BodyLog() if settings.log_request_bodies else None
        self._keys = tuple(key.encode() for key in settings.api_keys)
        self._cors = frozenset(settings.cors_origins)
        self._routes: dict[str, Handler] = {
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/openapi.json": self._openapi,
        }
        for route, api in spec.routes().items():
            handler: Handler = partial(self._api, api)
            if self.tracer is not None:  # a server span around each request, when tracing
                handler = self.tracer.server(api, route, handler)
            self._routes[route] = handler
        self.tasks: TaskRoutes | None = None
        if spec.tasks:
            self.tasks = TaskRoutes(self, spec, settings, self.metrics.registry)
            self._routes.update(self.tasks.routes())
        self.mounts = Mounts(self)
        self.mounts.mount(self._routes)
        self.protocols = self.mounts.protocols
        if self.tracer is not None:  # a protocol's calls get a span of their own
            self.call = self.tracer.protocol(self.call)  # type: ignore[method-assign]
        # Things that run beside the service in each worker (samplers, evaluators): each
        # has ``async start()`` and ``async stop()``, run after the service has started
        # and before it stops, in order and in reverse.
        self.background: list[Any] = []
        # An hour of the server's metrics for /dashboard, and the alert rules measured on it
        self.history = History(self.metrics, spec.apis, interval=settings.history_interval)
        self.alerts = Alerts(
            spec.name,
            settings.alerts,
            self.history,
            webhook=settings.alert_webhook,
            directory=self.metrics.multiprocess_dir,
        )
        self.background += [self.history, self.alerts]
        self._dashboard = Dashboard(spec.name, self.history, self.alerts)
        self._routes["/dashboard/data"] = self._dashboard_data
        self.background.append(Monitoring(spec.name, settings, self.metrics.registry))
        self._docs = docs.Docs(spec, openapi.build(spec))
        self._openapi_body = dumps(self._docs.openapi)

    new_request_id = staticmethod(new_request_id)

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._start()
                except BaseException as exc:
                    self.startup_error = exc
                    log.exception("Service %s failed to start", self.spec.name)
                    if self.tasks is not None:
                        await self.tasks.close()
                    await send({"type": "lifespan.startup.failed", "message": describe(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        if self.tasks is not None:
            await self.tasks.open()
        await self.runtime.start()
        if self.tracer is not None:
            self.tracer.dependencies(self.runtime)
        if self.tasks is not None:
            await self.tasks.start(self.runtime.instance)
        for part in self.background:
            await part.start()
        await self.mounts.start()

    async def _stop(self) -> None:
        for part in reversed(self.background):
            try:
                await part.stop()
            except Exception:
                log.exception("%s failed to stop cleanly", type(part).__name__)
        await self.mounts.stop()
        if self.tasks is not None:
            await self.tasks.stop()
        try:
            await self.runtime.stop()
        except Exception:
            log.exception("Service %s failed to stop cleanly", self.spec.name)
        self.calls.shutdown()
        self.heap.close()
        self.metrics.flush()
        if self.tasks is not None:
            await self.tasks.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = Request(scope)
        path: str = scope["path"]
        handler = self._routes.get(path)
        if handler is None:
            handler = self._unrouted(path)
        status = 500
        # Read by log lines the request's code writes (tiffin.observability.logging).
        token = current_request_id.set(request.request_id)
        try:
            if scope["method"] == "OPTIONS" and self._cors:
                status = await self._preflight(send, request)
            elif handler is None:
                raise RouteNotFound(
                    f"No API at {path}. This service's APIs are "
                    f"{', '.join(sorted(self.spec.routes()))}; /docs lists them.",
                    detail={"path": path},
                )
            else:
                if type(handler) is not ProtocolRoute:  # that checks, answering in its shape
                    self._check_key(path, request)
                status = await handler(scope, receive, send, request)
        except TiffinError as exc:
            status = await self._error(send, request, exc)
        finally:
            current_request_id.reset(token)
        if self.settings.access_log:
            # to the microsecond; round(x, 3) converts through decimal digits, which
            # took a tenth of the access log's cost
            duration_ms = int((time.perf_counter() - started) * 1e6 + 0.5) / 1000
            self._access(scope["method"], path, status, duration_ms, request.request_id)

    def _unrouted(self, path: str) -> Handler | None:
        """The handler of a path that is not in the route table, if any: the docs pages,
        and a task's status, result and cancel paths."""
        if path == "/docs" or path.startswith("/docs/"):
            return self._serve_docs
        if path == "/dashboard" or path.startswith("/dashboard/"):
            return self._serve_dashboard
        if self.tasks is not None and path.startswith("/tasks/"):
            return self.tasks.item
        return self.mounts.prefixed(path)

    # -- protocols -------------------------------------------------------------------

    async def call(self, name: str, arguments: Any, request_id: str) -> Any:
        """Run an API for a protocol: ``tiffin.protocols.Server.call`` says how."""
        api = self.spec.apis.get(name)
        if api is None or api.io.stream:
            apis = ", ".join(sorted(n for n, a in self.spec.apis.items() if not a.io.stream))
            raise RouteNotFound(
                f"Service '{self.spec.name}' has no API '{name}' that answers once (its APIs: "
                f"{apis or 'none'}).",
                detail={"api": name},
            )
        started = time.perf_counter()
        self.metrics.started(api.name)
        status = 500
        token = current_request_id.set(request_id)  # a gRPC call has no _http to set it
        try:
            kwargs = api.io.validate(arguments)
            result = await self.calls.run(api, kwargs, request_id)
            status = 200
            return result
        except TiffinError as exc:
            status = exc.status_code
            raise
        finally:
            current_request_id.reset(token)
            self.metrics.finished(api.name, status, time.perf_counter() - started)

    # -- responses -------------------------------------------------------------------

    def _headers(self, request: Request, content_type: bytes) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", content_type), (b"x-request-id", request.request_id.encode())]
        if self._cors and request.origin:
            allowed = "*" in self._cors or request.origin in self._cors
            if allowed:
                headers.append((b"access-control-allow-origin", request.origin.encode()))
                headers.append((b"vary", b"Origin"))
                headers.append((b"access-control-expose-headers", b"X-Request-ID"))
        return headers

    async def _respond(
        self,
        send: Send,
        request: Request,
        status: int,
        body: bytes,
        *,
        content_type: bytes = _JSON,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        headers = self._headers(request, content_type)
        size = len(body)
        headers.append((b"content-length", str(size).encode()))
        if size >= LARGE_BYTES:
            self.heap.note(size)
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status

    async def _error(self, send: Send, request: Request, exc: TiffinError) -> int:
        body = dumps(exc.to_dict())
        return await self._respond(send, request, exc.status_code, body, extra=error_headers(exc))

    async def _preflight(self, send: Send, request: Request) -> int:
        if not ("*" in self._cors or request.origin in self._cors):
            return await self._respond(send, request, 403, b"", content_type=b"text/plain")
        await send(
            {
                "type": "http.response.start",
                "status": 204,
                "headers": [
                    (b"access-control-allow-origin", request.origin.encode()),
                    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                    (
                        b"access-control-allow-headers",
                        b"Content-Type, Authorization, X-API-Key, X-Request-ID",
                    ),
                    (b"access-control-max-age", b"600"),
                    (b"vary", b"Origin"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return 204

    # -- checks ----------------------------------------------------------------------

    def _check_key(self, path: str, request: Request) -> None:
        if not self._keys or path in ("/livez", "/readyz"):
            return
        if path == "/metrics" and not self.settings.metrics_need_key:
            return
        if path == "/docs" or path.startswith("/docs/"):
            return  # the page and its assets; the page itself sends the key for /openapi.json
        if path == "/dashboard/data":
            if not self.settings.metrics_need_key:
                return
        elif path == "/dashboard" or path.startswith("/dashboard/"):
            return  # the page and its assets; the page sends the key for /dashboard/data
        if path == "/openapi.json" and not self.settings.docs_need_key:
            return
        if not self.authorized(request.api_key):
            raise self._unauthorized(request)

    @staticmethod
    def _unauthorized(request: Request) -> Unauthorized:
        return Unauthorized(
            "This server needs an API key. Send it as 'Authorization: Bearer <key>' or "
            "'X-API-Key: <key>'."
            if not request.api_key
            else "The API key sent is not valid. Check the key, or ask the server's operator "
            "for one.",
        )

    def authorized(self, key: str) -> bool:
        """Whether ``key`` is one of the API keys (True when there are none); compared
        with every key in constant time, whichever matches."""
        if not self._keys:
            return True
        given = key.encode()
        matched = False
        for known in self._keys:
            matched |= hmac.compare_digest(given, known)
        return matched

    @staticmethod
    def _only(scope: Scope, *methods: str) -> None:
        if scope["method"] not in methods:
            raise MethodNotAllowed(
                f"{scope['path']} takes {' or '.join(methods)}, not {scope['method']}.",
                detail={"allowed": list(methods)},
            )

    async def _body(self, receive: Receive, request: Request) -> bytes:
        limit = self.settings.max_body_size
        if request.content_length > limit:
            raise PayloadTooLarge(
                f"The request body is {request.content_length} bytes; this server takes at most "
                f"{limit}. Send less, or raise the limit with TIFFIN_MAX_BODY_SIZE.",
                detail={"limit": limit, "size": request.content_length},
            )
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"The request body is over this server's limit of {limit} bytes. Send less, "
                    "or raise the limit with TIFFIN_MAX_BODY_SIZE.",
                    detail={"limit": limit},
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if size >= LARGE_BYTES:
            self.heap.note(size)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- built-in endpoints ----------------------------------------------------------

    async def _livez(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        self._only(scope, "GET", "HEAD")
        return await self._respond(send, request, 200, b'{"status":"alive"}')

    async def _readyz(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        self._only(scope, "GET", "HEAD")
        if await self.runtime.ready():
            return await self._respond(send, request, 200, b'{"status":"ready"}')
        reason = "is still starting" if not self.runtime.started else "reports it is not ready"
        raise ServiceUnavailable(
            f"Service '{self.spec.name}' {reason}. Retry shortly.",
            detail={"retry_after": 1},
        )

    async def _metrics(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        self._only(scope, "GET")
        body, content_type = self.metrics.render()
        return await self._respond(send, request, 200, body, content_type=content_type.encode())

    async def _openapi(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        self._only(scope, "GET", "HEAD")
        return await self._respond(send, request, 200, self._openapi_body)

    async def _serve_dashboard(
        self, scope: Scope, receive: Receive, send: Send, request: Request
    ) -> int:
        self._only(scope, "GET", "HEAD")
        found = self._dashboard.asset(scope["path"])
        if found is None:
            raise RouteNotFound(f"No dashboard page at {scope['path']}. Open /dashboard.")
        body, content_type = found
        extra = [(b"cache-control", b"no-cache")]
        return await self._respond(send, request, 200, body, content_type=content_type, extra=extra)

    async def _dashboard_data(
        self, scope: Scope, receive: Receive, send: Send, request: Request
    ) -> int:
        self._only(scope, "GET")
        body = self._dashboard.data(scope.get("query_string", b""))
        extra = [(b"cache-control", b"no-store")]
        return await self._respond(send, request, 200, body, extra=extra)

    async def _serve_docs(
        self, scope: Scope, receive: Receive, send: Send, request: Request
    ) -> int:
        self._only(scope, "GET", "HEAD")
        found = self._docs.asset(scope["path"])
        if found is None:
            raise RouteNotFound(f"No documentation page at {scope['path']}. Open /docs.")
        body, content_type = found
        return await self._respond(
            send,
            request,
            200,
            body,
            content_type=content_type,
            extra=[(b"cache-control", b"no-cache")],
        )

    # -- APIs ------------------------------------------------------------------------

    async def _api(
        self, api: Api[Any, Any], scope: Scope, receive: Receive, send: Send, request: Request
    ) -> int:
        self._only(scope, "POST")
        started = time.perf_counter()
        self.metrics.started(api.name)
        status = 500
        kwargs: dict[str, Any] = {}
        try:
            body = await self._body(receive, request)
            if self._bodies is not None:
                self._bodies(api.name, body, request.content_type)
            if self.tracer is None:
                kwargs = api.io.decode(body, request.content_type)
            else:
                kwargs = self.tracer.validate(api, body, request.content_type)
            if api.io.stream:
                status = await self._stream(api, kwargs, receive, send, request)
            else:
                result = await self.calls.run(api, kwargs, request.request_id)
                payload, media_type = api.io.encode(result, request.accept)
                status = await self._respond(
                    send, request, 200, payload, content_type=media_type.encode()
                )
        except TiffinError as exc:
            status = exc.status_code
            raise
        finally:
            if kwargs:
                api.io.cleanup(kwargs)
            self.metrics.finished(api.name, status, time.perf_counter() - started)
        return status

    async def _stream(
        self,
        api: Api[Any, Any],
        kwargs: dict[str, Any],
        receive: Receive,
        send: Send,
        request: Request,
    ) -> int:
        """Send each item the generator yields as one Server-Sent Event; stop the
        generator when the client goes away."""
        method = getattr(self.runtime.instance, api.attribute)
        await self.limit.acquire()
        generator = method(**kwargs)
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        headers = self._headers(request, b"text/event-stream")
        headers += [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        loop = asyncio.get_running_loop()
        done = object()
        context = contextvars.copy_context()  # the request's, for each step in a thread
        step = partial(next, generator, done)
        try:
            while not disconnected.is_set():
                try:
                    if inspect.isasyncgen(generator):
                        item = await anext(generator, done)
                    else:
                        item = await loop.run_in_executor(self.executor, context.run, step)
                except Exception as exc:
                    error = (
                        exc
                        if isinstance(exc, TiffinError)
                        else self.calls.failed(api, request.request_id, exc)
                    )
                    event = b"event: error\ndata: " + dumps(error.to_dict()) + b"\n\n"
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                    break
                if item is done:
                    break
                event = b"data: " + api.io.encode_item(item) + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if not disconnected.is_set():
                await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()
            if inspect.isasyncgen(generator):
                await generator.aclose()
            else:
                # a copy: a step cancelled with its task may still run in the context
                await loop.run_in_executor(self.executor, context.copy().run, generator.close)
            self.limit.release()
        return 200


def create_app(
    spec: ServiceSpec,
    settings: Settings,
    *,
    remote: Callable[[str], Any] | None = None,
    version: str = "",
) -> App:
    """Build the ASGI app of a service; dependencies given by URL get a ``tiffin.Client``."""
    return App(spec, settings, remote=remote or _client, version=version)


def _client(url: str) -> Any:
    """A ``tiffin.Client`` for a dependency given by URL. The client, and httpx with it
    (about 100 modules, rich's among them), is imported only by a service that has one."""
    from tiffin.client import Client

    return Client(url)
