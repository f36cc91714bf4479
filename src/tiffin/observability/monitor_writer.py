"""The writer of the monitoring store: one queue per process, and the thread that empties it.

``Recorder.put`` is all the request path pays for a record: a length check and a
``deque.append`` of the ``log`` call's arguments (no lock, no copy). The writer thread
wakes every ``interval`` seconds and, ``_CHUNK`` calls at a time, turns them into records,
serialises them with orjson and appends them to each monitor's ``.part`` file; between
two chunks it gives up the GIL, so the event loop waits at most a chunk's time (about
0.3 ms) for it. Files are finished (renamed, or converted to Parquet) by age and size
(``tiffin.observability.monitor_store`` describes the files). A record the queue has no
room for, or that cannot be serialised or written, is dropped and counted.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
from prometheus_client import Counter

from tiffin.config import Settings
from tiffin.extras import import_optional
from tiffin.observability.monitor_store import file_name, monitoring_root

__all__ = ["Recorder", "StoreOptions"]

_CHUNK = 128  # records serialised between two yields of the GIL (~0.3 ms)
log = logging.getLogger("tiffin.monitoring")


@dataclass(frozen=True)
class StoreOptions:
    """Where and how a process's recorder writes: ``directory`` is the service's
    (``<monitor_dir>/<service>``); the rest are the ``monitor_*`` settings."""

    directory: Path
    format: str = "jsonl"
    sample_rate: float = 1.0
    queue_size: int = 10_000
    rotate_seconds: float = 3600.0
    rotate_bytes: int = 64 << 20

    @classmethod
    def from_settings(cls, settings: Settings, service: str) -> StoreOptions:
        return cls(
            directory=monitoring_root(settings) / service,
            format=settings.monitor_format,
            sample_rate=settings.monitor_sample_rate,
            queue_size=settings.monitor_queue_size,
            rotate_seconds=settings.monitor_rotate_seconds,
            rotate_bytes=settings.monitor_rotate_bytes,
        )


class _File:
    """The ``.part`` file a recorder is writing for one monitor."""

    __slots__ = ("handle", "path", "size", "started")

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        started = time.time()
        while True:
            path = directory / file_name(started, os.getpid(), ".jsonl.part")
            try:
                self.handle: IO[bytes] = path.open("xb")
                break
            except FileExistsError:  # begun within the same microsecond
                started += 1e-6
        self.path = path
        self.started = started
        self.size = 0


class Recorder:
    """The queue of one process and the thread that writes it to the store.

    Args:
        options: where and how to write.
        dropped, written: counters labelled ``monitor`` for records dropped (the queue
            was full, or the store could not be written) and records written.
        interval: seconds the writer thread sleeps between two rounds.

    Example:
        previous = use(Recorder(StoreOptions(Path("/tmp/monitoring/svc"))))
    """

    def __init__(
        self,
        options: StoreOptions,
        *,
        dropped: Counter | None = None,
        written: Counter | None = None,
        interval: float = 0.5,
    ) -> None:
        self.options = options
        self.interval = interval
        self.dropped: dict[str, int] = {}
        self._dropped_metric = dropped
        self._written_metric = written
        self._queue: deque[tuple[Any, ...]] = deque()
        self._limit = options.queue_size
        self._files: dict[str, _File] = {}
        self._writing = threading.Lock()  # one drain at a time: lines stay in order
        self._starting = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def put(self, item: tuple[Any, ...]) -> bool:
        """Queue one ``log`` call; False (and counted as dropped) when the queue is full."""
        if len(self._queue) >= self._limit:
            self._drop(item[0], 1)
            return False
        self._queue.append(item)
        if self._thread is None:
            self._start()
        return True

    def _drop(self, name: str, count: int) -> None:
        with self._starting:
            self.dropped[name] = self.dropped.get(name, 0) + count
        if self._dropped_metric is not None:
            self._dropped_metric.labels(name).inc(count)

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="tiffin-monitor", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush(rotate=True)

    def flush(self, *, rotate: bool = False) -> None:
        """Write everything queued now, in the calling thread; with ``rotate``, also
        finish the files that are old enough."""
        with self._writing:
            self._drain()
            if rotate:
                now = time.time()
                for name, file in list(self._files.items()):
                    if now - file.started >= self.options.rotate_seconds:
                        self._finish(name)

    def close(self) -> None:
        """Stop the writer thread, write what is queued, and finish every file. The
        recorder stays usable: a later ``put`` starts a new thread and new files."""
        with self._starting:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._writing:
            self._drain()
            for name in list(self._files):
                self._finish(name)

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            lines: dict[str, list[bytes]] = {}
            taken = 0
            while queue and taken < _CHUNK:
                item = queue.popleft()
                try:
                    records = _records(item)
                    encoded = [orjson.dumps(r, option=_DUMP, default=_plain) for r in records]
                except Exception as exc:
                    self._failed(item[0], 1, exc, "could not be serialised")
                    continue
                lines.setdefault(item[0], []).extend(encoded)
                taken += len(encoded)
            for name, chunk in lines.items():
                self._write(name, chunk)
            if queue:
                os.sched_yield()  # let the event loop run between chunks

    def _write(self, name: str, lines: list[bytes]) -> None:
        try:
            file = self._files.get(name)
            if file is None:
                file = self._files[name] = _File(self.options.directory / name)
            data = b"\n".join(lines) + b"\n"
            file.handle.write(data)
            file.handle.flush()
            file.size += len(data)
        except OSError as exc:
            self._failed(name, len(lines), exc, "could not be written")
            return
        if self._written_metric is not None:
            self._written_metric.labels(name).inc(len(lines))
        if file.size >= self.options.rotate_bytes:
            self._finish(name)

    def _finish(self, name: str) -> None:
        """Close a monitor's file and make it a finished one."""
        file = self._files.pop(name)
        try:
            file.handle.close()
            final = file.path.with_name(file.path.name.removesuffix(".part"))
            if self.options.format == "parquet":
                _to_parquet(file.path, final.with_suffix(".parquet"))
            else:
                file.path.rename(final)
        except Exception as exc:
            log.warning("Could not finish the monitoring file %s: %s", file.path, exc)

    def _failed(self, name: str, count: int, exc: Exception, what: str) -> None:
        self._drop(name, count)
        if not self._warned:  # once per recorder: a full disk would say it for every line
            self._warned = True
            log.warning("Records of monitor %s %s and were dropped: %s", name, what, exc)

    def forked(self) -> Recorder:
        """A recorder like this one for a forked child: the queue, the thread and the
        open files are the parent's."""
        return Recorder(
            self.options,
            dropped=self._dropped_metric,
            written=self._written_metric,
            interval=self.interval,
        )


_DUMP = orjson.OPT_SERIALIZE_NUMPY


def _plain(value: Any) -> Any:
    """What orjson cannot write itself: numpy scalars it does not know, tensors, and
    anything else as its text."""
    for method in ("tolist", "item"):
        convert = getattr(value, method, None)
        if convert is not None:
            return convert()
    return str(value)


def _records(item: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The records of one ``log`` call."""
    _, rate, ts, request_id, features, prediction, names, batch = item
    if not batch:
        if not isinstance(features, Mapping):  # a 1-D array with names
            features = dict(zip(names, features.tolist(), strict=True))
        return [_record(ts, request_id, features, prediction)]
    if hasattr(features, "columns"):  # a DataFrame
        columns = [str(c) for c in features.columns]
        rows: list[Any] = [
            dict(zip(columns, row, strict=True))
            for row in features.itertuples(index=False, name=None)
        ]
    elif hasattr(features, "shape"):
        columns = list(names) if names is not None else [f"f{i}" for i in range(features.shape[1])]
        rows = [dict(zip(columns, row, strict=True)) for row in features.tolist()]
    else:
        rows = list(features)
    if prediction is None:
        predictions: list[Any] = [None] * len(rows)
    else:
        predictions = prediction.tolist() if hasattr(prediction, "tolist") else list(prediction)
    return [
        _record(ts, request_id, row, answer)
        for row, answer in zip(rows, predictions, strict=True)
        if rate >= 1.0 or random.random() < rate  # noqa: S311 - sampling
    ]


def _record(ts: float, request_id: str | None, features: Any, prediction: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"ts": ts, "features": features}
    if prediction is not None:
        record["prediction"] = prediction
    if request_id is not None:
        record["request_id"] = request_id
    return record


def _to_parquet(part: Path, final: Path) -> None:
    """Convert a finished JSON lines file to Parquet: written to a temporary file that is
    renamed into place, then the ``.part`` removed. Records Parquet cannot hold in one
    table (a feature that is a number in one and text in another) stay JSON lines."""
    parquet = import_optional("pyarrow.parquet", "monitor", purpose="to write Parquet")
    pyarrow = import_optional("pyarrow", "monitor", purpose="to write Parquet")
    rows = [orjson.loads(line) for line in part.read_bytes().splitlines() if line.strip()]
    try:
        keys = dict.fromkeys(key for row in rows for key in row)  # from_pylist reads row 1's
        table = pyarrow.Table.from_pydict({key: [row.get(key) for row in rows] for key in keys})
    except (pyarrow.ArrowInvalid, pyarrow.ArrowTypeError) as exc:
        log.warning("%s is kept as JSON lines: Parquet cannot hold its records (%s)", part, exc)
        part.rename(final.with_suffix(".jsonl"))
        return
    temporary = final.with_name(f".{final.name}.tmp")
    parquet.write_table(table, temporary)
    temporary.rename(final)
    part.unlink()
