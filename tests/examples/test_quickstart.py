"""The quickstart that `make run` runs, and the README's tour, run as a user would."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tiffin.models import ModelStore

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIFFIN_")}
    env["TIFFIN_HOME"] = str(home)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_quickstart_trains_saves_and_lists(tmp_path: Path) -> None:
    home = tmp_path / "home"
    trained = subprocess.run(
        [sys.executable, str(ROOT / "examples/quickstart/train.py")],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=120,
        check=True,
    )
    model = ModelStore(home).get("iris")
    assert trained.stdout.startswith(f"Saved {model.tag} (sklearn, accuracy ")
    assert "Loaded it back: predicts class 0 for [5.1, 3.4, 1.5, 0.2]" in trained.stdout
    assert model.info.framework.name == "sklearn"
    assert model.info.labels == {"stage": "quickstart"}
    assert 0.9 <= model.info.metadata["accuracy"] <= 1.0

    listed = subprocess.run(
        ["tiffin", "models", "list", "iris"],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=60,
        check=True,
    )
    assert str(model.tag) in listed.stdout
    assert "stage=quickstart" in listed.stdout


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    script = "\n".join(_blocks(readme, "python"))
    subprocess.run(
        [sys.executable, "-c", script], cwd=work, env=_env(home), check=True, timeout=120
    )
    commands = [
        line[2:].split("  #")[0].strip()
        for block in _blocks(readme, "console")
        for line in block.splitlines()
        if line.startswith("$ tiffin ")
    ]
    assert len(commands) >= 8
    for command in commands:
        done = subprocess.run(
            shlex.split(command, comments=True),
            cwd=work,
            env=_env(home),
            input="y\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{command!r} failed: {done.stderr}"
    store = ModelStore(home)
    assert store.get("tokenizer").load().joinpath("vocab.txt").read_text() == "hello\nworld\n"
    assert store.aliases("iris") == {}  # the tour ends by deleting iris:production
