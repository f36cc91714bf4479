"""OpenTelemetry traces: a span for each request and for each step it takes.

**When tracing is on.** The ``tracing`` setting (``TIFFIN_TRACING``) says: ``off``;
``on`` (needs ``pip install 'tiffin[otel]'``); or ``auto``, the default, which is on in a
``tiffin serve`` worker when the OpenTelemetry SDK is installed and the environment asks
for traces: ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none``, or, with it
unset, ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
(and ``OTEL_SDK_DISABLED`` is not ``true``). An app built in-process (``TestClient``)
reads no environment: it traces only with ``tracing="on"``, into whatever tracer provider
the process has.

**The SDK and its configuration.** Each worker, after it is forked, sets up the SDK
(unless the process has an SDK tracer provider already, such as one the service's module
or ``opentelemetry-instrument`` made) with the SDK's own reading of the standard
variables: ``OTEL_SERVICE_NAME`` (default: the service's name) and
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_BSP_*``, and the
exporter's ``OTEL_EXPORTER_OTLP_*``. ``OTEL_TRACES_EXPORTER`` (default ``otlp``) is a
comma-separated list: ``otlp`` is OTLP over HTTP/protobuf (port 4318), or over gRPC when
``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL=grpc`` (with
``opentelemetry-exporter-otlp-proto-grpc`` installed); ``console`` prints spans; any
other name is looked up among installed exporters (the ``opentelemetry_traces_exporter``
entry points). Spans still buffered are exported when the worker stops.

**Spans.** For an API request to ``POST /predict`` of a service class ``Iris``:

==========================  ========  ====================================================
span                        kind      when
==========================  ========  ====================================================
``POST /predict``           server    the request; continues the caller's trace from its
                                      ``traceparent``/``tracestate`` headers
``validate predict``        internal  reading and validating the body
``Iris.predict``            internal  the call of the method (in its thread, if it has one)
``batch wait predict``      internal  a batched request's time queued for its batch
``Iris.predict``            internal  a batched API's call: one span per batch, a child of
                                      the oldest request in it, linked to every request in
                                      it (``tiffin.batch.size`` rows,
                                      ``tiffin.batch.requests``)
``Embedder.encode``         internal  a call of an in-process ``tiffin.depends`` service
``POST /encode``            client    a ``tiffin.Client`` call made inside a trace, such as
                                      a ``tiffin.depends(url)`` dependency's; it sends
                                      ``traceparent``, so the callee's spans join the trace
``call predict``            server    an API called through a protocol (``Server.call``)
``task report``             consumer  one run of a ``@tiffin.task``
==========================  ========  ====================================================

The server span carries ``http.request.method``, ``url.path``, ``url.scheme``,
``http.route``, ``http.response.status_code``, ``tiffin.api`` and ``tiffin.request_id``.
An error marks its span with status ERROR and records the exception, and sets
``error.type``; a request refused with a 4xx leaves its server span's status unset, as
the HTTP conventions say, and marks only the step that refused it.

While a span is current, ``tiffin.observability.context.trace_id`` and ``span_id`` hold
its ids, so log lines name them; the request's trace id stays set to the end of its
handling (its access-log line too).

**Cost when off.** Nothing here imports OpenTelemetry unless tracing is on; the server
checks one attribute per hook (``App.tracer is None``).

    TIFFIN_TRACING=on OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 tiffin serve
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import Token
from typing import TYPE_CHECKING, Any, Protocol

from tiffin.config import Settings
from tiffin.exceptions import ConfigError, TiffinError
from tiffin.extras import import_optional
from tiffin.observability import context as ids

if TYPE_CHECKING:
    import httpx
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanKind

__all__ = ["Tracer", "active", "asend", "configure", "flush", "send", "tracer", "wanted"]

log = logging.getLogger("tiffin.tracing")

_SCOPE = "tiffin"
_EXPORTERS = "opentelemetry_traces_exporter"  # the SDK's entry point group for exporters
_OTLP = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
_PACKAGES = {
    "otlp_proto_http": "opentelemetry-exporter-otlp-proto-http",
    "otlp_proto_grpc": "opentelemetry-exporter-otlp-proto-grpc",
}
_FLUSH_MS = 5000


class _Queued(Protocol):
    """A request waiting in a batcher, as the batch's spans read it."""

    span: Any
    arrived: float
    rows: int


# -- when tracing is on ----------------------------------------------------------------


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the environment asks for traces: ``OTEL_TRACES_EXPORTER`` names an exporter
    other than ``none``, or, unset, an OTLP endpoint is given; never with
    ``OTEL_SDK_DISABLED=true``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if exporters:
        return any(name.strip() not in ("", "none") for name in exporters.split(","))
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure(
    settings: Settings, service: str, environ: Mapping[str, str], *, version: str = ""
) -> Settings:
    """Set up OpenTelemetry in this process when tracing is on for it, and return the
    settings with ``tracing`` resolved to ``on`` or ``off``. A worker calls it once, after
    it is forked (the SDK's exporters run threads of their own).

    Args:
        settings: the worker's settings; ``tracing`` says whether to trace.
        service: the service's name, the default ``service.name``.
        environ: where the ``OTEL_*`` variables are read from.
        version: the version served (a bundle's), the default ``service.version``.

    Raises:
        MissingDependency: ``tracing`` is ``on`` but the SDK is not installed.
        ConfigError: ``OTEL_TRACES_EXPORTER`` names an exporter that is not installed.

    Example:
        settings = tracing.configure(settings, spec.name, os.environ)
    """
    if settings.tracing == "off" or (settings.tracing == "auto" and not wanted(environ)):
        return settings.model_copy(update={"tracing": "off"})
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        if settings.tracing == "on":  # raises MissingDependency, naming the extra
            import_optional("opentelemetry.sdk.trace", "otel", purpose="to trace (tracing: on)")
        log.warning(
            "The environment asks for traces (OTEL_*), but the OpenTelemetry SDK is not "
            "installed, so nothing is traced. Install it with: pip install 'tiffin[otel]'"
        )
        return settings.model_copy(update={"tracing": "off"})
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        detected = Resource.create()
        ours: dict[str, str] = {}
        if str(detected.attributes.get("service.name", "")).startswith("unknown_service"):
            ours["service.name"] = service
        if version and "service.version" not in detected.attributes:
            ours["service.version"] = version
        # the sampler (OTEL_TRACES_SAMPLER) and span limits come from the environment
        provider = TracerProvider(resource=detected.merge(Resource(ours)), shutdown_on_exit=False)
        for exporter in _exporters(environ):
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    return settings.model_copy(update={"tracing": "on"})


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names, each made with no arguments, so
    that it reads its own ``OTEL_EXPORTER_*`` variables."""
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip() or "otlp"
    exporters = []
    for given in (part.strip() for part in named.split(",")):
        if given in ("", "none"):
            continue
        name = given
        if given == "otlp":
            protocol = (
                environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            if protocol not in _OTLP:
                raise ConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not a protocol tiffin can "
                    "export traces with. Use 'http/protobuf' or 'grpc'.",
                    detail={"protocol": protocol},
                )
            name = _OTLP[protocol]
        found = importlib.metadata.entry_points(group=_EXPORTERS, name=name)
        if not found:
            installed = sorted(ep.name for ep in importlib.metadata.entry_points(group=_EXPORTERS))
            package = _PACKAGES.get(name)
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER asks for the trace exporter '{name}', which no "
                f"installed package provides (installed: {', '.join(installed) or 'none'}). "
                + (f"Install it with: pip install {package}" if package else "Install it."),
                detail={"exporter": name},
            )
        exporters.append(next(iter(found)).load()())
    return exporters


def tracer(settings: Settings, spec: Any = None) -> Tracer | None:
    """The tracer of an app or task runner with these settings: None unless ``tracing``
    is ``on`` (a worker's ``configure`` resolves ``auto``).

    Args:
        settings: the resolved settings.
        spec: the service (a ``ServiceSpec``), to name its methods' spans.

    Raises:
        MissingDependency: the OpenTelemetry API is not installed.
    """
    if settings.tracing != "on":
        return None
    import_optional("opentelemetry.trace", "otel", purpose="to trace (tracing: on)")
    return Tracer(spec)


def flush() -> None:
    """Export the spans this process still buffers (a forked worker leaves by
    ``os._exit``, which runs no exit hooks); nothing when OpenTelemetry was never used."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return
    provider = trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if callable(force_flush):
        force_flush(_FLUSH_MS)


# -- spans -----------------------------------------------------------------------------


def _fail(span: Span, exc: BaseException, *, server: bool = False) -> None:
    """Mark ``span`` failed by ``exc``; a server span refusing a request with a 4xx (the
    caller's mistake) gets only ``error.type``, as the HTTP conventions say."""
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", type(exc).__name__)
    if server and isinstance(exc, TiffinError) and exc.status_code < 500:
        return
    if isinstance(exc, Exception):
        span.record_exception(exc)
    message = exc.message if isinstance(exc, TiffinError) else str(exc)
    span.set_status(Status(StatusCode.ERROR, message or type(exc).__name__))


def _show(span: Span) -> tuple[Token[str | None], Token[str | None]] | None:
    """Make the span's ids those log lines name; the tokens that undo it."""
    found = span.get_span_context()
    if not found.is_valid:
        return None
    return ids.trace_id.set(f"{found.trace_id:032x}"), ids.span_id.set(f"{found.span_id:016x}")


def _hide(tokens: tuple[Token[str | None], Token[str | None]] | None) -> None:
    if tokens is not None:
        ids.trace_id.reset(tokens[0])
        ids.span_id.reset(tokens[1])


class Tracer:
    """Makes the spans of one app (or task runner); see the module docstring.

    Made by ``tracer(settings, spec)``, and only when tracing is on: it takes its spans
    from the process's tracer provider (``opentelemetry.trace.get_tracer_provider()``).

    Args:
        spec: the service (a ``ServiceSpec``), to name its methods' spans.
    """

    def __init__(self, spec: Any = None) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import Link, SpanKind

        from tiffin import __version__

        self._tracer = trace.get_tracer(_SCOPE, __version__)
        self._start = self._tracer.start_span
        self._attach = context.attach
        self._detach = context.detach
        self._current_context = context.get_current
        self._in_context = trace.set_span_in_context
        self._current_span = trace.get_current_span
        self._extract = propagate.extract
        self._fields = {name.encode("latin-1") for name in propagate.get_global_textmap().fields}
        self._link = Link
        self._internal = SpanKind.INTERNAL
        self._server = SpanKind.SERVER
        self._consumer = SpanKind.CONSUMER
        self._methods: dict[str, tuple[str, dict[str, str]]] = {}
        if spec is not None:
            for api in spec.apis.values():
                self._methods[api.name] = self._method(spec.cls, api)

    @staticmethod
    def _method(owner: type, api: Any) -> tuple[str, dict[str, str]]:
        """The name and attributes of the span of a call of an API's method."""
        return f"{owner.__name__}.{api.attribute}", {
            "tiffin.api": api.name,
            "code.function.name": f"{owner.__module__}.{owner.__qualname__}.{api.attribute}",
        }

    @contextmanager
    def _span(
        self,
        name: str,
        parent: Context | None,
        attributes: Mapping[str, Any],
        *,
        kind: SpanKind | None = None,
        links: Sequence[Any] = (),
        start_time: int | None = None,
    ) -> Iterator[Span]:
        """A span, current (and its ids shown to log lines) inside the block; an exception
        leaving the block marks it failed."""
        span = self._start(
            name,
            parent,
            kind or self._internal,
            attributes,
            links,
            start_time,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = self._attach(self._in_context(span, parent))
        shown = _show(span)
        try:
            yield span
        except BaseException as exc:
            _fail(span, exc, server=kind is self._server)
            raise
        finally:
            span.end()
            self._detach(token)
            _hide(shown)

    # -- hooks of the app: each called only when tracing is on -------------------------

    def server(self, api: Any, route: str, handler: Callable[..., Awaitable[int]]) -> _Server:
        """An API route's handler, answering inside a server span."""
        return _Server(self, api, route, handler)

    def validate(self, api: Any, body: bytes, content_type: str) -> dict[str, Any]:
        """``api.io.decode(body, content_type)`` inside a span."""
        with self._span(f"validate {api.name}", None, {"tiffin.api": api.name}):
            result: dict[str, Any] = api.io.decode(body, content_type)
            return result

    def call(self, api: Any, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` (an API's) calling itself inside a span, a child of the span current
        now, wherever it runs: inline, in a thread, or awaited."""
        name, attributes = self._methods[api.name]
        parent = self._current_context()
        if api.is_async:

            async def traced_async(**kwargs: Any) -> Any:
                with self._span(name, parent, attributes):
                    return await method(**kwargs)

            return traced_async

        def traced(**kwargs: Any) -> Any:
            with self._span(name, parent, attributes):
                return method(**kwargs)

        return traced

    def current(self) -> Span:
        """The current span (a batched request's, captured as it is queued)."""
        return self._current_span()

    async def batch(
        self,
        api: str,
        batch: Sequence[_Queued],
        started: float,
        call: Callable[[dict[str, Any]], Awaitable[Any]],
        merged: dict[str, Any],
    ) -> Any:
        """Run one batch, ``call(merged)``, inside its span, after recording each request's
        wait for it (from its arrival to ``started``, both ``time.perf_counter()``)."""
        now_ns, now = time.time_ns(), time.perf_counter()
        start_ns = now_ns - int((now - started) * 1e9)
        wait = f"batch wait {api}"
        links = []
        for pending in batch:
            found = pending.span.get_span_context()
            if found.is_valid:
                links.append(self._link(found))
            self._start(
                wait,
                self._in_context(pending.span),
                self._internal,
                {"tiffin.api": api, "tiffin.batch.rows": pending.rows},
                None,
                now_ns - int((now - pending.arrived) * 1e9),
            ).end(start_ns)
        name, method = self._methods[api]
        attributes: dict[str, Any] = {
            **method,
            "tiffin.batch.size": sum(pending.rows for pending in batch),
            "tiffin.batch.requests": len(batch),
        }
        parent = self._in_context(batch[0].span)
        with self._span(name, parent, attributes, links=links, start_time=start_ns):
            return await call(merged)

    def protocol(self, call: Callable[[str, Any, str], Awaitable[Any]]) -> Callable[..., Any]:
        """``App.call`` answering inside a span of its own: a server span, unless a
        span is current already."""

        @functools.wraps(call)
        async def traced(name: str, arguments: Any, request_id: str) -> Any:
            inside = self._current_span().get_span_context().is_valid
            attributes = {"tiffin.api": name, "tiffin.request_id": request_id}
            kind = self._internal if inside else self._server
            with self._span(f"call {name}", None, attributes, kind=kind):
                return await call(name, arguments, request_id)

        return traced

    def dependencies(self, runtime: Any) -> None:
        """Make each API method of the in-process services ``runtime`` depends on (and
        theirs) call itself inside a span, as the service's code calls it."""
        for child in runtime.children:
            instance = child.instance
            cls = type(instance)
            for api in child.spec.apis.values():
                if not api.io.stream:
                    method = getattr(instance, api.attribute)
                    # an instance attribute, so the class and isinstance() stay the user's
                    instance.__dict__[api.attribute] = self._wrap(
                        *self._method(cls, api), method, is_async=api.is_async
                    )
            self.dependencies(child)

    def task(self, task: Any, record: Any, method: Callable[..., Any]) -> Callable[..., Any]:
        """A ``@tiffin.task`` method calling itself inside the span of one run."""
        attributes = {
            "tiffin.task": task.name,
            "tiffin.task.id": record.id,
            "tiffin.task.attempt": record.attempts,
        }
        return self._wrap(
            f"task {task.name}", attributes, method, is_async=task.is_async, kind=self._consumer
        )

    def _wrap(
        self,
        name: str,
        attributes: Mapping[str, Any],
        method: Callable[..., Any],
        *,
        is_async: bool,
        kind: SpanKind | None = None,
    ) -> Callable[..., Any]:
        """``method`` calling itself inside a span, a child of the span current where
        it is called."""
        if is_async:

            @functools.wraps(method)
            async def traced_async(*args: Any, **kwargs: Any) -> Any:
                with self._span(name, None, attributes, kind=kind):
                    return await method(*args, **kwargs)

            return traced_async

        @functools.wraps(method)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with self._span(name, None, attributes, kind=kind):
                return method(*args, **kwargs)

        return traced


class _Server:
    """An API route's handler inside a server span that continues the caller's trace."""

    __slots__ = ("_api", "_handler", "_name", "_route", "_tracer")

    def __init__(
        self, tracer: Tracer, api: Any, route: str, handler: Callable[..., Awaitable[int]]
    ) -> None:
        self._tracer = tracer
        self._api = api.name
        self._route = route
        self._handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any, request: Any) -> int:
        tracer = self._tracer
        fields = tracer._fields
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in fields
        }
        parent = tracer._extract(carrier) if carrier else None
        method = scope["method"]
        attributes = {
            "http.request.method": method,
            "http.route": self._route,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "tiffin.api": self._api,
            "tiffin.request_id": request.request_id,
        }
        span = tracer._start(
            f"{method} {self._route}",
            parent,
            tracer._server,
            attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        token = tracer._attach(tracer._in_context(span, parent))
        # Left set to the end of the request's handling (its asyncio task), so that the
        # access-log line, written after this handler returns, names the trace.
        _show(span)
        status = 500
        try:
            status = await self._handler(scope, receive, send, request)
            return status
        except BaseException as exc:
            if isinstance(exc, TiffinError):
                status = exc.status_code
            _fail(span, exc, server=True)
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            span.end()
            tracer._detach(token)


# -- clients ---------------------------------------------------------------------------


def active() -> bool:
    """Whether a trace is going on where this is called (a span is current): a
    ``tiffin.Client`` call then gets a span and sends ``traceparent``. Imports nothing."""
    trace = sys.modules.get("opentelemetry.trace")
    return trace is not None and bool(trace.get_current_span().get_span_context().is_valid)


@contextmanager
def _client_span(request: httpx.Request, route: str) -> Iterator[Callable[[int], None]]:
    """A client span around sending ``request``, whose trace headers it sets; yields
    what records the answer's status."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    url = request.url
    span = trace.get_tracer(_SCOPE).start_span(
        f"{request.method} {route}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": request.method,
            "url.full": str(url.copy_with(query=None)),
            "server.address": url.host,
            "server.port": url.port or (443 if url.scheme == "https" else 80),
        },
        record_exception=False,
        set_status_on_exception=False,
    )
    propagate.inject(request.headers, context=trace.set_span_in_context(span))

    def answered(status: int) -> None:
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))

    try:
        yield answered
    except BaseException as exc:
        _fail(span, exc)
        raise
    finally:
        span.end()


def send(send: Callable[..., httpx.Response], request: httpx.Request, route: str) -> httpx.Response:
    """``send(request, stream=True)`` inside a client span (see ``active``)."""
    with _client_span(request, route) as answered:
        response = send(request, stream=True)
        answered(response.status_code)
        return response


async def asend(
    send: Callable[..., Awaitable[httpx.Response]], request: httpx.Request, route: str
) -> httpx.Response:
    """``await send(request, stream=True)`` inside a client span (see ``active``)."""
    with _client_span(request, route) as answered:
        response = await send(request, stream=True)
        answered(response.status_code)
        return response
