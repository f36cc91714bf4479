"""``tiffin monitor list`` and ``tiffin monitor report``: what a person and a script see,
the HTML report, and every bad input's message and exit code."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from tiffin.cli import cli
from tiffin.observability.drift import compare
from tiffin.observability.drift_report import number
from tiffin.observability.monitor_store import Columns, file_name

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC).timestamp()
WINDOW = ["--since", "2026-11-24T10:00", "--until", "2026-11-24T11:00"]


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def synthetic(seed: int, rows: int, *, shift: float = 0.0) -> Columns:
    rng = np.random.default_rng(seed)
    shares = (0.5, 0.3, 0.2) if not shift else (0.2, 0.3, 0.5)
    return {
        "amount": rng.normal(shift, 1.0, rows).round(4).tolist(),
        "colour": rng.choice(["red", "green", "blue"], rows, p=shares).tolist(),
    }


def log(home: Path, columns: Columns, *, start: float, service: str = "shop") -> None:
    """Records as a server writes them, one a second from ``start``, with a prediction."""
    directory = home / "monitoring" / service / "basket"
    directory.mkdir(parents=True, exist_ok=True)
    rows = [dict(zip(columns, v, strict=True)) for v in zip(*columns.values(), strict=True)]
    lines = [
        json.dumps({"ts": start + i, "features": row, "prediction": i % 2})
        for i, row in enumerate(rows)
    ]
    (directory / file_name(start, 4121, ".jsonl")).write_text("\n".join(lines) + "\n")


@pytest.fixture
def reference(tmp_path: Path) -> Path:
    path = tmp_path / "reference.csv"
    columns = synthetic(0, 2000)
    rows = zip(*columns.values(), strict=True)
    path.write_text("amount,colour,weight\n" + "".join(f"{a},{c},1\n" for a, c in rows))
    return path


@pytest.fixture
def shifted(home: Path) -> Columns:
    columns = synthetic(2, 600, shift=0.75)
    log(home, columns, start=START + 600)  # from 10:10 to 10:20
    log(home, synthetic(9, 50), start=START - 7200)  # 08:00, outside the window
    return columns


def test_report_shows_a_table_of_every_feature(
    home: Path, reference: Path, shifted: Columns
) -> None:
    result = run(home, "monitor", "report", "basket", "--reference", str(reference), *WINDOW)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "Monitor basket (service shop): 600 records from 2026-11-24T10:00:00Z to "
        "2026-11-24T11:00:00Z, against 2000 reference rows (reference.csv)."
    )
    assert lines[1].split() == [
        "FEATURE", "KIND", "TEST", "STATISTIC", "P-VALUE", "PSI", "REFERENCE", "LOGGED", "DRIFT",
    ]  # fmt: skip
    expected = compare(_read_csv(reference), shifted)
    for line, feature in zip(lines[2:4], expected.features, strict=True):
        assert line.split() == [
            feature.feature,
            feature.kind,
            {"ks": "KS", "chi2": "chi2"}[feature.test],
            number(feature.statistic),
            number(feature.p_value),
            number(feature.psi),
            "2000",
            "600",
            "yes",
        ]
    assert lines[4:] == [
        "2 of 2 features drifted: amount, colour. (Drift: PSI >= 0.2 and p-value < 0.05.)",
        "In the reference, not logged: weight.",
        "Logged, not in the reference: prediction.",
    ]


def _read_csv(path: Path) -> Columns:
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return {"amount": [float(r[0]) for r in rows], "colour": [r[1] for r in rows]}


def test_report_as_json_for_scripts(home: Path, reference: Path, shifted: Columns) -> None:
    html = home.parent / "drift.html"
    result = run(
        home, "monitor", "report", "basket", "-r", str(reference), *WINDOW,
        "--html", str(html), "--psi-threshold", "0.3", "--alpha", "0.01", "-o", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    features = document.pop("features")
    assert document == {
        "monitor": "basket",
        "service": "shop",
        "since": "2026-11-24T10:00:00Z",
        "until": "2026-11-24T11:00:00Z",
        "records": 600,
        "reference": {"path": str(reference), "rows": 2000},
        "psi_threshold": 0.3,
        "alpha": 0.01,
        "drifted": ["amount", "colour"],
        "not_logged": ["weight"],
        "not_in_reference": ["prediction"],
        "no_values": [],
        "html": str(html),
    }
    expected = compare(_read_csv(reference), shifted, psi_threshold=0.3, alpha=0.01)
    assert features == [f.to_dict() for f in expected.features]
    assert list(features[0]) == [
        "feature", "kind", "test", "statistic", "p_value", "psi", "reference_count",
        "current_count", "drift",
    ]  # fmt: skip


def test_no_drift_in_an_unshifted_window(home: Path, reference: Path) -> None:
    log(home, synthetic(1, 600), start=START)
    result = run(home, "monitor", "report", "basket", "-r", str(reference), *WINDOW, "-o", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["drifted"] == []
    assert [f["drift"] for f in document["features"]] == [False, False]


def test_the_html_report_is_one_file_with_a_plot_per_feature(
    home: Path, reference: Path, shifted: Columns
) -> None:
    html = home.parent / "report.html"
    result = run(
        home, "monitor", "report", "basket", "-r", str(reference), *WINDOW, "--html", str(html)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"Report with plots: {html}"
    page = html.read_text()
    assert page.startswith("<!doctype html>")
    assert "<title>Drift of monitor basket</title>" in page
    assert page.count("<svg") == 3  # the PSI chart and one plot per feature
    for feature in ("amount", "colour"):
        assert f"<section id='feature-{feature}'><h2>{feature}" in page
    assert "<title>amount: reference and logged shares per bin</title>" in page
    assert "red: reference" in page  # a category's bar names it
    # self-contained: nothing fetched, nothing run
    assert "<script" not in page
    assert not re.search(r"(src|href)=", page)
    assert re.findall(r"https?://[^'\"]+", page) == ["http://www.w3.org/2000/svg"] * 3


def test_a_reference_in_each_format_gives_the_same_report(
    home: Path, reference: Path, shifted: Columns
) -> None:
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    columns = _read_csv(reference)
    rows = [dict(zip(columns, v, strict=True)) for v in zip(*columns.values(), strict=True)]
    as_parquet = home.parent / "reference.parquet"
    parquet.write_table(pyarrow.Table.from_pydict(columns), as_parquet)
    as_lines = home.parent / "reference.jsonl"
    as_lines.write_text("".join(json.dumps(row) + "\n" for row in rows))
    as_records = home.parent / "records.ndjson"  # a store file used as the reference
    as_records.write_text("".join(json.dumps({"ts": 0, "features": r}) + "\n" for r in rows))
    as_array = home.parent / "reference.json"
    as_array.write_text(json.dumps(rows))
    expected = [f.to_dict() for f in compare(columns, shifted).features]
    for path in (reference, as_parquet, as_lines, as_records, as_array):
        result = run(home, "monitor", "report", "basket", "-r", str(path), *WINDOW, "-o", "json")
        assert result.exit_code == 0, (path, result.output)
        assert json.loads(result.stdout)["features"] == expected


def test_list_shows_each_monitor(home: Path, shifted: Columns) -> None:
    log(home, synthetic(1, 10), start=START, service="other")
    result = run(home, "monitor", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SERVICE", "MONITOR", "FILES", "SIZE", "LAST", "WRITTEN", "(UTC)"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["other", "basket", "1"],
        ["shop", "basket", "2"],
    ]
    listed = json.loads(run(home, "monitor", "list", "-o", "json").stdout)
    assert [(m["service"], m["monitor"], m["files"]) for m in listed] == [
        ("other", "basket", 1),
        ("shop", "basket", 2),
    ]
    empty = run(home.parent / "empty", "monitor", "list")
    assert empty.stdout == (
        f"No monitors in {home.parent / 'empty' / 'monitoring'}. A service makes one when an "
        "API calls tiffin.monitor(name).log(...).\n"
    )


# -- bad input ---------------------------------------------------------------------------


def error(result: Result) -> tuple[int, str]:
    assert result.stdout == ""
    return result.exit_code, result.stderr


def test_a_missing_reference(home: Path, shifted: Columns) -> None:
    missing = home.parent / "missing.parquet"
    result = run(home, "monitor", "report", "basket", "-r", str(missing), *WINDOW)
    assert error(result) == (
        3,
        f"Error: The reference {missing} does not exist. Give the path of a Parquet file with "
        "one column per feature.\n",
    )


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("ref.csv", "a,b\n1,2\n3\n", "line 3 has 1 fields, the header 2"),
        ("ref.csv", "a,a\n1,2\n", "its header names a column twice"),
        ("ref.jsonl", '{"a": 1}\n[2]\n', "line 2 is not a JSON object"),
        (
            "ref.jsonl",
            '{"a": 1}\n{"a": 1\n',
            "line 2 is not valid JSON (unexpected end of data: line 1 column 8 (char 7))",
        ),
    ],
)
def test_an_unreadable_reference(
    home: Path, shifted: Columns, name: str, content: str, reason: str
) -> None:
    path = home.parent / name
    path.write_text(content)
    result = run(home, "monitor", "report", "basket", "-r", str(path), *WINDOW)
    kind = {".csv": "CSV", ".jsonl": "JSON lines"}[path.suffix]
    assert error(result) == (
        2,
        f"Error: Cannot read the reference {path} as {kind}: {reason}. Check that it is a "
        f"valid {kind} file.\n",
    )


def test_a_reference_that_is_not_parquet(home: Path, shifted: Columns) -> None:
    path = home.parent / "ref.parquet"
    path.write_text("not parquet")
    code, message = error(run(home, "monitor", "report", "basket", "-r", str(path), *WINDOW))
    assert code == 2
    assert message.startswith(f"Error: Cannot read the reference {path} as Parquet: ")
    assert message.endswith(". Check that it is a valid Parquet file.\n")  # pyarrow's reason


def test_a_reference_of_another_kind(home: Path, shifted: Columns) -> None:
    path = home.parent / "ref.txt"
    path.write_text("a,b\n")
    assert error(run(home, "monitor", "report", "basket", "-r", str(path), *WINDOW)) == (
        2,
        f"Error: Cannot read the reference {path}: its name must end in .parquet, .csv or "
        ".jsonl (a Parquet, CSV or JSON lines file with one column per feature).\n",
    )


def test_an_empty_reference(home: Path, shifted: Columns) -> None:
    path = home.parent / "ref.csv"
    path.write_text("amount,colour\n")
    assert error(run(home, "monitor", "report", "basket", "-r", str(path), *WINDOW)) == (
        2,
        f"Error: The reference {path} has no rows. Give a data set with the features as the "
        "model saw them (its training or validation data).\n",
    )


def test_nothing_logged_in_the_window(home: Path, reference: Path, shifted: Columns) -> None:
    newest = (home / "monitoring" / "shop" / "basket").iterdir()
    stamp = max(p.stat().st_mtime for p in newest)
    late = ["--since", "2026-11-24T12:00", "--until", "2026-11-24T13:00"]
    newest_text = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert error(run(home, "monitor", "report", "basket", "-r", str(reference), *late)) == (
        3,
        "Error: Monitor 'basket' logged nothing from 2026-11-24T12:00:00Z to "
        f"2026-11-24T13:00:00Z. Its newest record is from about {newest_text}: widen the "
        "window (--window 24h) or move it (--since, --until).\n",
    )


def test_an_unknown_monitor(home: Path, reference: Path, shifted: Columns) -> None:
    assert error(run(home, "monitor", "report", "iris", "-r", str(reference))) == (
        3,
        f"Error: No data for monitor 'iris' in {home / 'monitoring'}. Monitors there: "
        "shop/basket. A service writes it when an API calls tiffin.monitor('iris').log(...); "
        "the store is under --home (TIFFIN_HOME) or the monitor_dir setting.\n",
    )


def test_a_monitor_of_several_services(home: Path, reference: Path, shifted: Columns) -> None:
    log(home, synthetic(1, 10), start=START, service="other")
    assert error(run(home, "monitor", "report", "basket", "-r", str(reference), *WINDOW)) == (
        2,
        "Error: Monitor 'basket' has data from several services (other, shop). Pick one with "
        "--service.\n",
    )
    chosen = run(
        home, "monitor", "report", "basket", "-r", str(reference), "--service", "shop", *WINDOW
    )
    assert chosen.exit_code == 0, chosen.output


def test_no_feature_in_common(home: Path, shifted: Columns) -> None:
    path = home.parent / "ref.jsonl"
    path.write_text('{"height": 1.0, "width": 2.0}\n')
    assert error(run(home, "monitor", "report", "basket", "-r", str(path), *WINDOW)) == (
        2,
        f"Error: The reference {path} and monitor 'basket' have no feature in common: the "
        "reference has height, width; the monitor logged amount, colour, prediction. Name the "
        "reference's columns as the features are logged.\n",
    )


def test_a_corrupt_store_file(home: Path, reference: Path, shifted: Columns) -> None:
    directory = home / "monitoring" / "shop" / "basket"
    bad = directory / file_name(START + 1200, 4122, ".jsonl")
    bad.write_text('{"ts": 1, "features": {}}\n{"ts": 2, "feat')
    assert error(run(home, "monitor", "report", "basket", "-r", str(reference), *WINDOW)) == (
        8,
        f"Error: {bad} is not a valid monitoring file: its last line (line 2) is cut short. "
        f"Move it out of {directory} (or delete it) and run again.\n",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--window", "2h", "--since", "3h"],
            "Give --window or --since, not both: --window counts back from --until.",
        ),
        (
            ["--window", "5 parsecs"],
            "--window '5 parsecs' is not a duration. Write a number and a unit: 30s, 15m, 1h, "
            "7d or 2w.",
        ),
        (
            ["--since", "yesterday"],
            "--since 'yesterday' is neither a time nor a duration. Write a UTC time like "
            "2026-11-24T08:00 or a duration before now like 2h.",
        ),
        (
            ["--since", "2026-11-24T11:00", "--until", "2026-11-24T10:00"],
            "The window starts (2026-11-24T11:00:00Z) after it ends (2026-11-24T10:00:00Z). "
            "Give a --since before --until.",
        ),
    ],
)
def test_a_bad_window(home: Path, reference: Path, options: list[str], message: str) -> None:
    result = run(home, "monitor", "report", "basket", "-r", str(reference), *options)
    assert error(result) == (2, f"Error: {message}\n")


def test_times_with_an_offset_and_durations(home: Path, reference: Path, shifted: Any) -> None:
    offset = ["--since", "2026-11-24T11:00+01:00", "--until", "2026-11-24T13:00+02:00"]
    result = run(home, "monitor", "report", "basket", "-r", str(reference), *offset, "-o", "json")
    document = json.loads(result.stdout)
    assert (document["since"], document["until"]) == (
        "2026-11-24T10:00:00Z",
        "2026-11-24T11:00:00Z",
    )
    assert document["records"] == 600
    recent = run(home, "monitor", "report", "basket", "-r", str(reference), "--window", "2h")
    assert recent.exit_code == 3  # the synthetic records are from 2026-11-24
    assert "Error: Monitor 'basket' logged nothing from " in recent.stderr
