"""``/docs``: an interactive page for the service's APIs, served by tiffin itself.

The page (``docs_assets/``: one HTML file, one script, one stylesheet, no build step)
reads ``/openapi.json``, describes each API's request and response, fills in an example
body from the request schema, sends it, and shows the answer (a stream event by event).
Nothing is loaded from another host, so it works where there is no internet.
"""

from __future__ import annotations

from typing import Any

from tiffin.pages import page_assets
from tiffin.service import ServiceSpec

__all__ = ["Docs"]


class Docs:
    """The documentation pages of one service, read once when the app is built.

    Args:
        spec: the service.
        openapi: its OpenAPI document, which the page fetches from ``/openapi.json``.

    Example:
        docs = Docs(spec, openapi.build(spec))
        body, content_type = docs.asset("/docs")
    """

    def __init__(self, spec: ServiceSpec, openapi: dict[str, Any]) -> None:
        self.spec = spec
        self.openapi = openapi
        self._assets = page_assets("docs", spec.name)

    def asset(self, path: str) -> tuple[bytes, bytes] | None:
        """The body and content type of a docs path, or None."""
        return self._assets.get(path)
