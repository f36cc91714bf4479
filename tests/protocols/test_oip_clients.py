"""A real ``tiffin serve --grpc-port`` with two workers, called by Triton's V2 clients
(``tritonclient.http`` and ``tritonclient.grpc``, a library tiffin does not share code
with) and by a bare gRPC channel sending typed ``contents`` instead of raw bytes."""

from __future__ import annotations

import queue
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.conftest import metrics_passed_on
from tests.server.conftest import Server, start_server
from tiffin.protocols.oip.messages import SERVICE, message

SERVICE_FILE = Path(__file__).with_name("tensor_service.py")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, int]]:
    """The tensor service on two workers, with gRPC on a port the system picked."""
    directory = tmp_path_factory.mktemp("oip")
    (directory / "tensor_service.py").write_text(SERVICE_FILE.read_text(), encoding="utf-8")
    served = start_server(
        directory,
        "tensor_service:Tensors",
        "--grpc-port",
        "0",
        "--workers",
        "2",
        home=directory / "home",
    )
    found = re.search(r"gRPC on port (\d+)", served.stdout.read_text())
    assert found, served.stdout.read_text()
    yield served, int(found.group(1))
    served.stop()


@pytest.fixture(scope="module")
def http_client(server: tuple[Server, int]) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(server[0].url.removeprefix("http://"))


@pytest.fixture(scope="module")
def grpc_client(server: tuple[Server, int]) -> triton_grpc.InferenceServerClient:
    return triton_grpc.InferenceServerClient(f"127.0.0.1:{server[1]}")


CASES = [  # model, input, datatype (of the input, and of the output), data
    ("scale", "x", "FP32", np.arange(6, dtype=np.float32).reshape(2, 3)),
    ("total", "values", "INT64", np.array([1, 2, 2**40], dtype=np.int64)),
    ("shout", "words", "BYTES", np.array([b"hi", "thé".encode()], dtype=object)),
    ("invert", "flags", "BOOL", np.array([[True, False]])),
]
IDS = [case[2] for case in CASES]
EXPECTED = {
    "scale": np.arange(6, dtype=np.float32).reshape(2, 3) * 2,
    "total": np.array([3 + 2**40]),
    "shout": np.array([b"HI!", "THÉ!".encode()], dtype=object),
    "invert": np.array([[False, True]]),
}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_triton_http_client(
    http_client: triton_http.InferenceServerClient, binary: bool, case: tuple[Any, ...]
) -> None:
    model, name, datatype, data = case
    tensor = triton_http.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data, binary_data=binary)
    wanted = triton_http.InferRequestedOutput("output", binary_data=binary)
    result = http_client.infer(model, [tensor], outputs=[wanted])
    got = result.as_numpy("output")
    assert result.get_output("output")["datatype"] == datatype
    expected = EXPECTED[model]
    if datatype == "BYTES" and not binary:  # JSON carries BYTES as text; the client keeps it so
        expected = np.array([item.decode() for item in expected], dtype=object)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_triton_grpc_client(
    grpc_client: triton_grpc.InferenceServerClient, case: tuple[Any, ...]
) -> None:
    model, name, datatype, data = case
    tensor = triton_grpc.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)  # raw_input_contents, as Triton's client always sends
    result = grpc_client.infer(model, [tensor])
    assert result.get_output("output").datatype == datatype
    np.testing.assert_array_equal(result.as_numpy("output"), EXPECTED[model])


def test_health_and_metadata_over_both(
    http_client: triton_http.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
) -> None:
    for client in (http_client, grpc_client):
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("scale")
    metadata = grpc_client.get_model_metadata("scale", as_json=True)
    assert metadata["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": ["-1", "3"]},
        {"name": "factor", "datatype": "FP64", "shape": ["1"]},
    ]
    assert metadata["outputs"] == [{"name": "output", "datatype": "FP32", "shape": ["-1", "3"]}]
    assert http_client.get_model_metadata("scale")["inputs"][0] == {
        "name": "x",
        "datatype": "FP32",
        "shape": [-1, 3],
    }
    assert grpc_client.get_server_metadata(as_json=True)["name"] == "tensors"


def test_shape_mismatch_is_invalid_argument_and_400(
    http_client: triton_http.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
) -> None:
    data = np.ones((2, 2), dtype=np.float32)
    expected = (
        "Input 'x' of model 'scale' must have shape (any, 3), got (2, 2). Its metadata (GET "
        "/v2/models/scale, or ModelMetadata over gRPC) lists the inputs it takes."
    )
    tensor = triton_grpc.InferInput("x", [2, 2], "FP32")
    tensor.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.infer("scale", [tensor])
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert raised.value.message() == expected
    http_tensor = triton_http.InferInput("x", [2, 2], "FP32")
    http_tensor.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException) as raised:
        http_client.infer("scale", [http_tensor])
    assert raised.value.status() == "400"
    assert raised.value.message() == expected


def test_unknown_model_is_not_found_and_404(
    http_client: triton_http.InferenceServerClient,
    grpc_client: triton_grpc.InferenceServerClient,
) -> None:
    tensor = triton_grpc.InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.infer("nope", [tensor])
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    assert raised.value.message().startswith("Model 'nope' is not served here.")
    with pytest.raises(InferenceServerException) as raised:
        grpc_client.get_model_metadata("greet")  # an API, but not a model
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as raised:
        http_client.get_model_metadata("nope")
    assert raised.value.status() == "404"


def _channel_call(port: int, method: str, request: Any) -> Any:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=message(f"{method}Response").FromString,
        )
        return call(request, timeout=10)


def test_typed_contents_instead_of_raw_bytes(server: tuple[Server, int]) -> None:
    request = message("ModelInferRequest")(model_name="total", id="c1")
    tensor = request.inputs.add(name="values", datatype="INT64", shape=[3])
    tensor.contents.int64_contents.extend([4, 5, 6])
    response = _channel_call(server[1], "ModelInfer", request)
    assert (response.model_name, response.id) == ("total", "c1")
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("output", "INT64", [1])
    assert np.frombuffer(response.raw_output_contents[0], "<i8").tolist() == [15]

    words = message("ModelInferRequest")(model_name="shout")
    tensor = words.inputs.add(name="words", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(b"ok")
    response = _channel_call(server[1], "ModelInfer", words)
    assert response.raw_output_contents[0] == b"\x03\x00\x00\x00OK!"

    short = message("ModelInferRequest")(model_name="total")
    tensor = short.inputs.add(name="values", datatype="INT64", shape=[2, 2])
    tensor.contents.int64_contents.extend([1, 2, 3])
    with pytest.raises(grpc.RpcError) as raised:
        _channel_call(server[1], "ModelInfer", short)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "Input 'values' has 3 elements in contents.int64_contents, but its shape [2, 2] "
        "needs 4. Send as many values as the shape says."
    )


def test_grpc_calls_share_batchers_and_metrics_with_http(
    server: tuple[Server, int], grpc_client: triton_grpc.InferenceServerClient
) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    for i in range(12):
        tensor = triton_grpc.InferInput("x", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.full((1, 2), i, dtype=np.float32))
        grpc_client.async_infer(
            "double", [tensor], callback=lambda result, error: results.put((result, error))
        )
    answers = [results.get(timeout=20) for _ in range(12)]
    assert [error for _, error in answers] == [None] * 12
    doubled = sorted(float(r.as_numpy("output")[0, 0]) for r, _ in answers)
    assert doubled == [2.0 * i for i in range(12)]
    metrics_passed_on()
    metrics = httpx.get(f"{server[0].url}/metrics").text
    count = re.search(r'tiffin_batch_size_count\{api="double"\} (\S+)', metrics)
    assert count, metrics
    assert float(count.group(1)) < 12  # some calls shared one batch
    served = re.search(r'tiffin_requests_total\{api="double",status="200"\} (\S+)', metrics)
    assert served
    assert float(served.group(1)) == 12.0
