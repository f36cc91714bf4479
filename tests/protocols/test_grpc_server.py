"""The gRPC side of ``tiffin serve``: API keys, a port already taken, and the protocol's
descriptor kept in step with its ``.proto``."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from tests.server.conftest import launch, start_server
from tiffin.protocols.oip import messages

SERVICE_FILE = Path(__file__).with_name("tensor_service.py")


def write_service(directory: Path, settings: str = "") -> None:
    (directory / "tensor_service.py").write_text(SERVICE_FILE.read_text(), encoding="utf-8")
    if settings:
        (directory / "tiffin.yaml").write_text(f"settings: {settings}\n", encoding="utf-8")


def test_api_keys_guard_grpc_calls(tmp_path: Path) -> None:
    write_service(tmp_path, "{api_keys: [k1]}")
    server = start_server(
        tmp_path, "tensor_service:Tensors", "--grpc-port", "0", home=tmp_path / "home"
    )
    try:
        found = re.search(r"gRPC on port (\d+)", server.stdout.read_text())
        assert found
        address = f"127.0.0.1:{found.group(1)}"
        with grpc.insecure_channel(address) as channel:
            live = channel.unary_unary(
                f"/{messages.SERVICE}/ServerLive",
                request_serializer=messages.message("ServerLiveRequest").SerializeToString,
                response_deserializer=messages.message("ServerLiveResponse").FromString,
            )
            request = messages.message("ServerLiveRequest")()
            with pytest.raises(grpc.RpcError) as raised:
                live(request, timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert raised.value.details() == (
                "This server needs an API key. Send it as 'authorization: Bearer <key>' or "
                "'x-api-key: <key>' metadata."
            )
            with pytest.raises(grpc.RpcError) as raised:
                live(request, timeout=10, metadata=(("x-api-key", "wrong"),))
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            answer = live(request, timeout=10, metadata=(("authorization", "Bearer k1"),))
            assert answer.live
        client = triton_grpc.InferenceServerClient(address)
        tensor = triton_grpc.InferInput("values", [2], "INT64")
        tensor.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
        with pytest.raises(InferenceServerException):
            client.infer("total", [tensor])
        result = client.infer("total", [tensor], headers={"x-api-key": "k1"})
        assert result.as_numpy("output").tolist() == [3]
    finally:
        server.stop()


def test_a_grpc_port_in_use_stops_the_server_with_advice(tmp_path: Path) -> None:
    write_service(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = launch(
            tmp_path,
            "tensor_service:Tensors",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--grpc-port",
            str(port),
            home=tmp_path / "home",
        )
        assert process.wait(30) == 2
    error = (tmp_path / "serve.err").read_text()
    assert (
        f"Cannot serve gRPC on 127.0.0.1:{port}: Address already in use. Stop whatever uses "
        "the port or pick another with --grpc-port." in error
    )
    assert not (tmp_path / "serve.out").read_text()  # it never said it was serving


def test_the_committed_descriptor_matches_the_proto() -> None:
    # the descriptor itself, whichever protoc version compiles it
    from tiffin.protocols.oip.descriptor import SERIALIZED

    assert messages.compile_proto() == SERIALIZED, (
        "descriptor.py is out of date: run python -m tiffin.protocols.oip.messages"
    )
    assert messages.generate().endswith(
        Path(messages.__file__).with_name("descriptor.py").read_text().split('"""', 2)[2]
    )


def test_message_classes_do_not_clash_with_another_projects() -> None:
    # Triton's client defines the same inference.* messages in protobuf's default pool
    from tritonclient.grpc import service_pb2

    ours = messages.message("ModelInferRequest")(model_name="m", raw_input_contents=[b"x"])
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert (theirs.model_name, list(theirs.raw_input_contents)) == ("m", [b"x"])
    assert type(ours) is not service_pb2.ModelInferRequest
