"""Every task store backend, against one suite: SQLite and a real Redis server.

Time is passed in (``now``), so leases, backoff and expiry are tested without waiting.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tiffin.tasks.queue import open_store
from tiffin.tasks.sqlite import SQLiteStore
from tiffin.tasks.store import CALLBACK_LEASE, LOST_LIMIT, TaskStore

T0 = 1_800_000_000.0
LEASE = 30.0


def test_submit_get_and_list(task_store: TaskStore) -> None:
    first = task_store.submit("report", b'{"n": 1}', ttl=60, callback=None, now=T0)
    second = task_store.submit("report", b'{"n": 2}', ttl=60, callback=None, now=T0 + 1)
    other = task_store.submit("other", b"{}", ttl=60, callback="http://x/y", now=T0 + 2)
    assert len({first.id, second.id, other.id}) == 3
    assert first.id < second.id < other.id  # ids sort by submission time

    got = task_store.get(first.id, now=T0 + 3)
    assert got is not None
    assert (got.task, got.status, got.payload, got.attempts) == ("report", "queued", b'{"n": 1}', 0)
    assert (got.submitted_at, got.run_at, got.ttl, got.callback) == (T0, T0, 60.0, None)
    assert task_store.get(other.id, now=T0 + 3).callback == "http://x/y"  # type: ignore[union-attr]
    assert task_store.get("0" * 32, now=T0) is None

    listed = task_store.list("report", status=None, limit=10, now=T0 + 3)
    assert [r.id for r in listed] == [second.id, first.id]
    assert [r.id for r in task_store.list("report", status=None, limit=1, now=T0 + 3)] == [
        second.id
    ]
    assert task_store.list("report", status="running", limit=10, now=T0 + 3) == []
    assert task_store.list("nothing", status=None, limit=10, now=T0) == []
    assert task_store.depth(["report", "other", "none"], now=T0 + 3) == {
        "report": 2,
        "other": 1,
        "none": 0,
    }


def test_claims_the_oldest_runnable_task_of_the_names_asked_for(task_store: TaskStore) -> None:
    assert task_store.claim(["report"], "a", lease=LEASE, now=T0) is None
    old = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    task_store.submit("other", b"{}", ttl=60, callback=None, now=T0 - 10)
    new = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0 + 1)

    claimed = task_store.claim(["report"], "a", lease=LEASE, now=T0 + 2)
    assert claimed is not None
    assert claimed.id == old.id
    assert (claimed.status, claimed.owner, claimed.attempts) == ("running", "a", 1)
    assert (claimed.started_at, claimed.lease_until) == (T0 + 2, T0 + 2 + LEASE)
    second = task_store.claim(["report"], "b", lease=LEASE, now=T0 + 2)
    assert second is not None
    assert second.id == new.id
    assert task_store.claim(["report"], "c", lease=LEASE, now=T0 + 2) is None
    assert task_store.depth(["report", "other"], now=T0 + 2) == {"report": 0, "other": 1}
    assert [r.id for r in task_store.list("report", status="running", limit=5, now=T0 + 2)] == [
        new.id,
        old.id,
    ]


def test_a_result_is_stored_once_by_its_owner(task_store: TaskStore) -> None:
    task = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    assert task_store.claim(["report"], "a", lease=LEASE, now=T0) is not None
    assert task_store.complete(task.id, "intruder", b"1", now=T0 + 1) is None

    done = task_store.complete(task.id, "a", b'{"ok": true}', now=T0 + 2)
    assert done is not None
    assert (done.status, done.result, done.finished_at) == ("completed", b'{"ok": true}', T0 + 2)
    assert (done.expires_at, done.owner, done.lease_until) == (T0 + 62, None, None)
    assert done.callback_status is None
    assert task_store.complete(task.id, "a", b"2", now=T0 + 3) is None  # not twice
    assert task_store.get(task.id, now=T0 + 3).result == b'{"ok": true}'  # type: ignore[union-attr]


def test_a_failure_is_retried_at_its_time_then_failed(task_store: TaskStore) -> None:
    task = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    task_store.claim(["report"], "a", lease=LEASE, now=T0)
    error = {"type": "ValueError", "message": "bad"}

    retried = task_store.fail(task.id, "a", error, retry_at=T0 + 10, now=T0 + 1)
    assert retried is not None
    assert (retried.status, retried.errors, retried.error, retried.run_at) == (
        "queued",
        1,
        error,
        T0 + 10,
    )
    assert retried.owner is None
    assert task_store.claim(["report"], "a", lease=LEASE, now=T0 + 9) is None  # backing off
    again = task_store.claim(["report"], "b", lease=LEASE, now=T0 + 10)
    assert again is not None
    assert (again.id, again.attempts, again.errors) == (task.id, 2, 1)

    failed = task_store.fail(task.id, "b", error, retry_at=None, now=T0 + 11)
    assert failed is not None
    assert (failed.status, failed.errors, failed.error, failed.result) == (
        "failed",
        2,
        error,
        None,
    )
    assert (failed.finished_at, failed.expires_at) == (T0 + 11, T0 + 71)
    assert task_store.fail(task.id, "b", error, retry_at=None, now=T0 + 12) is None


def test_an_expired_lease_makes_the_task_run_again(task_store: TaskStore) -> None:
    """At least once: a task whose owner stopped renewing runs again, attempt + 1; the
    first owner's late result is dropped, so there is one result."""
    task = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    task_store.claim(["report"], "dead", lease=LEASE, now=T0)
    renewal = task_store.renew([task.id, "f" * 32], "dead", lease=LEASE, now=T0 + 20)
    assert renewal.held == {task.id}
    assert renewal.cancel == frozenset()
    assert task_store.renew([task.id], "other", lease=LEASE, now=T0 + 20).held == frozenset()

    assert task_store.claim(["report"], "b", lease=LEASE, now=T0 + 49) is None  # renewed lease
    again = task_store.claim(["report"], "b", lease=LEASE, now=T0 + 51)
    assert again is not None
    assert (again.id, again.attempts, again.lost, again.owner) == (task.id, 2, 1, "b")

    assert task_store.complete(task.id, "dead", b'"late"', now=T0 + 52) is None
    assert task_store.renew([task.id], "dead", lease=LEASE, now=T0 + 52).held == frozenset()
    done = task_store.complete(task.id, "b", b'"second"', now=T0 + 53)
    assert done is not None
    assert (done.status, done.result, done.attempts) == ("completed", b'"second"', 2)


def test_completing_after_a_retry_clears_the_error(task_store: TaskStore) -> None:
    task = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    task_store.claim(["report"], "a", lease=LEASE, now=T0)
    error = {"type": "ValueError", "message": "bad"}
    task_store.fail(task.id, "a", error, retry_at=T0 + 1, now=T0)
    task_store.claim(["report"], "a", lease=LEASE, now=T0 + 1)
    done = task_store.complete(task.id, "a", b"1", now=T0 + 2)
    assert done is not None
    assert (done.status, done.error, done.errors, done.attempts) == ("completed", None, 1, 2)


def test_a_task_lost_too_often_is_failed(task_store: TaskStore) -> None:
    task = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    now = T0
    for attempt in range(1, LOST_LIMIT + 1):
        claimed = task_store.claim(["report"], f"w{attempt}", lease=LEASE, now=now)
        assert claimed is not None
        assert claimed.attempts == attempt
        now += LEASE + 1
    assert task_store.claim(["report"], "last", lease=LEASE, now=now) is None
    failed = task_store.get(task.id, now=now)
    assert failed is not None
    assert (failed.status, failed.lost, failed.attempts) == ("failed", LOST_LIMIT, LOST_LIMIT)
    assert failed.error is not None
    assert failed.error["type"] == "WorkerLost"


def test_cancel_a_queued_and_a_running_task(task_store: TaskStore) -> None:
    queued = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    cancelled = task_store.cancel(queued.id, now=T0 + 1)
    assert cancelled is not None
    assert (cancelled.status, cancelled.finished_at, cancelled.expires_at) == (
        "cancelled",
        T0 + 1,
        T0 + 61,
    )
    assert task_store.claim(["report"], "a", lease=LEASE, now=T0 + 2) is None
    assert task_store.cancel("0" * 32, now=T0) is None

    running = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0 + 3)
    task_store.claim(["report"], "a", lease=LEASE, now=T0 + 3)
    asked = task_store.cancel(running.id, now=T0 + 4)
    assert asked is not None
    assert (asked.status, asked.cancel_requested) == ("running", True)
    assert task_store.renew([running.id], "a", lease=LEASE, now=T0 + 5).cancel == {running.id}
    ended = task_store.complete(running.id, "a", b"42", now=T0 + 6)
    assert ended is not None
    assert (ended.status, ended.result) == ("cancelled", None)  # cancelled however it ends

    done = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0 + 7)
    task_store.claim(["report"], "a", lease=LEASE, now=T0 + 7)
    task_store.complete(done.id, "a", b"1", now=T0 + 8)
    unchanged = task_store.cancel(done.id, now=T0 + 9)
    assert unchanged is not None
    assert (unchanged.status, unchanged.result) == ("completed", b"1")


def test_a_cancelled_task_whose_worker_died_ends_cancelled(task_store: TaskStore) -> None:
    task = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    task_store.claim(["report"], "dead", lease=LEASE, now=T0)
    task_store.cancel(task.id, now=T0 + 1)
    assert task_store.claim(["report"], "b", lease=LEASE, now=T0 + LEASE + 1) is None
    assert task_store.get(task.id, now=T0 + LEASE + 1).status == "cancelled"  # type: ignore[union-attr]


def test_release_gives_a_task_back(task_store: TaskStore) -> None:
    task = task_store.submit("report", b"{}", ttl=60, callback=None, now=T0)
    task_store.claim(["report"], "a", lease=LEASE, now=T0)
    assert not task_store.release(task.id, "b", now=T0 + 1)
    assert task_store.release(task.id, "a", now=T0 + 1)
    again = task_store.claim(["report"], "b", lease=LEASE, now=T0 + 1)
    assert again is not None
    assert (again.id, again.attempts, again.lost) == (task.id, 2, 0)
    assert task_store.complete(task.id, "a", b"1", now=T0 + 2) is None


def test_results_expire_after_their_ttl_and_are_purged(task_store: TaskStore) -> None:
    short = task_store.submit("report", b"{}", ttl=10, callback=None, now=T0)
    task_store.claim(["report"], "a", lease=LEASE, now=T0)
    waiting = task_store.submit("report", b"{}", ttl=10, callback=None, now=T0)
    task_store.complete(short.id, "a", b"1", now=T0 + 1)

    assert task_store.get(short.id, now=T0 + 11) is not None
    assert task_store.purge(now=T0 + 11) == 0
    assert task_store.get(short.id, now=T0 + 11.5) is None  # expired reads as gone at once
    assert [r.id for r in task_store.list("report", status=None, limit=9, now=T0 + 12)] == [
        waiting.id
    ]
    assert task_store.purge(now=T0 + 12) == 1
    assert task_store.purge(now=T0 + 10_000) == 0  # a queued task is never purged
    assert task_store.get(waiting.id, now=T0 + 10_000) is not None
    assert task_store.get(short.id, now=T0) is None  # deleted, not only hidden


def test_callbacks_are_leased_to_the_finisher_then_to_anyone(task_store: TaskStore) -> None:
    task = task_store.submit("report", b"{}", ttl=10, callback="http://hook/", now=T0)
    task_store.claim(["report"], "a", lease=LEASE, now=T0)
    done = task_store.complete(task.id, "a", b"1", now=T0 + 1)
    assert done is not None
    assert (done.callback_status, done.callback_until) == ("pending", T0 + 1 + CALLBACK_LEASE)

    assert task_store.claim_callback(now=T0 + 2) is None  # the finisher delivers it
    assert task_store.purge(now=T0 + 100) == 0  # not purged while it is pending
    taken = task_store.claim_callback(now=T0 + 2 + CALLBACK_LEASE)
    assert taken is not None
    assert (taken.id, taken.result) == (task.id, b"1")
    assert task_store.claim_callback(now=T0 + 3 + CALLBACK_LEASE) is None  # leased again

    task_store.callback_done(task.id, delivered=True, now=T0 + 4 + CALLBACK_LEASE)
    assert task_store.claim_callback(now=T0 + 10 * CALLBACK_LEASE) is None
    late = task_store.get(task.id, now=T0 + 5)
    assert late is not None
    assert late.callback_status == "delivered"
    assert task_store.purge(now=T0 + 10 * CALLBACK_LEASE) == 1

    cancelled = task_store.submit("report", b"{}", ttl=10, callback="http://hook/", now=T0)
    task_store.cancel(cancelled.id, now=T0 + 1)
    found = task_store.claim_callback(now=T0 + 1)  # no finisher: anyone delivers it now
    assert found is not None
    assert (found.id, found.status) == (cancelled.id, "cancelled")


def test_concurrent_claimers_take_each_task_once(tasks_url: str, tmp_path: Path) -> None:
    first = open_store(tasks_url, service="svc", home=tmp_path)
    ids = {first.submit("work", b"{}", ttl=60, callback=None, now=T0 + i).id for i in range(60)}
    stores = [first, *(open_store(tasks_url, service="svc", home=tmp_path) for _ in range(3))]
    claimed: list[list[str]] = [[] for _ in stores]

    def claim_all(index: int) -> None:
        while record := stores[index].claim(["work"], f"w{index}", lease=LEASE, now=T0 + 99):
            claimed[index].append(record.id)

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = [task_id for part in claimed for task_id in part]
    assert sorted(every) == sorted(ids)
    for store in stores:
        store.close()


@pytest.mark.parametrize("url", ["http://x", "postgres://x/y"])
def test_an_unknown_store_url_is_a_config_error(url: str, tmp_path: Path) -> None:
    from tiffin.exceptions import ConfigError

    with pytest.raises(ConfigError, match="names no known store"):
        open_store(url, service="svc", home=tmp_path)


def test_a_new_sqlite_store_waits_for_another_process_setting_it_up(tmp_path: Path) -> None:
    # Workers of one server open the same new file together. While one holds a write
    # lock on it, still in rollback mode, another's switch to WAL is answered "database
    # is locked" at once, without waiting: the store retries instead of failing to start.
    path = tmp_path / "tasks.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE setting_up (x INTEGER)")
    timer = threading.Timer(0.5, other.execute, ("COMMIT",))
    timer.start()
    try:
        store = SQLiteStore(path)
    finally:
        timer.join()
        other.close()
    store.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()
