"""``tiffin.bundles.build``: what a bundle holds, its digest, and builds that refuse."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
import yaml

from tests.bundles.project import iris_model, quickstart_project
from tiffin.bundles import BundleStore
from tiffin.bundles.build import build, lock_requirements, select_files
from tiffin.exceptions import ConfigError, ModelNotFound, NotFound
from tiffin.models import ModelStore
from tiffin.storage.local import files_digest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return quickstart_project(tmp_path / "project")


def nothing_stored(bundles: BundleStore) -> bool:
    root = bundles.items.root
    staged = list((root / ".staging").iterdir()) if (root / ".staging").exists() else []
    return bundles.list() == [] and staged == []


def test_a_bundle_holds_source_pinned_models_and_a_lock_file(
    project: Path, store: ModelStore
) -> None:
    model = iris_model(store)
    bundles = BundleStore(store.home)
    bundle = build(project, bundles=bundles, models=store)
    info = bundle.info
    assert (bundle.tag.name, info.service, info.service_name) == (
        "quickstart",
        "service:Iris",
        "iris",
    )
    assert info.description == "Classifies iris flowers from four measurements in centimetres."
    assert info.labels == {"example": "quickstart"}
    assert (info.apis, info.tasks) == (["predict"], [])
    [pin] = info.models
    assert (pin.tag, pin.ref, pin.attribute) == (str(model.tag), "iris:latest", "model")
    assert pin.sha256 == files_digest(model.info.model_dump(mode="json")["files"])
    assert sorted(p.name for p in bundle.source.iterdir()) == ["service.py", "tiffin.yaml"]
    assert (bundle.source / "service.py").read_bytes() == (project / "service.py").read_bytes()
    lock = bundle.lock_file.read_text().splitlines()
    sklearn = importlib.metadata.version("scikit-learn")
    assert f"scikit-learn=={sklearn}" in lock
    assert f"numpy=={importlib.metadata.version('numpy')}" in lock
    # tiffin's own dependencies, and theirs, pinned too
    assert f"pydantic=={importlib.metadata.version('pydantic')}" in lock
    assert f"pydantic-core=={importlib.metadata.version('pydantic-core')}" in lock
    names = [line.split("==")[0] for line in lock]
    assert names == sorted(names)
    assert info.settings["timeout"] == 10  # from @tiffin.service(timeout=10)
    assert "home" not in info.settings
    manifest = yaml.safe_load((bundle.path / "bundle.yaml").read_text())
    assert set(manifest["files"]) >= {"src/service.py", "src/tiffin.yaml", "requirements.lock.txt"}
    bundles.verify(bundle.tag)


def test_building_unchanged_sources_twice_gives_the_same_digest(
    project: Path, store: ModelStore
) -> None:
    iris_model(store)
    bundles = BundleStore(store.home)
    first = build(project, bundles=bundles, models=store)
    second = build(project, bundles=bundles, models=store)
    assert first.tag != second.tag
    assert first.info.digest == second.info.digest
    (project / "service.py").write_text((project / "service.py").read_text() + "\n# changed\n")
    assert build(project, bundles=bundles, models=store).info.digest != first.info.digest


def test_a_new_model_version_changes_the_digest(project: Path, store: ModelStore) -> None:
    iris_model(store)
    bundles = BundleStore(store.home)
    first = build(project, bundles=bundles, models=store)
    newer = iris_model(store)
    second = build(project, bundles=bundles, models=store)
    assert second.info.models[0].tag == str(newer.tag)
    assert second.info.digest != first.info.digest


def test_include_and_exclude_with_the_default_excludes(tmp_path: Path) -> None:
    for rel in (
        "service.py",
        "lib/util.py",
        "lib/deep/more.py",
        "data/big.csv",
        "notes.ipynb",
        ".git/config",
        ".venv/bin/python",
        "lib/__pycache__/util.cpython-311.pyc",
        "pkg.egg-info/PKG-INFO",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    assert select_files(tmp_path, ["**"], ["data/", "*.ipynb"]) == [
        "lib/deep/more.py",
        "lib/util.py",
        "service.py",
    ]
    assert select_files(tmp_path, ["*.py"], []) == ["lib/deep/more.py", "lib/util.py", "service.py"]
    assert select_files(tmp_path, ["lib/*.py"], []) == ["lib/util.py"]
    assert select_files(tmp_path, ["lib/**"], ["deep/"]) == ["lib/util.py"]


def test_requirements_found_from_the_source_imports(project: Path, store: ModelStore) -> None:
    iris_model(store)
    spec = yaml.safe_load((project / "tiffin.yaml").read_text())
    del spec["python"]
    (project / "tiffin.yaml").write_text(yaml.safe_dump(spec))
    bundle = build(project, bundles=BundleStore(store.home), models=store)
    lock = bundle.lock_file.read_text().splitlines()
    assert bundle.info.python["requirements"] == "imports"
    assert f"numpy=={importlib.metadata.version('numpy')}" in lock  # service.py imports it
    # nothing imports sklearn, but the model was saved with it
    assert f"scikit-learn=={importlib.metadata.version('scikit-learn')}" in lock


def test_lock_follows_extras_and_refuses_what_is_not_installed() -> None:
    lock = lock_requirements(["uvicorn[standard]"])
    assert f"uvloop=={importlib.metadata.version('uvloop')}" in lock
    assert f"uvicorn=={importlib.metadata.version('uvicorn')}" in lock
    with pytest.raises(ConfigError) as caught:
        lock_requirements(["surely-not-installed-pkg>=1"])
    assert caught.value.message == (
        "'surely-not-installed-pkg>=1' (from the requirements) is not installed here, so its "
        "exact version cannot be locked. Install it (pip install 'surely-not-installed-pkg>=1'),"
        " or set 'python: lock: false' in tiffin.yaml to keep the requirements as written."
    )
    with pytest.raises(ConfigError, match="does not match the installed numpy"):
        lock_requirements(["numpy<0.1"])


def test_an_unknown_key_names_the_key_and_the_file_and_writes_nothing(
    project: Path, store: ModelStore
) -> None:
    iris_model(store)
    (project / "tiffin.yaml").write_text("service: service:Iris\nimage:\n  bsae: x\n")
    bundles = BundleStore(store.home)
    with pytest.raises(ConfigError) as caught:
        build(project, bundles=bundles, models=store)
    assert caught.value.message == (
        f"Unknown build key 'image.bsae' in {project / 'tiffin.yaml'}. Known keys here: base, "
        "python, setup_script, system_packages."
    )
    (project / "tiffin.yaml").write_text("service: service:Iris\nlabels: [a, b]\n")
    with pytest.raises(ConfigError, match=r"Bad value for build key 'labels' in .*tiffin.yaml"):
        build(project, bundles=bundles, models=store)
    assert nothing_stored(bundles)


def test_a_missing_entry_point_is_a_clear_error(project: Path, store: ModelStore) -> None:
    iris_model(store)
    bundles = BundleStore(store.home)
    (project / "tiffin.yaml").write_text("name: quickstart\n")
    with pytest.raises(ConfigError, match=r"No service to build in .*tiffin\.yaml\. Name it with"):
        build(project, bundles=bundles, models=store)
    (project / "tiffin.yaml").write_text("service: serv:Iris\n")
    with pytest.raises(NotFound, match=r"No module 'serv' in .*project \(looked for serv.py"):
        build(project, bundles=bundles, models=store)
    assert nothing_stored(bundles)


def test_a_model_that_does_not_exist_is_a_clear_error(project: Path, store: ModelStore) -> None:
    bundles = BundleStore(store.home)
    with pytest.raises(ModelNotFound) as caught:
        build(project, bundles=bundles, models=store)
    assert caught.value.message == (
        "Service 'iris' (Iris.model) needs model 'iris:latest', which is not in the model store "
        f"at {store.home}. Save it first (tiffin.models.save), import it ('tiffin models import "
        "FILE'), or point TIFFIN_HOME at the store that has it."
    )
    assert nothing_stored(bundles)


def test_a_missing_setup_script_or_requirements_file_is_named(
    project: Path, store: ModelStore
) -> None:
    iris_model(store)
    bundles = BundleStore(store.home)
    (project / "tiffin.yaml").write_text("service: service:Iris\nimage: {setup_script: s.sh}\n")
    with pytest.raises(ConfigError, match=r"image\.setup_script 's\.sh' does not exist"):
        build(project, bundles=bundles, models=store)
    (project / "tiffin.yaml").write_text(
        "service: service:Iris\npython: {requirements_file: req.txt}\n"
    )
    with pytest.raises(ConfigError, match=r"python\.requirements_file 'req\.txt' does not exist"):
        build(project, bundles=bundles, models=store)
    (project / "req.txt").write_text("numpy\n--index-url http://x\n")
    with pytest.raises(ConfigError, match="has the pip option '--index-url http://x'"):
        build(project, bundles=bundles, models=store)
    assert nothing_stored(bundles)


def test_a_build_that_fails_while_writing_leaves_nothing(project: Path, store: ModelStore) -> None:
    iris_model(store)
    bundles = BundleStore(store.home)
    os.mkfifo(project / "pipe")  # not a regular file: the store refuses it at commit
    (project / "tiffin.yaml").write_text("service: service:Iris\ninclude: ['*.py', 'pipe']\n")
    with pytest.raises(Exception, match="pipe"):
        build(project, bundles=bundles, models=store)
    assert nothing_stored(bundles)


def test_pyproject_tool_tiffin_is_read_when_there_is_no_tiffin_yaml(
    project: Path, store: ModelStore
) -> None:
    iris_model(store)
    (project / "tiffin.yaml").unlink()
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\ndependencies = ["numpy", "scikit-learn"]\n\n'
        '[tool.tiffin]\nservice = "service:Iris"\nname = "from-pyproject"\n\n'
        "[tool.tiffin.python]\nproject = true\n"
    )
    bundle = build(project, bundles=BundleStore(store.home), models=store)
    assert bundle.tag.name == "from-pyproject"
    assert bundle.info.python["requirements"] == "project"
    assert any(line.startswith("scikit-learn==") for line in bundle.lock_file.read_text().split())
