"""Serving protocols: more ways to call every tiffin service, beside its own HTTP APIs.

A protocol is a ``Protocol`` subclass registered under the ``tiffin.protocols`` entry
point group. In each worker, every enabled protocol is made once with a ``Server``: the
service's APIs, and ``Server.call`` to run one, which shares everything the service's
own HTTP routes use (the instance, the batchers, the concurrency limit, the timeout and
the request metrics). A protocol answers HTTP paths (``http_routes``) and, when the
server runs with ``--grpc-port``, gRPC methods (``grpc_handlers``). tiffin's own Open
Inference Protocol (KServe V2, ``tiffin.protocols.oip``) is registered the same way::

    # a plugin's pyproject.toml
    [project.entry-points."tiffin.protocols"]
    jsonrpc = "tiffin_jsonrpc:JsonRpc"

    # tiffin_jsonrpc.py
    class JsonRpc(Protocol):
        name = "jsonrpc"

        def http_routes(self):
            return {"/jsonrpc": self.handle}

        async def handle(self, request: HttpRequest) -> HttpResponse:
            message = json.loads(request.body)
            result = await self.server.call(message["method"], message["params"])
            return HttpResponse(200, json.dumps({"jsonrpc": "2.0", "result": result}).encode())

Every installed protocol serves every service unless the ``protocols`` setting names
the ones to use (``TIFFIN_PROTOCOLS=oip``), or is ``none``. A service's own API wins a
path that a protocol also claims. ``examples/jsonrpc_protocol`` is a complete plugin.
"""

from __future__ import annotations

import functools
import importlib.metadata
from abc import ABC
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from tiffin.exceptions import ConfigError, ServiceDefinitionError, TiffinError
from tiffin.extras import load_plugin

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from tiffin.config import Settings
    from tiffin.service import Api

__all__ = [
    "ENTRY_POINT_GROUP",
    "HttpHandler",
    "HttpRequest",
    "HttpResponse",
    "Protocol",
    "Server",
    "enabled",
    "installed",
    "refresh",
]

ENTRY_POINT_GROUP = "tiffin.protocols"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request to a protocol's route, with its whole body read.

    Attributes:
        method: ``GET``, ``POST``, ...
        path: the URL path, e.g. ``/v2/models/predict/infer``.
        query: the raw query string (``a=1&b=2``), possibly empty.
        headers: the headers, names in lower case (a repeated header: its last value).
        body: the body; the server's ``max_body_size`` was enforced before this.
        request_id: the request's id (the client's ``X-Request-ID`` if it sent a valid
            one); the response carries it back, and the server's log lines name it.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    request_id: str


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A protocol's answer to an ``HttpRequest``.

    Attributes:
        status: the HTTP status code.
        body: the body.
        content_type: its media type.
        headers: more headers, as ``(name, value)`` pairs; the server adds
            ``content-length``, ``x-request-id`` and the CORS headers itself.
    """

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default=())


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
"""A protocol's handler of one HTTP route."""


class Server:
    """What a protocol sees of the service it serves, in one worker.

    Attributes:
        name: the service's name.
        version: the version served: the bundle's, when serving a built bundle, else "".
        apis: the service's APIs by name; ``api.io.params`` describes each parameter and
            ``api.io.output`` the return type.
        settings: the server's settings.
        registry: the Prometheus registry ``/metrics`` exposes; a protocol may add its
            own collectors to it.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self.name: str = app.spec.name
        self.version: str = app.version
        self.apis: Mapping[str, Api[Any, Any]] = app.spec.apis
        self.settings: Settings = app.settings
        self.registry: CollectorRegistry = app.metrics.registry

    async def call(
        self, api: str, arguments: Mapping[str, Any], *, request_id: str | None = None
    ) -> Any:
        """Run an API with keyword arguments the way an HTTP request to it runs (batched
        if it batches, within the timeout and the concurrency limit, counted in the
        request metrics) and return what its method returned.

        ``arguments`` are checked against the API's parameters first, as a JSON request's
        would be (types converted, constraints such as an array's ``Shape`` checked).

        The result is what the method returned; ``self.apis[api].io.encode(result)``
        gives the JSON body the API's own route would answer with.

        Raises:
            RouteNotFound: there is no API of that name.
            ValidationFailed: the arguments do not fit the API's parameters; ``detail``
                has ``errors``, each a ``{"loc", "msg"}``.
            RequestTimeout, ServiceUnavailable: too slow, or too busy.
            ServiceError: the service's code raised (its traceback is logged with
                ``request_id``).
        """
        return await self._app.call(api, arguments, request_id or self.request_id())

    async def ready(self) -> bool:
        """Whether the service has started and its readiness checks pass."""
        return bool(await self._app.runtime.ready())

    def authorized(self, key: str) -> bool:
        """Whether ``key`` is one of the server's API keys; True when it has none."""
        return bool(self._app.authorized(key))

    def request_id(self) -> str:
        """A new request id."""
        return str(self._app.new_request_id())


class Protocol(ABC):
    """A way to call every tiffin service: HTTP routes, gRPC methods, or both.

    Subclass it, set ``name``, override ``http_routes`` and/or ``grpc_handlers``, and
    register the class under the ``tiffin.protocols`` entry point group. The server makes
    one instance per worker, once the service's APIs are known and before it starts;
    ``start`` and ``stop`` run when the service starts and stops.

    Attributes:
        name: the protocol's short name, for the ``protocols`` setting and messages.
        server: the service being served.
    """

    name: ClassVar[str]

    def __init__(self, server: Server) -> None:
        self.server = server

    def http_routes(self) -> Mapping[str, HttpHandler]:
        """The HTTP paths this protocol answers, each with its handler.

        A path ending in ``/*`` is a prefix: it takes every path under it that no exact
        route takes (``/v2/models/*`` for model names not served, say). Routes are asked
        for once, so they may be computed from the APIs here.
        """
        return {}

    def grpc_handlers(self) -> Sequence[Any]:
        """``grpc.GenericRpcHandler`` objects for the gRPC server (``--grpc-port``); their
        methods run on the worker's event loop (``grpc.aio``), so they may await
        ``server.call``. Only asked for when the server has a gRPC port."""
        return ()

    def http_error(self, error: TiffinError) -> HttpResponse:
        """The response for an error on one of this protocol's routes: one its handler
        raised, or one the server raised first (no valid API key, a body over the size
        limit), or an exception of the protocol's own code (as a ``ServiceError``). By
        default tiffin's own ``{"error": {"type", "message", "detail"}}``; the server adds
        the ``allow``, ``retry-after`` or ``www-authenticate`` header an error calls for,
        unless the response has it."""
        from tiffin.io import dumps

        return HttpResponse(error.status_code, dumps(error.to_dict()))

    async def start(self) -> None:  # noqa: B027 - a hook: most protocols need none
        """Runs once the service has started, before requests arrive."""

    async def stop(self) -> None:  # noqa: B027
        """Runs when the server stops, before the service does."""


def refresh() -> None:
    """Forget the registered protocols, so plugins installed since are found."""
    _entry_points.cache_clear()
    _load.cache_clear()


@functools.cache
def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


@functools.cache
def _load(name: str) -> type[Protocol]:
    entry = _entry_points()[name]
    return load_plugin(
        entry,
        Protocol,
        kind="protocol",
        base_name="tiffin.protocols.Protocol",
        error=ServiceDefinitionError,
        detail={"entry_point": entry.value},
        remedy="Reinstall the package that provides it, or leave it out with the protocols "
        "setting (TIFFIN_PROTOCOLS).",
    )


def installed() -> dict[str, type[Protocol]]:
    """Every protocol registered under the ``tiffin.protocols`` entry point group, by name."""
    return {name: _load(name) for name in _entry_points()}


def enabled(names: Sequence[str]) -> list[type[Protocol]]:
    """The protocols to serve, for the ``protocols`` setting: every installed one for
    ``("all",)``, none for ``("none",)``, else those named, in order (only those are
    imported, so a broken plugin can be left out)."""
    if tuple(names) == ("all",):
        return list(installed().values())
    if tuple(names) in (("none",), ()):
        return []
    available = _entry_points()
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ConfigError(
            f"The protocols setting names {', '.join(repr(n) for n in unknown)}, which "
            f"{'is' if len(unknown) == 1 else 'are'} not installed. Installed: "
            f"{', '.join(sorted(available)) or 'none'}. Install the plugin, or fix "
            "TIFFIN_PROTOCOLS.",
            detail={"unknown": unknown, "installed": sorted(available)},
        )
    return [_load(name) for name in names]
