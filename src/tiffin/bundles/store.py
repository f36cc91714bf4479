"""The bundle store: find, delete, export, import, push and pull built bundles.

Bundles live under ``$TIFFIN_HOME/bundles``, with the same layout, tag rules and atomic
writes as models (``tiffin.storage.local``); ``tiffin.bundles.build`` writes them. A
bundle travels to and from a remote store with the models it pins (``push``, ``pull``),
so a pulled bundle can be served at once.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tiffin import config
from tiffin.bundles.bundle import Bundle, BundleInfo, ModelPin
from tiffin.exceptions import (
    BundleExists,
    BundleNotFound,
    IntegrityError,
    InvalidTag,
    ModelNotFound,
    TiffinError,
)
from tiffin.models.store import MODELS, ModelStore
from tiffin.storage import ItemKind, LocalStore
from tiffin.storage.local import files_digest
from tiffin.storage.remote import (
    ItemProgress,
    Record,
    RemoteStore,
    Transfer,
    connect,
    pull_item,
    push_item,
)
from tiffin.tag import Tag

__all__ = ["BUNDLES", "BundleStore", "ensure_bundle"]

BUNDLES = ItemKind(
    noun="bundle",
    manifest="bundle.yaml",
    command="tiffin bundles",
    not_found=BundleNotFound,
    exists=BundleExists,
)

Progress = Callable[[int], None]


class BundleStore:
    """Built bundles under ``home/bundles``.

    Args:
        home: tiffin's home directory (``TIFFIN_HOME``).
        durable: fsync every file before a bundle becomes visible.

    Example:
        store = BundleStore(Path("~/.tiffin"))
        store.get("iris:latest").source
    """

    def __init__(self, home: Path, *, durable: bool = False) -> None:
        self.home = Path(home).expanduser()
        self.items = LocalStore(self.home / "bundles", BUNDLES, durable=durable)

    @classmethod
    def default(cls) -> BundleStore:
        """The store at the process settings' ``home``."""
        return cls.from_settings(config.current())

    @classmethod
    def from_settings(cls, settings: config.Settings) -> BundleStore:
        return cls(settings.home, durable=settings.durable_writes)

    def get(self, tag: str | Tag) -> Bundle:
        """The bundle ``tag`` means: ``name``, ``name:latest``, ``name:version``, ``name:alias``."""
        resolved = self.items.resolve(tag)
        return self._bundle(resolved, self.items.manifest(resolved))

    def find(self, tag: str | Tag) -> Bundle | None:
        """Like ``get``, but None when there is no such bundle."""
        try:
            return self.get(tag)
        except BundleNotFound:
            return None

    def _bundle(self, tag: Tag, manifest: Mapping[str, Any]) -> Bundle:
        try:
            info = BundleInfo.model_validate(manifest)
        except ValidationError as exc:
            raise TiffinError(
                f"The bundle.yaml of '{tag}' is damaged ({exc.errors()[0]['msg']}). Delete "
                f"it with 'tiffin bundles delete {tag}' and build it again.",
                detail={"tag": str(tag)},
            ) from None
        return Bundle(tag, self.items.path(tag), info)

    def list(self, name: str | None = None) -> list[Bundle]:
        """Built bundles, by name then oldest first (only ``name``'s when given)."""
        return [self._bundle(tag, manifest) for tag, manifest in self.items.items(name)]

    def verify(self, tag: str | Tag) -> Bundle:
        """Check every file of a bundle against its recorded digest."""
        bundle = self.get(tag)
        self.items.verify(bundle.tag)
        return bundle

    def delete(self, tag: str | Tag, *, force: bool = False) -> Tag:
        """Delete one version; ``force`` also removes aliases that point to it."""
        return self.items.delete(tag, force=force)

    def alias(self, tag: str | Tag, alias: str) -> Tag:
        """Point ``name:alias`` at the version ``tag`` means."""
        return self.items.set_alias(tag, alias)

    def unalias(self, name: str, alias: str) -> None:
        """Remove the alias ``name:alias``."""
        self.items.remove_alias(name, alias)

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` for a bundle name."""
        return self.items.aliases(name)

    def export(self, tag: str | Tag, dest: Path | str, *, progress: Progress | None = None) -> Path:
        """Write a bundle to one archive file (``.tar``, or gzip with ``.tar.gz``). The
        models it pins are not in it: export them with ``tiffin models export``."""
        from tiffin.storage.archive import export_item

        return export_item(self.items, self.items.resolve(tag), Path(dest), progress=progress)

    def import_(self, source: Path | str, *, progress: Progress | None = None) -> Bundle:
        """Import a bundle archive. Refuses unsafe or corrupt archives and writes nothing
        then; importing a version that is already there with the same files does nothing."""
        from tiffin.storage.archive import import_item, manifest_schema

        source = Path(source)
        validate = manifest_schema(source, BundleInfo, BUNDLES.manifest)
        tag, _ = import_item(self.items, source, validate=validate, progress=progress)
        return self.get(tag)

    # -- remote stores ---------------------------------------------------------------

    def push(
        self,
        tag: str | Tag,
        remote: str | RemoteStore,
        models: ModelStore,
        *,
        progress: ItemProgress | None = None,
    ) -> builtins.list[Transfer]:
        """Copy a bundle and the models it pins (from ``models``) to a remote store.

        The models go first, so a bundle in the remote store always has its models
        there. Returns one ``Transfer`` per model, then the bundle's.

        Example:
            store.push("iris:latest", "s3://team-models/prod", ModelStore.default())
        """
        bundle = self.get(tag)
        with connect(remote) as opened:
            done = [_push_pin(bundle, pin, models, opened, progress) for pin in bundle.info.models]
            done.append(push_item(self.items, bundle.tag, opened, progress=progress))
        return done

    def pull(
        self,
        tag: str | Tag,
        remote: str | RemoteStore,
        models: ModelStore,
        *,
        progress: ItemProgress | None = None,
    ) -> builtins.list[Transfer]:
        """Copy a bundle and the models it pins from a remote store into this store and
        ``models``, each verified against its recorded digests; the models first, so a
        bundle that appears here can be served. Returns one ``Transfer`` per model, then
        the bundle's.

        Example:
            store.pull("iris:production", "s3://team-models/prod", ModelStore.default())
        """
        with connect(remote) as opened:
            record = opened.resolve(BUNDLES, tag)
            info = _remote_info(record)
            done = []
            for pin in info.models:
                found = opened.resolve(MODELS, pin.tag)
                if found.digest != pin.sha256:
                    raise _differs(record.tag, pin, opened.url, found.digest)
                done.append(models.pull(found.tag, opened, progress=progress))
            done.append(
                pull_item(self.items, record.tag, opened, progress=progress, validate=_remote_info)
            )
        return done


def _remote_info(record: Record) -> BundleInfo:
    try:
        return BundleInfo.model_validate(record.manifest)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        raise IntegrityError(
            f"The bundle.yaml of '{record.tag}' in the remote store has a bad '{field}' "
            f"({problem['msg']}). Nothing was pulled; push that version again.",
            detail={"tag": str(record.tag), "field": field},
        ) from None


def _differs(bundle: Tag, pin: ModelPin, where: str, digest: str) -> IntegrityError:
    return IntegrityError(
        f"Model '{pin.tag}' in {where} is not the one bundle '{bundle}' was built with: its "
        f"files' digest is {digest[:12]}..., the bundle recorded {pin.sha256[:12]}.... "
        "Push the bundle again from the machine that built it.",
        detail={"bundle": str(bundle), "tag": pin.tag, "expected": pin.sha256, "actual": digest},
    )


def _push_pin(
    bundle: Bundle,
    pin: ModelPin,
    models: ModelStore,
    remote: RemoteStore,
    progress: ItemProgress | None,
) -> Transfer:
    tag = Tag.parse(pin.tag)
    assert tag.version is not None
    there = remote.record(MODELS.noun, tag.name, tag.version)
    if there is not None and there.digest == pin.sha256:
        return Transfer(tag, remote.url, added=False, files=len(there.files))
    try:
        model = models.get(tag)
    except ModelNotFound:
        raise ModelNotFound(
            f"Bundle '{bundle.tag}' pins model '{pin.tag}', which is neither in the model "
            f"store at {models.home} nor in {remote.url}. Push it from the machine that has it "
            "('tiffin models push'), then push the bundle again.",
            detail={"bundle": str(bundle.tag), "tag": pin.tag, "remote": remote.url},
        ) from None
    digest = files_digest(model.info.model_dump(mode="json")["files"])
    if digest != pin.sha256:
        raise _differs(bundle.tag, pin, f"the model store at {models.home}", digest)
    return models.push(tag, remote, progress=progress)


def _names_source(target: str, directory: Path) -> bool:
    """Whether ``target`` names service source in ``directory`` (the rule ``tiffin serve``
    applies before looking for a bundle: local source wins)."""
    module = target.rpartition(":")[0] or target
    return (
        module.endswith(".py")
        or "/" in module
        or (directory / f"{module.split('.')[0]}.py").is_file()
        or (directory / module.split(".")[0]).is_dir()
    )


def ensure_bundle(target: str, directory: Path, settings: config.Settings) -> Bundle | None:
    """The bundle ``target`` names, pulled with its models from the ``remote`` setting
    (TIFFIN_REMOTE) into the stores at ``settings.home`` when they lack it.

    None when ``target`` names service source in ``directory``, is not a tag, no remote
    is set, or the remote has no such bundle: the caller then treats it as source. This
    is what lets ``tiffin serve iris:production`` start on a machine that has only the
    remote store's URL.

    Example:
        bundle = ensure_bundle("iris:production", Path.cwd(), tiffin.config.current())
    """
    if not settings.remote or _names_source(target, directory):
        return None
    try:
        tag = Tag.parse(target)
    except InvalidTag:
        return None
    bundles = BundleStore.from_settings(settings)
    found = bundles.find(tag)
    if found is not None:
        return found
    try:
        done = bundles.pull(tag, settings.remote, ModelStore.from_settings(settings))
    except BundleNotFound:
        return None
    return bundles.get(done[-1].tag)
