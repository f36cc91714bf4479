"""Export and import of model archives; every unsafe or corrupt archive is refused cleanly."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import yaml

from tiffin.exceptions import (
    ArchiveError,
    Conflict,
    CorruptArchive,
    IntegrityError,
    InvalidArgument,
    ModelExists,
    ModelNotFound,
    NotFound,
    UnsafeArchive,
)
from tiffin.models import Model, ModelStore
from tiffin.storage import archive

PREFIX = "iris-v1"
WEIGHTS = bytes(range(256)) * 40  # 10240 bytes
VOCAB = b"alpha\nbeta\ngamma\n"


# -- helpers ------------------------------------------------------------------------------


@dataclasses.dataclass
class Member:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def write_archive(path: Path, members: list[Member], *, gz: bool = False) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.linkname = member.linkname
            info.mode = 0o644
            if member.type == tarfile.REGTYPE:
                info.size = len(member.data)
                tar.addfile(info, io.BytesIO(member.data))
            else:
                tar.addfile(info)
    return path


def read_members(path: Path) -> list[Member]:
    members = []
    with tarfile.open(path) as tar:
        for info in tar.getmembers():
            stream = tar.extractfile(info)
            assert stream is not None
            members.append(Member(info.name, stream.read()))
    return members


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under ``root``; staging and trash must be
    empty and are left out."""
    found: dict[str, bytes | None] = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel in (".staging", ".trash"):
            assert list(path.iterdir()) == [], f"leftovers under {rel}"
            continue
        found[rel] = path.read_bytes() if path.is_file() else None
    return found


def save_iris(store: ModelStore) -> Model:
    with store.create("iris:v1", metadata={"acc": 0.97}, labels={"team": "ml"}) as builder:
        (builder.path / "weights.bin").write_bytes(WEIGHTS)
        (builder.path / "sub").mkdir()
        (builder.path / "sub" / "vocab.txt").write_bytes(VOCAB)
    assert builder.model is not None
    return builder.model


def files_of(model: Model) -> dict[str, bytes]:
    return {
        p.relative_to(model.path).as_posix(): p.read_bytes()
        for p in sorted(model.path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def source(tmp_path: Path) -> ModelStore:
    store = ModelStore(tmp_path / "source-home")
    save_iris(store)
    return store


@pytest.fixture
def target(tmp_path: Path) -> ModelStore:
    """A second home that already holds an unrelated model, so nothing lost is visible."""
    store = ModelStore(tmp_path / "target-home")
    store.save("other:v1", {"keep": True})
    store.alias("other:v1", "prod")
    return store


@pytest.fixture
def good_members(source: ModelStore, tmp_path: Path) -> list[Member]:
    members = read_members(source.export("iris:v1", tmp_path / "good.tar"))
    assert [m.name for m in members] == [
        f"{PREFIX}/model.yaml",
        f"{PREFIX}/weights.bin",
        f"{PREFIX}/sub/vocab.txt",
    ]
    return members


def manifest_of(members: list[Member]) -> dict[str, Any]:
    data = yaml.safe_load(members[0].data)
    assert isinstance(data, dict)
    return data


def with_manifest(members: list[Member], change: Callable[[dict[str, Any]], None]) -> list[Member]:
    manifest = manifest_of(members)
    change(manifest)
    text = yaml.safe_dump(manifest, sort_keys=False).encode()
    return [dataclasses.replace(members[0], data=text), *members[1:]]


def replace(members: list[Member], name: str, **changes: Any) -> list[Member]:
    assert any(m.name == name for m in members)
    return [dataclasses.replace(m, **changes) if m.name == name else m for m in members]


def corrupt(path: Path, problem: str) -> str:
    return (
        f"Archive {path} is corrupt: {problem}. Nothing was imported; export it again "
        "from its source."
    )


def unsafe(path: Path, member: str, problem: str) -> str:
    return (
        f"Archive {path} is unsafe: member '{member}' {problem}. Nothing was imported; only "
        "import archives written by 'export'."
    )


def refused(
    store: ModelStore, path: Path, error: type[ArchiveError], tmp_path: Path
) -> ArchiveError:
    """Import ``path``, expecting ``error``, and check that the store is exactly as it was
    and that nothing escaped anywhere under ``tmp_path``."""
    before = tree(store.items.root)
    with pytest.raises(ArchiveError) as caught:
        store.import_(path)
    assert type(caught.value) is error, caught.value.message
    assert tree(store.items.root) == before
    assert not (store.items.root / "iris").exists()
    assert [str(m.tag) for m in store.list()] == ["other:v1"]
    assert store.get("other:prod").load() == {"keep": True}
    assert list(tmp_path.rglob("escape*")) == []
    assert list(Path.cwd().glob("escape*")) == []
    return caught.value


# -- export and import --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz"])
def test_round_trip_into_a_clean_home(source: ModelStore, tmp_path: Path, suffix: str) -> None:
    model = source.save("clf", {"weights": [0.5, 1.5], "bias": -1})
    path = source.export(model.tag, tmp_path / "out" / f"clf{suffix}")
    assert path == tmp_path / "out" / f"clf{suffix}"
    assert sorted(p.name for p in path.parent.iterdir()) == [f"clf{suffix}"]  # no partials
    with path.open("rb") as stream:
        magic = stream.read(2)
    assert (magic == b"\x1f\x8b") is (suffix != ".tar")

    clean = ModelStore(tmp_path / "clean-home")
    imported = clean.import_(path)
    assert imported.tag == model.tag
    assert imported.path == clean.home / "models" / "clf" / str(model.tag.version)
    assert imported.info == model.info
    assert files_of(imported) == files_of(model)
    assert (imported.path / "model.yaml").read_bytes() == (model.path / "model.yaml").read_bytes()
    assert imported.load() == {"weights": [0.5, 1.5], "bias": -1}
    clean.verify(imported.tag)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_round_trip_of_a_directory_model(source: ModelStore, tmp_path: Path, suffix: str) -> None:
    model = source.get("iris:v1")
    clean = ModelStore(tmp_path / "clean-home")
    imported = clean.import_(source.export("iris:v1", tmp_path / f"iris{suffix}"))
    assert files_of(imported) == files_of(model)
    assert set(imported.info.files) == {"weights.bin", "sub/vocab.txt"}
    assert imported.info.labels == {"team": "ml"}
    assert imported.info.metadata == {"acc": 0.97}
    assert imported.load() == imported.path


def test_export_resolves_latest_and_aliases(source: ModelStore, tmp_path: Path) -> None:
    source.alias("iris:v1", "prod")
    newer = source.save("iris:v2", "newer")
    assert read_members(source.export("iris:prod", tmp_path / "a.tar"))[0].name == (
        f"{PREFIX}/model.yaml"
    )
    assert read_members(source.export("iris", tmp_path / "b.tar"))[0].name == (
        f"iris-{newer.tag.version}/model.yaml"
    )


def test_export_of_an_unknown_model_writes_nothing(source: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"^Model 'iris:v9' not found"):
        source.export("iris:v9", tmp_path / "out" / "x.tar")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_progress_sums_to_the_totals(source: ModelStore, tmp_path: Path, suffix: str) -> None:
    model = source.save("big", random.Random(1).randbytes(3 << 20))
    exported: list[int] = []
    path = source.export(model.tag, tmp_path / f"big{suffix}", progress=exported.append)
    assert sum(exported) == model.info.size
    assert len(exported) > 1
    assert all(n > 0 for n in exported)

    imported: list[int] = []
    ModelStore(tmp_path / "clean-home").import_(path, progress=imported.append)
    assert sum(imported) == path.stat().st_size
    assert len(imported) > 1


def test_import_is_idempotent_for_an_identical_version(
    source: ModelStore, target: ModelStore, tmp_path: Path
) -> None:
    path = source.export("iris:v1", tmp_path / "iris.tar.gz")
    first = target.import_(path)
    before = tree(target.items.root)
    second = target.import_(path)
    assert second == first
    assert tree(target.items.root) == before
    assert [str(m.tag) for m in target.list("iris")] == ["iris:v1"]
    # importing it back where it came from changes nothing either
    assert source.import_(path) == source.get("iris:v1")
    assert [str(m.tag) for m in source.list()] == ["iris:v1"]


def test_import_of_a_same_tag_with_other_content(
    source: ModelStore, target: ModelStore, tmp_path: Path
) -> None:
    target.save("iris:v1", "something else")
    path = source.export("iris:v1", tmp_path / "iris.tar")
    before = tree(target.items.root)
    with pytest.raises(ModelExists) as caught:
        target.import_(path)
    assert caught.value.message == (
        f"Model 'iris:v1' already exists with different content than archive {path}. "
        "Delete it first with 'tiffin models delete iris:v1' to replace it."
    )
    assert tree(target.items.root) == before
    assert target.get("iris:v1").load() == "something else"


def test_import_of_a_version_that_is_an_alias(
    source: ModelStore, target: ModelStore, tmp_path: Path
) -> None:
    target.save("iris:v0", "old")
    target.alias("iris:v0", "v1")
    path = source.export("iris:v1", tmp_path / "iris.tar")
    before = tree(target.items.root)
    with pytest.raises(Conflict, match=r"^'iris:v1' is an alias of version 'v0'"):
        target.import_(path)
    assert tree(target.items.root) == before


def test_import_of_a_missing_file(target: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "nope.tar"
    with pytest.raises(NotFound) as caught:
        target.import_(path)
    assert caught.value.message == f"Archive {path} does not exist. Check the path."


def test_import_of_a_directory(target: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as caught:
        target.import_(tmp_path)
    assert caught.value.message == (
        f"{tmp_path} is not a file. Give the path of an archive written by 'tiffin models export'."
    )


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "gz"])
def test_hand_made_archive_imports(
    good_members: list[Member], target: ModelStore, tmp_path: Path, gz: bool
) -> None:
    """The archives below are this one with one thing wrong, so each refusal is for that."""
    members = [
        good_members[0],
        Member(f"{PREFIX}/sub", type=tarfile.DIRTYPE),  # directory members are allowed
        *good_members[1:],
    ]
    model = target.import_(write_archive(tmp_path / "hand.tar", members, gz=gz))
    assert files_of(model) == {
        "model.yaml": good_members[0].data,
        "sub/vocab.txt": VOCAB,
        "weights.bin": WEIGHTS,
    }


# -- unsafe and corrupt archives ----------------------------------------------------------

Craft = Callable[[list[Member], Path], list[Member]]


def _escape_files(members: list[Member]) -> list[Member]:
    def change(manifest: dict[str, Any]) -> None:
        manifest["files"]["../escape.txt"] = manifest["files"].pop("weights.bin")

    return with_manifest(members, change)


UNSAFE: list[tuple[str, Craft, str, str]] = [
    (
        "dotdot-inside",
        lambda m, t: [*m, Member(f"{PREFIX}/../../../../escape.txt", b"evil")],
        f"{PREFIX}/../../../../escape.txt",
        "has a path that escapes the item ('../../../../escape.txt' contains '..', '.' or an "
        "empty part)",
    ),
    (
        "dotdot-first",
        lambda m, t: [m[0], Member("../escape.txt", b"evil"), *m[1:]],
        "../escape.txt",
        f"is outside the item's directory '{PREFIX}/'",
    ),
    (
        "absolute",
        lambda m, t: [*m, Member(str(t / "escape-abs.txt"), b"evil")],
        "{tmp}/escape-abs.txt",
        f"is outside the item's directory '{PREFIX}/'",
    ),
    (
        "absolute-inside",
        lambda m, t: [*m, Member(f"{PREFIX}/{t}/escape-abs.txt", b"evil")],
        f"{PREFIX}/{{tmp}}/escape-abs.txt",
        "has a path that escapes the item ('{tmp}/escape-abs.txt' is an absolute path)",
    ),
    (
        "other-directory",
        lambda m, t: [*m, Member("other-v1/escape.txt", b"evil")],
        "other-v1/escape.txt",
        f"is outside the item's directory '{PREFIX}/'",
    ),
    (
        "symlink",
        lambda m, t: replace(
            m, f"{PREFIX}/weights.bin", type=tarfile.SYMTYPE, linkname="/etc/passwd"
        ),
        f"{PREFIX}/weights.bin",
        "is a link (to '/etc/passwd'); links are refused",
    ),
    (
        "symlink-directory",
        lambda m, t: [m[0], Member(f"{PREFIX}/sub", type=tarfile.SYMTYPE, linkname="/"), *m[1:]],
        f"{PREFIX}/sub",
        "is a link (to '/'); links are refused",
    ),
    (
        "hardlink",
        lambda m, t: replace(
            m, f"{PREFIX}/weights.bin", type=tarfile.LNKTYPE, linkname=f"{PREFIX}/sub/vocab.txt"
        ),
        f"{PREFIX}/weights.bin",
        f"is a link (to '{PREFIX}/sub/vocab.txt'); links are refused",
    ),
    (
        "fifo",
        lambda m, t: [*m, Member(f"{PREFIX}/pipe", type=tarfile.FIFOTYPE)],
        f"{PREFIX}/pipe",
        "is not a regular file",
    ),
    (
        "char-device",
        lambda m, t: [*m, Member(f"{PREFIX}/null", type=tarfile.CHRTYPE)],
        f"{PREFIX}/null",
        "is not a regular file",
    ),
    (
        "block-device",
        lambda m, t: [*m, Member(f"{PREFIX}/disk", type=tarfile.BLKTYPE)],
        f"{PREFIX}/disk",
        "is not a regular file",
    ),
    (
        "manifest-lists-an-escaping-path",
        lambda m, t: _escape_files(m),
        "../escape.txt",
        "is listed in model.yaml with a path that escapes the item ('../escape.txt' contains "
        "'..', '.' or an empty part)",
    ),
]


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "gz"])
@pytest.mark.parametrize(
    ("craft", "member", "problem"), [c[1:] for c in UNSAFE], ids=[c[0] for c in UNSAFE]
)
def test_unsafe_archives_are_refused(
    good_members: list[Member],
    target: ModelStore,
    tmp_path: Path,
    *,
    craft: Craft,
    member: str,
    problem: str,
    gz: bool,
) -> None:
    path = write_archive(tmp_path / "bad.tar", craft(good_members, tmp_path), gz=gz)
    error = refused(target, path, UnsafeArchive, tmp_path)
    shown = member.replace("{tmp}", str(tmp_path))
    assert error.message == unsafe(path, shown, problem.replace("{tmp}", str(tmp_path)))
    assert error.detail == {"archive": str(path), "member": shown}
    assert not (tmp_path / "escape-abs.txt").exists()


def _drop(members: list[Member], name: str) -> list[Member]:
    assert any(m.name == name for m in members)
    return [m for m in members if m.name != name]


def _set(keys: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(manifest: dict[str, Any]) -> None:
        *parents, last = keys
        node = manifest
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value

    return change


_DELETE = object()
_SIZE = len(WEIGHTS)
_BAD_ENTRY = (
    "the entry for 'weights.bin' in its model.yaml needs a size and one digest, blake3 or "
    "sha256 (64 hex digits)"
)

CORRUPT: list[tuple[str, Craft, str]] = [
    (
        "not-listed",
        lambda m, t: [*m, Member(f"{PREFIX}/extra.txt", b"x")],
        f"member '{PREFIX}/extra.txt' is not listed in its model.yaml",
    ),
    (
        "duplicate",
        lambda m, t: [*m, m[1]],
        f"member '{PREFIX}/weights.bin' appears twice",
    ),
    (
        "size-mismatch",
        lambda m, t: replace(m, f"{PREFIX}/weights.bin", data=WEIGHTS + b"x"),
        f"'weights.bin' is {_SIZE + 1} bytes but model.yaml says {_SIZE}",
    ),
    (
        "digest-mismatch",
        lambda m, t: replace(m, f"{PREFIX}/weights.bin", data=WEIGHTS[:-1] + b"\x00"),
        "the blake3 of 'weights.bin' does not match its model.yaml",
    ),
    (
        "listed-file-missing",
        lambda m, t: _drop(m, f"{PREFIX}/sub/vocab.txt"),
        "it lacks 1 file(s) its model.yaml lists: sub/vocab.txt",
    ),
    (
        "manifest-not-first",
        lambda m, t: [m[1], m[0], m[2]],
        f"its first member is '{PREFIX}/weights.bin', not '<item>/model.yaml'",
    ),
    (
        "manifest-missing",
        lambda m, t: m[1:],
        f"its first member is '{PREFIX}/weights.bin', not '<item>/model.yaml'",
    ),
    (
        "manifest-at-top-level",
        lambda m, t: [dataclasses.replace(m[0], name="model.yaml"), *m[1:]],
        "its first member is 'model.yaml', not '<item>/model.yaml'",
    ),
    (
        "manifest-is-a-directory",
        lambda m, t: [Member(f"{PREFIX}/model.yaml", type=tarfile.DIRTYPE), *m[1:]],
        f"its first member is '{PREFIX}/model.yaml', not '<item>/model.yaml'",
    ),
    (
        "manifest-not-a-mapping",
        lambda m, t: [dataclasses.replace(m[0], data=b"- a\n- b\n"), *m[1:]],
        "its model.yaml is not a mapping",
    ),
    (
        "manifest-empty",
        lambda m, t: [dataclasses.replace(m[0], data=b""), *m[1:]],
        "its model.yaml is not a mapping",
    ),
    (
        "manifest-missing-framework",
        lambda m, t: with_manifest(m, _set(("framework",), _DELETE)),
        "its model.yaml has a bad 'framework' (Field required)",
    ),
    (
        "manifest-bad-sha256",
        lambda m, t: with_manifest(m, _set(("files", "weights.bin"), {"sha256": "xyz", "size": 1})),
        _BAD_ENTRY,
    ),
    (
        "manifest-uppercase-sha256",
        lambda m, t: with_manifest(
            m, _set(("files", "weights.bin"), {"sha256": "A" * 64, "size": _SIZE})
        ),
        _BAD_ENTRY,
    ),
    (
        "manifest-bad-blake3",
        lambda m, t: with_manifest(m, _set(("files", "weights.bin"), {"blake3": "xyz", "size": 1})),
        _BAD_ENTRY,
    ),
    (
        "manifest-both-digests",
        lambda m, t: with_manifest(
            m,
            _set(
                ("files", "weights.bin"),
                {"blake3": "a" * 64, "sha256": "a" * 64, "size": _SIZE},
            ),
        ),
        _BAD_ENTRY,
    ),
    (
        "manifest-no-digest",
        lambda m, t: with_manifest(m, _set(("files", "weights.bin"), {"size": _SIZE})),
        _BAD_ENTRY,
    ),
    (
        "manifest-negative-size",
        lambda m, t: with_manifest(
            m, _set(("files", "weights.bin"), {"sha256": "a" * 64, "size": -1})
        ),
        _BAD_ENTRY,
    ),
    (
        "manifest-no-files",
        lambda m, t: with_manifest(m, _set(("files",), _DELETE)),
        "its model.yaml has no 'files' table",
    ),
    (
        "manifest-lists-itself",
        lambda m, t: with_manifest(
            m, _set(("files", "model.yaml"), {"sha256": "a" * 64, "size": 1})
        ),
        "its model.yaml lists itself",
    ),
    (
        "manifest-no-version",
        lambda m, t: with_manifest(m, _set(("version",), _DELETE)),
        "its model.yaml has a bad name or version (Tag 'iris:' has an empty version. Write it "
        "as 'name' or 'name:version', e.g. 'iris' or 'iris:v1'.)",
    ),
    (
        "manifest-bad-name",
        lambda m, t: with_manifest(m, _set(("name",), "../iris")),
        "its model.yaml has a bad name or version (The name in tag '../iris:v1' contains '/'. "
        "A name uses lowercase letters, digits, '.', '_' and '-', and starts with a letter or "
        "digit.)",
    ),
]


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "gz"])
@pytest.mark.parametrize(
    ("craft", "problem"), [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT]
)
def test_corrupt_archives_are_refused(
    good_members: list[Member],
    target: ModelStore,
    tmp_path: Path,
    *,
    craft: Craft,
    problem: str,
    gz: bool,
) -> None:
    path = write_archive(tmp_path / "bad.tar", craft(good_members, tmp_path), gz=gz)
    error = refused(target, path, CorruptArchive, tmp_path)
    assert error.message == corrupt(path, problem)
    assert error.detail["archive"] == str(path)


def test_manifest_that_is_not_valid_yaml(
    good_members: list[Member], target: ModelStore, tmp_path: Path
) -> None:
    members = [dataclasses.replace(good_members[0], data=b"name: [unclosed\n"), *good_members[1:]]
    path = write_archive(tmp_path / "bad.tar", members)
    message = refused(target, path, CorruptArchive, tmp_path).message
    assert message.startswith(f"Archive {path} is corrupt: its model.yaml is not valid YAML (")
    assert message.endswith("). Nothing was imported; export it again from its source.")


def test_manifest_over_the_size_limit(
    good_members: list[Member], target: ModelStore, tmp_path: Path
) -> None:
    assert archive.MAX_MANIFEST_BYTES == 16 << 20
    size = archive.MAX_MANIFEST_BYTES + 1
    huge = good_members[0].data + b"#" * (size - len(good_members[0].data))
    members = [dataclasses.replace(good_members[0], data=huge), *good_members[1:]]
    path = write_archive(tmp_path / "bad.tar.gz", members, gz=True)
    error = refused(target, path, CorruptArchive, tmp_path)
    assert error.message == corrupt(
        path, f"its model.yaml is {size} bytes, over the {16 << 20} byte limit"
    )


def test_manifest_at_the_size_limit_is_read(
    good_members: list[Member], target: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "MAX_MANIFEST_BYTES", len(good_members[0].data))
    path = write_archive(tmp_path / "ok.tar", good_members)
    assert target.import_(path).tag.version == "v1"
    monkeypatch.setattr(archive, "MAX_MANIFEST_BYTES", len(good_members[0].data) - 1)
    target.delete("iris:v1")
    refused(target, path, CorruptArchive, tmp_path)


def _unreadable(path: Path, message: str) -> None:
    assert message.startswith(f"Archive {path} is corrupt: it cannot be read as a tar archive (")
    assert message.endswith("). Nothing was imported; export it again from its source.")


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9])
def test_truncated_archive(
    source: ModelStore, target: ModelStore, tmp_path: Path, suffix: str, keep: float
) -> None:
    whole = source.export("iris:v1", tmp_path / f"whole{suffix}").read_bytes()
    path = tmp_path / f"cut{suffix}"
    # cut inside the data of the last member, not in the zero padding after it
    data_end = len(whole) if suffix == ".tar.gz" else whole.rindex(WEIGHTS[-512:]) + 512
    path.write_bytes(whole[: int(data_end * keep)])
    message = refused(target, path, CorruptArchive, tmp_path).message
    assert message.startswith(f"Archive {path} is corrupt: ")


def test_truncated_tar_message(source: ModelStore, target: ModelStore, tmp_path: Path) -> None:
    whole = source.export("iris:v1", tmp_path / "whole.tar").read_bytes()
    path = tmp_path / "cut.tar"
    path.write_bytes(whole[: whole.rindex(WEIGHTS[-512:])])
    message = refused(target, path, CorruptArchive, tmp_path).message
    assert message == corrupt(path, "it cannot be read as a tar archive (unexpected end of data)")


@pytest.mark.parametrize("size", [1, 511, 512, 4096, 100_000])
def test_random_bytes(target: ModelStore, tmp_path: Path, size: int) -> None:
    path = tmp_path / "random.tar"
    data = random.Random(size).randbytes(size)
    assert not data.startswith(b"\x1f\x8b")
    path.write_bytes(data)
    _unreadable(path, refused(target, path, CorruptArchive, tmp_path).message)


def test_corrupt_gzip(source: ModelStore, target: ModelStore, tmp_path: Path) -> None:
    whole = bytearray(source.export("iris:v1", tmp_path / "whole.tar.gz").read_bytes())
    middle = len(whole) // 2
    whole[middle : middle + 64] = random.Random(3).randbytes(64)
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(whole)
    message = refused(target, path, CorruptArchive, tmp_path).message
    assert message.startswith(f"Archive {path} is corrupt: ")


def test_gzip_of_garbage(target: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + random.Random(5).randbytes(2000))
    _unreadable(path, refused(target, path, CorruptArchive, tmp_path).message)


def test_gzip_of_something_that_is_not_a_tar(target: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(gzip.compress(b"hello, this is not a tar file\n" * 100))
    _unreadable(path, refused(target, path, CorruptArchive, tmp_path).message)


def test_empty_file(target: ModelStore, tmp_path: Path) -> None:
    path = tmp_path / "empty.tar"
    path.write_bytes(b"")
    message = refused(target, path, CorruptArchive, tmp_path).message
    assert message == corrupt(path, "it cannot be read as a tar archive (empty file)")


@pytest.mark.parametrize("gz", [False, True], ids=["tar", "gz"])
def test_archive_with_no_members(target: ModelStore, tmp_path: Path, gz: bool) -> None:
    path = write_archive(tmp_path / "none.tar", [], gz=gz)
    message = refused(target, path, CorruptArchive, tmp_path).message
    assert message == corrupt(path, "it is empty")


@pytest.mark.parametrize("algorithm", ["blake3", "sha256"])
def test_written_files_are_checked_not_just_the_header(
    good_members: list[Member], target: ModelStore, tmp_path: Path, algorithm: str
) -> None:
    """A file whose manifest entry records another digest is caught by the digest being
    recomputed from the bytes written, with the algorithm the entry names (sha256 in a
    manifest written before BLAKE3), not trusted from the header."""

    def change(manifest: dict[str, Any]) -> None:
        other = blake3.blake3(b"other") if algorithm == "blake3" else hashlib.sha256(b"other")
        manifest["files"]["weights.bin"] = {algorithm: other.hexdigest(), "size": _SIZE}

    path = write_archive(tmp_path / "bad.tar", with_manifest(good_members, change))
    error = refused(target, path, CorruptArchive, tmp_path)
    assert error.message == corrupt(
        path, f"the {algorithm} of 'weights.bin' does not match its model.yaml"
    )


@pytest.mark.parametrize("damage", ["missing", "resized"])
def test_export_of_a_damaged_model_writes_no_archive(
    source: ModelStore, tmp_path: Path, damage: str
) -> None:
    model = source.get("iris:v1")
    rel = sorted(model.info.files)[0]
    victim = model.path / rel
    if damage == "missing":
        victim.unlink()
    else:
        victim.write_bytes(victim.read_bytes() + b"!")
    dest = tmp_path / "out" / "iris.tar"
    with pytest.raises(IntegrityError) as caught:
        source.export("iris:v1", dest)
    assert caught.value.message == (
        f"File '{rel}' of model 'iris:v1' is missing or does not match its recorded "
        "digest. Delete it with 'tiffin models delete iris:v1' and save or import it again."
    )
    assert list(dest.parent.iterdir()) == []
