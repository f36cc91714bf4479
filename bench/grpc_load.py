"""The gRPC load generator: Open Inference Protocol ``ModelInfer`` calls on ``grpc.aio``,
pinned to the load core, checking every answer.

wrk speaks HTTP/1.1 only, so the gRPC entries are loaded by this Python program, in a
process of its own under ``taskset -c LOAD_CPU`` (``run`` starts it). It opens N
channels, each its own HTTP/2 connection with one call in flight at a time (what wrk's N
connections are), calls for a warm-up, then for a measured duration. Each request is the
scenario's OIP JSON request as a ``ModelInferRequest`` whose values travel in
``raw_input_contents`` (what Triton's client sends). An answer is correct when its status
is OK and its outputs, ``raw_output_contents`` decoded (BYTES: per element a 4-byte
little-endian length, then the bytes), equal the JSON answer's.

A Python client costs more CPU per call than wrk does, so the generator also takes its
own CPU share and the server's over the measured seconds; the report shows both, and a
generator near 100% of its core means the figure is its limit, not the server's.

    python -m bench.grpc_load PORT BODY ANSWER --model predict --connections 8 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np
from bench import systems
from bench.load import LOAD_CPU, Load
from bench.scenarios import Oip

from tiffin.protocols.oip.messages import SERVICE, message
from tiffin.protocols.oip.tensors import DATATYPES

ROOT = Path(__file__).resolve().parents[1]
METHOD = f"/{SERVICE}/ModelInfer"
TIMEOUT_S = 10.0  # per call, as wrk's --timeout
Outputs = tuple[str, str, tuple[tuple[str, str, tuple[int, ...], tuple[Any, ...]], ...]]
"""What is checked of an answer: model name, version, and each output's name, datatype,
shape and values."""


def run(
    port: int, oip: Oip, *, connections: int, seconds: float, warmup: float, server: int
) -> Load:
    """Call ``oip.model`` on 127.0.0.1:``port`` with ``connections`` calls in flight:
    ``warmup`` seconds not counted, then ``seconds`` measured. ``server`` is the pid of
    the server's first process, whose tree's CPU use is taken."""
    command = [
        "taskset", "-c", str(LOAD_CPU), sys.executable, "-m", "bench.grpc_load", str(port),
        str(oip.body), str(oip.answer), "--model", oip.model, "--connections", str(connections),
        "--seconds", str(seconds), "--warmup", str(warmup), "--server", str(server),
    ]  # fmt: skip
    timeout = warmup + seconds + 60
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"grpc_load failed ({done.returncode}): {done.stderr[-1000:]}")
    return Load(**json.loads(done.stdout))


def ask(port: int, oip: Oip) -> systems.Ask:
    """One ModelInfer call (for the time to the first correct answer): "" when correct,
    else what came back."""
    request = _request(oip.model, json.loads(oip.body.read_bytes()))
    expected = _expected(json.loads(oip.answer.read_bytes()))

    def once() -> str:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = _method(channel)
            try:
                response = call(request, timeout=TIMEOUT_S)
            except grpc.RpcError as exc:
                return f"gRPC status {exc.code()}: {exc.details()}"
        got = _outputs(response)
        return "" if got == expected else repr(got)[:200]

    return once


# -- requests and answers ------------------------------------------------------------


def _method(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        METHOD,
        request_serializer=message("ModelInferRequest").SerializeToString,
        response_deserializer=message("ModelInferResponse").FromString,
    )


def _request(model: str, body: dict[str, Any]) -> Any:
    """The ModelInferRequest for an OIP JSON request body, values as raw bytes."""
    request = message("ModelInferRequest")(model_name=model)
    for tensor in body["inputs"]:
        name, datatype, shape = tensor["name"], tensor["datatype"], tensor["shape"]
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(_encode(datatype, tensor["data"]))
    return request


def _expected(answer: dict[str, Any]) -> Outputs:
    outputs = tuple(
        (o["name"], o["datatype"], tuple(o["shape"]), tuple(np.ravel(o["data"]).tolist()))
        for o in answer["outputs"]
    )
    return answer["model_name"], answer.get("model_version", ""), outputs


def _outputs(response: Any) -> Outputs:
    raw = response.raw_output_contents
    if len(raw) != len(response.outputs):
        return response.model_name, response.model_version, ()
    outputs = tuple(
        (o.name, o.datatype, tuple(o.shape), tuple(_decode(o.datatype, contents)))
        for o, contents in zip(response.outputs, raw, strict=True)
    )
    return response.model_name, response.model_version, outputs


def _encode(datatype: str, data: Any) -> bytes:
    if datatype != "BYTES":
        return np.asarray(data, DATATYPES[datatype]).tobytes()
    items = [item.encode() for item in np.ravel(data).tolist()]
    return b"".join(len(item).to_bytes(4, "little") + item for item in items)


def _decode(datatype: str, raw: bytes) -> list[Any]:
    if datatype != "BYTES":
        values: list[Any] = np.frombuffer(raw, DATATYPES[datatype]).tolist()
        return values
    items, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset : offset + 4], "little")
        items.append(raw[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return items


# -- the load ------------------------------------------------------------------------


@dataclasses.dataclass
class _Tally:
    counting: bool = False
    running: bool = True
    requests: int = 0
    bad_status: int = 0
    wrong: int = 0
    latencies: list[float] = dataclasses.field(default_factory=list)


async def _caller(call: Any, request: Any, expected: Outputs, tally: _Tally) -> None:
    """Calls one after another until told to stop; tallies those that end while counting."""
    while tally.running:
        start = time.perf_counter()
        try:
            response = await call(request, timeout=TIMEOUT_S)
        except grpc.aio.AioRpcError:
            bad, wrong = True, False
        else:
            bad, wrong = False, _outputs(response) != expected
        if tally.counting:
            tally.latencies.append(time.perf_counter() - start)
            tally.requests += 1
            tally.bad_status += bad
            tally.wrong += wrong


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread, gRPC's own included
    return usage.ru_utime + usage.ru_stime


async def _load(
    port: int,
    request: Any,
    expected: Outputs,
    *,
    connections: int,
    seconds: float,
    warmup: float,
    server: int,
) -> Load:
    # a channel of its own subchannel pool opens a connection of its own
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(connections)
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 30)
        tally = _Tally()
        callers = [
            asyncio.create_task(_caller(_method(channel), request, expected, tally))
            for channel in channels
        ]
        await asyncio.sleep(warmup)
        pids = systems.tree(server)
        server_before, own_before = systems.cpu_seconds(pids), _own_cpu()
        start = time.perf_counter()
        tally.counting = True
        await asyncio.sleep(seconds)
        tally.counting = False
        elapsed = time.perf_counter() - start
        server_cpu = (systems.cpu_seconds(pids) - server_before) / elapsed
        load_cpu = (_own_cpu() - own_before) / elapsed
        tally.running = False
        await asyncio.gather(*callers)
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    latencies = sorted(tally.latencies) or [0.0]
    return Load(
        connections=connections,
        seconds=elapsed,
        requests=tally.requests,
        bad_status=tally.bad_status,
        wrong=tally.wrong,
        socket_errors=0,  # a failed connection is a call with status UNAVAILABLE
        p50_ms=_percentile(latencies, 0.50) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        server_cpu=server_cpu,
        load_cpu=load_cpu,
    )


def _percentile(ordered: list[float], share: float) -> float:
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int, help="the server's gRPC port on 127.0.0.1")
    parser.add_argument("body", type=Path, help="the OIP JSON request body")
    parser.add_argument("answer", type=Path, help="the OIP JSON answer every call must get")
    parser.add_argument("--model", required=True, help="the model called")
    parser.add_argument("--connections", type=int, default=1, help="calls in flight")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds")
    parser.add_argument("--server", type=int, required=True, help="the server's first pid")
    args = parser.parse_args()
    request = _request(args.model, json.loads(args.body.read_bytes()))
    expected = _expected(json.loads(args.answer.read_bytes()))
    result = asyncio.run(
        _load(
            args.port, request, expected,
            connections=args.connections, seconds=args.seconds, warmup=args.warmup,
            server=args.server,
        )
    )  # fmt: skip
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    main()
