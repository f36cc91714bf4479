"""Where items (models, bundles) are kept: a versioned local store and safe archives."""

from tiffin.storage.archive import export_item, import_item
from tiffin.storage.local import ItemKind, LocalStore, Staging

__all__ = ["ItemKind", "LocalStore", "Staging", "export_item", "import_item"]
