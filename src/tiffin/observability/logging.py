"""Log records as JSON lines for machines or short readable lines for people.

``configure(settings)`` is called once at the start of each server process (the
supervisor and every worker); it owns the root logger's handler, so the service's own
``logging`` calls come out in the same format. A JSON line holds ``ts`` (ISO-8601, UTC),
``level``, ``logger``, ``message``, ``pid``, every ``extra=`` field the call gave (the
access log adds ``method``, ``path``, ``status``, ``duration_ms``, ``request_id``), and
``traceback`` when an exception is attached. Request bodies are never logged.

Example:
    configure(settings)
    logging.getLogger("tiffin.access").info("GET /livez 200", extra={"status": 200})
    # {"ts":"2026-11-24T15:30:12.482Z","level":"info","logger":"tiffin.access",...}
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from tiffin.config import Settings

__all__ = ["ConsoleFormatter", "JSONFormatter", "configure", "use_json"]

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
    """Formats record times, redoing the date part only when the second changes."""

    __slots__ = ("_prefix", "_second", "_utc")

    def __init__(self, *, utc: bool) -> None:
        self._utc = utc
        self._second = -1
        self._prefix = ""

    def stamp(self, created: float, pattern: str) -> str:
        second = int(created)
        if second != self._second:
            moment = time.gmtime(second) if self._utc else time.localtime(second)
            self._prefix = time.strftime(pattern, moment)
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}"


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
        return text


class _Handler(logging.StreamHandler[TextIO]):
    """The handler ``configure`` installs; recognised so a second call replaces it."""


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
