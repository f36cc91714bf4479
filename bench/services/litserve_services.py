"""LitServe's services for the benchmark, written as LitServe's documentation shows: a
``LitAPI`` (setup, decode_request, predict, encode_response; ``max_batch_size`` and
``batch_timeout`` for batching) served by a ``LitServer`` on the CPU with one inference
worker and one API server, with the documented production settings (log level warning,
no client file). ``decode_request``'s request and ``encode_response``'s result are left
unannotated, as in LitServe's docs: LitServe builds its endpoint from those annotations,
and without them reads the body as JSON and sends the answer as JSON. Run in
``bench/.venv-litserve``, from the repository root:

    python -m bench.services.litserve_services SERVICE PORT
"""

from __future__ import annotations

import sys
from typing import Any

import litserve as ls
import numpy as np
from bench.services.workload import (
    MLP_BATCH_WAIT_MS,
    MLP_MAX_BATCH,
    Mlp,
    count_positive,
    iris_predict,
    load_iris,
)


class Iris(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.clf = load_iris()

    def decode_request(self, request) -> np.ndarray:
        return np.asarray(request["features"], dtype=np.float64)

    def predict(self, features: np.ndarray) -> list[str]:
        return iris_predict(self.clf, features)

    def encode_response(self, output: list[str]):
        return output


class MlpBatched(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.mlp = Mlp.load()

    def decode_request(self, request) -> np.ndarray:
        return np.asarray(request["features"], dtype=np.float32)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.mlp(features)

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        # one row per request, as the benchmark sends
        return [output[i : i + 1] for i in range(len(output))]

    def encode_response(self, output: np.ndarray):
        return [int(label) for label in output]


class LargeBody(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request) -> np.ndarray:
        return np.asarray(request["values"], dtype=np.float64)

    def predict(self, values: np.ndarray) -> int:
        return count_positive(values)

    def encode_response(self, output: int):
        return output


def main() -> None:
    service, port = sys.argv[1], int(sys.argv[2])
    if service == "iris":
        api: Any = Iris()
    elif service == "mlp":
        api = MlpBatched(max_batch_size=MLP_MAX_BATCH, batch_timeout=MLP_BATCH_WAIT_MS / 1000)
    elif service == "large-body":
        api = LargeBody()
    else:
        raise SystemExit(f"unknown service {service!r}")
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1",
        port=port,
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )


if __name__ == "__main__":
    main()
