"""The model store: save, find, alias, delete, export and import models.

Models live under ``$TIFFIN_HOME/models`` (see ``tiffin.storage.local`` for the layout
and why every write is atomic). ``ModelStore`` is the whole API; the functions in
``tiffin.models`` call it on the store the settings point to.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pydantic import ValidationError

from tiffin import config
from tiffin.exceptions import (
    FrameworkError,
    IntegrityError,
    InvalidArgument,
    ModelExists,
    ModelNotFound,
    TiffinError,
    describe,
)
from tiffin.models import frameworks
from tiffin.models.model import Model, ModelInfo, Signature
from tiffin.storage import ItemKind, LocalStore, Staging
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

__all__ = ["MODELS", "ModelBuilder", "ModelRef", "ModelStore"]

MODELS = ItemKind(
    noun="model",
    manifest="model.yaml",
    command="tiffin models",
    not_found=ModelNotFound,
    exists=ModelExists,
)

_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
_METHOD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Progress = Callable[[int], None]


def _tiffin_version() -> str:
    try:
        return importlib.metadata.version("tiffin")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _plain(value: Any, where: str) -> Any:
    """``value`` as YAML-safe plain data, or ``InvalidArgument`` naming where it is not."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    for plain_type in (bool, int, float, str):  # subclasses such as numpy.float64
        if isinstance(value, plain_type):
            return plain_type(value)
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidArgument(
                    f"{where} has the key {key!r} of type {type(key).__name__}; keys must be "
                    "strings.",
                    detail={"field": where},
                )
            out[key] = _plain(item, f"{where}[{key!r}]")
        return out
    item = getattr(value, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            plain = item()
        except (TypeError, ValueError):
            plain = value
        if plain is not value and isinstance(plain, bool | int | float | str):
            return plain
    raise InvalidArgument(
        f"{where} is a {type(value).__name__}; metadata holds plain data only (numbers, strings, "
        "booleans, None, lists and dicts). Convert it, e.g. with float() or str().",
        detail={"field": where, "type": type(value).__name__},
    )


def _labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    if labels is not None and not isinstance(labels, Mapping):
        raise InvalidArgument(
            f"labels must be a dict of strings to strings, not {type(labels).__name__}.",
            detail={"field": "labels"},
        )
    checked = {}
    for key, value in (labels or {}).items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise InvalidArgument(
                f"Label key {key!r} is not valid: use letters, digits, '.', '_', '/' and '-', "
                "start with a letter or digit, at most 63 characters.",
                detail={"field": f"labels[{key!r}]"},
            )
        if not isinstance(value, str) or len(value) > 255:
            got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
            raise InvalidArgument(
                f"Label '{key}' must have a string value of at most 255 characters, not {got}.",
                detail={"field": f"labels[{key!r}]"},
            )
        checked[key] = value
    return checked


def _signatures(
    signatures: Mapping[str, Mapping[str, Any] | Signature] | list[str] | None,
) -> dict[str, dict[str, Any]]:
    if isinstance(signatures, list):
        signatures = {method: {} for method in signatures}
    elif signatures is not None and not isinstance(signatures, Mapping):
        raise InvalidArgument(
            "signatures must be a list of method names or a dict of method names to options, "
            f"not {type(signatures).__name__}.",
            detail={"field": "signatures"},
        )
    checked = {}
    for method, options in (signatures or {}).items():
        if not isinstance(method, str) or not _METHOD.fullmatch(method):
            raise InvalidArgument(
                f"Signature name {method!r} is not a Python method name.",
                detail={"field": f"signatures[{method!r}]"},
            )
        try:
            signature = (
                options if isinstance(options, Signature) else Signature.model_validate(options)
            )
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"])
            raise InvalidArgument(
                f"Signature '{method}' has a bad option '{field}': {problem['msg']}. Options are "
                "'batchable' (bool) and 'batch_dim' (int).",
                detail={"field": f"signatures[{method!r}].{field}"},
            ) from None
        checked[method] = signature.model_dump()
    return checked


class ModelBuilder:
    """A model being written as a directory of files; see ``ModelStore.create``.

    Attributes:
        path: write the model's files under this directory.
        tag: the tag the model will be saved under.
        metadata: may be updated inside the ``with`` block (e.g. with scores).
        model: the saved ``Model``, once the ``with`` block has ended without error.
    """

    def __init__(
        self,
        store: ModelStore,
        staging: Staging,
        *,
        framework: frameworks.Framework,
        fields: dict[str, Any],
    ) -> None:
        self._store = store
        self._staging = staging
        self._framework = framework
        self._fields = fields
        self.metadata: dict[str, Any] = fields["metadata"]
        self.model: Model | None = None

    @property
    def path(self) -> Path:
        return self._staging.path

    @property
    def tag(self) -> Tag:
        return self._staging.tag

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._staging.discard()
            return
        try:
            self._fields["metadata"] = _plain(self.metadata, "metadata")
            tag, _ = self._staging.commit(self._fields)
        except BaseException:
            self._staging.discard()
            raise
        self.model = self._store.get(tag)


class ModelStore:
    """Saved models under ``home/models``.

    Args:
        home: tiffin's home directory (``TIFFIN_HOME``).
        durable: fsync every file before a model becomes visible (survives power loss).

    Example:
        store = ModelStore(Path("/tmp/home"))
        model = store.save("iris", clf, metadata={"acc": 0.97})
        store.get("iris:latest").load()
    """

    def __init__(self, home: Path, *, durable: bool = False) -> None:
        self.home = Path(home).expanduser()
        self.items = LocalStore(self.home / "models", MODELS, durable=durable)

    @classmethod
    def default(cls) -> ModelStore:
        """The store at the process settings' ``home``."""
        return cls.from_settings(config.current())

    @classmethod
    def from_settings(cls, settings: config.Settings) -> ModelStore:
        return cls(settings.home, durable=settings.durable_writes)

    # -- saving ----------------------------------------------------------------------

    def _fields(
        self,
        handler: frameworks.Framework,
        metadata: Mapping[str, Any] | None,
        labels: Mapping[str, str] | None,
        signatures: Mapping[str, Mapping[str, Any] | Signature] | list[str] | None,
    ) -> dict[str, Any]:
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidArgument(
                f"metadata must be a dict, not {type(metadata).__name__}.",
                detail={"field": "metadata"},
            )
        return {
            "framework": {"name": handler.name, "version": handler.version(), "options": {}},
            "python_version": platform.python_version(),
            "tiffin_version": _tiffin_version(),
            "signatures": _signatures(signatures),
            "metadata": _plain(dict(metadata or {}), "metadata"),
            "labels": _labels(labels),
        }

    def save(
        self,
        name: str,
        obj: Any,
        *,
        framework: str | frameworks.Framework | None = None,
        metadata: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        signatures: Mapping[str, Mapping[str, Any] | Signature] | list[str] | None = None,
    ) -> Model:
        """Save ``obj`` as a new version of ``name`` (or as ``name:version`` if given).

        Args:
            name: ``"iris"`` (a version is generated) or ``"iris:v1"``.
            obj: the model object.
            framework: a framework name or handler; detected from the object when omitted.
            metadata: plain data kept with the model (scores, parameters, dataset ids).
            labels: string key/values to filter on (``tiffin models list --label team=ml``).
            signatures: model methods and how they may be called, e.g.
                ``{"predict": {"batchable": True}}``; the framework's default when omitted.
        """
        tag = Tag.parse(name)
        handler = self._handler(framework, obj)
        fields = self._fields(handler, metadata, labels, signatures or handler.signatures(obj))
        with self.items.stage(tag.name, tag.version) as staging:
            try:
                fields["framework"]["options"] = _plain(handler.save(obj, staging), "options")
            except TiffinError:
                raise
            except Exception as exc:
                raise FrameworkError(
                    f"The '{handler.name}' framework could not save the model '{tag.name}': "
                    f"{describe(exc)}. Pass framework= to choose another handler, "
                    "or make the object serialisable by this one.",
                    detail={"framework": handler.name, "tag": str(tag)},
                ) from exc
            final, _ = staging.commit(fields)
        return self.get(final)

    def create(
        self,
        name: str,
        *,
        framework: str | frameworks.Framework = "files",
        metadata: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        signatures: Mapping[str, Mapping[str, Any] | Signature] | list[str] | None = None,
    ) -> ModelBuilder:
        """Save a model that is a directory of files, written inside a ``with`` block.

        Example:
            with store.create("tokenizer", labels={"team": "nlp"}) as m:
                (m.path / "vocab.txt").write_text(vocab)
            m.model  # Model(tag="tokenizer:...")
        """
        tag = Tag.parse(name)
        handler = self._handler(framework, None)
        fields = self._fields(handler, metadata, labels, signatures)
        staging = self.items.stage(tag.name, tag.version)
        return ModelBuilder(self, staging, framework=handler, fields=fields)

    def _handler(
        self, framework: str | frameworks.Framework | None, obj: Any
    ) -> frameworks.Framework:
        if framework is None:
            return frameworks.detect(obj)
        if isinstance(framework, frameworks.Framework):
            return framework
        if isinstance(framework, str):
            return frameworks.get(framework)
        raise InvalidArgument(
            f"framework must be a name such as 'sklearn' or a Framework, not "
            f"{type(framework).__name__}.",
            detail={"field": "framework"},
        )

    # -- reading ---------------------------------------------------------------------

    def get(self, tag: str | Tag) -> Model:
        """The model ``tag`` means: ``name``, ``name:latest``, ``name:version``, ``name:alias``."""
        resolved = self.items.resolve(tag)
        return self._model(resolved, self.items.manifest(resolved))

    def _model(self, tag: Tag, manifest: Mapping[str, Any]) -> Model:
        try:
            info = ModelInfo.model_validate(manifest)
        except ValidationError as exc:
            raise TiffinError(
                f"The model.yaml of '{tag}' is damaged ({exc.errors()[0]['msg']}). Delete "
                f"it with 'tiffin models delete {tag}' and save it again.",
                detail={"tag": str(tag)},
            ) from None
        return Model(tag, self.items.path(tag), info)

    def list(
        self, name: str | None = None, *, labels: Mapping[str, str] | None = None
    ) -> list[Model]:
        """Saved models, by name then oldest first; only ``name``'s and those having every
        label in ``labels`` when given."""
        wanted = dict(labels or {})
        found = []
        for tag, manifest in self.items.items(name):
            have = manifest.get("labels") or {}
            if all(have.get(k) == v for k, v in wanted.items()):
                found.append(self._model(tag, manifest))
        return found

    def verify(self, tag: str | Tag) -> Model:
        """Check every file of a model against its recorded digest."""
        model = self.get(tag)
        self.items.verify(model.tag)
        return model

    # -- changing --------------------------------------------------------------------

    def delete(self, tag: str | Tag, *, force: bool = False) -> Tag:
        """Delete one version; ``force`` also removes aliases that point to it."""
        return self.items.delete(tag, force=force)

    def alias(self, tag: str | Tag, alias: str) -> Tag:
        """Point ``name:alias`` at the version ``tag`` means (moving it if it exists)."""
        return self.items.set_alias(tag, alias)

    def unalias(self, name: str, alias: str) -> None:
        """Remove the alias ``name:alias``."""
        self.items.remove_alias(name, alias)

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` for a model name."""
        return self.items.aliases(name)

    # -- archives --------------------------------------------------------------------

    def export(self, tag: str | Tag, dest: Path | str, *, progress: Progress | None = None) -> Path:
        """Write a model to one archive file (``.tar``, or gzip with ``.tar.gz``)."""
        resolved = self.items.resolve(tag)
        from tiffin.storage.archive import export_item  # tarfile and its codecs, only here

        return export_item(self.items, resolved, Path(dest), progress=progress)

    def import_(self, source: Path | str, *, progress: Progress | None = None) -> Model:
        """Import a model archive. Refuses unsafe or corrupt archives and writes nothing
        then; importing a version that is already there with the same files does nothing."""
        from tiffin.storage.archive import import_item, manifest_schema

        source = Path(source)
        validate = manifest_schema(source, ModelInfo, MODELS.manifest)
        tag, _ = import_item(self.items, source, validate=validate, progress=progress)
        return self.get(tag)

    # -- remote stores ---------------------------------------------------------------

    def push(
        self,
        tag: str | Tag,
        remote: str | RemoteStore,
        *,
        progress: ItemProgress | None = None,
    ) -> Transfer:
        """Copy a model to a remote store (a URL or an open ``RemoteStore``) under the
        same version. Chunks the remote has are not sent again, so an interrupted push
        resumes; pushing a version the remote has identically sends nothing, and one it
        has with other files is refused (``ModelExists``).

        Example:
            store.push("iris:latest", "s3://team-models/prod").moved  # bytes sent
        """
        with connect(remote) as opened:
            return push_item(self.items, tag, opened, progress=progress)

    def pull(
        self,
        tag: str | Tag,
        remote: str | RemoteStore,
        *,
        progress: ItemProgress | None = None,
    ) -> Transfer:
        """Copy a model from a remote store (``latest``, a version or a remote alias) into
        this store. Every byte is checked against the digests the remote records before
        the model appears here, in one step; an interrupted pull resumes where it stopped.

        Example:
            store.get(store.pull("iris:production", "s3://team-models/prod").tag).load()
        """
        with connect(remote) as opened:
            return pull_item(
                self.items, tag, opened, progress=progress, validate=_check_remote_info
            )


def _check_remote_info(record: Record) -> None:
    try:
        ModelInfo.model_validate(record.manifest)
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        raise IntegrityError(
            f"The model.yaml of '{record.tag}' in the remote store has a bad '{field}' "
            f"({problem['msg']}). Nothing was pulled; push that version again.",
            detail={"tag": str(record.tag), "field": field},
        ) from None


class ModelRef:
    """A lazy reference to a saved model, resolved the first time it is used.

    A service declares the models it needs as class attributes; the tag is checked at
    once, the store is read only when the model is first resolved or loaded.

    Example:
        class Iris:
            model = tiffin.models.ref("iris:latest")
            def __init__(self) -> None:
                self.clf = self.model.load()
    """

    def __init__(self, tag: str | Tag, *, store: ModelStore | None = None) -> None:
        self.tag = tag if isinstance(tag, Tag) else Tag.parse(tag)
        self.attribute: str | None = None
        self._store = store
        self._model: Model | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self.attribute = name

    def pin(self, model: Model) -> None:
        """Make this reference mean ``model`` from now on, whatever its tag would resolve
        to (a bundle pins the exact versions it was built with)."""
        self._model = model

    def resolve(self) -> Model:
        """The model this reference means, looked up once and then kept."""
        if self._model is None:
            store = self._store or ModelStore.default()
            self._model = store.get(self.tag)
        return self._model

    @property
    def path(self) -> Path:
        return self.resolve().path

    @property
    def info(self) -> ModelInfo:
        return self.resolve().info

    def load(self, **kwargs: Any) -> Any:
        """Resolve, then load the model object."""
        return self.resolve().load(**kwargs)

    def __repr__(self) -> str:
        return f'ModelRef("{self.tag}")'
