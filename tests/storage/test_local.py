"""The versioned local store: resolution, aliases, deletion, sweeping and verification."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tiffin.exceptions import (
    AlreadyExists,
    Conflict,
    IntegrityError,
    InvalidArgument,
    InvalidTag,
    ModelExists,
    ModelNotFound,
    NotFound,
)
from tiffin.models import ModelStore
from tiffin.storage import ItemKind, LocalStore, Staging
from tiffin.storage.local import files_digest
from tiffin.tag import Tag


def version_dirs(store: ModelStore, name: str) -> list[str]:
    return sorted(p.name for p in (store.items.root / name).iterdir() if not p.name.startswith("."))


def leftovers(store: ModelStore) -> list[str]:
    """Anything under the store's staging and trash directories."""
    root = store.items.root
    return [
        str(p.relative_to(root))
        for folder in (root / ".staging", root / ".trash")
        if folder.is_dir()
        for p in folder.iterdir()
    ]


# -- resolving ----------------------------------------------------------------------------


def test_latest_is_the_newest_after_several_saves(store: ModelStore) -> None:
    tags = [store.save("iris", {"n": n}).tag for n in range(3)]
    assert len(set(tags)) == 3
    assert [v for v, _ in store.items.versions("iris")] == [t.version for t in tags]
    for text in ("iris", "iris:latest"):
        assert store.items.resolve(text) == tags[-1]
        assert store.get(text).load() == {"n": 2}
    assert store.items.resolve(Tag("iris")) == tags[-1]


def test_latest_means_most_recently_saved_not_highest_version(store: ModelStore) -> None:
    store.save("iris:zzz", "first")
    store.save("iris:aaa", "second")
    assert store.get("iris").tag == Tag("iris", "aaa")
    assert store.get("iris:latest").load() == "second"


def test_explicit_version(store: ModelStore) -> None:
    store.save("iris:v1", "one")
    store.save("iris:v2", "two")
    assert store.get("iris:v1").load() == "one"
    assert store.get("iris:v2").load() == "two"
    assert store.items.resolve("iris:v1") == Tag("iris", "v1")
    assert store.items.path(Tag("iris", "v1")) == store.home / "models" / "iris" / "v1"


def test_unknown_name(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    for text in ("ghost", "ghost:latest", "ghost:v1"):
        with pytest.raises(ModelNotFound) as caught:
            store.get(text)
        assert caught.value.message == (
            "No model named 'ghost'. Run 'tiffin models list' to see saved models."
        )
        assert caught.value.detail == {"tag": text}


def test_unknown_version(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    with pytest.raises(ModelNotFound) as caught:
        store.get("iris:v9")
    assert caught.value.message == (
        "Model 'iris:v9' not found. Run 'tiffin models list iris' to see saved versions."
    )
    assert caught.value.status_code == 404


def test_an_empty_store_resolves_nothing_and_creates_nothing(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match=r"^No model named 'iris'"):
        store.get("iris")
    assert store.list() == []
    assert store.items.names() == []
    assert store.aliases("iris") == {}
    assert not store.home.exists()


def test_names_ignore_hidden_and_empty_directories(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    (store.items.root / "empty").mkdir()
    (store.items.root / "half" / "v1").mkdir(parents=True)  # no manifest: not an item
    assert store.items.names() == ["iris"]
    assert [str(m.tag) for m in store.list()] == ["iris:v1"]


def test_bad_names_are_refused(store: ModelStore) -> None:
    with pytest.raises(InvalidTag, match=r"^The name in tag 'Iris' contains 'I'"):
        store.list("Iris")
    with pytest.raises(InvalidTag, match=r"^The name in tag '\.\.' starts with '\.'"):
        store.items.versions("..")


# -- aliases ------------------------------------------------------------------------------


def test_alias_set_move_list_and_remove(store: ModelStore) -> None:
    v1 = store.save("iris:v1", "one").tag
    v2 = store.save("iris:v2", "two").tag

    assert store.alias("iris:v1", "prod") == v1
    assert store.aliases("iris") == {"prod": "v1"}
    assert store.get("iris:prod").tag == v1
    assert store.get("iris:prod").load() == "one"

    assert store.alias("iris:latest", "prod") == v2  # moving it
    assert store.alias("iris:prod", "stable") == v2  # an alias of an alias's target
    assert store.aliases("iris") == {"prod": "v2", "stable": "v2"}
    assert store.get("iris:prod").load() == "two"

    store.unalias("iris", "prod")
    assert store.aliases("iris") == {"stable": "v2"}
    with pytest.raises(ModelNotFound, match=r"^Model 'iris:prod' not found"):
        store.get("iris:prod")
    assert not [p for p in (store.items.root / "iris" / ".aliases").iterdir() if p.name != "stable"]


def test_removing_a_missing_alias(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    with pytest.raises(ModelNotFound) as caught:
        store.unalias("iris", "prod")
    assert caught.value.message == (
        "'iris:prod' is not an alias. Run 'tiffin models alias iris' to list its aliases."
    )
    with pytest.raises(ModelNotFound, match=r"^'ghost:prod' is not an alias"):
        store.unalias("ghost", "prod")


def test_alias_named_latest_is_refused(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    with pytest.raises(InvalidArgument) as caught:
        store.alias("iris:v1", "latest")
    assert caught.value.message == (
        "'latest' cannot be an alias: it always means the newest version. "
        "Choose another alias name."
    )
    assert store.aliases("iris") == {}


def test_alias_equal_to_a_version_is_refused(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.save("iris:v2", 2)
    with pytest.raises(InvalidArgument) as caught:
        store.alias("iris:v1", "v2")
    assert caught.value.message == (
        "'v2' is already a version of 'iris', so it cannot be an alias. Choose another alias name."
    )
    assert store.aliases("iris") == {}
    assert store.get("iris:v2").load() == 2


def test_a_version_equal_to_an_alias_is_refused(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.alias("iris:v1", "prod")
    with pytest.raises(Conflict) as caught:
        store.save("iris:prod", 2)
    assert caught.value.message == (
        "'iris:prod' is an alias of version 'v1', so it cannot be a version too. Choose "
        "another version, or remove the alias first ('tiffin models alias iris:prod --remove')."
    )
    assert store.get("iris:prod").load() == 1
    assert version_dirs(store, "iris") == ["v1"]
    assert leftovers(store) == []


@pytest.mark.parametrize(("alias", "shown"), [("Prod", "'P'"), ("pro d", "' '"), ("a/b", "'/'")])
def test_bad_alias_names(store: ModelStore, alias: str, shown: str) -> None:
    store.save("iris:v1", 1)
    with pytest.raises(InvalidTag, match=f"^The version in tag 'iris:{alias}' contains {shown}"):
        store.alias("iris:v1", alias)
    assert store.aliases("iris") == {}


def test_alias_of_a_missing_model(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match=r"^No model named 'ghost'"):
        store.alias("ghost:v1", "prod")
    assert not store.home.exists()


def test_alias_pointing_at_a_deleted_version(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.save("iris:v2", 2)
    store.alias("iris:v1", "prod")
    shutil.rmtree(store.items.root / "iris" / "v1")  # removed behind the store's back
    with pytest.raises(ModelNotFound) as caught:
        store.get("iris:prod")
    assert caught.value.message == (
        "Model 'iris:prod' not found: alias 'prod' points to deleted version 'v1'. "
        "Run 'tiffin models list iris' to see saved versions."
    )
    assert store.alias("iris:v2", "prod").version == "v2"  # moving it mends it
    assert store.get("iris:prod").load() == 2


# -- deleting -----------------------------------------------------------------------------


def test_delete_one_version(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.save("iris:v2", 2)
    assert store.delete("iris:v1") == Tag("iris", "v1")
    assert version_dirs(store, "iris") == ["v2"]
    assert [str(m.tag) for m in store.list()] == ["iris:v2"]
    with pytest.raises(ModelNotFound, match=r"^Model 'iris:v1' not found"):
        store.get("iris:v1")
    assert leftovers(store) == []


def test_delete_by_name_deletes_the_newest(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.save("iris:v2", 2)
    assert store.delete("iris") == Tag("iris", "v2")
    assert store.get("iris").tag == Tag("iris", "v1")


def test_delete_unknown(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    with pytest.raises(ModelNotFound, match=r"^Model 'iris:v9' not found"):
        store.delete("iris:v9")
    with pytest.raises(ModelNotFound, match=r"^No model named 'ghost'"):
        store.delete("ghost")
    assert version_dirs(store, "iris") == ["v1"]


def test_deleting_an_aliased_version_is_a_conflict(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.save("iris:v2", 2)
    store.alias("iris:v1", "prod")
    store.alias("iris:v1", "stable")
    store.alias("iris:v2", "canary")
    for text in ("iris:v1", "iris:prod"):
        with pytest.raises(Conflict) as caught:
            store.delete(text)
        assert caught.value.message == (
            "Model 'iris:v1' is aliased as 'iris:prod', 'iris:stable'. Move the alias first "
            "('tiffin models alias <tag> prod'), or delete with --force to remove the aliases too."
        )
        assert caught.value.detail == {"tag": "iris:v1", "aliases": ["prod", "stable"]}
    assert version_dirs(store, "iris") == ["v1", "v2"]
    assert store.aliases("iris") == {"canary": "v2", "prod": "v1", "stable": "v1"}
    assert store.get("iris:prod").load() == 1


def test_force_delete_removes_the_aliases_too(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.save("iris:v2", 2)
    store.alias("iris:v1", "prod")
    store.alias("iris:v2", "canary")
    assert store.delete("iris:prod", force=True) == Tag("iris", "v1")
    assert version_dirs(store, "iris") == ["v2"]
    assert store.aliases("iris") == {"canary": "v2"}
    with pytest.raises(ModelNotFound, match=r"^Model 'iris:prod' not found"):
        store.get("iris:prod")


def test_deleting_the_last_version_removes_the_name(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    store.save("other:v1", 1)
    store.alias("iris:v1", "prod")
    store.delete("iris:v1", force=True)
    assert not (store.items.root / "iris").exists()
    assert store.items.names() == ["other"]
    with pytest.raises(ModelNotFound, match=r"^No model named 'iris'"):
        store.get("iris")
    assert leftovers(store) == []
    store.save("iris:v1", "again")  # the name can be used afresh
    assert store.aliases("iris") == {}
    assert store.get("iris").load() == "again"


# -- staging and sweeping -----------------------------------------------------------------


def test_sweep_removes_dead_processes_staging_and_keeps_live_ones(
    store: ModelStore, dead_pid: int
) -> None:
    store.save("iris:v1", 1)
    root = store.items.root
    dead = root / ".staging" / f"{dead_pid}-abc"
    dead_trash = root / ".trash" / f"{dead_pid}-def"
    live = root / ".staging" / f"{os.getpid()}-abc"
    parent = root / ".staging" / f"{os.getppid()}-abc"
    other = root / ".staging" / "not-a-pid"
    for folder in (dead, dead_trash, live, parent, other):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "model.pkl").write_bytes(b"partial")
    store.items.sweep()
    assert not dead.exists()
    assert not dead_trash.exists()
    assert live.is_dir()
    assert parent.is_dir()
    assert other.is_dir()
    assert store.get("iris:v1").load() == 1


def test_staging_a_save_sweeps(store: ModelStore, dead_pid: int) -> None:
    dead = store.items.root / ".staging" / f"{dead_pid}-abc"
    dead.mkdir(parents=True)
    store.save("iris", 1)
    assert not dead.exists()
    assert leftovers(store) == []


def test_a_staged_item_is_invisible_until_committed(store: ModelStore) -> None:
    with store.items.stage("iris", "v1") as staging:
        with staging.open("data.bin") as out:
            out.write(b"abc")
        assert staging.path.parent == store.items.root / ".staging"
        assert store.list() == []
        with pytest.raises(ModelNotFound):
            store.items.resolve("iris:v1")
        tag, manifest = staging.commit({"note": "x"})
    assert tag == Tag("iris", "v1")
    assert manifest["note"] == "x"
    assert manifest["size"] == 3
    assert (store.items.path(tag) / "data.bin").read_bytes() == b"abc"
    assert leftovers(store) == []


def test_discarding_a_stage_leaves_nothing(store: ModelStore) -> None:
    staging = store.items.stage("iris")
    with staging.open("sub/data.bin") as out:
        out.write(b"abc")
    staging.discard()
    assert not staging.path.exists()
    assert leftovers(store) == []
    assert store.items.names() == []


def test_an_auto_version_that_is_taken_gets_a_new_one(store: ModelStore) -> None:
    first = store.items.stage("iris")
    second = Staging(store.items, store.items.scratch(), first.tag, auto_version=True)
    for staging, data in ((first, b"one"), (second, b"two")):
        with staging.open("data.bin") as out:
            out.write(data)
    tag1, _ = first.commit({})
    tag2, manifest = second.commit({})
    assert tag1 == first.tag
    assert tag2 != tag1
    assert tag2.name == "iris"
    assert manifest["version"] == tag2.version
    assert (store.items.path(tag1) / "data.bin").read_bytes() == b"one"
    assert (store.items.path(tag2) / "data.bin").read_bytes() == b"two"
    assert leftovers(store) == []


def test_an_explicit_version_that_is_taken(store: ModelStore) -> None:
    store.save("iris:v1", 1)
    with pytest.raises(ModelExists) as caught:
        store.save("iris:v1", 2)
    assert caught.value.message == (
        "Model 'iris:v1' already exists. Save under another version, or delete it first with "
        "'tiffin models delete iris:v1'."
    )
    assert store.get("iris:v1").load() == 1
    assert leftovers(store) == []


def test_latest_cannot_be_a_version(store: ModelStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.items.stage("iris", "latest")
    assert caught.value.message == (
        "'latest' cannot be used as a version: it always means the newest one. Choose another "
        "version or leave it out to have one generated."
    )
    assert not store.home.exists()


# -- verifying ----------------------------------------------------------------------------


def test_verify_accepts_an_intact_model(store: ModelStore) -> None:
    model = store.save("iris", list(range(1000)))
    assert store.verify("iris") == model


@pytest.mark.parametrize("damage", ["changed", "same-size", "removed"])
def test_verify_detects_a_tampered_file(store: ModelStore, damage: str) -> None:
    model = store.save("iris:v1", list(range(1000)))
    target = model.path / "model.pkl"
    data = target.read_bytes()
    if damage == "changed":
        target.write_bytes(data + b"x")
    elif damage == "same-size":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        target.unlink()
    with pytest.raises(IntegrityError) as caught:
        store.verify("iris:v1")
    assert caught.value.message == (
        "File 'model.pkl' of model 'iris:v1' is missing or does not match its recorded digest. "
        "Delete it with 'tiffin models delete iris:v1' and save or import it again."
    )
    assert caught.value.detail == {"tag": "iris:v1", "path": "model.pkl"}


def test_files_digest_is_the_same_formula_whatever_the_algorithm() -> None:
    """Bundles pin a model by this value: a table of sha256 entries (written before
    BLAKE3) keeps the value it had, and blake3 entries go through the same formula."""
    a, b = "ab" * 32, "cd" * 32
    expected = hashlib.sha256(f"a.bin\0{a}\nsub/b.txt\0{b}\n".encode()).hexdigest()
    for algorithm in ("sha256", "blake3"):
        table = {"sub/b.txt": {algorithm: b, "size": 2}, "a.bin": {algorithm: a, "size": 1}}
        assert files_digest(table) == expected


# -- durable writes and other item kinds --------------------------------------------------


def test_durable_store_saves_aliases_and_deletes(home: Path) -> None:
    store = ModelStore(home, durable=True)
    assert store.items.durable
    model = store.save("iris", {"w": [1.0, 2.0]}, metadata={"acc": 0.9})
    assert store.get("iris").load() == {"w": [1.0, 2.0]}
    store.verify(model.tag)
    with store.create("vocab") as builder:
        (builder.path / "vocab.txt").write_text("a\nb\n")
    assert builder.model is not None
    assert (builder.model.path / "vocab.txt").read_text() == "a\nb\n"
    store.alias(model.tag, "prod")
    store.delete(model.tag, force=True)
    assert store.items.names() == ["vocab"]


def test_a_store_of_another_kind(tmp_path: Path) -> None:
    class BundleNotFound(NotFound):
        pass

    class BundleExists(AlreadyExists):
        pass

    kind = ItemKind("bundle", "bundle.yaml", "tiffin bundles", BundleNotFound, BundleExists)
    items = LocalStore(tmp_path / "bundles", kind)
    with items.stage("svc", "v1") as staging:
        (staging.path / "service.py").write_text("print('hi')\n")
        tag, manifest = staging.commit({"service": "service:Svc"})
    assert (items.path(tag) / "bundle.yaml").is_file()
    assert items.manifest(tag)["service"] == "service:Svc"
    assert manifest["files"]["service.py"]["size"] == len("print('hi')\n")
    with pytest.raises(BundleNotFound) as caught:
        items.resolve("svc:v2")
    assert caught.value.message == (
        "Bundle 'svc:v2' not found. Run 'tiffin bundles list svc' to see saved versions."
    )
    with (
        pytest.raises(BundleExists, match=r"^Bundle 'svc:v1' already exists"),
        items.stage("svc", "v1") as again,
    ):
        again.commit({})
