"""Where items (models, bundles) are kept: a versioned local store and safe archives
(``tiffin.storage.archive``, imported where archives are read or written)."""

from tiffin.storage.local import ItemKind, LocalStore, Staging

__all__ = ["ItemKind", "LocalStore", "Staging"]
