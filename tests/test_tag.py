"""Tags: parsing, validation messages, and generated versions."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from tiffin.exceptions import InvalidArgument, InvalidTag
from tiffin.tag import LATEST, MAX_NAME_LENGTH, MAX_VERSION_LENGTH, Tag, new_version

RULE = "uses lowercase letters, digits, '.', '_' and '-', and starts with a letter or digit."
VERSION = re.compile(r"\d{8}-\d{6}-\d{3}-[a-z0-9]{8}")


@pytest.mark.parametrize(
    ("text", "name", "version"),
    [
        ("iris", "iris", None),
        ("iris:v1", "iris", "v1"),
        ("iris:latest", "iris", "latest"),
        (
            "my-model_2.0:20261124-153012-482-k3x9q2ab",
            "my-model_2.0",
            "20261124-153012-482-k3x9q2ab",
        ),
        ("0:0", "0", "0"),
        ("a" * MAX_NAME_LENGTH + ":" + "b" * MAX_VERSION_LENGTH, "a" * 63, "b" * 128),
    ],
)
def test_parse_and_str_round_trip(text: str, name: str, version: str | None) -> None:
    tag = Tag.parse(text)
    assert tag == Tag(name, version)
    assert (tag.name, tag.version) == (name, version)
    assert str(tag) == text
    assert Tag.parse(str(tag)) == tag


def test_surrounding_whitespace_is_ignored() -> None:
    assert Tag.parse("  iris:v1\n") == Tag("iris", "v1")


@pytest.mark.parametrize(
    ("text", "latest"), [("iris", True), ("iris:latest", True), ("iris:v1", False)]
)
def test_is_latest(text: str, latest: bool) -> None:
    assert Tag.parse(text).is_latest is latest


def test_latest_constant() -> None:
    assert LATEST == "latest"
    assert Tag("iris", LATEST).is_latest


def test_with_version_keeps_the_name_and_validates() -> None:
    assert Tag("iris").with_version("v2") == Tag("iris", "v2")
    with pytest.raises(InvalidTag, match="The version in tag 'iris:V2' contains 'V'"):
        Tag("iris").with_version("V2")


def test_tags_are_frozen_hashable_and_ordered() -> None:
    tag = Tag("iris", "v1")
    with pytest.raises(AttributeError):
        tag.name = "other"  # type: ignore[misc]
    assert {tag, Tag.parse("iris:v1")} == {tag}
    assert sorted([Tag("b", "v1"), Tag("a", "v2"), Tag("a", "v1")]) == [
        Tag("a", "v1"),
        Tag("a", "v2"),
        Tag("b", "v1"),
    ]


def test_invalid_tag_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        Tag.parse("")


# -- bad tags: class and message -----------------------------------------------------------


def bad(text: str) -> InvalidTag:
    with pytest.raises(InvalidTag) as caught:
        Tag.parse(text)
    assert caught.value.status_code == 400
    return caught.value


@pytest.mark.parametrize("text", ["", ":v1"])
def test_empty_name(text: str) -> None:
    error = bad(text)
    assert error.message == (
        f"Tag '{text}' has an empty name. Write it as 'name' or 'name:version', "
        "e.g. 'iris' or 'iris:v1'."
    )
    assert error.detail == {"tag": text, "part": "name"}


def test_empty_version() -> None:
    assert bad("iris:").message == (
        "Tag 'iris:' ends with ':' but has no version. Write 'name' for the newest version "
        "or 'name:version' for one version."
    )


@pytest.mark.parametrize("text", ["iris:v1:extra", "a:b:c", "iris::v1"])
def test_two_colons(text: str) -> None:
    assert bad(text).message == f"Tag '{text}' has more than one ':'. Write it as 'name:version'."


@pytest.mark.parametrize(
    ("text", "part", "shown"),
    [
        ("Iris", "name", "'I'"),
        ("ir is", "name", "' '"),
        ("team/iris", "name", "'/'"),
        ("A B/c", "name", "' ' '/' 'A' 'B'"),
        ("iris:V1", "version", "'V'"),
        ("iris:v 1", "version", "' '"),
        ("iris:v1/../x", "version", "'/'"),
        ("iris@home", "name", "'@'"),
    ],
)
def test_bad_characters_are_listed(text: str, part: str, shown: str) -> None:
    error = bad(text)
    assert error.message == f"The {part} in tag '{text}' contains {shown}. A {part} {RULE}"
    assert error.detail == {"tag": text, "part": part}


@pytest.mark.parametrize(
    ("text", "part", "first"),
    [
        (".iris", "name", "."),
        ("-iris", "name", "-"),
        ("_iris", "name", "_"),
        ("iris:.v1", "version", "."),
        ("iris:-v1", "version", "-"),
    ],
)
def test_leading_punctuation(text: str, part: str, first: str) -> None:
    assert bad(text).message == f"The {part} in tag '{text}' starts with '{first}'. A {part} {RULE}"


def test_name_too_long() -> None:
    text = "a" * (MAX_NAME_LENGTH + 1)
    error = bad(text)
    assert error.message == (
        f"The name in tag '{text}' is 64 characters long; at most 63 are allowed. "
        "Choose a shorter one."
    )
    assert error.detail == {"tag": text, "part": "name", "length": 64, "limit": 63}


def test_version_too_long() -> None:
    text = "iris:" + "v" * (MAX_VERSION_LENGTH + 1)
    assert bad(text).message == (
        f"The version in tag '{text}' is 129 characters long; at most 128 are allowed. "
        "Choose a shorter one."
    )


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (5, "int"), (b"iris", "bytes")])
def test_non_string_input(value: Any, kind: str) -> None:
    with pytest.raises(InvalidTag) as caught:
        Tag.parse(value)
    assert caught.value.message == f"A tag must be a string like 'iris:v1', not {kind}."


def test_constructor_validates_too() -> None:
    with pytest.raises(InvalidTag, match=r"^The name in tag 'Iris:v1' contains 'I'\."):
        Tag("Iris", "v1")
    with pytest.raises(InvalidTag, match=r"^Tag 'iris:' has an empty version\."):
        Tag("iris", "")


# -- generated versions --------------------------------------------------------------------


def test_new_version_format() -> None:
    moment = datetime(2026, 11, 24, 15, 30, 12, 482_999, tzinfo=UTC)
    version = new_version(moment)
    assert VERSION.fullmatch(version), version
    assert version.startswith("20261124-153012-482-")
    assert Tag("iris", version).version == version


def test_new_version_is_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    moment = datetime(2026, 1, 1, 1, 0, 0, tzinfo=plus_two)
    assert new_version(moment).startswith("20251231-230000-000-")


def test_new_version_without_a_time_uses_now() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    version = new_version()
    after = datetime.now(UTC)
    stamp = datetime.strptime(version[:15], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
    assert before <= stamp <= after


def test_new_versions_sort_by_creation_time() -> None:
    start = datetime(2026, 12, 31, 23, 59, 58, 998_000, tzinfo=UTC)
    steps = [
        timedelta(0),
        timedelta(milliseconds=1),
        timedelta(milliseconds=2),
        timedelta(seconds=1),
        timedelta(seconds=1, milliseconds=999),
        timedelta(seconds=2),  # into the next year
        timedelta(days=40),
        timedelta(days=400),
    ]
    moments = [start + step for step in steps]
    versions = [new_version(moment) for moment in moments]
    shuffled = versions[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled) == versions
    assert len(set(versions)) == len(versions)


def test_versions_made_in_a_tight_loop_are_unique() -> None:
    versions = [new_version() for _ in range(2000)]
    assert len(set(versions)) == 2000


def test_versions_made_at_the_same_instant_are_unique() -> None:
    moment = datetime(2026, 11, 24, tzinfo=UTC)
    versions = {new_version(moment) for _ in range(2000)}
    assert len(versions) == 2000
