"""The ASGI app built from a service.

Every service gets, beside its APIs: ``/livez``, ``/readyz``, ``/metrics``,
``/openapi.json`` and ``/docs``. The request path is kept short on purpose: routes are
one dict lookup, headers are read in one pass, a request body is decoded with one JSON
parse and one pydantic validation, and nothing is logged until the response is sent.
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

A service with ``@tiffin.task`` methods also gets each task's routes under ``/tasks/``,
and its task store and runner opened and started in the lifespan; ``tiffin.server.tasks``
holds them. None of that touches an API request: a task path other than a task's own is
looked for only when the route table has no match.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from tiffin.batching import Batcher, BatchMetrics
from tiffin.config import Settings
from tiffin.exceptions import (
    MethodNotAllowed,
    MissingDependency,
    PayloadTooLarge,
    RequestTimeout,
    RouteNotFound,
    ServiceError,
    ServiceUnavailable,
    TiffinError,
    Unauthorized,
    describe,
)
from tiffin.io import dumps
from tiffin.observability import ServerMetrics
from tiffin.observability.logging import AccessLog
from tiffin.protocols import HttpHandler, HttpRequest, HttpResponse, Protocol
from tiffin.protocols import Server as ProtocolServer
from tiffin.protocols import enabled as enabled_protocols
from tiffin.server import docs, openapi
from tiffin.server.inline import InlinePolicy
from tiffin.server.limits import ConcurrencyLimit
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
        self.runtime = ServiceRuntime(spec, remote=remote)
        self.metrics = ServerMetrics(list(spec.apis))
        self.limit = ConcurrencyLimit(settings.max_concurrency, settings.max_queue)
        self.executor = ThreadPoolExecutor(
            settings.max_concurrency, thread_name_prefix=f"tiffin-{spec.name}"
        )
        self.inline = {
            api.name: InlinePolicy(timeout=settings.timeout, offload=api.offload)
            for api in spec.apis.values()
            if not api.is_async and api.batch is None
        }
        batch_metrics = BatchMetrics(self.metrics.registry)
        self.batchers = {
            api.name: Batcher(
                api.name,
                tuple(param.name for param in api.io.params),
                max_size=api.batch.max_size,
                max_latency_ms=api.batch.max_latency_ms,
                dim=api.batch.dim,
                call=partial(self._call_batch, api),
                metrics=batch_metrics,
            )
            for api in spec.apis.values()
            if api.batch is not None
        }
        self.startup_error: BaseException | None = None
        self._access = AccessLog()
        self._keys = tuple(key.encode() for key in settings.api_keys)
        self._cors = frozenset(settings.cors_origins)
        self._routes: dict[str, Handler] = {
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/openapi.json": self._openapi,
        }
        for route, api in spec.routes().items():
            self._routes[route] = partial(self._api, api)
        self.tasks: TaskRoutes | None = None
        if spec.tasks:
            self.tasks = TaskRoutes(self, spec, settings, self.metrics.registry)
            self._routes.update(self.tasks.routes())
        self.protocols: list[Protocol] = []
        self._prefixes: list[tuple[str, Handler]] = []
        self._grpc: Any = None
        self._add_protocols()
        # Things that run beside the service in each worker (samplers, evaluators): each
        # has ``async start()`` and ``async stop()``, run after the service has started
        # and before it stops, in order and in reverse.
        self.background: list[Any] = []
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
        if self.tasks is not None:
            await self.tasks.start(self.runtime.instance)
        for protocol in self.protocols:
            await protocol.start()
        for part in self.background:
            await part.start()
        if self.settings.grpc_port is not None:
            await self._start_grpc(self.settings.grpc_port)

    async def _stop(self) -> None:
        for part in reversed(self.background):
            try:
                await part.stop()
            except Exception:
                log.exception("%s failed to stop cleanly", type(part).__name__)
        await self._stop_protocols()
        if self.tasks is not None:
            await self.tasks.stop()
        try:
            await self.runtime.stop()
        except Exception:
            log.exception("Service %s failed to stop cleanly", self.spec.name)
        self.executor.shutdown(wait=False, cancel_futures=True)
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
                if type(handler) is not _ProtocolRoute:  # that checks, answering in its shape
                    self._check_key(path, request)
                status = await handler(scope, receive, send, request)
        except TiffinError as exc:
            status = await self._error(send, request, exc)
        if self.settings.access_log:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            self._access(scope["method"], path, status, duration_ms, request.request_id)

    def _unrouted(self, path: str) -> Handler | None:
        """The handler of a path that is not in the route table, if any: the docs pages,
        and a task's status, result and cancel paths."""
        if path == "/docs" or path.startswith("/docs/"):
            return self._serve_docs
        if self.tasks is not None and path.startswith("/tasks/"):
            return self.tasks.item
        for prefix, handler in self._prefixes:
            if path.startswith(prefix):
                return handler
        return None

    # -- protocols -------------------------------------------------------------------

    def _add_protocols(self) -> None:
        """Make each enabled protocol and take its HTTP routes; a path the service's
        own routes have already is left to them."""
        server = ProtocolServer(self)
        for cls in enabled_protocols(self.settings.protocols):
            protocol = cls(server)
            self.protocols.append(protocol)
            for path, handler in protocol.http_routes().items():
                route = _ProtocolRoute(self, protocol, handler)
                if path.endswith("/*"):
                    self._prefixes.append((path[:-1], route))
                elif path in self._routes:
                    log.warning(
                        "The %s protocol's route %s is left to the service's own API there.",
                        protocol.name,
                        path,
                    )
                else:
                    self._routes[path] = route
        self._prefixes.sort(key=lambda item: -len(item[0]))

    async def protocol_route(
        self,
        protocol: Protocol,
        handler: HttpHandler,
        scope: Scope,
        receive: Receive,
        request: Request,
    ) -> tuple[HttpResponse, list[tuple[bytes, bytes]]]:
        """A protocol's answer on one of its routes, and the headers to add to it. Errors,
        the server's own too (no valid API key, a body over the limit) and any exception
        of the protocol's code, go back in the protocol's shape."""
        method = scope["method"]
        try:
            if not self.authorized(request.api_key):
                raise self._unauthorized(request)
            body = b"" if method in ("GET", "HEAD") else await self._body(receive, request)
            headers = {
                key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
            }
            query = scope.get("query_string", b"").decode("latin-1")
            response = await handler(
                HttpRequest(method, scope["path"], query, headers, body, request.request_id)
            )
        except Exception as exc:
            error = exc if isinstance(exc, TiffinError) else self._protocol_failed(protocol, exc)
            response = protocol.http_error(error)
            named = {key.lower() for key, _ in response.headers}
            extra = [
                (key, value) for key, value in _error_headers(error) if key.decode() not in named
            ]
        else:
            extra = []
        extra.extend(
            (key.encode("latin-1"), value.encode("latin-1")) for key, value in response.headers
        )
        return response, extra

    def _protocol_failed(self, protocol: Protocol, exc: Exception) -> ServiceError:
        log.error("The %s protocol raised %s", protocol.name, type(exc).__name__, exc_info=exc)
        return ServiceError(
            f"The {protocol.name} protocol failed: its code raised {type(exc).__name__}. The "
            "server log has the traceback.",
            detail={"protocol": protocol.name},
        )

    async def _start_grpc(self, port: int) -> None:
        try:
            from tiffin.server.grpc_server import GrpcServer
        except ImportError:
            raise MissingDependency(
                "Serving gRPC (--grpc-port) needs the grpcio package. Install it with: "
                "pip install 'tiffin[grpc]'",
                detail={"extra": "grpc"},
            ) from None
        handlers = [handler for protocol in self.protocols for handler in protocol.grpc_handlers()]
        if not handlers:
            log.warning("No protocol serves gRPC, so nothing listens on the gRPC port %d.", port)
            return
        self._grpc = GrpcServer(
            handlers,
            host=self.settings.host,
            port=port,
            max_message=self.settings.max_body_size,
            authorized=self.authorized if self._keys else None,
        )
        await self._grpc.start()

    async def _stop_protocols(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(self.settings.grace_period)
            self._grpc = None
        for protocol in reversed(self.protocols):
            try:
                await protocol.stop()
            except Exception:
                log.exception("The %s protocol failed to stop cleanly", protocol.name)

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
        try:
            kwargs = api.io.validate(arguments)
            result = await self._run(api, kwargs, request_id)
            status = 200
            return result
        except TiffinError as exc:
            status = exc.status_code
            raise
        finally:
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
        headers.append((b"content-length", str(len(body)).encode()))
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return status

    async def _error(self, send: Send, request: Request, exc: TiffinError) -> int:
        body = dumps(exc.to_dict())
        return await self._respond(send, request, exc.status_code, body, extra=_error_headers(exc))

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
            kwargs = api.io.decode(body, request.content_type)
            if api.io.stream:
                status = await self._stream(api, kwargs, receive, send, request)
            else:
                result = await self._run(api, kwargs, request.request_id)
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

    def _failed(self, api: Api[Any, Any], request_id: str, exc: BaseException) -> ServiceError:
        log.error(
            "API %s raised %s (request %s)",
            api.name,
            type(exc).__name__,
            request_id,
            exc_info=exc,
            extra={"request_id": request_id, "api": api.name},
        )
        return ServiceError(
            f"API '{api.name}' failed: the service's code raised {type(exc).__name__}. The "
            f"server log has the traceback under request id {request_id}.",
            detail={"request_id": request_id, "api": api.name},
        )

    async def _call_batch(self, api: Api[Any, Any], merged: dict[str, Any]) -> Any:
        """One call of a batched API's method with the merged rows of several requests:
        ``async def`` on the event loop, ``def`` in a thread (a batch is the heavy kind of
        call the thread pool is for)."""
        method = getattr(self.runtime.instance, api.attribute)
        if api.is_async:
            return await method(**merged)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, partial(method, **merged))

    async def _run_batched(
        self, api: Api[Any, Any], kwargs: dict[str, Any], request_id: str
    ) -> Any:
        timeout = self.settings.timeout
        try:
            return await asyncio.wait_for(self.batchers[api.name].submit(kwargs), timeout)
        except TimeoutError:
            raise self._timed_out(api, timeout) from None
        except TiffinError:
            raise
        except Exception as exc:
            raise self._failed(api, request_id, exc) from exc

    async def _run(self, api: Api[Any, Any], kwargs: dict[str, Any], request_id: str) -> Any:
        """Call an API's method with a request's arguments, holding a concurrency slot:
        ``async def`` on the event loop, ``def`` inline or in a thread (whichever
        ``tiffin.server.inline`` decides), within the timeout either way."""
        if api.batch is not None:  # the batcher has its own admission and concurrency
            return await self._run_batched(api, kwargs, request_id)
        method = getattr(self.runtime.instance, api.attribute)
        timeout = self.settings.timeout
        policy = self.inline.get(api.name)
        await self.limit.acquire()
        deadline: asyncio.Timeout | None = None
        try:
            if policy is not None and policy.inline():
                result, seconds = self._call_inline(method, kwargs, policy)
                if seconds > timeout:  # it could not be stopped, but it still is too late
                    raise self._timed_out(api, timeout)
                return result
            async with asyncio.timeout(timeout) as deadline:
                if policy is not None:
                    return await self._call_in_thread(method, kwargs, policy)
                try:
                    return await method(**kwargs)
                finally:
                    self.limit.release()
        except TiffinError:
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline is not None and deadline.expired():
                raise self._timed_out(api, timeout) from None
            raise self._failed(api, request_id, exc) from exc

    def _call_inline(
        self, method: Callable[..., Any], kwargs: dict[str, Any], policy: InlinePolicy
    ) -> tuple[Any, float]:
        # Like a call in a thread, the method sees no running event loop.
        loop = asyncio._get_running_loop()
        asyncio._set_running_loop(None)
        started = time.perf_counter()
        try:
            return method(**kwargs), time.perf_counter() - started
        finally:
            seconds = time.perf_counter() - started
            asyncio._set_running_loop(loop)
            self.limit.release()
            policy.observe(seconds, inline=True)

    async def _call_in_thread(
        self, method: Callable[..., Any], kwargs: dict[str, Any], policy: InlinePolicy
    ) -> Any:
        call = _Timed(method, kwargs)
        future = asyncio.get_running_loop().run_in_executor(self.executor, call)

        def finished(_: object) -> None:
            # The slot is held until the thread really finishes, even after a 504: a
            # thread cannot be stopped, so its work still counts against max_concurrency.
            self.limit.release()
            policy.observe(call.seconds, inline=False)

        future.add_done_callback(finished)
        return await asyncio.shield(future)

    @staticmethod
    def _timed_out(api: Api[Any, Any], timeout: float) -> RequestTimeout:
        return RequestTimeout(
            f"API '{api.name}' did not answer within {timeout:g} s. Send less work per request, "
            "or raise the limit with TIFFIN_TIMEOUT or @tiffin.service(timeout=...).",
            detail={"timeout": timeout, "api": api.name},
        )

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
        try:
            while not disconnected.is_set():
                try:
                    if inspect.isasyncgen(generator):
                        item = await anext(generator, done)
                    else:
                        item = await loop.run_in_executor(self.executor, next, generator, done)
                except Exception as exc:
                    error = (
                        exc
                        if isinstance(exc, TiffinError)
                        else self._failed(api, request.request_id, exc)
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
                await loop.run_in_executor(self.executor, generator.close)
            self.limit.release()
        return 200


def _error_headers(exc: TiffinError) -> list[tuple[bytes, bytes]]:
    """The headers an error's response carries beside its body."""
    if isinstance(exc, ServiceUnavailable):
        return [(b"retry-after", str(exc.detail.get("retry_after", 1)).encode())]
    if isinstance(exc, Unauthorized):
        return [(b"www-authenticate", b'Bearer realm="tiffin"')]
    if isinstance(exc, MethodNotAllowed):
        return [(b"allow", ", ".join(exc.detail.get("allowed", [])).encode())]
    return []


class _ProtocolRoute:
    """The handler of one protocol route: the protocol's ``HttpHandler`` behind the
    app's route signature. ``App._http`` knows it by type: it checks the API key itself,
    so that a refusal is in the protocol's shape."""

    __slots__ = ("app", "handler", "protocol")

    def __init__(self, app: App, protocol: Protocol, handler: HttpHandler) -> None:
        self.app = app
        self.protocol = protocol
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        response, extra = await self.app.protocol_route(
            self.protocol, self.handler, scope, receive, request
        )
        return await self.app._respond(
            send,
            request,
            response.status,
            response.body,
            content_type=response.content_type.encode("latin-1"),
            extra=extra,
        )


class _Timed:
    """A sync API call for a worker thread, timed where it runs (so the time excludes
    the wait for a thread and for the GIL before it starts)."""

    __slots__ = ("kwargs", "method", "seconds")

    def __init__(self, method: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self.method = method
        self.kwargs = kwargs
        self.seconds = 0.0

    def __call__(self) -> Any:
        started = time.perf_counter()
        try:
            return self.method(**self.kwargs)
        finally:
            self.seconds = time.perf_counter() - started


def create_app(
    spec: ServiceSpec,
    settings: Settings,
    *,
    remote: Callable[[str], Any] | None = None,
    version: str = "",
) -> App:
    """Build the ASGI app of a service; dependencies given by URL get a ``tiffin.Client``."""
    if remote is None:
        from tiffin.client import Client

        remote = Client
    return App(spec, settings, remote=remote, version=version)
