"""The task routes answer as their OpenAPI document says, for generated requests."""

from __future__ import annotations

from pathlib import Path

import tiffin
from tests.server.asgi import fuzz, live_server


@tiffin.service(name="fuzzed")
class Fuzzed:
    @tiffin.api
    def echo(self, text: str) -> str:
        return text

    @tiffin.task
    def count(self, values: list[float], at_least: int = 0) -> int:
        """Count numbers, later."""
        return max(len(values), at_least)


def test_task_routes_conform_to_their_schema(tmp_path: Path) -> None:
    with live_server(Fuzzed, home=tmp_path / "home") as url:
        fuzz(url, tmp_path, examples=15)
