"""``tiffin containerize`` end to end: build the quickstart bundle's image with a real
docker daemon, run it, call it, stop it.

The daemon is the test's own (its own data, socket and config, stopped at the end), and
the base image is a local Debian made with debootstrap: no registry is needed, only
Debian's mirror once (the root file system is cached) and PyPI for ``pip install``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.bundles.project import quickstart_project
from tests.conftest import need
from tests.deploy.engines import (
    BASE_IMAGE,
    ROOTFS,
    Dockerd,
    base_rootfs,
    free_port,
    start_dockerd,
    stop_dockerd,
)
from tiffin.bundles import Bundle, BundleStore
from tiffin.bundles.build import build
from tiffin.cli import cli
from tiffin.deploy.container import USER_ID
from tiffin.models import ModelStore

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# TLS to PyPI from inside a build may pass through a proxy whose certificate authority
# only this machine's bundle holds: the image is built trusting that bundle.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PORT = 8080
GRACE = 20


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    """A docker daemon of this module's own, with the local base image imported."""
    need(
        shutil.which("dockerd") is not None and shutil.which("docker") is not None,
        "dockerd and the docker CLI (apt-get install docker.io)",
    )
    need(os.geteuid() == 0, "root, to run dockerd and debootstrap")
    need(
        ROOTFS.is_file() or shutil.which("debootstrap") is not None,
        "debootstrap, to make a local base image (apt-get install debootstrap)",
    )
    need(CA_BUNDLE.is_file(), f"{CA_BUNDLE} (apt-get install ca-certificates)")
    rootfs = base_rootfs()
    daemon = start_dockerd()
    try:
        daemon.docker("import", str(rootfs), BASE_IMAGE, timeout=300)
        yield daemon
    finally:
        stop_dockerd(daemon)


@pytest.fixture
def docker(dockerd: Dockerd, monkeypatch: pytest.MonkeyPatch) -> Dockerd:
    """The module's daemon, which the engine tiffin runs in this test talks to."""
    for key in ("DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_BUILDKIT"):
        monkeypatch.setenv(key, dockerd.env[key])
    return dockerd


def containerize(home: Path, tag: str) -> Result:
    return CliRunner().invoke(
        cli,
        [
            "--home",
            str(home),
            "containerize",
            tag,
            "--engine",
            "docker",
            "--base-image",
            BASE_IMAGE,
            "--ca-cert",
            str(CA_BUNDLE),
            "--port",
            str(PORT),
        ],
    )


def wait_ready(docker: Dockerd, container: str, url: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        state = docker.docker("inspect", "-f", "{{.State.Status}}", container).stdout.strip()
        if state != "running":
            logs = docker.docker("logs", container).stderr
            raise AssertionError(f"the container is {state}:\n{logs}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url}/readyz did not answer 200 within 90 s")


def test_the_image_serves_the_bundle_and_stops_cleanly_on_sigterm(
    docker: Dockerd,
    bundle: Bundle,
    bundle_store: BundleStore,
    model_store: ModelStore,
    tmp_path: Path,
) -> None:
    home = bundle_store.home
    image = str(bundle.tag)
    container = "tiffin-test-quickstart"
    second: str | None = None
    try:
        started = time.monotonic()
        result = containerize(home, "quickstart")
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1] == image
        assert "Successfully tagged" in result.stderr  # the engine's lines, as they came
        built_in = time.monotonic() - started

        config = json.loads(docker.docker("inspect", image).stdout)[0]["Config"]
        assert config["User"] == f"{USER_ID}:{USER_ID}"
        assert config["ExposedPorts"] == {f"{PORT}/tcp": {}}
        assert config["Labels"]["tiffin.bundle"] == image
        assert config["Labels"]["tiffin.bundle.digest"] == bundle.info.digest
        assert f"TIFFIN_PORT={PORT}" in config["Env"]

        port = free_port()
        docker.docker(
            "run", "--detach", "--name", container, "--publish", f"127.0.0.1:{port}:{PORT}", image
        )
        url = f"http://127.0.0.1:{port}"
        wait_ready(docker, container, url)
        answer = httpx.post(f"{url}/predict", json={"features": [[5.1, 3.5, 1.4, 0.2]]}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json() == ["setosa"]
        # the health check the image declares passes, run now instead of in 30 s
        check = config["Healthcheck"]["Test"]
        assert check[0] == "CMD"
        docker.docker("exec", container, *check[1:])
        assert docker.docker("exec", container, "id", "-u").stdout.strip() == str(USER_ID)

        stopping = time.monotonic()
        docker.docker("stop", "--time", str(GRACE), container, timeout=GRACE + 30)
        assert time.monotonic() - stopping < GRACE  # it exited on SIGTERM, not on SIGKILL
        state = json.loads(docker.docker("inspect", container).stdout)[0]["State"]
        assert (state["ExitCode"], state["OOMKilled"]) == (0, False)
        logs = docker.docker("logs", container)
        records = [
            json.loads(line)
            for line in logs.stdout.splitlines() + logs.stderr.splitlines()
            if line.startswith("{")
        ]
        assert any(r["message"].startswith("Received SIGTERM") for r in records), records

        # A change to the service's source reuses every layer up to the bundle's own.
        project = quickstart_project(tmp_path / "changed")
        with open(project / "service.py", "a", encoding="utf-8") as stream:
            stream.write("\n# a change to the source only\n")
        changed = build(project, bundles=bundle_store, models=model_store)
        second = str(changed.tag)
        result = containerize(home, second)
        assert result.exit_code == 0, result.output
        steps = _steps(result.stderr)
        shown = "\n".join(f"{state}: {step[:70]}" for step, state in steps.items())
        assert _state(steps, "RUN /opt/tiffin/venv/bin/python -m pip install") == "cached", shown
        # tiffin's own layer is rebuilt only if its installed source changed in between (an
        # editable install being edited); the models' layer then follows it
        if _state(steps, "COPY site/") == "cached":
            assert _state(steps, "COPY home/models/") == "cached", shown
        assert _state(steps, "COPY home/bundles/") == "built", shown
        print(f"\nfirst build: {built_in:.1f} s")
    finally:
        _cleanup(docker, container, image, second)


def _steps(output: str) -> dict[str, str]:
    """``{instruction prefix: "cached" or "built"}`` from the legacy builder's output."""
    steps: dict[str, str] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("Step "):
            current = line.partition(" : ")[2]
            steps[current] = "built"
        elif current is not None and line.strip() == "---> Using cache":
            steps[current] = "cached"
    return steps


def _state(steps: dict[str, str], prefix: str) -> str:
    [state] = [state for step, state in steps.items() if step.startswith(prefix)]
    return state


def _cleanup(docker: Dockerd, container: str, *images: str | None) -> None:
    for args in (["rm", "--force", container], *(["rmi", i] for i in images if i)):
        with contextlib.suppress(AssertionError):  # never made: an earlier step failed
            docker.docker(*args)
