"""The quickstart that `make run` runs, and the README's tour, run as a user would."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import need
from tiffin.models import ModelStore

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIFFIN_")}
    env["TIFFIN_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_quickstart_trains_saves_and_lists(tmp_path: Path) -> None:
    home = tmp_path / "home"
    trained = subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart/train.py")],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=120,
        check=True,
    )
    model = ModelStore(home).get("iris")
    assert trained.stdout.startswith(f"Saved {model.tag} (sklearn, accuracy ")
    assert "Loaded it back: predicts class 0 for [5.1, 3.4, 1.5, 0.2]" in trained.stdout
    assert model.info.framework.name == "sklearn"
    assert model.info.labels == {"stage": "quickstart"}
    assert 0.9 <= model.info.metadata["accuracy"] <= 1.0

    listed = subprocess.run(
        ["tiffin", "models", "list", "iris"],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=60,
        check=True,
    )
    assert str(model.tag) in listed.stdout
    assert "stage=quickstart" in listed.stdout

    served = subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart/serve_and_call.py")],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=120,
        check=True,
    )
    assert served.stdout.splitlines()[2:] == [
        "[5.1, 3.5, 1.4, 0.2] -> setosa",
        "[6.2, 2.9, 4.3, 1.3] -> versicolor",
        "[7.7, 3.0, 6.1, 2.3] -> virginica",
        "server stopped (exit code 0)",
    ]
    assert served.stdout.splitlines()[1].startswith("Serving iris at http://127.0.0.1:")


def _blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced code block of the README, in order, as (language, body)."""
    return re.findall(r"```(python|console)\n(.*?)```", text, flags=re.DOTALL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, f"tiffin serve exited: {server.communicate()[1]}"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the README's server was not ready within 60 s")


_RUNNER = """
import sys, traceback
scope = {"__name__": "__main__"}
while True:
    size = sys.stdin.readline()
    if not size:
        break
    code = sys.stdin.read(int(size))
    try:
        exec(compile(code, "README.md", "exec"), scope)
        print("\\x00OK", flush=True)
    except BaseException:
        traceback.print_exc()
        print("\\x00FAIL", flush=True)
"""


class _Python:
    """One Python process that runs the README's blocks in turn, sharing their names."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RUNNER],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def run(self, code: str) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{len(code)}\n{code}")
        self.process.stdin.flush()
        output: list[str] = []
        for line in self.process.stdout:
            if line.startswith("\x00"):
                assert line.strip() == "\x00OK", "".join(output) + code
                return
            output.append(line)
        raise AssertionError("the README's Python process died:\n" + "".join(output))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


def _run_command(
    line: str, shown: list[str], ports: dict[str, str], work: Path, env: dict[str, str]
) -> subprocess.Popen[str] | None:
    """Run one `$` line; start `tiffin serve` in the background and return it."""
    command = shlex.split(_on_free_ports(line[2:], ports), comments=True)
    if command[:2] == ["tiffin", "serve"]:
        server = subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_ready(f"http://127.0.0.1:{ports['3000']}", server)
        return server
    done = subprocess.run(
        command, cwd=work, env=env, input="y\n", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{line!r} failed: {done.stderr}"
    if command[0] == "curl":
        assert done.stdout.strip() == "\n".join(shown).strip(), line
    return None


def _on_free_ports(text: str, ports: dict[str, str]) -> str:
    """The README's ports (3000 for HTTP, 3001 for gRPC) replaced by free ones."""
    for shown, free in ports.items():
        text = text.replace(f"localhost:{shown}", f"127.0.0.1:{free}").replace(shown, free)
    return text


def _stop(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGTERM)
    _, errors = server.communicate(timeout=60)
    assert server.returncode == 0, errors


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    """Follow the README tour in order: Python blocks run in one process, `service.py` is
    written, `$` commands run (the server in the background, on a free port instead of
    3000), and what the README shows after a curl command is what it prints."""
    need(shutil.which("curl") is not None, "curl (apt-get install curl)")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    env = _env(home)
    ports = {"3000": str(_free_port()), "3001": str(_free_port())}
    python = _Python(work, env)
    server: subprocess.Popen[str] | None = None
    commands = 0
    try:
        for language, body in _blocks(readme):
            if language == "python":
                if body.startswith("# service.py"):
                    (work / "service.py").write_text(body, encoding="utf-8")
                else:
                    assert server is not None or "tiffin.Client(" not in body
                    python.run(_on_free_ports(body, ports))
                continue
            lines = body.splitlines()
            for index, line in enumerate(lines):
                if line.startswith("$ ") and not line.startswith("$ . "):
                    shown = []
                    for after in lines[index + 1 :]:
                        if after.startswith("$"):
                            break
                        shown.append(after)
                    if line.startswith("$ tiffin serve ") and server is not None:
                        _stop(server)  # the tour serves again: from the bundle this time
                        server = None
                    server = _run_command(line, shown, ports, work, env) or server
                    commands += 1
    finally:
        python.close()
        if server is not None:
            _stop(server)
    assert commands >= 10
    store = ModelStore(home)
    assert store.get("tokenizer").load().joinpath("vocab.txt").read_text() == "hello\nworld\n"
    assert store.aliases("iris") == {}  # the tour ends by deleting iris:production


def test_quickstart_builds_and_its_bundle_serves_from_another_directory(tmp_path: Path) -> None:
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _env(home)
    subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart/train.py")],
        env=env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    built = subprocess.run(
        ["tiffin", "build"],
        cwd=ROOT / "examples/quickstart",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith("Built bundle quickstart:")
    port = _free_port()
    server = subprocess.Popen(
        ["tiffin", "serve", "quickstart:latest", "--port", str(port), "--host", "127.0.0.1"],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", server)
        response = httpx.post(
            f"http://127.0.0.1:{port}/predict",
            json={"features": [[5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]},
            timeout=10,
        )
        assert response.json() == ["setosa", "virginica"]
    finally:
        _stop(server)
