"""Clients for a running tiffin server."""

from __future__ import annotations

from typing import Any

__all__ = ["Client"]


class Client:
    """A synchronous client of a tiffin server (placeholder: methods come next)."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url.rstrip("/")

    def close(self) -> None:
        """Close the connection pool."""
