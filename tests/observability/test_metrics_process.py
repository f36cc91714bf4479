"""``ProcessMetrics`` reading a ``/proc`` laid out as the kernel does: the supervisor's
children listed by the kernel (``CONFIG_PROC_CHILDREN``) or found by their parent, each
process's CPU time, resident memory and start time, zombies left out. The real
``/proc`` is read by the served tests (test_metrics_served)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tiffin.observability import metrics
from tiffin.observability.metrics import ProcessMetrics

BOOT = 1_700_000_000
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
OWN, SUPERVISOR = os.getpid(), os.getppid()
OTHER, THIRD, ZOMBIE, STRANGER = 4_000_001, 4_000_002, 4_000_003, 4_000_004


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty stand-in for /proc, with the boot time."""
    monkeypatch.setattr(metrics, "_PROC", str(tmp_path))
    (tmp_path / "stat").write_text(f"cpu  1 2 3 4\nbtime {BOOT}\nprocesses 9\n")
    return tmp_path


def process(
    proc: Path,
    pid: int,
    *,
    parent: int,
    cpu: tuple[int, int],
    start: int,
    rss: int,
    state: str = "S",
) -> None:
    """Write /proc/<pid>/stat: utime and stime are fields 14 and 15, starttime 22, rss 24;
    the command name may hold spaces and parentheses."""
    (proc / str(pid)).mkdir()
    (proc / str(pid) / "stat").write_text(
        f"{pid} (python3 (tiffin) w) {state} {parent} 0 0 0 -1 4194304 0 0 0 0 "
        f"{cpu[0]} {cpu[1]} 0 0 20 0 3 0 {start} 123456789 {rss} 18446744073709551615\n"
    )


def children(proc: Path, thread: int, *pids: int) -> None:
    task = proc / str(SUPERVISOR) / "task" / str(thread)
    task.mkdir(parents=True)
    (task / "children").write_text("".join(f"{pid} " for pid in pids))


def collected(supervised: bool) -> dict[str, dict[tuple[str, str], float]]:
    found: dict[str, dict[tuple[str, str], float]] = {}
    for family in ProcessMetrics(supervised=supervised).collect():
        for sample in family.samples:
            key = (sample.labels["process"], sample.labels["pid"])
            found.setdefault(sample.name, {})[key] = sample.value
    return found


def the_tree(proc: Path) -> None:
    process(proc, SUPERVISOR, parent=0, cpu=(150, 50), start=1000, rss=5000)
    process(proc, OWN, parent=SUPERVISOR, cpu=(300, 100), start=2000, rss=20000)
    process(proc, OTHER, parent=SUPERVISOR, cpu=(30, 10), start=2100, rss=30000)
    process(proc, THIRD, parent=SUPERVISOR, cpu=(1, 2), start=2200, rss=40000)
    # exited, not yet reaped
    process(proc, ZOMBIE, parent=SUPERVISOR, cpu=(9, 9), start=1500, rss=0, state="Z")
    process(proc, STRANGER, parent=STRANGER - 1, cpu=(5, 5), start=100, rss=100)


EXPECTED: dict[str, dict[tuple[str, str], float]] = {
    "tiffin_process_cpu_seconds_total": {
        ("supervisor", str(SUPERVISOR)): 200 / TICKS,
        ("worker", str(OWN)): 400 / TICKS,
        ("worker", str(OTHER)): 40 / TICKS,
        ("worker", str(THIRD)): 3 / TICKS,
    },
    "tiffin_process_resident_memory_bytes": {
        ("supervisor", str(SUPERVISOR)): 5000 * PAGE,
        ("worker", str(OWN)): 20000 * PAGE,
        ("worker", str(OTHER)): 30000 * PAGE,
        ("worker", str(THIRD)): 40000 * PAGE,
    },
    "tiffin_process_start_time_seconds": {
        ("supervisor", str(SUPERVISOR)): BOOT + 1000 / TICKS,
        ("worker", str(OWN)): BOOT + 2000 / TICKS,
        ("worker", str(OTHER)): BOOT + 2100 / TICKS,
        ("worker", str(THIRD)): BOOT + 2200 / TICKS,
    },
}


def test_children_the_kernel_lists_for_each_thread(proc: Path) -> None:
    the_tree(proc)
    children(proc, SUPERVISOR, OWN, OTHER, ZOMBIE)
    children(proc, SUPERVISOR + 1, THIRD)  # started from another thread
    children(proc, SUPERVISOR + 2)  # a thread that started none
    assert collected(supervised=True) == EXPECTED


def test_children_found_by_their_parent_on_a_kernel_that_lists_none(proc: Path) -> None:
    the_tree(proc)
    (proc / str(SUPERVISOR) / "task" / str(SUPERVISOR)).mkdir(parents=True)  # no children
    assert collected(supervised=True) == EXPECTED


def test_this_process_alone_when_not_a_supervised_worker(proc: Path) -> None:
    the_tree(proc)
    children(proc, SUPERVISOR, OTHER)  # this process is not among them: not a worker of it
    alone = {
        name: {("worker", str(OWN)): by[("worker", str(OWN))]} for name, by in EXPECTED.items()
    }
    assert collected(supervised=True) == alone
    assert collected(supervised=False) == alone
