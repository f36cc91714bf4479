"""``@tiffin.task``: checked when the class is decorated, with messages that say what to do."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tiffin
from tiffin.exceptions import ServiceDefinitionError
from tiffin.service import spec_of
from tiffin.service.tasks import MAX_BACKOFF, Task


def message_of(make: Callable[[], Any]) -> str:
    with pytest.raises(ServiceDefinitionError) as caught:
        make()
    return caught.value.message


def test_bare_and_with_options() -> None:
    @tiffin.service
    class Reports:
        @tiffin.task
        def plain(self, n: int) -> int:
            """Count."""
            return n

        @tiffin.task(name="monthly", retries=2, retry_backoff=0.5, timeout=9, result_ttl=60)
        async def month(self, month: str) -> dict[str, float]:
            return {}

    spec = spec_of(Reports)
    assert spec.apis == {}  # a service of tasks alone is a service
    plain, monthly = spec.tasks["plain"], spec.tasks["monthly"]
    assert isinstance(plain, Task)
    assert (plain.route, plain.doc, plain.retries, plain.timeout, plain.is_async) == (
        "/tasks/plain",
        "Count.",
        0,
        None,
        False,
    )
    assert (monthly.route, monthly.retries, monthly.timeout, monthly.result_ttl) == (
        "/tasks/monthly",
        2,
        9,
        60,
    )
    assert monthly.is_async
    assert [monthly.backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert monthly.backoff(40) == MAX_BACKOFF
    assert Reports().plain(3) == 3  # on an instance, the plain method


def plain(self: Any, n: int) -> int:
    return n


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"retries": -1}, "@tiffin.task(retries=-1) on 'plain' must be a whole number, 0 or more"),
        ({"retries": 1.5}, "@tiffin.task(retries=1.5) on 'plain' must be a whole number"),
        ({"retry_backoff": "1"}, "@tiffin.task(retry_backoff='1') on 'plain' must be a number"),
        ({"timeout": 0}, "@tiffin.task(timeout=0) on 'plain' must be a number of seconds above 0"),
        ({"result_ttl": -5}, "@tiffin.task(result_ttl=-5) on 'plain' must be a number"),
        (
            {"name": "no-dash"},
            "@tiffin.task(name='no-dash') on 'plain' must be a Python identifier",
        ),
        ({"doc": 3}, "@tiffin.task(doc=...) on 'plain' must be a string."),
    ],
)
def test_bad_options(options: dict[str, Any], expected: str) -> None:
    assert message_of(lambda: tiffin.task(**options)(plain)).startswith(expected)


def test_what_a_task_cannot_be() -> None:
    def stream(self: Any, n: int) -> Iterator[int]:
        yield n

    def upload(self: Any, path: Path) -> int:
        return 1

    def download(self: Any) -> Path:
        return Path()

    def no_self(n: int) -> int:
        return n

    assert message_of(lambda: tiffin.task(stream)) == (
        "Task 'stream' is a generator; a task's result is stored whole, so it cannot stream. "
        "Return the result (a list, say), or make it an @tiffin.api."
    )
    assert message_of(lambda: tiffin.task(upload)) == (
        "Task 'upload' takes files ('path'); a task's arguments are stored as JSON until it "
        "runs. Pass a reference the task can read (a path or URL) instead."
    )
    assert re.match(
        r"Task 'download' returns a \w+; a task's result is stored as JSON",
        message_of(lambda: tiffin.task(download)),
    )
    assert message_of(lambda: tiffin.task(no_self)) == (
        "Task 'no_self' must be a method whose first parameter is 'self'."
    )
    assert message_of(lambda: tiffin.task(staticmethod(plain))).startswith(
        "@tiffin.task decorates a plain method"
    )


def test_an_api_and_a_task_cannot_share_a_name() -> None:
    class Clash:
        @tiffin.api
        def report(self) -> int:
            return 1

        @tiffin.task(name="report")
        def report_later(self) -> int:
            return 1

    assert message_of(lambda: tiffin.service(Clash)) == (
        "Two APIs or tasks of 'Clash' are named 'report'. Give one another name=."
    )


def test_task_context_outside_a_task() -> None:
    assert message_of(tiffin.task_context) == (
        "tiffin.task_context() was called outside a task. Call it from a method marked "
        "@tiffin.task, while the server runs it."
    )
