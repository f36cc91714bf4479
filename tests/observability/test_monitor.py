"""``tiffin.monitor``: what it writes, sampling, the bounded queue, rotation, the store's
files and how they are read while written."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Counter

from tiffin import config
from tiffin.exceptions import IntegrityError, InvalidArgument
from tiffin.observability import context
from tiffin.observability.monitor_store import (
    file_name,
    list_monitors,
    read_window,
    to_columns,
)
from tiffin.observability.monitor_writer import Recorder, StoreOptions
from tiffin.observability.monitoring import DEFAULT_SERVICE, monitor, recorder, references, use


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "monitoring" / "svc"


def installed(options: StoreOptions, **kwargs: Any) -> Iterator[Recorder]:
    active = Recorder(options, **kwargs)
    previous = use(active)
    try:
        yield active
    finally:
        active.close()
        use(previous)


@pytest.fixture
def active(store: Path) -> Iterator[Recorder]:
    """This process's recorder, writing under ``store`` (a fast writer thread)."""
    yield from installed(StoreOptions(store), interval=0.01)


def lines(directory: Path) -> list[dict[str, Any]]:
    """Every line of every file in ``directory``, in file order."""
    found: list[dict[str, Any]] = []
    for path in sorted(directory.iterdir()):
        found.extend(json.loads(line) for line in path.read_text().splitlines())
    return found


def test_log_writes_exactly_what_was_logged(active: Recorder, store: Path) -> None:
    iris = monitor("iris")
    before = time.time()
    assert iris.log({"sepal_length": 5.1, "species": "setosa"}, prediction=0)
    assert iris.log(
        np.array([[1.0, 2.0], [3.0, 4.0]]), names=["a", "b"], prediction=np.array([1, 0])
    )
    assert iris.log(pd.DataFrame({"a": [5.5], "b": ["x"]}), prediction=["p"])
    assert iris.log([{"a": 1}, {"a": 2, "b": None}])
    assert iris.log(np.array([7.0, 8.0]), names=["a", "b"], prediction=np.float64(0.5))
    assert iris.log(np.array([[9, 10]], dtype=np.int64))  # no names: f0, f1
    active.close()
    after = time.time()

    records = lines(store / "iris")
    assert all(before <= r.pop("ts") <= after for r in records)
    assert records == [
        {"features": {"sepal_length": 5.1, "species": "setosa"}, "prediction": 0},
        {"features": {"a": 1.0, "b": 2.0}, "prediction": 1},
        {"features": {"a": 3.0, "b": 4.0}, "prediction": 0},
        {"features": {"a": 5.5, "b": "x"}, "prediction": "p"},
        {"features": {"a": 1}},
        {"features": {"a": 2, "b": None}},
        {"features": {"a": 7.0, "b": 8.0}, "prediction": 0.5},
        {"features": {"f0": 9, "f1": 10}},
    ]


def test_a_record_names_the_request_it_was_logged_in(active: Recorder, store: Path) -> None:
    token = context.request_id.set("4b1f0c2a")
    try:
        monitor("iris").log({"a": 1.0})
    finally:
        context.request_id.reset(token)
    active.close()
    assert [r["request_id"] for r in lines(store / "iris")] == ["4b1f0c2a"]


def test_the_store_is_one_directory_per_monitor_and_one_file_per_process(
    active: Recorder, store: Path
) -> None:
    monitor("iris").log({"a": 1.0})
    monitor("churn").log({"b": 2.0})
    active.close()
    assert sorted(p.name for p in store.iterdir()) == ["churn", "iris"]
    (finished,) = (store / "iris").iterdir()
    assert finished.name.endswith(f"-{os.getpid()}.jsonl")
    assert [(m.service, m.name, m.files) for m in list_monitors(store.parent)] == [
        ("svc", "churn", 1),
        ("svc", "iris", 1),
    ]


@pytest.mark.parametrize(
    ("features", "kwargs", "message"),
    [
        (
            np.zeros((2, 3)),
            {"names": ["a", "b"]},
            "monitor.log: 2 names for 3 columns of features. Give one name per column.",
        ),
        (
            np.zeros(3),
            {},
            "monitor.log: a 1-D array of features needs names=[...], one per value.",
        ),
        (
            "a=1",
            {},
            "monitor.log cannot take features of type str. Give a mapping of feature name to "
            "value, a DataFrame, an array with names=[...], or a list of mappings.",
        ),
        (
            np.zeros((3, 2)),
            {"prediction": [1, 2]},
            "monitor.log: 2 predictions for 3 rows of features. Give one prediction per row.",
        ),
        (
            [{"a": 1}],
            {"prediction": [1, 2]},
            "monitor.log: 2 predictions for 1 rows of features. Give one prediction per row.",
        ),
    ],
)
def test_log_refuses_what_it_cannot_take(
    active: Recorder, features: Any, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        monitor("iris").log(features, **kwargs)
    assert caught.value.message == message


def test_a_monitor_name_and_sample_rate_are_checked() -> None:
    with pytest.raises(InvalidArgument) as caught:
        monitor("../etc")
    assert caught.value.message == (
        "tiffin.monitor('../etc'): a monitor's name is 1 to 128 letters, digits, '_', '.' or "
        "'-', not starting with '.' or '-'. Name it after the model, e.g. 'iris'."
    )
    with pytest.raises(InvalidArgument) as caught:
        monitor("iris", sample_rate=1.5)
    assert caught.value.message == (
        "tiffin.monitor('iris', sample_rate=1.5): the sample rate is the share of records "
        "kept, a number from 0 to 1."
    )
    assert monitor("iris") is monitor("iris")


def test_sampling_keeps_each_record_with_the_rate_asked(
    active: Recorder, store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    random.seed(7)
    quarter = monitor("quarter", sample_rate=0.25)
    kept = sum(quarter.log({"i": i}) for i in range(4000))
    quarter.log(np.arange(8000.0).reshape(4000, 2), names=["i", "j"])  # rows sampled one by one
    assert not monitor("none", sample_rate=0).log({"i": 1})
    active.close()
    rows = len(lines(store / "quarter"))
    assert 900 < kept < 1100  # 1000 expected; 4 standard deviations either side
    assert 1800 < rows < 2200
    assert not (store / "none").exists()


def test_the_settings_give_the_default_sample_rate(store: Path) -> None:
    settings = config.load(flags={"monitor_sample_rate": 0.0, "monitor_dir": str(store.parent)})
    for active in installed(StoreOptions.from_settings(settings, "svc")):
        assert not monitor("iris").log({"a": 1})
        assert monitor("iris", sample_rate=1).log({"a": 1})
        active.close()
        assert len(lines(store / "iris")) == 1


def test_a_full_queue_drops_records_and_counts_them(store: Path) -> None:
    registry = CollectorRegistry()
    dropped = Counter("tiffin_monitor_dropped", "dropped", ["monitor"], registry=registry)
    options = StoreOptions(store, queue_size=5)
    for active in installed(options, dropped=dropped, interval=3600):  # the writer sleeps
        results = [monitor("iris").log({"i": i}) for i in range(8)]
        assert results == [True] * 5 + [False] * 3
        assert active.dropped == {"iris": 3}
        value = registry.get_sample_value("tiffin_monitor_dropped_total", {"monitor": "iris"})
        assert value == 3
        active.close()
        assert [r["features"]["i"] for r in lines(store / "iris")] == [0, 1, 2, 3, 4]


def test_log_never_waits_for_the_writer(active: Recorder, store: Path) -> None:
    """While the writer is stuck (a slow disk), log still returns: it only queues."""
    with active._writing:  # what the writer holds while it writes
        for i in range(1000):
            assert monitor("iris").log({"i": i})
    active.close()
    assert [r["features"]["i"] for r in lines(store / "iris")] == list(range(1000))


def test_many_threads_logging_at_once_lose_nothing(store: Path) -> None:
    """Under load: 8 threads logging while the writer writes and rotates small files."""
    options = StoreOptions(store, rotate_bytes=4096, queue_size=1_000_000)
    for active in installed(options, interval=0.001):

        def work(thread: int) -> None:
            for i in range(2000):
                monitor("load").log({"thread": thread, "i": i}, prediction=i % 3)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        active.close()
        files = sorted((store / "load").iterdir())
        assert len(files) > 10
        assert all(f.suffix == ".jsonl" for f in files)
        seen = [(r["features"]["thread"], r["features"]["i"]) for r in lines(store / "load")]
        assert sorted(seen) == [(t, i) for t in range(8) for i in range(2000)]
        for n in range(8):  # each thread's records in the order it logged them
            assert [i for t, i in seen if t == n] == list(range(2000))


def test_files_are_finished_when_large_enough(store: Path) -> None:
    for active in installed(StoreOptions(store, rotate_bytes=10), interval=3600):
        for i in range(5):
            monitor("iris").log({"value": i})
            active.flush()
        files = sorted(p.name for p in (store / "iris").iterdir())
        assert len(files) == 5
        assert all(name.endswith(".jsonl") for name in files)  # each past 10 bytes at once
        assert [r["features"]["value"] for r in lines(store / "iris")] == [0, 1, 2, 3, 4]


def test_files_are_finished_when_old_enough_even_without_new_records(store: Path) -> None:
    for active in installed(StoreOptions(store, rotate_seconds=0.05), interval=0.01):
        monitor("iris").log({"value": 1})
        active.flush()
        (part,) = (store / "iris").iterdir()
        assert part.name.endswith(".jsonl.part")
        deadline = time.monotonic() + 10
        while part.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [p.name for p in (store / "iris").iterdir()] == [part.name.removesuffix(".part")]


def test_parquet_files_hold_the_same_records(store: Path) -> None:
    for active in installed(StoreOptions(store, format="parquet")):
        monitor("iris").log({"a": 1.5, "b": "x"})
        monitor("iris").log({"a": 2.5, "c": True}, prediction="setosa")
        active.close()
    (finished,) = (store / "iris").iterdir()
    assert finished.suffix == ".parquet"
    records = read_window(store / "iris")
    assert [{k: v for k, v in r.items() if k != "ts"} for r in records] == [
        {"features": {"a": 1.5, "b": "x", "c": None}},
        {"features": {"a": 2.5, "b": None, "c": True}, "prediction": "setosa"},
    ]


def test_records_parquet_cannot_hold_stay_json_lines(store: Path) -> None:
    for active in installed(StoreOptions(store, format="parquet")):
        monitor("iris").log({"a": 1.5})
        monitor("iris").log({"a": "text"})
        active.close()
    (finished,) = (store / "iris").iterdir()
    assert finished.suffix == ".jsonl"
    assert [r["features"]["a"] for r in read_window(store / "iris")] == [1.5, "text"]


# -- reading the store while it is written ---------------------------------------------


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def record(ts: float, **features: Any) -> str:
    return json.dumps({"ts": ts, "features": features}) + "\n"


def test_a_line_being_written_is_not_read(store: Path) -> None:
    directory = store / "iris"
    write(directory, file_name(100.0, 1, ".jsonl.part"), record(100, a=1) + '{"ts": 101, "fea')
    assert [r["features"] for r in read_window(directory)] == [{"a": 1}]


def test_a_cut_line_in_a_finished_file_is_an_error(store: Path) -> None:
    directory = store / "iris"
    path = write(directory, file_name(100.0, 1, ".jsonl"), record(100, a=1) + '{"ts": 101')
    with pytest.raises(IntegrityError) as caught:
        read_window(directory)
    assert caught.value.message == (
        f"{path} is not a valid monitoring file: its last line (line 2) is cut short. Move it "
        f"out of {directory} (or delete it) and run again."
    )
    skipped: list[Path] = []
    assert read_window(directory, strict=False, skipped=skipped) == []
    assert skipped == [path]


def test_a_line_that_is_not_a_record_is_an_error(store: Path) -> None:
    directory = store / "iris"
    path = write(directory, file_name(100.0, 1, ".jsonl.part"), record(100) + "[1, 2]\n")
    with pytest.raises(IntegrityError) as caught:
        read_window(directory)
    assert caught.value.message == (
        f"{path} is not a valid monitoring file: line 2 is not a record with 'ts' and "
        f"'features'. Move it out of {directory} (or delete it) and run again."
    )


def test_a_part_beside_its_finished_file_is_read_once(store: Path) -> None:
    directory = store / "iris"
    write(directory, file_name(100.0, 1, ".jsonl"), record(100, a=1))
    write(directory, file_name(100.0, 1, ".jsonl.part"), record(100, a=1))
    assert len(read_window(directory)) == 1


def test_a_window_takes_records_from_since_to_until(store: Path) -> None:
    directory = store / "iris"
    write(
        directory, file_name(100.0, 1, ".jsonl"), "".join(record(t, t=t) for t in range(100, 110))
    )
    write(
        directory,
        file_name(105.0, 2, ".jsonl.part"),
        "".join(record(t, t=t) for t in range(105, 120)),
    )
    found = read_window(directory, since=108, until=112)
    assert [r["features"]["t"] for r in found] == [108, 108, 109, 109, 110, 111]
    newest = read_window(directory, limit=3)
    assert [r["features"]["t"] for r in newest] == [117, 118, 119]


def test_records_become_columns_with_the_prediction() -> None:
    records = [
        {"ts": 1, "features": {"a": 1, "b": "x"}, "prediction": 0},
        {"ts": 2, "features": {"a": 2, "c": 3.5}},
        {"ts": 3, "features": {"b": "y"}, "prediction": [0.2, 0.8]},  # not one value
    ]
    assert to_columns(records) == {
        "a": [1, 2, None],
        "b": ["x", None, "y"],
        "c": [None, 3.5, None],
        "prediction": [0, None, None],
    }


# -- the process's recorder ------------------------------------------------------------


def test_outside_a_server_records_go_under_the_home(home: Path) -> None:
    previous = use(None)
    try:
        monitor("iris").log({"a": 1.0})
        recorder().close()
    finally:
        use(previous)
    (finished,) = (home / "monitoring" / DEFAULT_SERVICE / "iris").iterdir()
    assert json.loads(finished.read_text())["features"] == {"a": 1.0}


def test_the_reference_setting_names_a_file_for_all_or_for_each_monitor() -> None:
    def read(value: Any) -> dict[str | None, Path]:
        return references(config.load(flags={"monitor_reference": value}))

    assert read(None) == {}
    assert read("data/ref.parquet") == {None: Path("data/ref.parquet")}
    assert read("iris=a.csv, churn=b.jsonl") == {"iris": Path("a.csv"), "churn": Path("b.jsonl")}
    assert read(["iris=a.csv", "all.csv"]) == {"iris": Path("a.csv"), None: Path("all.csv")}
    environ = {"TIFFIN_MONITOR_REFERENCE": "iris=a.csv,b.csv"}
    assert references(config.load(environ=environ)) == {"iris": Path("a.csv"), None: Path("b.csv")}
