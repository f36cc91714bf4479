"""The self-contained pages tiffin serves (``/docs``, ``/dashboard``): each is a folder
``tiffin/server/<name>_assets/`` holding ``index.html``, ``<name>.js`` and
``<name>.css``, read once and served from memory.
"""

from __future__ import annotations

import functools
import html
from importlib.resources import files

__all__ = ["page_assets"]

_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
}


@functools.cache
def _read(folder: str, name: str) -> bytes:
    return files("tiffin.server").joinpath(folder, name).read_bytes()


def page_assets(name: str, title: str) -> dict[str, tuple[bytes, bytes]]:
    """``{path: (body, content type)}`` of page ``name``: ``/<name>`` and ``/<name>/``
    (its ``index.html``, with ``{{title}}`` replaced by ``title``, escaped), and
    ``/<name>/<name>.js`` and ``/<name>/<name>.css``.

    Example:
        page_assets("docs", "iris")["/docs/docs.js"]  # (b"...", b"text/javascript; ...")
    """
    folder = f"{name}_assets"
    page = _read(folder, "index.html").replace(b"{{title}}", html.escape(title).encode())
    assets = {f"/{name}": (page, _TYPES["html"]), f"/{name}/": (page, _TYPES["html"])}
    for kind in ("js", "css"):
        asset = f"{name}.{kind}"
        assets[f"/{name}/{asset}"] = (_read(folder, asset), _TYPES[kind])
    return assets
