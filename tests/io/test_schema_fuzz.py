"""Schema-driven fuzzing of the IO types: requests generated from /openapi.json (JSON,
multipart with file parts, CSV, text, image and raw file bodies) never get a 5xx, and
every response matches the media types and schemas the document publishes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import httpx
import pandas as pd
import pytest
import uvicorn
from PIL import Image

import tiffin
from tests.conftest import need
from tiffin import config
from tiffin.io import Columns
from tiffin.server import create_app
from tiffin.service import spec_of

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


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


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    spec = spec_of(FuzzedIO)
    app = create_app(spec, config.load(code=spec.config, flags={"access_log": False}))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def test_no_server_errors_and_responses_match_the_schema(base_url: str, tmp_path: Path) -> None:
    need(SCHEMATHESIS.exists(), "schemathesis is not installed")
    done = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--generation-database",
            "none",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout, done.stdout[-3000:]
