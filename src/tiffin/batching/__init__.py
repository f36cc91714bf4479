"""Adaptive batching: concurrent requests merged into one call of the model."""

from tiffin.batching.batcher import Batcher, BatchMetrics, LatencyModel
from tiffin.batching.concat import concat, kind_of, rows_of, split

__all__ = ["BatchMetrics", "Batcher", "LatencyModel", "concat", "kind_of", "rows_of", "split"]
