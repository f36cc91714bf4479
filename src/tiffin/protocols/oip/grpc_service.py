"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService``.

Inputs come as typed ``contents`` or as ``raw_input_contents`` (what Triton's client
sends); outputs always go back as ``raw_output_contents``, one entry per output.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np

from tiffin.exceptions import TiffinError, ValidationFailed
from tiffin.protocols.oip.messages import SERVICE, message
from tiffin.protocols.oip.tensors import DATATYPES, decode_bytes, encode_bytes

if TYPE_CHECKING:
    from tiffin.protocols.oip import OpenInferenceProtocol

__all__ = ["CODES", "handlers"]

CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC status for an error's HTTP status; INTERNAL for any other."""

# the typed field of InferTensorContents that holds each datatype (FP16: raw only)
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_Method = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _refuse(message_text: str, name: str) -> ValidationFailed:
    return ValidationFailed(message_text, detail={"errors": [{"loc": name, "msg": message_text}]})


def _input(tensor: Any, raw: bytes | None) -> np.ndarray:
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    if raw is not None:
        return decode_bytes(name, datatype, shape, raw)
    field = _CONTENTS.get(datatype)
    if field is None:
        if datatype in DATATYPES:  # FP16
            raise _refuse(
                f"Input '{name}' is {datatype}, which has no typed contents field; send it in "
                "raw_input_contents.",
                name,
            )
        raise _refuse(
            f"Input '{name}' has datatype '{datatype}', which this server does not take. "
            f"Use one of {', '.join(DATATYPES)}.",
            name,
        )
    values = getattr(tensor.contents, field)
    if datatype == "BYTES":
        array: Any = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        array = np.asarray(values, dtype=DATATYPES[datatype])
    if array.size != int(np.prod(shape)):
        raise _refuse(
            f"Input '{name}' has {array.size} element{'s' if array.size != 1 else ''} in "
            f"contents.{field}, but its shape {shape} needs {int(np.prod(shape))}. Send as "
            "many values as the shape says.",
            name,
        )
    return array.reshape(shape)  # type: ignore[no-any-return]


class _Service:
    def __init__(self, protocol: OpenInferenceProtocol) -> None:
        self.protocol = protocol
        self.server = protocol.server
        self.messages = {
            name: message(name)
            for name in (
                "ServerLiveResponse",
                "ServerReadyResponse",
                "ModelReadyResponse",
                "ServerMetadataResponse",
                "ModelMetadataResponse",
                "ModelInferResponse",
            )
        }

    async def server_live(self, request: Any, context: Any) -> Any:
        return self.messages["ServerLiveResponse"](live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return self.messages["ServerReadyResponse"](ready=await self.server.ready())

    async def model_ready(self, request: Any, context: Any) -> Any:
        self.protocol.model(request.name, request.version)
        return self.messages["ModelReadyResponse"](ready=await self.server.ready())

    async def server_metadata(self, request: Any, context: Any) -> Any:
        return self.messages["ServerMetadataResponse"](**self.protocol.server_metadata())

    async def model_metadata(self, request: Any, context: Any) -> Any:
        model = self.protocol.model(request.name, request.version)
        return self.messages["ModelMetadataResponse"](**model.metadata(self.server.version))

    async def model_infer(self, request: Any, context: Any) -> Any:
        model = self.protocol.model(request.model_name, request.model_version)
        raw = request.raw_input_contents
        if raw and len(raw) != len(request.inputs):
            raise ValidationFailed(
                f"The request has {len(request.inputs)} inputs but {len(raw)} "
                "raw_input_contents; send one raw entry per input, or none.",
                detail={"errors": [{"loc": "raw_input_contents", "msg": "count mismatch"}]},
            )
        tensors: dict[str, np.ndarray] = {}
        for position, tensor in enumerate(request.inputs):
            if tensor.name in tensors:
                raise _refuse(f"Input '{tensor.name}' is given twice; send each once.", tensor.name)
            tensors[tensor.name] = _input(tensor, raw[position] if raw else None)
        wanted = [output.name for output in request.outputs]
        request_id = request.id or self.server.request_id()
        outputs = await self.protocol.infer(model, tensors, request_id, wanted)
        response = self.messages["ModelInferResponse"](
            model_name=model.name, model_version=self.server.version, id=request.id
        )
        for name, array, datatype in outputs:
            response.outputs.add(name=name, datatype=datatype, shape=array.shape)
            response.raw_output_contents.append(encode_bytes(array, datatype))
        return response


def _guarded(method: _Method) -> _Method:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await method(request, context)
        except TiffinError as exc:
            code = CODES.get(exc.status_code, grpc.StatusCode.INTERNAL)
            await context.abort(code, exc.message)

    return call


def handlers(protocol: OpenInferenceProtocol) -> list[grpc.GenericRpcHandler]:
    """The service's gRPC handlers, answering from ``protocol``."""
    service = _Service(protocol)
    methods = {
        "ServerLive": service.server_live,
        "ServerReady": service.server_ready,
        "ModelReady": service.model_ready,
        "ServerMetadata": service.server_metadata,
        "ModelMetadata": service.model_metadata,
        "ModelInfer": service.model_infer,
    }
    rpcs = {
        name: grpc.unary_unary_rpc_method_handler(
            _guarded(method),
            request_deserializer=message(f"{name}Request").FromString,
            response_serializer=message(f"{name}Response").SerializeToString,
        )
        for name, method in methods.items()
    }
    return [grpc.method_handlers_generic_handler(SERVICE, rpcs)]
