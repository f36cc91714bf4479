"""Serve the iris service, call it, and stop the server: what `make run` does after
training. By hand, the same is two terminals in this directory:

    tiffin serve service:Iris
    python call.py    # or: curl -d '{"features": [[5.1, 3.5, 1.4, 0.2]]}' localhost:3000/predict
"""

from __future__ import annotations

import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, server: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server was not ready within {seconds:.0f} s")


def main() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    executable = Path(sys.executable).with_name("tiffin")
    command = [str(executable), "serve", "service:Iris", "--host", "127.0.0.1", "--port", str(port)]
    print("$", " ".join(["tiffin", *command[1:]]))
    server = subprocess.Popen(command, cwd=HERE)
    try:
        wait_ready(url, server)
        call = runpy.run_path(str(HERE / "call.py"))["main"]
        call(url)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    print(f"server stopped (exit code {code})")


if __name__ == "__main__":
    main()
