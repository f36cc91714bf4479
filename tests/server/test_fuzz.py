"""Schema-driven fuzzing: requests generated from /openapi.json never get a 5xx, and every
response matches the published schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, Field

import tiffin
from tests.server.asgi import fuzz, live_server


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


def test_no_server_errors_and_responses_match_the_schema(tmp_path: Path) -> None:
    with live_server(Fuzzed) as url:
        fuzz(url, tmp_path)
