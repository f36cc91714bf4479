"""``tiffin.testing.TestClient``: the real app in-process, lifespan included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

import tiffin
from tiffin.exceptions import ConfigError, ServiceError, Unauthorized, ValidationFailed
from tiffin.testing import TestClient

EVENTS: list[str] = []


class Point(BaseModel):
    x: float
    y: float


@tiffin.service(name="shop", timeout=30)
class Shop:
    """A service whose hooks leave marks."""

    def __init__(self) -> None:
        self.stock = {"apple": 3}
        self.warm = False
        EVENTS.append("init")

    @tiffin.on_startup
    async def warm_up(self) -> None:
        self.warm = True
        EVENTS.append("startup")

    @tiffin.on_shutdown
    def goodbye(self) -> None:
        EVENTS.append("shutdown")

    @tiffin.api
    def have(self, item: str) -> int:
        """How many of an item are in stock."""
        return self.stock.get(item, 0)

    @tiffin.api
    async def norm(self, point: Point) -> float:
        return float((point.x**2 + point.y**2) ** 0.5)

    @tiffin.api
    def mean(self, values: np.ndarray) -> float:
        return float(values.mean())

    @tiffin.api
    async def countdown(self, n: int) -> AsyncIterator[int]:
        for i in range(n, 0, -1):
            yield i

    @tiffin.api
    def fail(self) -> None:
        raise KeyError("gone")


@pytest.fixture
def shop() -> Iterator[TestClient]:
    EVENTS.clear()
    with TestClient(Shop) as client:
        yield client


def test_startup_ran_before_the_first_call(shop: TestClient) -> None:
    assert EVENTS == ["init", "startup"]
    assert shop.service.stock == {"apple": 3}
    assert shop.service.warm is True
    assert shop.health() is True


def test_apis_are_methods(shop: TestClient) -> None:
    assert shop.have(item="apple") == 3
    assert shop.call("have", item="pear") == 0
    assert shop.norm(point=Point(x=3, y=4)) == 5.0
    assert shop.mean(values=np.array([1.0, 2.0, 3.0])) == 2.0
    assert list(shop.countdown(n=3)) == [3, 2, 1]
    assert {"have", "norm", "mean", "countdown", "fail"} <= set(dir(shop))
    with pytest.raises(ValidationFailed, match="'item' is required"):
        shop.have()
    with pytest.raises(ServiceError, match="raised KeyError") as failed:
        shop.fail()
    assert failed.value.detail["api"] == "fail"
    with pytest.raises(AttributeError, match="no API 'sell'"):
        shop.sell(item="apple")


def test_raw_requests_through_http(shop: TestClient) -> None:
    response = shop.http.post("/have", json={"item": "apple"}, headers={"X-Request-ID": "t-1"})
    assert response.status_code == 200
    assert response.json() == 3
    assert response.headers["x-request-id"] == "t-1"
    assert shop.http.get("/readyz").json() == {"status": "ready"}
    assert shop.http.post("/have", content=b"{").status_code == 400
    docs = shop.http.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"] == "text/html; charset=utf-8"
    stream = shop.http.post("/countdown", json={"n": 2})
    assert stream.text == "data: 2\n\ndata: 1\n\n"


def test_shutdown_hooks_run_on_exit() -> None:
    EVENTS.clear()
    with TestClient(Shop) as client:
        assert client.have(item="apple") == 3
        assert EVENTS == ["init", "startup"]
    assert EVENTS == ["init", "startup", "shutdown"]


def test_close_without_a_with_block_and_twice() -> None:
    EVENTS.clear()
    client = TestClient(Shop)
    assert client.have(item="apple") == 3
    client.close()
    client.close()
    assert EVENTS == ["init", "startup", "shutdown"]


def test_settings_are_the_services_own_plus_overrides_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIFFIN_TIMEOUT", "1")  # never read: tests are hermetic
    with TestClient(Shop, max_queue=3) as client:
        assert client.settings.timeout == 30
        assert client.settings.max_queue == 3
        assert client.settings.api_keys == ()
    with pytest.raises(ConfigError, match="Unknown setting 'colour'"):
        TestClient(Shop, colour="blue")


def test_api_keys() -> None:
    with TestClient(Shop, api_keys=("k",)) as anonymous:
        assert "have" in dir(anonymous)  # the APIs are known without asking the server
        with pytest.raises(Unauthorized):
            anonymous.have(item="apple")
        assert anonymous.http.post("/have", json={"item": "apple"}).status_code == 401
    with TestClient(Shop, api_keys=("k",), api_key="k") as keyed:
        assert keyed.have(item="apple") == 3


@tiffin.service
class Broken:
    def __init__(self) -> None:
        raise FileNotFoundError("model.pkl is missing")

    @tiffin.api
    def predict(self, x: float) -> float:
        return x


def test_a_failed_startup_raises_the_services_own_error() -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.pkl is missing"):
        TestClient(Broken)


@tiffin.service
class Helper:
    @tiffin.api
    def double(self, x: float) -> float:
        return x * 2


@tiffin.service
class Pipeline:
    helper = tiffin.depends(Helper)

    @tiffin.api
    def run(self, x: float) -> Any:
        return self.helper.double(x) + 1


def test_in_process_dependencies_are_started_too() -> None:
    with TestClient(Pipeline) as client:
        assert client.run(x=2) == 5.0
