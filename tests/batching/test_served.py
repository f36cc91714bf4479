"""Batched APIs through the app: merged calls, answers in order, failures kept to their batch."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated

import numpy as np

import tiffin
from tests.server.asgi import serving

Rows = Annotated[np.ndarray, tiffin.Shape(-1, 2)]


@tiffin.service(name="batched")
class Batched:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    @tiffin.api(batch=tiffin.Batch(max_size=16, max_latency_ms=1000))
    def predict(self, rows: Rows) -> np.ndarray:
        with self.lock:
            self.sizes.append(len(rows))
        time.sleep(0.02)  # a fixed cost per call, as a model has
        if (rows == 13).any():
            raise ValueError("unlucky row")
        result: np.ndarray = rows.sum(axis=1)
        return result

    @tiffin.api(batch=tiffin.Batch(max_size=8))
    async def words(self, texts: list[str]) -> list[int]:
        self.sizes.append(-len(texts))
        await asyncio.sleep(0.01)
        return [len(t.split()) for t in texts]


def test_concurrent_requests_share_calls_and_get_their_own_answers() -> None:
    async def main() -> None:
        async with serving(Batched) as (client, app):
            bodies = [{"rows": [[i, 1]] * (1 + i % 3)} for i in range(12)]
            responses = await asyncio.gather(*(client.post("/predict", json=b) for b in bodies))
            for i, response in enumerate(responses):
                assert response.status_code == 200
                assert response.json() == [i + 1] * (1 + i % 3)
            sizes = app.runtime.instance.sizes
            assert sum(sizes) == sum(1 + i % 3 for i in range(12))
            assert len(sizes) < 12  # merged
            assert max(sizes) <= 16
            metrics = (await client.get("/metrics")).text
            assert f'tiffin_batch_size_count{{api="predict"}} {float(len(sizes))}' in metrics
            assert f'tiffin_batch_size_sum{{api="predict"}} {float(sum(sizes))}' in metrics
            assert 'tiffin_batch_queue_wait_seconds_count{api="predict"} 12.0' in metrics

    asyncio.run(main())


def test_a_bad_request_is_refused_alone_and_a_failing_batch_fails_only_itself() -> None:
    async def main() -> None:
        async with serving(Batched) as (client, app):
            good = [client.post("/predict", json={"rows": [[1, 2]]}) for _ in range(3)]
            wrong_shape = client.post("/predict", json={"rows": [[1, 2, 3]]})
            results = await asyncio.gather(*good, wrong_shape)
            assert [r.status_code for r in results] == [200, 200, 200, 422]
            assert results[3].json()["error"]["detail"]["errors"] == [
                {"loc": "rows", "msg": "must have shape (any, 2), got (1, 3)"}
            ]

            calls = len(app.runtime.instance.sizes)
            first = asyncio.ensure_future(client.post("/predict", json={"rows": [[0, 0]]}))
            while len(app.runtime.instance.sizes) == calls:  # until its call has started
                await asyncio.sleep(0.001)
            unlucky = [client.post("/predict", json={"rows": [[13, 0]]})]
            others = [client.post("/predict", json={"rows": [[1, 1]]}) for _ in range(2)]
            failed, *rest = await asyncio.gather(*unlucky, *others)
            assert (await first).json() == [0]
            assert failed.status_code == 500
            assert failed.json()["error"]["type"] == "ServiceError"
            # the two others shared the unlucky call: they fail with it, not more
            assert [r.status_code for r in rest] == [500, 500]
            after = await client.post("/predict", json={"rows": [[2, 2]]})
            assert after.json() == [4]

    asyncio.run(main())


def test_async_batched_apis_and_lists() -> None:
    async def main() -> None:
        async with serving(Batched) as (client, app):
            bodies = [{"texts": ["a b", "c"]}, {"texts": ["d e f"]}, {"texts": ["g"] * 3}]
            responses = await asyncio.gather(*(client.post("/words", json=b) for b in bodies))
            assert [r.json() for r in responses] == [[2, 1], [3], [1, 1, 1]]
            assert -sum(app.runtime.instance.sizes) == 6

    asyncio.run(main())
