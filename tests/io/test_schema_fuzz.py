"""Schema-driven fuzzing of the IO types: requests generated from /openapi.json (JSON,
multipart with file parts, CSV, text, image and raw file bodies) never get a 5xx, and
every response matches the media types and schemas the document publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
from PIL import Image

import tiffin
from tests.conftest import need
from tests.server.asgi import SCHEMATHESIS, fuzz, live_server
from tiffin.io import Columns


@tiffin.service(name="fuzzed-io")
class FuzzedIO:
    """One API per way a value crosses the wire."""

    @tiffin.api
    def total(self, rows: Annotated[pd.DataFrame, Columns("a", "b")]) -> pd.DataFrame:
        return rows

    @tiffin.api
    def count(self, rows: pd.DataFrame, label: str = "") -> int:
        return len(rows)

    @tiffin.api
    def size(self, document: Path, note: str = "", pages: int = 1) -> int:
        return document.stat().st_size

    @tiffin.api
    def echo_file(self, blob: Path) -> Path:
        return blob

    @tiffin.api
    def rotate(self, image: Image.Image) -> Image.Image:
        return image.transpose(Image.Transpose.ROTATE_90)

    @tiffin.api
    def measure(self, image: Image.Image, label: str = "") -> list[int]:
        return list(image.size)

    @tiffin.api
    def shout(self, text: str) -> str:
        return text.upper()


def test_no_server_errors_and_responses_match_the_schema(tmp_path: Path) -> None:
    need(SCHEMATHESIS.exists(), "schemathesis is not installed")
    with live_server(FuzzedIO) as url:
        fuzz(url, tmp_path)
