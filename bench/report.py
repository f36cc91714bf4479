"""The markdown report: for each figure, the median over the repetitions, its min-max,
and each system's ratio to tiffin's median (for req/s above 1 is faster than tiffin; for
times and memory above 1 is more than tiffin). An entry with a baseline of its own (bare
gRPC's is tiffin over gRPC) is compared with that entry instead."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from bench.scenarios import BASELINE, SETTLE_S, Scenario

SATURATED = 0.9  # a load generator busier than this share of its core limits the figure

_SYSTEMS = """\
- **in-process**: the same work without HTTP (parse the JSON body with `json`, call the
  model, encode the answer), timed call by call in one process on the server's core: the
  compute limit. It has no concurrency, so each concurrency shows the same one-caller
  figure, except the batched MLP at 64: 64 bodies per call, one model call, req/s = rows/s.
- **bare ASGI**: a framework-free ASGI app (`bench/services/bare.py`) on uvicorn with
  httptools and uvloop, one worker, no access log, parsing with the standard `json`
  module: the limit for Python HTTP serving. It batches the MLP itself: a lone request
  runs at once, the next batch is what queued meanwhile (after a 1 ms pause under load).
- **tiffin**: `tiffin serve`, defaults (one worker, JSON access log on; freed heap memory
  given back to the system a second after large requests stop). The tiny model is
  the quickstart service itself; the MLP has
  `@tiffin.api(batch=tiffin.Batch(max_size=64, max_latency_ms=100))` (a promise about
  queue wait, not a window).
- **tiffin, monitored** (tiny model): the quickstart service with data monitoring on
  (`IrisMonitored` in `bench/services/tiffin_services.py`): each request's features and
  prediction go to `tiffin.monitor("iris").log(...)`, every record kept, and a writer
  thread appends them to JSON lines files in the server's home. Its ratios to tiffin are
  what monitoring costs a request.
- **tiffin, OIP HTTP** and **tiffin, OIP gRPC** (tiny model): the same quickstart service
  called through the Open Inference Protocol. HTTP: wrk POSTs
  `/v2/models/predict/infer` with a JSON tensor body (`"data": [[5.1, 3.5, 1.4, 0.2]]`).
  gRPC: `tiffin serve --grpc-port`, called with `inference.GRPCInferenceService/ModelInfer`,
  the input in `raw_input_contents` (as Triton's client sends it), by
  `bench/grpc_load.py`: one Python process on `grpc.aio`, N channels each with its own
  HTTP/2 connection and one call in flight (like wrk's N connections), every answer's
  `raw_output_contents` decoded and checked. Its CPU per call is several times wrk's
  (`CPU %` over req/s), which adds to each round trip at concurrency 1. tiffin writes an
  access log line per HTTP request but none per gRPC call.
- **bare gRPC** (tiny model): a framework-free `grpc.aio` server on uvloop
  (`bench/services/bare_grpc.py`) with one handler, for `ModelInfer`: it decodes the raw
  input as FP64, calls the model and answers as tiffin does, checking nothing and logging
  nothing; the limit for Python gRPC serving, loaded by the same `bench/grpc_load.py`.
- **BentoML**: `bentoml serve` of `@bentoml.service(workers=1)` classes, defaults (access
  log on; installed as `pip install bentoml`, which brings no uvloop or httptools). MLP:
  `@bentoml.api(batchable=True, max_batch_size=64, max_latency_ms=1000)`: BentoML's
  max_latency_ms is a deadline answered with 503, and 1000 is its guide's value (at 10 it
  refused nearly every request here).
- **LitServe**: `LitServer(api, accelerator="cpu", workers_per_device=1)`,
  `run(num_api_servers=1, log_level="warning", generate_client_file=False)` (its
  production example with one API server; no access log at that level). MLP:
  `LitAPI(max_batch_size=64, batch_timeout=0.01)`, a fixed 10 ms window to fill a batch.
"""


def markdown(
    meta: dict[str, Any], scenarios: Sequence[Scenario], samples: list[dict[str, Any]]
) -> str:
    """The whole report."""
    lines = [
        "# Serving benchmark",
        "",
        f"{meta['started']} to {meta['finished']}; {meta['machine']}.",
        "Server pinned to CPU 0, the load to CPU 1: wrk (one thread) over HTTP, "
        "`bench/grpc_load.py` (one Python process) over gRPC. Repetitions: "
        f"{meta['repeat']}, systems interleaved within each; each load "
        f"{meta['warmup']:g} s warm-up, then {meta['seconds']:g} s measured. Every answer is "
        "checked (status and value); req/s counts correct answers; errors are non-200 "
        "answers (gRPC: non-OK statuses), wrong values and socket errors. `CPU %`: the share "
        "of its core that the server's process tree, and the load generator, used over the "
        "measured seconds; a server near 100 is the limit of the figure, a load generator "
        "near 100 would be.",
        "Cells: median over the repetitions, (min-max); `x tiffin`: ratio of medians to tiffin's"
        + "".join(f" ({label}: to {base}'s)" for label, base in _baselines(scenarios).items())
        + ".",
        "",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + "; "
        + (", ".join(f"{k} {v}" for k, v in meta["peers"].items()) or "no peers")
        + ".",
    ]
    for name, reason in meta["unavailable"].items():
        lines.append(f"\n**{name} could not be installed**: {reason}")
    lines += ["", "Systems:", "", _SYSTEMS]
    by_scenario: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        by_scenario[sample["scenario"]].append(sample)
    for scenario in scenarios:
        lines += _scenario(scenario, by_scenario[scenario.key])
    lines += _start(scenarios, by_scenario, meta["repeat"] * meta.get("starts", 1))
    lines += _memory(scenarios, by_scenario)
    failures = [s for s in samples if s["kind"] == "failed"]
    if failures:
        lines += ["", "## Failures", ""]
        lines += [
            f"- repetition {s['rep'] + 1}, {s['scenario']}, {s['system']}: {s['reason']}"
            for s in failures
        ]
    return "\n".join(lines) + "\n"


def _baselines(scenarios: Sequence[Scenario]) -> dict[str, str]:
    """The entries compared with another entry than tiffin's, and that entry."""
    return {
        entry.label: entry.baseline
        for scenario in scenarios
        for entry in scenario.entries
        if entry.baseline != BASELINE
    }


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    middle, low, high = _stats(values)
    if len(values) == 1:
        return f"{middle:,.{digits}f}"
    return f"{middle:,.{digits}f} ({low:,.{digits}f}-{high:,.{digits}f})"


def _ratio(values: list[float], baseline: list[float]) -> str:
    if not values or not baseline or statistics.median(baseline) == 0:
        return "-"
    return f"{statistics.median(values) / statistics.median(baseline):.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _values(samples: list[dict[str, Any]], system: str, field: str, **match: Any) -> list[float]:
    return [
        float(s[field])
        for s in samples
        if s["system"] == system and field in s and all(s.get(k) == v for k, v in match.items())
    ]


def _scenario(scenario: Scenario, samples: list[dict[str, Any]]) -> list[str]:
    rows = []
    notes = []
    for connections in scenario.connections:
        loads = [s for s in samples if s["kind"] == "load" and s["connections"] == connections]
        for entry in scenario.entries:
            label = entry.label
            mine = [s for s in loads if s["system"] == label]
            if not mine:
                continue
            base = [s for s in loads if s["system"] == entry.baseline]
            cells = [str(connections), label]
            for field, digits in (("rps", 0), ("p50_ms", 2), ("p99_ms", 2)):
                values = [float(s[field]) for s in mine]
                cells += [_cell(values, digits), _ratio(values, [float(s[field]) for s in base])]
            requests = sum(int(s.get("requests", 0)) for s in mine)
            errors = sum(int(s["errors"]) for s in mine)
            wrong = sum(int(s.get("wrong", 0)) for s in mine)
            server_cpu = [float(s["server_cpu"]) for s in mine if "server_cpu" in s]
            load_cpu = [float(s["load_cpu"]) for s in mine if "load_cpu" in s]
            cells += [_cpu(server_cpu, load_cpu), _errors(errors, wrong, requests)]
            rows.append(cells)
            if load_cpu and statistics.median(load_cpu) > SATURATED:
                notes.append(
                    f"{label} at concurrency {connections}: the load generator used "
                    f"{statistics.median(load_cpu):.0%} of its core, so this figure is its "
                    "limit as much as the server's."
                )
            per_call = [float(s["rows_per_call"]) for s in mine if "rows_per_call" in s]
            if per_call:
                notes.append(
                    f"{label} at concurrency {connections}: "
                    f"{statistics.median(per_call):.1f} rows per model call (tiffin's metrics)."
                )
    if scenario.batch and not any("rows_per_call" in s for s in samples):
        notes.append(
            "tiffin's /metrics had no batch sizes: its batching was not active in this build."
        )
    header = ["conc.", "system", "req/s", "x tiffin", "p50 ms", "x tiffin", "p99 ms",
              "x tiffin", "CPU % server / load", "errors"]  # fmt: skip
    out = ["", f"## {scenario.title}", "", *_table(header, rows)]
    if notes:
        out += ["", *notes]
    return out


def _cpu(server: list[float], load: list[float]) -> str:
    if not server or not load:
        return "-"
    return f"{100 * statistics.median(server):.0f} / {100 * statistics.median(load):.0f}"


def _errors(errors: int, wrong: int, requests: int) -> str:
    if not errors:
        return "0"
    share = f" ({errors / requests:.1%})" if requests else ""
    return f"{errors}{share}" + (f", **{wrong} wrong answers**" if wrong else "")


def _start(
    scenarios: Sequence[Scenario], by_scenario: dict[str, list[dict[str, Any]]], launches: int
) -> list[str]:
    rows = []
    for scenario in scenarios:
        samples = [s for s in by_scenario[scenario.key] if s["kind"] == "start"]
        for entry in scenario.entries:
            ready = _values(samples, entry.label, "ready_s")
            answer = _values(samples, entry.label, "answer_s")
            if not answer:
                continue
            rows.append([
                scenario.key, entry.label,
                _cell(ready, 2), _ratio(ready, _values(samples, entry.baseline, "ready_s")),
                _cell(answer, 2), _ratio(answer, _values(samples, entry.baseline, "answer_s")),
            ])  # fmt: skip
    header = ["scenario", "system", "to ready s", "x tiffin", "to first correct answer s",
              "x tiffin"]  # fmt: skip
    return [
        "", "## Cold start", "",
        "Seconds from process launch to the first 200 on the readiness endpoint (`/readyz`; "
        "LitServe: `/health`; bare gRPC, which has none: the first connection its port "
        "takes) and to the first correct prediction. In process: launch to the first answer "
        "printed. Every system starts from cached bytecode, as installed packages do (the "
        "benchmark compiles tiffin's sources, its services and the examples first). Cells: "
        f"median (min-max) over {launches} launches of each system, the systems taking turns "
        "(the launch before each system's loads, and launches that only time the start).", "",
        *_table(header, rows),
    ]  # fmt: skip


def _memory(
    scenarios: Sequence[Scenario], by_scenario: dict[str, list[dict[str, Any]]]
) -> list[str]:
    rows = []
    for scenario in scenarios:
        samples = [s for s in by_scenario[scenario.key] if s["kind"] == "memory"]
        for entry in scenario.entries:
            idle = _values(samples, entry.label, "idle_mib")
            after = _values(samples, entry.label, "after_mib")
            if not idle:
                continue
            rows.append([
                scenario.key, entry.label,
                _cell(idle, 0), _ratio(idle, _values(samples, entry.baseline, "idle_mib")),
                _cell(after, 0), _ratio(after, _values(samples, entry.baseline, "after_mib")),
            ])  # fmt: skip
    header = ["scenario", "system", "idle MiB", "x tiffin", "after load MiB", "x tiffin"]
    return [
        "", "## Resident memory", "",
        "PSS summed over the server's whole process tree (`/proc/<pid>/smaps_rollup`): idle is "
        f"after the first correct answer, after load is {SETTLE_S:g} s after the last load "
        "ended (what a server keeps once it is quiet again).", "",
        *_table(header, rows),
    ]  # fmt: skip
