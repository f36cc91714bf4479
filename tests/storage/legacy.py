"""Models as tiffin wrote them before BLAKE3, whose file entries carry a sha256."""

from __future__ import annotations

import hashlib

from tiffin.models import Model, ModelStore
from tiffin.storage.local import dump_manifest, read_manifest


def as_sha256(store: ModelStore, model: Model) -> Model:
    """Rewrite a saved model's ``model.yaml`` as tiffin wrote it before BLAKE3: every
    file entry ``{"sha256": ..., "size": ...}``. Returns the model read back."""
    path = model.path / "model.yaml"
    manifest = read_manifest(path)
    for rel, entry in manifest["files"].items():
        data = (model.path / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": entry["size"]}
    path.write_text(dump_manifest(manifest), encoding="utf-8")
    legacy = store.get(model.tag)
    assert all(entry.algorithm == "sha256" for entry in legacy.info.files.values())
    return legacy
