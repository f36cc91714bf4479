"""Tags name things in a store: ``name:version``.

A version is generated at save time from the creation time (UTC, to the millisecond) and
eight random characters, so versions sort by creation time and versions made in the same
millisecond (a tight loop, or two processes saving at once) are still distinct:
``iris:20261124-153012-482-k3x9q2ab``.

``latest`` is not a version: it resolves to the newest one. Other words in the version
slot may be user aliases (``iris:production``) that a store resolves.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime

from tiffin.exceptions import InvalidTag

__all__ = ["LATEST", "MAX_NAME_LENGTH", "MAX_VERSION_LENGTH", "Tag", "new_version"]

LATEST = "latest"
MAX_NAME_LENGTH = 63
MAX_VERSION_LENGTH = 128

_PART = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ALLOWED = set(string.ascii_lowercase + string.digits + "._-")
_RANDOM_ALPHABET = string.ascii_lowercase + string.digits
# 36**8 suffixes: a few thousand versions made in one millisecond collide with odds of
# about one in a million (four characters collided in ~10% of 2000-version loops).
_RANDOM_LENGTH = 8


def _check(part: str, what: str, limit: int, tag: str) -> None:
    if not part:
        raise InvalidTag(
            f"Tag '{tag}' has an empty {what}. Write it as 'name' or 'name:version', "
            "e.g. 'iris' or 'iris:v1'.",
            detail={"tag": tag, "part": what},
        )
    if len(part) > limit:
        raise InvalidTag(
            f"The {what} in tag '{tag}' is {len(part)} characters long; at most {limit} "
            "are allowed. Choose a shorter one.",
            detail={"tag": tag, "part": what, "length": len(part), "limit": limit},
        )
    if not _PART.fullmatch(part):
        bad = sorted({c for c in part if c not in _ALLOWED})
        if bad:
            shown = " ".join(repr(c) for c in bad)
            problem = f"contains {shown}"
        else:
            problem = f"starts with {part[0]!r}"
        raise InvalidTag(
            f"The {what} in tag '{tag}' {problem}. A {what} uses lowercase letters, digits, "
            "'.', '_' and '-', and starts with a letter or digit.",
            detail={"tag": tag, "part": what},
        )


@dataclass(frozen=True, order=True, slots=True)
class Tag:
    """A validated ``name[:version]``.

    Example:
        Tag.parse("iris:v1")         # Tag(name='iris', version='v1')
        Tag.parse("iris").version     # None: "the newest", same as "iris:latest"
        str(Tag("iris", "v1"))        # 'iris:v1'
    """

    name: str
    version: str | None = None

    def __post_init__(self) -> None:
        shown = self.name if self.version is None else f"{self.name}:{self.version}"
        _check(self.name, "name", MAX_NAME_LENGTH, shown)
        if self.version is not None:
            _check(self.version, "version", MAX_VERSION_LENGTH, shown)

    @classmethod
    def parse(cls, text: str) -> Tag:
        """Parse ``"name"`` or ``"name:version"``; raise ``InvalidTag`` saying what is wrong."""
        if not isinstance(text, str):
            raise InvalidTag(
                f"A tag must be a string like 'iris:v1', not {type(text).__name__}.",
                detail={"tag": repr(text)},
            )
        name, sep, version = text.strip().partition(":")
        if sep and ":" in version:
            raise InvalidTag(
                f"Tag '{text}' has more than one ':'. Write it as 'name:version'.",
                detail={"tag": text},
            )
        if sep and not version:
            raise InvalidTag(
                f"Tag '{text}' ends with ':' but has no version. Write 'name' for the newest "
                "version or 'name:version' for one version.",
                detail={"tag": text, "part": "version"},
            )
        return cls(name, version if sep else None)

    @property
    def is_latest(self) -> bool:
        """True when this tag means "the newest version" (no version, or ``latest``)."""
        return self.version is None or self.version == LATEST

    def with_version(self, version: str) -> Tag:
        """The same name with another version."""
        return Tag(self.name, version)

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def new_version(now: datetime | None = None) -> str:
    """A fresh version string, sortable by creation time: ``20261124-153012-482-k3x9q2ab``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    suffix = "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return f"{moment:%Y%m%d-%H%M%S}-{moment.microsecond // 1000:03d}-{suffix}"
