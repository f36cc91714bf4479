"""``ServerMetrics``: requests recorded as plain numbers, passed on to the Prometheus
metrics by ``flush`` exactly as recording each one there would have."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tiffin.observability.metrics import FLUSH_S, LATENCY_BUCKETS, ServerMetrics

# on, just under and just over bucket bounds, past the last one, and zero
SECONDS = (0.0, 0.0005, 0.00050001, 0.001, 0.07, 0.1, 2.4999, 2.5, 59.9, 60.0, 61.0, 3600.0)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def test_a_flush_gives_what_recording_each_request_in_prometheus_gives() -> None:
    metrics = ServerMetrics(["predict", "other"])
    # the same metrics, recorded one request at a time by prometheus_client itself
    reference = CollectorRegistry()
    requests = Counter("tiffin_requests", "", ["api", "status"], registry=reference)
    latency = Histogram(
        "tiffin_request_duration_seconds", "", ["api"], buckets=LATENCY_BUCKETS, registry=reference
    )
    in_flight = Gauge("tiffin_requests_in_flight", "", ["api"], registry=reference)
    for api in ("predict", "other"):
        latency.labels(api)
        in_flight.labels(api)

    async def main() -> None:
        for index, seconds in enumerate(SECONDS):
            status = (200, 422, 500)[index % 3]
            metrics.started("predict")
            metrics.finished("predict", status, seconds)
            requests.labels("predict", str(status)).inc()
            latency.labels("predict").observe(seconds)
        metrics.started("other")  # still in flight
        in_flight.labels("other").inc()
        metrics.count("predict", 401)  # answered before it reached the API
        requests.labels("predict", "401").inc()
        metrics.flush()

    asyncio.run(main())
    assert samples(metrics.registry) == samples(reference)


def test_requests_reach_the_registry_at_a_flush_or_flush_s_later() -> None:
    metrics = ServerMetrics(["predict"])

    def answered() -> float:
        found = samples(metrics.registry)
        return found.get(("tiffin_requests_total", (("api", "predict"), ("status", "200"))), 0.0)

    async def main() -> None:
        metrics.started("predict")
        metrics.finished("predict", 200, 0.01)
        assert answered() == 0  # not yet passed on
        await asyncio.sleep(FLUSH_S + 0.2)
        assert answered() == 1  # by the timer the first request set
        metrics.started("predict")
        metrics.finished("predict", 200, 0.01)
        body, _ = metrics.render()  # /metrics passes on everything first
        assert b'tiffin_requests_total{api="predict",status="200"} 2.0' in body
        assert answered() == 2
        await asyncio.sleep(FLUSH_S + 0.2)
        assert answered() == 2  # nothing counted twice

    asyncio.run(main())


def test_outside_an_event_loop_each_request_is_passed_on_at_once() -> None:
    metrics = ServerMetrics(["predict"])
    metrics.started("predict")
    found = samples(metrics.registry)
    assert found[("tiffin_requests_in_flight", (("api", "predict"),))] == 1
    metrics.finished("predict", 200, 0.003)
    found = samples(metrics.registry)
    assert found[("tiffin_requests_total", (("api", "predict"), ("status", "200")))] == 1
    assert (
        found[("tiffin_request_duration_seconds_bucket", (("api", "predict"), ("le", "0.005")))]
        == 1
    )
    assert found[("tiffin_requests_in_flight", (("api", "predict"),))] == 0
