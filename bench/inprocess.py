"""The compute limit: the same work as the servers do for a request, without HTTP, timed
call by call in a loop: parse the JSON body with the standard json module, call the
model, encode the answer as JSON. Run by ``bench/run.py`` in a process of its own,
pinned to the server's core:

    python -m bench.inprocess SERVICE BODY [--batch N] [--seconds S] [--warmup S]
    python -m bench.inprocess SERVICE BODY --first    # print the first answer and exit

With ``--batch N`` each call parses N bodies and calls the model once on all their rows,
as a batching server does at best; requests per second then count rows.
Prints one JSON object: rps, p50_ms, p99_ms, calls, pss_idle, pss_after (bytes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench.services.workload import Mlp, count_positive, iris_predict, load_iris

Work = Callable[[list[bytes]], list[bytes]]


def _work(service: str) -> Work:
    if service == "iris":
        clf = load_iris()

        def iris(bodies: list[bytes]) -> list[bytes]:
            rows = np.asarray(json.loads(bodies[0])["features"], dtype=np.float64)
            return [json.dumps(iris_predict(clf, rows)).encode()]

        return iris
    if service == "mlp":
        mlp = Mlp.load()

        def batch(bodies: list[bytes]) -> list[bytes]:
            parts = [np.asarray(json.loads(b)["features"], dtype=np.float32) for b in bodies]
            labels = mlp(np.concatenate(parts))
            answers, start = [], 0
            for part in parts:
                answers.append(json.dumps(labels[start : start + len(part)].tolist()).encode())
                start += len(part)
            return answers

        return batch
    if service == "large-body":

        def large_body(bodies: list[bytes]) -> list[bytes]:
            values = np.asarray(json.loads(bodies[0])["values"], dtype=np.float64)
            return [json.dumps(count_positive(values)).encode()]

        return large_body
    raise SystemExit(f"unknown service {service!r}")


def _pss() -> int:
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(work: Work, bodies: list[bytes], seconds: float, warmup: float) -> dict[str, Any]:
    work(bodies)
    idle = _pss()
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        work(bodies)
    times: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    while (now := time.perf_counter()) < end:
        work(bodies)
        times.append(time.perf_counter() - now)
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {
        "rps": len(times) * len(bodies) / elapsed,
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": cuts[98] * 1000,
        "calls": len(times),
        "pss_idle": idle,
        "pss_after": _pss(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("service")
    parser.add_argument("body", type=Path)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--first", action="store_true")
    args = parser.parse_args()
    work = _work(args.service)
    body = args.body.read_bytes()
    if args.first:
        print(work([body])[0].decode(), flush=True)
        return
    print(json.dumps(measure(work, [body] * args.batch, args.seconds, args.warmup)))


if __name__ == "__main__":
    main()
