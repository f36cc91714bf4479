"""The CLI's settings: read once per invocation, at the edge, and kept on the click context."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from tiffin import config
from tiffin.bundles.store import BundleStore
from tiffin.models import ModelStore

__all__ = ["bundle_store_from", "settings_from", "store_from"]


def settings_from(ctx: click.Context) -> config.Settings:
    """The settings of this invocation, built the first time a command asks."""
    root = ctx.find_root()
    state: dict[str, Any] = root.ensure_object(dict)
    settings = state.get("settings")
    if not isinstance(settings, config.Settings):
        settings = config.load(
            directory=Path.cwd(), environ=os.environ, flags=dict(state.get("flags") or {})
        )
        state["settings"] = settings
    return settings


def store_from(ctx: click.Context) -> ModelStore:
    """The model store this invocation's settings point to."""
    return ModelStore.from_settings(settings_from(ctx))


def bundle_store_from(ctx: click.Context) -> BundleStore:
    """The bundle store this invocation's settings point to."""
    return BundleStore.from_settings(settings_from(ctx))
