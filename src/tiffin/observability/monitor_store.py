"""The monitoring store on disk, and the data sets drift is measured against.

What ``tiffin.monitor`` logs lands under one directory per service and monitor:

    <monitor_dir>/<service>/<monitor>/
        20261124T101500.123456Z-4121.jsonl        finished: never written again
        20261124T111500.200000Z-4121.jsonl.part   being written by process 4121
        20261124T111502.000000Z-4122.parquet      finished, then converted to Parquet

A file's name is the UTC time its first record was written and the id of the process
that wrote it: every worker writes files of its own, so two workers never interleave
lines. A record is one JSON line (or Parquet row) ``{"ts": <unix seconds>, "features":
{name: value, ...}, "prediction": ..., "request_id": ...}``; ``prediction`` and
``request_id`` are left out when there are none.

Reading is safe while workers write. A file being written ends in ``.part``; its writer
appends whole lines, but a reader may still catch one half-written, so the last line of a
``.part`` file is read only once it ends in a newline. A finished file (renamed from its
``.part``, or converted to Parquet through a temporary file renamed into place) is
complete, so anything unreadable in it is an error. Should a writer die between writing
the Parquet file and removing its ``.part``, the ``.part`` is ignored.

A reference data set (``tiffin monitor report --reference``, the ``monitor_reference``
setting) has one column per feature: a Parquet file (needs ``tiffin[monitor]``), a CSV file
with a header row (numbers are read as numbers), or JSON lines holding either one object
of features per line or records as the store writes them.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tiffin.config import Settings
from tiffin.exceptions import IntegrityError, InvalidArgument, NotFound
from tiffin.extras import import_optional

__all__ = [
    "PREDICTION",
    "Columns",
    "MonitorInfo",
    "file_name",
    "find_monitor",
    "list_monitors",
    "monitoring_root",
    "read_reference",
    "read_window",
    "to_columns",
    "utc",
]

PREDICTION = "prediction"
"""The column a record's prediction is compared as, when the reference has it."""

Columns = dict[str, list[Any]]
"""A data set by column: feature name -> values (``None`` where a row has none)."""

_FILE = re.compile(r"^(\d{8}T\d{6}\.\d{6})Z-(\d+)\.(jsonl|parquet)(\.part)?$")
_STAMP = "%Y%m%dT%H%M%S.%f"
_REFERENCE_KINDS = {
    ".parquet": "Parquet",
    ".pq": "Parquet",
    ".csv": "CSV",
    ".jsonl": "JSON lines",
    ".ndjson": "JSON lines",
    ".json": "JSON lines",
}


def monitoring_root(settings: Settings) -> Path:
    """Where every service's monitors are: the ``monitor_dir`` setting, else
    ``<home>/monitoring``."""
    if settings.monitor_dir is not None:
        return settings.monitor_dir.expanduser()
    return settings.home / "monitoring"


def utc(seconds: float) -> str:
    """Unix seconds as ISO-8601 UTC: ``2026-11-24T10:15:00Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_name(started: float, pid: int, suffix: str) -> str:
    """The name of a store file begun at ``started`` by process ``pid``; ``suffix`` is
    ``.jsonl.part``, ``.jsonl`` or ``.parquet``."""
    stamp = datetime.fromtimestamp(started, UTC).strftime(_STAMP)
    return f"{stamp}Z-{pid}{suffix}"


@dataclass(frozen=True)
class _StoreFile:
    path: Path
    started: float
    kind: str  # "jsonl" or "parquet"
    partial: bool


def _files(directory: Path) -> list[_StoreFile]:
    """The store files of one monitor, oldest first; a ``.part`` whose finished file is
    there too (a writer died between the two) is left out."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    finished = {name for name in names if not name.endswith(".part")}
    found = []
    for name in names:
        match = _FILE.match(name)
        if match is None:
            continue
        stamp, pid, kind, part = match.groups()
        if part and {f"{stamp}Z-{pid}.jsonl", f"{stamp}Z-{pid}.parquet"} & finished:
            continue
        started = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC).timestamp()
        found.append(_StoreFile(directory / name, started, kind, bool(part)))
    found.sort(key=lambda f: (f.started, f.path.name))
    return found


def _corrupt(path: Path, what: str) -> IntegrityError:
    return IntegrityError(
        f"{path} is not a valid monitoring file: {what}. Move it out of {path.parent} (or "
        "delete it) and run again.",
        detail={"path": str(path)},
    )


def _valid(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("ts"), int | float)
        and isinstance(record.get("features"), dict)
    )


def _read_jsonl(file: _StoreFile) -> Iterator[dict[str, Any]]:
    data = file.path.read_bytes()
    lines = data.split(b"\n")
    last = lines.pop()  # b"" when the file ends in a newline
    if last and not file.partial:
        raise _corrupt(file.path, f"its last line (line {len(lines) + 1}) is cut short")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not _valid(record):
            raise _corrupt(file.path, f"line {number} is not a record with 'ts' and 'features'")
        yield record


def _read_parquet(file: _StoreFile) -> Iterator[dict[str, Any]]:
    parquet = import_optional("pyarrow.parquet", "monitor", purpose=f"to read {file.path}")
    try:
        rows = parquet.read_table(file.path).to_pylist()
    except Exception as exc:
        raise _corrupt(file.path, f"Parquet cannot read it ({exc})") from None
    for number, row in enumerate(rows, 1):
        if not _valid(row):
            raise _corrupt(file.path, f"row {number} is not a record with 'ts' and 'features'")
        yield {key: value for key, value in row.items() if value is not None}


def read_window(
    directory: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    strict: bool = True,
    skipped: list[Path] | None = None,
) -> list[dict[str, Any]]:
    """The records one monitor logged from ``since`` (inclusive) to ``until``
    (exclusive), oldest first.

    Args:
        directory: the monitor's directory (``find_monitor``).
        since, until: Unix seconds; None: no bound.
        limit: keep only the newest ``limit`` records (files are read newest first, and
            reading stops once that many are found).
        strict: raise for an unreadable file; else leave it out and add it to ``skipped``.

    Raises:
        IntegrityError: a finished file (or a ``.part`` file before its last line) holds
            something that is not a record, with ``strict``.
    """
    files = [
        f
        for f in _files(directory)
        if (until is None or f.started < until) and (since is None or _mtime(f.path) >= since)
    ]
    records: list[dict[str, Any]] = []
    for file in reversed(files):
        try:
            found = [
                r
                for r in _read(file)
                if (since is None or r["ts"] >= since) and (until is None or r["ts"] < until)
            ]
        except IntegrityError:
            if strict:
                raise
            if skipped is not None:
                skipped.append(file.path)
            continue
        records.extend(found)
        if limit is not None and len(records) >= limit:
            break
    records.sort(key=lambda r: r["ts"])
    if limit is not None:
        records = records[-limit:]
    return records


def _read(file: _StoreFile) -> list[dict[str, Any]]:
    """A file's records; a ``.part`` finished since it was listed is read under its new
    name."""
    try:
        if file.kind == "parquet":
            return list(_read_parquet(file))
        return list(_read_jsonl(file))
    except FileNotFoundError:
        if not file.partial:
            return []
    stem = file.path.name.removesuffix(".jsonl.part")
    for suffix, kind in ((".jsonl", "jsonl"), (".parquet", "parquet")):
        path = file.path.with_name(stem + suffix)
        if path.exists():
            return _read(_StoreFile(path, file.started, kind, partial=False))
    return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # being renamed: keep it, the read finds its new name
        return math.inf


def to_columns(records: Iterable[Mapping[str, Any]]) -> Columns:
    """Records as columns: one per feature, and ``prediction`` when a record has a single
    value as its prediction (a list or mapping is not compared)."""
    records = list(records)
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record["features"]))
    columns: Columns = {name: [] for name in names}
    predictions: list[Any] = []
    for record in records:
        features = record["features"]
        for name, values in columns.items():
            values.append(features.get(name))
        prediction = record.get(PREDICTION)
        predictions.append(prediction if not isinstance(prediction, list | dict) else None)
    if any(p is not None for p in predictions) and PREDICTION not in columns:
        columns[PREDICTION] = predictions
    return columns


# -- monitors --------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorInfo:
    """One monitor in the store: where it is, how many files and bytes it has, and when
    it was last written."""

    service: str
    name: str
    directory: Path
    files: int
    size: int
    newest: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "monitor": self.name,
            "directory": str(self.directory),
            "files": self.files,
            "size": self.size,
            "newest": None if self.newest is None else utc(self.newest),
        }


def list_monitors(root: Path) -> list[MonitorInfo]:
    """Every monitor under ``root`` (``monitoring_root``), by service and name."""
    found = []
    for service in sorted(p for p in _subdirectories(root)):
        for directory in sorted(_subdirectories(service)):
            files = _files(directory)
            stats = [s for s in (_stat(f.path) for f in files) if s is not None]
            found.append(
                MonitorInfo(
                    service=service.name,
                    name=directory.name,
                    directory=directory,
                    files=len(stats),
                    size=sum(s.st_size for s in stats),
                    newest=max((s.st_mtime for s in stats), default=None),
                )
            )
    return found


def _subdirectories(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def find_monitor(root: Path, name: str, service: str | None = None) -> MonitorInfo:
    """The monitor ``name`` (of ``service``, when given) in the store at ``root``.

    Raises:
        NotFound: no such monitor.
        InvalidArgument: monitors of that name in several services, and none named.
    """
    monitors = list_monitors(root)
    matches = [m for m in monitors if m.name == name and service in (None, m.service)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        services = ", ".join(m.service for m in matches)
        raise InvalidArgument(
            f"Monitor '{name}' has data from several services ({services}). Pick one with "
            "--service.",
            detail={"monitor": name, "services": [m.service for m in matches]},
        )
    of = f" of service '{service}'" if service else ""
    known = ", ".join(f"{m.service}/{m.name}" for m in monitors)
    there = f"Monitors there: {known}." if known else "There are none yet."
    raise NotFound(
        f"No data for monitor '{name}'{of} in {root}. {there} A service writes it when "
        f"an API calls tiffin.monitor('{name}').log(...); the store is under --home "
        "(TIFFIN_HOME) or the monitor_dir setting.",
        detail={"monitor": name, "service": service, "root": str(root)},
    )


# -- reference data sets ----------------------------------------------------------------


def read_reference(path: Path) -> Columns:
    """A reference data set as columns.

    Raises:
        NotFound: no file at ``path``.
        InvalidArgument: not a file tiffin reads, unreadable, or without rows.
    """
    kind = _REFERENCE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise InvalidArgument(
            f"Cannot read the reference {path}: its name must end in .parquet, .csv or "
            ".jsonl (a Parquet, CSV or JSON lines file with one column per feature).",
            detail={"path": str(path)},
        )
    if not path.is_file():
        raise NotFound(
            f"The reference {path} does not exist. Give the path of a {kind} file with one "
            "column per feature.",
            detail={"path": str(path)},
        )
    try:
        if kind == "Parquet":
            columns = _parquet_columns(path)
        elif kind == "CSV":
            columns = _csv_columns(path)
        else:
            columns = to_columns(_reference_lines(path))
    except (OSError, ValueError, orjson.JSONDecodeError, _Unreadable) as exc:
        raise InvalidArgument(
            f"Cannot read the reference {path} as {kind}: {exc}. Check that it is a valid "
            f"{kind} file.",
            detail={"path": str(path), "reason": str(exc)},
        ) from None
    if not columns or not any(columns.values()):
        raise InvalidArgument(
            f"The reference {path} has no rows. Give a data set with the features as the "
            "model saw them (its training or validation data).",
            detail={"path": str(path)},
        )
    return columns


class _Unreadable(Exception):
    """What a reader that is not ours (pyarrow) raised, as a reason to show."""


def _parquet_columns(path: Path) -> Columns:
    parquet = import_optional("pyarrow.parquet", "monitor", purpose=f"to read {path}")
    try:
        table = parquet.read_table(path)
    except Exception as exc:  # pyarrow's own error types
        raise _Unreadable(str(exc)) from None
    if {"ts", "features"} <= set(table.column_names):  # a file of the monitoring store
        return to_columns(r for r in table.to_pylist() if isinstance(r["features"], dict))
    columns: Columns = table.to_pydict()
    return columns


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _csv_columns(path: Path) -> Columns:
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            return {}
        if len(set(header)) != len(header):
            raise _Unreadable("its header names a column twice")
        columns: Columns = {name: [] for name in header}
        for number, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) != len(header):
                raise _Unreadable(f"line {number} has {len(row)} fields, the header {len(header)}")
            for name, text in zip(header, row, strict=True):
                columns[name].append(_number(text) if text != "" else None)
    return columns


def _reference_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON lines reference (or of a ``.json`` file holding one array of
    objects): a line of features becomes a record of them."""
    data = path.read_bytes()
    if path.suffix.lower() == ".json" and data.lstrip().startswith(b"["):
        rows = orjson.loads(data)
        if not isinstance(rows, list):
            raise _Unreadable("it is not an array of objects")
        numbered: Iterable[tuple[int, Any]] = enumerate(rows, 1)
        where = "item"
    else:
        numbered = (
            (n, _json_line(line, n)) for n, line in enumerate(data.splitlines(), 1) if line.strip()
        )
        where = "line"
    for number, row in numbered:
        if not isinstance(row, dict):
            raise _Unreadable(f"{where} {number} is not a JSON object")
        yield row if isinstance(row.get("features"), dict) else {"features": row}


def _json_line(line: bytes, number: int) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _Unreadable(f"line {number} is not valid JSON ({exc})") from None
