"""Monitoring in a running service: the in-process app, and a real ``tiffin serve`` with two
workers writing their own files and the live drift gauge on ``/metrics``."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import tiffin
from tests.server.conftest import Server, start_server
from tiffin.exceptions import NotFound
from tiffin.observability.drift import Profile
from tiffin.observability.monitor_store import read_reference, read_window, to_columns
from tiffin.observability.monitoring import monitor
from tiffin.testing import TestClient

SERVICE = """
import os
import time

import tiffin
from tiffin.observability.monitoring import monitor


@tiffin.service(name="shop")
class Shop:
    @tiffin.api
    async def predict(self, amount: float, colour: str) -> int:
        time.sleep(0.002)  # holds this worker's loop, so the other takes connections too
        pid = os.getpid()
        monitor("basket").log({"amount": amount, "colour": colour, "pid": pid}, prediction=1)
        return pid
"""


@tiffin.service(name="shop")
class Shop:
    @tiffin.api
    def predict(self, amount: float) -> float:
        monitor("basket").log({"amount": amount}, prediction=amount > 0)
        return amount


def test_the_app_writes_under_the_service_and_counts(tmp_path: Path) -> None:
    with TestClient(Shop, home=tmp_path / "home") as client:
        for amount in (1.0, -2.0):
            client.predict(amount=amount)
        written = 'tiffin_monitor_records_total{monitor="basket"} 2.0'
        deadline = time.monotonic() + 10
        while written not in (text := client.http.get("/metrics").text):
            assert time.monotonic() < deadline, text
            time.sleep(0.02)
    assert "tiffin_drift_score" not in text  # no reference configured
    (finished,) = (tmp_path / "home" / "monitoring" / "shop" / "basket").iterdir()
    assert finished.suffix == ".jsonl"  # finished when the app stopped
    records = [json.loads(line) for line in finished.read_text().splitlines()]
    assert [(r["features"], r["prediction"]) for r in records] == [
        ({"amount": 1.0}, True),
        ({"amount": -2.0}, False),
    ]


def test_a_missing_reference_stops_the_service_from_starting(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    with pytest.raises(NotFound) as caught:
        TestClient(Shop, home=tmp_path / "home", monitor_reference=str(missing))
    assert caught.value.message == (
        f"The reference {missing} does not exist. Give the path of a CSV file with one column "
        "per feature."
    )


# -- a real server ---------------------------------------------------------------------


def reference(path: Path) -> Path:
    rng = np.random.default_rng(0)
    amounts = rng.normal(0.0, 1.0, 2000)
    colours = rng.choice(["red", "green", "blue"], 2000, p=(0.5, 0.3, 0.2))
    lines = "".join(f"{a},{c}\n" for a, c in zip(amounts, colours, strict=True))
    path.write_text("amount,colour\n" + lines)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """``tiffin serve`` of the shop with two workers, its drift measured every 0.2 s."""
    directory = tmp_path_factory.mktemp("shop")
    (directory / "shop.py").write_text(SERVICE)
    reference(directory / "reference.csv")
    (directory / "tiffin.yaml").write_text(
        "settings:\n  monitor_reference: reference.csv\n  monitor_drift_interval: 0.2\n"
    )
    home = directory / "home"
    server = start_server(directory, "shop:Shop", "--workers", "2", home=home)
    yield server, home / "monitoring" / "shop" / "basket"
    server.stop()


@pytest.mark.slow
def test_two_workers_write_their_own_files_and_the_gauge_is_right(
    served: tuple[Server, Path],
) -> None:
    server, store = served
    rng = np.random.default_rng(5)
    amounts = rng.normal(1.0, 1.0, 400).round(6).tolist()  # shifted by one deviation
    colours = rng.choice(["red", "green", "blue"], 400).tolist()

    def call(i: int) -> int:
        body = {"amount": amounts[i], "colour": colours[i]}
        response = httpx.post(f"{server.url}/predict", json=body, timeout=10)
        assert response.status_code == 200
        pid: int = response.json()
        return pid

    with ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(call, range(400)))
    assert len(set(pids)) == 2  # both workers answered

    deadline = time.monotonic() + 20
    while len(read_window(store)) < 400:
        assert time.monotonic() < deadline, "the records were not written in time"
        time.sleep(0.05)
    by_file: dict[int, list[dict[str, object]]] = {}
    for path in store.iterdir():
        pid = int(re.fullmatch(r".*Z-(\d+)\.jsonl(\.part)?", path.name).group(1))  # type: ignore[union-attr]
        lines = path.read_text().splitlines()
        by_file.setdefault(pid, []).extend(json.loads(line) for line in lines)
    assert set(by_file) == set(pids)
    for pid, records in by_file.items():  # every line whole, and from its file's worker
        assert {r["features"]["pid"] for r in records} == {pid}  # type: ignore[index]
        assert len(records) == pids.count(pid)
    logged = sorted(r["features"]["amount"] for rs in by_file.values() for r in rs)  # type: ignore[index]
    assert logged == sorted(amounts)

    expected = Profile(read_reference(store.parents[2].parent / "reference.csv")).psi(
        to_columns(read_window(store))
    )
    assert expected["amount"] > 0.2
    deadline = time.monotonic() + 20
    while True:
        gauge = _drift(httpx.get(f"{server.url}/metrics", timeout=10).text)
        if gauge == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert gauge == expected


def _drift(text: str) -> dict[str, float]:
    pattern = r'^tiffin_drift_score\{feature="(\w+)",monitor="basket"\} (\S+)$'
    return {name: float(value) for name, value in re.findall(pattern, text, re.MULTILINE)}
