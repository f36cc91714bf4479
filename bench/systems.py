"""How each system is installed, started, measured and stopped.

    bare ASGI   bench/services/bare.py on uvicorn (httptools, uvloop), tiffin's venv
    bare gRPC   bench/services/bare_grpc.py, a grpc.aio server on uvloop, tiffin's venv;
                the iris model over gRPC only
    tiffin      `tiffin serve` (supervisor + one worker), tiffin's venv; with
                `--grpc-port` for the entries that call it over gRPC
    BentoML     `bentoml serve`, one worker, in bench/.venv-bentoml
    LitServe    LitServer, one inference worker and one API server, in bench/.venv-litserve

The peers' virtual environments are made on first use with ``python -m venv`` and pip,
and remade when their requirements change. Every server runs pinned to CPU 0 in a
session of its own; its memory is the PSS, and its CPU time the user and system time,
summed over its whole process tree.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = 0
BIN = Path(sys.executable).parent

TIFFIN_SERVICES = "bench/services/tiffin_services.py"
_TIFFIN_CLASSES = {
    "iris-monitored": "IrisMonitored",
    "mlp": "MlpBatched",
    "mlp-unbatched": "MlpUnbatched",
    "large-body": "LargeBody",
}
_BENTOML_CLASSES = {"iris": "Iris", "mlp": "MlpBatched", "large-body": "LargeBody"}


def _sklearn() -> str:
    # the iris model is a pickle, which loads only in the scikit-learn that wrote it
    return f"scikit-learn=={metadata.version('scikit-learn')}"


PEERS = {
    "BentoML": ("bentoml", ["bentoml>=1.2", "numpy"]),
    "LitServe": ("litserve", ["litserve", "numpy"]),
}
"""Peer name -> (the distribution whose version is reported, pip requirements)."""


@dataclass(frozen=True)
class Launch:
    """How to start one service: the command, where, and the path that answers 200 once
    the service is ready (None for a service without HTTP, which is ready once its gRPC
    port takes connections)."""

    argv: list[str]
    cwd: Path
    ready_path: str | None
    env: tuple[tuple[str, str], ...] = ()


def peer_venv(name: str) -> Path:
    return ROOT / "bench" / f".venv-{PEERS[name][0]}"


def install_peer(name: str) -> str:
    """Make ``name``'s virtual environment if it is missing or out of date; return the
    version installed. Raises ``RuntimeError`` saying why when it cannot be made."""
    distribution, requirements = PEERS[name]
    requirements = [*requirements, _sklearn()]
    venv = peer_venv(name)
    python = venv / "bin" / "python"
    stamp = venv / ".requirements"
    wanted = hashlib.sha256("\n".join(requirements).encode()).hexdigest()
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        print(f"installing {name} into {venv.relative_to(ROOT)} (first run only) ...", flush=True)
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
             *requirements],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                raise RuntimeError(f"{' '.join(step[:4])} failed: {' / '.join(tail)}")
        stamp.write_text(wanted)
    return versions(name, distribution)[distribution]


def versions(name: str, *distributions: str) -> dict[str, str]:
    """Versions of ``distributions`` in ``name``'s environment (tiffin's for others)."""
    python = peer_venv(name) / "bin" / "python" if name in PEERS else Path(sys.executable)
    code = (
        "import json, sys; from importlib import metadata as m; "
        "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    )
    done = subprocess.run(
        [str(python), "-c", code, *distributions], capture_output=True, text=True, check=True
    )
    found: dict[str, str] = json.loads(done.stdout)
    return found


def launch(system: str, service: str, port: int, grpc_port: int | None = None) -> Launch:
    """The command that serves ``service`` (a scenario's service name) with ``system``,
    also over gRPC on ``grpc_port`` when one is given (tiffin; bare gRPC serves only
    there)."""
    address = ["--host", "127.0.0.1", "--port", str(port)]
    if grpc_port is not None:
        address += ["--grpc-port", str(grpc_port)]
    if system == "bare ASGI":
        argv = [
            str(BIN / "uvicorn"), "bench.services.bare:app", "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning", *address,
        ]  # fmt: skip
        return Launch(argv, ROOT, "/readyz", env=(("BENCH_SERVICE", service),))
    if system == "bare gRPC":
        if service != "iris" or grpc_port is None:
            raise ValueError(f"bare gRPC serves only iris, over gRPC; not {service!r}")
        argv = [sys.executable, "-m", "bench.services.bare_grpc", str(grpc_port)]
        return Launch(argv, ROOT, None)
    if system == "tiffin":
        if service == "iris":  # the quickstart service, as a user runs it
            argv = [str(BIN / "tiffin"), "serve", "service:Iris", *address]
            return Launch(argv, ROOT / "examples" / "quickstart", "/readyz")
        target = f"{TIFFIN_SERVICES}:{_TIFFIN_CLASSES[service]}"
        return Launch([str(BIN / "tiffin"), "serve", target, *address], ROOT, "/readyz")
    if system == "BentoML":
        bentoml = peer_venv(system) / "bin" / "bentoml"
        target = f"bench.services.bentoml_services:{_BENTOML_CLASSES[service]}"
        argv = [str(bentoml), "serve", target, "--working-dir", str(ROOT), *address]
        return Launch(argv, ROOT, "/readyz")
    if system == "LitServe":
        python = peer_venv(system) / "bin" / "python"
        argv = [str(python), "-m", "bench.services.litserve_services", service, str(port)]
        return Launch(argv, ROOT, "/health")
    raise ValueError(f"unknown system {system!r}")


def server_env(work: Path) -> dict[str, str]:
    """The environment every server gets: the model files, stores under ``work``, one
    BLAS thread (the server has one core), no usage tracking."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIFFIN_", "BENTOML_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        BENCH_DATA=str(work / "data"),
        TIFFIN_HOME=str(work / "home"),
        BENTOML_HOME=str(work / "bentoml"),
        BENTOML_DO_NOT_TRACK="True",
        OPENBLAS_NUM_THREADS="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def request(
    port: int, path: str, body: bytes | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:``port`` (POST when there is a body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request("POST" if body is not None else "GET", path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def squeeze(data: bytes) -> bytes:
    return b"".join(data.split())


Ask = Callable[[], str]
"""Asks a server once: "" for a correct answer, else what came back instead."""


def ask_http(port: int, path: str, body: bytes, answer: bytes) -> Ask:
    """POSTs ``body`` to ``path``; correct when the status is 200 and the JSON equals
    ``answer`` (whitespace ignored)."""

    def ask() -> str:
        try:
            status, got = request(port, path, body, timeout=10.0)
        except (OSError, http.client.HTTPException) as exc:
            return repr(exc)
        if status == 200 and squeeze(got) == squeeze(answer):
            return ""
        return f"{status} {got[:200]!r}"

    return ask


class Server:
    """A running server: started by ``start``, stopped by ``stop`` (or the ``with`` block).
    ``grpc_port`` is where it answers gRPC, if it was launched to."""

    def __init__(
        self, launch: Launch, port: int, env: dict[str, str], log: Path, grpc_port: int | None
    ) -> None:
        self.launch = launch
        self.port = port
        self.grpc_port = grpc_port
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                ["taskset", "-c", str(SERVER_CPU), *self.launch.argv],
                cwd=self.launch.cwd,
                env={**self.env, **dict(self.launch.env)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _alive(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"exited with {self.process.returncode}: " + " / ".join(tail))
        return self.process

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from launch to the first 200 from the readiness path (no such path:
        to the first connection its gRPC port takes)."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            self._alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._ready():
                    return time.perf_counter() - self.started
            time.sleep(0.005)
        raise RuntimeError(f"not ready within {timeout:.0f} s")

    def _ready(self) -> bool:
        if self.launch.ready_path is not None:
            return request(self.port, self.launch.ready_path, timeout=1.0)[0] == 200
        assert self.grpc_port is not None  # launch() makes no such Launch without one
        with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=1.0):
            return True

    def wait_answer(self, ask: Ask, timeout: float = 60.0) -> float:
        """Seconds from launch to the first correct answer to ``ask``."""
        deadline = self.started + timeout
        last = ""
        while time.perf_counter() < deadline:
            self._alive()
            last = ask()
            if not last:
                return time.perf_counter() - self.started
            time.sleep(0.005)
        raise RuntimeError(f"no correct answer within {timeout:.0f} s; last: {last}")

    @property
    def pid(self) -> int:
        return self._alive().pid

    def pss(self) -> int:
        """Bytes of PSS summed over the server's process tree."""
        return sum(process_pss(pid) for pid in tree(self.pid))

    def stop(self) -> None:
        if self.process is None:
            return
        pid = self.process.pid
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        # whatever of its session is left (workers that outlived it): killed
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        found.append(pid)
    return found


def process_pss(pid: int | str) -> int:
    """Bytes of PSS of one process (0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU seconds used so far by these processes (all their threads),
    from /proc/<pid>/stat; 0 for one that is gone."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serving(
    system: str, service: str, env: dict[str, str], log: Path, *, grpc: bool = False
) -> Iterator[Server]:
    """Start ``system`` serving ``service`` on a free port (and gRPC on another, with
    ``grpc``); stop it at the end of the block."""
    port = free_port()
    grpc_port = None
    while grpc and grpc_port in (None, port):
        grpc_port = free_port()
    with Server(launch(system, service, port, grpc_port), port, env, log, grpc_port) as server:
        yield server
