"""The Dockerfile of a bundle's image, and the options and names it is made from.

``render_dockerfile`` turns a bundle's spec and ``ContainerOptions`` into the text of a
Dockerfile, checking on the way every value it writes (package names, variable names,
the base image) so that a bad spec fails here with a message instead of halfway through
a build. It reads nothing but its arguments: ``tiffin build`` stores its output in the
bundle, and ``tiffin.deploy.container`` writes it into a build context.

The image, from a Debian-like base with Python 3 and its ``venv`` module, in layers that
change from rarely to often, so a rebuild after a code change reuses the installed
requirements: CA certificates, system packages and the setup script (as root); a
non-root user (uid 10001) and a virtual env at ``/opt/tiffin/venv`` (Debian's own Python
refuses ``pip install``, PEP 668); the requirements; tiffin; the models; the bundle.
It runs ``python -m tiffin serve NAME:VERSION`` as the server's PID 1, so ``docker stop``
(SIGTERM) drains requests in flight and exits 0, with ``TIFFIN_HOME=/opt/tiffin/home``,
JSON logs, and a health check on ``/livez``.

Beside it live the facts about the image that other deploy targets share: the port the
server listens on (``server_port``), the user it runs as (``USER_ID``), and the image
reference a bundle is tagged with (``default_image``).

Example:
    text = render_dockerfile(bundle.info, ContainerOptions(port=8080))
    default_image(bundle.info)   # 'iris:2026...'
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiffin.bundles.bundle import LOCK_FILE, BundleInfo
from tiffin.exceptions import InvalidArgument

__all__ = [
    "DEFAULT_PORT",
    "HOME",
    "USER_ID",
    "ContainerOptions",
    "check_image",
    "default_image",
    "grpc_port",
    "render_dockerfile",
    "server_port",
]

DEFAULT_PORT = 3000
"""The port the server listens on when neither the options nor the bundle's settings name one."""
USER_ID = 10001
"""The uid and gid the server runs as: fixed, so a Kubernetes ``runAsNonRoot`` check and
volume permissions can rely on it."""
APP = "/opt/tiffin"
VENV = f"{APP}/venv"
SITE = f"{APP}/site"
HOME = f"{APP}/home"
"""``TIFFIN_HOME`` inside the image."""
WORKDIR = f"{APP}/work"
"""The server's working directory: empty, so no file there is taken for the service."""
PYTHON = f"{VENV}/bin/python"

# Variables the image itself sets; a bundle that overrides them breaks it.
_RESERVED_ENVS = frozenset({"PATH", "PYTHONPATH", "TIFFIN_HOME", "VIRTUAL_ENV"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?")
_COMMAND = re.compile(r"[A-Za-z0-9_./+-]+")
# [registry[:port]/]path[:tag]: what docker, podman and buildah accept as an image name.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?"
)
_BASE_IMAGE = re.compile(r"[^\s\"'\\]+")
_PEM = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class ContainerOptions:
    """How ``tiffin containerize`` makes the image; each one is checked when it is given.

    Attributes:
        base_image: the image to build on: Debian-like, with Python 3 and its ``venv``
            module (None: the bundle spec's ``image.base``).
        port: the port the server listens on and the image exposes (None: the bundle's
            ``port`` setting, or 3000).
        ca_certificates: PEM files of extra certificate authorities, trusted by apt, pip
            and the server's Python (e.g. a company proxy's).
        user_id: the uid and gid the server runs as; not 0.

    Example:
        ContainerOptions(port=8080, ca_certificates=[Path("/etc/ssl/certs/ca-certificates.crt")])
    """

    base_image: str | None = None
    port: int | None = None
    ca_certificates: Sequence[Path] = ()
    user_id: int = USER_ID

    def __post_init__(self) -> None:
        if self.base_image is not None and not _BASE_IMAGE.fullmatch(self.base_image):
            raise InvalidArgument(
                f"The base image {self.base_image!r} is not an image reference. Write it like "
                "'python:3.11-slim' or 'registry.example.com/python:3.11'.",
                detail={"option": "base_image", "value": self.base_image},
            )
        if self.port is not None and not 1 <= self.port <= 65535:
            raise InvalidArgument(
                f"Port {self.port} is not a TCP port an image can expose. Choose one from 1 to "
                "65535.",
                detail={"option": "port", "value": self.port},
            )
        if not 1 <= self.user_id < 2**31:
            raise InvalidArgument(
                f"user_id {self.user_id} is not a uid the server may run as. Choose one from "
                "1 (not root) to 2147483647.",
                detail={"option": "user_id", "value": self.user_id},
            )
        certificates = tuple(Path(path) for path in self.ca_certificates)
        for path in certificates:
            _check_certificate(path)
        object.__setattr__(self, "ca_certificates", certificates)


def _check_certificate(path: Path) -> None:
    try:
        with open(path, "rb") as stream:
            head = stream.read(1 << 20)
    except OSError as exc:
        raise InvalidArgument(
            f"Cannot read the CA certificate {path}: {exc.strerror or exc}. Give the path of a "
            "PEM file.",
            detail={"option": "ca_certificates", "path": str(path)},
        ) from None
    if _PEM not in head:
        raise InvalidArgument(
            f"{path} holds no PEM certificate ('{_PEM.decode()}'). Give a PEM file; convert "
            f"a DER one with 'openssl x509 -inform der -in {path} -out cert.pem'.",
            detail={"option": "ca_certificates", "path": str(path)},
        )


def default_image(info: BundleInfo) -> str:
    """The image reference ``tiffin containerize`` tags a bundle's image with:
    ``name:version``, lowercased as image references must be."""
    return check_image(f"{info.name}:{info.version}".lower())


def _suggested_image(info: BundleInfo) -> str:
    try:
        return default_image(info)
    except InvalidArgument:  # a bundle name that is no image name: the user picks one
        return "IMAGE"


def check_image(image: str) -> str:
    """``image`` if engines accept it as the name of an image to build, else InvalidArgument."""
    if not _IMAGE.fullmatch(image):
        raise InvalidArgument(
            f"{image!r} is not a valid image reference. Write it as [REGISTRY/]NAME[:TAG], "
            "with a lowercase NAME, like 'iris:v1' or 'registry.example.com/ml/iris:v1'; "
            "choose one with --tag.",
            detail={"image": image},
        )
    return image


def server_port(info: BundleInfo, options: ContainerOptions | None = None) -> int:
    """The port the image's server listens on and exposes: the options', else the bundle's
    ``port`` setting, else 3000."""
    if options is not None and options.port is not None:
        return options.port
    port = info.settings.get("port")
    # 0 means "any free port" on a machine; an image must expose a fixed one.
    return port if isinstance(port, int) and 1 <= port <= 65535 else DEFAULT_PORT


def grpc_port(settings: Mapping[str, Any]) -> int | None:
    """The gRPC port a server with these settings listens on, when it is a fixed one the
    image or a Service can expose (``grpc_port`` 0, "any free port", is not)."""
    port = settings.get("grpc_port")
    return port if isinstance(port, int) and 1 <= port <= 65535 else None


def _quote(value: str, name: str) -> str:
    """A Dockerfile ``ENV`` value: double-quoted, ``\\``, ``"`` and ``$`` escaped."""
    if "\n" in value or "\r" in value:
        raise InvalidArgument(
            f"The environment variable {name} holds a line break, which a Dockerfile cannot "
            "hold. Give it a one-line value under 'envs:' in tiffin.yaml.",
            detail={"env": name},
        )
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _envs(info: BundleInfo, port: int) -> dict[str, str]:
    for name in info.envs:
        if not _ENV_NAME.fullmatch(name):
            raise InvalidArgument(
                f"{name!r} under 'envs:' is not an environment variable name. Use letters, "
                "digits and '_', not starting with a digit.",
                detail={"env": name},
            )
        if name in _RESERVED_ENVS:
            raise InvalidArgument(
                f"'envs:' sets {name}, which the image sets itself to find tiffin, the "
                "virtual env and the models. Remove it from 'envs:' in tiffin.yaml.",
                detail={"env": name},
            )
    # The bundle's own envs may change the host or the log format; the port is the one
    # the image exposes.
    return {
        "TIFFIN_HOST": "0.0.0.0",  # noqa: S104 - a server in a container listens on every interface
        "TIFFIN_LOG_FORMAT": "json",
        **info.envs,
        "TIFFIN_PORT": str(port),
    }


def _system_packages(info: BundleInfo) -> list[str]:
    for package in info.image.system_packages:
        if not _DEBIAN_PACKAGE.fullmatch(package):
            raise InvalidArgument(
                f"{package!r} under 'image: system_packages:' is not a Debian package name. "
                "Write names like 'libgomp1', or 'libgomp1=12.2.0-14' to pin a version.",
                detail={"package": package},
            )
    return sorted(set(info.image.system_packages))


def _pip_options(info: BundleInfo) -> list[str]:
    options = []
    index_url = info.python.get("index_url")
    if index_url:
        options += ["--index-url", str(index_url)]
    for url in info.python.get("extra_index_urls") or []:
        options += ["--extra-index-url", str(url)]
    return options


def render_dockerfile(info: BundleInfo, options: ContainerOptions | None = None) -> str:
    """The Dockerfile of the bundle's image, built from a ``write_context`` directory.

    The same bundle and options give the same text, byte for byte.

    Raises:
        InvalidArgument: the bundle's spec holds something a Dockerfile cannot express
            (a bad package name or variable name, a line break in a variable).

    Example:
        text = render_dockerfile(bundle.info, ContainerOptions(port=8080))
    """
    options = options or ContainerOptions()
    base = options.base_image or info.image.base
    if not _BASE_IMAGE.fullmatch(base):
        raise InvalidArgument(
            f"The base image {base!r} under 'image: base:' is not an image reference. Write "
            "it like 'python:3.11-slim'.",
            detail={"image": base},
        )
    python = info.image.python
    if not _COMMAND.fullmatch(python):
        raise InvalidArgument(
            f"{python!r} under 'image: python:' is not a program name or path. Write it "
            "like 'python3' or '/usr/local/bin/python3.11'.",
            detail={"python": python},
        )
    port = server_port(info, options)
    envs = _envs(info, port)
    packages = _system_packages(info)
    uid = options.user_id
    lines = [
        f"# The image of the tiffin bundle {info.name}:{info.version}, written by",
        "# 'tiffin containerize'. Build it from the directory holding this file:",
        f"#   docker build --tag {_suggested_image(info)} .",
        f"FROM {base}",
        "",
        f"ARG PYTHON={python}",
        "ENV PYTHONDONTWRITEBYTECODE=1 \\",
        "    PYTHONUNBUFFERED=1 \\",
        "    PIP_NO_CACHE_DIR=1 \\",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\",
        "    PIP_NO_INPUT=1",
    ]
    if options.ca_certificates:
        lines += [
            "",
            "# Extra certificate authorities, trusted by apt, pip and Python from here on.",
            "COPY certs/ /usr/local/share/ca-certificates/tiffin/",
            "RUN if command -v update-ca-certificates > /dev/null; then \\",
            "        update-ca-certificates; \\",
            "    else \\",
            "        mkdir -p /etc/ssl/certs \\",
            "        && cat /usr/local/share/ca-certificates/tiffin/*.crt"
            " >> /etc/ssl/certs/ca-certificates.crt; \\",
            "    fi",
            "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\",
            "    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        ]
    if packages:
        lines += [
            "",
            "# System packages. DL3008 (pin apt versions) is off: a Debian release updates only",
            "# for fixes, which replace (and so break) a pinned version; pin with name=version.",
            "# hadolint ignore=DL3008",
            "RUN apt-get update \\",
            "    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\",
            *(f"        {package} \\" for package in packages),
            "    && rm -rf /var/lib/apt/lists/*",
        ]
    if info.image.setup_script is not None:
        lines += [
            "",
            "# The bundle's setup script, run as root.",
            f"COPY setup.sh {APP}/setup.sh",
            f"RUN chmod 0755 {APP}/setup.sh && {APP}/setup.sh",
        ]
    lines += [
        "",
        "# The user the server runs as, and the virtual env it runs in. The home and working",
        "# directories are group 0 writable, for platforms that run images under any uid.",
        f"RUN groupadd --system --gid {uid} tiffin \\",
        f"    && useradd --system --no-log-init --uid {uid} --gid {uid} \\",
        f"        --home-dir {HOME} --shell /usr/sbin/nologin tiffin \\",
        f"    && install -d -o {uid} -g 0 -m 0775 {HOME} {WORKDIR} \\",
        f'    && "${{PYTHON}}" -m venv {VENV}',
        f"ENV PATH={VENV}/bin:$PATH \\",
        f"    VIRTUAL_ENV={VENV}",
        "",
        "# The requirements, pinned: this layer is reused until they change.",
        f"COPY {LOCK_FILE} {APP}/{LOCK_FILE}",
        "RUN "
        + shlex.join(
            [
                PYTHON,
                "-m",
                "pip",
                "install",
                "--no-cache-dir",
                *_pip_options(info),
                "--requirement",
                f"{APP}/{LOCK_FILE}",
            ]
        ),
        "",
        "# tiffin itself, as installed where the context was written.",
        f"COPY site/ {SITE}/",
        f"RUN {PYTHON} -m compileall -q {SITE}",
        f"ENV PYTHONPATH={SITE} \\",
        f"    TIFFIN_HOME={HOME}",
    ]
    if info.models:
        lines += [
            "",
            "# The models, each exactly the version the bundle pins.",
            f"COPY home/models/ {HOME}/models/",
        ]
    lines += [
        "",
        "# The bundle: the service's source, its settings and bundle.yaml.",
        f"COPY home/bundles/ {HOME}/bundles/",
        "",
        "ENV " + " \\\n    ".join(f"{name}={_quote(value, name)}" for name, value in envs.items()),
        "EXPOSE " + " ".join(str(p) for p in (port, grpc_port(info.settings)) if p is not None),
        f"WORKDIR {WORKDIR}",
        f"USER {uid}:{uid}",
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\",
        "    CMD " + json.dumps([PYTHON, "-c", _HEALTHCHECK]),
        "# The server is PID 1: SIGTERM (docker stop) drains requests in flight, then exits 0.",
        "ENTRYPOINT " + json.dumps([PYTHON, "-m", "tiffin", "serve", str(info.tag)]),
        "",
    ]
    return "\n".join(lines)


_HEALTHCHECK = (
    "import os, urllib.request; urllib.request.urlopen("
    "'http://127.0.0.1:' + os.environ.get('TIFFIN_PORT', '3000') + '/livez', timeout=4)"
)
