"""Drift: the statistics against known values, drift found where data shifted and not where
it did not, and the live drift of a server's worker."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge

from tiffin.exceptions import InvalidArgument, NotFound
from tiffin.observability.drift import (
    EPSILON,
    LiveDrift,
    Profile,
    chi2_test,
    compare,
    ks_test,
    population_stability_index,
)
from tiffin.observability.monitor_store import Columns, file_name, read_window, to_columns

# -- known values ----------------------------------------------------------------------


def test_psi_of_shares_is_the_textbook_sum() -> None:
    # sum((a - e) * ln(a / e)) over the bins, by hand:
    expected = 0.15 * math.log(2.5) + 0.05 * math.log(1.25) + 0.05 * math.log(1.2)
    expected += 0.15 * math.log(1.6)
    assert population_stability_index([25, 25, 25, 25], [10, 20, 30, 40]) == pytest.approx(
        expected, abs=1e-12
    )
    assert expected == pytest.approx(0.228217, abs=1e-6)
    assert population_stability_index([1, 2, 3], [2, 4, 6]) == 0.0


def test_an_empty_bin_counts_as_epsilon() -> None:
    # the reference's deciles of 0..99 hold ten values each; the logged values fill the
    # lower five bins twice as much and leave the upper five empty
    profile = Profile({"x": list(range(100))})
    psi = profile.psi({"x": list(range(50)) * 2})["x"]
    by_hand = 5 * (0.2 - 0.1) * math.log(2) + 5 * (EPSILON - 0.1) * math.log(EPSILON / 0.1)
    assert psi == pytest.approx(by_hand, abs=1e-12)
    assert psi == pytest.approx(3.796998, abs=1e-6)


def test_categorical_psi_counts_each_category() -> None:
    reference = {"c": ["a"] * 50 + ["b"] * 30 + ["c"] * 20}
    psi = Profile(reference).psi({"c": ["a"] * 20 + ["b"] * 30 + ["c"] * 50})["c"]
    assert psi == pytest.approx(0.6 * math.log(2.5), abs=1e-12)
    new = Profile(reference).psi({"c": ["a"] * 50 + ["b"] * 30 + ["new"] * 20})["c"]
    by_hand = (EPSILON - 0.2) * math.log(EPSILON / 0.2) + (0.2 - EPSILON) * math.log(0.2 / EPSILON)
    assert new == pytest.approx(by_hand, abs=1e-12)  # a category never seen is a shift


def test_ks_p_values_are_exact_for_small_samples() -> None:
    # Apart entirely: D = 1, and the two-sided p-value is 2 / C(n + m, n)
    assert ks_test([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx((1.0, 2 / 252), abs=1e-12)
    assert ks_test([1, 2, 3], [4, 5, 6]) == pytest.approx((1.0, 2 / 20), abs=1e-12)
    statistic, p_value = ks_test([1, 2, 3, 4], [1, 2, 3, 4])
    assert (statistic, p_value) == (0.0, 1.0)


def test_chi_squared_of_known_tables() -> None:
    # 2 x 2, expected 15 per cell: 4 * 25 / 15 on 1 degree of freedom, no correction
    statistic, p_value = chi2_test([10, 20], [20, 10])
    assert statistic == pytest.approx(20 / 3, abs=1e-12)
    assert p_value == pytest.approx(math.erfc(math.sqrt(10 / 3)), abs=1e-12)  # P(Z^2 > 20/3)
    # 2 x 3, expected 20 per cell, four cells 10 away: 4 * 100 / 20 = 20 on 2 degrees of
    # freedom, whose survival function is exp(-x / 2)
    statistic, p_value = chi2_test([30, 20, 10], [10, 20, 30])
    assert statistic == pytest.approx(20.0, abs=1e-12)
    assert p_value == pytest.approx(math.exp(-10), rel=1e-9)
    assert chi2_test([5, 0], [7, 0]) == (0.0, 1.0)  # one category: nothing can differ


# -- shifted and unshifted -------------------------------------------------------------


def synthetic(
    seed: int, rows: int, *, shift: float = 0.0, shares: Any = (0.5, 0.3, 0.2)
) -> Columns:
    rng = np.random.default_rng(seed)
    return {
        "amount": rng.normal(shift, 1.0, rows).tolist(),
        "colour": rng.choice(["red", "green", "blue"], rows, p=shares).tolist(),
    }


REFERENCE = synthetic(0, 5000)


def test_no_drift_where_the_data_did_not_shift() -> None:
    report = compare(REFERENCE, synthetic(1, 1000))
    assert report.drifted == []
    by_name = {f.feature: f for f in report.features}
    assert by_name["amount"].kind == "numeric"
    assert by_name["amount"].test == "ks"
    assert by_name["amount"].psi < 0.05
    assert by_name["amount"].p_value > 0.05
    assert by_name["colour"].kind == "categorical"
    assert by_name["colour"].test == "chi2"
    assert by_name["colour"].psi < 0.05
    assert by_name["colour"].p_value > 0.05


def test_drift_where_the_data_shifted() -> None:
    report = compare(REFERENCE, synthetic(2, 1000, shift=0.75, shares=(0.2, 0.3, 0.5)))
    assert report.drifted == ["amount", "colour"]
    assert all(f.psi > 0.4 and f.p_value < 1e-20 for f in report.features)


def test_drift_only_in_the_feature_that_shifted() -> None:
    report = compare(REFERENCE, synthetic(3, 1000, shift=0.75))
    assert report.drifted == ["amount"]
    numeric_only = compare(REFERENCE, synthetic(4, 1000, shares=(0.2, 0.3, 0.5)))
    assert numeric_only.drifted == ["colour"]


def test_a_small_window_needs_significance_as_well_as_a_large_psi() -> None:
    few: Columns = {"amount": [0.1, -0.4, 1.2], "colour": ["red", "red", "blue"]}
    report = compare(REFERENCE, few)
    assert all(f.p_value >= 0.05 for f in report.features)
    assert report.drifted == []


def test_a_features_kind_and_its_missing_values() -> None:
    reference: Columns = {
        "flag": [True, False] * 50,
        "n": [1, 2, None, float("nan")] * 25,
        "size": ["s", "m", None] * 30,
    }
    current: Columns = {
        "flag": [True] * 10,
        "n": [1, "two", None],
        "size": ["s"],
        "extra": [1],
        "gone": [None],
    }
    reference["gone"] = [1.0]
    report = compare(reference, current)
    assert [(f.feature, f.kind, f.reference_count, f.current_count) for f in report.features] == [
        ("flag", "categorical", 100, 10),
        ("n", "numeric", 50, 1),  # None, NaN and text left out
        ("size", "categorical", 60, 1),
    ]
    assert report.not_in_reference == ["extra"]
    assert report.not_logged == []
    assert report.no_values == ["gone"]
    assert report.reference_rows == 100
    assert report.current_rows == 10


def test_no_feature_in_common_is_an_error() -> None:
    with pytest.raises(InvalidArgument) as caught:
        compare({"a": [1], "b": [2]}, {"x": [1]})
    assert caught.value.message == (
        "The reference and the logged records have no feature in common: the reference has "
        "a, b; the monitor logged x. Name the reference's columns as the features are logged."
    )


def test_the_live_psi_is_the_reports_psi() -> None:
    current = synthetic(2, 1000, shift=0.75, shares=(0.2, 0.3, 0.5))
    live = Profile(REFERENCE).psi(current)
    assert live == {f.feature: f.psi for f in compare(REFERENCE, current).features}


# -- live drift ------------------------------------------------------------------------


def write_records(directory: Path, columns: Columns, ts: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    lines = [json.dumps({"ts": ts, "features": row}) for row in rows]
    (directory / file_name(ts, 1, ".jsonl.part")).write_text("\n".join(lines) + "\n")


def reference_file(tmp_path: Path, columns: Columns) -> Path:
    path = tmp_path / "reference.jsonl"
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def gauge() -> tuple[Gauge, CollectorRegistry]:
    registry = CollectorRegistry()
    metric = Gauge(
        "tiffin_drift_score", "psi", ["monitor", "feature"], registry=registry,
        multiprocess_mode="mostrecent",
    )  # fmt: skip
    return metric, registry


def test_live_drift_sets_the_gauge_for_each_monitor_and_feature(tmp_path: Path) -> None:
    store = tmp_path / "store" / "svc"
    now = time.time()
    shifted = synthetic(2, 1000, shift=0.75, shares=(0.2, 0.3, 0.5))
    write_records(store / "basket", shifted, now - 10)
    write_records(store / "old", synthetic(1, 100), now - 7200)  # outside the window
    metric, registry = gauge()
    live = LiveDrift(
        store, {None: reference_file(tmp_path, REFERENCE)}, metric, interval=60, window=3600
    )

    async def measure() -> dict[str, dict[str, float]] | None:
        await live.start()  # reads the reference, measures once in the background
        try:
            return live.measure(now=now + 60)
        finally:
            await live.stop()

    found = asyncio.run(measure())
    expected = Profile(REFERENCE).psi(to_columns(read_window(store / "basket")))
    assert found == {"basket": expected}
    for feature, value in expected.items():
        labels = {"monitor": "basket", "feature": feature}
        assert registry.get_sample_value("tiffin_drift_score", labels) == value
    assert expected["amount"] > 0.2


def test_workers_take_turns(tmp_path: Path) -> None:
    store = tmp_path / "store" / "svc"
    write_records(store / "basket", synthetic(1, 100), 1e9)
    reference = reference_file(tmp_path, REFERENCE)

    def worker() -> LiveDrift:
        live = LiveDrift(store, {"basket": reference}, gauge()[0], interval=60, window=1e10)
        live.profiles = live._load()
        return live

    first, second = worker(), worker()
    assert first.measure(now=2e9) is not None
    assert second.measure(now=2e9 + 10) is None  # the first measured less than 30 s ago
    assert second.measure(now=2e9 + 31) is not None


def test_a_missing_reference_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing.parquet"
    live = LiveDrift(tmp_path, {None: missing}, gauge()[0], interval=60, window=60)
    with pytest.raises(NotFound) as caught:
        asyncio.run(live.start())
    assert caught.value.message == (
        f"The reference {missing} does not exist. Give the path of a Parquet file with one "
        "column per feature."
    )
