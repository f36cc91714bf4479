"""Metrics, logs and traces of a running server."""

from tiffin.observability.metrics import ServerMetrics

__all__ = ["ServerMetrics"]
