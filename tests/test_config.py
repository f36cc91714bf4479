"""Settings: the layers, their order, and a clear ConfigError for every bad source."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from tiffin import config
from tiffin.config import Settings, load
from tiffin.exceptions import ConfigError

KNOWN = "Known settings: " + ", ".join(sorted(Settings.model_fields)) + "."
ENV = "the environment (TIFFIN_*)"


@pytest.fixture
def fake_user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``~`` expands to a directory of the test's own."""
    user = tmp_path / "user"
    monkeypatch.setenv("HOME", str(user))
    return user


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


# -- defaults and the Settings object ----------------------------------------------------


def test_defaults_with_no_layer(fake_user_home: Path) -> None:
    settings = load()
    assert settings == Settings(home=fake_user_home / ".tiffin", debug=False, durable_writes=False)
    assert settings.home == fake_user_home / ".tiffin"
    assert settings.home.is_absolute()


def test_home_is_expanded_in_every_layer(fake_user_home: Path, tmp_path: Path) -> None:
    assert load(code={"home": "~/from-code"}).home == fake_user_home / "from-code"
    write(tmp_path, "tiffin.yaml", "settings:\n  home: ~/from-yaml\n")
    assert load(directory=tmp_path).home == fake_user_home / "from-yaml"
    assert load(environ={"TIFFIN_HOME": "~/from-env"}).home == fake_user_home / "from-env"
    assert load(flags={"home": "~/from-flags"}).home == fake_user_home / "from-flags"
    assert Settings(home=Path("~/direct")).home == fake_user_home / "direct"


def test_settings_are_frozen() -> None:
    settings = load(code={"debug": True})
    with pytest.raises(pydantic.ValidationError, match="Instance is frozen"):
        settings.debug = False
    changed = settings.model_copy(update={"debug": False})
    assert changed.debug is False
    assert settings.debug is True


def test_settings_refuse_unknown_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        Settings(colour="red")  # type: ignore[call-arg]


# -- the layers, each overriding the one before --------------------------------------------


def test_code_overrides_defaults(fake_user_home: Path) -> None:
    settings = load(code={"debug": True})
    assert settings.debug is True
    assert settings.home == fake_user_home / ".tiffin"


def test_each_layer_overrides_the_one_before(tmp_path: Path) -> None:
    code = {"home": "/from/code", "debug": True, "durable_writes": True}
    write(tmp_path, "tiffin.yaml", "settings:\n  home: /from/yaml\n  debug: false\n")
    environ = {"TIFFIN_HOME": "/from/env"}
    flags = {"home": "/from/flags"}

    assert load(code=code) == Settings(home=Path("/from/code"), debug=True, durable_writes=True)
    assert load(code=code, directory=tmp_path) == Settings(
        home=Path("/from/yaml"), debug=False, durable_writes=True
    )
    assert load(code=code, directory=tmp_path, environ=environ) == Settings(
        home=Path("/from/env"), debug=False, durable_writes=True
    )
    assert load(code=code, directory=tmp_path, environ=environ, flags=flags) == Settings(
        home=Path("/from/flags"), debug=False, durable_writes=True
    )


def test_flags_given_as_none_are_ignored() -> None:
    settings = load(environ={"TIFFIN_DEBUG": "true"}, flags={"debug": None, "home": None})
    assert settings.debug is True


def test_empty_environment_variables_are_ignored() -> None:
    settings = load(code={"debug": True}, environ={"TIFFIN_DEBUG": "", "TIFFIN_HOME": ""})
    assert settings.debug is True


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("true", True), ("yes", True), ("0", False), ("false", False), ("no", False)],
)
def test_environment_booleans(text: str, value: bool) -> None:
    assert load(environ={"TIFFIN_DURABLE_WRITES": text}).durable_writes is value


def test_other_tiffin_variables_are_not_settings() -> None:
    settings = load(environ={"TIFFIN_TEST_REQUIRE_ALL": "1", "TIFFIN_COLOUR": "red"})
    assert settings == load()


def test_pyproject_is_read_when_there_is_no_tiffin_yaml(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[tool.tiffin.settings]\nhome = "/from/toml"\ndebug = true\n')
    settings = load(directory=tmp_path)
    assert settings.home == Path("/from/toml")
    assert settings.debug is True


def test_pyproject_is_ignored_when_there_is_a_tiffin_yaml(tmp_path: Path) -> None:
    write(tmp_path, "pyproject.toml", '[tool.tiffin.settings]\nhome = "/from/toml"\ndebug = true\n')
    write(tmp_path, "tiffin.yaml", "settings:\n  home: /from/yaml\n")
    settings = load(directory=tmp_path)
    assert settings.home == Path("/from/yaml")
    assert settings.debug is False
    # even a tiffin.yaml with no settings at all shadows pyproject.toml
    write(tmp_path, "tiffin.yaml", "service: service:Iris\n")
    assert load(directory=tmp_path).debug is False


@pytest.mark.parametrize(
    "text",
    ['[project]\nname = "x"\n', "[tool.ruff]\nline-length = 100\n", "[tool.tiffin]\n", ""],
)
def test_pyproject_without_tiffin_settings_gives_defaults(tmp_path: Path, text: str) -> None:
    write(tmp_path, "pyproject.toml", text)
    assert load(directory=tmp_path) == load()


@pytest.mark.parametrize("text", ["", "settings:\n", "include: ['*.py']\n", "# nothing\n"])
def test_tiffin_yaml_without_settings_gives_defaults(tmp_path: Path, text: str) -> None:
    write(tmp_path, "tiffin.yaml", text)
    assert load(directory=tmp_path) == load()


def test_a_directory_with_no_files_gives_defaults(tmp_path: Path) -> None:
    assert load(directory=tmp_path) == load()


def test_no_directory_reads_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "tiffin.yaml", "settings:\n  colour: red\n")
    monkeypatch.chdir(tmp_path)
    assert load() == Settings()


def test_current_reads_the_working_directory_and_environment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "tiffin.yaml", "settings:\n  debug: true\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "home"))
    config.current.cache_clear()
    try:
        settings = config.current()
        assert settings.debug is True
        assert settings.home == tmp_path / "home"
        monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "elsewhere"))
        assert config.current() is settings
    finally:
        config.current.cache_clear()


# -- bad sources -----------------------------------------------------------------------------


def test_unknown_key_in_tiffin_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "tiffin.yaml", "settings:\n  colour: red\n")
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path)
    source = f"{path} (settings:)"
    assert caught.value.message == f"Unknown setting 'colour' in {source}. {KNOWN}"
    assert caught.value.detail == {
        "key": "colour",
        "source": source,
        "problem": "Extra inputs are not permitted",
    }
    assert caught.value.exit_code == 2


def test_unknown_key_in_pyproject(tmp_path: Path) -> None:
    path = write(tmp_path, "pyproject.toml", "[tool.tiffin.settings]\ncolour = 'red'\n")
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path)
    assert caught.value.message == (
        f"Unknown setting 'colour' in {path} ([tool.tiffin.settings]). {KNOWN}"
    )


def test_unknown_key_in_flags() -> None:
    with pytest.raises(ConfigError) as caught:
        load(flags={"colour": "red"})
    assert caught.value.message == f"Unknown setting 'colour' in command-line flags. {KNOWN}"
    assert caught.value.detail["source"] == "command-line flags"


def test_unknown_key_in_code() -> None:
    with pytest.raises(ConfigError) as caught:
        load(code={"wrokers": 2})
    assert caught.value.message == f"Unknown setting 'wrokers' in code arguments. {KNOWN}"


def test_bad_boolean_in_the_environment() -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={"TIFFIN_DURABLE_WRITES": "maybe"})
    assert caught.value.message == (
        f"Bad value for setting 'durable_writes' in {ENV}: Input should be a valid boolean, "
        f"unable to interpret input. Fix it in {ENV}."
    )
    assert caught.value.detail["key"] == "durable_writes"


def test_bad_value_in_a_lower_layer_is_reported_even_when_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "tiffin.yaml", "settings:\n  debug: [1, 2]\n")
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path, flags={"debug": True})
    source = f"{path} (settings:)"
    assert caught.value.message == (
        f"Bad value for setting 'debug' in {source}: Input should be a valid boolean. "
        f"Fix it in {source}."
    )


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "tiffin.yaml", "settings: {debug: [}\n")
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path)
    message = caught.value.message
    assert message.startswith(f"{path} is not valid YAML (")
    assert message.endswith("). Fix the file's syntax.")
    assert caught.value.detail == {"source": str(path)}


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just words\n", "str")])
def test_yaml_that_is_not_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, "tiffin.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path)
    assert caught.value.message == f"{path} must hold a mapping of keys, not {kind}."


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "pyproject.toml", "[tool.tiffin\nx = \n")
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path)
    message = caught.value.message
    assert message.startswith(f"{path} is not valid TOML (")
    assert message.endswith("). Fix the file's syntax.")


@pytest.mark.parametrize("text", ["settings: [debug]\n", "settings: 5\n", "settings: on\n"])
def test_yaml_settings_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "tiffin.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path)
    assert caught.value.message == (
        f"The settings in {path} (settings:) must be a mapping of setting names to values."
    )


@pytest.mark.parametrize(
    "text",
    [
        "[tool.tiffin]\nsettings = 5\n",
        "[tool.tiffin]\nsettings = ['debug']\n",
        "[tool]\ntiffin = 5\n",
    ],
)
def test_pyproject_settings_not_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "pyproject.toml", text)
    with pytest.raises(ConfigError) as caught:
        load(directory=tmp_path)
    assert caught.value.message == (
        f"The settings in {path} ([tool.tiffin.settings]) must be a mapping of setting names "
        "to values."
    )


def test_errors_leave_the_files_alone(tmp_path: Path) -> None:
    text = "settings:\n  colour: red\n"
    path = write(tmp_path, "tiffin.yaml", text)
    with pytest.raises(ConfigError):
        load(directory=tmp_path)
    assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffin.yaml"]


def test_list_settings_from_the_environment_are_comma_separated() -> None:
    settings = load(environ={"TIFFIN_API_KEYS": " k1, k2 ,,", "TIFFIN_CORS_ORIGINS": "*"})
    assert settings.api_keys == ("k1", "k2")
    assert settings.cors_origins == ("*",)


def test_server_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        load(environ={"TIFFIN_PORT": "70000"})
    assert caught.value.message.startswith(
        "Bad value for setting 'port' in the environment (TIFFIN_*): Input should be less than "
        "or equal to 65535."
    )


def test_tiffin_yaml_top_level_service_is_the_service_setting(tmp_path: Path) -> None:
    write(tmp_path, "tiffin.yaml", "service: service:Iris\nsettings:\n  workers: 2\n")
    assert load(directory=tmp_path) == load(flags={"service": "service:Iris", "workers": 2})
    assert load(directory=tmp_path, environ={"TIFFIN_SERVICE": "other:Svc"}).service == "other:Svc"
    write(tmp_path, "tiffin.yaml", "service: a:A\nsettings:\n  service: b:B\n")
    with pytest.raises(ConfigError, match="names the service twice"):
        load(directory=tmp_path)
