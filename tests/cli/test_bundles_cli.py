"""``tiffin build`` and ``tiffin bundles ...``: what a person and a script see, exit codes,
and archives that must not get in."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result

from tests.bundles.project import iris_model, quickstart_project
from tests.server.conftest import start_server
from tiffin.bundles import BundleStore
from tiffin.cli import cli
from tiffin.models import ModelStore


def run(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input)


@pytest.fixture
def project(tmp_path: Path, store: ModelStore) -> Path:
    iris_model(store)
    return quickstart_project(tmp_path / "project")


def test_build_list_get_and_delete(home: Path, project: Path) -> None:
    built = run(home, "build", "-C", str(project))
    assert built.exit_code == 0, built.output
    [bundle] = BundleStore(home).list()
    assert built.output.startswith(f"Built bundle {bundle.tag} in ")
    assert f"Serve it with 'tiffin serve {bundle.tag}'" in built.output
    listed = run(home, "bundles", "list")
    assert str(bundle.tag) in listed.output
    assert bundle.info.models[0].tag in listed.output
    as_json = json.loads(run(home, "bundles", "list", "--output", "json").output)
    assert [b["tag"] for b in as_json] == [str(bundle.tag)]
    got = json.loads(run(home, "bundles", "get", "quickstart", "--output", "json").output)
    assert got["digest"] == bundle.info.digest
    assert got["service"] == "service:Iris"
    deleted = run(home, "bundles", "delete", "quickstart", "--yes")
    assert deleted.output == f"Deleted {bundle.tag}\n"
    assert BundleStore(home).list() == []


def test_build_reports_json_with_its_duration(home: Path, project: Path) -> None:
    result = run(home, "build", "-C", str(project), "--output", "json", "--label", "run=1")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["labels"] == {"example": "quickstart", "run": "1"}
    assert data["seconds"] > 0


def test_build_errors_are_one_line_with_exit_codes(home: Path, tmp_path: Path) -> None:
    project = quickstart_project(tmp_path / "nomodel")
    result = run(home, "build", "-C", str(project))
    assert result.exit_code == 3
    assert result.stderr.startswith("Error: Service 'iris' (Iris.model) needs model 'iris:latest'")
    (project / "tiffin.yaml").write_text("service: service:Iris\nsettings: {workers: many}\n")
    result = run(home, "build", "-C", str(project))
    assert result.exit_code == 2
    assert "Error: Bad value for setting 'workers'" in result.stderr
    assert run(home, "build", "-C", str(project), "--label", "oops").stderr == (
        "Error: --label 'oops' is not KEY=VALUE. Write it like --label team=ml.\n"
    )
    assert BundleStore(home).list() == []


def test_export_then_import_on_a_clean_home_serves(
    home: Path, project: Path, tmp_path: Path
) -> None:
    assert run(home, "build", "-C", str(project)).exit_code == 0
    bundle = BundleStore(home).get("quickstart")
    archive = tmp_path / "quickstart.tar.gz"
    exported = run(home, "bundles", "export", "quickstart", str(archive))
    assert exported.exit_code == 0, exported.output
    assert "export them too with 'tiffin models export'" in exported.output
    model_archive = tmp_path / "iris.tar"
    assert (
        run(home, "models", "export", bundle.info.models[0].tag, str(model_archive)).exit_code == 0
    )

    clean = tmp_path / "clean-home"
    imported = run(clean, "bundles", "import", str(archive))
    assert imported.exit_code == 0, imported.output
    assert imported.output.endswith(f"Imported {bundle.tag}\n")
    assert BundleStore(clean).get(bundle.tag).info.digest == bundle.info.digest
    assert run(clean, "models", "import", str(model_archive)).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = start_server(elsewhere, str(bundle.tag), home=clean)
    try:
        response = httpx.post(
            f"{server.url}/predict", json={"features": [[6.7, 3.0, 5.2, 2.3]]}, timeout=10
        )
        assert response.json() == ["virginica"]
    finally:
        server.stop()


def test_an_archive_with_a_parent_path_is_refused_and_nothing_is_written(
    home: Path, project: Path, tmp_path: Path
) -> None:
    assert run(home, "build", "-C", str(project)).exit_code == 0
    bundle = BundleStore(home).get("quickstart")
    good = tmp_path / "good.tar"
    assert run(home, "bundles", "export", str(bundle.tag), str(good)).exit_code == 0
    evil = tmp_path / "evil.tar"
    with tarfile.open(good) as source, tarfile.open(evil, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            target.addfile(member, data)
        payload = b"owned"
        info = tarfile.TarInfo(f"{bundle.tag.name}-{bundle.tag.version}/../../escaped.txt")
        info.size = len(payload)
        target.addfile(info, io.BytesIO(payload))
    clean = tmp_path / "clean-home"
    result = run(clean, "bundles", "import", str(evil))
    assert result.exit_code == 5
    assert result.stderr.startswith(f"Error: Archive {evil} is unsafe")
    assert "escaped.txt" in result.stderr
    assert BundleStore(clean).list() == []
    assert not (tmp_path / "escaped.txt").exists()
    assert not any(clean.rglob("escaped.txt"))


def test_a_truncated_archive_is_refused(home: Path, project: Path, tmp_path: Path) -> None:
    assert run(home, "build", "-C", str(project)).exit_code == 0
    good = tmp_path / "good.tar"
    assert run(home, "bundles", "export", "quickstart", str(good)).exit_code == 0
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:1500])
    clean = tmp_path / "clean-home"
    result = run(clean, "bundles", "import", str(cut))
    assert result.exit_code == 5
    assert result.stderr.startswith(f"Error: Archive {cut} is corrupt")
    assert BundleStore(clean).list() == []


@pytest.mark.parametrize(
    "command",
    [
        ["build"],
        ["bundles"],
        ["bundles", "list"],
        ["bundles", "get"],
        ["bundles", "delete"],
        ["bundles", "export"],
        ["bundles", "import"],
        ["bundles", "verify"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")


def test_an_archive_whose_bundle_yaml_is_invalid_is_refused(
    home: Path, project: Path, tmp_path: Path
) -> None:
    assert run(home, "build", "-C", str(project)).exit_code == 0
    bundle = BundleStore(home).get("quickstart")
    good = tmp_path / "good.tar"
    assert run(home, "bundles", "export", str(bundle.tag), str(good)).exit_code == 0
    bad = tmp_path / "bad.tar"
    with tarfile.open(good) as source, tarfile.open(bad, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name.endswith("/bundle.yaml") and data is not None:
                manifest = yaml.safe_load(data.read())
                del manifest["service"]
                payload = yaml.safe_dump(manifest, sort_keys=False).encode()
                member.size = len(payload)
                data = io.BytesIO(payload)
            target.addfile(member, data)
    clean = tmp_path / "clean-home"
    result = run(clean, "bundles", "import", str(bad))
    assert result.exit_code == 5
    assert result.stderr == (
        f"Error: Archive {bad} is corrupt: its bundle.yaml has a bad 'service' (Field "
        "required). Nothing was imported; export it again from its source.\n"
    )
    assert BundleStore(clean).list() == []
