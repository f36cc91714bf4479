"""``tiffin.observability.history``: snapshots of the server's real metrics, the points
between them, and the measures alert rules ask for over a window."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from prometheus_client import Gauge, Histogram

from tiffin.batching import BatchMetrics
from tiffin.observability.history import FIELDS, Buckets, History, Snapshot
from tiffin.observability.metrics import LATENCY_BUCKETS, ServerMetrics


def history(apis: tuple[str, ...] = ("predict", "other")) -> tuple[History, ServerMetrics]:
    metrics = ServerMetrics(list(apis))
    return History(metrics, apis, interval=5.0), metrics


def at(found: History, time: float) -> Snapshot:
    """A snapshot of the metrics now, dated ``time``."""
    return dataclasses.replace(found.read(), time=time)


def answer(metrics: ServerMetrics, api: str, status: int, seconds: float, times: int = 1) -> None:
    for _ in range(times):
        metrics.started(api)
        metrics.finished(api, status, seconds)


# -- quantiles ---------------------------------------------------------------------------


def test_quantiles_interpolate_inside_a_bucket_as_prometheus_does() -> None:
    # 10 at or below 0.1, 20 more up to 0.5, 10 more up to 1: histogram_quantile gives
    # p50 = 0.1 + (0.5 - 0.1) * (20 - 10) / 20 = 0.3, p90 = 0.5 + 0.5 * (36 - 30) / 10 = 0.8
    buckets = Buckets((0.1, 0.5, 1.0, float("inf")), (10.0, 30.0, 40.0, 40.0), 20.0)
    assert buckets.quantile(0.5) == pytest.approx(0.3)
    assert buckets.quantile(0.9) == pytest.approx(0.8)
    assert buckets.quantile(0.25) == pytest.approx(0.1)  # the rank ends bucket one exactly
    assert buckets.quantile(0.1) == pytest.approx(0.04)  # the first bucket starts at 0
    assert buckets.mean() == 0.5


def test_a_quantile_in_the_unbounded_bucket_is_its_lower_bound() -> None:
    buckets = Buckets((0.1, 1.0, float("inf")), (1.0, 2.0, 10.0))
    assert buckets.quantile(0.99) == 1.0


def test_no_observations_no_quantile() -> None:
    empty = Buckets((0.1, float("inf")), (0.0, 0.0))
    assert empty.quantile(0.5) is None
    assert empty.mean() is None


def test_what_was_observed_since_an_earlier_reading() -> None:
    old = Buckets((0.1, float("inf")), (4.0, 5.0), 1.0)
    new = Buckets((0.1, float("inf")), (6.0, 9.0), 3.5)
    assert new.since(old) == Buckets((0.1, float("inf")), (2.0, 4.0), 2.5)
    assert new.since(None) == new
    assert old.since(new) == old  # counted less than before: a reset, so all of it


# -- snapshots and points ----------------------------------------------------------------


def test_a_snapshot_reads_requests_latency_and_in_flight_of_each_api() -> None:
    found, metrics = history()
    answer(metrics, "predict", 200, 0.003, times=3)
    answer(metrics, "predict", 422, 0.001)
    answer(metrics, "predict", 500, 0.2, times=2)
    metrics.started("other")  # still in flight
    snapshot = found.read()
    assert set(snapshot.apis) == {"predict", "other"}
    predict = snapshot.apis["predict"]
    assert (predict.requests, predict.client_errors, predict.errors) == (6, 1, 2)
    assert predict.latency.bounds == (*LATENCY_BUCKETS, float("inf"))
    assert predict.latency.count == 6
    assert predict.latency.sum == pytest.approx(0.2 * 2 + 0.009 + 0.001)
    assert predict.in_flight == 0
    assert predict.batch is None
    other = snapshot.apis["other"]
    assert (other.requests, other.in_flight) == (0, 1)
    assert snapshot.drift == {}


def test_points_are_what_happened_between_two_snapshots() -> None:
    found, metrics = history()
    answer(metrics, "predict", 200, 0.003, times=10)
    found.add(at(found, 1000.0))
    assert list(found.points) == []  # one snapshot makes no point
    answer(metrics, "predict", 200, 0.003, times=40)
    answer(metrics, "predict", 503, 0.0004, times=5)
    answer(metrics, "predict", 404, 0.0004, times=5)
    answer(metrics, "other", 200, 0.7, times=10)
    found.add(at(found, 1005.0))
    ((t, apis, drift),) = found.points
    assert t == 1005.0
    assert drift == {}
    predict = dict(zip(FIELDS, apis["predict"], strict=True))
    # 50 answers in 5 s; 5 with 5xx, 5 with 4xx; latency 40 in (0.0025, 0.005], 10 in (0, 0.0005]
    assert predict["rate"] == 10.0
    assert predict["errors"] == 1.0
    assert predict["client_errors"] == 1.0
    assert predict["p50"] == pytest.approx(0.0025 + 0.0025 * (25 - 10) / 40, rel=1e-3)
    assert predict["p99"] == pytest.approx(0.0025 + 0.0025 * (49.5 - 10) / 40, rel=1e-3)
    assert predict["in_flight"] == 0
    assert predict["batch_mean"] is None
    total = dict(zip(FIELDS, apis[""], strict=True))
    assert total["rate"] == 12.0
    assert total["errors"] == 1.0
    # 60 answers: 10 fast, 40 at 3 ms, 10 at 0.7 s; p90 is in (0.5, 1]: 0.5 + 0.5 * (54 - 50) / 10
    assert total["p90"] == pytest.approx(0.7)


def test_batch_sizes_of_batched_apis() -> None:
    found, metrics = history(("double",))
    sizes = _batch_sizes(metrics)
    found.add(at(found, 10.0))
    for rows in (1, 3, 8, 8):
        sizes.labels("double").observe(rows)
    found.add(at(found, 15.0))
    ((_, apis, _),) = found.points
    point = dict(zip(FIELDS, apis["double"], strict=True))
    assert point["batch_mean"] == 5.0
    assert point["batch_p50"] == 4.0  # rank 2 of 4 ends the bucket (2, 4]
    assert point["batch_p99"] == pytest.approx(4 + 4 * (3.96 - 2) / 2)
    assert found.data()["batched"] == ["double"]


def _batch_sizes(metrics: ServerMetrics) -> Histogram:
    batch = BatchMetrics(metrics.registry)
    batch.size.labels("double")
    return batch.size


def test_drift_scores_are_read_by_monitor_and_feature() -> None:
    found, metrics = history()
    gauge = Gauge("tiffin_drift_score", "Drift.", ["monitor", "feature"], registry=metrics.registry)
    assert found.read().drift == {}  # no score yet: nothing to show, nothing fails
    gauge.labels("iris", "petal_width").set(0.31)
    gauge.labels("iris", "sepal_length").set(0.02)
    assert found.read().drift == {("iris", "petal_width"): 0.31, ("iris", "sepal_length"): 0.02}


def test_a_counter_that_went_down_counts_from_zero() -> None:
    found, metrics = history()
    answer(metrics, "predict", 200, 0.001, times=8)
    found.add(at(found, 100.0))
    reset = ServerMetrics(["predict", "other"])  # a restarted process's counters
    answer(reset, "predict", 200, 0.001, times=3)
    found.metrics = reset
    found.add(at(found, 105.0))
    ((_, apis, _),) = found.points
    assert apis["predict"][0] == pytest.approx(3 / 5)


# -- the dashboard's data ----------------------------------------------------------------


def test_data_is_column_by_column_and_since_leaves_older_points_out() -> None:
    found, metrics = history()
    gauge = Gauge("tiffin_drift_score", "Drift.", ["monitor", "feature"], registry=metrics.registry)
    found.add(at(found, 100.0))
    answer(metrics, "predict", 200, 0.003, times=5)
    found.add(at(found, 105.0))
    gauge.labels("iris", "petal_width").set(0.25)
    answer(metrics, "predict", 500, 0.003, times=5)
    found.add(at(found, 110.0))
    data = found.data()
    json.dumps(data, allow_nan=False)  # plain JSON
    assert data["interval"] == 5.0
    assert data["span"] == 3600.0
    assert data["fields"] == list(FIELDS)
    assert data["t"] == [105.0, 110.0]
    assert set(data["apis"]) == {"predict", "other"}
    assert data["apis"]["predict"]["rate"] == [1.0, 1.0]
    assert data["apis"]["predict"]["errors"] == [0.0, 1.0]
    assert data["apis"]["other"]["rate"] == [0.0, 0.0]
    assert data["apis"]["other"]["p99"] == [None, None]
    assert data["total"]["rate"] == [1.0, 1.0]
    assert data["batched"] == []
    assert data["drift"] == [{"monitor": "iris", "feature": "petal_width", "values": [None, 0.25]}]
    later = found.data(since=105.0)
    assert later["t"] == [110.0]
    assert later["apis"]["predict"]["errors"] == [1.0]
    assert found.data(since=110.0)["t"] == []


def test_the_ring_buffer_keeps_an_hour() -> None:
    found, _ = history()
    for step in range(800):
        found.add(at(found, 5.0 * step))
    assert len(found.snapshots) == 721
    assert found.snapshots[0].time == 5.0 * (800 - 721)
    assert found.data()["t"][0] == 5.0 * (800 - 720)


# -- measures over a window --------------------------------------------------------------


def test_error_rate_over_a_window() -> None:
    found, metrics = history()
    assert found.error_rate(60) is None  # no history yet
    found.add(at(found, 0.0))
    answer(metrics, "predict", 500, 0.001, times=4)
    found.add(at(found, 30.0))
    answer(metrics, "predict", 200, 0.001, times=4)
    answer(metrics, "other", 200, 0.001, times=2)
    found.add(at(found, 60.0))
    assert found.error_rate(60, "predict") == 0.5
    assert found.error_rate(60) == pytest.approx(4 / 10)
    assert found.error_rate(30, "predict") == 0.0  # the errors were before the window
    assert found.error_rate(30, "other") == 0.0
    assert found.error_rate(600, "predict") == 0.5  # longer than the history: all of it
    found.add(at(found, 90.0))
    assert found.error_rate(30, "predict") is None  # no requests in the window


def test_a_sample_a_little_late_still_bounds_the_window() -> None:
    found, metrics = history()
    found.add(at(found, 0.0))
    answer(metrics, "predict", 500, 0.001)
    found.add(at(found, 5.2))  # samples come a little late
    answer(metrics, "predict", 200, 0.001)
    found.add(at(found, 10.3))
    assert found.error_rate(5, "predict") == 0.0  # the window is the last step, not two


def test_quantile_over_a_window() -> None:
    found, metrics = history()
    found.add(at(found, 0.0))
    answer(metrics, "predict", 200, 0.7, times=10)
    found.add(at(found, 5.0))
    answer(metrics, "predict", 200, 0.003, times=10)
    found.add(at(found, 10.0))
    assert found.quantile(0.99, 5, "predict") == pytest.approx(0.0025 + 0.0025 * 9.9 / 10)
    assert found.quantile(0.99, 10, "predict") == pytest.approx(0.5 + 0.5 * 9.8 / 10)
    assert found.quantile(0.99, 10, "other") is None


def test_drift_over_a_window_is_the_highest_mean() -> None:
    found, metrics = history()
    gauge = Gauge("tiffin_drift_score", "Drift.", ["monitor", "feature"], registry=metrics.registry)
    assert found.drift(60) is None
    for time, (width, length) in enumerate(((0.1, 0.3), (0.5, 0.3), (0.6, 0.3))):
        gauge.labels("iris", "petal_width").set(width)
        gauge.labels("iris", "sepal_length").set(length)
        found.add(at(found, 10.0 * time))

    def worst(seconds: float, **only: str) -> tuple[float, str, str]:
        measured = found.drift(seconds, **only)
        assert measured is not None
        return round(measured[0], 9), measured[1], measured[2]

    assert worst(10) == (0.6, "iris", "petal_width")  # the last sample
    assert worst(20) == (0.55, "iris", "petal_width")
    assert worst(30) == (0.4, "iris", "petal_width")
    assert worst(30, feature="sepal_length") == (0.3, "iris", "sepal_length")
    assert found.drift(30, monitor="other") is None


# -- sampling ----------------------------------------------------------------------------


def test_the_sampler_runs_beside_the_loop_and_tells_its_listeners() -> None:
    async def main() -> None:
        metrics = ServerMetrics(["predict"])
        found = History(metrics, ["predict"], interval=1.0)
        heard: list[int] = []
        found.subscribe(lambda: heard.append(len(found.snapshots)))
        await found.start()
        answer(metrics, "predict", 200, 0.001, times=3)
        await asyncio.sleep(1.2)
        await found.stop()
        assert heard == [1, 2]
        assert found.snapshots[-1].apis["predict"].requests == 3
        assert found.snapshots[-1].time - found.snapshots[0].time == pytest.approx(1.0, abs=0.1)

    asyncio.run(main())
