"""The log handler ``configure`` installs: lines written from a thread of its own, in
batches, in order, with errors at once and nothing lost at shutdown."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import wait_until
from tiffin import config
from tiffin.observability.logging import BATCH_INTERVAL, AccessLog, configure


class Stream(io.StringIO):
    """A stream that records each write and the thread that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((threading.current_thread().name, text))
        return super().write(text)

    def isatty(self) -> bool:
        return False

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines()]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The logging setup as it was before the test, after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn_level = logging.getLogger("uvicorn").level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    logging.getLogger("uvicorn").setLevel(uvicorn_level)


@pytest.fixture
def stream(restore_logging: None) -> Stream:
    """The root logger writing JSON lines to a fresh stream."""
    target = Stream()
    configure(config.load(flags={"log_format": "json", "log_level": "debug"}), stream=target)
    return target


def test_info_lines_are_written_from_the_writer_thread_in_one_batch(stream: Stream) -> None:
    log = logging.getLogger("tiffin.access")
    for i in range(50):
        log.info("%s %s %s", "POST", "/predict", 200, extra={"request_id": f"r{i}", "n": i})
    assert stream.getvalue() == ""  # nothing written on the caller's time
    wait_until(lambda: len(stream.records()) == 50)
    assert [r["request_id"] for r in stream.records()] == [f"r{i}" for i in range(50)]
    assert stream.records()[0]["message"] == "POST /predict 200"
    assert {name for name, _ in stream.writes} == {"tiffin-log"}
    # 50 lines of ~140 bytes: two writes of whole lines, each at most 4 KiB
    assert len(stream.writes) == 2
    assert all(len(text.encode()) <= 4096 and text[-1] == "\n" for _, text in stream.writes)


def test_a_warning_is_written_at_once_after_what_was_queued(stream: Stream) -> None:
    log = logging.getLogger("tiffin.test")
    log.info("first")
    log.info("second")
    log.warning("third")
    # written by the caller, before this line runs, and in order
    assert [r["message"] for r in stream.records()] == ["first", "second", "third"]
    assert stream.records()[2]["level"] == "warning"
    assert stream.writes[0][0] == threading.current_thread().name


def test_an_exception_is_written_with_its_traceback(stream: Stream) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("tiffin.test").exception("it broke")
    [record] = stream.records()
    assert record["message"] == "it broke"
    assert "ValueError: bad value" in record["traceback"]


def test_values_that_could_change_are_formatted_when_logged(stream: Stream) -> None:
    log = logging.getLogger("tiffin.test")
    shown = [1, 2]
    extra = {"items": {"a": 1}}
    log.info("list %s", shown, extra=extra)
    shown.append(3)
    extra["items"]["b"] = 2
    wait_until(lambda: bool(stream.records()))
    [record] = stream.records()
    assert record["message"] == "list [1, 2]"
    assert record["items"] == {"a": 1}


def test_flush_and_close_write_everything_queued(stream: Stream) -> None:
    log = logging.getLogger("tiffin.test")
    log.info("queued")
    [handler] = [h for h in logging.getLogger().handlers if getattr(h, "stream", 0) is stream]
    handler.flush()
    assert [r["message"] for r in stream.records()] == ["queued"]
    log.info("at exit")
    handler.close()  # what logging.shutdown() does at exit
    assert [r["message"] for r in stream.records()] == ["queued", "at exit"]
    log.info("after close")  # written at once: no thread left to write it
    assert stream.records()[-1]["message"] == "after close"


def test_lines_from_many_threads_are_all_written_whole(stream: Stream) -> None:
    log = logging.getLogger("tiffin.test")

    def chatter(n: int) -> None:
        for i in range(200):
            log.info("thread %d line %d", n, i)

    threads = [threading.Thread(target=chatter, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_until(lambda: len(stream.getvalue().splitlines()) == 800, 5 + BATCH_INTERVAL)
    messages = [r["message"] for r in stream.records()]
    for n in range(4):
        assert [m for m in messages if m.startswith(f"thread {n} ")] == [
            f"thread {n} line {i}" for i in range(200)
        ]
    assert all(len(text.encode()) <= 4096 for _, text in stream.writes)


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.usefixtures("restore_logging")
def test_an_access_line_reads_the_same_by_either_path(log_format: str) -> None:
    """Where tiffin's handler is the only one, an access line skips the record on the
    caller's time; the line written is the one ``logger.info`` would have given."""
    root = logging.getLogger()
    target = Stream()
    configure(config.load(flags={"log_format": log_format}), stream=target)
    [handler] = [h for h in root.handlers if getattr(h, "stream", 0) is target]
    # a logger that reaches tiffin's handler only: pytest's own handlers sit on the
    # loggers it knows of, and this one is in no hierarchy
    alone = logging.Logger("tiffin.access.alone", logging.INFO)
    alone.addHandler(handler)
    AccessLog(alone)("POST", "/predict", 200, 1.25, "req-1")
    assert not target.writes
    assert type(handler._queue[-1]).__name__ == "_Access"  # type: ignore[attr-defined]
    alone.info(
        "%s %s %s",
        "POST",
        "/predict",
        200,
        extra={
            "method": "POST",
            "path": "/predict",
            "status": 200,
            "duration_ms": 1.25,
            "request_id": "req-1",
        },
    )
    handler.flush()
    fast, plain = target.getvalue().splitlines()
    if log_format == "json":
        fast_line, plain_line = json.loads(fast), json.loads(plain)
        del fast_line["ts"], plain_line["ts"]
        assert fast_line == plain_line
        assert list(fast_line) == [
            "level",
            "logger",
            "message",
            "pid",
            "method",
            "path",
            "status",
            "duration_ms",
            "request_id",
        ]
    else:
        assert fast[13:] == plain[13:]  # after the time of day
        assert fast[13:] == (
            "INFO    tiffin.access.alone  POST /predict 200  duration_ms=1.25 request_id=req-1"
        )
