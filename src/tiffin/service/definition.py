"""``@tiffin.service``, ``@tiffin.api`` and ``@tiffin.task``: a class whose typed methods
are API endpoints and background jobs.

Every argument is checked when the class is decorated, so a mistake fails at import
with a message saying what to change, not at the first request.

Example:
    @tiffin.service(workers=2, timeout=30)
    class Iris:
        model = tiffin.models.ref("iris:latest")

        def __init__(self) -> None:
            self.clf = self.model.load()

        @tiffin.api
        def predict(self, features: np.ndarray) -> np.ndarray:
            return self.clf.predict(features)

        @tiffin.task(retries=2)
        def report(self, rows: list[list[float]]) -> dict[str, float]: ...
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import (
    Annotated,
    Any,
    ClassVar,
    Generic,
    ParamSpec,
    TypeVar,
    get_args,
    get_origin,
    overload,
)

from tiffin.exceptions import ServiceDefinitionError
from tiffin.io import ApiIO
from tiffin.models import ModelRef
from tiffin.service.tasks import Task, task

__all__ = [
    "Api",
    "Batch",
    "Dependency",
    "ServiceSpec",
    "Task",
    "api",
    "depends",
    "on_shutdown",
    "on_startup",
    "readiness",
    "service",
    "spec_of",
    "task",
]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)

_ROUTE = re.compile(r"/[A-Za-z0-9_\-./]*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = ("/docs", "/openapi.json", "/livez", "/readyz", "/metrics", "/v2", "/tasks")
_RESOURCES = {"cpu", "memory", "gpu", "gpu_type"}
_HOOK = "__tiffin_hook__"


@dataclass(frozen=True)
class Batch:
    """Adaptive batching for an API: concurrent requests are merged into one call.

    Args:
        max_size: the most rows in one call (a request with several rows counts each).
        max_latency_ms: the longest a request may wait to join a batch.
        dim: the axis along which inputs are concatenated and outputs split.

    Example:
        @tiffin.api(batch=tiffin.Batch(max_size=64, max_latency_ms=10))
    """

    max_size: int = 32
    max_latency_ms: float = 10.0
    dim: int = 0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_size, int)
            or isinstance(self.max_size, bool)
            or self.max_size < 1
        ):
            raise ServiceDefinitionError(
                f"Batch(max_size={self.max_size!r}) must be a whole number of at least 1."
            )
        if not isinstance(self.max_latency_ms, int | float) or not self.max_latency_ms > 0:
            raise ServiceDefinitionError(
                f"Batch(max_latency_ms={self.max_latency_ms!r}) must be a number of "
                "milliseconds above 0."
            )
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 0:
            raise ServiceDefinitionError(
                f"Batch(dim={self.dim!r}) must be an axis number, 0 or more."
            )


class Api(Generic[P, R]):
    """An API method of a service: what ``@tiffin.api`` turns a method into.

    On an instance it is the plain bound method (``service.predict(x)`` calls the code);
    on the class it describes the endpoint.
    """

    def __init__(
        self,
        func: Callable[P, R],
        *,
        name: str | None,
        route: str | None,
        doc: str | None,
        batch: Batch | None,
        offload: bool = False,
    ) -> None:
        self.func = func
        self.name = name or func.__name__
        self.route = route or f"/{self.name}"
        self.doc = doc if doc is not None else inspect.cleandoc(func.__doc__ or "")
        self.batch = batch
        self.offload = offload
        self.is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        self.io = ApiIO(func, self.name)
        if self.io.stream != (
            inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
        ):
            raise ServiceDefinitionError(
                f"API '{self.name}' is annotated to return a stream but is not a generator "
                "(or the reverse). A streaming API uses 'yield' and is annotated "
                "'-> Iterator[T]' or '-> AsyncIterator[T]'.",
            )
        if batch is not None and self.io.stream:
            raise ServiceDefinitionError(
                f"API '{self.name}' streams its result, so it cannot be batched. Remove batch=.",
            )
        if batch is not None:
            _check_batchable(self.name, self.io, batch)

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    @overload
    def __get__(self, instance: None, owner: type) -> Api[P, R]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> Callable[..., R]: ...
    def __get__(self, instance: object | None, owner: type) -> Any:
        if instance is None:
            return self
        return self.func.__get__(instance, owner)

    def __repr__(self) -> str:
        return f"<tiffin api {self.name} {self.route}>"


_BATCHABLE_CODECS = frozenset({"ndarray", "tensor", "dataframe"})


def _check_batchable(name: str, io: ApiIO, batch: Batch) -> None:
    if not io.params:
        raise ServiceDefinitionError(
            f"API '{name}' is batched but takes no parameters, so there is nothing to join. "
            "Remove batch=, or add the parameter the model's rows come in."
        )
    for param in io.params:
        base = (
            get_args(param.annotation)[0]
            if get_origin(param.annotation) is Annotated
            else param.annotation
        )
        joinable = (param.codec is not None and param.codec.name in _BATCHABLE_CODECS) or (
            base is list or get_origin(base) is list
        )
        if not joinable:
            raise ServiceDefinitionError(
                f"API '{name}' is batched, so each parameter is joined with other requests' "
                f"along dim {batch.dim}; '{param.name}' cannot be. Batched parameters are numpy "
                "arrays, torch tensors, pandas DataFrames or lists; move other values into the "
                "service (or remove batch=).",
            )


def _check_api_args(
    func: Any, name: str | None, route: str | None, doc: str | None, batch: Any, *, offload: Any
) -> None:
    label = getattr(func, "__name__", repr(func))
    if isinstance(func, staticmethod | classmethod) or not inspect.isfunction(func):
        raise ServiceDefinitionError(
            f"@tiffin.api decorates a plain method (def {label}(self, ...)), not "
            f"{type(func).__name__}."
        )
    if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        raise ServiceDefinitionError(
            f"@tiffin.api(name={name!r}) on '{label}' must be a Python identifier, e.g. 'predict'."
        )
    if route is not None:
        if not isinstance(route, str) or not _ROUTE.fullmatch(route) or "//" in route:
            raise ServiceDefinitionError(
                f"@tiffin.api(route={route!r}) on '{label}' must be a path starting with '/', "
                "made of letters, digits and '_-./', e.g. '/v1/predict'."
            )
        if any(route == r or route.startswith(r + "/") for r in _RESERVED):
            raise ServiceDefinitionError(
                f"@tiffin.api(route={route!r}) on '{label}' is reserved for tiffin's own "
                f"endpoints ({', '.join(_RESERVED)}). Choose another route."
            )
    if doc is not None and not isinstance(doc, str):
        raise ServiceDefinitionError(f"@tiffin.api(doc=...) on '{label}' must be a string.")
    if batch is not None and not isinstance(batch, Batch):
        raise ServiceDefinitionError(
            f"@tiffin.api(batch=...) on '{label}' must be a tiffin.Batch(...), not "
            f"{type(batch).__name__}."
        )
    if not isinstance(offload, bool):
        raise ServiceDefinitionError(
            f"@tiffin.api(offload=...) on '{label}' must be True or False, not {offload!r}."
        )
    if offload and (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)):
        raise ServiceDefinitionError(
            f"@tiffin.api(offload=True) on '{label}' moves a 'def' method to a thread; "
            f"'{label}' is 'async def' and runs on the event loop. Remove offload=True."
        )
    params = list(inspect.signature(func).parameters)
    if not params or params[0] != "self":
        raise ServiceDefinitionError(
            f"API '{label}' must be a method whose first parameter is 'self'."
        )


@overload
def api(func: Callable[P, R], /) -> Api[P, R]: ...
@overload
def api(
    *,
    name: str | None = None,
    route: str | None = None,
    doc: str | None = None,
    batch: Batch | None = None,
    offload: bool = False,
) -> Callable[[Callable[P, R]], Api[P, R]]: ...
def api(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    route: str | None = None,
    doc: str | None = None,
    batch: Batch | None = None,
    offload: bool = False,
) -> Api[P, R] | Callable[[Callable[P, R]], Api[P, R]]:
    """Make a service method an API endpoint, bare or with options.

    Args:
        name: the API's name (default: the method's name).
        route: its HTTP path (default: ``/<name>``).
        doc: its description in ``/docs`` (default: the method's docstring).
        batch: merge concurrent requests into one call, see ``tiffin.Batch``.
        offload: always run this ``def`` method in a worker thread. Without it, a method
            whose calls have been taking under a millisecond runs on the event loop,
            which saves a thread hop per call; set it for a method that is usually fast
            but sometimes slow, so a slow call never holds up the server.

    Example:
        @tiffin.api(route="/v1/predict", batch=tiffin.Batch(max_size=64))
        def predict(self, features: np.ndarray) -> np.ndarray: ...
    """

    def decorate(function: Callable[P, R]) -> Api[P, R]:
        _check_api_args(function, name, route, doc, batch, offload=offload)
        return Api(function, name=name, route=route, doc=doc, batch=batch, offload=offload)

    if func is not None:
        return decorate(func)
    return decorate


def _hook(kind: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def mark(func: Callable[P, R]) -> Callable[P, R]:
        if not inspect.isfunction(func):
            raise ServiceDefinitionError(f"@tiffin.{kind} decorates a method of a service class.")
        setattr(func, _HOOK, kind)
        return func

    return mark


on_startup = _hook("on_startup")
on_startup.__doc__ = "Run this method (sync or async) once per worker after ``__init__``."
on_shutdown = _hook("on_shutdown")
on_shutdown.__doc__ = "Run this method (sync or async) once per worker when it stops."
readiness = _hook("readiness")
readiness.__doc__ = (
    "Ask this method (sync or async, returning bool) whether the worker is ready; "
    "``/readyz`` answers 503 until it returns True."
)


class Dependency:
    """Another service this one calls: in-process (a service class) or remote (a URL).

    On an instance it is the other service: its instance in this process, or a
    ``tiffin.Client`` for a URL.
    """

    def __init__(self, target: type | str) -> None:
        if isinstance(target, str):
            if not target.startswith(("http://", "https://")):
                raise ServiceDefinitionError(
                    f"tiffin.depends({target!r}): a remote service is given by its URL, e.g. "
                    "'http://iris:3000'."
                )
        elif not (isinstance(target, type) and hasattr(target, "__tiffin_service__")):
            raise ServiceDefinitionError(
                f"tiffin.depends({target!r}) needs a class decorated with @tiffin.service, or "
                "the URL of a running tiffin server."
            )
        self.target = target
        self.attribute = ""

    def __set_name__(self, owner: type, attribute: str) -> None:
        self.attribute = attribute

    def __get__(self, instance: object | None, owner: type) -> Any:
        if instance is None:
            return self
        try:
            return instance.__dict__[self.attribute]
        except KeyError:
            raise ServiceDefinitionError(
                f"Dependency '{self.attribute}' is resolved when the service starts; create "
                "the service with tiffin.testing.TestClient or serve it, rather than calling "
                "the class directly."
            ) from None

    @property
    def is_remote(self) -> bool:
        return isinstance(self.target, str)


def depends(target: type | str) -> Any:
    """Declare that this service calls another one.

    Args:
        target: a ``@tiffin.service`` class (created in the same process) or the URL of a
            running tiffin server (called through ``tiffin.Client``).

    Example:
        @tiffin.service
        class Pipeline:
            embed = tiffin.depends(Embedder)
            @tiffin.api
            def run(self, text: str) -> list[float]:
                return self.embed.encode(text=text)
    """
    return Dependency(target)


@dataclass
class ServiceSpec:
    """What ``@tiffin.service`` recorded about a class."""

    cls: type
    name: str
    config: dict[str, Any]
    resources: dict[str, Any]
    apis: dict[str, Api[Any, Any]]
    models: dict[str, ModelRef]
    dependencies: dict[str, Dependency]
    hooks: dict[str, list[str]] = field(default_factory=dict)
    tasks: dict[str, Task[Any, Any]] = field(default_factory=dict)

    KEYS: ClassVar[tuple[str, ...]] = ("workers", "timeout", "max_concurrency", "max_queue")

    def routes(self) -> dict[str, Api[Any, Any]]:
        return {api.route: api for api in self.apis.values()}

    def related(self) -> Iterator[ServiceSpec]:
        """This service and every service it depends on in-process, each once."""
        seen: set[type] = set()
        todo = [self]
        while todo:
            current = todo.pop()
            if current.cls in seen:
                continue
            seen.add(current.cls)
            yield current
            for dependency in current.dependencies.values():
                if isinstance(dependency.target, type):
                    todo.append(spec_of(dependency.target))


def _positive(value: Any, key: str, cls_name: str, *, integer: bool) -> None:
    kind = int if integer else int | float
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind) or value <= 0):
        what = "a whole number" if integer else "a number of seconds"
        raise ServiceDefinitionError(
            f"@tiffin.service({key}={value!r}) on '{cls_name}' must be {what} above 0."
        )


def _collect(cls: type) -> ServiceSpec:
    apis: dict[str, Api[Any, Any]] = {}
    tasks: dict[str, Task[Any, Any]] = {}
    models: dict[str, ModelRef] = {}
    dependencies: dict[str, Dependency] = {}
    hooks: dict[str, list[str]] = {"on_startup": [], "on_shutdown": [], "readiness": []}
    for klass in reversed(cls.__mro__):
        for attribute, value in vars(klass).items():
            if isinstance(value, Api):
                apis[attribute] = value
            elif isinstance(value, Task):
                tasks[attribute] = value
            elif isinstance(value, ModelRef):
                models[attribute] = value
            elif isinstance(value, Dependency):
                dependencies[attribute] = value
            elif inspect.isfunction(value) and hasattr(value, _HOOK):
                hooks[getattr(value, _HOOK)].append(attribute)
    by_name: dict[str, Api[Any, Any]] = {}
    routes: dict[str, str] = {}
    for api in apis.values():
        if api.name in by_name:
            raise ServiceDefinitionError(
                f"Two APIs of '{cls.__name__}' are named '{api.name}'. Give one another name=."
            )
        if api.route in routes:
            raise ServiceDefinitionError(
                f"APIs '{routes[api.route]}' and '{api.name}' of '{cls.__name__}' share the route "
                f"'{api.route}'. Give one another route=."
            )
        by_name[api.name] = api
        routes[api.route] = api.name
    tasks_by_name: dict[str, Task[Any, Any]] = {}
    for job in tasks.values():
        # one namespace: a client reaches both as client.<name>
        if job.name in by_name or job.name in tasks_by_name:
            raise ServiceDefinitionError(
                f"Two APIs or tasks of '{cls.__name__}' are named '{job.name}'. Give one "
                "another name=."
            )
        tasks_by_name[job.name] = job
    return ServiceSpec(cls, "", {}, {}, by_name, models, dependencies, hooks, tasks_by_name)


@overload
def service(cls: C, /) -> C: ...
@overload
def service(
    *,
    name: str | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_queue: int | None = None,
    resources: Mapping[str, Any] | None = None,
) -> Callable[[C], C]: ...
def service(
    cls: C | None = None,
    /,
    *,
    name: str | None = None,
    workers: int | None = None,
    timeout: float | None = None,
    max_concurrency: int | None = None,
    max_queue: int | None = None,
    resources: Mapping[str, Any] | None = None,
) -> C | Callable[[C], C]:
    """Make a class a tiffin service; its ``@tiffin.api`` methods become endpoints, its
    ``@tiffin.task`` methods background jobs.

    The class itself is unchanged and can still be used directly. Values given here are
    defaults that ``tiffin.yaml``, ``TIFFIN_*`` variables and CLI flags override.

    Args:
        name: the service's name (default: the class name, lowercased).
        workers: worker processes to serve it with.
        timeout: seconds an API call may take before the caller gets 504.
        max_concurrency: API calls run at once per worker; more wait in a queue.
        max_queue: requests that may wait per worker; past it the server answers 503.
        resources: what one replica needs, for deployment: ``cpu``, ``memory``, ``gpu``,
            ``gpu_type``, e.g. ``{"cpu": "2", "memory": "4Gi"}``.
    """

    def decorate(klass: C) -> C:
        if not isinstance(klass, type):
            raise ServiceDefinitionError("@tiffin.service decorates a class.")
        label = klass.__name__
        if name is not None and (
            not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", name)
        ):
            raise ServiceDefinitionError(
                f"@tiffin.service(name={name!r}) on '{label}' must use lowercase letters, digits, "
                "'.', '_' and '-' (at most 63), e.g. 'iris'."
            )
        _positive(workers, "workers", label, integer=True)
        _positive(timeout, "timeout", label, integer=False)
        _positive(max_concurrency, "max_concurrency", label, integer=True)
        if max_queue is not None and (
            isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 0
        ):
            raise ServiceDefinitionError(
                f"@tiffin.service(max_queue={max_queue!r}) on '{label}' must be a whole number, "
                "0 or more."
            )
        extra = set(resources or {}) - _RESOURCES
        if extra:
            raise ServiceDefinitionError(
                f"@tiffin.service(resources=...) on '{label}' has unknown keys "
                f"{', '.join(sorted(extra))}. Known: {', '.join(sorted(_RESOURCES))}."
            )
        spec = _collect(klass)
        if not spec.apis and not spec.tasks:
            raise ServiceDefinitionError(
                f"Service '{label}' has no API. Mark at least one method with @tiffin.api."
            )
        spec.name = name or re.sub(r"[^a-z0-9_.-]", "-", label.lower())
        spec.config = {
            key: value
            for key, value in {
                "workers": workers,
                "timeout": timeout,
                "max_concurrency": max_concurrency,
                "max_queue": max_queue,
            }.items()
            if value is not None
        }
        spec.resources = dict(resources or {})
        klass.__tiffin_service__ = spec  # type: ignore[attr-defined]
        return klass

    if cls is not None:
        return decorate(cls)
    return decorate


def spec_of(target: Any) -> ServiceSpec:
    """The ``ServiceSpec`` of a service class or instance."""
    cls = target if isinstance(target, type) else type(target)
    spec = getattr(cls, "__tiffin_service__", None)
    if not isinstance(spec, ServiceSpec) or spec.cls is not cls:
        raise ServiceDefinitionError(
            f"'{cls.__name__}' is not a tiffin service. Decorate the class with @tiffin.service."
        )
    return spec
