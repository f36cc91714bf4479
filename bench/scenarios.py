"""The scenarios: what is sent, what must come back, at which concurrencies, and which
systems serve it; and the model files they all load, written once per run.

    tiny model    the quickstart's iris LogisticRegression, one row per request: what a
                  framework costs per request when the model costs nothing; tiffin also
                  with every request's features and prediction logged by tiffin.monitor,
                  and through the Open Inference Protocol, over HTTP and over gRPC, the
                  latter against a bare grpc.aio server of the same call
    MLP           a numpy MLP 256 -> 4096 -> 4096 -> 10, one row per request, with
                  batching on everywhere (and tiffin also without): the model's cost per
                  call is mostly fixed, so batching decides throughput
    large body    a 1 MB JSON array of floats in, one number out: reading a large body
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bench.services.workload import MLP_SIZES, Mlp, iris_predict

from tiffin.models import ModelStore

ROOT = Path(__file__).resolve().parents[1]
LARGE_BODY_BYTES = 1_000_000
SETTLE_S = 2.0
"""Seconds a server sits idle after its last load before its memory is measured."""


PROTOCOLS = ("json", "oip-http", "oip-grpc")
"""How an entry is called: the service's own JSON API (``POST /predict``), or the Open
Inference Protocol over HTTP (``POST /v2/models/{api}/infer``, JSON tensors) or over
gRPC (``ModelInfer``, raw tensor bytes)."""
SPEAKS = {"tiffin": PROTOCOLS, "bare gRPC": ("oip-grpc",)}
"""The protocols of the systems that take more than the JSON API (the others: json)."""
BASELINE = "tiffin"
"""The entry the report compares the others with, unless an entry names its own."""


@dataclass(frozen=True)
class Entry:
    """One system serving one scenario, called through ``protocol`` (one of
    ``PROTOCOLS``): ``label`` names it in the report, which gives its figures as ratios
    to those of the entry labelled ``baseline``."""

    label: str
    system: str
    service: str
    protocol: str = "json"
    baseline: str = BASELINE

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}; one of {PROTOCOLS}")
        speaks = SPEAKS.get(self.system, ("json",))
        if self.protocol not in speaks:
            raise ValueError(
                f"{self.system} is benchmarked over {', '.join(speaks)}, not {self.protocol}"
            )


@dataclass(frozen=True)
class Oip:
    """A scenario's request as an Open Inference Protocol call of ``model``: files
    holding its JSON request body (from which the gRPC load builds its ModelInferRequest
    too) and the JSON answer over HTTP."""

    model: str
    body: Path
    answer: Path


@dataclass(frozen=True)
class Scenario:
    """One scenario.

    Attributes:
        key, title: its short name and its heading in the report.
        body, answer: files holding the request body and the JSON every answer must equal.
        oip: the same request in the Open Inference Protocol, for entries that use it.
        connections: the concurrencies it is loaded at.
        entries: the systems that serve it, in the order of the first repetition.
        batch: the servers batch; in process the model then takes as many rows per call
            as there are connections (up to 64), the compute limit of a batching server.
    """

    key: str
    title: str
    body: Path
    answer: Path
    connections: tuple[int, ...]
    entries: tuple[Entry, ...]
    batch: bool = False
    oip: Oip | None = None

    def __post_init__(self) -> None:
        if self.oip is None and any(e.protocol != "json" for e in self.entries):
            raise ValueError(f"scenario {self.key!r} has OIP entries but no OIP request")


def _entries(service: str, *extra: Entry) -> tuple[Entry, ...]:
    systems = ("in-process", "bare ASGI", "tiffin", "BentoML", "LitServe")
    base = tuple(Entry(system, system, service) for system in systems)
    return base[:3] + extra + base[3:]


def prepare(work: Path) -> list[Scenario]:
    """Write the models (tiffin's store under ``work/home``, plain files under
    ``work/data``) and each scenario's request and expected answer; return the scenarios."""
    data, home = work / "data", work / "home"
    data.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIFFIN_")}
    env["TIFFIN_HOME"] = str(home)
    quickstart = ROOT / "examples" / "quickstart"
    subprocess.run(
        [sys.executable, "train.py"], cwd=quickstart, env=env, check=True, capture_output=True
    )
    store = ModelStore(home)
    clf = store.get("iris:latest").load()
    (data / "iris.pkl").write_bytes(pickle.dumps(clf))

    weights = Mlp.random_weights(seed=0)
    store.save("bench-mlp", weights)
    arrays: dict[str, Any] = weights  # numpy's stubs take a ** mapping for allow_pickle too
    np.savez(data / "mlp.npz", **arrays)

    def write(key: str, body: object, answer: object) -> tuple[Path, Path]:
        paths = data / f"{key}.body.json", data / f"{key}.answer.json"
        paths[0].write_text(json.dumps(body))
        paths[1].write_text(json.dumps(answer))
        return paths

    flower = [[5.1, 3.5, 1.4, 0.2]]
    species = iris_predict(clf, np.asarray(flower))
    iris = write("iris", {"features": flower}, species)
    features = {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": flower}
    output = {"name": "output", "datatype": "BYTES", "shape": [len(species)], "data": species}
    oip = write("iris-oip", {"inputs": [features]}, {"model_name": "predict", "outputs": [output]})
    row = _clear_row(Mlp(weights))
    mlp = write("mlp", {"features": [row]}, Mlp(weights)(np.asarray([row], np.float32)).tolist())
    values = _values(LARGE_BODY_BYTES)
    large = write("large-body", {"values": values}, int(np.count_nonzero(np.asarray(values) > 0)))
    return [
        Scenario(
            "tiny", "Tiny model: iris LogisticRegression, one row per request", *iris,
            connections=(1, 8, 64), oip=Oip("predict", *oip), entries=_entries(
                "iris",
                Entry("tiffin, monitored", "tiffin", "iris-monitored"),
                Entry("tiffin, OIP HTTP", "tiffin", "iris", "oip-http"),
                Entry("tiffin, OIP gRPC", "tiffin", "iris", "oip-grpc"),
                Entry("bare gRPC", "bare gRPC", "iris", "oip-grpc", "tiffin, OIP gRPC"),
            ),
        ),
        Scenario(
            "mlp", "MLP 256-4096-4096-10 (numpy), one row per request, batching on", *mlp,
            connections=(1, 64), batch=True,
            entries=_entries("mlp", Entry("tiffin, unbatched", "tiffin", "mlp-unbatched")),
        ),
        Scenario(
            "large-body", f"Large body: {LARGE_BODY_BYTES / 1e6:g} MB JSON float array in, "
            "one number out", *large, connections=(1, 8), entries=_entries("large-body"),
        ),
    ]  # fmt: skip


def _clear_row(mlp: Mlp) -> list[float]:
    """An input row whose best class wins by a wide margin, so that rounding differences
    between batched and single calls (or BLAS builds) cannot change the answer."""
    rng = np.random.default_rng(1)
    while True:
        row = np.round(rng.standard_normal(MLP_SIZES[0]), 3)
        top, second = np.sort(mlp.scores(row[None, :].astype(np.float32))[0])[::-1][:2]
        if top - second > 0.5:
            return row.tolist()  # type: ignore[no-any-return]


def _values(size: int) -> list[float]:
    """Floats whose JSON array is about ``size`` bytes."""
    rng = np.random.default_rng(2)
    per_value = len(json.dumps(rng.standard_normal(1000).tolist())) / 1000
    return rng.standard_normal(int(size / per_value)).tolist()  # type: ignore[no-any-return]
