"""The API server: an ASGI app built from a service, served by worker processes."""

from tiffin.server.app import App, create_app

__all__ = ["App", "create_app"]
