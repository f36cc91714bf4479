"""The supervisor and its workers as real processes: serving, restarts, graceful stop,
metrics over workers, start-up failures, logs and reloading."""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import metrics_passed_on, wait_until
from tests.server.conftest import TIFFIN, Server, environment


def requests_total(url: str, api: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "tiffin_requests":
            return sum(
                sample.value
                for sample in family.samples
                if sample.name == "tiffin_requests_total" and sample.labels["api"] == api
            )
    return 0.0


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody has reaped yet counts as exited)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_a_prediction_goes_through_the_real_server(probe: Server) -> None:
    response = httpx.post(f"{probe.url}/predict", json={"x": 3.5}, timeout=10)
    assert response.status_code == 200
    assert response.json() == 7.0
    assert httpx.get(f"{probe.url}/docs", timeout=10).status_code == 200


def test_each_request_is_one_json_access_log_line(probe: Server) -> None:
    response = httpx.post(
        f"{probe.url}/predict",
        json={"x": 1.2345678},
        headers={"X-Request-ID": "req-test-42"},
        timeout=10,
    )
    assert response.headers["x-request-id"] == "req-test-42"

    def logged() -> list[dict[str, object]]:
        return [r for r in probe.records() if r.get("request_id") == "req-test-42"]

    wait_until(lambda: bool(logged()), 10)
    [record] = logged()
    assert record["logger"] == "tiffin.access"
    assert record["level"] == "info"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(record["ts"]))
    assert (record["method"], record["path"], record["status"]) == ("POST", "/predict", 200)
    assert isinstance(record["duration_ms"], float)
    assert record["duration_ms"] >= 0
    assert "1.2345678" not in probe.log()  # bodies are never logged


def test_metrics_are_summed_over_two_workers(probe: Server) -> None:
    answered: Counter[int] = Counter()

    def call(_: int) -> int:
        # a new connection each time, so the kernel may hand it to either worker
        response = httpx.post(f"{probe.url}/busy_pid", timeout=10)
        assert response.status_code == 200
        pid: int = response.json()
        return pid

    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            answered.update(pool.map(call, range(8)))
            if len(answered) == 2:
                break
    assert len(answered) == 2, answered
    sent = answered.total()
    metrics_passed_on()
    for _ in range(6):  # on new connections: whichever worker answers reports the sum
        assert requests_total(probe.url, "busy_pid") == sent


def test_a_crashed_worker_is_replaced(serve: Callable[..., Server]) -> None:
    server = serve("probe:Probe", "--workers", "2", "--log-format", "json")
    before = worker_pids(server.url, 2)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{server.url}/crash", timeout=10)
    replaced = re.compile(r"Worker (\d+) exited with code 1; starting a new one\.")

    def crashed() -> list[int]:
        messages = [r["message"] for r in server.records() if r["logger"] == "tiffin.server"]
        return [int(m[1]) for m in map(replaced.fullmatch, messages) if m]

    wait_until(lambda: bool(crashed()))
    assert crashed()[0] in before
    after = worker_pids(server.url, 2)  # two workers again, the crashed one not among them
    assert crashed()[0] not in after
    assert server.process.poll() is None


def test_one_worker_is_the_server_process_itself(serve: Callable[..., Server]) -> None:
    """With one worker there is no supervisor: the process serves, and a crash ends it
    (whatever runs the server restarts it), with the exit code of the crash."""
    server = serve("probe:Probe", "--log-format", "json")
    assert httpx.post(f"{server.url}/pid", timeout=10).json() == server.process.pid
    assert Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text() == ""
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{server.url}/crash", timeout=10)
    assert server.process.wait(10) == 1


def test_sigterm_lets_requests_in_flight_finish(serve: Callable[..., Server]) -> None:
    server = serve("probe:Probe", "--workers", "2", "--grace-period", "10")
    started = Path(server.stdout).with_name("started.txt")

    def slow(value: int) -> httpx.Response:
        return httpx.post(f"{server.url}/slow", json={"value": value, "seconds": 1.0}, timeout=30)

    with ThreadPoolExecutor(8) as pool:
        answers = pool.map(slow, range(8))
        wait_until(lambda: started.exists() and len(started.read_text().split()) == 8, 10)
        os.kill(server.process.pid, signal.SIGTERM)
        stopping = time.monotonic()
        responses = list(answers)
    assert [r.status_code for r in responses] == [200] * 8
    assert [r.json() for r in responses] == list(range(8))
    assert server.process.wait(10) == 0
    assert time.monotonic() - stopping < 10
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/livez", timeout=5)


def worker_pids(url: str, count: int) -> set[int]:
    """The pids of ``count`` workers, asked on new connections until each has answered."""
    pids: set[int] = set()

    def call(_: int) -> int:
        pid: int = httpx.post(f"{url}/busy_pid", timeout=10).json()
        return pid

    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            pids.update(pool.map(call, range(8)))
            if len(pids) == count:
                break
    assert len(pids) == count, pids
    return pids


def use_start_method(directory: Path, method: str) -> None:
    (directory / "tiffin.yaml").write_text(f"settings:\n  start_method: {method}\n")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_workers_do_not_outlive_a_killed_supervisor(
    serve: Callable[..., Server], tmp_path: Path, method: str
) -> None:
    # with two workers, a forked second worker must not hold the first one's channel open
    use_start_method(tmp_path, method)
    server = serve("probe:Probe", "--workers", "2")
    workers = worker_pids(server.url, 2)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)
    for worker in workers:
        wait_until(functools.partial(gone, worker), 10)


@pytest.mark.parametrize(
    ("method", "forked"), [("fork", True), ("spawn", False)], ids=["fork", "spawn"]
)
def test_start_method_decides_how_workers_start(
    serve: Callable[..., Server], tmp_path: Path, method: str, forked: bool
) -> None:
    use_start_method(tmp_path, method)
    server = serve("probe:Probe", "--workers", "2")
    for worker in worker_pids(server.url, 2):
        command = Path(f"/proc/{worker}/cmdline").read_bytes().split(b"\0")
        assert (b"tiffin.server.worker" not in command) is forked, command
        assert Path(f"/proc/{worker}/stat").read_text().rpartition(")")[2].split()[1] == str(
            server.process.pid
        )


@pytest.mark.parametrize(
    ("workers", "method"), [(1, "fork"), (2, "fork"), (2, "spawn")], ids=["1", "2-fork", "2-spawn"]
)
def test_the_collector_runs_once_ready_and_leaves_start_up_alone(
    serve: Callable[..., Server], tmp_path: Path, workers: int, method: str
) -> None:
    """The garbage collector is off while a worker starts, and back on once it is ready,
    with what start-up made (here, in the service's __init__) frozen out of its walks."""
    use_start_method(tmp_path, method)
    server = serve("probe:Probe", "--workers", str(workers))
    answered: set[int] = set()
    for _ in range(100):  # until every worker has answered
        answer = httpx.post(f"{server.url}/collector", timeout=10).json()
        assert answer == {"pid": answer["pid"], "enabled": True, "walks_start_up": False}
        answered.add(answer["pid"])
        if len(answered) == workers:
            break
    assert len(answered) == workers


@pytest.mark.parametrize("workers", [1, 2])
def test_a_service_that_cannot_start_stops_the_server(tmp_path: Path, workers: int) -> None:
    (tmp_path / "broken.py").write_text(
        "from pathlib import Path\n"
        "import tiffin\n"
        "\n"
        "@tiffin.service\n"
        "class Broken:\n"
        "    def __init__(self) -> None:\n"
        "        with Path('starts.txt').open('a') as starts:\n"
        "            starts.write('start\\n')\n"
        "        raise RuntimeError('no weights in /models')\n"
        "\n"
        "    @tiffin.api\n"
        "    def predict(self, x: float) -> float:\n"
        "        return x\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [
            *(TIFFIN, "serve", "broken:Broken", "--host", "127.0.0.1", "--port", "0"),
            *("--workers", str(workers)),
        ],
        cwd=tmp_path,
        env=environment(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 9, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "Error: Service 'broken' failed to start: RuntimeError: no weights in /models at "
        "broken.py:9. Fix the error and start it again."
    )
    assert "Serving" not in done.stdout
    assert len((tmp_path / "starts.txt").read_text().split()) <= workers  # once each, no more


def test_reload_picks_up_an_edited_file(serve: Callable[..., Server], tmp_path: Path) -> None:
    source = tmp_path / "versioned.py"
    template = (
        "import tiffin\n\n"
        "@tiffin.service\n"
        "class Versioned:\n"
        "    @tiffin.api\n"
        "    def version(self) -> str:\n"
        "        return {!r}\n"
    )
    source.write_text(template.format("one"), encoding="utf-8")
    server = serve("versioned:Versioned", "--reload", "--workers", "3", "--log-format", "json")
    assert "with 1 worker " in server.stdout.read_text()

    def answers(expected: str) -> bool:
        try:
            return bool(httpx.post(f"{server.url}/version", timeout=5).json() == expected)
        except httpx.TransportError:
            return False

    assert answers("one")
    source.write_text(template.format("two, edited"), encoding="utf-8")
    wait_until(lambda: answers("two, edited"))

    source.write_text("import tiffin\n\nthis is not python\n", encoding="utf-8")
    wait_until(lambda: "The service failed to start" in server.log())
    assert server.process.poll() is None
    source.write_text(template.format("three, fixed"), encoding="utf-8")
    wait_until(lambda: answers("three, fixed"))
