"""Settings: one frozen object, read once at the edge and passed down.

Each layer overrides the one before it:

    built-in defaults < arguments written in code < tiffin.yaml ``settings:``
    (or ``[tool.tiffin.settings]`` in pyproject.toml) < ``TIFFIN_*`` environment < CLI flags

tiffin.yaml's top-level ``service:`` key (``service: service:Iris``) is the ``service``
setting, so a project names its service once for ``tiffin serve`` and ``tiffin build``.

``load()`` builds a ``Settings`` from explicit inputs and has no side effects;
``current()`` is the process-wide one, read on first use from the working directory and
the environment.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tiffin.exceptions import ConfigError

__all__ = ["ENV_PREFIX", "AlertRule", "Settings", "current", "load", "project_file"]

ENV_PREFIX = "TIFFIN_"
_TASK_STORES = ("redis://", "rediss://", "sqlite:///")
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_ALERT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,62}")
_ALERT_KEYS = ("name", "kind", "above", "api", "monitor", "feature", "window", "for", "severity")


def _duration(value: Any, rule: str, key: str) -> int:
    """Whole seconds, from a number or a text like ``90s``, ``5m``, ``1h30m``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    found = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None or not value.strip():
        raise PydanticCustomError(
            "alert_rule",
            "{key} {value} of alert rule '{rule}' is not a duration: write whole seconds, or "
            "a text like '30s', '5m', '1h'",
            {"key": key, "value": repr(value), "rule": rule},
        )
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return hours * 3600 + minutes * 60 + seconds


class AlertRule(BaseModel):
    """One alert rule. The server measures it every ``history_interval`` seconds, and
    logs the alert and posts it to ``alert_webhook`` when it fires and when it resolves
    (``tiffin.observability.alerts``).

    Attributes:
        name: the alert's name, unique among the rules: a letter, then letters, digits,
            ``_``, ``-`` and ``.``.
        kind: what is measured over the last ``window``: ``error_rate``, the share of
            requests answered with a 5xx status (0 to 1); ``p99_latency``, the 99th
            percentile of request durations, in seconds; ``drift``, the mean drift score
            (``tiffin_drift_score``) of the feature that drifts most.
        above: the alert fires while the measure is above this.
        api: count this API's requests only (``error_rate``, ``p99_latency``); none: all.
        monitor, feature: take these drift scores only (``drift``); none: all.
        window: what the measure covers: seconds, or a text like ``30s``, ``5m``, ``1h``
            (default 5m, at most 1h).
        for: how long the measure must stay above before the alert fires (default 0: at
            once), written like ``window``.
        severity: a label passed on with the alert (default ``warning``).

    Example (tiffin.yaml)::

        settings:
          alerts:
            - {name: predict-errors, kind: error_rate, api: predict, above: 0.05, window: 5m}
    """

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True
    )

    name: str
    kind: Literal["error_rate", "p99_latency", "drift"]
    above: float = Field(ge=0)
    api: str | None = None
    monitor: str | None = None
    feature: str | None = None
    window: int = Field(default=300, ge=1, le=3600)
    for_: int = Field(default=0, ge=0, alias="for")
    severity: str = "warning"

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        if isinstance(data, AlertRule):
            return data
        if not isinstance(data, Mapping):
            raise PydanticCustomError(
                "alert_rule",
                "an alert rule is a mapping of {keys}, not {value}; write the rules as a list "
                "under 'alerts:' in tiffin.yaml's settings",
                {"keys": ", ".join(_ALERT_KEYS), "value": repr(data)},
            )
        name = data.get("name")
        if not isinstance(name, str) or not _ALERT_NAME.fullmatch(name):
            raise PydanticCustomError(
                "alert_rule",
                "an alert rule's name must start with a letter and hold only letters, "
                "digits, '_', '-' and '.' (at most 63), not {value}",
                {"value": repr(name)},
            )
        unknown = sorted(str(key) for key in data if key not in _ALERT_KEYS)
        if unknown:
            raise PydanticCustomError(
                "alert_rule",
                "alert rule '{rule}' has an unknown key '{key}'; its keys are {keys}",
                {"rule": name, "key": unknown[0], "keys": ", ".join(_ALERT_KEYS)},
            )
        kind = data.get("kind")
        if kind not in ("error_rate", "p99_latency", "drift"):
            raise PydanticCustomError(
                "alert_rule",
                "alert rule '{rule}' has kind {value}; use error_rate, p99_latency or drift",
                {"rule": name, "value": repr(kind)},
            )
        wrong = ("monitor", "feature") if kind != "drift" else ("api",)
        for key in wrong:
            if data.get(key) is not None:
                allowed = "api" if kind != "drift" else "monitor and feature"
                raise PydanticCustomError(
                    "alert_rule",
                    "alert rule '{rule}' of kind {kind} cannot have '{key}' (it takes {allowed})",
                    {"rule": name, "kind": kind, "key": key, "allowed": allowed},
                )
        above = data.get("above")
        if kind == "error_rate" and isinstance(above, int | float) and above >= 1:
            raise PydanticCustomError(
                "alert_rule",
                "alert rule '{rule}' fires above an error rate of {above}, which no share of "
                "requests can exceed; give a share from 0 to 1 (0.05 for 5%)",
                {"rule": name, "above": above},
            )
        read = dict(data)
        for key in ("window", "for"):
            if read.get(key) is not None:
                read[key] = _duration(read[key], name, key)
        if not 1 <= read.get("window", 1) <= 3600:
            raise PydanticCustomError(
                "alert_rule",
                "alert rule '{rule}' has a window of {value} s; give 1 s to 1 h (the server "
                "keeps an hour of its metrics)",
                {"rule": name, "value": read["window"]},
            )
        return read


class Settings(BaseModel):
    """Resolved settings. Frozen: derive a changed copy with ``model_copy(update=...)``.

    Each setting is also read from ``TIFFIN_<NAME>`` (lists as comma-separated values).

    Attributes:
        home: where the local model and bundle stores live (default ``~/.tiffin``).
        debug: show tracebacks for CLI errors.
        durable_writes: fsync stored files before they become visible, so a power loss
            cannot leave a half-written model (slower).
        remote: the default remote store for push and pull, as a URL (``file:///mnt/models``,
            ``s3://bucket/prefix``, ``sqlite:///registry.db``, ``postgresql://...``).
        service: the service to serve, as ``module:Class`` (``tiffin serve`` with no
            argument); in tiffin.yaml it is the top-level ``service:`` key.
        host, port: where the server listens.
        workers: worker processes serving requests.
        start_method: how workers start: ``fork`` from the server process, which has
            imported the service already (fast start, shared memory), or ``spawn`` a fresh
            interpreter each (for a service whose module starts threads or a GPU context
            when imported).
        timeout: seconds an API call may run before the caller gets 504.
        max_concurrency: API calls running at once in one worker.
        max_queue: requests that may wait for a slot in one worker; past it, 503.
        max_body_size: the largest request body in bytes; larger ones get 413.
        grace_period: seconds in-flight requests get to finish after SIGTERM.
        api_keys: when not empty, API requests need one of these keys
            (``Authorization: Bearer <key>`` or ``X-API-Key: <key>``).
        docs_need_key, metrics_need_key: whether ``/docs`` (and ``/openapi.json``) and
            ``/metrics`` need a key too when ``api_keys`` is set.
        cors_origins: origins allowed to call the API from a browser (``*`` for any);
            empty turns CORS off.
        log_format: ``json``, ``console``, or ``auto`` (console on a terminal, else JSON).
        log_level: ``debug``, ``info``, ``warning`` or ``error``.
        access_log: one log line per request.
        tasks_url: where ``@tiffin.task`` jobs are queued and their results kept:
            ``redis://host:port/db`` (or ``rediss://``) for replicas sharing one queue,
            ``sqlite:///path/to/file.db``; none: ``<home>/tasks/<service>.db``.
        task_concurrency: tasks running at once in one worker, in threads of their own
            (not counted in ``max_concurrency``); 0 runs none there, e.g. on replicas that
            only take submissions.
        task_lease: seconds a worker holds a running task without renewing it (it renews
            every second); a task whose worker died runs again once its lease expires.
        task_result_ttl: seconds a finished task's status and result are kept
            (``@tiffin.task(result_ttl=...)`` sets it per task).
        grpc_port: where the server also answers gRPC (the Open Inference Protocol's
            ``GRPCInferenceService``, and any plugin protocol's); none: no gRPC. Needs
            ``tiffin[grpc]``.
        protocols: the serving protocols every service gets beside its own APIs (see
            ``tiffin.protocols``): ``all`` installed ones, ``none``, or their names
            (``oip``).
        tracing: OpenTelemetry spans for each request (``tiffin.observability.tracing``):
            ``on`` (needs ``tiffin[otel]``), ``off``, or ``auto``: on in ``tiffin serve``
            when the SDK is installed and the ``OTEL_*`` environment names an exporter or
            an OTLP endpoint.
        log_request_bodies: log the body of each API request (its first 2 KiB; JSON, form
            and text bodies only, never files, multipart forms or other binary bodies)
            at debug level on the ``tiffin.body`` logger, shown whatever ``log_level``
            says. Off by default: bodies may hold personal data.
        history_interval: seconds between two samples of the server's metrics, which
            ``/dashboard`` charts over the last hour and alert rules are measured on.
        alerts: alert rules (``AlertRule``); the server logs each alert that fires or
            resolves, and posts it to ``alert_webhook``.
        alert_webhook: an ``http://`` or ``https://`` URL each alert is POSTed to as JSON.
        monitor_dir: where ``tiffin.monitor`` writes what it logs, as
            ``<monitor_dir>/<service>/<monitor>/``; none: ``<home>/monitoring``.
        monitor_format: the store's files: ``jsonl`` (JSON lines), or ``parquet`` (each
            file is converted when it is rotated; needs ``tiffin[monitor]``).
        monitor_sample_rate: the share of records a monitor keeps, from 0 to 1, unless
            ``tiffin.monitor(name, sample_rate=...)`` says otherwise.
        monitor_queue_size: records a worker holds for its writer thread; past it a
            record is dropped (and counted in ``tiffin_monitor_dropped_total``), never
            waited for.
        monitor_rotate_seconds, monitor_rotate_bytes: a store file is finished and a new
            one begun when the file is this old or this large.
        monitor_reference: the data set each monitor's live drift is measured against
            (``tiffin_drift_score``): a file (Parquet, CSV or JSON lines) for every
            monitor, or ``monitor=path`` entries, comma-separated or as a list; a relative
            path is read from the directory the server runs in; none: no live drift.
        monitor_drift_interval: seconds between two computations of the live drift.
        monitor_drift_window: seconds of the most recent records the live drift covers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    home: Path = Path("~/.tiffin")
    debug: bool = False
    durable_writes: bool = False
    remote: str | None = None
    service: str | None = None
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container must listen on every interface
    port: int = Field(default=3000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    start_method: Literal["fork", "spawn"] = "fork"
    timeout: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=32, ge=1)
    max_queue: int = Field(default=128, ge=0)
    max_body_size: int = Field(default=64 << 20, ge=1)
    grace_period: float = Field(default=30.0, ge=0)
    api_keys: tuple[str, ...] = ()
    docs_need_key: bool = False
    metrics_need_key: bool = False
    cors_origins: tuple[str, ...] = ()
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    tasks_url: str | None = None
    task_concurrency: int = Field(default=2, ge=0)
    task_lease: float = Field(default=30.0, ge=1)
    task_result_ttl: float = Field(default=86400.0, gt=0)
    grpc_port: int | None = Field(default=None, ge=0, le=65535)
    protocols: tuple[str, ...] = ("all",)
    tracing: Literal["auto", "on", "off"] = "auto"
    log_request_bodies: bool = False
    history_interval: float = Field(default=5.0, ge=1, le=60)
    alerts: tuple[AlertRule, ...] = ()
    alert_webhook: str | None = None
    monitor_dir: Path | None = None
    monitor_format: Literal["jsonl", "parquet"] = "jsonl"
    monitor_sample_rate: float = Field(default=1.0, ge=0, le=1)
    monitor_queue_size: int = Field(default=10_000, ge=1)
    monitor_rotate_seconds: float = Field(default=3600.0, gt=0)
    monitor_rotate_bytes: int = Field(default=64 << 20, ge=1)
    monitor_reference: str | tuple[str, ...] | None = None
    monitor_drift_interval: float = Field(default=60.0, gt=0)
    monitor_drift_window: float = Field(default=3600.0, gt=0)

    @field_validator("tasks_url")
    @classmethod
    def _task_store_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_TASK_STORES):
            raise ValueError(
                "a task store is given by a URL starting with redis://, rediss:// or sqlite:///"
            )
        return value

    @field_validator("alerts")
    @classmethod
    def _alert_names(cls, value: tuple[AlertRule, ...]) -> tuple[AlertRule, ...]:
        names = [rule.name for rule in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise PydanticCustomError(
                "alert_rule",
                "two alert rules are named '{name}'; give each its own name",
                {"name": twice[0]},
            )
        return value

    @field_validator("alert_webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("the alert webhook is a URL starting with http:// or https://")
        return value

    def model_post_init(self, context: Any, /) -> None:
        object.__setattr__(self, "home", self.home.expanduser())


def _describe(error: ValidationError, source: str) -> ConfigError:
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(root)"
    if first["type"] == "extra_forbidden":
        known = ", ".join(sorted(Settings.model_fields))
        message = f"Unknown setting '{key}' in {source}. Known settings: {known}."
    else:
        message = f"Bad value for setting '{key}' in {source}: {first['msg']}. Fix it in {source}."
    return ConfigError(message, detail={"key": key, "source": source, "problem": first["msg"]})


def _validate(layer: Mapping[str, Any], source: str) -> None:
    try:
        Settings.model_validate(dict(layer))
    except ValidationError as exc:
        raise _describe(exc, source) from None


def project_file(directory: Path) -> tuple[Any, Path | None]:
    """What the project in ``directory`` says to tiffin: the whole of ``tiffin.yaml``, or
    else the ``[tool.tiffin]`` table of ``pyproject.toml``, and the file it came from
    (None when there is neither). Settings are its ``settings`` key; the build spec
    (``tiffin.bundles.spec``) is the rest.

    Raises:
        ConfigError: the file is not valid YAML or TOML.
    """
    project = directory / "tiffin.yaml"
    if project.is_file():
        try:
            return yaml.safe_load(project.read_text(encoding="utf-8")) or {}, project
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"{project} is not valid YAML ({exc}). Fix the file's syntax.",
                detail={"source": str(project)},
            ) from None
    pyproject = directory / "pyproject.toml"
    if not pyproject.is_file():
        return {}, None
    try:
        toml = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{pyproject} is not valid TOML ({exc}). Fix the file's syntax.",
            detail={"source": str(pyproject)},
        ) from None
    table: Any = toml
    for key in ("tool", "tiffin"):
        if not isinstance(table, dict):  # e.g. `tool = 5`
            break
        table = table.get(key) or {}
    return table, pyproject


def _file_layer(directory: Path) -> tuple[dict[str, Any], str]:
    data, path = project_file(directory)
    if path is None:
        return {}, ""
    if path.name == "tiffin.yaml":
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path} must hold a mapping of keys, not {type(data).__name__}.",
                detail={"source": str(path)},
            )
        section = data.get("settings") or {}
        source = f"{path} (settings:)"
        if data.get("service") is not None and isinstance(section, dict):
            # the top-level `service:` names what `tiffin serve` and `tiffin build` use
            if section.get("service", data["service"]) != data["service"]:
                raise ConfigError(
                    f"{path} names the service twice, differently: 'service:' and "
                    "'settings: service:'. Keep the top-level 'service:' only.",
                    detail={"source": str(path)},
                )
            section = {**section, "service": data["service"]}
    else:
        source = f"{path} ([tool.tiffin.settings])"
        section = (data.get("settings") or {}) if isinstance(data, dict) else data
    if not isinstance(section, dict):
        raise ConfigError(
            f"The settings in {source} must be a mapping of setting names to values.",
            detail={"source": source},
        )
    return section, source


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        value = environ.get(ENV_PREFIX + name.upper())
        if value is None or value == "":
            continue
        if get_origin(info.annotation) is tuple:
            layer[name] = tuple(part.strip() for part in value.split(",") if part.strip())
        else:
            layer[name] = value
    return layer


def load(
    *,
    code: Mapping[str, Any] | None = None,
    directory: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from each layer, later layers overriding earlier ones.

    Args:
        code: values written in code, e.g. the arguments of ``@tiffin.service``.
        directory: where to look for ``tiffin.yaml`` or ``pyproject.toml`` (none when omitted).
        environ: the environment to read ``TIFFIN_*`` variables from (none when omitted).
        flags: values given on the command line; ``None`` values are ignored.

    Example:
        settings = tiffin.config.load(environ=os.environ, directory=Path.cwd())
        settings.home  # PosixPath('/home/me/.tiffin')
    """
    merged: dict[str, Any] = {}
    layers: list[tuple[Mapping[str, Any], str]] = [(code or {}, "code arguments")]
    if directory is not None:
        file_layer, file_source = _file_layer(directory)
        layers.append((file_layer, file_source))
    if environ is not None:
        layers.append((_env_layer(environ), "the environment (TIFFIN_*)"))
    layers.append(({k: v for k, v in (flags or {}).items() if v is not None}, "command-line flags"))
    for layer, source in layers:
        _validate(layer, source)
        merged.update(layer)
    return Settings.model_validate(merged)


@functools.cache
def current() -> Settings:
    """The process's settings, read once from the working directory and the environment."""
    return load(directory=Path.cwd(), environ=os.environ)
