"""What ``configure`` makes of the log settings: the level, the format (``auto`` by
whether the stream is a terminal), uvicorn's narration, and the body log."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from tests.observability.test_logging import Stream
from tiffin import config
from tiffin.observability.logging import configure, use_json

LEVELS = ["debug", "info", "warning", "error"]


class Terminal(Stream):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("uvicorn", "tiffin.body")}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, was in levels.items():
        logging.getLogger(name).setLevel(was)


def written(stream: Stream) -> list[str]:
    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) is stream:
            handler.flush()
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("level", LEVELS)
def test_the_level_decides_which_lines_are_written(level: str) -> None:
    stream = Stream()
    configure(config.load(flags={"log_level": level, "log_format": "json"}), stream=stream)
    log = logging.getLogger("tests.levels")
    for name in LEVELS:
        getattr(log, name)("a %s line", name)
    shown = [json.loads(line)["level"] for line in written(stream)]
    assert shown == LEVELS[LEVELS.index(level) :]


@pytest.mark.parametrize(
    ("level", "uvicorn"),
    [("debug", logging.DEBUG), ("info", logging.WARNING), ("error", logging.ERROR)],
)
def test_uvicorn_narrates_at_debug_level_only(level: str, uvicorn: int) -> None:
    configure(config.load(flags={"log_level": level}), stream=Stream())
    assert logging.getLogger("uvicorn").level == uvicorn


def test_auto_is_console_on_a_terminal_and_json_elsewhere() -> None:
    auto = config.load(flags={"log_format": "auto"})
    assert use_json(auto, Stream()) is True
    assert use_json(auto, Terminal()) is False
    assert use_json(config.load(flags={"log_format": "json"}), Terminal()) is True
    assert use_json(config.load(flags={"log_format": "console"}), Stream()) is False
    for stream, is_json in ((Stream(), True), (Terminal(), False)):
        configure(auto, stream=stream)
        logging.getLogger("tests.formats").warning("hello")
        [line] = written(stream)
        assert line.startswith("{") is is_json
        if not is_json:
            assert line[13:] == "WARNING tests.formats  hello"


def test_settings_come_from_the_environment_too() -> None:
    environ = {
        "TIFFIN_LOG_LEVEL": "warning",
        "TIFFIN_LOG_FORMAT": "console",
        "TIFFIN_LOG_REQUEST_BODIES": "true",
    }
    settings = config.load(environ=environ)
    assert (settings.log_level, settings.log_format, settings.log_request_bodies) == (
        "warning",
        "console",
        True,
    )
    assert config.load().log_request_bodies is False  # off unless asked


def test_the_body_logger_shows_debug_lines_only_when_bodies_are_asked_for() -> None:
    configure(config.load(flags={"log_request_bodies": True}), stream=Stream())
    assert logging.getLogger("tiffin.body").isEnabledFor(logging.DEBUG)
    assert not logging.getLogger("tiffin.other").isEnabledFor(logging.DEBUG)
    configure(config.load(), stream=Stream())
    assert not logging.getLogger("tiffin.body").isEnabledFor(logging.DEBUG)


def test_configuring_again_replaces_the_handler() -> None:
    first, second = Stream(), Stream()
    configure(config.load(flags={"log_format": "json"}), stream=first)
    configure(config.load(flags={"log_format": "console"}), stream=second)
    logging.getLogger("tests.again").warning("once")
    assert written(first) == []
    [line] = written(second)
    assert line.endswith("WARNING tests.again  once")
