"""Every metric of a real ``tiffin serve`` with two workers: each value is the exact sum
over both workers, whichever answers ``/metrics``, and a worker that is replaced is
neither lost from the totals nor counted twice."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import metrics_passed_on, wait_until
from tests.server.conftest import Server, start_server
from tiffin.models import ModelStore

SERVICE = """
import asyncio
import os
import time
from pathlib import Path

import tiffin
import tiffin.metrics

# defined while the module is imported: in the supervisor, before workers are forked
works = tiffin.metrics.counter("probe_works", "Calls of work, by parity.", labels=["parity"])
values = tiffin.metrics.histogram("probe_values", "Values given to work.", buckets=(1, 10, 100))
version = tiffin.metrics.gauge("probe_version", "The version served.", combine="max")
version.set(7)
imports = tiffin.metrics.counter("probe_imports", "Imports of this module.")
imports.inc()


@tiffin.service(name="metered", workers=2)
class Metered:
    model = tiffin.models.ref("factor:latest")
    pids = tiffin.metrics.gauge("probe_pid", "The worker's pid.", combine="each")
    holding = tiffin.metrics.gauge("probe_holding", "Calls of hold waiting.")

    def __init__(self) -> None:
        self.factor = self.model.load()
        self.pids.set(os.getpid())

    @tiffin.api
    async def work(self, x: float) -> int:
        time.sleep(0.05)  # holds this worker's loop, so the other takes new connections
        works.labels("even" if int(x) % 2 == 0 else "odd").inc()
        values.observe(x)
        return os.getpid()

    @tiffin.api
    def pid(self) -> int:
        return os.getpid()

    @tiffin.api
    async def busy_pid(self) -> int:
        time.sleep(0.05)
        return os.getpid()

    @tiffin.api
    def times(self, x: float) -> float:
        return x * self.factor

    @tiffin.api
    async def hold(self) -> int:
        self.holding.inc()
        try:
            while not Path("release").exists():
                await asyncio.sleep(0.01)
        finally:
            self.holding.dec()
        return os.getpid()

    @tiffin.api(batch=tiffin.Batch(max_size=8, max_latency_ms=1000))
    def double(self, rows: list[float]) -> list[float]:
        with open("calls.txt", "a") as calls:
            calls.write(f"{len(rows)}\\n")
        time.sleep(0.01)
        return [2 * r for r in rows]

    @tiffin.api(batch=tiffin.Batch(max_size=8, max_latency_ms=1))
    def crawl(self, rows: list[float]) -> list[int]:
        time.sleep(0.5)
        return [os.getpid()] * len(rows)

    @tiffin.api
    def crash(self) -> None:
        os._exit(1)
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Every sample on ``/metrics``, by name and labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (found, labels), v in samples.items() if found == name}


def post(url: str, api: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/{api}", json=body, timeout=30)  # a new connection each time


def answering(url: str) -> set[int]:
    """The pids of the workers that answer eight calls at once, on new connections."""
    with ThreadPoolExecutor(8) as pool:
        return set(pool.map(lambda _: post(url, "busy_pid").json(), range(8)))


def worker_pids(url: str, count: int = 2) -> set[int]:
    """The pids of ``count`` workers, asked on new connections until each has answered."""
    seen: set[int] = set()
    for _ in range(20):
        seen |= answering(url)
        if len(seen) >= count:
            break
    assert len(seen) == count, seen
    return seen


def start(directory: Path, *args: str, start_method: str = "fork") -> Server:
    directory.mkdir(exist_ok=True)
    (directory / "metered.py").write_text(SERVICE, encoding="utf-8")
    (directory / "tiffin.yaml").write_text(f"settings:\n  start_method: {start_method}\n")
    home = directory / "home"
    ModelStore(home).save("factor", 3.0, framework="pickle")
    return start_server(directory, "metered:Metered", "--log-format", "json", *args, home=home)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server of the metered service with two workers, shared by the module's tests
    (each uses APIs of its own, so they do not disturb each other's counts)."""
    server = start(tmp_path_factory.mktemp("metered"))
    yield server
    server.stop()


def test_requests_latency_and_statuses_are_summed_over_both_workers(metered: Server) -> None:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: post(metered.url, "times", x=i), range(30)))
    assert [r.json() for r in responses] == [3.0 * i for i in range(30)]
    bad = [post(metered.url, "times", x="not a number") for _ in range(4)]
    assert {r.status_code for r in bad} == {422}
    wrong = [httpx.get(f"{metered.url}/times", timeout=10) for _ in range(2)]
    assert {r.status_code for r in wrong} == {405}
    for _ in range(6):
        assert post(metered.url, "pid").status_code == 200
    metrics_passed_on()
    for _ in range(6):  # on new connections: whichever worker answers reports the sum
        samples = scrape(metered.url)
        assert value(samples, "tiffin_requests_total", api="times", status="200") == 30
        assert value(samples, "tiffin_requests_total", api="times", status="422") == 4
        assert value(samples, "tiffin_requests_total", api="times", status="405") == 0
        assert value(samples, "tiffin_request_duration_seconds_count", api="times") == 34
        assert value(samples, "tiffin_request_duration_seconds_sum", api="times") > 0
        assert value(samples, "tiffin_requests_total", api="pid", status="200") == 6
        assert value(samples, "tiffin_requests_in_flight", api="times") == 0


def test_requests_in_flight_count_every_worker_and_return_to_zero(metered: Server) -> None:
    release = metered.stdout.with_name("release")
    release.unlink(missing_ok=True)
    with ThreadPoolExecutor(3) as pool:
        holds = [pool.submit(post, metered.url, "hold") for _ in range(3)]
        try:

            def holding() -> bool:
                samples = scrape(metered.url)
                return value(samples, "tiffin_requests_in_flight", api="hold") == 3

            wait_until(holding)
            samples = scrape(metered.url)
            assert value(samples, "probe_holding") == 3  # a gauge of the service's own
        finally:
            release.touch()
        assert {future.result().status_code for future in holds} == {200}
    metrics_passed_on()
    samples = scrape(metered.url)
    assert value(samples, "tiffin_requests_in_flight", api="hold") == 0
    assert value(samples, "probe_holding") == 0
    assert value(samples, "tiffin_requests_total", api="hold", status="200") == 3


def test_batch_sizes_waits_and_calls_are_summed_over_both_workers(metered: Server) -> None:
    calls = metered.stdout.with_name("calls.txt")
    rows = [[float(i)] * (1 + i % 3) for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: post(metered.url, "double", rows=r), rows))
    assert [a.json() for a in answers] == [[2 * v for v in r] for r in rows]
    sizes = [int(line) for line in calls.read_text().split()]
    assert sum(sizes) == sum(len(r) for r in rows)
    metrics_passed_on()
    samples = scrape(metered.url)
    assert value(samples, "tiffin_batch_size_count", api="double") == len(sizes)
    assert value(samples, "tiffin_batch_size_sum", api="double") == sum(sizes)
    for bound in (1, 2, 4, 8):
        at_most = sum(1 for size in sizes if size <= bound)
        assert value(samples, "tiffin_batch_size_bucket", api="double", le=f"{bound}.0") == at_most
    assert value(samples, "tiffin_batch_queue_wait_seconds_count", api="double") == 40
    assert value(samples, "tiffin_batch_execution_seconds_count", api="double") == len(sizes)
    assert value(samples, "tiffin_batch_execution_seconds_sum", api="double") >= 0.01 * len(sizes)
    assert value(samples, "tiffin_requests_total", api="double", status="200") == 40
    assert value(samples, "tiffin_batch_refused_total", api="double") == 0


def test_batch_refusals_are_counted_in_each_worker(metered: Server) -> None:
    statuses: Counter[int] = Counter()
    warmed: set[int] = set()

    def crawl(_: int) -> httpx.Response:
        response = post(metered.url, "crawl", rows=[1.0])
        statuses[response.status_code] += 1
        return response

    # a first call in each worker teaches its batcher how long a call takes
    with ThreadPoolExecutor(2) as pool:
        for _ in range(50):
            warmed.update(r.json()[0] for r in pool.map(crawl, range(2)) if r.status_code == 200)
            if len(warmed) == 2:
                break
    assert len(warmed) == 2
    refused_before = statuses[503]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(crawl, range(8)))
    assert set(statuses) <= {200, 503}
    # eight at once over two workers: those that find their worker's call running
    # cannot start within max_latency_ms (1 ms)
    assert statuses[503] > refused_before
    metrics_passed_on()
    samples = scrape(metered.url)
    assert value(samples, "tiffin_batch_refused_total", api="crawl") == statuses[503]
    assert value(samples, "tiffin_requests_total", api="crawl", status="503") == statuses[503]
    assert value(samples, "tiffin_requests_total", api="crawl", status="200") == statuses[200]
    # every request let in waited for its batch once, and every call had a row each
    assert value(samples, "tiffin_batch_queue_wait_seconds_count", api="crawl") == statuses[200]
    assert value(samples, "tiffin_batch_size_sum", api="crawl") == statuses[200]


def test_model_loads_are_counted_once_per_worker(metered: Server) -> None:
    [version] = [model.info.version for model in ModelStore(metered.stdout.parent / "home").list()]
    samples = scrape(metered.url)
    loads = series(samples, "tiffin_model_load_seconds_count")
    assert loads == {frozenset({("model", "factor"), ("version", str(version))}): 2.0}
    assert value(samples, "tiffin_model_load_seconds_sum", model="factor", version=version) > 0
    bucket = value(
        samples, "tiffin_model_load_seconds_bucket", model="factor", version=version, le="+Inf"
    )
    assert bucket == 2


def test_service_metrics_are_summed_over_both_workers(metered: Server) -> None:
    sent = [float(i) for i in range(24)]
    by_pid: Counter[int] = Counter()
    with ThreadPoolExecutor(8) as pool:
        by_pid.update(pool.map(lambda x: post(metered.url, "work", x=x).json(), sent))
    assert len(by_pid) == 2, by_pid  # both workers did some
    for _ in range(4):
        samples = scrape(metered.url)
        assert value(samples, "probe_works_total", parity="even") == 12
        assert value(samples, "probe_works_total", parity="odd") == 12
        assert value(samples, "probe_values_bucket", le="1.0") == 2  # 0 and 1
        assert value(samples, "probe_values_bucket", le="10.0") == 11
        assert value(samples, "probe_values_bucket", le="100.0") == 24
        assert value(samples, "probe_values_count") == 24
        assert value(samples, "probe_values_sum") == sum(sent)
        # a gauge set while the module was imported keeps its value in each worker
        assert value(samples, "probe_version") == 7
        # counts made while it was imported are not any worker's
        assert value(samples, "probe_imports_total") == 0
        # one series per live worker, set in its __init__
        each = series(samples, "probe_pid")
        assert each == {frozenset({("pid", str(pid))}): float(pid) for pid in by_pid}


def test_process_cpu_memory_and_start_of_the_supervisor_and_each_worker(
    metered: Server,
) -> None:
    pids = worker_pids(metered.url)
    samples = scrape(metered.url)
    memory = series(samples, "tiffin_process_resident_memory_bytes")
    expected = {("supervisor", metered.process.pid)} | {("worker", pid) for pid in pids}
    assert {(dict(labels)["process"], int(dict(labels)["pid"])) for labels in memory} == expected
    assert all(v > 10 << 20 for v in memory.values())  # each holds Python and the service
    cpu = series(samples, "tiffin_process_cpu_seconds_total")
    assert set(cpu) == set(memory)
    assert all(v > 0 for v in cpu.values())
    started = series(samples, "tiffin_process_start_time_seconds")
    assert set(started) == set(memory)
    assert all(time.time() - 600 < v <= time.time() for v in started.values())


def test_a_replaced_worker_is_neither_lost_nor_counted_twice(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        before = worker_pids(server.url)
        with ThreadPoolExecutor(4) as pool:
            for response in pool.map(lambda i: post(server.url, "times", x=i), range(10)):
                assert response.status_code == 200
        metrics_passed_on()  # what a worker killed outright had not passed on is lost
        with pytest.raises(httpx.TransportError):
            post(server.url, "crash")
        wait_until(lambda: bool(answering(server.url) - before), 30)  # the new one is up
        after = worker_pids(server.url)
        [gone] = before - after
        assert len(after - before) == 1
        for _ in range(4):
            samples = scrape(server.url)
            # totals keep the exited worker's counts, and nothing is added twice
            assert value(samples, "tiffin_requests_total", api="times", status="200") == 10
            assert value(samples, "tiffin_requests_in_flight", api="crash") == 0
            # per-process series: the exited worker is gone, its replacement is there
            memory = series(samples, "tiffin_process_resident_memory_bytes")
            workers = {int(dict(k)["pid"]) for k in memory if dict(k)["process"] == "worker"}
            assert workers == after
            assert str(gone) not in {dict(k)["pid"] for k in memory}
            assert set(series(samples, "probe_pid")) == {
                frozenset({("pid", str(pid))}) for pid in after
            }
            # the new worker loaded the model too
            assert sum(series(samples, "tiffin_model_load_seconds_count").values()) == 3
    finally:
        server.stop()


def test_spawned_workers_sum_the_service_metrics_too(tmp_path: Path) -> None:
    server = start(tmp_path, start_method="spawn")
    try:
        by_pid: Counter[int] = Counter()
        with ThreadPoolExecutor(8) as pool:
            by_pid.update(pool.map(lambda _: post(server.url, "work", x=1).json(), range(16)))
        assert len(by_pid) == 2
        samples = scrape(server.url)
        assert value(samples, "probe_works_total", parity="odd") == 16
        assert value(samples, "probe_version") == 7
        assert value(samples, "probe_imports_total") == 2  # each worker imported the module
        assert sum(series(samples, "tiffin_model_load_seconds_count").values()) == 2
    finally:
        server.stop()
