"""``tiffin serve``: where the service comes from, and one-line errors with exit codes."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import PROBE, TIFFIN, environment, start_server

TWO_SERVICES = """
import tiffin
from probe import Probe


@tiffin.service
class A(Probe):
    pass


@tiffin.service
class B(Probe):
    pass
"""


def run_serve(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tiffin serve ARGS`` in ``directory``, expecting it to fail fast."""
    return subprocess.run(
        [TIFFIN, "serve", *args],
        cwd=directory,
        env=environment(directory / "home"),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_without_an_argument_serves_what_tiffin_yaml_names(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    (tmp_path / "tiffin.yaml").write_text(
        "service: probe.py\nsettings:\n  workers: 2\n", encoding="utf-8"
    )
    server = start_server(tmp_path, home=tmp_path / "home")
    try:
        assert f"Serving probe at {server.url} with 2 workers (docs: {server.url}/docs)" in (
            server.stdout.read_text()
        )
        assert httpx.post(f"{server.url}/predict", json={"x": 2}, timeout=10).json() == 4.0
    finally:
        assert server.stop() == 0


def test_serve_without_an_argument_or_tiffin_yaml_says_what_to_pass(tmp_path: Path) -> None:
    done = run_serve(tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "Error: No service to serve. Pass one, as in 'tiffin serve service:Iris', or name it "
        "in tiffin.yaml with 'service: service:Iris'.\n"
    )


@pytest.mark.parametrize(
    ("files", "target", "code", "message"),
    [
        ({}, "nosuch:Service", 3, "Error: No module 'nosuch' in "),
        ({}, "missing.py:Service", 3, "Error: No file "),
        ({"probe.py": PROBE}, "probe:Nope", 3, "Error: 'probe' has no attribute 'Nope'. "),
        ({}, "probe:", 2, "Error: 'probe:' does not name a service. Write it as module:Class"),
        (
            {"two.py": TWO_SERVICES, "probe.py": PROBE},
            "two",
            2,
            "Error: 'two' defines several services (A, B). Say which, e.g. two:A.",
        ),
        (
            {"plain.py": "class Plain:\n    pass\n"},
            "plain:Plain",
            2,
            "Error: 'Plain' is not a tiffin service. Decorate the class with @tiffin.service.",
        ),
        (
            {"bad.py": "import json\nraise ValueError('bad config value')\n"},
            "bad:Service",
            2,
            "Error: Importing 'bad' failed at bad.py:2: ValueError: bad config value. Fix the "
            "error in your code and run again.",
        ),
        (
            {"needs.py": "import tiffin\nimport not_installed_anywhere\n"},
            "needs:Service",
            2,
            "Error: Importing 'needs' failed at needs.py:2: ModuleNotFoundError: No module "
            "named 'not_installed_anywhere'. Install the missing package, or fix the import.",
        ),
        (
            {"syntax.py": "def broken(:\n"},
            "syntax.py:Service",
            2,
            "Error: Importing 'syntax.py' failed at syntax.py:1: SyntaxError:",
        ),
    ],
)
def test_a_service_that_cannot_be_loaded_is_one_line(
    tmp_path: Path, files: dict[str, str], target: str, code: int, message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    done = run_serve(tmp_path, target, "--port", "0")
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith(message)
    assert done.stderr.count("\n") == 1


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE, encoding="utf-8")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = run_serve(tmp_path, "probe:Probe", "--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 2
    assert done.stderr.startswith(f"Error: Cannot listen on 127.0.0.1:{port}: ")
    assert "pick another with --port" in done.stderr
    assert done.stderr.count("\n") == 1
