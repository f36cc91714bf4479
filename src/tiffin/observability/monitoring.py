"""Data monitoring: the features an API was given and what it predicted, kept for drift.

Inside an API method, log what the model saw and said:

    @tiffin.api
    def predict(self, features: Features) -> list[str]:
        labels = self.clf.predict(features)
        tiffin.monitor("iris").log(features, names=COLUMNS, prediction=labels)
        return [CLASSES[int(label)] for label in labels]

``log`` takes one record as a mapping of feature name to value (``prediction`` is then
one value), or several as a pandas DataFrame, a 2-D array (its columns named by
``names``, else ``f0``, ``f1``, ...) or a list of mappings (``prediction`` is then one
value per row); a 1-D array with ``names`` is one record. ``tiffin monitor report``
compares what was logged with a reference data set, feature by feature
(``tiffin.observability.drift``).

**The request path.** ``log`` decides whether to keep the record (``sample_rate``: each
record is kept with that probability; the ``monitor_sample_rate`` setting, 1 unless set,
or ``tiffin.monitor(name, sample_rate=...)``), checks the shapes it can check at once, and
appends a tuple of references to this process's queue: no I/O, no serialisation, no
lock. A writer thread in each process (``tiffin.observability.monitor_writer``) wakes
twice a second, turns what is queued into JSON lines and appends them to the store,
giving up the GIL between small chunks. The values are
read then, not when ``log`` is called: do not change an array or a dict after logging
it. The queue holds ``monitor_queue_size`` calls; when it is full a record is dropped and
counted (``tiffin_monitor_dropped_total{monitor}``), and the caller never waits.
``tiffin_monitor_records_total{monitor}`` counts the records written.

**The store** is ``<monitor_dir>/<service>/<monitor>/`` (``<home>/monitoring`` by
default); ``tiffin.observability.monitor_store`` describes its files and how they are
read safely while written. Each process writes files of its own (its pid is in their
names), as ``.part`` until finished: a file is finished once it is
``monitor_rotate_seconds`` old or ``monitor_rotate_bytes`` large, and at a clean stop;
with ``monitor_format: parquet`` a finished file is then converted to Parquet.

**In a server** the app adds a ``Monitoring`` to its background parts in each worker. Once
the service has started, it points the process's recorder at the service's directory with
the server's settings and metrics; it finishes the files when the worker stops; and with
``monitor_reference`` set it keeps the live drift gauge ``tiffin_drift_score{monitor,
feature}`` up to date (``tiffin.observability.drift``). **Elsewhere** (a script, a
notebook, a batch job) the recorder is made on first use from ``tiffin.config.current()``,
under the service name ``default``, and finishes its files at exit.

One recorder per process is the point (one writer thread, one set of open files), so it
is module state, like the ``logging`` module's handlers: ``use`` replaces it.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from tiffin import config
from tiffin.config import Settings
from tiffin.exceptions import ConfigError, InvalidArgument
from tiffin.extras import import_optional
from tiffin.observability import context
from tiffin.observability.monitor_writer import Recorder, StoreOptions

__all__ = [
    "DRIFT_METRIC",
    "Monitor",
    "Monitoring",
    "monitor",
    "recorder",
    "references",
    "use",
]

DRIFT_METRIC = "tiffin_drift_score"
"""The live drift gauge, labelled ``monitor`` and ``feature``: the population stability
index of the feature over the last ``monitor_drift_window`` seconds against the
reference."""

DEFAULT_SERVICE = "default"
"""The service directory of records logged outside a server."""

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


# -- the API -------------------------------------------------------------------------


class Monitor:
    """A named stream of records: what one model was given and what it predicted.

    Get one with ``tiffin.monitor(name)``; it is cheap to ask for it on every call.
    """

    __slots__ = ("name", "sample_rate")

    def __init__(self, name: str, sample_rate: float | None = None) -> None:
        self.name = name
        self.sample_rate = sample_rate

    def log(
        self,
        features: Any,
        prediction: Any = None,
        *,
        names: Sequence[str] | None = None,
    ) -> bool:
        """Queue records for the store; returns whether they were queued (False when the
        sample left them out or the queue was full). Never blocks, never writes.

        Args:
            features: one record (a mapping of feature name to value, or a 1-D array
                with ``names``), or one per row (a DataFrame, a 2-D array, a list of
                mappings).
            prediction: what the model answered: one value, or one per row.
            names: the feature names of an array's columns.

        Raises:
            InvalidArgument: features of another kind, or names or predictions that do
                not match the features' shape.

        Example:
            tiffin.monitor("iris").log({"petal_length": 1.4, "petal_width": 0.2}, "setosa")
            tiffin.monitor("iris").log(rows, labels, names=["sepal_length", ...])
        """
        active = _process.active or recorder()
        rate = active.options.sample_rate if self.sample_rate is None else self.sample_rate
        batch = type(features) is not dict and _is_batch(features, prediction, names)
        if not batch and rate < 1.0 and random.random() >= rate:  # noqa: S311 - sampling
            return False
        return active.put(
            (
                self.name,
                rate if batch else 1.0,
                time.time(),
                context.request_id.get(),
                features,
                prediction,
                names,
                batch,
            )
        )

    def __repr__(self) -> str:
        return f"<tiffin monitor {self.name}>"


_monitors: dict[tuple[str, float | None], Monitor] = {}


def monitor(name: str, *, sample_rate: float | None = None) -> Monitor:
    """The monitor ``name``: log an API's features and predictions to it, then measure
    their drift with ``tiffin monitor report NAME --reference data.parquet``.

    Args:
        name: letters, digits, ``_``, ``.`` and ``-``; a directory of the store.
        sample_rate: the share of records kept, from 0 to 1 (default: the
            ``monitor_sample_rate`` setting, 1 unless set).

    Raises:
        InvalidArgument: a name or sample rate that is not valid.

    Example:
        tiffin.monitor("iris").log({"sepal_length": 5.1, "sepal_width": 3.5}, "setosa")
        tiffin.monitor("iris", sample_rate=0.1).log(frame, prediction=labels)
    """
    found = _monitors.get((name, sample_rate))
    if found is not None:
        return found
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"tiffin.monitor({name!r}): a monitor's name is 1 to 128 letters, digits, '_', "
            "'.' or '-', not starting with '.' or '-'. Name it after the model, e.g. 'iris'.",
            detail={"name": str(name)},
        )
    if sample_rate is not None and (
        isinstance(sample_rate, bool)
        or not isinstance(sample_rate, int | float)
        or not 0 <= sample_rate <= 1
    ):
        raise InvalidArgument(
            f"tiffin.monitor({name!r}, sample_rate={sample_rate!r}): the sample rate is the "
            "share of records kept, a number from 0 to 1.",
            detail={"sample_rate": str(sample_rate)},
        )
    found = _monitors[(name, sample_rate)] = Monitor(name, sample_rate)
    return found


def _is_batch(features: Any, prediction: Any, names: Sequence[str] | None) -> bool:
    """Whether ``features`` holds one record per row; raises for what ``log`` cannot
    take. Checks only what costs nothing: lengths and shapes."""
    if isinstance(features, Mapping):
        return False
    shape = getattr(features, "shape", None)
    if shape is not None and hasattr(features, "columns"):  # a DataFrame
        rows = int(shape[0])
    elif shape is not None and len(shape) in (1, 2):  # an array or a tensor
        width = int(shape[-1])
        if names is not None and len(names) != width:
            raise InvalidArgument(
                f"monitor.log: {len(names)} names for {width} columns of features. Give one "
                "name per column.",
                detail={"names": len(names), "columns": width},
            )
        if len(shape) == 1:
            if names is None:
                raise InvalidArgument(
                    "monitor.log: a 1-D array of features needs names=[...], one per value.",
                )
            return False
        rows = int(shape[0])
    elif isinstance(features, list | tuple) and all(isinstance(r, Mapping) for r in features[:1]):
        rows = len(features)
    else:
        raise InvalidArgument(
            f"monitor.log cannot take features of type {type(features).__name__}. Give a "
            "mapping of feature name to value, a DataFrame, an array with names=[...], or "
            "a list of mappings.",
            detail={"type": type(features).__name__},
        )
    if prediction is not None and len(prediction) != rows:
        raise InvalidArgument(
            f"monitor.log: {len(prediction)} predictions for {rows} rows of features. Give "
            "one prediction per row.",
            detail={"predictions": len(prediction), "rows": rows},
        )
    return True


# -- the process's recorder ------------------------------------------------------------


class _Process:
    """This process's recorder (None until first used), and whether the fork and exit
    hooks are in place."""

    __slots__ = ("active", "hooked")

    def __init__(self) -> None:
        self.active: Recorder | None = None
        self.hooked = False


_process = _Process()


def use(new: Recorder | None) -> Recorder | None:
    """Make ``new`` this process's recorder (None: made again on next use); returns the
    one it replaces, which keeps what it has queued until it is closed."""
    previous, _process.active = _process.active, new
    if not _process.hooked:
        _process.hooked = True
        os.register_at_fork(after_in_child=_after_fork)
        atexit.register(_at_exit)
    return previous


def recorder() -> Recorder:
    """This process's recorder; made from ``tiffin.config.current()`` on first use."""
    active = _process.active
    if active is None:
        settings = config.current()
        if settings.monitor_format == "parquet":
            _need_pyarrow()
        active = Recorder(StoreOptions.from_settings(settings, DEFAULT_SERVICE))
        use(active)
    return active


def _after_fork() -> None:
    if _process.active is not None:
        _process.active = _process.active.forked()


def _at_exit() -> None:
    if _process.active is not None:
        _process.active.close()


def _need_pyarrow() -> None:
    import_optional("pyarrow", "monitor", purpose="to write the monitoring store as Parquet")


# -- in a server -----------------------------------------------------------------------


def references(settings: Settings) -> dict[str | None, Path]:
    """The ``monitor_reference`` setting as monitor name -> reference file; the key None
    is the file for every monitor that has none of its own.

    Raises:
        ConfigError: an entry names a monitor that cannot be one.
    """
    value = settings.monitor_reference
    if value is None:
        return {}
    entries = value.split(",") if isinstance(value, str) else list(value)
    found: dict[str | None, Path] = {}
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = "", entry
        if name and not _NAME.fullmatch(name):
            raise ConfigError(
                f"Bad value for setting 'monitor_reference': {entry!r} names no monitor. Give "
                "a file for every monitor, or monitor=file entries (iris=data/iris.parquet).",
                detail={"key": "monitor_reference", "entry": entry},
            )
        found[name or None] = Path(path).expanduser()
    return found


class Monitoring:
    """The monitoring of one worker, one of the app's background parts.

    ``start`` makes this process's recorder write under the service's directory with the
    server's settings and counters, and begins the live drift when ``monitor_reference``
    is set; ``stop`` ends it, finishes the store's files and puts the recorder back.

    Args:
        service: the service's name: its directory in the store.
        settings: the server's settings.
        registry: the server's metrics registry.
    """

    def __init__(self, service: str, settings: Settings, registry: CollectorRegistry) -> None:
        if settings.monitor_format == "parquet":
            _need_pyarrow()
        self.settings = settings
        self.options = StoreOptions.from_settings(settings, service)
        self.references = references(settings)
        self.recorder = Recorder(
            self.options,
            dropped=Counter(
                "tiffin_monitor_dropped",
                "Records tiffin.monitor dropped: its queue was full, or the store could not "
                "be written.",
                ["monitor"],
                registry=registry,
            ),
            written=Counter(
                "tiffin_monitor_records",
                "Records tiffin.monitor wrote to the monitoring store, by monitor.",
                ["monitor"],
                registry=registry,
            ),
        )
        self.gauge: Gauge | None = None
        if self.references:
            # Every worker reads the same store, and one computes at a time: the newest
            # value is the truest, and a value stays when its worker exits.
            self.gauge = Gauge(
                DRIFT_METRIC,
                "Population stability index of a monitored feature over the last "
                "monitor_drift_window seconds against monitor_reference.",
                ["monitor", "feature"],
                multiprocess_mode="mostrecent",
                registry=registry,
            )
        self._previous: Recorder | None = None
        self.drift: Any = None

    async def start(self) -> None:
        self._previous = use(self.recorder)
        if self.gauge is None:
            return
        import_optional("numpy", "monitor", purpose="to measure live drift (monitor_reference)")
        from tiffin.observability.drift import LiveDrift

        self.drift = LiveDrift(
            self.options.directory,
            self.references,
            self.gauge,
            interval=self.settings.monitor_drift_interval,
            window=self.settings.monitor_drift_window,
        )
        await self.drift.start()

    async def stop(self) -> None:
        if self.drift is not None:
            await self.drift.stop()
        await asyncio.to_thread(self.recorder.close)
        if _process.active is self.recorder:
            use(self._previous)
