"""The Open Inference Protocol over HTTP: its routes, JSON tensors and the binary tensor
data extension.

With the extension, a request's body is its JSON header (``Inference-Header-Content-
Length`` bytes long) followed by the raw bytes of each input whose ``parameters`` give a
``binary_data_size``, in the order of ``inputs``; an output asked for with
``"parameters": {"binary_data": true}`` (or every output, with the request parameter
``binary_data_output``) comes back the same way. This is what Triton's HTTP client
sends by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from tiffin.exceptions import (
    MalformedRequest,
    MethodNotAllowed,
    RouteNotFound,
    TiffinError,
    ValidationFailed,
)
from tiffin.protocols import HttpHandler, HttpRequest, HttpResponse
from tiffin.protocols.oip.tensors import (
    Model,
    decode_bytes,
    decode_json,
    encode_bytes,
    encode_json,
)

if TYPE_CHECKING:
    from tiffin.protocols.oip import OpenInferenceProtocol

__all__ = ["HEADER_LENGTH", "HttpRoutes", "error_response"]

HEADER_LENGTH = "inference-header-content-length"
_OCTET_STREAM = "application/octet-stream"


def error_response(exc: TiffinError) -> HttpResponse:
    """The protocol's error: ``{"error": message}``, with 400 for every bad request (the
    server adds ``allow``, ``retry-after`` and ``www-authenticate`` headers itself)."""
    from tiffin.protocols.oip import status_of

    return HttpResponse(status_of(exc), orjson.dumps({"error": exc.message}))


def _json(value: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, orjson.dumps(value))


def _only(request: HttpRequest, method: str) -> None:
    allowed = (method, "HEAD") if method == "GET" else (method,)
    if request.method not in allowed:
        raise MethodNotAllowed(
            f"{request.path} takes {' or '.join(allowed)}, not {request.method}.",
            detail={"allowed": list(allowed)},
        )


def _bad(message: str) -> ValidationFailed:
    return ValidationFailed(message, detail={"errors": [{"loc": "(body)", "msg": message}]})


class HttpRoutes:
    """The protocol's HTTP routes for one server."""

    def __init__(self, protocol: OpenInferenceProtocol) -> None:
        self.protocol = protocol

    def routes(self) -> Mapping[str, HttpHandler]:
        # errors raised here go back through OpenInferenceProtocol.http_error
        routes: dict[str, HttpHandler] = {
            "/v2": self.server_metadata,
            "/v2/health/live": self.live,
            "/v2/health/ready": self.ready,
            "/v2/*": self.other,
        }
        for name, model in self.protocol.models.items():
            base = f"/v2/models/{name}"
            routes[base] = self._for(self.model_metadata, model)
            routes[f"{base}/ready"] = self._for(self.model_ready, model)
            routes[f"{base}/infer"] = self._for(self.infer, model)
        return routes

    @staticmethod
    def _for(handler: Any, model: Model) -> HttpHandler:
        async def bound(request: HttpRequest) -> HttpResponse:
            return await handler(request, model)  # type: ignore[no-any-return]

        return bound

    # -- server ----------------------------------------------------------------------

    async def server_metadata(self, request: HttpRequest) -> HttpResponse:
        _only(request, "GET")
        return _json(self.protocol.server_metadata())

    async def live(self, request: HttpRequest) -> HttpResponse:
        _only(request, "GET")
        return _json({"live": True})

    async def ready(self, request: HttpRequest) -> HttpResponse:
        _only(request, "GET")
        ready = await self.protocol.server.ready()
        return _json({"ready": ready}, 200 if ready else 503)

    async def other(self, request: HttpRequest) -> HttpResponse:
        """A path under /v2 that no exact route takes: a model with a version, or an
        unknown model or path."""
        parts = request.path.split("/")[3:] if request.path.startswith("/v2/models/") else []
        if not parts or not parts[0]:
            raise RouteNotFound(
                f"No Open Inference Protocol route at {request.path}. The routes are /v2, "
                "/v2/health/live, /v2/health/ready and /v2/models/{name}[/versions/{version}]"
                "[/ready|/infer].",
                detail={"path": request.path},
            )
        name, rest = parts[0], parts[1:]
        version = ""
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        model = self.protocol.model(name, version)  # raises for an unknown one
        action = rest[0] if len(rest) == 1 else "" if not rest else None
        if action == "":
            return await self.model_metadata(request, model)
        if action == "ready":
            return await self.model_ready(request, model)
        if action == "infer":
            return await self.infer(request, model)
        raise RouteNotFound(
            f"No Open Inference Protocol route at {request.path}; a model has /ready and "
            "/infer under it.",
            detail={"path": request.path},
        )

    # -- models ----------------------------------------------------------------------

    async def model_metadata(self, request: HttpRequest, model: Model) -> HttpResponse:
        _only(request, "GET")
        return _json(model.metadata(self.protocol.server.version))

    async def model_ready(self, request: HttpRequest, model: Model) -> HttpResponse:
        _only(request, "GET")
        ready = await self.protocol.server.ready()
        return _json({"name": model.name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: HttpRequest, model: Model) -> HttpResponse:
        _only(request, "POST")
        payload, binary = _split(request)
        tensors = _inputs(payload, binary)
        wanted, as_binary = _outputs(payload)
        outputs = await self.protocol.infer(model, tensors, request.request_id, list(wanted))
        response: dict[str, Any] = {"model_name": model.name}
        if self.protocol.server.version:
            response["model_version"] = self.protocol.server.version
        if isinstance(payload.get("id"), str):
            response["id"] = payload["id"]
        tensors_out = []
        blobs = []
        for name, array, datatype in outputs:
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": array.shape}
            if wanted.get(name, as_binary):
                blob = encode_bytes(array, datatype)
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = encode_json(array, datatype)
            tensors_out.append(entry)
        response["outputs"] = tensors_out
        header = orjson.dumps(response)
        if not blobs:
            return HttpResponse(200, header)
        return HttpResponse(
            200,
            b"".join((header, *blobs)),
            content_type=_OCTET_STREAM,
            headers=((HEADER_LENGTH, str(len(header))),),
        )


def _split(request: HttpRequest) -> tuple[dict[str, Any], memoryview]:
    """The request's JSON header, and the binary tensor data after it."""
    body = request.body
    declared = request.headers.get(HEADER_LENGTH)
    end = len(body)
    if declared is not None:
        if not declared.isdigit() or int(declared) > len(body):
            raise MalformedRequest(
                f"The {HEADER_LENGTH} header says {declared!r}, but the body is {len(body)} "
                "bytes. Send the length of the JSON part of the body, in bytes.",
                detail={"header": declared, "size": len(body)},
            )
        end = int(declared)
    try:
        payload = orjson.loads(memoryview(body)[:end])
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(
            f"The inference request is not valid JSON ({exc}). Send an object with 'inputs', "
            "each {'name', 'shape', 'datatype', 'data'}.",
            detail={"problem": str(exc)},
        ) from None
    if not isinstance(payload, dict):
        raise _bad("The inference request must be a JSON object with 'inputs'.")
    return payload, memoryview(body)[end:]


def _inputs(payload: dict[str, Any], binary: memoryview) -> dict[str, np.ndarray]:
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _bad(
            "The inference request has no 'inputs'. Send a list of tensors, each "
            "{'name', 'shape', 'datatype', 'data'}."
        )
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for position, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _bad(f"Input {position} is not a tensor with a 'name'.")
        name = item["name"]
        if name in tensors:
            raise _bad(f"Input '{name}' is given twice; send each input once.")
        for key in ("datatype", "shape"):
            if key not in item:
                raise _bad(f"Input '{name}' has no '{key}'.")
        parameters = item.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise _bad(
                    f"Input '{name}' says binary_data_size {size!r}, but only "
                    f"{len(binary) - offset} bytes of binary data are left in the body."
                )
            raw = binary[offset : offset + size]
            offset += size
            tensors[name] = decode_bytes(name, item["datatype"], item["shape"], raw)
        elif "data" in item:
            tensors[name] = decode_json(name, item["datatype"], item["shape"], item["data"])
        else:
            raise _bad(
                f"Input '{name}' has no 'data' (nor a binary_data_size parameter for binary "
                "data after the JSON)."
            )
    if offset != len(binary):
        raise _bad(
            f"The body has {len(binary) - offset} bytes of binary data that no input's "
            "binary_data_size accounts for."
        )
    return tensors


def _outputs(payload: dict[str, Any]) -> tuple[dict[str, bool], bool]:
    """The outputs asked for, each with whether it goes back as binary data, and the
    default for the rest."""
    parameters = payload.get("parameters")
    default = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    wanted: dict[str, bool] = {}
    requested = payload.get("outputs") or []
    if not isinstance(requested, list):
        raise _bad("'outputs' must be a list of {'name', 'parameters'}.")
    for item in requested:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise _bad("Each of 'outputs' must be an object with a 'name'.")
        options = item.get("parameters") or {}
        wanted[item["name"]] = bool(options.get("binary_data", default))
    return wanted, default
