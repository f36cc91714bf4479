"""The SQLite task store: the default, one file per service under ``$TIFFIN_HOME/tasks/``.

The file is in WAL mode, so readers never wait for the writer, and every change is one
statement or one ``BEGIN IMMEDIATE`` transaction, so the worker processes of one server
(or several servers on one machine) can share it; a writer that finds the file locked
waits for it (``busy_timeout``). A commit reaches the file before the call returns, so a
killed process loses nothing it had answered for; with ``durable_writes`` each commit is
also fsynced, so a power loss loses nothing either.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from tiffin.exceptions import ConfigError, ServiceUnavailable
from tiffin.tasks.store import (
    CALLBACK_LEASE,
    LOST_LIMIT,
    Renewal,
    TaskRecord,
    TaskStore,
    lost_error,
)

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    payload BLOB NOT NULL,
    ttl REAL NOT NULL,
    submitted_at REAL NOT NULL,
    run_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    result BLOB,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    expires_at REAL,
    owner TEXT,
    lease_until REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    callback TEXT,
    callback_status TEXT,
    callback_until REAL
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (status, run_at);
CREATE INDEX IF NOT EXISTS tasks_leased ON tasks (status, lease_until);
CREATE INDEX IF NOT EXISTS tasks_by_name ON tasks (task, submitted_at);
CREATE INDEX IF NOT EXISTS tasks_expiring ON tasks (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_callbacks ON tasks (callback_until)
    WHERE callback_status = 'pending';
PRAGMA user_version = 1;
"""

# What every way of finishing a task sets besides its status: ``:now`` and ``:notify``
# (when the callback's delivery lease ends: the finisher's own, or now for another).
_FINISH = """
    finished_at = :now, expires_at = :now + ttl, owner = NULL, lease_until = NULL,
    callback_status = CASE WHEN callback IS NULL THEN NULL ELSE 'pending' END,
    callback_until = CASE WHEN callback IS NULL THEN NULL ELSE :notify END
"""
_HELD = "id = :id AND owner = :owner AND status = 'running'"
_EXPIRED = "status = 'running' AND lease_until < :now"
# Each statement is built once, here, from the fixed fragments above; values are bound.
_LIST = (
    "SELECT * FROM tasks WHERE task = :task AND (expires_at IS NULL OR expires_at >= :now) "
    "AND (:status IS NULL OR status = :status) ORDER BY submitted_at DESC, id DESC LIMIT :limit"
)
_CLAIM = (
    "UPDATE tasks SET status = 'running', owner = :owner, lease_until = :until, "
    "attempts = attempts + 1, started_at = :now WHERE id = (SELECT id FROM tasks "
    "WHERE status = 'queued' AND run_at <= :now AND task IN (SELECT value FROM json_each(:names)) "
    "ORDER BY run_at, id LIMIT 1) RETURNING *"
)
_LOST_CANCELLED = (
    f"UPDATE tasks SET status = 'cancelled', lost = lost + 1, {_FINISH} "  # noqa: S608
    f"WHERE {_EXPIRED} AND cancel_requested = 1"
)
_LOST_FAILED = (
    f"UPDATE tasks SET status = 'failed', lost = lost + 1, error = :error, {_FINISH} "  # noqa: S608
    f"WHERE {_EXPIRED} AND lost + 1 >= :limit"
)
_LOST = (
    "UPDATE tasks SET status = 'queued', lost = lost + 1, owner = NULL, "  # noqa: S608
    f"lease_until = NULL WHERE {_EXPIRED}"
)
_RENEW = (
    "UPDATE tasks SET lease_until = :until WHERE owner = :owner AND status = 'running' "
    "AND id IN (SELECT value FROM json_each(:ids)) RETURNING id, cancel_requested"
)
_COMPLETE = (
    "UPDATE tasks SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE "  # noqa: S608
    "'completed' END, result = CASE WHEN cancel_requested THEN NULL ELSE :result END, "
    f"error = CASE WHEN cancel_requested THEN error END, {_FINISH} WHERE {_HELD} RETURNING *"
)
_FAIL = (
    "UPDATE tasks SET errors = errors + 1, status = CASE WHEN cancel_requested THEN "  # noqa: S608
    "'cancelled' ELSE 'failed' END, error = CASE WHEN cancel_requested THEN error "
    f"ELSE :error END, {_FINISH} WHERE {_HELD} RETURNING *"
)
_RETRY = (
    "UPDATE tasks SET status = 'queued', errors = errors + 1, error = :error, "  # noqa: S608
    f"run_at = :retry_at, owner = NULL, lease_until = NULL WHERE {_HELD} RETURNING *"
)
_CANCEL_HELD = (
    f"UPDATE tasks SET status = 'cancelled', {_FINISH} WHERE {_HELD} AND "  # noqa: S608
    "cancel_requested = 1 RETURNING *"
)
_RELEASE = (
    "UPDATE tasks SET status = 'queued', run_at = :now, owner = NULL, "  # noqa: S608
    f"lease_until = NULL WHERE {_HELD} RETURNING id"
)
_CANCEL_QUEUED = (
    f"UPDATE tasks SET status = 'cancelled', {_FINISH} "  # noqa: S608
    "WHERE id = :id AND status = 'queued'"
)
_PENDING = "callback_status = 'pending' AND callback_until <= :now"
_CALLBACK_DUE = f"SELECT EXISTS (SELECT 1 FROM tasks WHERE {_PENDING})"  # noqa: S608
_CLAIM_CALLBACK = (
    "UPDATE tasks SET callback_until = :until WHERE id = (SELECT id FROM tasks "  # noqa: S608
    f"WHERE {_PENDING} ORDER BY callback_until LIMIT 1) RETURNING *"
)


_SET_UP_SECONDS = 30.0


def _record(row: sqlite3.Row) -> TaskRecord:
    values = dict(row)
    values["error"] = orjson.loads(values["error"]) if values["error"] else None
    values["cancel_requested"] = bool(values["cancel_requested"])
    return TaskRecord(**values)


class SQLiteStore(TaskStore):
    """Tasks in one SQLite file; see the module docstring.

    Args:
        path: the database file (made, with its directory, if missing).
        durable: fsync every commit.
    """

    def __init__(self, path: Path, *, durable: bool = False) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._set_up(durable)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"Cannot open the task store {path}: {exc}. Check that the directory is "
                "writable, or set tasks_url (TIFFIN_TASKS_URL) to another place.",
                detail={"path": str(path), "problem": str(exc)},
            ) from None

    def _set_up(self, durable: bool) -> None:
        """WAL mode and the schema. Switching to WAL answers "database is locked" at
        once, without waiting, while another process opens the same new file (workers
        starting together): that is retried for up to ``_SET_UP_SECONDS``."""
        deadline = time.monotonic() + _SET_UP_SECONDS
        while True:
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, to this thread alone; a file locked past ``busy_timeout`` (or
        a full disk) is ``ServiceUnavailable``, which a caller can retry."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise ServiceUnavailable(
                    f"The task store {self.path} cannot be used just now ({exc}). Retry "
                    "shortly; if it goes on, check the disk and what else holds the file.",
                    detail={"path": str(self.path), "retry_after": 1},
                ) from None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._using():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, params: Any = ()) -> TaskRecord | None:
        with self._using() as db:
            row = db.execute(sql, params).fetchone()
        return None if row is None else _record(row)

    # -- submitting and reading ------------------------------------------------------

    def submit(
        self, task: str, payload: bytes, *, ttl: float, callback: str | None, now: float
    ) -> TaskRecord:
        record = TaskRecord.submitted(task, payload, ttl=ttl, callback=callback, now=now)
        with self._using():
            self._db.execute(
                "INSERT INTO tasks (id, task, status, payload, ttl, submitted_at, run_at, "
                "callback) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (record.id, task, payload, ttl, now, now, callback),
            )
        return record

    def get(self, task_id: str, *, now: float) -> TaskRecord | None:
        return self._one(
            "SELECT * FROM tasks WHERE id = ? AND (expires_at IS NULL OR expires_at >= ?)",
            (task_id, now),
        )

    def list(self, task: str, *, status: str | None, limit: int, now: float) -> list[TaskRecord]:
        params = {"task": task, "now": now, "status": status, "limit": limit}
        with self._using() as db:
            rows = db.execute(_LIST, params).fetchall()
        return [_record(row) for row in rows]

    def depth(self, tasks: Collection[str], *, now: float) -> dict[str, int]:
        with self._using() as db:
            rows = db.execute(
                "SELECT task, COUNT(*) FROM tasks WHERE status = 'queued' GROUP BY task"
            ).fetchall()
        found = dict(rows)
        return {name: found.get(name, 0) for name in tasks}

    def claim(
        self, tasks: Collection[str], owner: str, *, lease: float, now: float
    ) -> TaskRecord | None:
        with self._using() as db:  # a read first: an idle poll takes no write lock
            due = db.execute(
                "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'queued' AND run_at <= ?) "
                "OR EXISTS (SELECT 1 FROM tasks WHERE status = 'running' AND lease_until < ?)",
                (now, now),
            ).fetchone()[0]
        if not due:
            return None
        params = {
            "owner": owner,
            "until": now + lease,
            "now": now,
            "names": orjson.dumps(list(tasks)).decode(),
        }
        with self._transaction() as db:
            self._recover(db, now)
            row = db.execute(_CLAIM, params).fetchone()
        return None if row is None else _record(row)

    @staticmethod
    def _recover(db: sqlite3.Connection, now: float) -> None:
        """Put tasks whose lease expired back in the queue: cancelled if a cancel was
        asked for, failed if lost too often."""
        params = {"now": now, "notify": now}
        db.execute(_LOST_CANCELLED, params)
        error = orjson.dumps(lost_error(LOST_LIMIT))
        db.execute(_LOST_FAILED, {**params, "error": error, "limit": LOST_LIMIT})
        db.execute(_LOST, params)

    def renew(self, task_ids: Collection[str], owner: str, *, lease: float, now: float) -> Renewal:
        params = {
            "until": now + lease,
            "owner": owner,
            "ids": orjson.dumps(list(task_ids)).decode(),
        }
        with self._using() as db:
            rows = db.execute(_RENEW, params).fetchall()
        return Renewal(
            frozenset(row["id"] for row in rows),
            frozenset(row["id"] for row in rows if row["cancel_requested"]),
        )

    def complete(self, task_id: str, owner: str, result: bytes, *, now: float) -> TaskRecord | None:
        notify = now + CALLBACK_LEASE
        params = {"id": task_id, "owner": owner, "result": result, "now": now, "notify": notify}
        return self._one(_COMPLETE, params)

    def fail(
        self,
        task_id: str,
        owner: str,
        error: dict[str, Any],
        *,
        retry_at: float | None,
        now: float,
    ) -> TaskRecord | None:
        params = {
            "id": task_id,
            "owner": owner,
            "error": orjson.dumps(error),
            "now": now,
            "notify": now + CALLBACK_LEASE,
            "retry_at": retry_at,
        }
        if retry_at is None:
            return self._one(_FAIL, params)
        with self._transaction() as db:
            row = db.execute(_CANCEL_HELD, params).fetchone()
            if row is None:
                row = db.execute(_RETRY, params).fetchone()
        return None if row is None else _record(row)

    def release(self, task_id: str, owner: str, *, now: float) -> bool:
        params = {"id": task_id, "owner": owner, "now": now, "notify": now}
        with self._transaction() as db:
            if db.execute(_CANCEL_HELD, params).fetchone() is not None:
                return True
            return db.execute(_RELEASE, params).fetchone() is not None

    def cancel(self, task_id: str, *, now: float) -> TaskRecord | None:
        params = {"id": task_id, "now": now, "notify": now}
        with self._transaction() as db:
            db.execute(_CANCEL_QUEUED, params)
            db.execute(
                "UPDATE tasks SET cancel_requested = 1 WHERE id = :id AND status = 'running'",
                params,
            )
            row = db.execute(
                "SELECT * FROM tasks WHERE id = :id AND (expires_at IS NULL OR expires_at >= :now)",
                params,
            ).fetchone()
        return None if row is None else _record(row)

    def claim_callback(self, *, now: float) -> TaskRecord | None:
        with self._using() as db:
            if not db.execute(_CALLBACK_DUE, {"now": now}).fetchone()[0]:
                return None
        return self._one(_CLAIM_CALLBACK, {"now": now, "until": now + CALLBACK_LEASE})

    def callback_done(self, task_id: str, *, delivered: bool, now: float) -> None:
        with self._using():
            self._db.execute(
                "UPDATE tasks SET callback_status = ?, callback_until = NULL WHERE id = ?",
                ("delivered" if delivered else "failed", task_id),
            )

    def purge(self, *, now: float) -> int:
        with self._using():
            cursor = self._db.execute(
                "DELETE FROM tasks WHERE expires_at < ? "
                "AND (callback_status IS NULL OR callback_status != 'pending')",
                (now,),
            )
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
