"""``/dashboard``: served by tiffin alone (no CDN), its data, its keys; and the page
rendered live, with data, in a real headless chromium against ``tiffin serve``."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import tiffin
from tests.conftest import need
from tests.server.conftest import Server, start_server
from tests.server.test_docs import DevTools, chromium, devtools_page, dump_dom, self_contained
from tiffin.testing import TestClient


@tiffin.service(name="gauges")
class Gauges:
    """A service to chart."""

    @tiffin.api
    def add(self, a: float, b: float = 1.0) -> float:
        if a < 0:
            raise ValueError("a must not be negative")
        return a + b

    @tiffin.api(batch=tiffin.Batch(max_size=8, max_latency_ms=5))
    def double(self, rows: list[float]) -> list[float]:
        return [2 * row for row in rows]


@pytest.fixture(scope="module")
def gauges() -> Iterator[TestClient]:
    with TestClient(Gauges, history_interval=1) as client:
        yield client


def test_the_page_and_its_assets_come_from_tiffin_alone(gauges: TestClient) -> None:
    bodies = self_contained(
        gauges,
        "/dashboard",
        "<title>gauges · dashboard</title>",
        links={
            "data:,",
            "/dashboard/dashboard.css",
            "/dashboard/dashboard.js",
            "/dashboard/data",
            "/metrics",
            "/docs",
        },
        assets="/dashboard/dashboard.",
    )
    assert gauges.http.get("/dashboard").headers["cache-control"] == "no-cache"
    assert "@import" not in bodies[".css"]
    assert "url(" not in bodies[".css"]


def test_dashboard_paths(gauges: TestClient) -> None:
    assert gauges.http.get("/dashboard/").text == gauges.http.get("/dashboard").text
    missing = gauges.http.get("/dashboard/missing.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == (
        "No dashboard page at /dashboard/missing.js. Open /dashboard."
    )
    assert gauges.http.post("/dashboard").status_code == 405
    assert gauges.http.post("/dashboard/data").status_code == 405


def test_the_data_is_the_history_of_the_last_hour(gauges: TestClient) -> None:
    first = gauges.http.get("/dashboard/data")
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/json"
    assert first.headers["cache-control"] == "no-store"
    for a in range(10):
        gauges.http.post("/add", json={"a": a})
    gauges.http.post("/add", json={"a": -1})  # 500
    gauges.http.post("/add", json={})  # 422
    gauges.http.post("/double", json={"rows": [1.0, 2.0]})
    deadline = time.monotonic() + 10
    while True:
        data = gauges.http.get("/dashboard/data").json()
        if sum(v or 0 for v in data["apis"]["add"]["rate"]) > 0:
            break
        assert time.monotonic() < deadline, "no point with the requests within 10 s"
        time.sleep(0.1)
    assert set(data) == {
        "service", "now", "interval", "span", "fields", "t", "total", "apis", "batched",
        "drift", "alerts",
    }  # fmt: skip
    assert data["service"] == "gauges"
    assert data["interval"] == 1.0
    assert data["span"] == 3600.0
    assert data["batched"] == ["double"]
    assert data["alerts"] == []
    assert data["drift"] == []
    assert set(data["apis"]) == {"add", "double"}
    add = data["apis"]["add"]
    assert set(add) == set(data["fields"])
    assert all(len(column) == len(data["t"]) for column in add.values())
    sums = {field: sum(v or 0 for v in add[field]) for field in ("rate", "errors", "client_errors")}
    assert sums["rate"] > sums["errors"] > 0
    assert sums["client_errors"] > 0
    assert data["t"] == sorted(data["t"])
    assert data["t"][-1] <= data["now"]
    newer = gauges.http.get("/dashboard/data", params={"since": data["t"][-1]}).json()
    assert all(t > data["t"][-1] for t in newer["t"])
    bad = gauges.http.get("/dashboard/data?since=yesterday")
    assert bad.status_code == 400
    assert bad.json()["error"] == {
        "type": "InvalidArgument",
        "message": "since='yesterday' is not a time. Give Unix seconds (since=1764000000.5), or "
        "leave it out for the last hour.",
        "detail": {"since": "yesterday"},
    }


def test_the_data_needs_a_key_where_metrics_do() -> None:
    key = {"Authorization": "Bearer k"}
    with TestClient(Gauges, api_keys=("k",)) as open_metrics:
        assert open_metrics.http.get("/dashboard").status_code == 200
        assert open_metrics.http.get("/dashboard/data").status_code == 200
    with TestClient(Gauges, api_keys=("k",), metrics_need_key=True) as closed:
        assert closed.http.get("/dashboard").status_code == 200  # the page asks for the key
        assert closed.http.get("/dashboard/dashboard.js").status_code == 200
        refused = closed.http.get("/dashboard/data")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "Unauthorized"
        assert closed.http.get("/dashboard/data", headers=key).status_code == 200
        wrong = {"Authorization": "Bearer nope"}
        assert closed.http.get("/dashboard/data", headers=wrong).status_code == 401


# -- in a real browser, against a real server --------------------------------------------

SERVICE = """
import math
import time

from prometheus_client import Gauge

import tiffin


@tiffin.service(name="charted", workers=2)
class Charted:
    def __init__(self) -> None:
        # as data monitoring reports drift: one score by monitor and feature
        self.drift = Gauge(
            "tiffin_drift_score",
            "Drift of each feature.",
            ["monitor", "feature"],
            multiprocess_mode="mostrecent",
        )

    @tiffin.api(batch=tiffin.Batch(max_size=16, max_latency_ms=5))
    def predict(self, rows: list[float]) -> list[float]:
        now = time.time()
        self.drift.labels("iris", "petal_width").set(0.12 + 0.06 * math.sin(now / 4))
        self.drift.labels("iris", "sepal_length").set(0.05 + 0.02 * math.cos(now / 3))
        time.sleep(0.002)
        return [2 * row for row in rows]

    @tiffin.api
    def classify(self, x: float) -> str:
        if x < 0:
            raise ValueError("x must not be negative")
        time.sleep(x)
        return "big" if x > 0.01 else "small"
"""

KEY = "secret-key"
NONE = "\u2013"  # what the page shows for a value it does not have
WARM_UP = 6.0  # seconds of traffic before the page is opened: some points to draw


class Traffic:
    """Requests to every API from a few threads until stopped: batches of several rows,
    quick and slower answers, a 500 now and then and a 422 now and then."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stopped = threading.Event()
        self.pool = ThreadPoolExecutor(6)
        self.sent = 0

    def run(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            step = 0
            while not self.stopped.is_set():
                step += 1
                if index < 3:
                    client.post("/predict", json={"rows": [float(step)] * (1 + step % 3)})
                elif step % 25 == 0:
                    client.post("/classify", json={"x": -1})
                elif step % 40 == 0:
                    client.post("/classify", json={"y": 1})
                else:
                    client.post("/classify", json={"x": 0.001 * (step % 20)})
                self.sent += 1
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        for index in range(5):
            self.pool.submit(self.run, index)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def charted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real server of two workers, with an API key that /metrics needs too, alert
    rules, and traffic all along."""
    chromium()
    directory = tmp_path_factory.mktemp("charted")
    (directory / "charted.py").write_text(SERVICE, encoding="utf-8")
    settings = {
        "history_interval": 1,
        "api_keys": [KEY],
        "metrics_need_key": True,
        "alerts": [
            {"name": "classify-errors", "kind": "error_rate", "api": "classify", "above": 0.01,
             "window": "10s"},
            {"name": "slow", "kind": "p99_latency", "above": 0.5, "window": "30s"},
            {"name": "drifting", "kind": "drift", "monitor": "iris", "above": 0.15,
             "window": "10s"},
        ],
    }  # fmt: skip
    (directory / "tiffin.yaml").write_text(
        yaml.safe_dump({"service": "charted:Charted", "settings": settings}), encoding="utf-8"
    )
    server = start_server(directory, home=directory / "home")
    try:
        with Traffic(server.url) as traffic:
            time.sleep(WARM_UP)
            assert traffic.sent > 100
            yield server
    finally:
        server.stop()


def test_without_the_key_the_page_asks_for_it_in_chromium(charted: Server, tmp_path: Path) -> None:
    dom = dump_dom(f"{charted.url}/dashboard", tmp_path / "profile", 5000)
    assert (
        '<div id="problem" class="problem">This server needs an API key to show its metrics. '
        "Enter it above.</div>"
    ) in dom
    assert '<span id="status" class="status failed" role="status">needs an API key</span>' in dom
    for chart in ("rate", "latency", "errors", "batch", "drift"):
        assert f'id="chart-{chart}"' in dom  # drawn, empty, until the data comes


LOADED = """(async () => {
  for (let i = 0; i < 400; i++) {
    const svg = document.querySelector("#chart-drift svg");
    if (svg && Number(svg.getAttribute("data-points")) >= %d) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return false;
})()"""

CHARTS = """(() => {
  const found = {};
  for (const section of document.querySelectorAll("section.chart")) {
    const svg = section.querySelector("svg");
    const empty = section.querySelector(".empty");
    found[section.id] = {
      points: Number(svg.getAttribute("data-points")),
      series: Number(svg.getAttribute("data-series")),
      lines: [...svg.querySelectorAll("path.line")].map(
        (p) => [p.getAttribute("data-name"), p.getAttribute("d").split("L").length]
      ),
      thresholds: [...svg.querySelectorAll("text.threshold-label")].map((t) => t.textContent),
      legend: [...section.querySelectorAll(".legend .item")].map((i) => i.textContent),
      empty: empty.hidden ? null : empty.textContent,
    };
  }
  return found;
})()"""


def test_the_dashboard_renders_live_data_in_chromium(charted: Server, tmp_path: Path) -> None:
    need(importlib.util.find_spec("websockets") is not None, "websockets (pip install websockets)")
    import websockets

    with devtools_page(tmp_path / "profile", "--window-size=1400,1000") as page:

        async def main() -> tuple[dict[str, Any], str, bytes]:
            async with websockets.connect(page, max_size=None) as ws:
                tools = DevTools(ws)
                await tools.command(
                    "Emulation.setDeviceMetricsOverride",
                    width=1400,
                    height=1000,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                await tools.command("Page.navigate", url=f"{charted.url}/dashboard")
                for _ in range(400):
                    if await tools.evaluate("document.querySelectorAll('section.chart').length"):
                        break
                    await asyncio.sleep(0.025)
                # the key, typed in as a user does
                await tools.evaluate(
                    f"""(() => {{
                      const input = document.getElementById("api-key");
                      input.value = {json.dumps(KEY)};
                      input.dispatchEvent(new Event("change"));
                    }})()"""
                )
                assert await tools.evaluate(LOADED % 3)
                before = await tools.evaluate(CHARTS)
                await asyncio.sleep(3.5)  # the page asks for new points every second
                charts = await tools.evaluate(CHARTS)
                assert charts["chart-rate"]["points"] >= before["chart-rate"]["points"] + 2
                status = await tools.evaluate("document.getElementById('status').textContent")
                dom = await tools.evaluate("document.documentElement.outerHTML")
                shot = await tools.command(
                    "Page.captureScreenshot", format="png", captureBeyondViewport=True
                )
                png = base64.b64decode(shot["data"])
                # one API alone: the batch chart says that it does not batch
                await tools.evaluate(
                    """(() => {
                      const select = document.getElementById("api");
                      select.value = "classify";
                      select.dispatchEvent(new Event("change"));
                    })()"""
                )
                one = await tools.evaluate(CHARTS)
                assert one["chart-batch"]["empty"] == "API 'classify' does not batch its calls."
                assert one["chart-latency"]["points"] >= 3
                return charts, status + "\n" + dom, png

        charts, dom, png = asyncio.run(main())
    screenshot = tmp_path / "dashboard.png"
    screenshot.write_bytes(png)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 20_000  # charts, not a blank page

    assert re.match(r"live · \d\d:\d\d:\d\d · every 1 s\n", dom)
    assert 'id="problem" class="problem" hidden=""' in dom
    rate = charts["chart-rate"]
    assert rate["points"] >= 5
    assert [name for name, _ in rate["lines"]] == ["all APIs", "classify", "predict"]
    assert all(segments >= 5 for _, segments in rate["lines"])
    latency = charts["chart-latency"]
    assert [name for name, _ in latency["lines"]] == ["p50", "p90", "p99"]
    # drawn; or, far above the data, named only, so the lines are not flattened against zero
    assert latency["thresholds"] in (["alert slow"], ["alert slow at 500 ms \u2191"])
    errors = charts["chart-errors"]
    assert errors["series"] == 2  # 5xx and 4xx both happened
    batch = charts["chart-batch"]
    assert [name for name, _ in batch["lines"]] == ["mean", "p50", "p99"]
    assert batch["points"] >= 5
    assert batch["empty"] is None
    drift = charts["chart-drift"]
    assert [name for name, _ in drift["lines"]] == ["iris · petal_width", "iris · sepal_length"]
    assert drift["thresholds"] == ["alert drifting"]
    for chart in charts.values():
        assert chart["empty"] is None
        assert all(item.split()[-1] != NONE for item in chart["legend"]), chart["legend"]
    tiles = re.findall(r'<div class="label">([^<]+)</div><div class="value">([^<]+)</div>', dom)
    assert [label for label, _ in tiles] == ["Requests / s", "Latency p99", "Errors", "In flight"]
    assert all(value != NONE for _, value in tiles)
    for rule in ("classify-errors", "slow", "drifting"):
        assert re.search(rf'<div class="alert (ok|pending|firing)" id="alert-{rule}">', dom)
    # classify fails 1 in 25 calls, above the 1% of its rule
    assert '<div class="alert firing" id="alert-classify-errors">' in dom
