"""``tiffin.observability.alerts``: rules measured on the history, each firing and
resolution logged and posted to a real webhook receiver on loopback, exactly once per
server however many workers it has; and the rules' checks."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import Gauge

from tests.server.conftest import launch, start_server
from tiffin import config
from tiffin.config import AlertRule
from tiffin.exceptions import ConfigError
from tiffin.observability.alerts import Alerts, check, duration, prometheus_rule
from tiffin.observability.history import History
from tiffin.observability.metrics import ServerMetrics

START = 1_764_000_000.0  # 2025-11-24T16:00:00Z
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


# -- a webhook receiver ------------------------------------------------------------------


@dataclasses.dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


class Receiver:
    """An HTTP server on a free loopback port that keeps every POST and answers each
    with the next of ``statuses`` (200 once they are used up)."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.posts: list[Post] = []
        self.statuses = list(statuses)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    receiver.posts.append(
                        Post(
                            self.path,
                            {key.lower(): value for key, value in self.headers.items()},
                            json.loads(body),
                            time.monotonic(),
                        )
                    )
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/tiffin"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [post.body for post in self.posts]

    def wait(self, count: int, timeout: float = 20.0) -> list[Post]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count:
            assert time.monotonic() < deadline, f"{len(self.posts)} POSTs, not {count}"
            time.sleep(0.02)
        with self.lock:
            return list(self.posts)

    async def arrived(self, count: int, timeout: float = 20.0) -> list[Post]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count:
            assert time.monotonic() < deadline, f"{len(self.posts)} POSTs, not {count}"
            await asyncio.sleep(0.01)
        with self.lock:
            return list(self.posts)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as found:
        yield found


# -- in one process, fed by hand ---------------------------------------------------------


def rules(*items: dict[str, Any]) -> tuple[AlertRule, ...]:
    return tuple(AlertRule.model_validate(item) for item in items)


ERRORS = {"name": "flaky-errors", "kind": "error_rate", "api": "flaky", "above": 0.05, "window": 5}


class Fed:
    """A history fed by hand, a sample every 5 s of made-up time, and its alerts."""

    def __init__(self, found: tuple[AlertRule, ...], webhook: str | None, directory: Path | None):
        self.metrics = ServerMetrics(["flaky", "steady"])
        self.history = History(self.metrics, ["flaky", "steady"], interval=5.0)
        self.alerts = Alerts(
            "svc",
            found,
            self.history,
            webhook=webhook,
            directory=None if directory is None else str(directory),
        )
        self.time = START

    def step(self, *, errors: int = 0, ok: int = 0, api: str = "flaky") -> None:
        """What the next 5 s bring, then a sample and a measure."""
        for status, times in ((500, errors), (200, ok)):
            for _ in range(times):
                self.metrics.started(api)
                self.metrics.finished(api, status, 0.002)
        self.history.add(dataclasses.replace(self.history.read(), time=self.time))
        self.time += 5.0
        self.alerts.evaluate()


def stamp(offset: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START + offset))


def expected(status: str, value: float | None, summary: str, **times: str | None) -> dict[str, Any]:
    return {
        "alert": "flaky-errors",
        "status": status,
        "service": "svc",
        "instance": socket.gethostname(),
        "kind": "error_rate",
        "api": "flaky",
        "monitor": None,
        "feature": None,
        "above": 0.05,
        "window": 5,
        "for": 0,
        "severity": "warning",
        "value": value,
        "summary": summary,
        "started_at": times["started_at"],
        "resolved_at": times.get("resolved_at"),
    }


def test_an_alert_fires_once_and_resolves_once(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tiffin.alerts")

    async def main() -> None:
        fed = Fed(rules(ERRORS), receiver.url, None)
        await fed.alerts.start()
        fed.step(ok=10)  # t=0
        fed.step(ok=10)  # t=5: nothing wrong
        fed.step(errors=4, ok=4)  # t=10: half of them fail
        fed.step(errors=1, ok=9)  # t=15: still above over the last 5 s
        fed.step(errors=1, ok=19)  # t=20: 1 in 20, not above 5%
        fed.step(ok=10)  # t=25
        fed.step(errors=10)  # t=30: again
        await receiver.arrived(3)
        await fed.alerts.stop()

    asyncio.run(main())
    first, second, third = receiver.posts
    assert first.path == "/hooks/tiffin"
    assert first.headers["content-type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["idempotency-key"])
    assert first.headers["idempotency-key"] != second.headers["idempotency-key"]
    assert first.body == expected(
        "firing",
        0.5,
        "Error rate of API 'flaky' is 50% over the last 5s, above 5%.",
        started_at=stamp(10),
    )
    assert second.body == expected(
        "resolved",
        0.05,
        "Error rate of API 'flaky' is 5% over the last 5s, not above 5%.",
        started_at=stamp(10),
        resolved_at=stamp(20),
    )
    assert third.body["status"] == "firing"
    assert third.body["started_at"] == stamp(30)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "Alert flaky-errors is firing: Error rate of API 'flaky' is 50% over the last 5s, "
            "above 5%.",
        ),
        (
            "INFO",
            "Alert flaky-errors resolved: Error rate of API 'flaky' is 5% over the last 5s, "
            "not above 5%.",
        ),
        (
            "WARNING",
            "Alert flaky-errors is firing: Error rate of API 'flaky' is 100% over the last 5s, "
            "above 5%.",
        ),
    ]
    assert caplog.records[0].__dict__["alert"] == "flaky-errors"


def test_a_rule_with_for_waits_before_firing_and_no_data_resolves(receiver: Receiver) -> None:
    async def main() -> None:
        fed = Fed(rules({**ERRORS, "for": "10s"}), receiver.url, None)
        await fed.alerts.start()
        fed.step()  # t=0
        phases = []
        for errors, ok in ((5, 0), (5, 0), (0, 1), (5, 0), (5, 0), (5, 0)):  # t=5 ... t=30
            fed.step(errors=errors, ok=ok)
            phases.append(fed.alerts.states["flaky-errors"].phase)
        # pending for 5 s, back below before 10 s; then above for 10 s: it fires at 30
        assert phases == ["pending", "pending", "ok", "pending", "pending", "firing"]
        fed.step()  # t=35: no request over the last 5 s
        await receiver.arrived(2)
        await fed.alerts.stop()

    asyncio.run(main())
    firing, resolved = receiver.bodies()
    assert (firing["status"], firing["value"], firing["for"]) == ("firing", 1.0, 10)
    assert firing["started_at"] == stamp(30)
    assert resolved["value"] is None
    assert resolved["summary"] == "Error rate of API 'flaky': no requests over the last 5s."
    assert resolved["resolved_at"] == stamp(35)


def test_latency_and_drift_rules(receiver: Receiver) -> None:
    found = rules(
        {"name": "slow", "kind": "p99_latency", "above": 0.5, "window": "5s"},
        {"name": "drifting", "kind": "drift", "monitor": "iris", "above": 0.2, "window": 5},
    )

    async def main() -> None:
        fed = Fed(found, receiver.url, None)
        # as data monitoring sets it, in the server's registry
        registry = fed.metrics.registry
        drift = Gauge("tiffin_drift_score", "Drift.", ["monitor", "feature"], registry=registry)
        await fed.alerts.start()
        fed.step()
        drift.labels("iris", "petal_width").set(0.35)
        drift.labels("other", "x").set(0.9)  # another monitor: not this rule's
        for _ in range(3):
            fed.metrics.started("steady")
            fed.metrics.finished("steady", 200, 0.8)
        fed.step()
        await receiver.arrived(2)
        await fed.alerts.stop()

    asyncio.run(main())
    by_name = {body["alert"]: body for body in receiver.bodies()}
    assert by_name["slow"]["value"] == pytest.approx(0.5 + 0.5 * 2.97 / 3)
    assert by_name["slow"]["summary"] == (
        "p99 latency of all APIs is 0.995 s over the last 5s, above 0.5 s."
    )
    assert by_name["drifting"]["value"] == 0.35
    assert by_name["drifting"]["summary"] == (
        "Drift of feature 'petal_width' of monitor 'iris' is 0.35 over the last 5s, above 0.2."
    )
    assert (by_name["drifting"]["monitor"], by_name["drifting"]["api"]) == ("iris", None)


def test_a_webhook_answering_500_gets_the_same_notification_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tiffin.alerts")

    async def main(receiver: Receiver) -> None:
        fed = Fed(rules(ERRORS), receiver.url, None)
        await fed.alerts.start()
        fed.step()
        fed.step(errors=3)
        fed.step(ok=100)
        await receiver.arrived(4)
        await fed.alerts.stop()

    with Receiver(statuses=(500, 503)) as receiver:
        asyncio.run(main(receiver))
    first, second, third, resolved = receiver.posts
    assert first.body == second.body == third.body
    assert first.body["status"] == "firing"
    assert first.headers["idempotency-key"] == third.headers["idempotency-key"]
    assert second.at - first.at == pytest.approx(1.0, abs=0.3)  # then twice as long
    assert third.at - second.at == pytest.approx(2.0, abs=0.3)
    assert resolved.body["status"] == "resolved"  # in order, after the firing one arrived
    retries = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert retries[1:] == [
        "Sending alert flaky-errors to the webhook at 127.0.0.1 failed (status 500); trying "
        "again in 1 s.",
        "Sending alert flaky-errors to the webhook at 127.0.0.1 failed (status 503); trying "
        "again in 2 s.",
    ]


def test_a_webhook_refusing_the_notification_is_not_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main(receiver: Receiver) -> None:
        fed = Fed(rules(ERRORS), receiver.url, None)
        await fed.alerts.start()
        fed.step()
        fed.step(errors=3)
        await receiver.arrived(1)
        await asyncio.sleep(1.5)
        await fed.alerts.stop()

    with Receiver(statuses=(400,)) as receiver:
        asyncio.run(main(receiver))
    assert len(receiver.posts) == 1
    assert caplog.records[-1].getMessage() == (
        "The alert webhook at 127.0.0.1 refused alert flaky-errors with status 400; it is not "
        "sent again. Check the webhook's URL and what it accepts."
    )


def test_an_unreachable_webhook_is_tried_a_bounded_number_of_times(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tiffin.observability import alerts

    monkeypatch.setattr(alerts, "FIRST_RETRY", 0.01)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"

        async def main() -> None:
            fed = Fed(rules(ERRORS), url, None)
            await fed.alerts.start()
            fed.step()
            fed.step(errors=3)
            for _ in range(200):
                if any(r.levelname == "ERROR" for r in caplog.records):
                    break
                await asyncio.sleep(0.02)
            await fed.alerts.stop()

        asyncio.run(main())
    tries = [r for r in caplog.records if r.getMessage().startswith("Sending alert")]
    assert len(tries) == 4
    last = caplog.records[-1].getMessage()
    assert last.startswith(
        "Could not send alert flaky-errors to the webhook at 127.0.0.1 in 5 tries (last: "
        "ConnectError"
    )


def test_without_a_webhook_alerts_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        fed = Fed(rules(ERRORS), None, None)
        await fed.alerts.start()
        fed.step()
        fed.step(errors=3)
        await fed.alerts.stop()

    asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == [
        "Alert flaky-errors is firing: Error rate of API 'flaky' is 100% over the last 5s, "
        "above 5%."
    ]


def test_one_process_of_those_sharing_a_directory_measures_and_another_takes_over(
    receiver: Receiver, tmp_path: Path
) -> None:
    async def main() -> None:
        one = Fed(rules(ERRORS), receiver.url, tmp_path)
        two = Fed(rules(ERRORS), receiver.url, tmp_path)
        await one.alerts.start()
        await two.alerts.start()
        for fed in (one, two):  # both see the same metrics, as workers do
            fed.step()
        for fed in (one, two):
            fed.step(errors=3)
        await receiver.arrived(1)
        assert one.alerts.states["flaky-errors"].phase == "firing"
        assert two.alerts.states["flaky-errors"].phase == "ok"  # it did not measure
        saved = json.loads((tmp_path / "alerts.json").read_text())
        assert saved == {"flaky-errors": {"phase": "firing", "since": START + 5}}
        assert two.alerts.status()[0]["state"] == "firing"  # as the measuring one has it
        await one.alerts.stop()  # the lock is free: the other one carries on
        two.step(errors=3)  # still firing: not sent again
        two.step(ok=100)
        two.step(ok=100)
        await receiver.arrived(2)
        await two.alerts.stop()

    asyncio.run(main())
    firing, resolved = receiver.bodies()
    assert firing["status"] == "firing"
    assert resolved["status"] == "resolved"
    assert resolved["started_at"] == firing["started_at"] == stamp(5)


def test_status_gives_each_rule_its_measure_and_state() -> None:
    fed = Fed(rules(ERRORS), None, None)
    fed.step()
    fed.step(errors=1, ok=3)
    assert fed.alerts.status() == [
        {
            "name": "flaky-errors",
            "kind": "error_rate",
            "above": 0.05,
            "api": "flaky",
            "monitor": None,
            "feature": None,
            "window": 5,
            "for": 0,
            "severity": "warning",
            "value": 0.25,
            "state": "firing",
        }
    ]


# -- rules in the settings ---------------------------------------------------------------


def project(tmp_path: Path, alerts: Any, **settings: Any) -> Path:
    (tmp_path / "tiffin.yaml").write_text(
        yaml.safe_dump({"settings": {"alerts": alerts, **settings}}), encoding="utf-8"
    )
    return tmp_path


def test_rules_are_read_from_tiffin_yaml(tmp_path: Path) -> None:
    found = config.load(
        directory=project(
            tmp_path,
            [
                {"name": "errors", "kind": "error_rate", "above": 0.05},
                {"name": "slow", "kind": "p99_latency", "api": "predict", "above": 0.25,
                 "window": "1m", "for": "2m30s", "severity": "page"},
                {"name": "drift", "kind": "drift", "feature": "petal_width", "above": 0.2,
                 "window": 3600},
            ],
            alert_webhook="https://hooks.example.com/T0/abc",
        )
    )  # fmt: skip
    errors, slow, drift = found.alerts
    assert (errors.window, errors.for_, errors.severity, errors.api) == (300, 0, "warning", None)
    assert (slow.api, slow.window, slow.for_, slow.severity) == ("predict", 60, 150, "page")
    assert (drift.feature, drift.monitor, drift.window) == ("petal_width", None, 3600)
    assert found.alert_webhook == "https://hooks.example.com/T0/abc"
    assert found.model_dump(mode="json")["alerts"][1] == {
        "name": "slow",
        "kind": "p99_latency",
        "above": 0.25,
        "api": "predict",
        "monitor": None,
        "feature": None,
        "window": 60,
        "for": 150,
        "severity": "page",
    }  # as a bundle records it, and reads it back
    assert config.load(code=found.model_dump(mode="json")).alerts == found.alerts


@pytest.mark.parametrize(
    ("alerts", "problem"),
    [
        (
            [{"name": "e", "kind": "errors", "above": 0.1}],
            "'alerts.0' in {f}: alert rule 'e' has kind 'errors'; use error_rate, p99_latency "
            "or drift",
        ),
        (
            [{"name": "e", "kind": "error_rate", "above": 5}],
            "'alerts.0' in {f}: alert rule 'e' fires above an error rate of 5, which no share "
            "of requests can exceed; give a share from 0 to 1 (0.05 for 5%)",
        ),
        (
            [{"name": "e", "kind": "error_rate", "above": 0.1, "windw": "5m"}],
            "'alerts.0' in {f}: alert rule 'e' has an unknown key 'windw'; its keys are name, "
            "kind, above, api, monitor, feature, window, for, severity",
        ),
        (
            [{"name": "e", "kind": "drift", "api": "predict", "above": 0.1}],
            "'alerts.0' in {f}: alert rule 'e' of kind drift cannot have 'api' (it takes "
            "monitor and feature)",
        ),
        (
            [{"name": "e", "kind": "p99_latency", "feature": "x", "above": 0.1}],
            "'alerts.0' in {f}: alert rule 'e' of kind p99_latency cannot have 'feature' (it "
            "takes api)",
        ),
        (
            [{"name": "e", "kind": "drift", "above": 0.1, "window": "5 minutes"}],
            "'alerts.0' in {f}: window '5 minutes' of alert rule 'e' is not a duration: write "
            "whole seconds, or a text like '30s', '5m', '1h'",
        ),
        (
            [{"name": "e", "kind": "drift", "above": 0.1, "window": "2h"}],
            "'alerts.0' in {f}: alert rule 'e' has a window of 7200 s; give 1 s to 1 h (the "
            "server keeps an hour of its metrics)",
        ),
        (
            [{"name": "high errors", "kind": "error_rate", "above": 0.1}],
            "'alerts.0' in {f}: an alert rule's name must start with a letter and hold only "
            "letters, digits, '_', '-' and '.' (at most 63), not 'high errors'",
        ),
        (
            [{"kind": "error_rate", "above": 0.1}, {"name": "e", "kind": "drift", "above": 1}],
            "'alerts.0' in {f}: an alert rule's name must start with a letter and hold only "
            "letters, digits, '_', '-' and '.' (at most 63), not None",
        ),
        (
            [{"name": "e", "kind": "drift", "above": -1}],
            "'alerts.0.above' in {f}: Input should be greater than or equal to 0",
        ),
        (
            [
                {"name": "e", "kind": "drift", "above": 1},
                {"name": "e", "kind": "drift", "above": 2},
            ],
            "'alerts' in {f}: two alert rules are named 'e'; give each its own name",
        ),
        (
            ["error_rate > 0.05"],
            "'alerts.0' in {f}: an alert rule is a mapping of name, kind, above, api, monitor, "
            "feature, window, for, severity, not 'error_rate > 0.05'; write the rules as a list "
            "under 'alerts:' in tiffin.yaml's settings",
        ),
    ],
)
def test_bad_rules_are_refused_with_what_is_wrong(
    tmp_path: Path, alerts: list[Any], problem: str
) -> None:
    source = f"{tmp_path / 'tiffin.yaml'} (settings:)"
    with pytest.raises(ConfigError) as caught:
        config.load(directory=project(tmp_path, alerts))
    assert caught.value.message == (
        f"Bad value for setting {problem.format(f=source)}. Fix it in {source}."
    )


def test_the_webhook_is_an_http_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        config.load(environ={"TIFFIN_ALERT_WEBHOOK": "hooks.example.com/tiffin"})
    assert caught.value.message == (
        "Bad value for setting 'alert_webhook' in the environment (TIFFIN_*): Value error, the "
        "alert webhook is a URL starting with http:// or https://. Fix it in the environment "
        "(TIFFIN_*)."
    )


def test_a_rule_naming_an_api_the_service_lacks() -> None:
    found = rules({**ERRORS, "api": "predcit"})
    with pytest.raises(ConfigError) as caught:
        check(found, "iris", ["predict", "explain"])
    assert caught.value.message == (
        "Alert rule 'flaky-errors' names API 'predcit', which service 'iris' does not have "
        "(its APIs: explain, predict). Fix the rule's 'api:' in the settings."
    )
    check(rules(ERRORS, {"name": "d", "kind": "drift", "above": 1}), "iris", ["flaky"])


def test_durations_are_written_as_prometheus_writes_them() -> None:
    assert [duration(s) for s in (1, 30, 60, 300, 3600, 5400, 3630, 0)] == [
        "1s", "30s", "1m", "5m", "1h", "1h30m", "1h30s", "0s",
    ]  # fmt: skip


def test_rules_as_prometheus_alerting_rules() -> None:
    errors, slow, drifting = rules(
        {**ERRORS, "window": "5m", "for": "1m"},
        {"name": "slow", "kind": "p99_latency", "above": 0.25, "window": 60, "severity": "page"},
        {"name": "drifting", "kind": "drift", "monitor": "iris", "feature": 'a "b"', "above": 0.2},
    )
    matchers = {"job": "iris", "namespace": "ml"}
    assert prometheus_rule(errors, matchers) == {
        "alert": "flaky-errors",
        "expr": 'sum(rate(tiffin_requests_total{job="iris",namespace="ml",api="flaky",'
        'status=~"5.."}[5m])) / sum(rate(tiffin_requests_total{job="iris",namespace="ml",'
        'api="flaky"}[5m])) > 0.05',
        "for": "1m",
        "labels": {"severity": "warning"},
        "annotations": {"summary": "Error rate of API 'flaky' above 5% over 5m"},
    }
    assert prometheus_rule(slow, {"job": "iris"}) == {
        "alert": "slow",
        "expr": "histogram_quantile(0.99, sum by (le) (rate(tiffin_request_duration_seconds_"
        'bucket{job="iris"}[1m]))) > 0.25',
        "labels": {"severity": "page"},
        "annotations": {"summary": "p99 latency of all APIs above 0.25 s over 1m"},
    }
    assert prometheus_rule(drifting, {"job": "iris"})["expr"] == (
        'max(avg_over_time(tiffin_drift_score{job="iris",monitor="iris",feature="a \\"b\\""}'
        "[5m])) > 0.2"
    )


# -- a real server with two workers ------------------------------------------------------

SERVICE = """
from pathlib import Path

import tiffin


@tiffin.service(name="alerting", workers=2)
class Alerting:
    @tiffin.api
    def flaky(self, x: int) -> int:
        if Path("failing").exists():
            raise RuntimeError("failing on purpose")
        return x

    @tiffin.api
    def steady(self, x: int) -> int:
        return x
"""


def serve_with_rules(directory: Path, webhook: str, **rule: Any) -> Any:
    (directory / "alerting.py").write_text(SERVICE, encoding="utf-8")
    (directory / "tiffin.yaml").write_text(
        yaml.safe_dump(
            {
                "service": "alerting:Alerting",
                "settings": {
                    "history_interval": 1,
                    "alert_webhook": webhook,
                    "alerts": [
                        {"name": "flaky-errors", "kind": "error_rate", "api": "flaky",
                         "above": 0.05, "window": "3s", **rule},
                    ],
                },
            }
        ),
        encoding="utf-8",
    )  # fmt: skip
    return start_server(directory, "--log-format", "json", home=directory / "home")


@pytest.mark.slow
def test_a_real_server_of_two_workers_posts_one_firing_and_one_resolved(
    tmp_path: Path, receiver: Receiver
) -> None:
    server = serve_with_rules(tmp_path, receiver.url)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/dashboard/data").json()["alerts"][0]["state"] == "ok"
            (tmp_path / "failing").touch()
            for x in range(10):  # on new connections, so both workers answer some
                assert httpx.post(f"{server.url}/flaky", json={"x": x}).status_code == 500
            (firing,) = receiver.wait(1)
            (tmp_path / "failing").unlink()
            # 2 answers a second: while a failure is in the window, its share stays above 5%
            while len(receiver.posts) < 2:
                assert client.post("/flaky", json={"x": 1}).status_code == 200
                time.sleep(0.5)
                assert time.monotonic() - firing.at < 20, "no resolution within 20 s"
            time.sleep(3)  # anything sent twice would have come by now
    finally:
        server.stop()
    assert len(receiver.posts) == 2
    firing, resolved = receiver.posts
    common = {
        "alert": "flaky-errors",
        "service": "alerting",
        "instance": socket.gethostname(),
        "kind": "error_rate",
        "api": "flaky",
        "monitor": None,
        "feature": None,
        "above": 0.05,
        "window": 3,
        "for": 0,
        "severity": "warning",
    }
    started = firing.body.pop("started_at")
    assert ISO.fullmatch(started)
    assert firing.body == {
        **common,
        "status": "firing",
        "value": 1.0,
        "summary": "Error rate of API 'flaky' is 100% over the last 3s, above 5%.",
        "resolved_at": None,
    }
    ended = resolved.body.pop("resolved_at")
    assert ISO.fullmatch(ended)
    assert ended >= started
    assert resolved.body == {
        **common,
        "status": "resolved",
        "value": 0.0,
        "summary": "Error rate of API 'flaky' is 0% over the last 3s, not above 5%.",
        "started_at": started,
    }
    lines = [r for r in server.records() if r.get("logger") == "tiffin.alerts"]
    assert [(r["level"], r["message"]) for r in lines] == [
        (
            "warning",
            "Alert flaky-errors is firing: Error rate of API 'flaky' is 100% over the last 3s, "
            "above 5%.",
        ),
        (
            "info",
            "Alert flaky-errors resolved: Error rate of API 'flaky' is 0% over the last 3s, not "
            "above 5%.",
        ),
    ]
    assert len({r["pid"] for r in lines}) == 1  # one worker measured


@pytest.mark.slow
def test_a_rule_naming_no_api_of_the_service_stops_the_server_before_it_starts(
    tmp_path: Path,
) -> None:
    (tmp_path / "alerting.py").write_text(SERVICE, encoding="utf-8")
    (tmp_path / "tiffin.yaml").write_text(
        yaml.safe_dump(
            {
                "service": "alerting:Alerting",
                "settings": {
                    "alerts": [{"name": "e", "kind": "error_rate", "api": "flakey", "above": 0.1}]
                },
            }
        ),
        encoding="utf-8",
    )
    process = launch(tmp_path, home=tmp_path / "home")
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert code == 2
    assert (tmp_path / "serve.err").read_text().strip().splitlines() == [
        "Error: Alert rule 'e' names API 'flakey', which service 'alerting' does not have (its "
        "APIs: flaky, steady). Fix the rule's 'api:' in the settings."
    ]
