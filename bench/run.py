"""Serving benchmark: tiffin against the limits and its peers, every answer checked.

For each scenario (``bench/scenarios.py``) and each system serving it (``bench/systems.py``):
start the server pinned to CPU 0 and time launch -> ready -> first correct answer; take
its memory (PSS of the process tree) idle; load it with wrk pinned to CPU 1 at each
concurrency, warm-up first, for a fixed duration (``bench/load.py``; gRPC entries:
``bench/grpc_load.py``), taking the CPU share of server and load generator meanwhile;
take its memory again; stop it. The in-process compute limit runs the same work without
HTTP (``bench/inprocess.py``). Systems take turns within each repetition, in an order
rotated from one repetition to the next, so drift in the machine hits all alike. Each
repetition then launches every system of the scenario again, ``--starts`` - 1 more times
in turn, only to time launch -> ready -> first correct answer: one launch takes a second
or two, and the speed of this kind of machine drifts by a fifth within minutes, so three
launches per system would leave the cold-start medians to chance. The report
(``bench/report.py``) holds medians over the repetitions (cold start: over every launch),
min-max, and ratios to tiffin.

    python -m bench.run            # full: 3 repetitions, about 25 minutes on 2 cores
    python -m bench.run --quick    # 1 repetition, short runs: about 3 minutes

Results: bench/results/report.md (the report, also printed) and serving.json (every
sample). The peers' virtual environments are made on first run (bench/.venv-*).
Exits 1 if any answer was wrong.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import grpc_load, load, report, systems
from bench.scenarios import SETTLE_S, Entry, Scenario, prepare

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MIB = 1 << 20
Sample = dict[str, Any]
_BATCH = re.compile(rb'^tiffin_batch_size_(sum|count)\{api="predict"\} ([0-9.e+]+)$', re.M)


@dataclass(frozen=True)
class Plan:
    """What to run: repetitions, seconds per load, and which systems and scenarios (None:
    all)."""

    repeat: int
    seconds: float
    warmup: float
    starts: int
    only: frozenset[str] | None
    scenarios: frozenset[str] | None

    def wants(self, system: str) -> bool:
        return self.only is None or system in self.only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of short runs")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="measured seconds per load (5, quick 2)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per load (2, quick 1)")
    parser.add_argument(
        "--starts", type=int, help="launches per system and repetition (3, quick 1)"
    )
    parser.add_argument("--systems", help="only these systems, comma-separated")
    parser.add_argument("--scenarios", help="only these scenarios (tiny, mlp, large-body)")
    args = parser.parse_args()
    plan = Plan(
        repeat=args.repeat or (1 if args.quick else 3),
        seconds=args.seconds or (2.0 if args.quick else 5.0),
        warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0),
        starts=args.starts or (1 if args.quick else 3),
        only=frozenset(args.systems.split(",")) if args.systems else None,
        scenarios=frozenset(args.scenarios.split(",")) if args.scenarios else None,
    )
    load.check_tools()
    if not {systems.SERVER_CPU, load.LOAD_CPU} <= os.sched_getaffinity(0):
        raise SystemExit("bench needs CPUs 0 and 1: the server runs on one, the load on the other")
    os.sched_setaffinity(0, {load.LOAD_CPU})  # this driver stays off the server's core
    # Every system starts from cached bytecode, as an installed package does (pip compiled
    # the peers' packages), whatever PYTHONDONTWRITEBYTECODE says.
    for folder in ("src", "bench", "examples"):
        compileall.compile_dir(ROOT / folder, quiet=1)

    meta = _meta(plan)
    work = Path(tempfile.mkdtemp(prefix="tiffin-bench-"))
    try:
        scenarios = [s for s in prepare(work) if plan.scenarios is None or s.key in plan.scenarios]
        samples = _run(plan, scenarios, meta["unavailable"], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")

    text = report.markdown(meta, scenarios, samples)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "serving.json").write_text(json.dumps({"meta": meta, "samples": samples}, indent=1))
    (RESULTS / "report.md").write_text(text)
    print("\n" + text)
    print(f"Written: {RESULTS.relative_to(ROOT)}/report.md and serving.json")
    if any(s.get("wrong") for s in samples):
        raise SystemExit("Some answers were wrong: see the errors column.")


def _meta(plan: Plan) -> dict[str, Any]:
    """The run's settings and versions; installs the peers (first run only)."""
    meta: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "repeat": plan.repeat,
        "seconds": plan.seconds,
        "warmup": plan.warmup,
        "starts": plan.starts,
        "machine": _machine(),
        "versions": {"python": platform.python_version(), "tiffin": _tiffin_version()}
        | systems.versions(
            "tiffin", "numpy", "scikit-learn", "uvicorn", "uvloop", "httptools", "grpcio"
        ),
        "peers": {},
        "unavailable": {},
    }
    for name in systems.PEERS:
        if not plan.wants(name):
            continue
        try:
            meta["peers"][name] = systems.install_peer(name)
        except (RuntimeError, OSError) as exc:
            meta["unavailable"][name] = str(exc)
            print(f"{name} is left out: {exc}", flush=True)
    return meta


def _run(
    plan: Plan, scenarios: list[Scenario], unavailable: dict[str, str], work: Path
) -> list[Sample]:
    """Every repetition of every scenario on every system; a system that fails is
    recorded as failed and the rest go on."""
    (work / "logs").mkdir()
    env = systems.server_env(work)
    samples: list[Sample] = []
    for rep in range(plan.repeat):
        for scenario in scenarios:
            entries = [
                e for e in scenario.entries if e.system not in unavailable and plan.wants(e.system)
            ]
            shift = rep % len(entries)
            order = entries[shift:] + entries[:shift]
            turns = [(entry, True) for entry in order]
            turns += [(entry, False) for _ in range(plan.starts - 1) for entry in order]
            for entry, loaded in turns:
                what = "" if loaded else " start only:"
                print(f"[{rep + 1}/{plan.repeat}] {scenario.key}, {entry.label}:{what}", end="")
                try:
                    if loaded:
                        found = _measure(entry, scenario, env=env, work=work, plan=plan)
                    else:
                        found = [_start_only(entry, scenario, env=env, work=work)]
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    found = [{"kind": "failed", "reason": str(exc)[:500]}]
                    print(f" FAILED: {exc}", end="")
                print(flush=True)
                base = {"rep": rep, "scenario": scenario.key, "system": entry.label}
                samples.extend(base | sample for sample in found)
    return samples


def _start_only(entry: Entry, scenario: Scenario, *, env: dict[str, str], work: Path) -> Sample:
    """One more launch of ``entry``, timed to ready and to the first correct answer."""
    if entry.system == "in-process":
        answer_s = _first_in_process(entry, scenario, env=env)
        print(f" answer {answer_s:.2f} s", end="")
        return {"kind": "start", "answer_s": answer_s}
    with _serve(entry, scenario, env=env, work=work) as server:
        return _started(entry, scenario, server)


def _serve(
    entry: Entry, scenario: Scenario, *, env: dict[str, str], work: Path
) -> contextlib.AbstractContextManager[systems.Server]:
    log = work / "logs" / f"{scenario.key}-{entry.label.replace(' ', '_')}.log"
    grpc = entry.protocol == "oip-grpc"
    return systems.serving(entry.system, entry.service, env, log, grpc=grpc)


def _started(entry: Entry, scenario: Scenario, server: systems.Server) -> Sample:
    """The start figures of a server just launched: waits for it to be ready and to give
    a correct answer."""
    ready = server.wait_ready()
    first = server.wait_answer(_ask(entry, scenario, server))
    print(f" ready {ready:.2f} s, answer {first:.2f} s", end="")
    return {"kind": "start", "ready_s": ready, "answer_s": first}


def _measure(
    entry: Entry, scenario: Scenario, *, env: dict[str, str], work: Path, plan: Plan
) -> list[Sample]:
    """Start, answer, memory and load figures of one system serving one scenario."""
    if entry.system == "in-process":
        return _in_process(entry, scenario, env=env, plan=plan)
    with _serve(entry, scenario, env=env, work=work) as server:
        found = [_started(entry, scenario, server)]
        idle = server.pss()
        print(f", {idle / MIB:.0f} MiB;", end="")
        for connections in scenario.connections:
            before = _batch_totals(server.port) if entry.system == "tiffin" else None
            run = _load(entry, scenario, server, connections=connections, plan=plan)
            sample: Sample = {
                "kind": "load",
                "connections": connections,
                "rps": run.rps,
                "p50_ms": run.p50_ms,
                "p99_ms": run.p99_ms,
                "requests": run.requests,
                "errors": run.errors,
                "bad_status": run.bad_status,
                "wrong": run.wrong,
                "socket_errors": run.socket_errors,
                "server_cpu": run.server_cpu,
                "load_cpu": run.load_cpu,
            }
            after = _batch_totals(server.port) if before is not None else None
            if before is not None and after is not None and after[1] > before[1]:
                sample["rows_per_call"] = (after[0] - before[0]) / (after[1] - before[1])
            found.append(sample)
            errors = f" ({run.errors} errors)" if run.errors else ""
            print(f" c{connections} {run.rps:.0f}/s{errors}", end="", flush=True)
        time.sleep(SETTLE_S)
        found.append({"kind": "memory", "idle_mib": idle / MIB, "after_mib": server.pss() / MIB})
    return found


def _http(entry: Entry, scenario: Scenario) -> tuple[str, Path, Path]:
    """The path, body and answer of an entry's HTTP request."""
    if entry.protocol == "json":
        return "/predict", scenario.body, scenario.answer
    assert scenario.oip is not None  # Scenario checks
    return f"/v2/models/{scenario.oip.model}/infer", scenario.oip.body, scenario.oip.answer


def _ask(entry: Entry, scenario: Scenario, server: systems.Server) -> systems.Ask:
    """One request as the entry makes them, for the time to the first correct answer."""
    if entry.protocol == "oip-grpc":
        assert scenario.oip is not None
        assert server.grpc_port is not None
        return grpc_load.ask(server.grpc_port, scenario.oip)
    path, body, answer = _http(entry, scenario)
    return systems.ask_http(server.port, path, body.read_bytes(), answer.read_bytes())


def _load(
    entry: Entry, scenario: Scenario, server: systems.Server, *, connections: int, plan: Plan
) -> load.Load:
    """One measured load of the server, through the entry's protocol."""
    if entry.protocol == "oip-grpc":
        assert scenario.oip is not None
        assert server.grpc_port is not None
        return grpc_load.run(
            server.grpc_port, scenario.oip, connections=connections, seconds=plan.seconds,
            warmup=plan.warmup, server=server.pid,
        )  # fmt: skip
    path, body, answer = _http(entry, scenario)
    return load.wrk(
        f"http://127.0.0.1:{server.port}{path}", body, answer, connections=connections,
        seconds=plan.seconds, warmup=plan.warmup, server=server.pid,
    )  # fmt: skip


def _in_process(
    entry: Entry, scenario: Scenario, *, env: dict[str, str], plan: Plan
) -> list[Sample]:
    command = _in_process_command(entry, scenario)
    answer_s = _first_in_process(entry, scenario, env=env)
    found: list[Sample] = [{"kind": "start", "answer_s": answer_s}]
    print(f" answer {answer_s:.2f} s;", end="")
    measured: dict[int, dict[str, Any]] = {}
    for connections in scenario.connections:
        batch = min(connections, 64) if scenario.batch else 1
        if batch not in measured:
            done = subprocess.run(
                [*command, "--batch", str(batch), "--seconds", str(plan.seconds),
                 "--warmup", str(plan.warmup)],
                cwd=ROOT, env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            measured[batch] = json.loads(done.stdout)
        figures = measured[batch]
        found.append(
            {"kind": "load", "connections": connections, "errors": 0}
            | {k: figures[k] for k in ("rps", "p50_ms", "p99_ms")}
        )
        print(f" c{connections} {figures['rps']:.0f}/s", end="", flush=True)
    last = measured[max(measured)]
    found.append(
        {"kind": "memory", "idle_mib": last["pss_idle"] / MIB, "after_mib": last["pss_after"] / MIB}
    )
    return found


def _in_process_command(entry: Entry, scenario: Scenario) -> list[str]:
    return [
        "taskset", "-c", str(systems.SERVER_CPU), sys.executable, "-m", "bench.inprocess",
        entry.service, str(scenario.body),
    ]  # fmt: skip


def _first_in_process(entry: Entry, scenario: Scenario, *, env: dict[str, str]) -> float:
    """Seconds from launching the in-process work to its first answer (checked)."""
    start = time.perf_counter()
    with subprocess.Popen(
        [*_in_process_command(entry, scenario), "--first"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE,
    ) as first:  # fmt: skip
        assert first.stdout is not None
        line = first.stdout.readline()
        answer_s = time.perf_counter() - start  # to the answer, not to the process's exit
    expected = systems.squeeze(scenario.answer.read_bytes())
    if first.returncode != 0 or systems.squeeze(line) != expected:
        raise RuntimeError(f"wrong answer in process ({first.returncode}): {line[:200]!r}")
    return answer_s


def _batch_totals(port: int) -> tuple[float, float] | None:
    """tiffin's (rows, calls) of batched calls of /predict so far, from /metrics."""
    try:
        status, text = systems.request(port, "/metrics")
    except (OSError, http.client.HTTPException):
        return None
    totals = {kind.decode(): float(value) for kind, value in _BATCH.findall(text)}
    if status != 200 or len(totals) != 2:
        return None
    return totals["sum"], totals["count"]


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{model}, {os.cpu_count()} CPUs, {memory:.0f} GiB, Linux {platform.release()}"


def _tiffin_version() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    commit = done.stdout.strip() if done.returncode == 0 else "unknown commit"
    return f"{systems.versions('tiffin', 'tiffin')['tiffin']} ({commit})"


if __name__ == "__main__":
    main()
