"""Saving and loading a large model, compared with copying the same bytes with `cp`.

The model is a dict holding one numpy array of SIZE bytes, saved with the default
(pickle) framework. After an untimed warm-up round, the operations run in turn REPEAT
times, each starting with no dirty pages waiting to be written back; the median and
best of each are kept:

    cp          cp SRC DST of a file holding the array's bytes (page cache warm)
    sha256sum   sha256sum SRC (coreutils)
    sha256 in memory  hashlib.sha256 over the array: the floor a save recording a sha256
                of every byte would have (models saved before BLAKE3 record one)
    blake3 in memory  blake3 over the array, one thread: the floor for a save recording a
                BLAKE3 digest of every byte, as the store does
    save        tiffin ModelStore.save (write + BLAKE3 of every file + model.yaml)
    load        ModelStore.get(tag).load() back into a numpy array, touching every page
    cp+sync     cp, then fsync the copy (sync DST)
    save durable  save with durable_writes=True (fsync before the model becomes visible)

Fresh memory. In a virtual machine whose host backs guest memory lazily (and takes back
pages the guest frees), the first write to a page the guest has not used lately costs a
fault in the host: writing 1 GiB into such pages took 2.6 s here, into recently freed
ones 0.26 s. So that every operation meets the same memory, each one removes what it
wrote before the next starts (the model a load reads is saved, untimed, just before it),
and the operations that write run back to back, in a round of their own, without the
pause of a read-only operation between them (a host takes back freed pages after a few
seconds).

Usage: python bench/model_store_io.py [--size-mib 1024] [--repeat 11]
Results are printed as a table and written to bench/results/model_store_io.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import numpy as np

from tiffin.models import ModelStore

RESULTS = Path(__file__).parent / "results"
READS = ("sha256sum", "sha256 in memory", "blake3 in memory")
WRITES = ("cp", "save", "load", "cp+sync", "save durable")


Step = Callable[[], object]


def timed(setup: Step, action: Step, cleanup: Step) -> float:
    """Seconds ``action`` takes, after ``setup`` and starting with no dirty pages waiting
    to be written back (so one measurement does not pay for the previous one's writes);
    ``cleanup`` after."""
    setup()
    os.sync()
    start = time.perf_counter()
    action()
    seconds = time.perf_counter() - start
    cleanup()
    os.sync()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args()
    size = args.size_mib << 20

    work = Path(tempfile.mkdtemp(prefix="tiffin-bench-", dir=os.environ.get("BENCH_DIR")))
    try:
        weights = np.frombuffer(np.random.default_rng(0).bytes(size), dtype=np.uint8)
        expected_pages = int(weights[::4096].sum())
        src, dst = work / "weights.bin", work / "copy.bin"
        src.write_bytes(weights.data)
        store = ModelStore(work / "home")
        durable = ModelStore(work / "home", durable=True)

        def remove_copy() -> None:
            dst.unlink(missing_ok=True)

        def drop_models() -> None:
            for model in store.list("big"):
                store.delete(model.tag)

        def check_load() -> None:
            loaded = store.get("big").load()["weights"]
            # touch every page, so a lazily mapped model is counted as fully loaded
            if int(loaded[::4096].sum()) != expected_pages or loaded.nbytes != size:
                raise SystemExit("loaded model differs from the saved one")

        def save() -> None:
            store.save("big", {"weights": weights})

        def nothing() -> None:
            pass

        # name: (setup, timed action, cleanup)
        operations: dict[str, tuple[Step, Step, Step]] = {
            "cp": (nothing, lambda: subprocess.run(["cp", src, dst], check=True), remove_copy),
            "sha256sum": (
                nothing,
                lambda: subprocess.run(["sha256sum", src], check=True, capture_output=True),
                nothing,
            ),
            "sha256 in memory": (
                nothing,
                lambda: hashlib.sha256(weights.data).hexdigest(),
                nothing,
            ),
            "blake3 in memory": (nothing, lambda: blake3.blake3(weights.data).hexdigest(), nothing),
            "save": (nothing, save, drop_models),
            "load": (save, check_load, drop_models),
            "cp+sync": (
                nothing,
                lambda: subprocess.run(f"cp {src} {dst} && sync {dst}", shell=True, check=True),
                remove_copy,
            ),
            "save durable": (
                nothing,
                lambda: durable.save("big", {"weights": weights}),
                drop_models,
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in operations}
        # Operations that write run back to back, each in the memory the one before just
        # freed; those that only read run in a round of their own.
        for group in (READS, WRITES):
            for name in group:  # warm-up round, not counted
                timed(*operations[name])
            for _ in range(args.repeat):  # interleaved, so drift hits all alike
                for name in group:
                    samples[name].append(timed(*operations[name]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    results = {name: statistics.median(values) for name, values in samples.items()}
    best = {name: min(values) for name, values in samples.items()}
    ratios = {
        "save / cp": results["save"] / results["cp"],
        "load / cp": results["load"] / results["cp"],
        "sha256 in memory / cp": results["sha256 in memory"] / results["cp"],
        "blake3 in memory / cp": results["blake3 in memory"] / results["cp"],
        "save durable / cp+sync": results["save durable"] / results["cp+sync"],
    }
    print(f"\n{args.size_mib} MiB model, {args.repeat} interleaved runs, {os.cpu_count()} cores\n")
    print(f"{'operation':<18}{'median s':>9}{'best s':>8}{'GiB/s':>7}   every run")
    for name, seconds in results.items():
        runs = " ".join(f"{v:.2f}" for v in samples[name])
        rate = size / seconds / (1 << 30)
        print(f"{name:<18}{seconds:>9.3f}{best[name]:>8.3f}{rate:>7.2f}   {runs}")
    print(f"\n{'ratio of medians':<24}{'':>6}  (best / best)")
    for name, ratio in ratios.items():
        top, bottom = (part.strip() for part in name.split("/"))
        print(f"{name:<24}{ratio:>6.2f}x  ({best[top] / best[bottom]:.2f}x)")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "size_bytes": size,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "median_seconds": results,
        "best_seconds": best,
        "samples": samples,
        "ratios": ratios,
    }
    (RESULTS / "model_store_io.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
