"""Log records as JSON lines for machines or short readable lines for people.

``configure(settings)`` is called once at the start of each server process (the
supervisor and every worker); it owns the root logger's handler, so the service's own
``logging`` calls come out in the same format. A JSON line holds ``ts`` (ISO-8601, UTC),
``level``, ``logger``, ``message``, ``pid``, every ``extra=`` field the call gave (the
access log adds ``method``, ``path``, ``status``, ``duration_ms``, ``request_id``), and
``traceback`` when an exception is attached. A console line shows the extra fields as
``key=value`` after the message.

A line logged while a request is answered, by the service's code or by tiffin's, names
it: the handler adds ``request_id`` (and ``trace_id`` and ``span_id`` when tracing is
on) from ``tiffin.observability.context`` as the line is logged, on the thread that logs
it; the server sets them per request, and runs the calls it hands to its thread pool in
a copy of the request's context, so a ``def`` API's lines carry them too. A batched
call serves many requests at once, so its lines carry no request id. Request bodies are
logged only when ``log_request_bodies`` is set (``BodyLog``).

Writing stays off the request path. The handler ``configure`` installs queues records
and a thread of its own formats and writes them, a batch at a time, 50 ms after the first
of the batch arrived, in whole lines of at most ``PIPE_BUF`` bytes (4 KiB) per ``write``,
so the lines of workers sharing one pipe never mix. A record whose message arguments and
``extra=`` values are plain strings, numbers, booleans or None is queued as it is and
formatted in that thread; any other record is formatted when it is logged, since its
values could change before the thread gets to it. A record at WARNING or above is
written at once, after everything queued before it, so an error is never late or out of
order. ``logging.shutdown()`` (run at exit) writes what is still queued; a process killed
outright loses at most the last 50 ms of info lines. When the stream cannot keep up and
10,000 records are queued, the thread that logs writes them itself, as a plain
``StreamHandler`` would, so the queue never grows past that.

The access log (``AccessLog``) goes further: where this handler is the only one its line
would reach, the line's values are queued as a tuple and the writer thread formats them
directly, into the same line ``format`` gives the record. Measured with the iris
quickstart on the 2-core VM of the serving-overhead benchmark (one worker, 8
connections), the access log cost a request ~39 us (3,729 against 4,361 requests/s with
it off) when each line was a ``logger.info`` formatted and written on the event loop;
moving formatting and writing to the thread alone won back only a few microseconds of
it (the work still shares the CPU); skipping the record and the generic formatter took
it to ~12 us (4,539 against 4,809). The writer yields the CPU between writes, so the
event loop never waits on it for the GIL's 5 ms switch interval (that wait had raised
p99 to 4.6 ms).

Example:
    configure(settings)
    logging.getLogger("tiffin.access").info("GET /livez 200", extra={"status": 200})
    # {"ts":"2026-11-24T15:30:12.482Z","level":"info","logger":"tiffin.access",...}
"""

from __future__ import annotations

import logging
import os
import select
import sys
import threading
import time
import weakref
from collections import deque
from typing import Any, NamedTuple, TextIO

import orjson

from tiffin.config import Settings
from tiffin.observability.context import request_id as _request_id
from tiffin.observability.context import span_id as _span_id
from tiffin.observability.context import trace_id as _trace_id

__all__ = [
    "BATCH_INTERVAL",
    "BODY_LIMIT",
    "AccessLog",
    "BodyLog",
    "ConsoleFormatter",
    "JSONFormatter",
    "configure",
    "use_json",
]

BATCH_INTERVAL = 0.05
"""Seconds the writer thread waits after a record arrives, to write a batch at a time."""
# Bytes per write, at most: a write to a pipe no longer than PIPE_BUF is atomic, so the
# lines of workers sharing one standard error never mix. Whole lines only; a longer line
# is written alone.
_WRITE_SIZE = getattr(select, "PIPE_BUF", 512)
# Records queued, at most: past it, the thread that logs writes them itself, so a
# stream that cannot keep up slows the server down (as a plain StreamHandler would)
# instead of filling its memory.
_MAX_QUEUED = 10_000
_PLAIN = frozenset((str, int, float, bool, type(None)))
_ACCESS = "tiffin.access"
_BODY = "tiffin.body"
BODY_LIMIT = 2048
"""The most bytes of a request body ``BodyLog`` shows."""
# Where a line's request and trace come from, when its call did not name them.
_CONTEXT = (("request_id", _request_id), ("trace_id", _trace_id), ("span_id", _span_id))

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    (
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "color_message",  # uvicorn's coloured copy of the message
        "taskName",
    )
)
# Extras the access log's message already shows ("POST /predict 200"); a console line
# leaves them out.
_SHOWN_IN_MESSAGE = frozenset(("method", "path", "status"))
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


class _Clock:
    """Formats record times, redoing the date part only when the second changes. Safe
    to share between threads: the second and its text are replaced together."""

    __slots__ = ("_last", "_utc")

    def __init__(self, *, utc: bool) -> None:
        self._utc = utc
        self._last = (-1, "")

    def stamp(self, created: float, pattern: str) -> str:
        second = int(created)
        last_second, prefix = self._last
        if second != last_second:
            moment = time.gmtime(second) if self._utc else time.localtime(second)
            prefix = time.strftime(pattern, moment)
            self._last = (second, prefix)
        return f"{prefix}.{int((created - second) * 1000):03d}"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[0] != "_"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line; values that JSON cannot hold are written with ``str``."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(utc=True)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self._clock.stamp(record.created, "%Y-%m-%dT%H:%M:%S") + "Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        line.update(_extras(record))
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        return orjson.dumps(line, default=str).decode()

    def format_access(self, access: _Access) -> str:
        """The line ``format`` gives the record of an access-log line, made directly."""
        line: dict[str, Any] = {
            "ts": self._clock.stamp(access.created, "%Y-%m-%dT%H:%M:%S") + "Z",
            "level": "info",
            "logger": access.logger,
            "message": f"{access.method} {access.path} {access.status}",
            "pid": os.getpid(),
            "method": access.method,
            "path": access.path,
            "status": access.status,
            "duration_ms": access.duration_ms,
            "request_id": access.request_id,
        }
        if access.trace_id is not None:
            line["trace_id"] = access.trace_id
            line["span_id"] = access.span_id
        return orjson.dumps(line).decode()


class ConsoleFormatter(logging.Formatter):
    """``15:30:12.482 INFO  tiffin.access  POST /predict 200  duration_ms=3.1 request_id=...``"""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(utc=False)

    def format(self, record: logging.LogRecord) -> str:
        text = (
            f"{self._clock.stamp(record.created, '%H:%M:%S')} {record.levelname:<7} "
            f"{record.name}  {record.getMessage()}"
        )
        extras = [
            f"{key}={value}"
            for key, value in _extras(record).items()
            if key not in _SHOWN_IN_MESSAGE
        ]
        if extras:
            text += "  " + " ".join(extras)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        return text

    def format_access(self, access: _Access) -> str:
        """The line ``format`` gives the record of an access-log line, made directly."""
        text = (
            f"{self._clock.stamp(access.created, '%H:%M:%S')} INFO    {access.logger}  "
            f"{access.method} {access.path} {access.status}  "
            f"duration_ms={access.duration_ms} request_id={access.request_id}"
        )
        if access.trace_id is not None:
            text += f" trace_id={access.trace_id} span_id={access.span_id}"
        return text


def _plain(record: logging.LogRecord) -> bool:
    """Whether nothing in ``record`` can change after it is logged, so formatting it can
    wait: a str message, and arguments and extras that are plain values."""
    if type(record.msg) is not str or record.exc_info or record.stack_info:
        return False
    args = record.args
    if args and (type(args) is not tuple or any(type(a) not in _PLAIN for a in args)):
        return False
    return all(type(v) in _PLAIN for k, v in record.__dict__.items() if k not in _STANDARD)


class _Access(NamedTuple):
    """One access-log line as the values it was logged with."""

    logger: str
    created: float
    method: str
    path: str
    status: int
    duration_ms: float
    request_id: str
    trace_id: str | None = None
    span_id: str | None = None

    def record(self) -> logging.LogRecord:
        """The record ``logger.info`` would have made, but for the thread it names."""
        created = self.created
        record = logging.LogRecord(
            self.logger,
            logging.INFO,
            "(unknown file)",
            0,
            "%s %s %s",
            (self.method, self.path, self.status),
            None,
            "(unknown function)",
        )
        record.relativeCreated -= (record.created - created) * 1000
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        record.method = self.method
        record.path = self.path
        record.status = self.status
        record.duration_ms = self.duration_ms
        record.request_id = self.request_id
        if self.trace_id is not None:
            record.trace_id = self.trace_id
            record.span_id = self.span_id
        return record


class _Handler(logging.Handler):
    """The handler ``configure`` installs (recognised so a second call replaces it): it
    queues records and writes them from a thread of its own, in batches.

    Args:
        stream: where lines go.
        interval: seconds between the first record of a batch and its write.
    """

    def __init__(self, stream: TextIO, *, interval: float = BATCH_INTERVAL) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._queue: deque[logging.LogRecord | _Access | str] = deque()
        self._wake = threading.Event()
        self._signalled = False  # the writer has been woken for what is queued
        self._closed = False
        self._writing = threading.Lock()  # one writer at a time keeps lines in order
        self._writer: threading.Thread | None = None
        handler = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(handler()))

    def emit(self, record: logging.LogRecord) -> None:
        # The request and trace are read here, in the thread that logs: the writer
        # thread, which formats most lines, has a context of its own.
        fields = record.__dict__
        for key, variable in _CONTEXT:
            value = variable.get()
            if value is not None and key not in fields:
                fields[key] = value
        try:
            self._queue.append(record if _plain(record) else self.format(record))
        except Exception:
            self.handleError(record)
            return
        self._queued(record.levelno >= logging.WARNING)

    def access(self, line: _Access) -> None:
        """Queue an access-log line as its values; the writer thread formats them."""
        self._queue.append(line)
        self._queued(urgent=False)

    def _queued(self, urgent: bool) -> None:
        if urgent or self._closed or len(self._queue) > _MAX_QUEUED:
            self.flush()
        elif not self._signalled:
            self._signalled = True
            self._start_writer()
            self._wake.set()

    def flush(self) -> None:
        """Write everything queued, now, in the calling thread."""
        self._drain(polite=False)

    def _drain(self, *, polite: bool) -> None:
        while self._queue:
            with self._writing:
                text = self._take()
                if text:
                    self._write(text)
            if polite:
                # Let the event loop have the GIL (and, on one CPU, the CPU) between
                # writes: without this the loop can wait up to the 5 ms switch interval.
                os.sched_yield()

    def _take(self) -> str:
        """Whole lines from the front of the queue, up to ``_WRITE_SIZE`` bytes."""
        queue = self._queue
        lines: list[str] = []
        size = 0
        while queue:
            item = queue.popleft()
            text = item if isinstance(item, str) else self._line(item)
            if text is None:
                continue
            length = (len(text) if text.isascii() else len(text.encode())) + 1
            if lines and size + length > _WRITE_SIZE:
                queue.appendleft(text)  # only a holder of _writing takes from the front
                break
            lines.append(text)
            size += length
        return "\n".join(lines) + "\n" if lines else ""

    def _line(self, item: logging.LogRecord | _Access) -> str | None:
        if isinstance(item, logging.LogRecord):
            record = item
        else:
            format_access = getattr(self.formatter, "format_access", None)
            if format_access is not None:
                try:
                    text: str = format_access(item)
                    return text
                except Exception:  # noqa: S110 - the record, formatted below, reports it
                    pass
            record = item.record()
        try:
            return self.format(record)
        except Exception:
            self.handleError(record)
            return None

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.flush()
        super().close()

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text[:200]}))

    def _start_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writing:  # access() does not hold the handler's lock
            if self._writer is None:
                self._writer = threading.Thread(target=self._run, name="tiffin-log", daemon=True)
                self._writer.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            time.sleep(self.interval)
            self._wake.clear()
            self._signalled = False
            self._drain(polite=True)


class AccessLog:
    """The access log: one line per request on the ``tiffin.access`` logger, with
    ``method``, ``path``, ``status``, ``duration_ms`` and ``request_id``, and
    ``trace_id`` and ``span_id`` when tracing has set them.

    Where the handler ``configure`` installs is the only one the line would reach (as in
    a ``tiffin serve`` worker), the values go straight onto its queue and its writer
    thread formats them, so the request path pays for a tuple, not for a record and its
    trip through ``logging``. Anywhere else (pytest's ``caplog``, a user's own handlers or
    filters, a custom record factory), it is a plain ``logger.info``.

    Example:
        access = AccessLog()
        access("POST", "/predict", 200, 3.1, "4b1f0c2a")
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger(_ACCESS)

    def __call__(
        self, method: str, path: str, status: int, duration_ms: float, request_id: str
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        trace_id = _trace_id.get()
        span_id = _span_id.get() if trace_id is not None else None
        handler = _sole_handler(logger)
        if handler is not None:
            line = _Access(
                logger.name,
                time.time(),
                method,
                path,
                status,
                duration_ms,
                request_id,
                trace_id,
                span_id,
            )
            handler.access(line)
            return
        extra = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "request_id": request_id,
        }
        if trace_id is not None:
            extra["trace_id"] = trace_id
            extra["span_id"] = span_id
        logger.info("%s %s %s", method, path, status, extra=extra, stacklevel=2)


class BodyLog:
    """Logs the body of each API request, for ``log_request_bodies``: one line at debug
    level on the ``tiffin.body`` logger (which ``configure`` opens at debug level when
    the setting is on, whatever ``log_level`` says), with ``api``, ``body`` (its first
    ``BODY_LIMIT`` bytes, as text), ``size`` (in bytes) and ``truncated``, and the
    request's id. Only JSON, form and text bodies are shown; files, multipart forms and
    any other binary body never are.

    Example:
        bodies = BodyLog()
        bodies("predict", b'{"x": 1.5}', "application/json")
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger(_BODY)

    def __call__(self, api: str, body: bytes, content_type: str) -> None:
        if not (self.logger.isEnabledFor(logging.DEBUG) and _textual(content_type)):
            return
        self.logger.debug(
            "Body of a request to %s (%d bytes)",
            api,
            len(body),
            extra={
                "api": api,
                "body": body[:BODY_LIMIT].decode("utf-8", "replace"),
                "size": len(body),
                "truncated": len(body) > BODY_LIMIT,
            },
            stacklevel=2,
        )


def _textual(content_type: str) -> bool:
    """Whether a body of ``content_type`` is text that a log line may show (no type:
    the server reads it as JSON)."""
    media = content_type.partition(";")[0].strip().lower()
    return (
        not media
        or media in ("application/json", "application/x-www-form-urlencoded")
        or media.endswith("+json")
        or media.startswith("text/")
    )


def _sole_handler(logger: logging.Logger) -> _Handler | None:
    """The handler of ``configure`` when it is the only one an info record of ``logger``
    would reach, with no filter on the way and the standard record factory."""
    if logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    found: _Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if type(handler) is not _Handler or found is not None or handler.filters:
                return None
            if handler.level > logging.INFO:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def _after_fork(handler: _Handler | None) -> None:
    """In a forked child only the forking thread lives on: the writer thread and the
    state of the locks it held are the parent's, and so are the lines queued (the
    parent writes them)."""
    if handler is not None:
        handler._queue.clear()
        handler._writing = threading.Lock()
        handler._wake = threading.Event()
        handler._signalled = False
        handler._writer = None


def use_json(settings: Settings, stream: TextIO | None = None) -> bool:
    """Whether logs are JSON: ``log_format`` json, or auto when ``stream`` (standard
    error by default) is not a terminal."""
    if settings.log_format == "auto":
        target = stream if stream is not None else sys.stderr
        return not target.isatty()
    return settings.log_format == "json"


def configure(settings: Settings, stream: TextIO | None = None) -> None:
    """Send every log record of this process to ``stream`` (standard error by default) in
    the format and at the level ``settings`` ask for. Calling it again replaces the setup.

    Example:
        configure(tiffin.config.load(flags={"log_format": "json"}))
    """
    target = stream if stream is not None else sys.stderr
    handler = _Handler(target)
    handler.setFormatter(JSONFormatter() if use_json(settings, target) else ConsoleFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    level = _LEVELS.get(settings.log_level, logging.ERROR)
    root.setLevel(level)
    # uvicorn narrates every worker's start and stop at info; the supervisor says what
    # matters, so uvicorn's own lines show at debug level only.
    logging.getLogger("uvicorn").setLevel(
        level if level == logging.DEBUG else max(level, logging.WARNING)
    )
    # Bodies are logged at debug level, and shown whenever they are asked for.
    logging.getLogger(_BODY).setLevel(
        logging.DEBUG if settings.log_request_bodies else logging.NOTSET
    )
