"""The limit for Python gRPC serving: a bare ``grpc.aio`` server on uvloop, no framework,
that answers the Open Inference Protocol's ``ModelInfer`` for the iris model as tiffin
does. One generic handler, for that one method: it decodes ``raw_input_contents[0]`` as
little-endian FP64 of the input's shape, calls the same model as the other systems, and
answers model ``predict``'s output ``output`` (BYTES, one label per row) in
``raw_output_contents``. Nothing is checked: a malformed call fails as it happens to.

    BENCH_DATA=... python -m bench.services.bare_grpc PORT

It loads the model before it listens on 127.0.0.1:``PORT``, so a connection taken means
it is ready to answer.
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
import grpc.aio
import numpy as np
import uvloop
from bench.services.workload import iris_predict, load_iris

from tiffin.protocols.oip.messages import SERVICE, message

MODEL = "predict"


def _labels(labels: list[str]) -> bytes:
    """BYTES contents: per label a 4-byte little-endian length, then its utf-8 bytes."""
    items = [label.encode() for label in labels]
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def handler() -> grpc.GenericRpcHandler:
    """``ModelInfer`` of the iris model, loaded from ``$BENCH_DATA`` now."""
    clf = load_iris()
    request_class, response_class = message("ModelInferRequest"), message("ModelInferResponse")

    async def model_infer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        rows = np.frombuffer(request.raw_input_contents[0], "<f8")
        labels = iris_predict(clf, rows.reshape(tuple(request.inputs[0].shape)))
        response = response_class(model_name=MODEL)
        response.outputs.add(name="output", datatype="BYTES", shape=[len(labels)])
        response.raw_output_contents.append(_labels(labels))
        return response

    infer = grpc.unary_unary_rpc_method_handler(
        model_infer,
        request_deserializer=request_class.FromString,
        response_serializer=response_class.SerializeToString,
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": infer})


async def serve(port: int) -> None:
    server = grpc.aio.server(handlers=[handler()])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="A bare grpc.aio server of OIP ModelInfer.")
    parser.add_argument("port", type=int, help="the port to listen on, on 127.0.0.1")
    uvloop.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
