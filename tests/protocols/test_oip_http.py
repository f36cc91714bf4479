"""The Open Inference Protocol over HTTP, against the real ASGI app: routes, JSON and
binary tensors of each datatype, and every way a request can be wrong, with the exact
error a client sees."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.protocols.tensor_service import Tensors
from tests.server.asgi import serving

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


async def infer(client: httpx.AsyncClient, model: str, *inputs: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/v2/models/{model}/infer", json={"inputs": list(inputs)})


async def test_server_routes_report_metadata_and_health() -> None:
    from tiffin import __version__

    async with serving(Tensors) as (client, _):
        assert (await client.get("/v2")).json() == {
            "name": "tensors",
            "version": __version__,
            "extensions": ["binary_tensor_data"],
        }
        assert (await client.get("/v2/health/live")).json() == {"live": True}
        ready = await client.get("/v2/health/ready")
        assert (ready.status_code, ready.json()) == (200, {"ready": True})
        model_ready = await client.get("/v2/models/scale/ready")
        assert model_ready.json() == {"name": "scale", "ready": True}


async def test_each_tensor_api_is_a_model_with_its_tensors() -> None:
    async with serving(Tensors) as (client, _):
        scale = (await client.get("/v2/models/scale")).json()
        assert scale == {
            "name": "scale",
            "versions": [],
            "platform": "tiffin",
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
                {"name": "factor", "datatype": "FP64", "shape": [1]},
            ],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
        }
        shout = (await client.get("/v2/models/shout")).json()
        assert shout["inputs"] == [{"name": "words", "datatype": "BYTES", "shape": [-1]}]
        summary = (await client.get("/v2/models/summary")).json()
        assert summary["outputs"] == [{"name": "output", "datatype": "BYTES", "shape": [1]}]
        # a pydantic parameter is not a tensor: that API is not a model
        greet = await client.get("/v2/models/greet")
        assert greet.status_code == 404
        assert greet.json() == {
            "error": "Model 'greet' is not served here. This server's models are: double, "
            "fail, invert, scale, shout, summary, total."
        }


async def test_fp32_nested_or_flat_data_and_an_optional_scalar() -> None:
    async with serving(Tensors) as (client, _):
        nested = await infer(client, "scale", tensor("x", "FP32", [2, 3], [[1, 2, 3], [4, 5, 6]]))
        assert nested.status_code == 200, nested.text
        assert nested.json() == {
            "model_name": "scale",
            "outputs": [
                {
                    "name": "output",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "data": [2.0, 4.0, 6.0, 8.0, 10.0, 12.0],
                }
            ],
        }
        flat = await infer(
            client,
            "scale",
            tensor("x", "FP32", [1, 3], [1.5, 2.5, 3.5]),
            tensor("factor", "FP64", [1], [10.0]),
        )
        assert flat.json()["outputs"][0]["data"] == [15.0, 25.0, 35.0]


async def test_int64_bytes_bool_and_json_results() -> None:
    async with serving(Tensors) as (client, _):
        total = await infer(client, "total", tensor("values", "INT64", [3], [1, 2, 2**40]))
        assert total.json()["outputs"] == [
            {"name": "output", "datatype": "INT64", "shape": [1], "data": [3 + 2**40]}
        ]
        shout = await infer(client, "shout", tensor("words", "BYTES", [2], ["hi", "there"]))
        assert shout.json()["outputs"] == [
            {"name": "output", "datatype": "BYTES", "shape": [2], "data": ["HI!", "THERE!"]}
        ]
        invert = await infer(
            client, "invert", tensor("flags", "BOOL", [2, 2], [[True, False], [False, False]])
        )
        assert invert.json()["outputs"] == [
            {
                "name": "output",
                "datatype": "BOOL",
                "shape": [2, 2],
                "data": [False, True] + [True] * 2,
            }
        ]
        summary = await infer(client, "summary", tensor("values", "FP64", [2], [1.0, 2.0]))
        (output,) = summary.json()["outputs"]
        assert (output["datatype"], output["shape"]) == ("BYTES", [1])
        assert orjson.loads(output["data"][0]) == {"count": 2, "mean": 1.5}


async def test_the_request_id_is_echoed() -> None:
    async with serving(Tensors) as (client, _):
        body = {"id": "req-7", "inputs": [tensor("values", "INT64", [1], [5])]}
        response = await client.post("/v2/models/total/infer", json=body)
        assert response.json()["id"] == "req-7"


def binary_request(
    inputs: list[tuple[str, str, list[int], bytes]], **extra: Any
) -> tuple[bytes, dict[str, str]]:
    header = {
        "inputs": [
            {"name": n, "datatype": t, "shape": s, "parameters": {"binary_data_size": len(b)}}
            for n, t, s, b in inputs
        ],
        **extra,
    }
    head = orjson.dumps(header)
    body = head + b"".join(b for *_, b in inputs)
    return body, {"Inference-Header-Content-Length": str(len(head))}


async def test_binary_tensor_data_in_and_out() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, headers = binary_request(
        [("x", "FP32", [2, 3], x.tobytes())],
        outputs=[{"name": "output", "parameters": {"binary_data": True}}],
    )
    async with serving(Tensors) as (client, _):
        response = await client.post("/v2/models/scale/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/octet-stream"
        size = int(response.headers["inference-header-content-length"])
        header = orjson.loads(response.content[:size])
        assert header["outputs"] == [
            {
                "name": "output",
                "datatype": "FP32",
                "shape": [2, 3],
                "parameters": {"binary_data_size": 24},
            }
        ]
        out = np.frombuffer(response.content[size:], dtype="<f4").reshape(2, 3)
        np.testing.assert_array_equal(out, x * 2)

        # BYTES in binary: each element is a 4-byte little-endian length, then its bytes
        words = b"".join(len(w).to_bytes(4, "little") + w for w in (b"ab", b"cde"))
        body, headers = binary_request(
            [("words", "BYTES", [2], words)], parameters={"binary_data_output": True}
        )
        response = await client.post("/v2/models/shout/infer", content=body, headers=headers)
        size = int(response.headers["inference-header-content-length"])
        assert response.content[size:] == b"\x03\x00\x00\x00AB!\x04\x00\x00\x00CDE!"


async def test_a_shape_that_does_not_fit_the_data_or_the_model() -> None:
    async with serving(Tensors) as (client, _):
        counted = await infer(client, "scale", tensor("x", "FP32", [2, 3], [1, 2, 3]))
        assert counted.status_code == 400
        assert counted.json() == {
            "error": "Input 'x' has 3 elements, but its shape [2, 3] needs 6. Send as many "
            "values as the shape says."
        }
        wrong = await infer(client, "scale", tensor("x", "FP32", [2, 2], [1, 2, 3, 4]))
        assert wrong.status_code == 400
        assert wrong.json() == {
            "error": "Input 'x' of model 'scale' must have shape (any, 3), got (2, 2). Its "
            "metadata (GET /v2/models/scale, or ModelMetadata over gRPC) lists the inputs it "
            "takes."
        }
        scalar = await infer(
            client,
            "scale",
            tensor("x", "FP32", [1, 3], [1, 2, 3]),
            tensor("factor", "FP64", [2], [1, 2]),
        )
        assert scalar.json() == {
            "error": "Input 'factor' of model 'scale' is one value: send shape [1], not [2]."
        }
        depth = await infer(client, "total", tensor("values", "INT64", [1, 2], [1, 2]))
        assert depth.json() == {
            "error": "Input 'values' of model 'total' has 1 dimension ([-1]), not 2 ([1, 2])."
        }
        negative = await infer(client, "total", tensor("values", "INT64", [-1], [1]))
        assert negative.json() == {
            "error": "Input 'values' has shape [-1]; a shape is a list of sizes (whole "
            "numbers from 0 up), e.g. [2, 4]."
        }


async def test_data_that_does_not_fit_its_datatype() -> None:
    async with serving(Tensors) as (client, _):
        text = await infer(client, "scale", tensor("x", "FP32", [1, 3], ["a", "b", "c"]))
        assert text.status_code == 400
        assert text.json()["error"].startswith("Input 'x' does not hold FP32 data: could not")
        as_bytes = await infer(client, "scale", tensor("x", "BYTES", [1, 3], ["a", "b", "c"]))
        assert as_bytes.json() == {
            "error": "Input 'x' is BYTES, but model 'scale' takes FP32 numbers there."
        }
        numbers = await infer(client, "invert", tensor("flags", "BOOL", [2], [1, 0]))
        assert numbers.json() == {
            "error": "Input 'flags' does not hold BOOL data: BOOL data must be true or false."
        }
        unknown = await infer(client, "scale", tensor("x", "FP8", [1], [1]))
        assert unknown.json() == {
            "error": "Input 'x' has datatype 'FP8', which this server does not take. Use one "
            "of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, "
            "FP64, BYTES."
        }


async def test_unknown_missing_and_repeated_inputs() -> None:
    async with serving(Tensors) as (client, _):
        unknown = await infer(
            client, "scale", tensor("x", "FP32", [1, 3], [1, 2, 3]), tensor("y", "FP32", [1], [1])
        )
        assert unknown.json() == {
            "error": "Model 'scale' has no input 'y'; its inputs are 'x', 'factor'."
        }
        missing = await infer(client, "scale", tensor("factor", "FP64", [1], [1.0]))
        assert missing.json() == {
            "error": "Model 'scale' needs the input 'x'; its inputs are 'x', 'factor'."
        }
        twice = await infer(
            client,
            "total",
            tensor("values", "INT64", [1], [1]),
            tensor("values", "INT64", [1], [2]),
        )
        assert twice.json() == {"error": "Input 'values' is given twice; send each input once."}
        no_data = await client.post(
            "/v2/models/total/infer",
            json={"inputs": [{"name": "values", "datatype": "INT64", "shape": [1]}]},
        )
        assert no_data.json() == {
            "error": "Input 'values' has no 'data' (nor a binary_data_size parameter for "
            "binary data after the JSON)."
        }
        output = await client.post(
            "/v2/models/total/infer",
            json={"inputs": [tensor("values", "INT64", [1], [1])], "outputs": [{"name": "y"}]},
        )
        assert output.json() == {
            "error": "Model 'total' has no output 'y'; its output is 'output'."
        }


async def test_bodies_that_are_not_inference_requests() -> None:
    async with serving(Tensors) as (client, _):
        broken = await client.post("/v2/models/total/infer", content=b'{"inputs": [')
        assert broken.status_code == 400
        assert broken.json()["error"].startswith("The inference request is not valid JSON (")
        listed = await client.post("/v2/models/total/infer", json=[1, 2])
        assert listed.json() == {
            "error": "The inference request must be a JSON object with 'inputs'."
        }
        empty = await client.post("/v2/models/total/infer", json={"inputs": []})
        assert empty.json() == {
            "error": "The inference request has no 'inputs'. Send a list of tensors, each "
            "{'name', 'shape', 'datatype', 'data'}."
        }
        body, headers = binary_request([("values", "INT64", [2], b"\x01" * 16)])
        headers["Inference-Header-Content-Length"] = str(len(body) + 1)
        too_long = await client.post("/v2/models/total/infer", content=body, headers=headers)
        assert too_long.status_code == 400
        assert "header says" in too_long.json()["error"]
        short, headers = binary_request([("values", "INT64", [2], b"\x01" * 12)])
        cut = await client.post("/v2/models/total/infer", content=short, headers=headers)
        assert cut.json() == {
            "error": "Input 'values' has 12 bytes of data, but INT64 of shape [2] is 16 bytes. "
            "Send as many values as the shape says."
        }
        extra, headers = binary_request([("values", "INT64", [1], b"\x01" * 8)])
        left = await client.post("/v2/models/total/infer", content=extra + b"xx", headers=headers)
        assert left.json() == {
            "error": "The body has 2 bytes of binary data that no input's binary_data_size "
            "accounts for."
        }


async def test_unknown_models_versions_paths_and_methods() -> None:
    async with serving(Tensors) as (client, _):
        missing = await infer(client, "nope", tensor("x", "FP32", [1], [1]))
        assert missing.status_code == 404
        assert missing.json()["error"].startswith("Model 'nope' is not served here.")
        versioned = await client.get("/v2/models/total/versions/3")
        assert versioned.status_code == 404
        assert versioned.json() == {
            "error": "Model 'total' has no version '3'; this server serves no version. Leave "
            "the version out to call the one served."
        }
        path = await client.get("/v2/repository/index")
        assert path.status_code == 404
        assert path.json()["error"].startswith("No Open Inference Protocol route at /v2/repo")
        method = await client.get("/v2/models/total/infer")
        assert method.status_code == 405
        assert method.headers["allow"] == "POST"
        assert method.json() == {"error": "/v2/models/total/infer takes POST, not GET."}


async def test_errors_of_the_service_and_of_the_server() -> None:
    async with serving(Tensors, max_body_size=200) as (client, _):
        failed = await infer(client, "fail", tensor("values", "FP64", [1], [1.0]))
        assert failed.status_code == 500
        assert failed.json()["error"].startswith(
            "API 'fail' failed: the service's code raised RuntimeError. The server log has "
            "the traceback under request id "
        )
        large = await infer(client, "total", tensor("values", "INT64", [60], list(range(60))))
        assert large.status_code == 400
        assert large.json()["error"].startswith("The request body is ")


async def test_api_keys_guard_the_protocol_routes_in_its_error_shape() -> None:
    async with serving(Tensors, api_keys=("k1",)) as (client, _):
        refused = await client.get("/v2/models/total")
        assert refused.status_code == 401
        assert refused.json() == {
            "error": "This server needs an API key. Send it as 'Authorization: Bearer <key>' "
            "or 'X-API-Key: <key>'."
        }
        allowed = await client.get("/v2/models/total", headers={"X-API-Key": "k1"})
        assert allowed.status_code == 200


async def test_concurrent_calls_to_a_batched_api_share_model_calls() -> None:
    async with serving(Tensors) as (client, _):
        calls = [infer(client, "double", tensor("x", "FP32", [1, 2], [i, i])) for i in range(8)]
        answers = await asyncio.gather(*calls)
        for i, answer in enumerate(answers):
            assert answer.json()["outputs"][0]["data"] == [2.0 * i, 2.0 * i]
        sizes = (await client.post("/batch_sizes", json={})).json()
        assert sum(sizes) == 8
        assert max(sizes) > 1, sizes


async def test_calls_count_in_the_api_metrics() -> None:
    async with serving(Tensors) as (client, _):
        await infer(client, "total", tensor("values", "INT64", [1], [1]))
        await infer(client, "total", tensor("values", "INT64", [1, 1], [1]))
        metrics = (await client.get("/metrics")).text
        assert 'tiffin_requests_total{api="total",status="200"} 1.0' in metrics
        # refused before the API was called: counted by nothing
        assert 'api="total",status="422"' not in metrics


async def test_the_protocols_setting_turns_it_off() -> None:
    async with serving(Tensors, protocols=("none",)) as (client, _):
        assert (await client.get("/v2")).status_code == 404
        assert (await client.get("/v2/models/total")).json()["error"]["type"] == "RouteNotFound"
