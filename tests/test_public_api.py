"""The public namespace: ``__all__`` sorted, complete and resolvable; ``import tiffin`` is light."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import tiffin
import tiffin.models

PUBLIC = [tiffin, tiffin.models]
HEAVY = ("numpy", "torch", "sklearn", "onnx", "onnxruntime", "xgboost", "pandas")


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_all_is_sorted_and_unique(module: ModuleType) -> None:
    assert module.__all__ == sorted(set(module.__all__))


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_every_name_in_all_resolves(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def _defined_by_tiffin(value: object) -> bool:
    if isinstance(value, ModuleType):
        return value.__name__.partition(".")[0] == "tiffin"
    origin = getattr(value, "__module__", None)
    return isinstance(origin, str) and origin.partition(".")[0] == "tiffin"


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_every_public_tiffin_attribute_is_in_all(module: ModuleType) -> None:
    unlisted = []
    for name, value in vars(module).items():
        if name.startswith("_") or name in module.__all__:
            continue
        if isinstance(value, ModuleType) and value.__name__ == f"{module.__name__}.{name}":
            continue  # a submodule that is not exported
        if _defined_by_tiffin(value):
            unlisted.append(name)
    assert unlisted == []


def test_errors_tags_and_settings_are_exported_at_the_top() -> None:
    from tiffin import config, exceptions, tag

    for name in exceptions.__all__:
        if name != "error_class":
            assert getattr(tiffin, name) is getattr(exceptions, name)
    assert tiffin.Tag is tag.Tag
    assert tiffin.Settings is config.Settings


def test_version_is_the_installed_distribution() -> None:
    assert tiffin.__version__ == importlib.metadata.version("tiffin")


def test_import_tiffin_is_light_and_has_no_side_effects(tmp_path: Path) -> None:
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import json, logging, sys\n"
        "import tiffin, tiffin.models\n"
        "print(json.dumps({'modules': sorted(sys.modules),"
        " 'handlers': len(logging.getLogger().handlers)}))\n"
    )
    env = {**os.environ, "TIFFIN_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    report = json.loads(done.stdout)
    heavy = [m for m in report["modules"] if m.partition(".")[0] in HEAVY]
    assert heavy == []
    assert "tiffin.models.store" in report["modules"]  # the import really ran
    assert report["handlers"] == 0
    assert not home.exists()
    assert list(work.iterdir()) == []
