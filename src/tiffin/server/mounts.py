"""The serving protocols of one app: each enabled ``tiffin.protocols.Protocol``, its HTTP
routes mounted beside the service's own, and the gRPC server for their gRPC handlers.

A protocol's route answers every error, the server's own included (no valid API key, a
body over the limit, an exception of the protocol's code), in the protocol's shape
(``Protocol.http_error``), with the ``allow``, ``retry-after`` or ``www-authenticate``
header the error calls for. A path the service's own routes have already is left to
them; a prefix route (``/v2/*``) takes only paths no exact route takes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tiffin.exceptions import (
    MethodNotAllowed,
    MissingDependency,
    ServiceError,
    ServiceUnavailable,
    TiffinError,
    Unauthorized,
)
from tiffin.protocols import HttpHandler, HttpRequest, HttpResponse, Protocol
from tiffin.protocols import Server as ProtocolServer
from tiffin.protocols import enabled as enabled_protocols
from tiffin.server.request import Handler, Receive, Request, Scope, Send

if TYPE_CHECKING:
    from tiffin.server.app import App

__all__ = ["Mounts", "ProtocolRoute", "error_headers"]

log = logging.getLogger("tiffin.server")


def error_headers(exc: TiffinError) -> list[tuple[bytes, bytes]]:
    """The headers an error's response carries beside its body."""
    if isinstance(exc, ServiceUnavailable):
        return [(b"retry-after", str(exc.detail.get("retry_after", 1)).encode())]
    if isinstance(exc, Unauthorized):
        return [(b"www-authenticate", b'Bearer realm="tiffin"')]
    if isinstance(exc, MethodNotAllowed):
        return [(b"allow", ", ".join(exc.detail.get("allowed", [])).encode())]
    return []


class Mounts:
    """The protocols of one app.

    Attributes:
        protocols: the enabled protocols, made for this app.
        prefixes: ``(prefix, handler)`` of the prefix routes, longest first.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.protocols: list[Protocol] = []
        self.prefixes: list[tuple[str, Handler]] = []
        self._grpc: Any = None

    def mount(self, routes: dict[str, Handler]) -> None:
        """Make each enabled protocol and add its HTTP routes to ``routes``."""
        server = ProtocolServer(self.app)
        for cls in enabled_protocols(self.app.settings.protocols):
            protocol = cls(server)
            self.protocols.append(protocol)
            for path, handler in protocol.http_routes().items():
                route = ProtocolRoute(self, protocol, handler)
                if path.endswith("/*"):
                    self.prefixes.append((path[:-1], route))
                elif path in routes:
                    log.warning(
                        "The %s protocol's route %s is left to the service's own API there.",
                        protocol.name,
                        path,
                    )
                else:
                    routes[path] = route
        self.prefixes.sort(key=lambda item: -len(item[0]))

    def prefixed(self, path: str) -> Handler | None:
        """The prefix route that takes ``path``, if any."""
        for prefix, handler in self.prefixes:
            if path.startswith(prefix):
                return handler
        return None

    async def start(self) -> None:
        """Start each protocol, then the gRPC server when the settings give a port."""
        for protocol in self.protocols:
            await protocol.start()
        port = self.app.settings.grpc_port
        if port is not None:
            await self._start_grpc(port)

    async def stop(self) -> None:
        """Stop the gRPC server (calls in flight get the grace period), then each protocol."""
        if self._grpc is not None:
            await self._grpc.stop(self.app.settings.grace_period)
            self._grpc = None
        for protocol in reversed(self.protocols):
            try:
                await protocol.stop()
            except Exception:
                log.exception("The %s protocol failed to stop cleanly", protocol.name)

    async def answer(
        self,
        protocol: Protocol,
        handler: HttpHandler,
        scope: Scope,
        receive: Receive,
        request: Request,
    ) -> tuple[HttpResponse, list[tuple[bytes, bytes]]]:
        """A protocol's answer on one of its routes, and the headers to add to it."""
        app = self.app
        method = scope["method"]
        try:
            if not app.authorized(request.api_key):
                raise app._unauthorized(request)
            body = b"" if method in ("GET", "HEAD") else await app._body(receive, request)
            headers = {
                key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
            }
            query = scope.get("query_string", b"").decode("latin-1")
            response = await handler(
                HttpRequest(method, scope["path"], query, headers, body, request.request_id)
            )
        except Exception as exc:
            error = exc if isinstance(exc, TiffinError) else _failed(protocol, exc)
            response = protocol.http_error(error)
            named = {key.lower() for key, _ in response.headers}
            extra = [
                (key, value) for key, value in error_headers(error) if key.decode() not in named
            ]
        else:
            extra = []
        extra.extend(
            (key.encode("latin-1"), value.encode("latin-1")) for key, value in response.headers
        )
        return response, extra

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
        settings = self.app.settings
        self._grpc = GrpcServer(
            handlers,
            host=settings.host,
            port=port,
            max_message=settings.max_body_size,
            authorized=self.app.authorized if settings.api_keys else None,
        )
        await self._grpc.start()


def _failed(protocol: Protocol, exc: Exception) -> ServiceError:
    log.error("The %s protocol raised %s", protocol.name, type(exc).__name__, exc_info=exc)
    return ServiceError(
        f"The {protocol.name} protocol failed: its code raised {type(exc).__name__}. The "
        "server log has the traceback.",
        detail={"protocol": protocol.name},
    )


class ProtocolRoute:
    """The handler of one protocol route: the protocol's ``HttpHandler`` behind the
    app's route signature. ``App`` knows it by type: it checks the API key itself, so
    that a refusal is in the protocol's shape."""

    __slots__ = ("handler", "mounts", "protocol")

    def __init__(self, mounts: Mounts, protocol: Protocol, handler: HttpHandler) -> None:
        self.mounts = mounts
        self.protocol = protocol
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send, request: Request) -> int:
        response, extra = await self.mounts.answer(
            self.protocol, self.handler, scope, receive, request
        )
        return await self.mounts.app._respond(
            send,
            request,
            response.status,
            response.body,
            content_type=response.content_type.encode("latin-1"),
            extra=extra,
        )
