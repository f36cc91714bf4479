"""Container engines: find docker, podman or buildah, and build an image with one.

The engine is a program on ``PATH``; tiffin runs its ``build`` command on a build context
(``tiffin.deploy.container.write_context``) and passes each line the engine prints to a
callback as it comes, so a long ``pip install`` shows progress instead of silence.

How the engine itself is set up stays the engine's business and is read from its usual
environment: ``DOCKER_HOST`` and ``DOCKER_BUILDKIT`` for docker, ``CONTAINERS_CONF`` and
``BUILDAH_ISOLATION`` for podman and buildah.

Example:
    engine = find_engine()                       # the first of docker, podman, buildah
    build(engine, Path("context"), "iris:v1", on_output=print)
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tiffin.exceptions import DeployError, InvalidArgument

__all__ = ["ENGINES", "Engine", "build", "find_engine"]

ENGINES = ("docker", "podman", "buildah")
"""The engines tiffin can build with, in the order ``find_engine`` looks for them."""

_INSTALL = {
    "docker": "'apt-get install docker.io', or Docker Desktop on macOS and Windows",
    "podman": "'apt-get install podman'",
    "buildah": "'apt-get install buildah'",
}
_TAIL_LINES = 20
"""Lines of the engine's output kept for the error when a build fails."""
_SHOWN_LINES = 5
"""Of those, the ones the error message quotes."""


@dataclass(frozen=True, slots=True)
class Engine:
    """A container engine found on ``PATH``.

    Attributes:
        name: ``docker``, ``podman`` or ``buildah``.
        executable: the program's full path.
    """

    name: str
    executable: str

    def build_command(
        self, context: Path, image: str, *, labels: Mapping[str, str] | None = None
    ) -> list[str]:
        """The command line that builds ``context`` (its ``Dockerfile``) into ``image``.

        podman and buildah write Docker's image format, not their default OCI one, which
        has no ``HEALTHCHECK``; buildah is asked to keep its layers so a rebuild after a
        code change reuses the installed requirements, as docker and podman do anyway.
        """
        command = [self.executable, "bud" if self.name == "buildah" else "build"]
        if self.name != "docker":
            command += ["--format", "docker"]
        if self.name == "buildah":
            command.append("--layers")
        command += ["--tag", image, "--file", str(context / "Dockerfile")]
        for key, value in sorted((labels or {}).items()):
            command += ["--label", f"{key}={value}"]
        command.append(str(context))
        return command


def find_engine(name: str | None = None) -> Engine:
    """The engine called ``name``, or the first of ``ENGINES`` on ``PATH``.

    Raises:
        InvalidArgument: ``name`` is not one of ``ENGINES``.
        DeployError: that engine (or, without ``name``, every one) is not on ``PATH``.

    Example:
        find_engine("podman").executable     # '/usr/bin/podman'
    """
    if name is not None and name not in ENGINES:
        raise InvalidArgument(
            f"'{name}' is not a container engine tiffin can use. Choose one of "
            f"{', '.join(ENGINES)}.",
            detail={"engine": name},
        )
    for candidate in [name] if name is not None else ENGINES:
        assert candidate is not None
        found = shutil.which(candidate)
        if found is not None:
            return Engine(candidate, found)
    if name is not None:
        raise DeployError(
            f"The container engine '{name}' is not on PATH. Install it ({_INSTALL[name]}), or "
            f"choose another one with --engine ({', '.join(ENGINES)}).",
            detail={"engine": name},
        )
    raise DeployError(
        "No container engine found: none of docker, podman or buildah is on PATH. Install "
        "one (e.g. 'apt-get install docker.io' or 'apt-get install podman'), or write the "
        "build context only, with 'tiffin containerize NAME --context-only DIR'.",
        detail={"engines": list(ENGINES)},
    )


def build(
    engine: Engine,
    context: Path,
    image: str,
    *,
    labels: Mapping[str, str] | None = None,
    on_output: Callable[[str], None] | None = None,
) -> None:
    """Build the image ``image`` from the build context ``context`` with ``engine``.

    Args:
        engine: from ``find_engine``.
        context: a directory holding a ``Dockerfile`` and everything it copies.
        image: the reference to tag the image with (``iris:v1``).
        labels: image labels, added on the command line.
        on_output: called with each line the engine prints (standard output and error),
            without its line ending, while the build runs.

    Raises:
        DeployError: the engine could not be started, or the build failed; the message
            gives the exit code and the engine's last lines.
    """
    command = engine.build_command(context, image, labels=labels)
    # BuildKit prints one line per event in this mode, not a redrawn terminal screen.
    env = {**os.environ, "BUILDKIT_PROGRESS": "plain"}
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as exc:
        raise DeployError(
            f"Could not run {engine.executable}: {exc.strerror or exc}. Check that it is an "
            f"executable {engine.name}, or choose another engine with --engine.",
            detail={"engine": engine.name, "command": command},
        ) from None
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\r\n")
            if line.strip():
                tail.append(line)
            if on_output is not None:
                on_output(line)
        code = process.wait()
    finally:
        if process.poll() is None:  # interrupted: do not leave a build running
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
    if code != 0:
        raise _failed(engine, command, code, list(tail))


def _failed(engine: Engine, command: list[str], code: int, tail: list[str]) -> DeployError:
    shown = "\n".join(f"    {line}" for line in tail[-_SHOWN_LINES:]) or "    (no output)"
    joined = "\n".join(tail)
    if "Cannot connect to the Docker daemon" in joined:
        advice = (
            "Start the docker daemon (e.g. 'systemctl start docker'), or point DOCKER_HOST "
            "at a running one, and run the command again."
        )
    else:
        advice = (
            f"Fix what it reports and run the command again; the build was: {shlex.join(command)}"
        )
    return DeployError(
        f"{engine.name} could not build the image (exit code {code}). Its last lines:\n"
        f"{shown}\n{advice}",
        detail={"engine": engine.name, "exit_code": code, "output": tail, "command": command},
    )
