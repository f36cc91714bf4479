"""``tiffin.metrics``: the service's own metrics, checked when defined, shown on
``/metrics`` of an app served in one process (no metrics directory) beside tiffin's
own, model load times and the process's CPU and memory."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

import tiffin
from tests.observability.test_metrics_served import Samples, series, value
from tests.server.asgi import serving
from tiffin import metrics
from tiffin.exceptions import InvalidArgument
from tiffin.models import ModelStore
from tiffin.observability.metrics import ServerMetrics

checked = metrics.counter("user_checked", "Rows checked, by outcome.", labels=["outcome"])


@tiffin.service(name="checker")
class Checker:
    model = tiffin.models.ref("checker_limit:latest")
    seen = metrics.histogram("user_seen", "Values seen.", buckets=(1.0, 5.0))
    level = metrics.gauge("user_level", "The last level given.", combine="latest")

    def __init__(self) -> None:
        self.limit = self.model.load()

    @tiffin.api
    def check(self, x: float) -> bool:
        self.seen.observe(x)
        self.level.set(x)
        ok: bool = x <= self.limit
        checked.labels("ok" if ok else "over").inc()
        return ok


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_an_app_in_one_process_shows_the_service_metrics_and_model_loads(home: Path) -> None:
    version = ModelStore(home).save("checker_limit", 3.0, framework="pickle").info.version

    async def main() -> Samples:
        async with serving(Checker) as (client, _):
            for x in (0.5, 2.0, 3.0, 4.0, 9.0):
                assert (await client.post("/check", json={"x": x})).status_code == 200
            return parse((await client.get("/metrics")).text)

    before = parse(ServerMetrics([]).render()[0].decode())  # what other tests left
    after = asyncio.run(main())

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("user_checked_total", outcome="ok") == 3
    assert grew("user_checked_total", outcome="over") == 2
    assert grew("user_seen_bucket", le="1.0") == 1
    assert grew("user_seen_bucket", le="5.0") == 4
    assert grew("user_seen_count") == 5
    assert grew("user_seen_sum") == 18.5
    assert value(after, "user_level") == 9.0
    assert grew("tiffin_model_load_seconds_count", model="checker_limit", version=version) == 1
    assert value(after, "tiffin_model_load_seconds_sum", model="checker_limit", version=version)
    assert value(after, "tiffin_requests_total", api="check", status="200") == 5
    # served in one process: that process alone, as a worker
    own = frozenset({("process", "worker"), ("pid", str(os.getpid()))})
    assert set(series(after, "tiffin_process_resident_memory_bytes")) == {own}
    assert value(after, "tiffin_process_resident_memory_bytes", **dict(own)) > 0
    assert value(after, "tiffin_process_cpu_seconds_total", **dict(own)) > 0
    assert set(series(after, "tiffin_process_start_time_seconds")) == {own}


def test_each_kind_is_a_prometheus_metric() -> None:
    assert isinstance(metrics.counter("user_kind_c", "C."), Counter)
    assert isinstance(metrics.gauge("user_kind_g", "G."), Gauge)
    assert isinstance(metrics.histogram("user_kind_h", "H."), Histogram)
    assert tiffin.metrics is metrics  # a submodule of the package


def test_the_same_definition_again_is_the_same_metric() -> None:
    first = metrics.counter("user_again_total", "Again.", labels=["a"])
    assert metrics.counter("user_again", "Again.", labels=("a",)) is first
    gauge = metrics.gauge("user_again_gauge", "G.", combine="max")
    assert metrics.gauge("user_again_gauge", "G.", combine="max") is gauge
    histogram = metrics.histogram("user_again_hist", "H.", buckets=[1, 2])
    assert metrics.histogram("user_again_hist", "H.", buckets=(1.0, 2.0)) is histogram


def test_a_gauge_combines_workers_as_asked() -> None:
    modes = {
        combine: metrics.gauge(f"user_combine_{combine}", "G.", combine=combine)._multiprocess_mode
        for combine in ("sum", "max", "min", "latest", "each")
    }
    assert modes == {
        "sum": "livesum",
        "max": "livemax",
        "min": "livemin",
        "latest": "livemostrecent",
        "each": "liveall",
    }


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (
            lambda: metrics.counter("2fast", "Fast."),
            "'2fast' is not a valid metric name. Use letters, digits, '_' and ':', not "
            "starting with a digit (e.g. 'iris_predictions').",
        ),
        (
            lambda: metrics.gauge("user-level", "Level."),
            "'user-level' is not a valid metric name. Use letters, digits, '_' and ':', not "
            "starting with a digit (e.g. 'iris_predictions').",
        ),
        (
            lambda: metrics.counter("tiffin_requests", "Mine."),
            "Metric 'tiffin_requests': names starting with 'tiffin_' are tiffin's own metrics. "
            "Name yours after your service (e.g. 'iris_predictions').",
        ),
        (
            lambda: metrics.counter("user_undocumented", " "),
            "Metric 'user_undocumented' has no description. Say in a sentence what it counts; "
            "it is its # HELP line.",
        ),
        (
            lambda: metrics.counter("user_labels", "L.", labels="outcome"),
            "Metric 'user_labels': labels='outcome' is one string. Give a list of label names, "
            "e.g. labels=['outcome'].",
        ),
        (
            lambda: metrics.counter("user_labels", "L.", labels=["bad-label"]),
            "Metric 'user_labels': 'bad-label' is not a valid label name. Use letters, digits "
            "and '_', not starting with a digit or '__'.",
        ),
        (
            lambda: metrics.counter("user_labels", "L.", labels=["__reserved"]),
            "Metric 'user_labels': '__reserved' is not a valid label name. Use letters, digits "
            "and '_', not starting with a digit or '__'.",
        ),
        (
            lambda: metrics.counter("user_labels", "L.", labels=["a", "a"]),
            "Metric 'user_labels' names a label twice: a, a. Give each once.",
        ),
        (
            lambda: metrics.gauge("user_pid", "P.", labels=["pid"]),
            "Metric 'user_pid': a gauge cannot have a label named 'pid'; tiffin or Prometheus "
            "gives its series that label. Pick another name.",
        ),
        (
            lambda: metrics.histogram("user_le", "L.", labels=["le"]),
            "Metric 'user_le': a histogram cannot have a label named 'le'; tiffin or "
            "Prometheus gives its series that label. Pick another name.",
        ),
        (
            lambda: metrics.histogram("user_buckets", "B.", buckets=(5, 1)),
            "Histogram 'user_buckets': buckets=(5, 1) are not numbers in increasing order. "
            "Give the buckets' upper bounds from smallest to largest.",
        ),
        (
            lambda: metrics.histogram("user_buckets", "B.", buckets=()),
            "Histogram 'user_buckets': buckets=() are not numbers in increasing order. Give "
            "the buckets' upper bounds from smallest to largest.",
        ),
        (
            lambda: metrics.gauge("user_mean", "M.", combine="mean"),  # type: ignore[arg-type]
            "Gauge 'user_mean': combine='mean' is not one of 'sum', 'max', 'min', 'latest', "
            "'each'. Pick how the workers' values combine.",
        ),
    ],
)
def test_bad_definitions_are_refused_saying_what_to_do(
    define: Callable[[], object], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        define()
    assert caught.value.message == message


def test_a_name_in_use_is_refused_unless_defined_the_same_way() -> None:
    metrics.counter("user_taken", "Taken.", labels=["a"])
    with pytest.raises(InvalidArgument) as caught:
        metrics.gauge("user_taken", "Taken.")
    assert caught.value.message == (
        "Metric 'user_taken' is defined already, as a counter ('Taken.') with labels (a); this "
        "definition is a gauge ('Taken.') with labels (), combine='sum'. Give this metric "
        "another name, or define it the same way."
    )
    with pytest.raises(InvalidArgument) as caught:
        metrics.counter("user_taken_total", "Taken.", labels=["b"])
    assert caught.value.message == (
        "Metric 'user_taken' is defined already, as a counter ('Taken.') with labels (a); this "
        "definition is a counter ('Taken.') with labels (b). Give this metric another name, or "
        "define it the same way."
    )
    # a counter shows <name>_created beside <name>_total: a gauge of that name would clash
    with pytest.raises(InvalidArgument) as caught:
        metrics.gauge("user_taken_created", "Created.")
    assert caught.value.message == (
        "Metric 'user_taken_created' would show series named user_taken_created, which "
        "another metric shows already. Give it another name."
    )
