"""The model store: saving, finding, validation of what is recorded, and crash safety."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest
import yaml
from pydantic import ValidationError

import tiffin
from tests.storage.legacy import as_sha256
from tiffin import config
from tiffin.exceptions import (
    FrameworkError,
    IntegrityError,
    InvalidArgument,
    InvalidTag,
    MissingDependency,
    ModelExists,
    ModelNotFound,
    TiffinError,
)
from tiffin.models import FileEntry, Model, ModelBuilder, ModelRef, ModelStore, Signature

VERSION = r"\d{8}-\d{6}-\d{3}-[a-z0-9]{8}"
PLAIN_ONLY = (
    "metadata holds plain data only (numbers, strings, booleans, None, lists and dicts). "
    "Convert it, e.g. with float() or str()."
)


class Predictor:
    """A picklable object with a ``predict`` method."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, x: float) -> float:
        return x * self.factor


class Unpicklable:
    def __reduce__(self) -> tuple[Any, ...]:
        raise ValueError("cannot pickle this")


def leftovers(store: ModelStore) -> list[str]:
    root = store.items.root
    return [
        p.name
        for folder in (root / ".staging", root / ".trash")
        if folder.is_dir()
        for p in folder.iterdir()
    ]


def assert_empty(store: ModelStore, name: str = "iris") -> None:
    """No model is visible, no directory for ``name``, nothing left in staging."""
    assert store.list() == []
    with pytest.raises(ModelNotFound, match=rf"^No model named '{name}'"):
        store.get(name)
    assert not (store.items.root / name).exists()
    assert leftovers(store) == []


def rewrite_manifest(model: Model, change: Any) -> None:
    path = model.path / "model.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


# -- save and get -------------------------------------------------------------------------


def test_save_and_get(store: ModelStore) -> None:
    before = datetime.now(UTC)
    model = store.save("iris", {"w": [1.0, 2.0]}, metadata={"acc": 0.97}, labels={"team": "ml"})
    after = datetime.now(UTC)

    assert repr(model) == f'Model(tag="{model.tag}")'
    assert model.tag.name == "iris"
    assert model.tag.version is not None
    assert re.fullmatch(VERSION, model.tag.version)
    assert model.path == store.home / "models" / "iris" / model.tag.version
    info = model.info
    assert (info.name, info.version) == ("iris", model.tag.version)
    assert info.tag == model.tag
    assert before <= info.created_at <= after
    assert info.framework.name == "pickle"
    assert info.framework.version is None
    assert info.python_version == platform.python_version()
    assert info.tiffin_version == importlib.metadata.version("tiffin")
    assert info.metadata == {"acc": 0.97}
    assert info.labels == {"team": "ml"}
    assert info.signatures == {}
    pickled = (model.path / "model.pkl").read_bytes()
    assert set(info.files) == {"model.pkl"}
    assert info.files["model.pkl"].algorithm == "blake3"
    assert info.files["model.pkl"].digest == blake3.blake3(pickled).hexdigest()
    assert info.files["model.pkl"].size == len(pickled) == info.size

    again = store.get(model.tag)
    assert again == model
    assert hash(again) == hash(model)
    assert again.info == info
    assert again.load() == {"w": [1.0, 2.0]}
    assert store.get(str(model.tag)).load() == {"w": [1.0, 2.0]}


def test_to_dict_is_json_ready(store: ModelStore) -> None:
    model = store.save("iris:v1", 1, metadata={"acc": 0.5})
    data = json.loads(json.dumps(model.to_dict()))
    assert data["tag"] == "iris:v1"
    assert data["path"] == str(model.path)
    assert data["metadata"] == {"acc": 0.5}
    assert data["files"]["model.pkl"]["size"] == model.info.size


def test_default_signatures_come_from_the_framework(store: ModelStore) -> None:
    model = store.save("clf", Predictor(2.0))
    assert model.info.signatures == {"predict": Signature(batchable=False, batch_dim=0)}
    assert model.load().predict(3.0) == 6.0


def test_large_buffers_round_trip(store: ModelStore) -> None:
    weights = np.arange(1 << 19, dtype=np.float64)  # 4 MiB: written out of band
    model = store.save("big", {"weights": weights, "name": "w"})
    assert set(model.info.files) == {"model.pkl", "buffers.bin"}
    loaded = model.load()
    np.testing.assert_array_equal(loaded["weights"], weights)
    store.verify(model.tag)


def test_list_filters_by_name_and_every_label(store: ModelStore) -> None:
    a1 = store.save("a", 1, labels={"team": "ml", "stage": "prod"})
    b1 = store.save("b", 2, labels={"team": "ml"})
    a2 = store.save("a", 3, labels={"team": "search", "stage": "prod"})
    assert store.list() == [a1, a2, b1]
    assert store.list("a") == [a1, a2]
    assert store.list("missing") == []
    assert store.list(labels={"team": "ml"}) == [a1, b1]
    assert store.list(labels={"team": "ml", "stage": "prod"}) == [a1]
    assert store.list("b", labels={"stage": "prod"}) == []
    assert store.list(labels={"stage": "prod"}) == [a1, a2]
    assert store.list(labels={}) == [a1, a2, b1]


def test_the_module_functions_use_tiffin_home(home: Path, tmp_path: Path) -> None:
    model = tiffin.models.save("iris:v1", [1, 2, 3], labels={"team": "ml"})
    assert model.path.is_relative_to(home)
    assert tiffin.models.get("iris").load() == [1, 2, 3]
    assert tiffin.models.list(labels={"team": "ml"}) == [model]
    assert tiffin.models.alias("iris:v1", "prod") == model.tag
    assert tiffin.models.aliases("iris") == {"prod": "v1"}
    tiffin.models.unalias("iris", "prod")
    assert tiffin.models.aliases("iris") == {}
    with tiffin.models.create("vocab") as builder:
        (builder.path / "vocab.txt").write_text("a b c")
    assert builder.model == tiffin.models.get("vocab")
    assert tiffin.models.delete("iris:v1") == model.tag
    assert [m.tag.name for m in tiffin.models.list()] == ["vocab"]


def test_default_store_follows_durable_writes(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelStore.default().items.durable is False
    monkeypatch.setenv("TIFFIN_DURABLE_WRITES", "1")
    config.current.cache_clear()
    store = ModelStore.default()
    assert store.home == home
    assert store.items.durable is True


def test_export_and_import_into_a_second_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiffin.models.save("iris", Predictor(3.0), metadata={"acc": 0.9})
    path = tiffin.models.export("iris:latest", tmp_path / "iris.tar.gz")

    second = tmp_path / "second-home"
    monkeypatch.setenv("TIFFIN_HOME", str(second))
    config.current.cache_clear()
    assert tiffin.models.list() == []
    imported = tiffin.models.import_(path)
    assert imported.tag == model.tag
    assert imported.path.is_relative_to(second)
    assert imported.info == model.info
    assert imported.load().predict(2.0) == model.load().predict(2.0) == 6.0
    assert tiffin.models.list() == [imported]
    assert tiffin.models.import_(path) == imported


def test_a_model_saved_before_blake3_loads_verifies_and_moves(
    store: ModelStore, tmp_path: Path
) -> None:
    """A model.yaml whose file entries carry a sha256, as tiffin wrote them before BLAKE3,
    is read, checked with sha256, exported and imported as it is."""
    model = as_sha256(store, store.save("iris:v1", Predictor(3.0)))
    pickled = (model.path / "model.pkl").read_bytes()
    assert model.info.files["model.pkl"].model_dump() == {
        "sha256": hashlib.sha256(pickled).hexdigest(),
        "size": len(pickled),
    }
    assert model.load().predict(2.0) == 6.0
    assert store.verify("iris:v1") == model

    clean = ModelStore(tmp_path / "clean-home")
    imported = clean.import_(store.export("iris:v1", tmp_path / "iris.tar.gz"))
    assert imported.info == model.info
    assert (imported.path / "model.yaml").read_bytes() == (model.path / "model.yaml").read_bytes()
    assert clean.verify(imported.tag).load().predict(2.0) == 6.0

    last = len(pickled) - 1
    (imported.path / "model.pkl").write_bytes(pickled[:last] + bytes([pickled[last] ^ 1]))
    with pytest.raises(IntegrityError) as caught:
        clean.verify("iris:v1")
    assert caught.value.message == (
        "File 'model.pkl' of model 'iris:v1' is missing or does not match its recorded digest. "
        "Delete it with 'tiffin models delete iris:v1' and save or import it again."
    )


@pytest.mark.parametrize(
    ("entry", "has"),
    [
        ({"size": 3}, "neither"),
        ({"blake3": "a" * 64, "sha256": "b" * 64, "size": 3}, "blake3 and sha256"),
    ],
    ids=["neither", "both"],
)
def test_a_file_entry_needs_exactly_one_digest(
    store: ModelStore, entry: dict[str, Any], has: str
) -> None:
    model = store.save("iris:v1", {"w": 1})
    rewrite_manifest(model, lambda data: data["files"].update({"model.pkl": entry}))
    problem = f"a file entry needs exactly one digest, blake3 or sha256; it has {has}"
    with pytest.raises(TiffinError) as caught:
        store.get("iris:v1")
    assert caught.value.message == (
        f"The model.yaml of 'iris:v1' is damaged (Value error, {problem}). Delete it with "
        "'tiffin models delete iris:v1' and save it again."
    )
    with pytest.raises(ValidationError) as invalid:
        FileEntry.model_validate(entry)
    assert invalid.value.errors()[0]["msg"] == f"Value error, {problem}"


# -- what is recorded: metadata, labels, signatures -----------------------------------------


def test_metadata_from_numpy_is_converted_to_plain_data(store: ModelStore) -> None:
    metadata = {
        "acc": np.float32(0.5),
        "loss": np.float64(0.25),
        "epochs": np.int64(10),
        "small": np.uint8(3),
        "ok": np.bool_(True),
        "label": np.str_("iris"),
        "scores": (np.float64(1.5), 2, None),
        "nested": {"deeper": [np.int32(1), {"x": np.float16(2.0)}]},
    }
    model = store.save("iris", 1, metadata=metadata)
    expected = {
        "acc": 0.5,
        "loss": 0.25,
        "epochs": 10,
        "small": 3,
        "ok": True,
        "label": "iris",
        "scores": [1.5, 2, None],
        "nested": {"deeper": [1, {"x": 2.0}]},
    }
    for found in (model.info.metadata, store.get("iris").info.metadata):
        assert found == expected
        assert type(found["epochs"]) is int
        assert type(found["acc"]) is float
        assert type(found["ok"]) is bool
        assert type(found["label"]) is str
    text = (model.path / "model.yaml").read_text()
    assert "numpy" not in text
    assert "!!" not in text


@pytest.mark.parametrize(
    ("metadata", "field", "kind"),
    [
        ({"ids": {1, 2}}, "metadata['ids']", "set"),
        ({"raw": b"abc"}, "metadata['raw']", "bytes"),
        ({"when": datetime(2026, 1, 1)}, "metadata['when']", "datetime"),
        ({"scores": np.array([1.0, 2.0])}, "metadata['scores']", "ndarray"),
        ({"a": {"b": [1, object()]}}, "metadata['a']['b'][1]", "object"),
        ({"path": Path("/tmp")}, "metadata['path']", "PosixPath"),
    ],
)
def test_metadata_that_is_not_plain_is_refused(
    store: ModelStore, metadata: dict[str, Any], field: str, kind: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris", 1, metadata=metadata)
    assert caught.value.message == f"{field} is a {kind}; {PLAIN_ONLY}"
    assert caught.value.detail == {"field": field, "type": kind}
    assert_empty(store)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({1: "a"}, "metadata has the key 1 of type int; keys must be strings."),
        (
            {"a": {(1, 2): "b"}},
            "metadata['a'] has the key (1, 2) of type tuple; keys must be strings.",
        ),
        (
            {"a": [{None: 1}]},
            "metadata['a'][0] has the key None of type NoneType; keys must be strings.",
        ),
    ],
)
def test_metadata_keys_must_be_strings(
    store: ModelStore, metadata: dict[Any, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris", 1, metadata=metadata)
    assert caught.value.message == message
    assert_empty(store)


def test_metadata_must_be_a_mapping(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris", 1, metadata=[("acc", 1.0)])  # type: ignore[arg-type]
    assert caught.value.message == "metadata must be a dict, not list."
    assert_empty(store)


def test_valid_labels(store: ModelStore) -> None:
    labels = {"team": "ml", "app.kubernetes.io/name": "iris", "x" * 63: "", "k": "v" * 255}
    assert store.save("iris", 1, labels=labels).info.labels == labels


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (
            {"team name": "ml"},
            "Label key 'team name' is not valid: use letters, digits, '.', '_', '/' and '-', "
            "start with a letter or digit, at most 63 characters.",
        ),
        (
            {"-team": "ml"},
            "Label key '-team' is not valid: use letters, digits, '.', '_', '/' and '-', "
            "start with a letter or digit, at most 63 characters.",
        ),
        (
            {"x" * 64: "ml"},
            f"Label key '{'x' * 64}' is not valid: use letters, digits, '.', '_', '/' and '-', "
            "start with a letter or digit, at most 63 characters.",
        ),
        (
            {1: "ml"},
            "Label key 1 is not valid: use letters, digits, '.', '_', '/' and '-', "
            "start with a letter or digit, at most 63 characters.",
        ),
        (
            {"team": 1},
            "Label 'team' must have a string value of at most 255 characters, not int.",
        ),
        (
            {"team": "v" * 256},
            "Label 'team' must have a string value of at most 255 characters, not 256 characters.",
        ),
        (["team"], "labels must be a dict of strings to strings, not list."),
    ],
)
def test_bad_labels(store: ModelStore, labels: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris", 1, labels=labels)
    assert caught.value.message == message
    assert_empty(store)


def test_signatures_in_list_form(store: ModelStore) -> None:
    model = store.save("iris", Predictor(1.0), signatures=["predict", "predict_proba"])
    assert model.info.signatures == {
        "predict": Signature(),
        "predict_proba": Signature(),
    }


def test_signatures_in_dict_form(store: ModelStore) -> None:
    model = store.save(
        "iris",
        Predictor(1.0),
        signatures={"predict": {"batchable": True, "batch_dim": 1}, "score": Signature()},
    )
    assert model.info.signatures == {
        "predict": Signature(batchable=True, batch_dim=1),
        "score": Signature(batchable=False, batch_dim=0),
    }
    text = (model.path / "model.yaml").read_text()
    assert yaml.safe_load(text)["signatures"]["predict"] == {"batchable": True, "batch_dim": 1}


@pytest.mark.parametrize(
    ("signatures", "message"),
    [
        (
            {"predict": {"batchable": "maybe"}},
            "Signature 'predict' has a bad option 'batchable': Input should be a valid boolean, "
            "unable to interpret input. Options are 'batchable' (bool) and 'batch_dim' (int).",
        ),
        (
            {"predict": {"max_batch": 8}},
            "Signature 'predict' has a bad option 'max_batch': Extra inputs are not permitted. "
            "Options are 'batchable' (bool) and 'batch_dim' (int).",
        ),
        (
            {"predict": {"batch_dim": 0.5}},
            "Signature 'predict' has a bad option 'batch_dim': Input should be a valid integer, "
            "got a number with a fractional part. Options are 'batchable' (bool) and "
            "'batch_dim' (int).",
        ),
        (["not a method"], "Signature name 'not a method' is not a Python method name."),
        ({"2predict": {}}, "Signature name '2predict' is not a Python method name."),
        (
            "predict",
            "signatures must be a list of method names or a dict of method names to options, "
            "not str.",
        ),
    ],
)
def test_bad_signatures(store: ModelStore, signatures: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris", Predictor(1.0), signatures=signatures)
    assert caught.value.message == message
    assert_empty(store)


# -- versions -----------------------------------------------------------------------------


def test_latest_is_not_a_version(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris:latest", 1)
    assert caught.value.message == (
        "'latest' cannot be used as a version: it always means the newest one. Choose another "
        "version or leave it out to have one generated."
    )
    assert_empty(store)


def test_an_existing_explicit_version(store: ModelStore) -> None:
    first = store.save("iris:v1", "first")
    with pytest.raises(ModelExists) as caught:
        store.save("iris:v1", "second")
    assert caught.value.message == (
        "Model 'iris:v1' already exists. Save under another version, or delete it first with "
        "'tiffin models delete iris:v1'."
    )
    assert caught.value.detail == {"tag": "iris:v1"}
    assert store.list() == [first]
    assert store.get("iris:v1").load() == "first"
    assert leftovers(store) == []


@pytest.mark.parametrize(
    ("name", "error"),
    [("Iris", "The name in tag 'Iris' contains 'I'."), ("iris:", "Tag 'iris:' ends with ':'")],
)
def test_bad_names(store: ModelStore, name: str, error: str) -> None:
    with pytest.raises(InvalidTag) as caught:
        store.save(name, 1)
    assert caught.value.message.startswith(error)
    assert not store.home.exists()


def test_unknown_framework(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris", 1, framework="nope")
    assert caught.value.message.startswith("Unknown framework 'nope'. Known frameworks: ")
    assert "pickle" in caught.value.message.split(". ")[1]
    assert_empty(store)


def test_framework_of_the_wrong_type(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.save("iris", 1, framework=5)  # type: ignore[arg-type]
    assert caught.value.message == (
        "framework must be a name such as 'sklearn' or a Framework, not int."
    )
    assert_empty(store)


def test_an_object_that_cannot_be_pickled_leaves_nothing(store: ModelStore) -> None:
    big = bytearray(3 << 20)  # written to buffers.bin before the failure
    with pytest.raises(FrameworkError) as caught:
        store.save("iris", [big, Unpicklable()])
    assert caught.value.message == (
        "The 'pickle' framework could not save the model 'iris': ValueError: cannot pickle "
        "this. Pass framework= to choose another handler, or make the object serialisable by "
        "this one."
    )
    assert isinstance(caught.value.__cause__, ValueError)
    assert_empty(store)


class FussyObject:
    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("objects of this kind are not picklable.")


def test_a_wrapped_error_reads_as_one_sentence(store: ModelStore) -> None:
    with pytest.raises(FrameworkError) as caught:
        store.save("iris", FussyObject())
    assert caught.value.message == (
        "The 'pickle' framework could not save the model 'iris': TypeError: objects of this "
        "kind are not picklable. Pass framework= to choose another handler, or make the object "
        "serialisable by this one."
    )


def test_files_framework_needs_create(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument, match=r"^The 'files' framework has no object to save\."):
        store.save("iris", 1, framework="files")
    assert_empty(store)


# -- create() -----------------------------------------------------------------------------


def test_create_a_directory_model(store: ModelStore) -> None:
    contents = {
        "vocab.txt": b"alpha\nbeta\n",
        "weights/layer1.bin": bytes(range(256)) * 100,
        "weights/deep/layer2.bin": b"",
    }
    with store.create("tok", metadata={"size": 2}, labels={"team": "nlp"}) as builder:
        staged = builder.path
        assert staged.parent == store.items.root / ".staging"
        for rel, data in contents.items():
            (builder.path / rel).parent.mkdir(parents=True, exist_ok=True)
            (builder.path / rel).write_bytes(data)
        builder.metadata["accuracy"] = np.float64(0.75)
        assert store.list() == []
    model = builder.model
    assert model is not None
    assert model == store.get("tok")
    assert model.tag == builder.tag
    assert not staged.exists()
    assert model.load() == model.path
    for rel, data in contents.items():
        assert (model.path / rel).read_bytes() == data

    manifest = yaml.safe_load((model.path / "model.yaml").read_text())
    assert manifest["name"] == "tok"
    assert manifest["framework"]["name"] == "files"
    assert manifest["files"] == {
        rel: {"blake3": blake3.blake3(data).hexdigest(), "size": len(data)}
        for rel, data in contents.items()
    }
    assert manifest["size"] == sum(len(data) for data in contents.values())
    assert manifest["metadata"] == {"size": 2, "accuracy": 0.75}
    assert manifest["labels"] == {"team": "nlp"}
    assert leftovers(store) == []


def test_create_with_an_explicit_version(store: ModelStore) -> None:
    with store.create("tok:v1") as builder:
        (builder.path / "a.txt").write_text("a")
    assert builder.model is not None
    assert str(builder.model.tag) == "tok:v1"


def create(
    store: ModelStore,
    name: str,
    write: Callable[[ModelBuilder], object],
    seen: list[ModelBuilder] | None = None,
) -> ModelBuilder:
    """Save ``name`` with ``store.create``, letting ``write`` fill it in; the builder is
    appended to ``seen`` so a test can inspect it after ``write`` raised."""
    with store.create(name) as builder:
        if seen is not None:
            seen.append(builder)
        write(builder)
    return builder


def test_an_exception_inside_create_discards_everything(store: ModelStore) -> None:
    error = RuntimeError("training diverged")

    def write(builder: ModelBuilder) -> None:
        (builder.path / "weights.bin").write_bytes(b"x" * 1000)
        raise error

    seen: list[ModelBuilder] = []
    with pytest.raises(RuntimeError) as caught:
        create(store, "iris", write, seen)
    assert caught.value is error
    [builder] = seen
    assert builder.model is None
    assert not builder.path.exists()
    assert_empty(store)


def test_a_file_named_model_yaml_is_refused(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        create(store, "iris", lambda b: (b.path / "model.yaml").write_text("mine"))
    assert caught.value.message == (
        "A model cannot hold a file named 'model.yaml': tiffin writes it. Rename that file."
    )
    assert_empty(store)


def test_model_yaml_deeper_down_is_just_a_file(store: ModelStore) -> None:
    def write(builder: ModelBuilder) -> None:
        (builder.path / "sub").mkdir()
        (builder.path / "sub" / "model.yaml").write_text("mine")

    model = create(store, "iris", write).model
    assert model is not None
    assert (model.path / "sub" / "model.yaml").read_text() == "mine"


@pytest.mark.parametrize("what", ["file-link", "directory-link", "dangling-link", "fifo"])
def test_links_and_special_files_are_refused(store: ModelStore, tmp_path: Path, what: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")

    def write(builder: ModelBuilder) -> None:
        (builder.path / "ok.txt").write_text("ok")
        entry = builder.path / "entry"
        if what == "file-link":
            entry.symlink_to(outside / "secret.txt")
        elif what == "directory-link":
            entry.symlink_to(outside)
        elif what == "dangling-link":
            entry.symlink_to(outside / "missing")
        else:
            os.mkfifo(entry)

    with pytest.raises(InvalidArgument) as caught:
        create(store, "iris", write)
    assert caught.value.message == (
        "'entry' in the model being saved is not a regular file (symbolic links and special "
        "files cannot be stored). Copy the file it points to instead."
    )
    assert caught.value.detail == {"path": "entry"}
    assert_empty(store)
    assert (outside / "secret.txt").read_text() == "secret"


def test_metadata_set_inside_create_is_checked(store: ModelStore) -> None:
    def write(builder: ModelBuilder) -> None:
        (builder.path / "a.txt").write_text("a")
        builder.metadata["when"] = {1, 2}

    with pytest.raises(InvalidArgument) as caught:
        create(store, "iris", write)
    assert caught.value.message == f"metadata['when'] is a set; {PLAIN_ONLY}"
    assert_empty(store)


def test_create_of_an_existing_version(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    with pytest.raises(ModelExists, match=r"^Model 'iris:v1' already exists\."):
        create(store, "iris:v1", lambda b: (b.path / "a.txt").write_text("a"))
    assert store.get("iris:v1").load() == 1
    assert leftovers(store) == []


# -- ref() --------------------------------------------------------------------------------


def test_ref_to_a_missing_model_touches_nothing_until_resolved(home: Path) -> None:
    ref = tiffin.models.ref("ghost:latest")
    assert repr(ref) == 'ModelRef("ghost:latest")'
    assert ref.tag == tiffin.Tag("ghost", "latest")
    assert not home.exists()
    with pytest.raises(ModelNotFound) as caught:
        ref.resolve()
    assert caught.value.message == (
        "No model named 'ghost'. Run 'tiffin models list' to see saved models."
    )
    with pytest.raises(ModelNotFound):
        ref.load()
    assert not home.exists()


def test_ref_checks_the_tag_at_once(home: Path) -> None:
    with pytest.raises(InvalidTag, match=r"^The name in tag 'Ghost' contains 'G'"):
        tiffin.models.ref("Ghost")


def test_ref_to_an_existing_model(home: Path) -> None:
    saved = tiffin.models.save("iris", Predictor(2.0))

    class Service:
        model = tiffin.models.ref("iris:latest")

    ref = Service.model
    assert isinstance(ref, ModelRef)
    assert ref.attribute == "model"
    assert ref.resolve() == saved
    assert ref.path == saved.path
    assert ref.info == saved.info
    assert ref.load().predict(2.0) == 4.0
    tiffin.models.save("iris", Predictor(5.0))
    assert ref.resolve() == saved  # resolved once, then kept


def test_ref_with_an_explicit_store(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "elsewhere")
    store.save("iris:v1", "here")
    assert ModelRef("iris:v1", store=store).load() == "here"


# -- damaged models -----------------------------------------------------------------------


def test_get_of_a_model_yaml_missing_a_field(store: ModelStore) -> None:
    model = store.save("iris:v1", 1)
    rewrite_manifest(model, lambda data: data.pop("framework"))
    for call in (lambda: store.get("iris:v1"), store.list):
        with pytest.raises(TiffinError) as caught:
            call()
        assert type(caught.value) is TiffinError
        assert caught.value.message == (
            "The model.yaml of 'iris:v1' is damaged (Field required). Delete it with "
            "'tiffin models delete iris:v1' and save it again."
        )
    store.delete("iris:v1")  # the advice works
    assert store.list() == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{{{: [", "is not valid YAML ("), ("- 1\n- 2\n", "does not hold a mapping.")],
)
def test_get_of_an_unreadable_model_yaml(store: ModelStore, text: str, problem: str) -> None:
    model = store.save("iris:v1", 1)
    (model.path / "model.yaml").write_text(text)
    for call in (lambda: store.get("iris:v1"), lambda: store.get("iris"), store.list):
        with pytest.raises(TiffinError) as caught:
            call()
        assert type(caught.value) is TiffinError
        message = caught.value.message
        assert message.startswith(f"{model.path / 'model.yaml'} {problem}")
        assert message.endswith("The item is damaged; delete it.")
    store.delete("iris:v1")
    assert store.list() == []


def test_load_of_a_damaged_file(store: ModelStore) -> None:
    model = store.save("iris:v1", {"w": 1})
    (model.path / "model.pkl").write_bytes(b"not a pickle")
    with pytest.raises(FrameworkError) as caught:
        store.get("iris:v1").load()
    message = caught.value.message
    assert message.startswith("The 'pickle' framework could not load model 'iris:v1': ")
    assert message.endswith(
        "Check it with 'tiffin models get iris:v1' (framework versions) and "
        "'tiffin models verify', or save it again."
    )
    assert caught.value.detail == {"framework": "pickle", "tag": "iris:v1"}


def test_load_of_a_model_whose_framework_is_gone(store: ModelStore) -> None:
    model = store.save("iris:v1", 1)
    rewrite_manifest(model, lambda data: data["framework"].update(name="lightgbm"))
    found = store.get("iris:v1")
    assert found.info.framework.name == "lightgbm"
    with pytest.raises(MissingDependency) as caught:
        found.load()
    assert caught.value.message == (
        "Model 'iris:v1' was saved with the 'lightgbm' framework, which no installed package "
        "provides. Install the plugin that registers 'lightgbm' under the 'tiffin.frameworks' "
        "entry point group."
    )


# -- crashes and concurrency (real processes) -----------------------------------------------


def start(code: str, home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env={**os.environ, "TIFFIN_HOME": str(home)},
        cwd=home.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


KILLED_IN_CREATE = """
import time, tiffin
with tiffin.models.create("iris") as builder:
    (builder.path / "weights.bin").write_bytes(b"x" * 100_000)
    print("writing", flush=True)
    time.sleep(120)
"""

KILLED_IN_PICKLE = """
import time, tiffin

class Slow:
    def __reduce__(self):
        print("writing", flush=True)
        time.sleep(120)
        return (int, (1,))

tiffin.models.save("iris", [bytearray(3 << 20), Slow()])
"""


@pytest.mark.parametrize("code", [KILLED_IN_CREATE, KILLED_IN_PICKLE], ids=["create", "pickle"])
def test_a_killed_save_leaves_nothing_visible(store: ModelStore, code: str) -> None:
    store.save("other:v1", "kept")
    with start(code, store.home) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "writing\n", proc.stderr.read() if proc.stderr else ""
        staged = list((store.items.root / ".staging").iterdir())
        assert [p.name.split("-")[0] for p in staged] == [str(proc.pid)]
        assert any(p.is_file() for p in staged[0].rglob("*"))  # it had written something
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    assert [str(m.tag) for m in store.list()] == ["other:v1"]
    with pytest.raises(ModelNotFound, match=r"^No model named 'iris'"):
        store.get("iris")
    assert not (store.items.root / "iris").exists()
    assert staged[0].exists()  # until a live process sweeps it

    store.save("next", 1)
    assert not staged[0].exists()
    assert leftovers(store) == []
    assert store.get("other:v1").load() == "kept"


RACER = """
import pathlib, sys, time, tiffin
go, worker, name = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    model = tiffin.models.save(name, {"worker": worker})
except tiffin.ModelExists as exc:
    print("exists", exc.message, flush=True)
else:
    print("saved", model.tag, flush=True)
"""


def race(home: Path, name: str, workers: int) -> list[str]:
    """Start ``workers`` processes that each save ``name`` the moment a file appears."""
    go = home.parent / "go"
    procs = [start(RACER, home, str(go), str(n), name) for n in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        go.touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert err == ""
            results.append(out.strip())
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_concurrent_saves_of_one_name_all_succeed(store: ModelStore) -> None:
    workers = 6
    results = race(store.home, "shared", workers)
    assert all(line.startswith("saved shared:") for line in results), results
    tags = [line.removeprefix("saved ") for line in results]
    assert len(set(tags)) == workers
    assert sorted(str(m.tag) for m in store.list("shared")) == sorted(tags)
    for worker, tag in enumerate(tags):
        assert store.get(tag).load() == {"worker": worker}
        store.verify(tag)
    assert leftovers(store) == []


def test_concurrent_saves_of_one_explicit_version(store: ModelStore) -> None:
    results = race(store.home, "shared:v1", 4)
    saved = [n for n, line in enumerate(results) if line == "saved shared:v1"]
    refused = [line for line in results if line.startswith("exists ")]
    assert len(saved) == 1, results
    assert (
        refused
        == [
            "exists Model 'shared:v1' already exists. Save under another version, or delete it "
            "first with 'tiffin models delete shared:v1'."
        ]
        * 3
    )
    assert [str(m.tag) for m in store.list()] == ["shared:v1"]
    assert store.get("shared:v1").load() == {"worker": saved[0]}
    assert leftovers(store) == []
