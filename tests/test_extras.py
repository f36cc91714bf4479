"""Optional packages load through one helper that names the extra to install."""

from __future__ import annotations

import json

import pytest

from tiffin.exceptions import MissingDependency
from tiffin.extras import import_optional


def test_an_installed_module_is_returned() -> None:
    assert import_optional("json", "json") is json


def test_a_missing_module_names_the_extra_and_the_purpose() -> None:
    with pytest.raises(MissingDependency) as caught:
        import_optional("tiffin_no_such_module", "fancy", purpose="to load model 'iris:v1'")
    error = caught.value
    assert error.message == (
        "The package 'tiffin_no_such_module' is needed to load model 'iris:v1' but is not "
        "installed. Run: pip install 'tiffin[fancy]'"
    )
    assert error.detail["module"] == "tiffin_no_such_module"
    assert error.detail["extra"] == "fancy"
    assert "tiffin_no_such_module" in error.detail["reason"]
    assert isinstance(error.__cause__, ImportError)
    assert error.exit_code == 6


def test_a_missing_module_without_a_purpose() -> None:
    with pytest.raises(MissingDependency) as caught:
        import_optional("tiffin_no_such_module.sub", "fancy")
    assert caught.value.message == (
        "The package 'tiffin_no_such_module.sub' is needed but is not installed. "
        "Run: pip install 'tiffin[fancy]'"
    )
