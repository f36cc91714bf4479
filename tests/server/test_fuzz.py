"""Schema-driven fuzzing: requests generated from /openapi.json never get a 5xx, and every
response matches the published schema."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import httpx
import numpy as np
import pytest
import uvicorn
from pydantic import BaseModel, Field

import tiffin
from tiffin import config
from tiffin.server import create_app
from tiffin.service import spec_of


class Order(BaseModel):
    item: str = Field(min_length=1, max_length=20)
    quantity: int = Field(ge=1, le=1000)
    express: bool = False


class Quote(BaseModel):
    item: str
    total: float
    currency: Literal["EUR", "USD"]


@tiffin.service(name="fuzzed")
class Fuzzed:
    """A service with several kinds of parameters, to fuzz."""

    @tiffin.api
    def quote(self, order: Order, currency: Literal["EUR", "USD"] = "EUR") -> Quote:
        """Price an order."""
        price = 2.5 * order.quantity * (1.5 if order.express else 1.0)
        return Quote(item=order.item, total=price, currency=currency)

    @tiffin.api
    def score(
        self, rows: Annotated[np.ndarray, tiffin.Shape(-1, 3), tiffin.DType("float64")]
    ) -> list[float]:
        """Sum each row."""
        return [float(v) for v in np.nan_to_num(rows).sum(axis=1)]

    @tiffin.api
    async def words(self, text: str, limit: int | None = None) -> dict[str, int]:
        """Count words."""
        counts: dict[str, int] = {}
        for word in text.split()[:limit]:
            counts[word] = counts.get(word, 0) + 1
        return counts

    @tiffin.api
    def countdown(self, start: int = Field(default=3, ge=0, le=5)) -> Iterator[int]:
        """Count down to zero."""
        yield from range(start, -1, -1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    spec = spec_of(Fuzzed)
    app = create_app(spec, config.load(code=spec.config, flags={"access_log": False}))
    port = _free_port()
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
    """Every operation gets generated valid and invalid bodies (schemathesis' coverage and
    fuzzing phases); any 5xx, or a response or status the schema does not describe, fails."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
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
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout or " passed" in done.stdout, done.stdout[-3000:]
