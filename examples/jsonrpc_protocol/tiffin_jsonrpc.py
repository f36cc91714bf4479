"""JSON-RPC 2.0 for every tiffin service: a complete example of a protocol plugin.

Installed, it adds ``POST /jsonrpc`` to every service tiffin serves. Each API is a
method of the same name, and ``params`` are its arguments by name::

    --> {"jsonrpc": "2.0", "method": "add", "params": {"a": 1, "b": 2}, "id": 1}
    <-- {"jsonrpc": "2.0", "result": 3.0, "id": 1}

A result is the JSON the API's own route answers with (a DataFrame as records, say). A
batch (a list of requests) runs its calls concurrently, so an API that batches
(``@tiffin.api(batch=...)``) may merge them into one call. A request without an ``id``
is a notification: it runs, and gets no answer. ``system.listMethods`` returns the
methods. Answers are HTTP 200, or 204 when there is nothing to answer; errors are
JSON-RPC error objects (with a 4xx status when the server refuses the HTTP request
itself, e.g. 401 without a valid API key):

    -32700  the body is not JSON
    -32600  not a JSON-RPC 2.0 request object (or an empty batch)
    -32601  the service has no such API (RouteNotFound)
    -32602  params that do not fit the API (ValidationFailed), or given by position
    -32603  a result that has no JSON form
    -32000  any other error of the call: busy, too slow, or the service's code raised

An error tiffin raised keeps its message and carries ``data: {"type", "detail"}``, as in
tiffin's own error bodies, so a client can re-raise it with
``tiffin.exceptions.error_class(data["type"])``.

This package's ``pyproject.toml`` registers the protocol with tiffin::

    [project.entry-points."tiffin.protocols"]
    jsonrpc = "tiffin_jsonrpc:JsonRpc"
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from tiffin.exceptions import MethodNotAllowed, RouteNotFound, TiffinError, ValidationFailed
from tiffin.io import dumps
from tiffin.protocols import HttpHandler, HttpRequest, HttpResponse, Protocol

__all__ = ["JsonRpc", "RpcError"]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000

LIST_METHODS = "system.listMethods"


class RpcError(Exception):
    """A JSON-RPC error object, raised to answer a request with it."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            self.error["data"] = data

    @classmethod
    def of(cls, exc: TiffinError) -> RpcError:
        """The JSON-RPC form of an error tiffin raised."""
        if isinstance(exc, RouteNotFound):
            code = METHOD_NOT_FOUND
        elif isinstance(exc, ValidationFailed):
            code = INVALID_PARAMS
        else:
            code = SERVER_ERROR
        return cls(code, exc.message, {"type": type(exc).__name__, "detail": exc.detail})


class JsonRpc(Protocol):
    """``POST /jsonrpc``: see the module docstring."""

    name: ClassVar[str] = "jsonrpc"

    def http_routes(self) -> Mapping[str, HttpHandler]:
        return {"/jsonrpc": self.handle}

    def http_error(self, error: TiffinError) -> HttpResponse:
        """An error before any request object is read (not a POST, no valid API key, a body
        over the server's limit): a JSON-RPC error, sent with the error's HTTP status."""
        allow = (("allow", "POST"),) if isinstance(error, MethodNotAllowed) else ()
        return HttpResponse(error.status_code, _error(RpcError.of(error), None), headers=allow)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one HTTP request: a request object, or a batch of them."""
        if request.method != "POST":
            raise MethodNotAllowed(
                f"{request.path} takes POST, not {request.method}.", detail={"allowed": ["POST"]}
            )
        try:
            message = json.loads(request.body)
        except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or too deep
            error = RpcError(PARSE_ERROR, f"The body is not JSON ({exc}). Send a request object.")
            return HttpResponse(200, _error(error, None))
        if not isinstance(message, list):
            answer = await self.answer(message, request.request_id)
            return HttpResponse(204) if answer is None else HttpResponse(200, answer)
        if not message:
            error = RpcError(INVALID_REQUEST, "The batch is empty. Send at least one request.")
            return HttpResponse(200, _error(error, None))
        answers = await asyncio.gather(*(self.answer(m, request.request_id) for m in message))
        sent = [answer for answer in answers if answer is not None]
        return HttpResponse(200, b"[" + b",".join(sent) + b"]") if sent else HttpResponse(204)

    async def answer(self, message: Any, request_id: str) -> bytes | None:
        """The response to one request object, as JSON; None for a notification."""
        if not _is_request(message):
            error = RpcError(
                INVALID_REQUEST,
                'Not a JSON-RPC 2.0 request. Send {"jsonrpc": "2.0", "method": "<api>", '
                '"params": {...}, "id": <string or number>}.',
            )
            return _error(error, None)
        id_ = message.get("id")
        try:
            result = await self.call(message["method"], message.get("params", {}), request_id)
        except RpcError as exc:
            answer = _error(exc, id_)
        else:  # the result is JSON already
            answer = b'{"jsonrpc":"2.0","result":%b,"id":%b}' % (result, dumps(id_))
        return answer if "id" in message else None

    async def call(self, method: str, params: Any, request_id: str) -> bytes:
        """Run one method (an API, or ``system.listMethods``); its result as JSON."""
        if isinstance(params, list):
            raise RpcError(
                INVALID_PARAMS,
                f"Method '{method}' takes its params by name, not by position. Send params "
                "as an object of the API's arguments.",
            )
        if method == LIST_METHODS:
            apis = self.server.apis.items()
            return dumps(sorted(name for name, api in apis if not api.io.stream))
        try:
            result = await self.server.call(method, params, request_id=request_id)
        except TiffinError as exc:
            raise RpcError.of(exc) from None
        codec = self.server.apis[method].io.output_codec  # as the API's own route sends it
        try:
            return dumps(result if codec is None else codec.to_json(result))
        except Exception as exc:
            raise RpcError(
                INTERNAL_ERROR,
                f"Method '{method}' returned a {type(result).__name__}, which has no JSON form "
                f"({exc}). Fix the service to return what its annotation says.",
            ) from None


def _is_request(message: Any) -> bool:
    """Whether ``message`` is a JSON-RPC 2.0 request object (or a notification)."""
    return (
        isinstance(message, dict)
        and message.get("jsonrpc") == "2.0"
        and isinstance(message.get("method"), str)
        and isinstance(message.get("params", {}), dict | list)
        and (message.get("id") is None or _is_id(message["id"]))
    )


def _is_id(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _error(error: RpcError, id_: Any) -> bytes:
    return dumps({"jsonrpc": "2.0", "error": error.error, "id": id_})
