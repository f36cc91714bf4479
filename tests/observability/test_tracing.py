"""Tracing in-process, its spans read back from the SDK's in-memory exporter: the span
tree of a request, a caller's trace continued, errors, batches, protocol calls, task runs,
and the trace carried into ``tiffin.depends`` calls, in-process and over HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import tiffin
from tests.observability.tracing_support import hex_id, memory_exporter, named, parent_of
from tests.server.asgi import live_server, serving
from tiffin import config
from tiffin.exceptions import ConfigError
from tiffin.observability import context, tracing
from tiffin.testing import TestClient

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


def run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coroutine())


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """The spans this process ends during the test."""
    spans = memory_exporter()
    spans.clear()
    yield spans
    spans.clear()


def ids() -> list[str | None]:
    """The trace and span ids log lines would name now."""
    return [context.trace_id.get(), context.span_id.get()]


@tiffin.service(name="tracer")
class Traced:
    @tiffin.api
    def double(self, x: float) -> float:
        return x * 2

    @tiffin.api
    def inline_ids(self) -> list[str | None]:
        return ids()

    @tiffin.api(offload=True)
    def thread_ids(self) -> list[str | None]:
        return ids()

    @tiffin.api
    async def async_ids(self) -> list[str | None]:
        return ids()

    @tiffin.api
    def broken(self, x: float) -> float:
        raise ZeroDivisionError("no")

    @tiffin.task
    def report(self, n: int) -> int:
        return n + 1


# -- a request's span tree ---------------------------------------------------------------


def test_a_request_is_a_server_span_over_its_validation_and_its_model_call(
    exporter: InMemorySpanExporter,
) -> None:
    with TestClient(Traced, tracing="on") as client:
        response = client.http.post("/double", json={"x": 1.5})
    assert response.json() == 3.0
    spans = exporter.get_finished_spans()
    server = named(spans, "POST /double")
    validate = named(spans, "validate double")
    call = named(spans, "Traced.double")
    assert server.kind == SpanKind.SERVER
    assert server.parent is None
    assert dict(server.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/double",
        "url.path": "/double",
        "url.scheme": "http",
        "http.response.status_code": 200,
        "tiffin.api": "double",
        "tiffin.request_id": response.headers["x-request-id"],
    }
    assert server.status.status_code == StatusCode.UNSET
    for child in (validate, call):
        assert child.kind == SpanKind.INTERNAL
        assert child.context.trace_id == server.context.trace_id
        assert parent_of(child) == server.context.span_id
    assert validate.end_time is not None
    assert call.start_time is not None
    assert validate.end_time <= call.start_time  # validated, then called
    assert call.attributes is not None
    assert call.attributes["code.function.name"] == f"{__name__}.Traced.double"
    assert sorted(span.name for span in spans) == [
        "POST /double",
        "Traced.double",
        "validate double",
    ]


def test_an_incoming_traceparent_is_continued(exporter: InMemorySpanExporter) -> None:
    with TestClient(Traced, tracing="on") as client:
        client.http.post(
            "/double", json={"x": 1}, headers={"traceparent": TRACEPARENT, "tracestate": "k=v"}
        )
    spans = exporter.get_finished_spans()
    server = named(spans, "POST /double")
    assert server.parent is not None
    assert server.parent.is_remote
    assert hex_id(server.parent.span_id, 16) == CALLER_SPAN
    assert server.context.trace_state.get("k") == "v"
    assert {hex_id(span.context.trace_id) for span in spans} == {CALLER_TRACE}


def test_log_lines_name_the_span_current_where_the_method_runs(
    exporter: InMemorySpanExporter,
) -> None:
    with TestClient(Traced, tracing="on") as client:
        for api in ("inline_ids", "thread_ids", "async_ids"):
            trace_id, span_id = client.call(api)
            call = named(exporter.get_finished_spans(), f"Traced.{api}")
            assert trace_id == hex_id(call.context.trace_id), api
            assert span_id == hex_id(call.context.span_id, 16), api
            exporter.clear()


def test_the_access_log_line_names_the_requests_trace(
    exporter: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tiffin.access")
    with TestClient(Traced, tracing="on") as client:
        response = client.http.post("/double", json={"x": 1}, headers={"traceparent": TRACEPARENT})
    server = named(exporter.get_finished_spans(), "POST /double")
    [line] = [r for r in caplog.records if r.name == "tiffin.access"]
    named_ids = [getattr(line, key) for key in ("request_id", "trace_id", "span_id")]
    assert named_ids == [
        response.headers["x-request-id"],
        CALLER_TRACE,
        hex_id(server.context.span_id, 16),
    ]


def test_errors_mark_the_span_that_failed(exporter: InMemorySpanExporter) -> None:
    with TestClient(Traced, tracing="on") as client:
        failed = client.http.post("/broken", json={"x": 1})
        assert failed.status_code == 500
        spans = exporter.get_finished_spans()
        call = named(spans, "Traced.broken")
        assert call.status.status_code == StatusCode.ERROR
        assert _attribute(call, "error.type") == "ZeroDivisionError"
        [event] = call.events
        assert event.name == "exception"
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "ZeroDivisionError"
        server = named(spans, "POST /broken")
        assert server.status.status_code == StatusCode.ERROR
        assert server.attributes is not None
        assert server.attributes["http.response.status_code"] == 500
        assert server.attributes["error.type"] == "ServiceError"

        # a request the server refuses: the step that refused it is marked, and the server
        # span names the error but, the caller's mistake, is not an error of the server's
        exporter.clear()
        refused = client.http.post("/double", json={"x": "two"})
        assert refused.status_code == 422
        spans = exporter.get_finished_spans()
        server = named(spans, "POST /double")
        assert server.status.status_code == StatusCode.UNSET
        assert server.attributes is not None
        assert server.attributes["http.response.status_code"] == 422
        assert server.attributes["error.type"] == "ValidationFailed"
        assert named(spans, "validate double").status.status_code == StatusCode.ERROR
        assert "Traced.double" not in [span.name for span in spans]


def test_a_task_run_is_a_span(exporter: InMemorySpanExporter) -> None:
    with TestClient(Traced, tracing="on") as client:
        job = client.report.submit(n=2)
        assert job.wait(timeout=10) == 3
    run_span = named(exporter.get_finished_spans(), "task report")
    assert run_span.kind == SpanKind.CONSUMER
    assert run_span.attributes is not None
    assert run_span.attributes["tiffin.task"] == "report"
    assert run_span.attributes["tiffin.task.id"] == job.id
    assert run_span.attributes["tiffin.task.attempt"] == 1


def test_a_protocol_call_is_a_server_span(exporter: InMemorySpanExporter) -> None:
    async def main() -> None:
        async with serving(Traced, tracing="on") as (_, app):
            assert await app.call("double", {"x": 2}, "r-1") == 4.0

    run(main)
    spans = exporter.get_finished_spans()
    call = named(spans, "call double")
    assert call.kind == SpanKind.SERVER
    assert call.attributes is not None
    assert call.attributes["tiffin.request_id"] == "r-1"
    assert parent_of(named(spans, "Traced.double")) == call.context.span_id


def test_nothing_is_traced_unless_tracing_is_on(exporter: InMemorySpanExporter) -> None:
    with TestClient(Traced) as client:  # TestClient reads no environment: tracing is auto
        assert client.app.tracer is None
        assert client.call("inline_ids") == [None, None]
        assert client.report.submit(n=1).wait(timeout=10) == 2
    assert exporter.get_finished_spans() == ()


# -- batches -----------------------------------------------------------------------------


@tiffin.service(name="batched")
class Batched:
    @tiffin.api(batch=tiffin.Batch(max_size=16, max_latency_ms=5000))
    async def predict(self, x: list[float]) -> list[float]:
        await asyncio.sleep(0.05)  # long enough for the others to queue behind the first
        return [value * 2 for value in x]


def test_batched_requests_wait_and_then_share_one_model_call(
    exporter: InMemorySpanExporter,
) -> None:
    async def main() -> None:
        async with serving(Batched, tracing="on") as (client, _):
            answers = await asyncio.gather(
                *(client.post("/predict", json={"x": [float(i)]}) for i in range(5))
            )
            assert [answer.json() for answer in answers] == [[0.0], [2.0], [4.0], [6.0], [8.0]]

    run(main)
    spans = exporter.get_finished_spans()
    servers = {span.context.span_id: span for span in spans if span.name == "POST /predict"}
    waits = [span for span in spans if span.name == "batch wait predict"]
    batches = [span for span in spans if span.name == "Batched.predict"]
    assert len(servers) == 5
    assert len({span.context.trace_id for span in servers.values()}) == 5  # one trace each
    # each request waited for its batch, in its own trace
    assert sorted(wait.parent.span_id for wait in waits if wait.parent) == sorted(servers)
    assert len(waits) == 5
    # fewer calls than requests; each request in one of them
    assert len(batches) < 5
    assert sum(_attribute(batch, "tiffin.batch.requests") for batch in batches) == 5
    for batch in batches:
        linked = {link.context.span_id for link in batch.links}
        assert len(linked) == _attribute(batch, "tiffin.batch.requests")
        assert linked <= set(servers)
        assert _attribute(batch, "tiffin.batch.size") == len(linked)
        parent = parent_of(batch)
        assert parent in linked  # a child of one of its requests, in that one's trace
        assert batch.context.trace_id == servers[parent].context.trace_id
        for wait in waits:  # each of its requests' waits ended as it started
            if parent_of(wait) in linked:
                assert wait.end_time == batch.start_time


def _attribute(span: ReadableSpan, key: str) -> Any:
    assert span.attributes is not None
    return span.attributes[key]


# -- dependencies ------------------------------------------------------------------------


@tiffin.service(name="doubler")
class Doubler:
    @tiffin.api
    def double(self, x: float) -> float:
        return x * 2

    @tiffin.api
    async def triple(self, x: float) -> float:
        return x * 3


@tiffin.service(name="front")
class Front:
    doubler = tiffin.depends(Doubler)

    @tiffin.api
    async def sixfold(self, x: float) -> float:
        tripled: float = await self.doubler.triple(self.doubler.double(x))
        return tripled


def test_calls_of_an_in_process_dependency_are_spans_of_the_callers_trace(
    exporter: InMemorySpanExporter,
) -> None:
    with TestClient(Front, tracing="on") as client:
        assert isinstance(client.service.doubler, Doubler)
        assert client.call("sixfold", x=1.0) == 6.0
    spans = exporter.get_finished_spans()
    call = named(spans, "Front.sixfold")
    for name in ("Doubler.double", "Doubler.triple"):
        dependency = named(spans, name)
        assert dependency.context.trace_id == call.context.trace_id
        assert parent_of(dependency) == call.context.span_id
    assert _attribute(named(spans, "Doubler.double"), "tiffin.api") == "double"


def test_the_trace_goes_over_http_to_a_dependency_and_back(
    exporter: InMemorySpanExporter,
) -> None:
    with live_server(Doubler, tracing="on") as url:

        @tiffin.service(name="remote_front")
        class RemoteFront:
            doubler = tiffin.depends(url)

            @tiffin.api
            def quadruple(self, x: float) -> float:
                return float(self.doubler.double(x=self.doubler.double(x=x)))

        with TestClient(RemoteFront, tracing="on") as client:
            response = client.http.post(
                "/quadruple", json={"x": 1.0}, headers={"traceparent": TRACEPARENT}
            )
            assert response.json() == 4.0
    spans = exporter.get_finished_spans()
    call = named(spans, "RemoteFront.quadruple")
    clients = [
        span for span in spans if span.name == "POST /double" and span.kind == SpanKind.CLIENT
    ]
    callees = [
        span for span in spans if span.name == "POST /double" and span.kind == SpanKind.SERVER
    ]
    assert len(clients) == len(callees) == 2
    assert {hex_id(span.context.trace_id) for span in spans} == {CALLER_TRACE}
    for outgoing in clients:
        assert parent_of(outgoing) == call.context.span_id
        assert _attribute(outgoing, "http.response.status_code") == 200
        assert _attribute(outgoing, "url.full") == f"{url}/double"
    # the callee's server span continues from the caller's client span, over the wire
    assert {parent_of(span) for span in callees} == {span.context.span_id for span in clients}
    assert all(span.parent is not None and span.parent.is_remote for span in callees)
    for callee in callees:
        assert any(parent_of(span) == callee.context.span_id for span in spans)


def test_an_async_client_sends_the_trace_it_is_called_in(exporter: InMemorySpanExporter) -> None:
    async def main() -> None:
        async with tiffin.AsyncClient(url) as client:
            with trace.get_tracer("test").start_as_current_span("outer"):
                assert await client.double(x=2.0) == 4.0
                with pytest.raises(tiffin.ValidationFailed):
                    await client.double(x="two")
            assert await client.double(x=1.0) == 2.0  # no trace here: no span

    with live_server(Doubler, tracing="on") as url:
        run(main)
    spans = exporter.get_finished_spans()
    outer = named(spans, "outer")
    clients = [span for span in spans if span.kind == SpanKind.CLIENT]
    assert [_attribute(span, "http.response.status_code") for span in clients] == [200, 422]
    assert clients[1].status.status_code == StatusCode.ERROR
    assert all(parent_of(span) == outer.context.span_id for span in clients)
    servers = [span for span in spans if span.kind == SpanKind.SERVER]
    assert len(servers) == 3
    continued = [span for span in servers if span.context.trace_id == outer.context.trace_id]
    assert {parent_of(span) for span in continued} == {span.context.span_id for span in clients}
    [alone] = [span for span in servers if span not in continued]  # sent no traceparent
    assert alone.parent is None


# -- when tracing is on ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "none, console"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SERVICE_NAME": "iris"}, False),
    ],
)
def test_the_environment_asks_for_traces(environ: dict[str, str], expected: bool) -> None:
    assert tracing.wanted(environ) is expected


def test_configure_resolves_the_setting_and_keeps_the_provider_the_process_has() -> None:
    memory_exporter()  # the process has an SDK tracer provider: configure keeps it
    provider = trace.get_tracer_provider()
    auto = config.load()
    assert auto.tracing == "auto"
    assert tracing.configure(auto, "svc", {}).tracing == "off"
    assert tracing.configure(auto, "svc", {"OTEL_TRACES_EXPORTER": "console"}).tracing == "on"
    on = config.load(flags={"tracing": "on"})
    assert tracing.configure(on, "svc", {}).tracing == "on"
    off = config.load(flags={"tracing": "off"})
    assert tracing.configure(off, "svc", {"OTEL_TRACES_EXPORTER": "console"}).tracing == "off"
    assert trace.get_tracer_provider() is provider


def test_exporters_are_the_ones_the_environment_names() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    made = tracing._exporters({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    assert [type(exporter) for exporter in made] == [OTLPSpanExporter]
    made = tracing._exporters({"OTEL_TRACES_EXPORTER": "console,none,otlp_proto_http"})
    assert [type(exporter) for exporter in made] == [ConsoleSpanExporter, OTLPSpanExporter]
    for exporter in made:
        exporter.shutdown()
    with pytest.raises(ConfigError, match="'zipkin_json', which no installed package"):
        tracing._exporters({"OTEL_TRACES_EXPORTER": "zipkin_json"})
    with pytest.raises(ConfigError, match="pip install opentelemetry-exporter-otlp-proto-grpc"):
        tracing._exporters({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
    with pytest.raises(ConfigError, match="'http/json' is not a protocol"):
        tracing._exporters({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
