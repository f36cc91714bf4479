"""Clients for a running tiffin server: ``Client`` (sync) and ``AsyncClient`` (async).

Each API of the server is a method of the client, named after the API, that takes the
API's parameters as keyword arguments and returns the decoded JSON result. The client
learns the APIs from the server's ``/openapi.json``, once, on first use, so a client can
be made before its server is up (a service's ``tiffin.depends(url)`` does that).

    client = tiffin.Client("http://localhost:3000")
    client.predict(features=[[5.1, 3.5, 1.4, 0.2]])   # -> [0]
    for token in client.generate(prompt="Hello"):      # a streaming API: one item per event
        print(token)

A ``@tiffin.task`` of the server is an object with methods instead: ``submit`` returns
a ``TaskHandle`` at once, whose ``wait()`` returns the result when the task is done.

    job = client.report.submit(rows=[[1.0, 2.0]])      # -> TaskHandle, the task queued
    job.status().status                                # 'queued', 'running', 'completed'...
    job.wait(timeout=600)                              # the result, or raises TaskFailed
    client.report.with_callback("https://example.com/done").submit(rows=[[1.0]])

An error the server answers with is raised as the same ``TiffinError`` class, with its
message and detail: a 422 is ``ValidationFailed``, a 500 is ``ServiceError`` carrying the
request id to look for in the server's log, a server that cannot be reached is
``ServiceUnavailable``.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import threading
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import orjson

from tiffin.exceptions import (
    InvalidArgument,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestError,
    RequestTimeout,
    ServiceUnavailable,
    TiffinError,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    describe,
    error_class,
)
from tiffin.io import dumps
from tiffin.observability import tracing
from tiffin.tasks.handles import (
    AsyncTaskHandle,
    AsyncTaskMethod,
    TaskHandle,
    TaskInfo,
    TaskMethod,
)

__all__ = [
    "AsyncClient",
    "AsyncStream",
    "AsyncTaskHandle",
    "AsyncTaskMethod",
    "Client",
    "Stream",
    "TaskHandle",
    "TaskInfo",
    "TaskMethod",
]

# The class to raise for an error answer without a tiffin error body (from a proxy, say).
_BY_STATUS: dict[int, type[TiffinError]] = {
    401: Unauthorized,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: RequestTimeout,
}
_SKIP = object()


@dataclass(frozen=True)
class _Endpoint:
    """One API as the server's OpenAPI document describes it."""

    name: str
    route: str
    summary: str
    description: str
    params: tuple[str, ...]
    required: frozenset[str]
    defaults: Mapping[str, Any]
    task: bool = False


def _endpoints(document: Any) -> dict[str, _Endpoint]:
    """The APIs in an OpenAPI document, each ``POST`` operation with an ``operationId``,
    and the tasks, each ``POST`` marked ``x-tiffin-task`` with the action ``submit``."""
    found: dict[str, _Endpoint] = {}
    paths = document.get("paths") if isinstance(document, dict) else None
    for route, item in (paths or {}).items():
        operation = item.get("post") if isinstance(item, dict) else None
        if not isinstance(operation, dict) or not isinstance(operation.get("operationId"), str):
            continue
        marked = operation.get("x-tiffin-task")
        if isinstance(marked, dict) and marked.get("action") != "submit":
            continue  # a task's other operations
        task_name = marked.get("task") if isinstance(marked, dict) else None
        task = isinstance(task_name, str)
        content = operation.get("requestBody", {}).get("content", {})
        body = content.get("application/json") or content.get("multipart/form-data") or {}
        schema = body.get("schema", {})
        properties = schema.get("properties", {})
        name = task_name if isinstance(task_name, str) else operation["operationId"]
        found[name] = _Endpoint(
            task=task,
            name=name,
            route=route,
            summary=str(operation.get("summary") or ""),
            description=str(operation.get("description") or ""),
            params=tuple(properties),
            required=frozenset(schema.get("required", ())),
            defaults={k: v["default"] for k, v in properties.items() if "default" in v},
        )
    return found


class _EventParser:
    """Server-Sent Events framing, one line at a time (the WHATWG rules: ``data`` lines
    joined with newlines, ``:`` comments skipped, a blank line ends an event)."""

    __slots__ = ("_data", "_event")

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    def feed(self, line: str) -> tuple[str, str] | None:
        """The ``(event name, data)`` that ``line`` completes, if it completes one."""
        if not line:
            data, event = self._data, self._event or "message"
            self._data, self._event = [], ""
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        return None


def _is_file(value: Any) -> bool:
    return isinstance(value, Path | bytes | bytearray | memoryview | io.IOBase)


def _upload(value: Any) -> tuple[str, Any]:
    """The ``(filename, content)`` of a file part for a file argument."""
    if isinstance(value, Path):
        return value.name, value.read_bytes()
    if isinstance(value, io.IOBase):
        if isinstance(value, io.TextIOBase):
            raise TypeError("a file opened in text mode; open it with 'rb'")
        return Path(str(getattr(value, "name", "upload"))).name, value
    return "upload", bytes(value)


def _error_from_body(data: Any) -> TiffinError | None:
    """The error an ``{"error": {"type", "message", "detail"}}`` body describes, if it is one."""
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    detail = error.get("detail")
    cls = error_class(str(error.get("type", "")))
    return cls(error["message"], detail=detail if isinstance(detail, dict) else None)


def _decode_event(event: str, data: str) -> Any:
    """The item an event carries; raises the error an ``error`` event carries; ``_SKIP``
    for an event without data or of another name (a keep-alive, say)."""
    if event == "error":
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            body = None
        raise _error_from_body(body) or TiffinError(
            f"The stream ended with an error the client cannot read: {data[:200]!r}. "
            "Look in the server's log."
        )
    if event != "message" or not data:
        return _SKIP
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise TiffinError(
            f"The stream sent an event that is not JSON: {data[:200]!r}. Check that the "
            "server is a tiffin server.",
        ) from None


class _Config:
    """What the sync and async clients share: the server's address, headers, its APIs once
    read, and how answers turn into results or errors."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None,
        timeout: float | None,
        headers: Mapping[str, str] | None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgument(
                f"The server URL {url!r} must start with http:// or https://, "
                "e.g. 'http://localhost:3000'."
            )
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Accept": "application/json", "User-Agent": "tiffin-client"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._headers.update(headers or {})
        self._post_headers = {**self._headers, "Content-Type": "application/json"}
        self._apis: dict[str, _Endpoint] | None = None

    # -- the server's APIs -------------------------------------------------------------

    def _read_openapi(self, response: httpx.Response, body: bytes) -> dict[str, _Endpoint]:
        if not response.is_success:
            raise self._failure(response, body)
        try:
            apis = _endpoints(orjson.loads(body))
        except orjson.JSONDecodeError:
            apis = {}
        if not apis:
            raise TiffinError(
                f"{self.url}/openapi.json lists no tiffin APIs. Check that {self.url} is the "
                "address of a tiffin server.",
                detail={"url": self.url},
            )
        return apis

    def _unknown(self, name: str, apis: Mapping[str, _Endpoint]) -> AttributeError:
        return AttributeError(
            f"The server at {self.url} has no API '{name}'. Its APIs are: "
            f"{', '.join(sorted(apis))} (see {self.url}/docs)."
        )

    # -- requests and answers ----------------------------------------------------------

    def _request(
        self, http: httpx.Client | httpx.AsyncClient, api: _Endpoint, kwargs: Mapping[str, Any]
    ) -> httpx.Request:
        url = self.url + api.route
        try:
            uploads = {name: _upload(value) for name, value in kwargs.items() if _is_file(value)}
            if uploads:  # multipart/form-data: files as file parts, text as is, others JSON
                fields = {
                    name: value if isinstance(value, str) else dumps(value).decode()
                    for name, value in kwargs.items()
                    if name not in uploads
                }
                return http.build_request(
                    "POST", url, data=fields, files=uploads, headers=self._headers
                )
            content = dumps(kwargs)
        except TypeError as exc:
            raise InvalidArgument(
                f"The arguments of API '{api.name}' cannot be sent ({exc}). Pass JSON types, "
                "numpy arrays, pydantic models, or files (a pathlib.Path, bytes, a file opened "
                "with 'rb').",
                detail={"api": api.name},
            ) from None
        return http.build_request("POST", url, content=content, headers=self._post_headers)

    def _task_body(self, name: str, kwargs: Mapping[str, Any]) -> bytes:
        files = [key for key, value in kwargs.items() if _is_file(value)]
        if files:
            raise InvalidArgument(
                f"Task '{name}' got a file for {', '.join(files)}; a task's arguments are "
                "stored as JSON until it runs. Pass something the task can read the file from "
                "(a path on a shared disk, a URL) instead.",
                detail={"task": name},
            )
        try:
            return dumps(dict(kwargs))
        except TypeError as exc:
            raise InvalidArgument(
                f"The arguments of task '{name}' cannot be sent ({exc}). Pass JSON types, "
                "numpy arrays or pydantic models.",
                detail={"task": name},
            ) from None

    def _unreachable(self, exc: httpx.TransportError, url: str) -> TiffinError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServiceUnavailable(
                f"Cannot connect to a tiffin server at {self.url} ({describe(exc)}). Start one "
                "with 'tiffin serve module:Class', or check the URL.",
                detail={"url": url},
            )
        if isinstance(exc, httpx.TimeoutException):
            return RequestTimeout(
                f"{url} did not answer in time ({describe(exc)}). Pass a larger timeout, e.g. "
                f"tiffin.Client({self.url!r}, timeout=300).",
                detail={"url": url, "timeout": self.timeout},
            )
        return ServiceUnavailable(
            f"The connection to {self.url} failed ({describe(exc)}). Retry; if it keeps "
            "failing, look in the server's log.",
            detail={"url": url},
        )

    def _failure(self, response: httpx.Response, body: bytes) -> TiffinError:
        try:
            error = _error_from_body(orjson.loads(body))
        except orjson.JSONDecodeError:
            error = None
        if error is not None:
            return error
        status = response.status_code
        cls = _BY_STATUS.get(status) or (RequestError if status < 500 else TiffinError)
        text = body.decode("utf-8", "replace").strip()
        return cls(
            f"{response.request.method} {response.request.url} answered {status} "
            f"{response.reason_phrase}{': ' + text[:200] if text else ''}. Check that "
            f"{self.url} is a tiffin server, and look in its log.",
            detail={"status": status, "url": str(response.request.url), "body": text[:2000]},
        )

    def _result(self, response: httpx.Response, body: bytes) -> Any:
        if not response.is_success:
            raise self._failure(response, body)
        media_type = response.headers.get("content-type", "").partition(";")[0].strip()
        if media_type == "application/json" or media_type.endswith("+json"):
            return orjson.loads(body) if body else None
        if media_type.startswith("text/"):
            return body.decode(response.encoding or "utf-8")
        return body

    @staticmethod
    def _is_stream(response: httpx.Response) -> bool:
        return response.is_success and response.headers.get("content-type", "").startswith(
            "text/event-stream"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


def _keywords_only(name: str, args: tuple[Any, ...], params: tuple[str, ...] | None) -> None:
    if args:
        example = "name=value" if params is None else ", ".join(f"{p}=..." for p in params)
        raise TypeError(f"API '{name}' takes keyword arguments only: client.{name}({example}).")


def _signature(api: _Endpoint) -> inspect.Signature:
    empty = inspect.Parameter.empty
    return inspect.Signature(
        [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=api.defaults.get(name, None if name not in api.required else empty),
            )
            for name in api.params
            if name.isidentifier()
        ]
    )


class _Method:
    """An API of the server as a method of a client: ``help()`` shows its description."""

    def __init__(self, call: Callable[..., Any], api: _Endpoint) -> None:
        self._call = call
        self._api = api
        self.__name__ = self.__qualname__ = api.name
        self.__doc__ = f"POST {api.route}\n\n{api.description or api.summary}".strip()
        self.__signature__ = _signature(api)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _keywords_only(self._api.name, args, self._api.params)
        return self._call(self._api.name, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in ("submit", "with_callback", "get", "list"):
            raise AttributeError(
                f"'{self._api.name}' is an API, not a task, so it has no .{name}(): call it, "
                f"client.{self._api.name}(...)."
            )
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"<tiffin API {self._api.name} POST {self._api.route}>"


# -- sync ------------------------------------------------------------------------------


class Stream(Iterator[Any]):
    """The items of a streaming API's answer, decoded as each event arrives.

    An ``error`` event raises the error it carries. Closing the stream (or leaving its
    ``with`` block, or dropping it) ends the request, and the server stops the API's
    generator.

    Example:
        with client.generate(prompt="Hello") as tokens:
            for token in tokens:
                print(token)
    """

    def __init__(
        self, response: httpx.Response, broken: Callable[[httpx.TransportError], TiffinError]
    ) -> None:
        self._response = response
        self._broken = broken
        self._items = self._read()
        # a stream dropped before it was read still gives its connection back
        weakref.finalize(self, response.close)

    def _read(self) -> Generator[Any, None, None]:
        parser = _EventParser()
        try:
            for line in self._response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    item = _decode_event(*event)
                    if item is not _SKIP:
                        yield item
        except httpx.TransportError as exc:
            raise self._broken(exc) from None
        finally:
            self._response.close()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Any:
        return next(self._items)

    def close(self) -> None:
        """Stop reading and end the request."""
        self._items.close()
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Client(_Config):
    """A client of a running tiffin server; each of its APIs is a method.

    Args:
        url: the server's address, e.g. ``"http://localhost:3000"``.
        api_key: sent as ``Authorization: Bearer <key>`` when the server needs one.
        timeout: seconds to wait for a connection and for each read (``None``: forever).
            It configures the HTTP client this makes, not one passed as ``http``.
        headers: extra headers sent with every request.
        http: an ``httpx.Client`` to send requests with (it stays open on ``close()``).

    An API method takes the API's parameters as keyword arguments (JSON types, numpy
    arrays, pydantic models; files as a ``pathlib.Path``, ``bytes`` or a file opened with
    ``"rb"``, which makes the request ``multipart/form-data``) and returns the decoded
    JSON result (text for a text answer, bytes for a file), or a ``Stream`` for an API
    that streams. Unknown arguments are sent as given, so the server's 422 names them.
    ``dir(client)`` lists the APIs; an API named like a method of this class (``close``,
    ``call``) is reached with ``client.call(name, ...)``.

    Example:
        with tiffin.Client("http://localhost:3000", api_key="s3cret") as client:
            client.predict(features=np.array([[5.1, 3.5, 1.4, 0.2]]))   # -> [0]
            client.health()                                             # -> True
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        headers: Mapping[str, str] | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(url, api_key=api_key, timeout=timeout, headers=headers)
        if http is not None and not isinstance(http, httpx.Client):
            raise InvalidArgument(
                f"tiffin.Client(http=...) takes an httpx.Client, not {type(http).__name__}; "
                "use tiffin.AsyncClient for an httpx.AsyncClient."
            )
        self._owned = http is None
        self.http = http if http is not None else httpx.Client(timeout=timeout)
        self._lock = threading.Lock()

    # -- APIs --------------------------------------------------------------------------

    def _api_table(self) -> dict[str, _Endpoint]:
        if self._apis is None:
            with self._lock:
                if self._apis is None:
                    self._apis = self._load()
        return self._apis

    def _load(self) -> dict[str, _Endpoint]:
        url = self.url + "/openapi.json"
        try:
            response = self.http.get(url, headers=self._headers)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._read_openapi(response, response.content)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        apis = self._api_table()
        if name not in apis:
            raise self._unknown(name, apis)
        if apis[name].task:
            return TaskMethod(self, name, apis[name].route, apis[name].description)
        return _Method(self.call, apis[name])

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._api_table()})

    def call(self, name: str, /, **kwargs: Any) -> Any:
        """Call the API ``name`` with ``kwargs``: the decoded result, or a ``Stream``.

        Example:
            client.call("predict", features=[[5.1, 3.5, 1.4, 0.2]])
        """
        apis = self._api_table()
        api = apis.get(name)
        if api is None:
            raise self._unknown(name, apis)
        if api.task:
            return TaskMethod(self, name, api.route)(**kwargs)
        request = self._request(self.http, api, kwargs)
        try:
            if tracing.active():  # a span of its own, and traceparent sent
                response = tracing.send(self.http.send, request, api.route)
            else:
                response = self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, str(request.url)) from None
        if self._is_stream(response):
            return Stream(response, lambda exc: self._unreachable(exc, str(request.url)))
        try:
            body = response.read()
        except httpx.TransportError as exc:
            raise self._unreachable(exc, str(request.url)) from None
        finally:
            response.close()
        return self._result(response, body)

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
    ) -> Any:
        """One request to a task route; the decoded answer, or the error it carries."""
        url = self.url + path
        headers = self._headers if content is None else self._post_headers
        try:
            response = self.http.request(
                method, url, params=params, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._result(response, response.content)

    def health(self) -> bool:
        """Whether the server answers ``/readyz`` with 200: started and ready for requests.
        False when it is starting, not ready, or cannot be reached."""
        try:
            return self.http.get(self.url + "/readyz", headers=self._headers).status_code == 200
        except httpx.TransportError:
            return False

    # -- lifetime ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool (not an ``http`` client that was passed in)."""
        if self._owned:
            self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# -- async -----------------------------------------------------------------------------


class AsyncStream(AsyncIterator[Any]):
    """The items of a streaming API's answer, for ``async for``; see ``Stream``.

    Example:
        async with await client.generate(prompt="Hello") as tokens:
            async for token in tokens:
                print(token)
    """

    def __init__(
        self, response: httpx.Response, broken: Callable[[httpx.TransportError], TiffinError]
    ) -> None:
        self._response = response
        self._broken = broken
        self._items = self._read()

    async def _read(self) -> AsyncGenerator[Any, None]:
        parser = _EventParser()
        try:
            async for line in self._response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    item = _decode_event(*event)
                    if item is not _SKIP:
                        yield item
        except httpx.TransportError as exc:
            raise self._broken(exc) from None
        finally:
            await self._response.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        return await anext(self._items)

    async def aclose(self) -> None:
        """Stop reading and end the request."""
        await self._items.aclose()
        await self._response.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class _AsyncCall(Awaitable[Any]):
    """One call of an async client's API: ``await`` it for the result (an ``AsyncStream``
    for a streaming API), or ``async for`` over it directly for a stream's items."""

    def __init__(self, client: AsyncClient, name: str, kwargs: dict[str, Any]) -> None:
        self._client = client
        self._name = name
        self._kwargs = kwargs

    def __await__(self) -> Generator[Any, None, Any]:
        return self._client._call(self._name, self._kwargs).__await__()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items()

    async def _items(self) -> AsyncIterator[Any]:
        result = await self._client._call(self._name, self._kwargs)
        if not isinstance(result, AsyncStream):
            raise TypeError(
                f"API '{self._name}' does not stream its result; use "
                f"'await client.{self._name}(...)' instead of 'async for'."
            )
        async with result:
            async for item in result:
                yield item


class _AsyncMethod(AsyncTaskMethod):
    """An API or task of an ``AsyncClient`` whose APIs are not read yet: checked on use.
    Called, it is an API; ``.submit()`` and the rest, a task."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        super().__init__(client, name)
        self._caller = client

    def __call__(self, *args: Any, **kwargs: Any) -> _AsyncCall:
        _keywords_only(self.__name__, args, None)
        return self._caller.call(self.__name__, **kwargs)


class AsyncClient(_Config):
    """An asyncio client of a running tiffin server; each of its APIs is an async method.

    Takes the same arguments as ``Client`` (``http`` is an ``httpx.AsyncClient``). The
    server's APIs are read on the first call, or on entering ``async with`` (after which
    ``dir()`` lists them and an unknown name raises ``AttributeError`` at once). A
    streaming API's items come with ``async for`` over the call itself.

    Example:
        async with tiffin.AsyncClient("http://localhost:3000") as client:
            await client.predict(features=[[5.1, 3.5, 1.4, 0.2]])   # -> [0]
            async for token in client.generate(prompt="Hello"):
                print(token)
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float | None = 60.0,
        headers: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(url, api_key=api_key, timeout=timeout, headers=headers)
        if http is not None and not isinstance(http, httpx.AsyncClient):
            raise InvalidArgument(
                "tiffin.AsyncClient(http=...) takes an httpx.AsyncClient, not "
                f"{type(http).__name__}; use tiffin.Client for an httpx.Client."
            )
        self._owned = http is None
        self.http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._lock: asyncio.Lock | None = None

    # -- APIs --------------------------------------------------------------------------

    async def connect(self) -> Self:
        """Read the server's APIs now (``async with`` does this)."""
        await self._api_table()
        return self

    async def _api_table(self) -> dict[str, _Endpoint]:
        if self._apis is None:
            self._lock = self._lock or asyncio.Lock()
            async with self._lock:
                if self._apis is None:
                    self._apis = await self._load()
        return self._apis

    async def _load(self) -> dict[str, _Endpoint]:
        url = self.url + "/openapi.json"
        try:
            response = await self.http.get(url, headers=self._headers)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._read_openapi(response, response.content)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._apis is None:
            return _AsyncMethod(self, name)
        if name not in self._apis:
            raise self._unknown(name, self._apis)
        if self._apis[name].task:
            return AsyncTaskMethod(self, name)
        return _Method(self.call, self._apis[name])

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(self._apis or ())})

    def call(self, name: str, /, **kwargs: Any) -> _AsyncCall:
        """Call the API ``name`` with ``kwargs``: await it for the decoded result (an
        ``AsyncStream`` for a streaming API), or ``async for`` over it for a stream.

        Example:
            await client.call("predict", features=[[5.1, 3.5, 1.4, 0.2]])
        """
        return _AsyncCall(self, name, kwargs)

    async def _call(self, name: str, kwargs: dict[str, Any]) -> Any:
        apis = await self._api_table()
        api = apis.get(name)
        if api is None:
            raise self._unknown(name, apis)
        if api.task:
            raise TypeError(
                f"'{name}' is a task, not an API: submit it with "
                f"await client.{name}.submit(...), then await .wait() for its result."
            )
        request = self._request(self.http, api, kwargs)
        try:
            if tracing.active():  # a span of its own, and traceparent sent
                response = await tracing.asend(self.http.send, request, api.route)
            else:
                response = await self.http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, str(request.url)) from None
        if self._is_stream(response):
            return AsyncStream(response, lambda exc: self._unreachable(exc, str(request.url)))
        try:
            body = await response.aread()
        except httpx.TransportError as exc:
            raise self._unreachable(exc, str(request.url)) from None
        finally:
            await response.aclose()
        return self._result(response, body)

    async def _task_route(self, name: str) -> str:
        """The route of the task ``name``; ``AttributeError`` if the server has none."""
        apis = await self._api_table()
        api = apis.get(name)
        if api is None:
            raise self._unknown(name, apis)
        if not api.task:
            raise AttributeError(
                f"'{name}' is an API of {self.url}, not a task: call it, client.{name}(...)."
            )
        return api.route

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        content: bytes | None = None,
    ) -> Any:
        """One request to a task route; the decoded answer, or the error it carries."""
        url = self.url + path
        headers = self._headers if content is None else self._post_headers
        try:
            response = await self.http.request(
                method, url, params=params, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc, url) from None
        return self._result(response, response.content)

    async def health(self) -> bool:
        """Whether the server answers ``/readyz`` with 200; see ``Client.health``."""
        try:
            response = await self.http.get(self.url + "/readyz", headers=self._headers)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    # -- lifetime ----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection pool (not an ``http`` client that was passed in)."""
        if self._owned:
            await self.http.aclose()

    close = aclose

    async def __aenter__(self) -> Self:
        try:
            return await self.connect()
        except BaseException:
            await self.aclose()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
