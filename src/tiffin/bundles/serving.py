"""Serving a bundle: ``tiffin serve NAME[:VERSION]``.

The service is imported from the bundle's own copy of the source (``src/``), never from
the current directory, and every model reference it declares is pinned to the exact
version the bundle recorded. A pinned model that is missing from the model store, or
whose files' digest differs from the one recorded, stops the server before it starts.
"""

from __future__ import annotations

from pathlib import Path

from tiffin.bundles.bundle import Bundle
from tiffin.bundles.store import BundleStore
from tiffin.exceptions import IntegrityError, InvalidTag, ModelNotFound, NotFound
from tiffin.models import ModelStore
from tiffin.service import ServiceSpec
from tiffin.service.loader import load_service
from tiffin.storage.local import files_digest
from tiffin.tag import Tag

__all__ = ["find_bundle", "load_bundle"]


def find_bundle(target: str, directory: Path, store: BundleStore) -> Bundle | None:
    """The bundle ``target`` names, or None when it names service source instead.

    ``target`` is a bundle when it parses as a tag (``iris``, ``iris:latest``,
    ``iris:20261124-...``), the bundle store has it, and ``directory`` has no module or
    file of that name (local source wins, so ``service:Iris`` next to ``service.py``
    is always the source).
    """
    module = target.rpartition(":")[0] or target
    if (
        module.endswith(".py")
        or "/" in module
        or (directory / f"{module.split('.')[0]}.py").is_file()
        or (directory / module.split(".")[0]).is_dir()
    ):
        return None
    try:
        tag = Tag.parse(target)
    except InvalidTag:
        return None
    try:
        return store.get(tag)
    except NotFound:
        return None


def load_bundle(bundle: Bundle, models: ModelStore) -> ServiceSpec:
    """Import the bundle's service from its source and pin its models.

    Raises:
        ModelNotFound: a model the bundle recorded is not in ``models``.
        IntegrityError: a recorded model's files differ from when the bundle was built.
    """
    pinned = {}
    for pin in bundle.info.models:
        try:
            model = models.get(pin.tag)
        except ModelNotFound:
            raise ModelNotFound(
                f"Bundle '{bundle.tag}' was built with model '{pin.tag}', which is not in the "
                f"model store at {models.home}. Import it ('tiffin models import FILE') or "
                "point TIFFIN_HOME at the store that has it.",
                detail={"bundle": str(bundle.tag), "tag": pin.tag, "home": str(models.home)},
            ) from None
        digest = files_digest(model.info.model_dump(mode="json")["files"])
        if digest != pin.sha256:
            raise IntegrityError(
                f"Model '{pin.tag}' is not the one bundle '{bundle.tag}' was built with: its "
                f"files' digest is {digest[:12]}..., the bundle recorded {pin.sha256[:12]}.... "
                "Restore that model version, or build the bundle again to serve this one.",
                detail={
                    "bundle": str(bundle.tag),
                    "tag": pin.tag,
                    "expected": pin.sha256,
                    "actual": digest,
                },
            )
        if pin.ref is not None:
            pinned[pin.ref] = model
    spec = load_service(bundle.info.service, bundle.source)
    for service in spec.related():
        for ref in service.models.values():
            chosen = pinned.get(str(ref.tag))
            if chosen is not None:
                ref.pin(chosen)
    return spec
