"""A bundle's container image: the build context it is built from, and the build.

``write_context`` writes a directory that any engine can build (``docker build DIR``)::

    Dockerfile               render_dockerfile(bundle.info, options)
    .dockerignore            lets in only what the Dockerfile copies
    requirements.lock.txt    the bundle's pinned requirements
    setup.sh                 the bundle's setup script, when it has one
    certs/ca-N.crt           extra CA certificates (ContainerOptions.ca_certificates)
    site/tiffin/             the tiffin package running here, and its dist-info (tiffin
    site/tiffin-*.dist-info/ need not be on any package index)
    home/models/<name>/<version>/    every model the bundle pins, with its model.yaml
    home/bundles/<name>/<version>/   the bundle itself, with its bundle.yaml

``build_image`` writes that context to a temporary directory and builds it with a
container engine (``tiffin.deploy.engines``), labelled with ``image_labels``.

What the image holds and how it runs is the Dockerfile's business:
``tiffin.deploy.dockerfile`` has ``render_dockerfile``, ``ContainerOptions`` and the image
names and constants, which are importable from here too.

Example:
    write_context(bundle, Path("build/iris"), models=ModelStore.default())
    build_image(bundle, models=ModelStore.default(), engine="podman")   # 'iris:2026...'
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import tiffin
from tiffin.bundles.bundle import LOCK_FILE, Bundle, BundleInfo
from tiffin.deploy import engines
from tiffin.deploy.dockerfile import (
    DEFAULT_PORT,
    HOME,
    USER_ID,
    ContainerOptions,
    check_image,
    default_image,
    render_dockerfile,
    server_port,
)
from tiffin.exceptions import DeployError, IntegrityError, InvalidArgument, ModelNotFound
from tiffin.models import FileEntry, Model, ModelStore
from tiffin.storage.digest import CHUNK, HashingWriter
from tiffin.storage.local import files_digest, safe_relpath

__all__ = [
    "DEFAULT_PORT",
    "HOME",
    "USER_ID",
    "ContainerOptions",
    "build_image",
    "check_image",
    "default_image",
    "image_labels",
    "render_dockerfile",
    "server_port",
    "write_context",
]

# Files of an installed distribution's metadata that describe this machine's install (an
# editable install names a source directory the image does not have), not the package.
_INSTALL_RECORDS = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})

Progress = Callable[[int], None]


_DOCKERIGNORE = """\
# Only what the Dockerfile copies goes to the engine; anything else written here stays out.
*
!requirements.lock.txt
!setup.sh
!certs
!site
!home
**/__pycache__
**/*.py[co]
"""


def write_context(
    bundle: Bundle,
    dest: Path,
    *,
    models: ModelStore,
    options: ContainerOptions | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write the build context of the bundle's image to the new directory ``dest``.

    The context is written beside ``dest`` and renamed into place when complete: an
    error leaves nothing behind. Every model and bundle file is checked against its
    recorded digest while it is copied.

    Args:
        bundle: the bundle to containerize.
        dest: a directory that does not exist yet, or is empty.
        models: the store holding the models the bundle pins.
        options: the image's options (default: the bundle spec's).
        progress: called with the number of bytes of models and bundle just copied.

    Returns:
        ``dest``.

    Raises:
        InvalidArgument: ``dest`` is a file or a directory that is not empty, or the
            options or the bundle's spec cannot be expressed in a Dockerfile.
        ModelNotFound: a model the bundle pins is not in ``models``.
        IntegrityError: a model is not the one the bundle was built with, or a stored
            file does not match its digest.
        DeployError: tiffin itself is not installed as a distribution, or the bundle's
            requirements lack a dependency of this tiffin (it was built by another version).

    Example:
        write_context(bundle, Path("build/iris"), models=ModelStore.default())
    """
    options = options or ContainerOptions()
    dest = Path(dest).absolute()
    dockerfile = render_dockerfile(bundle.info, options)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise InvalidArgument(
            f"{dest} already exists. Choose a new directory for the build context, or "
            "remove that one first.",
            detail={"path": str(dest)},
        )
    package, dist_info, dist = _installed_tiffin()
    requirements = _requirements(bundle, dist)
    pinned = {
        pin.tag: _pinned_model(bundle, pin.tag, pin.sha256, models) for pin in bundle.info.models
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (staging / "Dockerfile").write_text(dockerfile, encoding="utf-8")
        (staging / ".dockerignore").write_text(_DOCKERIGNORE, encoding="utf-8")
        (staging / LOCK_FILE).write_text(requirements, encoding="utf-8")
        if bundle.info.image.setup_script is not None:
            script = bundle.setup_script
            if script is None:
                raise _damaged_bundle(bundle, "container/setup.sh")
            shutil.copyfile(script, staging / "setup.sh")
        for i, certificate in enumerate(options.ca_certificates, 1):
            (staging / "certs").mkdir(exist_ok=True)
            shutil.copyfile(certificate, staging / "certs" / f"ca-{i}.crt")
        site = staging / "site"
        shutil.copytree(
            package, site / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]")
        )
        shutil.copytree(
            dist_info,
            site / dist_info.name,
            ignore=lambda _, names: [
                n for n in names if n in _INSTALL_RECORDS or n == "__pycache__"
            ],
        )
        for model in pinned.values():
            _copy_checked(
                model.path,
                staging / "home" / "models" / model.tag.name / str(model.tag.version),
                model.info.files,
                manifest="model.yaml",
                progress=progress,
                damaged=functools.partial(_damaged_model, str(model.tag)),
            )
        _copy_checked(
            bundle.path,
            staging / "home" / "bundles" / bundle.tag.name / str(bundle.tag.version),
            bundle.info.files,
            manifest="bundle.yaml",
            progress=progress,
            damaged=functools.partial(_damaged_bundle, bundle),
        )
        _make_readable(staging)
        if dest.is_dir():
            dest.rmdir()
        os.rename(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _installed_tiffin() -> tuple[Path, Path, importlib.metadata.Distribution]:
    """The installed tiffin package directory, its distribution's metadata directory
    (``entry_points.txt`` registers tiffin's frameworks and codecs), and the distribution."""
    package = Path(tiffin.__file__).resolve().parent
    try:
        dist = importlib.metadata.distribution("tiffin")
    except importlib.metadata.PackageNotFoundError:
        raise DeployError(
            f"tiffin runs from {package} without being installed, so its metadata cannot be "
            "copied into the image. Install it ('pip install .', or 'pip install -e .' in a "
            "checkout) and run the command again.",
            detail={"package": str(package)},
        ) from None
    found = getattr(dist, "_path", None)
    if not (isinstance(found, Path) and found.is_dir()):
        found = None
        for file in dist.files or []:
            if file.parts and file.parts[0].endswith((".dist-info", ".egg-info")):
                found = Path(str(dist.locate_file(file))).parent
                break
    if found is None:
        raise DeployError(
            "The metadata directory of the installed tiffin distribution cannot be found. "
            "Reinstall tiffin ('pip install --force-reinstall tiffin') and run the command again.",
            detail={"package": str(package)},
        )
    return package, found, dist


def _pinned_model(bundle: Bundle, tag: str, sha256: str, models: ModelStore) -> Model:
    try:
        model = models.get(tag)
    except ModelNotFound:
        raise ModelNotFound(
            f"Bundle '{bundle.tag}' pins model '{tag}', which is not in the model store at "
            f"{models.home}, so its image cannot be made. Import the model ('tiffin models "
            "import FILE') or point TIFFIN_HOME at the store that has it.",
            detail={"bundle": str(bundle.tag), "tag": tag, "home": str(models.home)},
        ) from None
    digest = files_digest(model.info.model_dump(mode="json")["files"])
    if digest != sha256:
        raise IntegrityError(
            f"Model '{tag}' is not the one bundle '{bundle.tag}' was built with: its files' "
            f"digest is {digest[:12]}..., the bundle recorded {sha256[:12]}.... Restore that "
            "model version, or build the bundle again.",
            detail={"bundle": str(bundle.tag), "tag": tag, "expected": sha256, "actual": digest},
        )
    return model


def _requirements(bundle: Bundle, tiffin_dist: importlib.metadata.Distribution) -> str:
    """The bundle's lock file without tiffin itself, which the image gets as installed
    here; checked to hold every dependency of that tiffin."""
    kept = []
    names = set()
    for line in bundle.lock_file.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-"):
            try:
                name: str = canonicalize_name(Requirement(text).name)
            except InvalidRequirement:
                name = ""  # pip reports it, with the line, when the image is built
            if name == "tiffin":
                continue
            names.add(name)
        kept.append(line)
    needed = set()
    for text in tiffin_dist.requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            needed.add(canonicalize_name(requirement.name))
    missing = sorted(needed - names)
    if missing:
        raise DeployError(
            f"Bundle '{bundle.tag}' was built with tiffin {bundle.info.tiffin_version}, and its "
            f"requirements lack {', '.join(missing)}, which the tiffin {tiffin_dist.version} "
            "going into the image needs. Build the bundle again with this tiffin ('tiffin "
            "build'), then containerize the new version.",
            detail={"bundle": str(bundle.tag), "missing": missing},
        )
    return "".join(line + "\n" for line in kept)


def _damaged_model(tag: str, rel: str) -> IntegrityError:
    return IntegrityError(
        f"File '{rel}' of model '{tag}' is missing or does not match its recorded digest. "
        f"Check it with 'tiffin models verify {tag}', then import the model again.",
        detail={"tag": tag, "path": rel},
    )


def _damaged_bundle(bundle: Bundle, rel: str) -> IntegrityError:
    return IntegrityError(
        f"File '{rel}' of bundle '{bundle.tag}' is missing or does not match its recorded "
        f"digest. Delete the bundle ('tiffin bundles delete {bundle.tag}') and build it again.",
        detail={"tag": str(bundle.tag), "path": rel},
    )


def _copy_checked(
    source: Path,
    target: Path,
    files: Mapping[str, FileEntry],
    *,
    manifest: str,
    progress: Progress | None,
    damaged: Callable[[str], IntegrityError],
) -> None:
    """Copy the stored item at ``source`` (its ``files`` and its manifest) to ``target``,
    checking every file's digest on the way."""
    target.mkdir(parents=True)
    shutil.copyfile(source / manifest, target / manifest)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    for rel, entry in sorted(files.items()):
        path = target / safe_relpath(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(source / rel, "rb") as stream, HashingWriter(path, entry.algorithm) as out:
                while n := stream.readinto(view):
                    out.write(view[:n])
                    if progress is not None:
                        progress(n)
        except FileNotFoundError:
            raise damaged(rel) from None
        if out.digest != entry.digest:
            raise damaged(rel)


def _make_readable(root: Path) -> None:
    """Directories 0755 and files 0644 (scripts 0755): the image's files belong to root,
    and the server, another user, must read them whatever umask wrote them here."""
    for directory, _, names in os.walk(root):
        os.chmod(directory, 0o755)  # noqa: S103 - readable by the image's user, on purpose
        for name in names:
            mode = 0o755 if name.endswith(".sh") else 0o644
            os.chmod(os.path.join(directory, name), mode)


def image_labels(info: BundleInfo) -> dict[str, str]:
    """The labels an image of the bundle carries (OCI annotation keys, and the bundle's
    tag and digest), given to the engine when it builds."""
    labels = {
        "org.opencontainers.image.title": info.name,
        "org.opencontainers.image.version": info.version,
        "org.opencontainers.image.created": info.created_at.isoformat(),
        "tiffin.bundle": str(info.tag),
        "tiffin.bundle.digest": info.digest,
        "tiffin.version": info.tiffin_version,
    }
    if info.description:
        labels["org.opencontainers.image.description"] = " ".join(info.description.split())
    return labels


def build_image(
    bundle: Bundle,
    *,
    models: ModelStore,
    options: ContainerOptions | None = None,
    engine: str | engines.Engine | None = None,
    image: str | None = None,
    on_output: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> str:
    """Build the bundle's container image: write its context to a temporary directory and
    build it with a container engine.

    Args:
        bundle: the bundle to containerize.
        models: the store holding the models the bundle pins.
        options: the image's options (default: the bundle spec's).
        engine: ``docker``, ``podman``, ``buildah``, or an ``Engine`` (default: the first
            of them on PATH).
        image: the reference to tag the image with (default: ``default_image``).
        on_output: called with each line the engine prints.
        progress: called with the number of bytes copied into the context.

    Returns:
        The image reference.

    Raises:
        DeployError: no engine is found, or the build fails.
        ModelNotFound, IntegrityError, InvalidArgument: as ``write_context``.

    Example:
        build_image(bundle, models=ModelStore.default(), engine="docker")   # 'iris:2026...'
    """
    found = engine if isinstance(engine, engines.Engine) else engines.find_engine(engine)
    image = check_image(image) if image is not None else default_image(bundle.info)
    with tempfile.TemporaryDirectory(prefix="tiffin-image-") as scratch:
        context = write_context(
            bundle, Path(scratch) / "context", models=models, options=options, progress=progress
        )
        engines.build(found, context, image, labels=image_labels(bundle.info), on_output=on_output)
    return image
