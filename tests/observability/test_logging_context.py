"""Log lines name their request: the service's own lines, on the event loop or in the
server's threads, the error lines and the access line carry ``request_id`` (and
``trace_id``/``span_id`` when tracing set them); request bodies are logged only when
asked for."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tiffin
from tests.conftest import wait_until
from tests.observability.test_logging import Stream
from tests.server.asgi import serving
from tests.server.conftest import start_server
from tiffin import config
from tiffin.observability import context
from tiffin.observability.logging import BODY_LIMIT, AccessLog, BodyLog, configure
from tiffin.server import App
from tiffin.server.inline import WARMUP
from tiffin.service import spec_of

log = logging.getLogger("tests.chatty")


@tiffin.service(name="chatty")
class Chatty:
    def __init__(self) -> None:
        log.info("starting")

    @tiffin.api
    def inline(self, x: int) -> int:
        log.info("inline %d", x)
        return x

    @tiffin.api(offload=True)
    def threaded(self, x: int) -> int:
        log.info("threaded %d", x)
        return x

    @tiffin.api
    async def awaited(self, x: int) -> int:
        log.info("awaited %d", x)
        return x

    @tiffin.api
    def counted(self, n: int) -> Iterator[int]:
        for i in range(n):
            log.info("item %d", i)
            yield i
        log.info("counted to %d", n)

    @tiffin.api(batch=tiffin.Batch(max_size=8))
    def doubled(self, rows: list[int]) -> list[int]:
        log.info("a batch of %d", len(rows))
        return [2 * r for r in rows]

    @tiffin.api(batch=tiffin.Batch(max_size=8))
    async def tripled(self, rows: list[int]) -> list[int]:
        log.info("an async batch of %d", len(rows))
        return [3 * r for r in rows]

    @tiffin.api
    def broken(self, x: int) -> int:
        raise KeyError("missing")


@pytest.fixture
def logged() -> Iterator[Stream]:
    """The root logger writing JSON lines, at debug level, to a fresh stream; the logging
    setup as it was before, after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("uvicorn", "tiffin.body")}
    target = Stream()
    configure(config.load(flags={"log_format": "json", "log_level": "debug"}), stream=target)
    yield target
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)


def records(stream: Stream) -> list[dict[str, Any]]:
    """What has been logged to ``stream``, written out first."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) is stream:
            handler.flush()
    return stream.records()


def by_message(stream: Stream) -> dict[str, dict[str, Any]]:
    return {record["message"]: record for record in records(stream)}


def post(client: httpx.AsyncClient, api: str, request_id: str, **body: Any) -> Any:
    return client.post(f"/{api}", json=body, headers={"x-request-id": request_id})


def test_lines_the_service_logs_name_their_request(logged: Stream) -> None:
    async def main() -> None:
        async with serving(Chatty) as (client, _):
            for i in range(WARMUP + 2):  # the first calls run in a thread, later ones inline
                assert (await post(client, "inline", f"r-inline-{i}", x=i)).status_code == 200
            assert (await post(client, "threaded", "r-threaded", x=5)).status_code == 200
            assert (await post(client, "awaited", "r-awaited", x=6)).status_code == 200
            assert (await post(client, "counted", "r-counted", n=2)).status_code == 200
            assert (await post(client, "broken", "r-broken", x=1)).status_code == 500
            batched = [post(client, "doubled", f"r-doubled-{i}", rows=[i]) for i in range(4)]
            batched += [post(client, "tripled", f"r-tripled-{i}", rows=[i]) for i in range(4)]
            assert {r.status_code for r in await asyncio.gather(*batched)} == {200}
            # the request's id does not stay behind in the caller's context
            assert context.request_id.get() is None

    asyncio.run(main())
    lines = by_message(logged)
    assert "request_id" not in lines["starting"]  # logged at startup, in no request
    for i in range(WARMUP + 2):
        assert lines[f"inline {i}"]["request_id"] == f"r-inline-{i}"
    assert lines["threaded 5"]["request_id"] == "r-threaded"
    assert lines["awaited 6"]["request_id"] == "r-awaited"
    assert lines["item 0"]["request_id"] == "r-counted"
    assert lines["item 1"]["request_id"] == "r-counted"
    assert lines["counted to 2"]["request_id"] == "r-counted"
    error = lines["API broken raised KeyError (request r-broken)"]
    assert (error["level"], error["request_id"]) == ("error", "r-broken")
    assert "KeyError: 'missing'" in error["traceback"]
    # a batch serves several requests at once: its lines name none of them
    batches = [r for r in records(logged) if "batch of" in r["message"]]
    assert batches
    assert all("request_id" not in r for r in batches)
    for record in records(logged):
        assert "trace_id" not in record  # tracing is off


def test_a_call_through_a_protocol_names_its_request(logged: Stream) -> None:
    """``App.call``, how a protocol calls an API (gRPC has no HTTP request around it)."""

    async def main() -> None:
        async with serving(Chatty) as (_, app):
            assert await app.call("threaded", {"x": 9}, "r-grpc") == 9
            assert await app.call("awaited", {"x": 10}, "r-grpc-2") == 10
            assert context.request_id.get() is None

    asyncio.run(main())
    lines = by_message(logged)
    assert lines["threaded 9"]["request_id"] == "r-grpc"
    assert lines["awaited 10"]["request_id"] == "r-grpc-2"


def test_lines_carry_the_trace_and_span_tracing_sets(logged: Stream) -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    async def main() -> None:
        async with serving(Chatty) as (client, app):

            async def traced(scope: Any, receive: Any, send: Any) -> None:
                trace = context.trace_id.set(trace_id)
                span = context.span_id.set(span_id)
                try:
                    await app(scope, receive, send)
                finally:
                    context.trace_id.reset(trace)
                    context.span_id.reset(span)

            transport = httpx.ASGITransport(app=traced)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test"
            ) as traced_client:
                await post(traced_client, "threaded", "r-traced", x=7)
                await post(traced_client, "broken", "r-traced-error", x=1)
            await post(client, "threaded", "r-untraced", x=8)

    asyncio.run(main())
    lines = by_message(logged)
    expected = {"request_id": "r-traced", "trace_id": trace_id, "span_id": span_id}
    assert {key: lines["threaded 7"].get(key) for key in expected} == expected
    error = lines["API broken raised KeyError (request r-traced-error)"]
    assert (error["trace_id"], error["span_id"]) == (trace_id, span_id)
    access = [r for r in records(logged) if r["logger"] == "tiffin.access"]
    traced_line = next(r for r in access if r["request_id"] == "r-traced")
    assert (traced_line["trace_id"], traced_line["span_id"]) == (trace_id, span_id)
    untraced = next(r for r in access if r["request_id"] == "r-untraced")
    assert "trace_id" not in untraced
    assert "trace_id" not in lines["threaded 8"]


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.usefixtures("logged")
def test_an_access_line_with_a_trace_reads_the_same_by_either_path(log_format: str) -> None:
    """As in test_logging: the tuple the writer thread formats gives the line a record
    would, now with the trace."""
    root = logging.getLogger()
    target = Stream()
    configure(config.load(flags={"log_format": log_format}), stream=target)
    [handler] = [h for h in root.handlers if getattr(h, "stream", 0) is target]
    alone = logging.Logger("tiffin.access.alone", logging.INFO)
    alone.addHandler(handler)
    filtered = logging.Logger("tiffin.access.filtered", logging.INFO)
    filtered.addHandler(handler)
    filtered.addFilter(lambda record: True)  # a filter: the plain logger.info path
    trace = context.trace_id.set("ab" * 16)
    span = context.span_id.set("cd" * 8)
    try:
        AccessLog(alone)("POST", "/predict", 200, 1.25, "req-1")
        AccessLog(filtered)("POST", "/predict", 200, 1.25, "req-1")
    finally:
        context.trace_id.reset(trace)
        context.span_id.reset(span)
    handler.flush()
    fast, plain = target.getvalue().splitlines()
    if log_format == "json":
        fast_line, plain_line = json.loads(fast), json.loads(plain)
        del fast_line["ts"], plain_line["ts"]
        plain_line["logger"] = fast_line["logger"]
        assert fast_line == plain_line
        assert list(fast_line)[-3:] == ["request_id", "trace_id", "span_id"]
        assert (fast_line["trace_id"], fast_line["span_id"]) == ("ab" * 16, "cd" * 8)
    else:
        assert fast[13:] == (
            "INFO    tiffin.access.alone  POST /predict 200  duration_ms=1.25 request_id=req-1 "
            f"trace_id={'ab' * 16} span_id={'cd' * 8}"
        )
        assert plain[13:] == fast[13:].replace("access.alone", "access.filtered")


@pytest.mark.usefixtures("logged")
def test_a_console_line_names_its_request_after_the_message() -> None:
    target = Stream()
    configure(config.load(flags={"log_format": "console"}), stream=target)
    token = context.request_id.set("req-7")
    try:
        logging.getLogger("tests.console").warning("disk %s", "full")
    finally:
        context.request_id.reset(token)
    assert target.getvalue()[13:] == "WARNING tests.console  disk full  request_id=req-7\n"


# -- request bodies ------------------------------------------------------------------


def bodies(stream: Stream) -> list[dict[str, Any]]:
    return [r for r in records(stream) if r["logger"] == "tiffin.body"]


def test_request_bodies_are_not_logged_by_default(logged: Stream) -> None:
    async def main() -> None:
        async with serving(Chatty) as (client, _):
            assert (await post(client, "inline", "r-1", x=123456789)).status_code == 200

    asyncio.run(main())  # at debug level, too
    assert [r["message"] for r in records(logged) if r["logger"] == "tests.chatty"] == [
        "starting",
        "inline 123456789",
    ]
    assert bodies(logged) == []
    assert not [r for r in records(logged) if "body" in r]


def test_request_bodies_are_logged_when_asked(logged: Stream) -> None:
    configure(
        config.load(flags={"log_format": "json", "log_request_bodies": True}), stream=logged
    )  # at info level: bodies are shown all the same
    text_bodies = [
        ("application/json", b'{"x": 123456789}'),
        ("application/json; charset=utf-8", b'{"x": 2}'),
        ("application/x-www-form-urlencoded", b'{"x": 3}'),  # what curl -d sends
        ("", b'{"x": 4}'),
    ]
    long_body = json.dumps({"x": 1, "padding": "p" * 3000}).encode()
    binary = [
        ("multipart/form-data; boundary=xyz", b'--xyz\r\n{"x": 5}\r\n--xyz--\r\n'),
        ("application/octet-stream", b'{"x": 6}'),
        ("image/png", b"\x89PNG\r\n"),
    ]

    async def main() -> None:
        async with serving(Chatty, log_request_bodies=True) as (client, _):
            for i, (media, body) in enumerate([*text_bodies, *binary]):
                headers = {"x-request-id": f"b-{i}"}
                if media:
                    headers["content-type"] = media
                await client.post("/inline", content=body, headers=headers)
            await client.post(
                "/inline", content=long_body, headers={"content-type": "application/json"}
            )

    asyncio.run(main())
    found = bodies(logged)
    assert [r["body"] for r in found[:4]] == [body.decode() for _, body in text_bodies]
    assert [r["request_id"] for r in found[:4]] == ["b-0", "b-1", "b-2", "b-3"]
    first = found[0]
    assert first["message"] == "Body of a request to inline (16 bytes)"
    assert first["level"] == "debug"
    assert (first["api"], first["size"], first["truncated"]) == ("inline", 16, False)
    assert len(found) == 5  # nothing of the multipart, octet-stream or image bodies
    assert found[4]["body"] == long_body[:BODY_LIMIT].decode()
    assert (found[4]["size"], found[4]["truncated"]) == (len(long_body), True)
    assert "PNG" not in logged.getvalue()


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_body_log_takes_text_types_only() -> None:
    kept = Kept()
    shown = kept.records
    logger = logging.getLogger("tiffin.body.test")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(kept)
    body_log = BodyLog(logger)
    for media in ("application/json", "text/csv", "application/vnd.api+json", "", "TEXT/PLAIN"):
        body_log("predict", b"{}", media)
    for media in ("multipart/form-data; boundary=x", "application/octet-stream", "image/jpeg"):
        body_log("predict", b"{}", media)
    assert len(shown) == 5
    logger.setLevel(logging.INFO)  # off unless the logger shows debug lines
    body_log("predict", b"{}", "application/json")
    assert len(shown) == 5


# -- a real server ----------------------------------------------------------------------

SERVICE = """
import logging

import tiffin

log = logging.getLogger("talker")


@tiffin.service(name="talker", workers=2)
class Talker:
    @tiffin.api
    def say(self, word: str) -> str:
        log.info("saying %s", word)
        log.warning("said %s", word)
        return word
"""


def serve_talker(directory: Path, settings: str, *args: str) -> Any:
    (directory / "talker.py").write_text(SERVICE, encoding="utf-8")
    (directory / "tiffin.yaml").write_text(f"settings:\n{settings}", encoding="utf-8")
    return start_server(directory, "talker:Talker", *args, home=directory / "home")


def say(url: str, word: str, request_id: str) -> bytes:
    body = json.dumps({"word": word}).encode()
    headers = {"x-request-id": request_id, "content-type": "application/json"}
    response = httpx.post(f"{url}/say", content=body, headers=headers, timeout=10)
    assert response.status_code == 200
    return body


def test_a_served_worker_names_requests_in_json_lines(tmp_path: Path) -> None:
    server = serve_talker(tmp_path, "  log_format: json\n")
    try:
        for i in range(6):  # on new connections, so both workers answer some
            say(server.url, f"w{i}", f"req-{i}")
        wait_until(lambda: sum(r["logger"] == "tiffin.access" for r in server.records()) >= 6)
    finally:
        server.stop()
    lines = server.records()
    for i in range(6):
        mine = [r for r in lines if r.get("request_id") == f"req-{i}"]
        assert sorted((r["logger"], r["message"]) for r in mine) == [
            ("talker", f"said w{i}"),
            ("talker", f"saying w{i}"),
            ("tiffin.access", "POST /say 200"),
        ]
        assert len({r["pid"] for r in mine}) == 1  # all from the worker that answered
    assert all(r["pid"] != os.getpid() for r in lines)
    assert not [r for r in lines if r["logger"] == "tiffin.body"]
    assert '"w0"' not in server.log()


def test_level_format_and_bodies_are_configured_for_every_worker(tmp_path: Path) -> None:
    server = serve_talker(
        tmp_path, "  log_level: warning\n  log_request_bodies: true\n", "--log-format", "console"
    )
    try:
        sent = [say(server.url, f"w{i}", f"req-{i}") for i in range(4)]
        wait_until(lambda: server.log().count("said w") == 4)
    finally:
        server.stop()
    lines = server.log().splitlines()
    assert not [line for line in lines if line.startswith("{")]  # console lines, not JSON
    for i, body in enumerate(sent):
        [said] = [line for line in lines if f"said w{i}" in line]
        assert said[13:] == f"WARNING talker  said w{i}  request_id=req-{i}"
        [logged] = [line for line in lines if f"request_id=req-{i}" in line and "body=" in line]
        assert logged[13:] == (
            f"DEBUG   tiffin.body  Body of a request to say ({len(body)} bytes)  api=say "
            f"body={body.decode()} size={len(body)} truncated=False request_id=req-{i}"
        )
    text = server.log()
    assert "saying" not in text  # info lines are below the level
    assert "POST /say 200" not in text  # so is the access log


def test_the_request_id_is_set_for_each_request_and_reset_after() -> None:
    """Also when one task calls the app again and again (an ASGI server gives each
    request a task of its own)."""

    async def main() -> list[str | None]:
        spec = spec_of(Chatty)
        app = App(spec, config.load(code=spec.config), remote=lambda url: None)
        seen: list[str | None] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: Any) -> None:
            seen.append(context.request_id.get())

        for request_id in ("a", "b"):
            scope = {
                "type": "http",
                "method": "GET",
                "path": "/livez",
                "headers": [(b"x-request-id", request_id.encode())],
            }
            await app(scope, receive, send)
        seen.append(context.request_id.get())
        return seen

    assert asyncio.run(main()) == ["a", "a", "b", "b", None]
