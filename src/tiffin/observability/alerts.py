"""Alerts: rules in the settings, measured on the server's history, posted to a webhook.

A rule (``alerts:`` in tiffin.yaml's ``settings:``; ``tiffin.config.AlertRule`` holds
its keys) names a measure over a window (the 5xx share of requests, the p99 latency, a
drift score) and a threshold. After each sample of the history
(``tiffin.observability.history``, every ``history_interval`` seconds) each rule moves
between three states::

    ok ──above──> pending ──still above after `for`──> firing ──not above──> ok
     └──────────────above, when `for` is 0─────────────────┘    (resolved)

A measure without data (no requests in the window, no drift score) is not above. Each
firing is logged at WARNING and each resolution at INFO (logger ``tiffin.alerts``),
and, with ``alert_webhook`` set, POSTed there::

    POST <alert_webhook>
    Content-Type: application/json
    Idempotency-Key: <one id per notification, the same on each retry>

    {"alert": "predict-errors", "status": "firing", "service": "iris",
     "instance": "<host name>", "kind": "error_rate", "api": "predict",
     "monitor": null, "feature": null, "above": 0.05, "window": 300, "for": 0,
     "severity": "warning", "value": 0.125,
     "summary": "Error rate of API 'predict' is 12.5% over the last 5m, above 5%.",
     "started_at": "2026-11-24T15:30:12Z", "resolved_at": null}

``status`` is ``firing`` or ``resolved``; ``value`` is the measure when the state
changed (null for a resolution for want of data); ``window`` and ``for`` are seconds;
``started_at`` is when the alert fired, ``resolved_at`` when it resolved. A 2xx answer
delivers a notification; a connection error, a timeout (``TIMEOUT`` seconds), a 408, 429
or 5xx answer is tried again after 1, 2, 4 and 8 s (``ATTEMPTS`` tries in all); another
answer is not. Notifications go out one at a time, in order, from a task of their own:
measuring never waits for the webhook, and requests wait for neither. The URL is never
logged (only its host), since webhook URLs often hold a token; for the same reason, give
such a URL as ``TIFFIN_ALERT_WEBHOOK`` in the environment rather than in tiffin.yaml,
whose settings a bundle records.

Each server measures its own metrics: with several replicas, each posts its own alerts
(``instance`` tells them apart). ``tiffin deploy kubernetes`` also writes the rules as a
PrometheusRule (``prometheus_rule``), for Prometheus to measure over every replica.

**One process per server.** With several workers, each keeps the same history (it
reads the metrics of all of them), and one of them measures and posts: the one holding
an exclusive ``flock`` on ``alerts.lock`` in the server's metrics directory
(``PROMETHEUS_MULTIPROC_DIR``). The holder writes each rule's state beside it
(``alerts.json``, replaced whole) whenever one changes. When the holder exits, the
kernel releases the lock, another worker takes it within one interval and carries on
from that state, so a firing alert is resolved once and never fired twice. Not the
supervisor: it forks workers from itself, and must not hold the threads that sending
HTTP brings (name lookups run in a thread pool) when it does. Not a fixed worker: its
state would die with it. An app served in one process (``tiffin.testing``, an app run
by uvicorn itself) measures in that process.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tiffin.config import AlertRule
from tiffin.exceptions import ConfigError
from tiffin.observability.history import History

__all__ = ["ATTEMPTS", "TIMEOUT", "Alerts", "check", "duration", "prometheus_rule"]

ATTEMPTS = 5
"""Tries to deliver one notification."""
FIRST_RETRY = 1.0
"""Seconds before the second try; each later one waits twice as long as the one before."""
TIMEOUT = 5.0
"""Seconds one try may take."""
LOCK_FILE = "alerts.lock"
STATE_FILE = "alerts.json"

log = logging.getLogger("tiffin.alerts")

Phase = Literal["ok", "pending", "firing"]


def check(rules: Sequence[AlertRule], service: str, apis: Iterable[str]) -> None:
    """Raise ``ConfigError`` when a rule names an API the service does not have."""
    known = sorted(apis)
    for rule in rules:
        if rule.api is not None and rule.api not in known:
            raise ConfigError(
                f"Alert rule '{rule.name}' names API '{rule.api}', which service '{service}' "
                f"does not have (its APIs: {', '.join(known) or 'none'}). Fix the rule's 'api:' "
                "in the settings.",
                detail={"alert": rule.name, "api": rule.api},
            )


def duration(seconds: int) -> str:
    """Whole seconds as a Prometheus duration: ``300`` -> ``5m``, ``5400`` -> ``1h30m``."""
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{seconds}s" if seconds or not text else "")


def prometheus_rule(rule: AlertRule, matchers: Mapping[str, str]) -> dict[str, Any]:
    """``rule`` as a Prometheus alerting rule over tiffin's metrics, the series chosen by
    ``matchers`` (label -> value) and the rule's own ``api``, ``monitor``, ``feature``.

    Prometheus measures what the server does, over every series it scrapes that the
    matchers select (all the pods of a Deployment, where the server measures itself)::

        error_rate   sum(rate(tiffin_requests_total{..., status=~"5.."}[W]))
                       / sum(rate(tiffin_requests_total{...}[W])) > ABOVE
        p99_latency  histogram_quantile(0.99, sum by (le)
                       (rate(tiffin_request_duration_seconds_bucket{...}[W]))) > ABOVE
        drift        max(avg_over_time(tiffin_drift_score{...}[W])) > ABOVE

    Example:
        prometheus_rule(rule, {"job": "iris"})["expr"]
    """
    own = {"api": rule.api, "monitor": rule.monitor, "feature": rule.feature}
    chosen = {**matchers, **{key: value for key, value in own.items() if value is not None}}
    window = duration(rule.window)
    above = repr(rule.above)
    if rule.kind == "error_rate":
        errors = _selector({**chosen, "status": "5.."}, regex="status")
        every = _selector(chosen)
        expr = (
            f"sum(rate(tiffin_requests_total{errors}[{window}])) / "
            f"sum(rate(tiffin_requests_total{every}[{window}])) > {above}"
        )
    elif rule.kind == "p99_latency":
        expr = (
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(tiffin_request_duration_seconds_bucket{_selector(chosen)}[{window}]))) "
            f"> {above}"
        )
    else:
        expr = f"max(avg_over_time(tiffin_drift_score{_selector(chosen)}[{window}])) > {above}"
    found: dict[str, Any] = {"alert": rule.name, "expr": expr}
    if rule.for_:
        found["for"] = duration(rule.for_)
    found["labels"] = {"severity": rule.severity}
    found["annotations"] = {"summary": _condition(rule)}
    return found


def _selector(matchers: Mapping[str, str], *, regex: str | None = None) -> str:
    def quoted(value: str) -> str:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'

    parts = [
        f"{key}{'=~' if key == regex else '='}{quoted(value)}" for key, value in matchers.items()
    ]
    return "{" + ",".join(parts) + "}"


def _condition(rule: AlertRule) -> str:
    """What a rule watches for, in words."""
    if rule.kind == "drift":
        what = "Drift score" + _drift_scope(rule)
    else:
        target = f"API '{rule.api}'" if rule.api is not None else "all APIs"
        what = ("Error rate" if rule.kind == "error_rate" else "p99 latency") + f" of {target}"
    return f"{what} above {_amount(rule, rule.above)} over {duration(rule.window)}"


def _drift_scope(rule: AlertRule) -> str:
    scope = [f"feature '{rule.feature}'"] if rule.feature is not None else []
    scope += [f"monitor '{rule.monitor}'"] if rule.monitor is not None else []
    return " of " + " of ".join(scope) if scope else ""


def _timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class _State:
    phase: Phase = "ok"
    since: float | None = None  # pending since, or firing since
    value: float | None = None


@dataclass(frozen=True)
class _Measure:
    value: float | None
    what: str  # "Error rate of API 'predict'"


class Alerts:
    """Measures the alert rules after each sample of ``history`` and sends what changes;
    a part of ``App.background`` (see the module docstring).

    Args:
        service: the service's name, sent with each alert.
        rules: the alert rules.
        history: the history the rules are measured on.
        webhook: where alerts are POSTed; None: they are logged only.
        directory: the server's metrics directory, shared by its workers; None when the
            app is served by this process alone.

    Example:
        alerts = Alerts("iris", settings.alerts, history, webhook=settings.alert_webhook)
        await alerts.start()
    """

    def __init__(
        self,
        service: str,
        rules: Sequence[AlertRule],
        history: History,
        *,
        webhook: str | None,
        directory: str | None,
    ) -> None:
        check(rules, service, history.apis)
        self.service = service
        self.rules = tuple(rules)
        self.history = history
        self.webhook = webhook
        self.states = {rule.name: _State() for rule in self.rules}
        self._lock_path = None if directory is None else Path(directory) / LOCK_FILE
        self._state_path = None if directory is None else Path(directory) / STATE_FILE
        self._lock: int | None = None
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._client: Any = None  # an httpx.AsyncClient, once there is a webhook
        self._instance = socket.gethostname()
        if self.rules:
            history.subscribe(self.evaluate)

    async def start(self) -> None:
        if self.rules and self.webhook is not None:
            # imported here: httpx costs every worker ~50 ms to start, and most have no webhook
            import httpx

            self._client = httpx.AsyncClient(timeout=TIMEOUT)
            self._sender = asyncio.create_task(self._send_all(), name="tiffin-alerts")

    async def stop(self) -> None:
        if self._sender is not None:
            # what is on its way gets a moment to arrive
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), 2.0)
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- measuring -------------------------------------------------------------------

    def measure(self, rule: AlertRule) -> _Measure:
        """A rule's measure now, and what it is of, for messages."""
        history = self.history
        target = f"API '{rule.api}'" if rule.api is not None else "all APIs"
        if rule.kind == "error_rate":
            return _Measure(history.error_rate(rule.window, rule.api), f"Error rate of {target}")
        if rule.kind == "p99_latency":
            return _Measure(
                history.quantile(0.99, rule.window, rule.api), f"p99 latency of {target}"
            )
        found = history.drift(rule.window, rule.monitor, rule.feature)
        if found is not None:
            value, monitor, feature = found
            return _Measure(value, f"Drift of feature '{feature}' of monitor '{monitor}'")
        return _Measure(None, "Drift" + _drift_scope(rule))

    def evaluate(self) -> None:
        """Measure every rule and act on the changes; only in the process that holds the
        lock (see the module docstring)."""
        if not self._holds_lock():
            return
        snapshots = self.history.snapshots
        now = snapshots[-1].time if snapshots else time.time()  # the time of the measure
        changed = False
        for rule in self.rules:
            state = self.states[rule.name]
            measure = self.measure(rule)
            above = measure.value is not None and measure.value > rule.above
            state.value = measure.value
            if above and state.phase == "ok" and rule.for_ > 0:
                state.phase, state.since = "pending", now
                changed = True
            elif above and (
                state.phase == "ok"
                or (state.phase == "pending" and now - (state.since or now) >= rule.for_)
            ):
                state.phase, state.since = "firing", now
                self._notify(rule, "firing", measure, now, now)
                changed = True
            elif not above and state.phase != "ok":
                if state.phase == "firing":
                    self._notify(rule, "resolved", measure, state.since, now)
                state.phase, state.since = "ok", None
                changed = True
        if changed:
            self._save()

    def status(self) -> list[dict[str, Any]]:
        """Each rule, its measure now, and its state as the measuring process has it."""
        shared = None if self._lock is not None else self._read_states()
        found = []
        for rule in self.rules:
            phase = self.states[rule.name].phase
            if shared is not None:
                phase = shared.get(rule.name, _State()).phase
            found.append(
                {
                    **rule.model_dump(mode="json"),
                    "value": self.measure(rule).value,
                    "state": phase,
                }
            )
        return found

    # -- one process measures --------------------------------------------------------

    def _holds_lock(self) -> bool:
        if self._lock_path is None or self._lock is not None:
            return True
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another worker holds it
            os.close(fd)
            return False
        self._lock = fd
        for name, state in (self._read_states() or {}).items():
            if name in self.states:
                self.states[name] = state
        return True

    def _read_states(self) -> dict[str, _State] | None:
        if self._state_path is None:
            return None
        try:
            saved = json.loads(self._state_path.read_bytes())
            return {str(name): _State(item["phase"], item["since"]) for name, item in saved.items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return None

    def _save(self) -> None:
        if self._state_path is None:
            return
        saved = {
            name: {"phase": state.phase, "since": state.since}
            for name, state in self.states.items()
        }
        temporary = self._state_path.with_name(f".{STATE_FILE}.{os.getpid()}")
        try:
            temporary.write_text(json.dumps(saved), encoding="utf-8")
            temporary.replace(self._state_path)
        except OSError:
            log.exception("Could not save the alerts' state in %s.", self._state_path)

    # -- telling ---------------------------------------------------------------------

    def _notify(
        self,
        rule: AlertRule,
        status: Literal["firing", "resolved"],
        measure: _Measure,
        started: float | None,
        now: float,
    ) -> None:
        summary = _summary(rule, status, measure)
        extra = {"alert": rule.name, "alert_status": status, "value": measure.value}
        if status == "firing":
            log.warning("Alert %s is firing: %s", rule.name, summary, extra=extra)
        else:
            log.info("Alert %s resolved: %s", rule.name, summary, extra=extra)
        if self._sender is None:
            return
        payload = {
            "alert": rule.name,
            "status": status,
            "service": self.service,
            "instance": self._instance,
            "kind": rule.kind,
            "api": rule.api,
            "monitor": rule.monitor,
            "feature": rule.feature,
            "above": rule.above,
            "window": rule.window,
            "for": rule.for_,
            "severity": rule.severity,
            "value": measure.value,
            "summary": summary,
            "started_at": _timestamp(started),
            "resolved_at": _timestamp(now) if status == "resolved" else None,
        }
        self._queue.put_nowait((rule.name, json.dumps(payload).encode()))

    async def _send_all(self) -> None:
        while True:
            name, body = await self._queue.get()
            try:
                await self._deliver(name, body)
            except Exception:
                log.exception("Sending alert %s failed.", name)
            finally:
                self._queue.task_done()

    async def _deliver(self, name: str, body: bytes) -> None:
        import httpx

        assert self._client is not None
        assert self.webhook is not None
        headers = {"content-type": "application/json", "idempotency-key": uuid.uuid4().hex}
        host = httpx.URL(self.webhook).host  # not the URL: it may hold a token
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self._client.post(self.webhook, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                code = response.status_code
                if response.is_success:
                    return
                if code < 500 and code not in (408, 429):
                    log.error(
                        "The alert webhook at %s refused alert %s with status %d; it is not "
                        "sent again. Check the webhook's URL and what it accepts.",
                        host,
                        name,
                        code,
                        extra={"alert": name, "webhook_status": code},
                    )
                    return
                problem = f"status {code}"
            if attempt == ATTEMPTS:
                log.error(
                    "Could not send alert %s to the webhook at %s in %d tries (last: %s). "
                    "Check that the webhook is up and reachable from the server.",
                    name,
                    host,
                    ATTEMPTS,
                    problem,
                    extra={"alert": name},
                )
                return
            pause = FIRST_RETRY * 2 ** (attempt - 1)
            log.warning(
                "Sending alert %s to the webhook at %s failed (%s); trying again in %g s.",
                name,
                host,
                problem,
                pause,
                extra={"alert": name},
            )
            await asyncio.sleep(pause)


def _amount(rule: AlertRule, value: float) -> str:
    if rule.kind == "error_rate":
        return f"{value * 100:.3g}%"
    if rule.kind == "p99_latency":
        return f"{value:.3g} s"
    return f"{value:.3g}"


def _summary(rule: AlertRule, status: str, measure: _Measure) -> str:
    window = duration(rule.window)
    if measure.value is None:
        missing = "no drift score" if rule.kind == "drift" else "no requests"
        return f"{measure.what}: {missing} over the last {window}."
    amount, limit = _amount(rule, measure.value), _amount(rule, rule.above)
    if status == "firing":
        return f"{measure.what} is {amount} over the last {window}, above {limit}."
    return f"{measure.what} is {amount} over the last {window}, not above {limit}."
