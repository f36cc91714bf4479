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
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tiffin.exceptions import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "current", "load", "project_file"]

ENV_PREFIX = "TIFFIN_"
_TASK_STORES = ("redis://", "rediss://", "sqlite:///")


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

    @field_validator("tasks_url")
    @classmethod
    def _task_store_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_TASK_STORES):
            raise ValueError(
                "a task store is given by a URL starting with redis://, rediss:// or sqlite:///"
            )
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
