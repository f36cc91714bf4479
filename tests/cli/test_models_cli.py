"""``tiffin models ...``: what a person and a script see, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from tiffin.cli import cli
from tiffin.exceptions import (
    Conflict,
    CorruptArchive,
    IntegrityError,
    InvalidArgument,
    InvalidTag,
    ModelNotFound,
)
from tiffin.models import Model, ModelStore

TIFFIN = Path(sys.executable).with_name("tiffin")


def run(home: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, ["--home", str(home), *args], input=input, catch_exceptions=False
    )


@pytest.fixture
def saved(store: ModelStore) -> list[Model]:
    first = store.save("iris", {"w": np.arange(4.0)}, metadata={"acc": 0.9}, labels={"team": "ml"})
    second = store.save("iris", {"w": np.arange(8.0)}, labels={"team": "ml", "stage": "dev"})
    other = store.save("churn", [1, 2, 3])
    return [first, second, other]


def test_list_shows_a_table_with_aliases_and_labels(
    home: Path, store: ModelStore, saved: list[Model]
) -> None:
    store.alias(saved[0].tag, "production")
    result = run(home, "models", "list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TAG", "FRAMEWORK", "SIZE", "CREATED", "ALIASES", "LABELS"]
    assert [line.split()[0] for line in lines[1:]] == [str(m.tag) for m in (saved[2], *saved[:2])]
    first_row = next(line for line in lines if line.startswith(str(saved[0].tag)))
    assert "production" in first_row
    assert "team=ml" in first_row


def test_list_as_json_filters_by_name_and_label(
    home: Path, saved: list[Model], store: ModelStore
) -> None:
    store.alias(saved[1].tag, "staging")
    result = run(home, "models", "list", "iris", "--label", "stage=dev", "-o", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [item["tag"] for item in data] == [str(saved[1].tag)]
    assert data[0]["aliases"] == ["staging"]
    assert data[0]["labels"] == {"team": "ml", "stage": "dev"}
    assert set(data[0]["files"]) == {"model.pkl"}


def test_list_of_an_empty_store_says_how_to_save(home: Path) -> None:
    result = run(home, "models", "list")
    assert result.exit_code == 0
    assert result.stdout == "No models. Save one with tiffin.models.save(name, model).\n"
    result = run(home, "models", "list", "-o", "json")
    assert json.loads(result.stdout) == []


def test_bad_label_filter_is_one_line_and_exit_2(home: Path) -> None:
    result = run(home, "models", "list", "--label", "team")
    assert result.exit_code == InvalidArgument.exit_code == 2
    assert result.stderr == (
        "Error: --label 'team' is not KEY=VALUE. Write it like --label team=ml.\n"
    )


def test_get_prints_yaml_and_json(home: Path, saved: list[Model]) -> None:
    result = run(home, "models", "get", "iris")
    assert result.exit_code == 0
    assert f"tag: {saved[1].tag}\n" in result.stdout
    assert "blake3:" in result.stdout
    data = json.loads(run(home, "models", "get", str(saved[0].tag), "-o", "json").stdout)
    assert data["metadata"] == {"acc": 0.9}
    assert data["framework"]["name"] == "pickle"
    assert data["path"] == str(saved[0].path)


def test_get_missing_model_exit_code_and_message(home: Path, saved: list[Model]) -> None:
    result = run(home, "models", "get", "iris:nope")
    assert result.exit_code == ModelNotFound.exit_code == 3
    assert result.stdout == ""
    assert result.stderr == (
        "Error: Model 'iris:nope' not found. Run 'tiffin models list iris' to see saved versions.\n"
    )
    result = run(home, "models", "get", "ghost")
    assert result.stderr == (
        "Error: No model named 'ghost'. Run 'tiffin models list' to see saved models.\n"
    )


def test_bad_tag_is_reported(home: Path) -> None:
    result = run(home, "models", "get", "Iris")
    assert result.exit_code == InvalidTag.exit_code
    assert result.stderr.startswith("Error: The name in tag 'Iris' contains 'I'.")


def test_alias_set_move_list_remove(home: Path, saved: list[Model], store: ModelStore) -> None:
    first, second = saved[0].tag, saved[1].tag
    result = run(home, "models", "alias", str(first), "production")
    assert result.exit_code == 0
    assert result.stdout == f"iris:production -> {first}\n"
    assert run(home, "models", "alias", "iris", "production").stdout == (
        f"iris:production -> {second}\n"
    )
    assert json.loads(run(home, "models", "alias", "iris", "-o", "json").stdout) == {
        "production": second.version
    }
    table = run(home, "models", "alias", "iris").stdout
    assert f"iris:production  {second.version}" in table
    assert run(home, "models", "alias", "iris:production", "--remove").stdout == (
        "Removed alias iris:production\n"
    )
    assert store.aliases("iris") == {}
    assert run(home, "models", "alias", "iris").stdout == "'iris' has no aliases.\n"
    missing = run(home, "models", "alias", "iris:production", "--remove")
    assert missing.exit_code == ModelNotFound.exit_code
    assert "'iris:production' is not an alias." in missing.stderr


def test_alias_argument_mistakes(home: Path, saved: list[Model]) -> None:
    result = run(home, "models", "alias", "iris:production")
    assert result.exit_code == 2
    assert "Give the alias to set" in result.stderr
    result = run(home, "models", "alias", "iris", "--remove")
    assert result.exit_code == 2
    assert "--remove takes one argument" in result.stderr


def test_delete_asks_then_deletes(home: Path, saved: list[Model], store: ModelStore) -> None:
    tag = saved[0].tag
    declined = run(home, "models", "delete", str(tag), input="n\n")
    assert declined.exit_code == 1
    assert store.get(tag) == saved[0]
    accepted = run(home, "models", "delete", str(tag), input="y\n")
    assert accepted.exit_code == 0
    assert accepted.stdout == f"Deleted {tag}\n"
    assert [m.tag for m in store.list("iris")] == [saved[1].tag]


def test_delete_of_an_aliased_version_needs_force(
    home: Path, saved: list[Model], store: ModelStore
) -> None:
    store.alias(saved[1].tag, "production")
    refused = run(home, "models", "delete", "iris:production", input="y\n")
    assert refused.exit_code == Conflict.exit_code == 4  # refused before asking
    assert refused.stderr == (
        f"Error: Model '{saved[1].tag}' is aliased as 'iris:production'. Move the alias first "
        "('tiffin models alias <tag> production'), or delete with --force to remove the "
        "aliases too.\n"
    )
    assert store.get("iris:production") == saved[1]
    forced = run(home, "models", "delete", "iris:production", "--yes", "--force")
    assert forced.exit_code == 0
    assert store.aliases("iris") == {}
    assert [m.tag for m in store.list("iris")] == [saved[0].tag]


def test_export_then_import_into_another_home(
    home: Path, tmp_path: Path, saved: list[Model]
) -> None:
    archive = tmp_path / "iris.tar.gz"
    result = run(home, "models", "export", "iris", str(archive))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Exported {saved[1].tag} to {archive} (")
    other = tmp_path / "other-home"
    result = run(other, "models", "import", str(archive))
    assert result.exit_code == 0
    assert result.stdout == f"Imported {saved[1].tag}\n"
    loaded = ModelStore(other).get("iris").load()
    assert np.array_equal(loaded["w"], np.arange(8.0))
    assert run(other, "models", "verify", "iris").stdout == (
        f"{saved[1].tag}: 1 file(s) match their digest\n"
    )


def test_import_of_a_corrupt_archive_writes_nothing(home: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"this is not a tar archive" * 40)
    result = run(home, "models", "import", str(bogus))
    assert result.exit_code == CorruptArchive.exit_code == 5
    assert result.stderr.startswith(f"Error: Archive {bogus} is corrupt:")
    assert result.stderr.endswith("Nothing was imported; export it again from its source.\n")
    assert ModelStore(home).list() == []


def test_import_of_a_missing_file_is_a_usage_error(home: Path, tmp_path: Path) -> None:
    result = run(home, "models", "import", str(tmp_path / "nope.tar"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_verify_reports_a_tampered_file(home: Path, saved: list[Model]) -> None:
    (saved[0].path / "model.pkl").write_bytes(b"tampered")
    result = run(home, "models", "verify", str(saved[0].tag))
    assert result.exit_code == IntegrityError.exit_code == 8
    assert result.stderr == (
        f"Error: File 'model.pkl' of model '{saved[0].tag}' is missing or does not match its "
        f"recorded digest. Delete it with 'tiffin models delete {saved[0].tag}' and save or "
        "import it again.\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["models"],
        ["models", "list"],
        ["models", "get"],
        ["models", "delete"],
        ["models", "alias"],
        ["models", "export"],
        ["models", "import"],
        ["models", "verify"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ")


def _tiffin(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIFFIN_")}
    env["TIFFIN_HOME"] = str(home)
    return subprocess.run([str(TIFFIN), *args], capture_output=True, text=True, env=env, timeout=60)


def test_installed_command_version_errors_and_debug(home: Path) -> None:
    version = _tiffin(home, "--version")
    assert version.returncode == 0
    assert version.stdout.startswith("tiffin ")

    plain = _tiffin(home, "models", "get", "ghost")
    assert plain.returncode == 3
    assert plain.stderr == (
        "Error: No model named 'ghost'. Run 'tiffin models list' to see saved models.\n"
    )
    assert "Traceback" not in plain.stderr

    debug = _tiffin(home, "--debug", "models", "get", "ghost")
    assert debug.returncode == 3
    assert "Traceback (most recent call last)" in debug.stderr
    assert "tiffin.exceptions.ModelNotFound" in debug.stderr
    assert debug.stderr.endswith("Run 'tiffin models list' to see saved models.\n")


def test_bad_setting_in_environment_is_reported(home: Path) -> None:
    env = {**os.environ, "TIFFIN_HOME": str(home), "TIFFIN_DURABLE_WRITES": "maybe"}
    result = subprocess.run(
        [str(TIFFIN), "models", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "Error: Bad value for setting 'durable_writes' in the environment (TIFFIN_*):"
    )
