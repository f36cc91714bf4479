"""Tracing in real ``tiffin serve`` processes, configured only by the standard ``OTEL_*``
environment and exporting over OTLP/HTTP to a receiver on loopback; and, with none of it
set, no OpenTelemetry loaded in the worker at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.observability.tracing_support import Receiver, spans_named
from tests.server.conftest import start_server

pytestmark = pytest.mark.slow

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
SERVER, CLIENT = 2, 3  # OTLP's span kinds

BACKEND = """
import sys

import tiffin


@tiffin.service(name="backend")
class Backend:
    @tiffin.api
    def double(self, x: float) -> float:
        return x * 2

    @tiffin.api
    def otel_modules(self) -> list[str]:
        return sorted(name for name in sys.modules if name.startswith("opentelemetry"))
"""

FRONT = """
import tiffin


@tiffin.service(name="front")
class Front:
    backend = tiffin.depends({url!r})

    @tiffin.api
    def quadruple(self, x: float) -> float:
        return float(self.backend.double(x=self.backend.double(x=x)))
"""


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """An OTLP receiver, and an environment (which ``tiffin serve`` inherits) that sends
    it the traces of every server started, with nothing else of OTEL_* set."""
    for name in os.environ:
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    with Receiver() as running:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", running.url)
        yield running


def test_a_server_exports_its_spans_when_it_stops(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # far longer than the test: the spans leave only because the worker flushes as it stops
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    (tmp_path / "backend.py").write_text(BACKEND, encoding="utf-8")
    server = start_server(tmp_path, "backend:Backend", home=tmp_path / "home")
    try:
        response = httpx.post(
            f"{server.url}/double", json={"x": 2}, headers={"traceparent": TRACEPARENT}
        )
        assert response.json() == 4.0
        assert receiver.spans == []
    finally:
        assert server.stop() == 0
    spans = receiver.wait_for(lambda spans: len(spans) >= 3)
    assert sorted(span.name for span in spans) == [
        "Backend.double",
        "POST /double",
        "validate double",
    ]
    assert {span.trace_id for span in spans} == {TRACE}
    assert {span.service for span in spans} == {"backend"}  # OTEL_SERVICE_NAME's default
    [request] = spans_named(spans, "POST /double")
    assert request.kind == SERVER
    assert request.parent_id == "00f067aa0ba902b7"
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["tiffin.request_id"] == response.headers["x-request-id"]


def test_the_trace_crosses_a_depends_call_between_two_servers(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    backend_dir, front_dir = tmp_path / "backend", tmp_path / "front"
    backend_dir.mkdir()
    front_dir.mkdir()
    (backend_dir / "backend.py").write_text(BACKEND, encoding="utf-8")
    backend = start_server(backend_dir, "backend:Backend", "--workers", "2", home=tmp_path / "h")
    try:
        (front_dir / "front.py").write_text(FRONT.format(url=backend.url), encoding="utf-8")
        front = start_server(front_dir, "front:Front", home=tmp_path / "h")
        try:
            assert httpx.post(f"{front.url}/quadruple", json={"x": 1.5}).json() == 6.0
            spans = receiver.wait_for(
                lambda spans: (  # the front's server span ends last: wait for it too
                    len(list(spans_named(spans, "Backend.double"))) == 2
                    and len(list(spans_named(spans, "Front.quadruple"))) == 1
                    and len(list(spans_named(spans, "POST /quadruple"))) == 1
                )
            )
        finally:
            front.stop()
    finally:
        backend.stop()
    by_id = {span.span_id: span for span in spans}
    [incoming] = [s for s in spans if s.service == "front" and s.kind == SERVER]
    assert incoming.name == "POST /quadruple"
    assert incoming.parent_id == ""  # a new trace: its caller sent no traceparent
    assert {span.trace_id for span in spans} == {incoming.trace_id}
    [call] = spans_named(spans, "Front.quadruple")
    outgoing = [s for s in spans if s.kind == CLIENT]
    assert len(outgoing) == 2
    assert all(span.service == "front" and span.parent_id == call.span_id for span in outgoing)
    callees = [s for s in spans if s.service == "backend" and s.kind == SERVER]
    assert sorted(by_id[span.parent_id].name for span in callees) == ["POST /double"] * 2
    assert {span.parent_id for span in callees} == {span.span_id for span in outgoing}
    for callee in callees:  # and the callee's own spans hang under its server span
        children = {s.name for s in spans if s.parent_id == callee.span_id}
        assert children == {"validate double", "Backend.double"}


def test_without_otel_settings_the_worker_loads_no_opentelemetry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in os.environ:
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    (tmp_path / "backend.py").write_text(BACKEND, encoding="utf-8")
    server = start_server(tmp_path, "backend:Backend", home=tmp_path / "home")
    try:
        assert httpx.post(f"{server.url}/double", json={"x": 1}).json() == 2.0
        assert httpx.post(f"{server.url}/otel_modules", json={}).json() == []
    finally:
        server.stop()
