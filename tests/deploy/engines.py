"""Container engines for the deploy tests: a docker daemon of the tests' own, a local
Debian base image (no registry need be reachable), and stand-in engine programs.

The base image's root file system is made once with debootstrap and kept as a tarball
under ``$TIFFIN_TEST_CACHE`` (default ``~/.cache/tiffin-tests``), so later runs import it
in seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("TIFFIN_TEST_CACHE", "~/.cache/tiffin-tests")).expanduser()
BASE_IMAGE = "localhost/debian-python:bookworm"
ROOTFS = CACHE / "debian-python-bookworm.tar"
"""The base image's root file system: Debian bookworm, minbase, with python3, its venv
module and the CA certificates."""
MIRROR = "http://deb.debian.org/debian"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_rootfs() -> Path:
    """The cached root file system tarball of ``BASE_IMAGE``, made on first use (as root,
    with debootstrap, about a minute)."""
    if ROOTFS.is_file():
        return ROOTFS
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".rootfs-") as scratch:
        root = Path(scratch) / "root"
        made = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3,python3-venv,ca-certificates",
                "bookworm",
                str(root),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if made.returncode != 0:
            raise AssertionError(
                f"debootstrap exited {made.returncode}:\n{made.stdout[-3000:]}{made.stderr[-3000:]}"
            )
        # Downloaded packages and indexes: an image's apt-get update fetches fresh ones.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (root / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        for docs in ("usr/share/doc", "usr/share/man", "usr/share/locale"):
            shutil.rmtree(root / docs, ignore_errors=True)
        partial = ROOTFS.with_suffix(".partial")
        subprocess.run(
            ["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."],
            check=True,
            capture_output=True,
        )
        partial.rename(ROOTFS)
    return ROOTFS


@dataclass
class Dockerd:
    """A docker daemon with its own data, socket and bridge, for one test module."""

    directory: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return f"unix://{self.directory / 'docker.sock'}"

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; raise with its output if it fails."""
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n"
                f"{result.stderr}"
            )
        return result

    def log(self) -> str:
        return (self.directory / "dockerd.log").read_text(errors="replace")[-4000:]


def start_dockerd() -> Dockerd:
    """Start a docker daemon under a new short directory (socket paths have a length
    limit) and wait until it answers."""
    directory = Path(tempfile.mkdtemp(prefix="tiffin-dockerd-"))
    sock = directory / "docker.sock"
    with open(directory / "dockerd.log", "wb") as log:
        process = subprocess.Popen(
            [
                "dockerd",
                "--data-root",
                str(directory / "data"),
                "--exec-root",
                str(directory / "exec"),
                "--pidfile",
                str(directory / "dockerd.pid"),
                "--host",
                f"unix://{sock}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (directory / "config").mkdir()
    daemon = Dockerd(
        directory,
        process,
        {
            **os.environ,
            "DOCKER_HOST": f"unix://{sock}",
            "DOCKER_CONFIG": str(directory / "config"),
            "DOCKER_BUILDKIT": "0",
        },
    )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            log_text = daemon.log()
            shutil.rmtree(directory, ignore_errors=True)
            raise AssertionError(f"dockerd exited with {process.returncode}:\n{log_text}")
        if _pings(sock):
            return daemon
        if time.monotonic() > deadline:
            stop_dockerd(daemon)
            raise AssertionError("dockerd did not answer within 60 s")
        time.sleep(0.2)


def _pings(sock: Path) -> bool:
    """Whether the daemon answers ``GET /_ping`` on its socket. A plain socket, closed
    whatever happens: an HTTP client's failed connection attempts to a socket that is not
    listening yet could be left for the garbage collector."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(str(sock))
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
    except OSError:
        return False
    return answer.startswith(b"HTTP/1.") and answer.endswith(b"\r\n\r\nOK")


def stop_dockerd(daemon: Dockerd) -> None:
    """Stop the daemon by its pid (it stops its containers and containerd), then remove
    its data."""
    process = daemon.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(daemon.directory, ignore_errors=True)


def fake_engine(directory: Path, name: str, script: str) -> Path:
    """An executable called ``name`` in ``directory`` that runs the shell ``script``:
    a stand-in for an engine where none is installed."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(0o755)
    return path
