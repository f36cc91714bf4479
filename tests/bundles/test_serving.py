"""``tiffin serve NAME[:VERSION]``: a bundle served from anywhere, with exactly its models."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.bundles.project import iris_model, quickstart_project
from tests.server.conftest import TIFFIN, Server, environment, start_server, wait_for_url
from tiffin.bundles import Bundle, BundleStore
from tiffin.bundles.build import build
from tiffin.bundles.serving import find_bundle
from tiffin.cli import cli
from tiffin.models import ModelStore

IRIS_ROW = {"features": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def built(tmp_path: Path, store: ModelStore) -> Bundle:
    iris_model(store)
    project = quickstart_project(tmp_path / "project")
    return build(project, bundles=BundleStore(store.home), models=store)


def predict(server: Server) -> httpx.Response:
    return httpx.post(f"{server.url}/predict", json=IRIS_ROW, timeout=10)


def test_a_bundle_is_served_from_another_directory(
    tmp_path: Path, home: Path, built: Bundle
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = start_server(elsewhere, "quickstart:latest", "--log-format", "json", home=home)
    try:
        response = predict(server)
        assert response.status_code == 200
        assert response.json() == ["setosa"]
        assert (
            f"Serving {built.tag} at {server.url} with 1 worker"
            in (elsewhere / "serve.out").read_text()
        )
    finally:
        assert server.stop() == 0


def test_the_bundle_runs_its_own_source_not_the_current_directory(
    tmp_path: Path, home: Path, built: Bundle
) -> None:
    # a project directory whose service.py now answers differently, and another model
    project = tmp_path / "project"
    source = (project / "service.py").read_text()
    (project / "service.py").write_text(source.replace("CLASSES[int(label)]", '"changed"'))
    newer = iris_model(ModelStore(home))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(project / "service.py", elsewhere / "service.py")
    server = start_server(elsewhere, str(built.tag), home=home)
    try:
        assert predict(server).json() == ["setosa"]
    finally:
        server.stop()
    assert str(newer.tag) != built.info.models[0].tag


def test_a_spawned_worker_pins_the_models_too(tmp_path: Path, home: Path, built: Bundle) -> None:
    newer = iris_model(ModelStore(home))  # iris:latest now means another version
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**environment(home), "TIFFIN_START_METHOD": "spawn", "TIFFIN_LOG_FORMAT": "json"}
    with (elsewhere / "serve.out").open("wb") as out, (elsewhere / "serve.err").open("wb") as err:
        process = subprocess.Popen(
            [str(TIFFIN), "serve", "quickstart", "--host", "127.0.0.1", "--port", "0"],
            cwd=elsewhere,
            stdout=out,
            stderr=err,
            env=env,
        )
    server = Server("", process, elsewhere / "serve.out", elsewhere / "serve.err")
    try:
        server.url = wait_for_url(process, server.stdout, server.stderr)
        info = httpx.get(f"{server.url}/readyz", timeout=10)
        assert info.status_code in (200, 503)
        ModelStore(home).delete(newer.tag)  # were it used, loading would fail now
        assert predict(server).json() == ["setosa"]
    finally:
        assert server.stop() == 0


def test_a_missing_model_stops_the_server_before_it_starts(
    tmp_path: Path, home: Path, built: Bundle
) -> None:
    ModelStore(home).delete(built.info.models[0].tag)
    result = CliRunner().invoke(cli, ["--home", str(home), "serve", str(built.tag)])
    assert result.exit_code == 3
    assert result.stderr == (
        f"Error: Bundle '{built.tag}' was built with model '{built.info.models[0].tag}', which "
        f"is not in the model store at {home}. Import it ('tiffin models import FILE') or point "
        "TIFFIN_HOME at the store that has it.\n"
    )


def test_a_model_whose_files_changed_is_refused(home: Path, built: Bundle) -> None:
    pin = built.info.models[0]
    model = ModelStore(home).get(pin.tag)
    manifest = model.path / "model.yaml"
    # the model was replaced in place: different files, consistent manifest
    text = manifest.read_text()
    first = next(iter(model.info.files.values())).digest
    manifest.write_text(text.replace(first, "f" * 64))
    result = CliRunner().invoke(cli, ["--home", str(home), "serve", "quickstart"])
    assert result.exit_code == 8
    assert result.stderr.startswith(
        f"Error: Model '{pin.tag}' is not the one bundle '{built.tag}' was built with: its files' "
        "digest is "
    )
    assert result.stderr.endswith(
        "Restore that model version, or build the bundle again to serve this one.\n"
    )


def test_reload_is_refused_for_a_bundle(home: Path, built: Bundle) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "serve", "quickstart", "--reload"])
    assert result.exit_code == 2
    assert "is a built bundle; --reload watches source" in result.stderr


def test_local_source_wins_over_a_bundle_of_the_same_name(
    tmp_path: Path, home: Path, built: Bundle
) -> None:
    store = BundleStore(home)
    assert find_bundle("quickstart:latest", tmp_path, store) == built
    assert find_bundle("quickstart", tmp_path, store) == built
    (tmp_path / "quickstart.py").write_text("")
    assert find_bundle("quickstart:latest", tmp_path, store) is None
    assert find_bundle("service:Iris", tmp_path, store) is None  # no such bundle
    assert find_bundle("path/to/file.py:Iris", tmp_path, store) is None


def test_serve_pulls_a_bundle_it_lacks_from_the_remote_setting(
    tmp_path: Path, home: Path, built: Bundle
) -> None:
    remote = (tmp_path / "shared").as_uri()
    BundleStore(home).push(built.tag, remote, ModelStore(home))
    fresh, elsewhere = tmp_path / "fresh-home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**environment(fresh), "TIFFIN_REMOTE": remote}
    with (elsewhere / "serve.out").open("wb") as out, (elsewhere / "serve.err").open("wb") as err:
        process = subprocess.Popen(
            [str(TIFFIN), "serve", str(built.tag), "--host", "127.0.0.1", "--port", "0"],
            cwd=elsewhere,
            stdout=out,
            stderr=err,
            env=env,
        )
    server = Server("", process, elsewhere / "serve.out", elsewhere / "serve.err")
    try:
        server.url = wait_for_url(process, server.stdout, server.stderr)
        assert predict(server).json() == ["setosa"]
    finally:
        assert server.stop() == 0
    # what it served is now in the fresh home: the bundle and exactly its model
    assert BundleStore(fresh).get(built.tag).info.digest == built.info.digest
    assert [str(m.tag) for m in ModelStore(fresh).list()] == [built.info.models[0].tag]
