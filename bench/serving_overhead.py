"""Per-request overhead: the quickstart iris service against a bare ASGI app returning the
same JSON, both on uvicorn (httptools, uvloop, one worker), in the same run.

Each server is pinned to CPU 0 and the load generator (wrk) to CPU 1. wrk posts the same
body on N connections for a fixed time after a warm-up, and checks every answer's status
and body; a run with any wrong answer fails.

Usage: python bench/serving_overhead.py [--connections 8] [--seconds 10]
Needs: wrk (apt-get install wrk), taskset (util-linux), scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BODY = '{"features": [[5.1, 3.5, 1.4, 0.2]]}'
ANSWER = '["setosa"]'

LUA = """
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = "application/json"
local expected = os.getenv("EXPECTED")
local threads = {}
bad = 0
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status ~= 200 or body ~= expected then bad = bad + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("bad") end
  io.write(string.format("BAD %d\\n", total))
  for _, p in ipairs({50, 99}) do
    io.write(string.format("P%d %.3f\\n", p, latency:percentile(p) / 1000))
  end
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready in 60 s")


def load(url: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    env = {**os.environ, "BODY": BODY, "EXPECTED": ANSWER}
    command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", "-s", str(script)]
    subprocess.run([*command, "-d2s", f"{url}/predict"], env=env, check=True, capture_output=True)
    done = subprocess.run(
        [*command, f"-d{seconds}s", f"{url}/predict"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    out = done.stdout
    bad = int(re.search(r"^BAD (\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad or errors:
        raise SystemExit(f"{url}: {bad} wrong answers\n{out}")
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": float(re.search(r"^P50 ([\d.]+)", out, re.M).group(1)),  # type: ignore[union-attr]
        "p99_ms": float(re.search(r"^P99 ([\d.]+)", out, re.M).group(1)),  # type: ignore[union-attr]
    }


def serve(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", "0", *command],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    for program in ("wrk", "taskset"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is needed: apt-get install {program}")

    bin_dir = Path(sys.executable).parent
    work = Path(tempfile.mkdtemp(prefix="tiffin-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIFFIN_")}
    env.update(TIFFIN_HOME=str(work / "home"), PYTHONPATH=str(ROOT))
    script = work / "post.lua"
    script.write_text(LUA)
    quickstart = ROOT / "examples" / "quickstart"
    subprocess.run(
        [sys.executable, "train.py"], cwd=quickstart, env=env, check=True, capture_output=True
    )
    servers = {
        "bare ASGI app": [
            str(bin_dir / "uvicorn"), "bench.bare_app:app", "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ],
        "tiffin": [str(bin_dir / "tiffin"), "serve", "service:Iris", "--host", "127.0.0.1"],
        "tiffin, no access log": [
            str(bin_dir / "tiffin"), "serve", "service:Iris", "--host", "127.0.0.1",
        ],
    }  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    try:
        for name, command in servers.items():
            port = free_port()
            server_env = dict(env)
            if name == "tiffin, no access log":
                server_env["TIFFIN_ACCESS_LOG"] = "false"
            cwd = quickstart if command[1] == "serve" else ROOT
            process = serve([*command, "--port", str(port)], cwd, server_env)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_ready(url, process)
                results[name] = load(url, args.connections, args.seconds, script)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    floor = results["bare ASGI app"]["requests_per_second"]
    print(f"\nPOST /predict, {args.connections} connections, {args.seconds} s, one worker\n")
    print(f"{'server':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'of bare':>9}")
    for name, figures in results.items():
        share = figures["requests_per_second"] / floor
        print(
            f"{name:<24}{figures['requests_per_second']:>9.0f}{figures['p50_ms']:>9.2f}"
            f"{figures['p99_ms']:>9.2f}{share:>8.0%}"
        )
    RESULTS.mkdir(exist_ok=True)
    report = {"connections": args.connections, "seconds": args.seconds, "results": results}
    (RESULTS / "serving_overhead.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
