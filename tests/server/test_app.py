"""The ASGI app in-process: routing, errors, limits, keys, CORS, hooks, dependencies."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import tiffin
from tests.server.asgi import Lifespan, live_server, serving
from tiffin import config
from tiffin.exceptions import ServiceDefinitionError
from tiffin.server import create_app
from tiffin.server.inline import BACKOFF, WARMUP
from tiffin.service import spec_of


def run(coroutine: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coroutine())


class Point(BaseModel):
    x: float
    y: float


@tiffin.service(name="shapes")
class Shapes:
    """Geometry for tests."""

    def __init__(self) -> None:
        self.calls = 0

    @tiffin.api
    def norm(self, point: Point) -> float:
        """Length of a vector."""
        self.calls += 1
        return float((point.x**2 + point.y**2) ** 0.5)

    @tiffin.api(route="/v1/scale", name="scale")
    async def scale_points(self, points: list[Point], factor: float = 2.0) -> list[Point]:
        return [Point(x=p.x * factor, y=p.y * factor) for p in points]

    @tiffin.api
    def broken(self, n: int) -> int:
        raise ZeroDivisionError("division by zero")

    @tiffin.api
    def count(self, n: int) -> Iterator[int]:
        for i in range(n):
            if i == 2 and n == 99:
                raise RuntimeError("stream broke")
            yield i


def test_a_prediction_with_request_ids() -> None:
    async def main() -> None:
        async with serving(Shapes) as (client, _):
            response = await client.post("/norm", json={"point": {"x": 3, "y": 4}})
            assert response.status_code == 200
            assert response.json() == 5.0
            assert response.headers["content-type"] == "application/json"
            generated = response.headers["x-request-id"]
            assert len(generated) == 32
            int(generated, 16)

            given = await client.post(
                "/v1/scale",
                json={"points": [{"x": 1, "y": 2}], "factor": 3},
                headers={"X-Request-ID": "abc-123"},
            )
            assert given.json() == [{"x": 3.0, "y": 6.0}]
            assert given.headers["x-request-id"] == "abc-123"

            unsafe = await client.post(
                "/norm", json={"point": {"x": 0, "y": 0}}, headers={"X-Request-ID": "a b\tc"}
            )
            assert unsafe.headers["x-request-id"] != "a b\tc"
            assert len(unsafe.headers["x-request-id"]) == 32

    run(main)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def test_unknown_path_and_wrong_method() -> None:
    async def main() -> None:
        async with serving(Shapes) as (client, _):
            missing = await client.post("/nope", json={})
            assert missing.status_code == 404
            assert error_of(missing) == {
                "type": "RouteNotFound",
                "message": "No API at /nope. This service's APIs are /broken, /count, /norm, "
                "/v1/scale; /docs lists them.",
                "detail": {"path": "/nope"},
            }
            wrong = await client.get("/norm")
            assert wrong.status_code == 405
            assert wrong.headers["allow"] == "POST"
            assert error_of(wrong)["message"] == "/norm takes POST, not GET."
            assert (await client.post("/livez")).status_code == 405

    run(main)


def test_bad_bodies_get_4xx_naming_the_problem() -> None:
    async def main() -> None:
        async with serving(Shapes) as (client, _):
            bad_json = await client.post(
                "/norm", content=b'{"point": ', headers={"content-type": "application/json"}
            )
            assert bad_json.status_code == 400
            assert error_of(bad_json)["type"] == "MalformedRequest"
            assert error_of(bad_json)["message"].startswith("The request body is not valid JSON (")
            assert error_of(bad_json)["message"].endswith(
                "Send a JSON object with the key 'point'."
            )

            not_object = await client.post("/norm", json=[1, 2])
            assert not_object.status_code == 422
            assert error_of(not_object)["message"] == (
                "The request body must be a JSON object with the key 'point', not list."
            )

            wrong_type = await client.post("/norm", json={"point": {"x": "far", "y": 1}})
            assert wrong_type.status_code == 422
            assert error_of(wrong_type) == {
                "type": "ValidationFailed",
                "message": "Invalid request to API 'norm': 'point.x' Input should be a valid "
                "number, unable to parse string as a number. Send a JSON object with the key "
                "'point'; /docs shows the schema.",
                "detail": {
                    "errors": [
                        {
                            "loc": "point.x",
                            "msg": "Input should be a valid number, unable to parse string as a "
                            "number",
                        }
                    ]
                },
            }

            extra = await client.post("/v1/scale", json={"points": [], "factr": 2, "oops": 1})
            assert extra.status_code == 422
            assert error_of(extra)["detail"]["errors"] == [
                {
                    "loc": "factr",
                    "msg": "is not a parameter of this API (it takes the keys 'points', 'factor')",
                },
                {
                    "loc": "oops",
                    "msg": "is not a parameter of this API (it takes the keys 'points', 'factor')",
                },
            ]
            assert "(and 1 more)" in error_of(extra)["message"]

            nested = await client.post("/v1/scale", json={"points": [{"x": 1}]})
            assert error_of(nested)["detail"]["errors"] == [
                {"loc": "points[0].y", "msg": "is required"}
            ]

            media = await client.post(
                "/norm", content=b"x=1", headers={"content-type": "text/plain"}
            )
            assert media.status_code == 415
            assert error_of(media)["message"] == (
                "API 'norm' does not take 'text/plain' bodies. Send application/json (set the "
                "Content-Type header)."
            )

    run(main)


def test_body_size_limit_by_header_and_by_stream() -> None:
    async def main() -> None:
        async with serving(Shapes, max_body_size=64) as (client, app):
            big = {"point": {"x": 1, "y": 1}, "padding": "x" * 100}
            declared = await client.post("/norm", json=big)
            assert declared.status_code == 413
            size = declared.request.headers["content-length"]
            assert error_of(declared)["message"] == (
                f"The request body is {size} bytes; this server takes at most 64. Send less, or "
                "raise the limit with TIFFIN_MAX_BODY_SIZE."
            )

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b" " * 10

            streamed = await client.post(
                "/norm", content=chunks(), headers={"content-type": "application/json"}
            )
            assert streamed.status_code == 413
            assert error_of(streamed)["message"] == (
                "The request body is over this server's limit of 64 bytes. Send less, or raise "
                "the limit with TIFFIN_MAX_BODY_SIZE."
            )
            assert app.runtime.instance.calls == 0

    run(main)


def test_an_exception_in_user_code_is_a_500_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        async with serving(Shapes) as (client, _):
            with caplog.at_level(logging.ERROR, logger="tiffin.server"):
                response = await client.post(
                    "/broken", json={"n": 1}, headers={"X-Request-ID": "req-7"}
                )
            assert response.status_code == 500
            assert error_of(response) == {
                "type": "ServiceError",
                "message": "API 'broken' failed: the service's code raised ZeroDivisionError. "
                "The server log has the traceback under request id req-7.",
                "detail": {"request_id": "req-7", "api": "broken"},
            }
            record = next(r for r in caplog.records if r.name == "tiffin.server")
            assert record.request_id == "req-7"  # type: ignore[attr-defined]
            assert record.getMessage() == "API broken raised ZeroDivisionError (request req-7)"
            assert record.exc_info is not None
            assert isinstance(record.exc_info[1], ZeroDivisionError)
            # the worker keeps serving
            assert (await client.post("/norm", json={"point": {"x": 0, "y": 1}})).json() == 1.0

    run(main)


def test_access_log_line_per_request(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(Shapes) as (client, _):
            with caplog.at_level(logging.INFO, logger="tiffin.access"):
                await client.post(
                    "/norm", json={"point": {"x": 1, "y": 0}}, headers={"X-Request-ID": "r1"}
                )
                await client.get("/nope")
        lines = [r for r in caplog.records if r.name == "tiffin.access"]
        assert [(r.method, r.path, r.status, r.request_id) for r in lines] == [  # type: ignore[attr-defined]
            ("POST", "/norm", 200, "r1"),
            ("GET", "/nope", 404, lines[1].request_id),  # type: ignore[attr-defined]
        ]
        assert all(r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]
        assert all('"x"' not in r.getMessage() for r in lines)  # bodies are never logged

    run(main)


def test_streams_are_server_sent_events_with_errors_in_band() -> None:
    async def main() -> None:
        async with serving(Shapes) as (client, _):
            response = await client.post("/count", json={"n": 3})
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\n"

            broken = await client.post("/count", json={"n": 99})
            events = broken.text.split("\n\n")
            assert events[:2] == ["data: 0", "data: 1"]
            assert events[2].startswith('event: error\ndata: {"error":{"type":"ServiceError"')

    run(main)


# -- limits ------------------------------------------------------------------------------


@tiffin.service(max_concurrency=1, max_queue=1, timeout=0.5)
class Gate:
    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.cancelled = 0
        self.thread_gate = threading.Event()
        self.thread_done = threading.Event()

    @tiffin.api
    async def wait(self, tag: str) -> str:
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return tag

    @tiffin.api
    def block(self, seconds: float) -> str:
        self.thread_gate.wait(seconds)
        self.thread_done.set()
        return "done"


def test_a_full_queue_answers_503_with_retry_after() -> None:
    async def main() -> None:
        async with serving(Gate, timeout=30) as (client, app):
            first = asyncio.create_task(client.post("/wait", json={"tag": "a"}))
            second = asyncio.create_task(client.post("/wait", json={"tag": "b"}))
            while app.limit.waiting < 1:
                await asyncio.sleep(0.01)
            refused = await client.post("/wait", json={"tag": "c"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert error_of(refused)["message"] == (
                "The server is busy: 1 requests running and 1 waiting, the most it queues. "
                "Retry after a moment, or add workers or replicas."
            )
            app.runtime.instance.opened.set()
            assert [(await t).json() for t in (first, second)] == ["a", "b"]
            assert app.limit.running == 0

    run(main)


def test_async_timeout_is_504_and_stops_the_work() -> None:
    async def main() -> None:
        async with serving(Gate) as (client, app):
            response = await client.post("/wait", json={"tag": "late"})
            assert response.status_code == 504
            assert error_of(response)["message"] == (
                "API 'wait' did not answer within 0.5 s. Send less work per request, or raise "
                "the limit with TIFFIN_TIMEOUT or @tiffin.service(timeout=...)."
            )
            assert app.runtime.instance.cancelled == 1
            assert app.limit.running == 0

    run(main)


def test_sync_timeout_keeps_the_slot_until_the_thread_finishes() -> None:
    async def main() -> None:
        async with serving(Gate, max_queue=0) as (client, app):
            instance = app.runtime.instance
            timed_out = await client.post("/block", json={"seconds": 30})
            assert timed_out.status_code == 504
            # the thread still runs, so its slot is still taken
            assert app.limit.running == 1
            busy = await client.post("/block", json={"seconds": 0})
            assert busy.status_code == 503
            instance.thread_gate.set()
            while app.limit.running:
                await asyncio.sleep(0.01)
            assert instance.thread_done.is_set()
            assert (await client.post("/block", json={"seconds": 0})).json() == "done"

    run(main)


# -- keys and CORS -----------------------------------------------------------------------


def test_api_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        async with serving(Shapes, api_keys=("s3cret", "other")) as (client, _):
            body = {"point": {"x": 3, "y": 4}}
            missing = await client.post("/norm", json=body)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == 'Bearer realm="tiffin"'
            assert error_of(missing)["message"] == (
                "This server needs an API key. Send it as 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'."
            )
            wrong = await client.post("/norm", json=body, headers={"X-API-Key": "s3cre"})
            assert wrong.status_code == 401
            assert error_of(wrong)["message"] == (
                "The API key sent is not valid. Check the key, or ask the server's operator "
                "for one."
            )
            bearer = await client.post(
                "/norm", json=body, headers={"Authorization": "Bearer s3cret"}
            )
            assert bearer.json() == 5.0
            header = await client.post("/norm", json=body, headers={"X-API-Key": "other"})
            assert header.json() == 5.0
            for open_path in ("/livez", "/readyz", "/metrics", "/openapi.json", "/docs"):
                assert (await client.get(open_path)).status_code == 200, open_path
        logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
        assert "access" in logged  # requests were logged...
        assert "s3cret" not in logged  # ...and no key, given or configured, ever is
        assert "s3cre" not in logged

        async with serving(Shapes, api_keys=("k",), metrics_need_key=True, docs_need_key=True) as (
            client,
            _,
        ):
            for path in ("/metrics", "/openapi.json"):
                assert (await client.get(path)).status_code == 401, path
                ok = await client.get(path, headers={"X-API-Key": "k"})
                assert ok.status_code == 200, path
            # the page can open without a key; it asks for one to read /openapi.json
            assert (await client.get("/docs")).status_code == 200
            assert (await client.get("/livez")).status_code == 200

    run(main)


def test_cors_is_off_by_default_and_configurable() -> None:
    async def main() -> None:
        body = {"point": {"x": 3, "y": 4}}
        origin = {"Origin": "https://app.example"}
        async with serving(Shapes) as (client, _):
            plain = await client.post("/norm", json=body, headers=origin)
            assert "access-control-allow-origin" not in plain.headers
            assert (await client.options("/norm", headers=origin)).status_code == 405

        async with serving(Shapes, cors_origins=("https://app.example",)) as (client, _):
            preflight = await client.options(
                "/norm",
                headers={**origin, "Access-Control-Request-Method": "POST"},
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            assert "POST" in preflight.headers["access-control-allow-methods"]
            assert "Authorization" in preflight.headers["access-control-allow-headers"]
            simple = await client.post("/norm", json=body, headers=origin)
            assert simple.headers["access-control-allow-origin"] == "https://app.example"
            assert simple.headers["vary"] == "Origin"
            stranger = await client.options("/norm", headers={"Origin": "https://evil.example"})
            assert stranger.status_code == 403
            other = await client.post(
                "/norm", json=body, headers={"Origin": "https://evil.example"}
            )
            assert other.status_code == 200
            assert "access-control-allow-origin" not in other.headers

    run(main)


# -- health, hooks, dependencies ---------------------------------------------------------

EVENTS: list[str] = []


@tiffin.service
class Embedder:
    def __init__(self) -> None:
        EVENTS.append("embedder init")

    @tiffin.on_startup
    async def warm(self) -> None:
        EVENTS.append("embedder startup")

    @tiffin.on_shutdown
    def close(self) -> None:
        EVENTS.append("embedder shutdown")

    @tiffin.api
    def embed(self, text: str) -> list[float]:
        return [float(len(text)), float(text.count(" "))]


@tiffin.service
class Pipeline:
    embedder = tiffin.depends(Embedder)

    def __init__(self) -> None:
        EVENTS.append("pipeline init")
        self.ready_now = False

    @tiffin.on_startup
    def prepare(self) -> None:
        EVENTS.append("pipeline startup")

    @tiffin.on_shutdown
    async def stop(self) -> None:
        EVENTS.append("pipeline shutdown")

    @tiffin.readiness
    def is_ready(self) -> bool:
        return self.ready_now

    @tiffin.api
    def run(self, text: str) -> dict[str, Any]:
        return {"vector": self.embedder.embed(text), "service": "pipeline"}


def test_hooks_readiness_and_in_process_dependencies() -> None:
    EVENTS.clear()

    async def main() -> None:
        async with serving(Pipeline) as (client, app):
            assert EVENTS == [
                "embedder init",
                "embedder startup",
                "pipeline init",
                "pipeline startup",
            ]
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.headers["retry-after"] == "1"
            assert error_of(not_ready)["message"] == (
                "Service 'pipeline' reports it is not ready. Retry shortly."
            )
            assert (await client.get("/livez")).json() == {"status": "alive"}
            app.runtime.instance.ready_now = True
            assert (await client.get("/readyz")).json() == {"status": "ready"}
            response = await client.post("/run", json={"text": "hello big world"})
            assert response.json() == {"vector": [15.0, 2.0], "service": "pipeline"}
        assert EVENTS[-2:] == ["pipeline shutdown", "embedder shutdown"]

    run(main)


def test_readyz_before_startup_and_a_failed_startup() -> None:
    @tiffin.service
    class Fails:
        def __init__(self) -> None:
            raise RuntimeError("model file missing.")

        @tiffin.api
        def go(self) -> int:
            return 1

    async def main() -> None:
        spec = spec_of(Fails)
        app = create_app(spec, config.load(code=spec.config))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            early = await client.get("/readyz")
            assert early.status_code == 503
            assert error_of(early)["message"] == (
                "Service 'fails' is still starting. Retry shortly."
            )
        lifespan = Lifespan(app)
        failed = await lifespan.start()
        assert failed == {
            "type": "lifespan.startup.failed",
            "message": "RuntimeError: model file missing",
        }

    run(main)


def test_dependency_cycles_are_refused_at_start() -> None:
    @tiffin.service
    class A:
        @tiffin.api
        def a(self) -> int:
            return 1

    @tiffin.service
    class B:
        other = tiffin.depends(A)

        @tiffin.api
        def b(self) -> int:
            return 2

    A.other = tiffin.depends(B)  # type: ignore[attr-defined]
    A.__tiffin_service__.dependencies["other"] = A.other  # type: ignore[attr-defined]

    async def main() -> None:
        spec = spec_of(A)
        app = create_app(spec, config.load(code=spec.config))
        with pytest.raises(ServiceDefinitionError) as caught:
            await app.runtime.start()
        assert (
            caught.value.message
            == "Services depend on each other in a cycle: A -> B -> A. Break the cycle."
        )

    run(main)


def test_metrics_count_requests_by_api_and_status() -> None:
    async def main() -> None:
        async with serving(Shapes) as (client, _):
            for _ in range(3):
                await client.post("/norm", json={"point": {"x": 1, "y": 1}})
            await client.post("/norm", json={"point": {}})
            await client.post("/broken", json={"n": 1})
            text = (await client.get("/metrics")).text
        assert 'tiffin_requests_total{api="norm",status="200"} 3.0' in text
        assert 'tiffin_requests_total{api="norm",status="422"} 1.0' in text
        assert 'tiffin_requests_total{api="broken",status="500"} 1.0' in text
        assert 'tiffin_request_duration_seconds_count{api="norm"} 4.0' in text
        assert 'tiffin_requests_in_flight{api="norm"} 0.0' in text

    run(main)


def test_a_json_body_sent_as_a_form_is_read_as_json() -> None:
    """`curl -d '{"point": ...}' URL` sends JSON labelled application/x-www-form-urlencoded."""

    async def main() -> None:
        async with serving(Shapes) as (client, _):
            form = {"content-type": "application/x-www-form-urlencoded"}
            response = await client.post(
                "/norm", content=b'{"point": {"x": 3, "y": 4}}', headers=form
            )
            assert response.json() == 5.0
            real_form = await client.post("/norm", content=b"point=1", headers=form)
            assert real_form.status_code == 415

    run(main)


@tiffin.service(name="backend")
class Backend:
    @tiffin.api
    def double(self, x: float) -> float:
        return 2 * x

    @tiffin.api
    def fail(self) -> int:
        raise RuntimeError("backend broke")


def test_a_dependency_given_by_url_is_called_through_the_client() -> None:
    with live_server(Backend, api_keys=()) as backend_url:

        @tiffin.service(name="front")
        class Front:
            backend = tiffin.depends(backend_url)

            @tiffin.api
            def quadruple(self, x: float) -> float:
                half: float = self.backend.double(x=x)
                return float(self.backend.double(x=half))

            @tiffin.api
            def relay_failure(self) -> int:
                result: int = self.backend.fail()
                return result

        async def main() -> None:
            async with serving(Front) as (client, app):
                assert isinstance(app.runtime.instance.backend, tiffin.Client)
                response = await client.post("/quadruple", json={"x": 1.5})
                assert response.json() == 6.0
                failed = await client.post("/relay_failure", json={})
                # the client re-raises the backend's ServiceError, and a TiffinError raised
                # in an API passes through with its status: the caller sees the backend's
                # error, whose request id finds the traceback in the backend's log
                assert failed.status_code == 500
                assert error_of(failed)["type"] == "ServiceError"
                assert error_of(failed)["message"].startswith(
                    "API 'fail' failed: the service's code raised RuntimeError."
                )
            assert app.runtime.clients == []  # closed on shutdown

        run(main)


# -- where sync calls run ----------------------------------------------------------------


@tiffin.service(name="timing")
class Timing:
    def __init__(self) -> None:
        self.threads: list[int] = []

    @tiffin.api
    def work(self, seconds: float) -> str:
        self.threads.append(threading.get_ident())
        time.sleep(seconds)
        return "done"

    @tiffin.api(offload=True)
    def offloaded(self, seconds: float) -> str:
        self.threads.append(threading.get_ident())
        time.sleep(seconds)
        return "done"

    @tiffin.api
    def nested_loop(self) -> int:
        """Sync code may run its own event loop, inline or in a thread alike."""

        async def answer() -> int:
            return 42

        return asyncio.run(answer())


async def where_calls_ran(
    client: httpx.AsyncClient, app: Any, calls: int, seconds: float = 0.0
) -> list[bool]:
    """Call /work ``calls`` times; for each, whether it ran on the event loop's thread."""
    loop_thread = threading.get_ident()
    instance = app.runtime.instance
    ran = []
    for _ in range(calls):
        response = await client.post("/work", json={"seconds": seconds})
        assert response.json() == "done"
        ran.append(instance.threads[-1] == loop_thread)
    return ran


async def until_inline(client: httpx.AsyncClient, app: Any, most: int = 1000) -> int:
    """Call /work until a call runs on the event loop; how many calls that took. Calls
    of a few microseconds bring the moving average under the limit within a few dozen
    calls; a busy machine can stretch a call now and then, hence the generous bound."""
    for calls in range(1, most + 1):
        if (await where_calls_ran(client, app, 1)) == [True]:
            return calls
    raise AssertionError(f"no call ran inline in {most} calls")


def test_a_fast_sync_api_runs_on_the_loop_until_a_call_is_slow() -> None:
    async def main() -> None:
        async with serving(Timing) as (client, app):
            # measured in a thread first, then inline while its calls stay short
            assert await where_calls_ran(client, app, WARMUP) == [False] * WARMUP
            await until_inline(client, app)
            # a call that turns out slow ran inline (nothing could tell), and sends the
            # next calls back to a thread
            assert await where_calls_ran(client, app, 1, seconds=0.02) == [True]
            assert await where_calls_ran(client, app, BACKOFF) == [False] * BACKOFF
            # until they have been short for long enough
            await until_inline(client, app)
            # each time it happens again, the API stays in a thread twice as long
            assert await where_calls_ran(client, app, 1, seconds=0.02) == [True]
            assert await where_calls_ran(client, app, 2 * BACKOFF) == [False] * 2 * BACKOFF
            assert app.limit.running == 0

    run(main)


def test_the_loop_answers_while_a_slow_sync_call_runs() -> None:
    async def main() -> None:
        async with serving(Timing) as (client, app):
            await where_calls_ran(client, app, WARMUP + 1)
            # a slow call inline makes the API offloaded again...
            await where_calls_ran(client, app, 1, seconds=0.02)
            # ...so a long call now runs in a thread, and /livez answers meanwhile
            slow = asyncio.create_task(client.post("/work", json={"seconds": 1.0}))
            while app.limit.running == 0:
                await asyncio.sleep(0.001)
            started = time.perf_counter()
            assert (await client.get("/livez")).status_code == 200
            assert time.perf_counter() - started < 0.2
            assert not slow.done()
            assert (await slow).json() == "done"

    run(main)


def test_offload_true_always_runs_in_a_thread() -> None:
    async def main() -> None:
        async with serving(Timing) as (client, app):
            loop_thread = threading.get_ident()
            for _ in range(WARMUP + 20):
                assert (await client.post("/offloaded", json={"seconds": 0})).json() == "done"
            assert loop_thread not in app.runtime.instance.threads
            slow = asyncio.create_task(client.post("/offloaded", json={"seconds": 1.0}))
            while app.limit.running == 0:
                await asyncio.sleep(0.001)
            started = time.perf_counter()
            assert (await client.get("/livez")).status_code == 200
            assert time.perf_counter() - started < 0.2
            assert (await slow).json() == "done"

    run(main)


def test_offload_is_for_sync_methods_only() -> None:
    with pytest.raises(ServiceDefinitionError) as caught:

        class Wrong:
            @tiffin.api(offload=True)
            async def go(self) -> int:
                return 1

    assert caught.value.message == (
        "@tiffin.api(offload=True) on 'go' moves a 'def' method to a thread; 'go' is "
        "'async def' and runs on the event loop. Remove offload=True."
    )
    with pytest.raises(ServiceDefinitionError) as caught:

        class AlsoWrong:
            @tiffin.api(offload="yes")  # type: ignore[call-overload,untyped-decorator]
            def go(self) -> int:
                return 1

    assert caught.value.message == (
        "@tiffin.api(offload=...) on 'go' must be True or False, not 'yes'."
    )


def test_an_inline_call_past_the_timeout_is_a_504_and_frees_its_slot() -> None:
    async def main() -> None:
        async with serving(Timing, timeout=0.3) as (client, app):
            assert (await where_calls_ran(client, app, WARMUP + 1))[-1] is True
            late = await client.post("/work", json={"seconds": 0.4})
            assert app.runtime.instance.threads[-1] == threading.get_ident()  # it ran inline
            assert late.status_code == 504
            assert error_of(late)["message"].startswith("API 'work' did not answer within 0.3 s.")
            assert app.limit.running == 0
            assert (await client.post("/work", json={"seconds": 0})).json() == "done"

    run(main)


def test_a_sync_call_sees_no_running_loop_inline_or_not() -> None:
    async def main() -> None:
        async with serving(Timing) as (client, _):
            for _ in range(WARMUP + 3):
                response = await client.post("/nested_loop", json={})
                assert response.json() == 42
            # and the server's loop runs on after an inline call that ran a loop of its own
            assert (await client.get("/livez")).status_code == 200

    run(main)


def test_a_timeout_error_raised_by_the_service_is_a_500_not_a_504() -> None:
    @tiffin.service(name="clock")
    class Clock:
        @tiffin.api
        def sync(self) -> int:
            raise TimeoutError("the database did not answer")

        @tiffin.api
        async def asynchronous(self) -> int:
            raise TimeoutError("the database did not answer")

    async def main() -> None:
        async with serving(Clock) as (client, _):
            for path in ["/asynchronous"] + ["/sync"] * (WARMUP + 2):
                response = await client.post(path, json={})
                assert response.status_code == 500, path
                assert error_of(response)["type"] == "ServiceError"
                assert "raised TimeoutError" in error_of(response)["message"]

    run(main)
