"""The load generator: wrk, pinned to its own core, checking every answer.

wrk is a C program, so it does not compete with the server for its core; its Lua script
(``bench/check.lua``) counts every answer whose status is not 200 or whose JSON differs
from the expected one. Each measurement is a warm-up run, then a run of a fixed duration
on N connections (one wrk thread), whose requests per second count correct answers only.
The CPU shares of the server's process tree and of wrk over the measured run are taken
too: they say which of the two limited the figure. (gRPC, which wrk does not speak, is
loaded by ``bench/grpc_load.py`` instead, which returns the same ``Load``.)
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import systems

LOAD_CPU = 1
SCRIPT = Path(__file__).with_name("check.lua")
_RESULT = re.compile(r"^RESULT (.*)$", re.M)


@dataclass(frozen=True)
class Load:
    """One measured run: its counts, its latency percentiles, and the CPU used meanwhile
    by the server (its whole process tree) and by the load generator, each as a share of
    one core (1.0: the core was busy throughout)."""

    connections: int
    seconds: float
    requests: int
    bad_status: int
    wrong: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    server_cpu: float
    load_cpu: float

    @property
    def correct(self) -> int:
        return self.requests - self.bad_status - self.wrong

    @property
    def rps(self) -> float:
        """Correct answers per second."""
        return self.correct / self.seconds

    @property
    def errors(self) -> int:
        return self.bad_status + self.wrong + self.socket_errors


def check_tools() -> None:
    """Stop with a clear message when wrk or taskset is missing."""
    for program, package in (("wrk", "wrk"), ("taskset", "util-linux")):
        if shutil.which(program) is None:
            raise SystemExit(f"bench needs {program}: apt-get install {package}")


def wrk(
    url: str,
    body: Path,
    answer: Path,
    *,
    connections: int,
    seconds: float,
    warmup: float,
    server: int,
) -> Load:
    """POST ``body`` to ``url`` on ``connections`` connections: ``warmup`` seconds not
    counted, then ``seconds`` measured. ``server`` is the pid of the server's first
    process, whose tree's CPU use is taken."""
    env = {**os.environ, "BODY_FILE": str(body), "ANSWER_FILE": str(answer)}
    command = [
        "taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}", "--timeout", "10s",
        "-s", str(SCRIPT),
    ]  # fmt: skip
    if warmup > 0:
        _run([*command, f"-d{warmup:g}s", url], env)
    pids = systems.tree(server)
    server_before, wrk_before = systems.cpu_seconds(pids), _children_cpu()
    start = time.perf_counter()
    output = _run([*command, f"-d{seconds:g}s", url], env)
    elapsed = time.perf_counter() - start
    server_cpu = (systems.cpu_seconds(pids) - server_before) / elapsed
    return _parse(output, connections, server_cpu, (_children_cpu() - wrk_before) / elapsed)


def _children_cpu() -> float:
    """CPU seconds of the child processes this process has waited for (wrk, here)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not _RESULT.search(done.stdout):
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return done.stdout


def _parse(output: str, connections: int, server_cpu: float, load_cpu: float) -> Load:
    match = _RESULT.search(output)
    assert match is not None
    fields = dict(part.split("=") for part in match.group(1).split())
    return Load(
        connections=connections,
        seconds=int(fields["duration_us"]) / 1e6,
        requests=int(fields["requests"]),
        bad_status=int(fields["bad_status"]),
        wrong=int(fields["wrong"]),
        socket_errors=int(fields["socket_errors"]),
        p50_ms=float(fields["p50_us"]) / 1000,
        p99_ms=float(fields["p99_us"]) / 1000,
        server_cpu=server_cpu,
        load_cpu=load_cpu,
    )
