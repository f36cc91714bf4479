"""The batcher on its own: merging, splitting, fairness, failures, the latency promise."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from prometheus_client import CollectorRegistry

from tiffin.batching import Batcher, BatchMetrics, LatencyModel, concat, split
from tiffin.exceptions import ServiceUnavailable, ValidationFailed


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coroutine)


class Model:
    """A batched function that records each call's size and takes ``seconds`` per call."""

    def __init__(self, seconds: float = 0.01, fail_on: int | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.calls: list[int] = []

    async def __call__(self, kwargs: dict[str, Any]) -> Any:
        x = kwargs["x"]
        self.calls.append(len(x))
        await asyncio.sleep(self.seconds)
        if self.fail_on is not None and self.fail_on in np.asarray(x).ravel():
            raise RuntimeError("bad value")
        return np.asarray(x) * 10


def batcher(model: Model, **options: Any) -> Batcher:
    settings = {"max_size": 8, "max_latency_ms": 1000, "dim": 0, **options}
    return Batcher("predict", ("x",), call=model, **settings)


def test_a_lone_request_runs_at_once_alone() -> None:
    async def main() -> None:
        model = Model()
        result = await batcher(model).submit({"x": np.array([[1.0, 2.0]])})
        assert result.tolist() == [[10.0, 20.0]]
        assert model.calls == [1]

    run(main())


def test_concurrent_requests_share_calls_and_each_gets_its_own_rows() -> None:
    async def main() -> None:
        model = Model(seconds=0.02)
        b = batcher(model)
        inputs = [np.array([[float(i)]]) for i in range(9)]
        results = await asyncio.gather(*(b.submit({"x": x}) for x in inputs))
        assert [r.tolist() for r in results] == [[[i * 10.0]] for i in range(9)]
        # arriving together, they fill the first call (max_size 8); the ninth runs next
        assert model.calls == [8, 1]

        model.calls.clear()
        first = asyncio.ensure_future(b.submit({"x": inputs[0]}))
        await asyncio.sleep(0)  # the function is busy with the first: the rest queue
        later = await asyncio.gather(*(b.submit({"x": x}) for x in inputs[1:]))
        assert [r.tolist() for r in [await first, *later]] == [[[i * 10.0]] for i in range(9)]
        assert model.calls == [1, 8]

    run(main())


def test_multi_row_requests_count_their_rows_and_are_never_split() -> None:
    async def main() -> None:
        model = Model(seconds=0.02)
        b = batcher(model, max_size=4)
        first = asyncio.ensure_future(b.submit({"x": np.ones((1, 1))}))
        await asyncio.sleep(0)  # the first is running; the rest queue
        rest = [b.submit({"x": np.full((n, 1), float(n))}) for n in (3, 2, 2, 6)]
        results = await asyncio.gather(first, *rest)
        assert [len(r) for r in results] == [1, 3, 2, 2, 6]
        assert results[4].tolist() == [[60.0]] * 6
        # 3 fits alone (3+2 > 4); 2+2 together; 6 is over max_size, so it runs alone
        assert model.calls == [1, 3, 4, 6]

    run(main())


def test_requests_that_cannot_be_joined_go_in_separate_batches() -> None:
    async def main() -> None:
        model = Model(seconds=0.02)
        b = batcher(model)
        first = asyncio.ensure_future(b.submit({"x": np.ones((1, 2))}))
        await asyncio.sleep(0)
        wide = b.submit({"x": np.ones((1, 3))})
        narrow = [b.submit({"x": np.ones((1, 2))}) for _ in range(3)]
        ints = b.submit({"x": np.ones((1, 2), dtype=np.int64)})
        results = await asyncio.gather(first, wide, *narrow, ints)
        assert results[1].shape == (1, 3)
        assert results[-1].dtype == np.int64
        assert model.calls == [1, 1, 3, 1]

    run(main())


def test_a_failing_call_fails_exactly_its_batch() -> None:
    async def main() -> None:
        model = Model(seconds=0.02, fail_on=13)
        b = batcher(model, max_size=2)
        first = asyncio.ensure_future(b.submit({"x": np.array([[1.0]])}))
        await asyncio.sleep(0)
        queued = [b.submit({"x": np.array([[v]])}) for v in (13.0, 2.0, 3.0, 4.0)]
        results: list[Any] = await asyncio.gather(first, *queued, return_exceptions=True)
        assert results[0].tolist() == [[10.0]]
        assert isinstance(results[1], RuntimeError)
        assert isinstance(results[2], RuntimeError)  # shared the batch with 13
        assert [r.tolist() for r in results[3:]] == [[[30.0]], [[40.0]]]
        assert model.calls == [1, 2, 2]

    run(main())


def test_an_output_of_the_wrong_length_fails_the_batch_with_a_reason() -> None:
    async def short(kwargs: dict[str, Any]) -> Any:
        return np.asarray(kwargs["x"])[:1]

    async def main() -> None:
        b = Batcher("predict", ("x",), max_size=8, max_latency_ms=1000, dim=0, call=short)
        with pytest.raises(ValueError, match=r"^returned 1 rows for 3 input rows$"):
            await b.submit({"x": np.ones((3, 2))})

    run(main())


def test_parameters_must_agree_on_rows() -> None:
    async def main() -> None:
        async def echo(kwargs: dict[str, Any]) -> Any:
            return kwargs["a"]

        b = Batcher("pair", ("a", "b"), max_size=8, max_latency_ms=1000, dim=0, call=echo)
        with pytest.raises(ValidationFailed) as caught:
            await b.submit({"a": np.ones((2, 1)), "b": np.ones((3, 1))})
        assert caught.value.message == (
            "Invalid request to API 'pair': its batched parameters must have the same number "
            "of rows along dim 0, but 'a' has 2, 'b' has 3."
        )
        with pytest.raises(ValidationFailed, match="holds no rows"):
            await b.submit({"a": np.ones((0, 1)), "b": np.ones((0, 1))})
        with pytest.raises(ValidationFailed, match="cannot be batched"):
            await b.submit({"a": 3, "b": np.ones((1, 1))})

    run(main())


def test_requests_that_cannot_start_in_time_are_refused_early_and_counted() -> None:
    async def main() -> None:
        registry = CollectorRegistry()
        metrics = BatchMetrics(registry)
        model = Model(seconds=0.05)
        b = batcher(model, max_size=2, max_latency_ms=80, metrics=metrics)
        await b.submit({"x": np.ones((2, 1))})  # teaches the latency model: ~50 ms a batch
        tasks = [asyncio.ensure_future(b.submit({"x": np.ones((1, 1))})) for _ in range(10)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        refused = [r for r in results if isinstance(r, ServiceUnavailable)]
        served = [r for r in results if not isinstance(r, BaseException)]
        # batches of two start at +0 and +50 ms, within 80 ms; a third at +100 ms would not
        assert len(served) == 4
        assert len(refused) == 6
        assert refused[0].message.startswith(
            "API 'predict' cannot start this request within its max_latency_ms of 80 ms"
        )
        assert refused[0].detail["retry_after"] == 1
        labels = {"api": "predict"}
        assert registry.get_sample_value("tiffin_batch_refused_total", labels) == 6
        assert registry.get_sample_value("tiffin_batch_size_count", labels) == 3
        assert registry.get_sample_value("tiffin_batch_size_sum", labels) == 6
        waits = registry.get_sample_value("tiffin_batch_queue_wait_seconds_count", labels)
        assert waits == 5
        total_wait = registry.get_sample_value("tiffin_batch_queue_wait_seconds_sum", labels)
        assert total_wait is not None
        assert total_wait < 0.2  # nobody admitted waited past the promise

    run(main())


def test_a_caller_that_gave_up_is_left_out() -> None:
    async def main() -> None:
        model = Model(seconds=0.02)
        b = batcher(model)
        first = asyncio.ensure_future(b.submit({"x": np.ones((1, 1))}))
        await asyncio.sleep(0)
        gone = asyncio.ensure_future(b.submit({"x": np.ones((1, 1))}))
        kept = asyncio.ensure_future(b.submit({"x": np.ones((1, 1))}))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(first, kept)
        assert model.calls == [1, 1]

    run(main())


def test_lists_frames_and_tensors_are_joined_and_split() -> None:
    assert concat([[1, 2], [3]], 0) == [1, 2, 3]
    assert split([10, 20, 30], [2, 1], 0) == [[10, 20], [30]]
    frames = [pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"a": [3]})]
    joined = concat(frames, 0)
    assert joined["a"].tolist() == [1, 2, 3]
    parts = split(joined, [2, 1], 0)
    assert [p["a"].tolist() for p in parts] == [[1, 2], [3]]
    assert parts[1].index.tolist() == [0]
    tensors = [torch.ones(2, 3), torch.zeros(1, 3)]
    whole = concat(tensors, 0)
    assert whole.shape == (3, 3)
    assert [tuple(t.shape) for t in split(whole, [2, 1], 0)] == [(2, 3), (1, 3)]
    columns = concat([np.ones((2, 1)), np.zeros((2, 2))], 1)
    assert [p.shape for p in split(columns, [1, 2], 1)] == [(2, 1), (2, 2)]


def test_the_latency_model_fits_time_against_size() -> None:
    model = LatencyModel()
    assert model.predict(10) == 0.0
    for rows in (1, 4, 8, 16, 32, 1, 64):
        model.add(rows, 0.005 + 0.001 * rows)
    assert model.predict(64) == pytest.approx(0.069, rel=1e-6)
    assert model.predict(1) == pytest.approx(0.006, rel=1e-6)
    flat = LatencyModel()
    for _ in range(3):
        flat.add(8, 0.01)
    assert flat.predict(64) == pytest.approx(0.01)


def test_waves_of_closed_loop_clients_are_not_split_into_tiny_batches() -> None:
    """16 clients that each send their next request as soon as they have an answer: after
    the first wave, each wave is one call, not a one-row call then the rest."""

    async def main() -> None:
        model = Model(seconds=0.005)
        b = batcher(model, max_size=16, max_latency_ms=100)

        async def client(i: int) -> None:
            for _ in range(5):
                await asyncio.sleep(
                    0.0005 * (i % 3)
                )  # answers are read at slightly different times
                await b.submit({"x": np.ones((1, 1))})

        await asyncio.gather(*(client(i) for i in range(16)))
        assert sum(model.calls) == 80
        # without holding, waves alternate 1 and 15 rows: about ten calls
        assert len(model.calls) <= 7, model.calls

    run(main())
