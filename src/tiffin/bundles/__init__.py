"""Bundles: a service, the exact models it uses and its environment, built into one
versioned, self-contained directory of the bundle store.

Example:
    bundle = tiffin.bundles.build(Path("."))     # reads ./tiffin.yaml
    bundle.tag                                    # Tag('iris', '20261124-...')
"""

from tiffin.bundles.bundle import Bundle, BundleInfo, ModelPin
from tiffin.bundles.spec import BuildSpec, load_spec
from tiffin.bundles.store import BundleStore

__all__ = ["BuildSpec", "Bundle", "BundleInfo", "BundleStore", "ModelPin", "load_spec"]
