"""The Redis task store: one queue shared by every replica of a service.

Set ``tasks_url: redis://host:port/db`` (``TIFFIN_TASKS_URL``; ``rediss://`` for TLS) and
``pip install 'tiffin[redis]'``. Each task is a hash; sorted sets index them:

    tiffin:tasks:<service>:t:<id>          the task's fields
    tiffin:tasks:<service>:q:<task>        queued ids, by when they may run
    tiffin:tasks:<service>:running         running ids, by when their lease ends
    tiffin:tasks:<service>:all:<task>      every id, by submission time (for listing)
    tiffin:tasks:<service>:done            finished ids, by when they expire
    tiffin:tasks:<service>:callbacks       ids with a callback to deliver, by lease end

Every change that reads before it writes (claim, renew, finish, cancel) is one Lua
script, so it is atomic however many replicas race for the same task. The scripts name
their keys from a prefix, so this store needs one Redis server (or a primary with
replicas), not a Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from tiffin.exceptions import ConfigError, ServiceUnavailable, describe
from tiffin.extras import import_optional
from tiffin.tasks.store import (
    CALLBACK_LEASE,
    LOST_LIMIT,
    Renewal,
    TaskRecord,
    TaskStore,
    lost_error,
)

__all__ = ["RedisStore"]

_COMMON = """
local P = ARGV[1]
local function tkey(id) return P .. ':t:' .. id end
local function record(id) return redis.call('HGETALL', tkey(id)) end
local function held(id, owner)
  local k = tkey(id)
  return redis.call('HGET', k, 'status') == 'running' and redis.call('HGET', k, 'owner') == owner
end
local function cancelling(id) return redis.call('HGET', tkey(id), 'cancel_requested') == '1' end
local function requeue(id, at)
  local k = tkey(id)
  redis.call('HSET', k, 'status', 'queued', 'run_at', at)
  redis.call('HDEL', k, 'owner', 'lease_until')
  redis.call('ZREM', P .. ':running', id)
  redis.call('ZADD', P .. ':q:' .. redis.call('HGET', k, 'task'), at, id)
end
local function finish(id, status, now, notify)
  local k = tkey(id)
  local expires = now + tonumber(redis.call('HGET', k, 'ttl'))
  redis.call('HSET', k, 'status', status, 'finished_at', now, 'expires_at', expires)
  redis.call('HDEL', k, 'owner', 'lease_until')
  redis.call('ZREM', P .. ':running', id)
  redis.call('ZREM', P .. ':q:' .. redis.call('HGET', k, 'task'), id)
  redis.call('ZADD', P .. ':done', expires, id)
  if redis.call('HEXISTS', k, 'callback') == 1 then
    redis.call('HSET', k, 'callback_status', 'pending', 'callback_until', notify)
    redis.call('ZADD', P .. ':callbacks', notify, id)
  end
end
"""

# ARGV: prefix, owner, now, lease, lost limit, lost error, task names...
_CLAIM = """
local owner, now, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':running', '-inf', '(' .. ARGV[3])) do
  local lost = redis.call('HINCRBY', tkey(id), 'lost', 1)
  if cancelling(id) then
    finish(id, 'cancelled', now, now)
  elseif lost >= tonumber(ARGV[5]) then
    redis.call('HSET', tkey(id), 'error', ARGV[6])
    finish(id, 'failed', now, now)
  else
    requeue(id, redis.call('HGET', tkey(id), 'run_at'))
  end
end
local best, best_at, best_task = nil, nil, nil
for i = 7, #ARGV do
  local found = redis.call('ZRANGEBYSCORE', P .. ':q:' .. ARGV[i], '-inf', ARGV[3],
    'WITHSCORES', 'LIMIT', 0, 1)
  if found[1] and (best == nil or tonumber(found[2]) < best_at) then
    best, best_at, best_task = found[1], tonumber(found[2]), ARGV[i]
  end
end
if not best then return nil end
redis.call('ZREM', P .. ':q:' .. best_task, best)
redis.call('HSET', tkey(best), 'status', 'running', 'owner', owner, 'lease_until', now + lease,
  'started_at', now)
redis.call('HINCRBY', tkey(best), 'attempts', 1)
redis.call('ZADD', P .. ':running', now + lease, best)
return record(best)
"""

# ARGV: prefix, owner, now, lease, ids...
_RENEW = """
local owner, until_ = ARGV[2], tonumber(ARGV[3]) + tonumber(ARGV[4])
local kept, cancel = {}, {}
for i = 5, #ARGV do
  local id = ARGV[i]
  if held(id, owner) then
    redis.call('HSET', tkey(id), 'lease_until', until_)
    redis.call('ZADD', P .. ':running', until_, id)
    table.insert(kept, id)
    if cancelling(id) then table.insert(cancel, id) end
  end
end
return {kept, cancel}
"""

# ARGV: prefix, id, owner, now, notify, result
_COMPLETE = """
local id, now, notify = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
if not held(id, ARGV[3]) then return nil end
if cancelling(id) then
  finish(id, 'cancelled', now, notify)
else
  redis.call('HSET', tkey(id), 'result', ARGV[6])
  redis.call('HDEL', tkey(id), 'error')
  finish(id, 'completed', now, notify)
end
return record(id)
"""

# ARGV: prefix, id, owner, now, notify, error, retry_at ('' for none)
_FAIL = """
local id, now, notify = ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
if not held(id, ARGV[3]) then return nil end
redis.call('HINCRBY', tkey(id), 'errors', 1)
if cancelling(id) then
  finish(id, 'cancelled', now, notify)
elseif ARGV[7] == '' then
  redis.call('HSET', tkey(id), 'error', ARGV[6])
  finish(id, 'failed', now, notify)
else
  redis.call('HSET', tkey(id), 'error', ARGV[6])
  requeue(id, ARGV[7])
end
return record(id)
"""

# ARGV: prefix, id, owner, now
_RELEASE = """
local id, now = ARGV[2], tonumber(ARGV[4])
if not held(id, ARGV[3]) then return 0 end
if cancelling(id) then finish(id, 'cancelled', now, now) else requeue(id, ARGV[4]) end
return 1
"""

# ARGV: prefix, id, now
_CANCEL = """
local id, now = ARGV[2], tonumber(ARGV[3])
local status = redis.call('HGET', tkey(id), 'status')
if not status then return nil end
if status == 'queued' then
  finish(id, 'cancelled', now, now)
elseif status == 'running' then
  redis.call('HSET', tkey(id), 'cancel_requested', '1')
end
return record(id)
"""

# ARGV: prefix, now, lease
_CLAIM_CALLBACK = """
local found = redis.call('ZRANGEBYSCORE', P .. ':callbacks', '-inf', ARGV[2], 'LIMIT', 0, 1)
local id = found[1]
if not id then return nil end
if redis.call('HGET', tkey(id), 'callback_status') ~= 'pending' then
  redis.call('ZREM', P .. ':callbacks', id)
  return nil
end
local until_ = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', tkey(id), 'callback_until', until_)
redis.call('ZADD', P .. ':callbacks', until_, id)
return record(id)
"""

# ARGV: prefix, now
_PURGE = """
local purged = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':done', '-inf', '(' .. ARGV[2],
    'LIMIT', 0, 1000)) do
  local k = tkey(id)
  if redis.call('HGET', k, 'callback_status') ~= 'pending' then
    local task = redis.call('HGET', k, 'task')
    if task then redis.call('ZREM', P .. ':all:' .. task, id) end
    redis.call('DEL', k)
    redis.call('ZREM', P .. ':done', id)
    purged = purged + 1
  end
end
return purged
"""

_INTS = ("attempts", "errors", "lost")
_FLOATS = (
    "ttl",
    "submitted_at",
    "run_at",
    "started_at",
    "finished_at",
    "expires_at",
    "lease_until",
    "callback_until",
)
_BYTES = ("payload", "result")


def _record(flat: list[bytes] | None) -> TaskRecord | None:
    """A record from a hash as HGETALL (or a script) returns it: a flat list of pairs."""
    if not flat:
        return None
    raw = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _BYTES:
            values[name] = value
        elif name in _INTS:
            values[name] = int(value)
        elif name in _FLOATS:
            values[name] = float(value)
        elif name == "cancel_requested":
            values[name] = value == b"1"
        elif name == "error":
            values[name] = orjson.loads(value)
        else:
            values[name] = value.decode()
    return TaskRecord(**values)


def _visible(record: TaskRecord | None, now: float) -> TaskRecord | None:
    if record is None or (record.expires_at is not None and record.expires_at < now):
        return None
    return record


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore(TaskStore):
    """Tasks in Redis; see the module docstring.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://...``.
        service: the service's name; its tasks' keys start ``tiffin:tasks:<service>:``.

    Raises:
        MissingDependency: the ``redis`` package is not installed.
        ConfigError: the server cannot be reached.
    """

    def __init__(self, url: str, *, service: str) -> None:
        redis = import_optional("redis", "redis", purpose="to keep tasks in Redis (tasks_url)")
        self.url = _safe(url)
        self.prefix = f"tiffin:tasks:{service}"
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._redis = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=5.0)
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            self._redis.close()
            raise ConfigError(
                f"Cannot reach the task store at {self.url} ({describe(exc)}). Start Redis "
                "there, or set tasks_url (TIFFIN_TASKS_URL) to where it runs.",
                detail={"url": self.url, "problem": str(exc)},
            ) from None
        script: Callable[[str], Any] = self._redis.register_script
        self._claim = script(_COMMON + _CLAIM)
        self._renew = script(_COMMON + _RENEW)
        self._complete = script(_COMMON + _COMPLETE)
        self._fail = script(_COMMON + _FAIL)
        self._release = script(_COMMON + _RELEASE)
        self._cancel = script(_COMMON + _CANCEL)
        self._claim_callback = script(_COMMON + _CLAIM_CALLBACK)
        self._purge = script(_COMMON + _PURGE)

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turn a Redis failure into ``ServiceUnavailable``, which a caller can retry."""
        try:
            yield
        except self._errors as exc:
            raise ServiceUnavailable(
                f"The task store at {self.url} failed ({describe(exc)}). Retry shortly; if "
                "it goes on, check that Redis is running there.",
                detail={"url": self.url, "retry_after": 1},
            ) from None

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}:t:{task_id}"

    # -- submitting and reading ------------------------------------------------------

    def submit(
        self, task: str, payload: bytes, *, ttl: float, callback: str | None, now: float
    ) -> TaskRecord:
        record = TaskRecord.submitted(task, payload, ttl=ttl, callback=callback, now=now)
        fields: dict[str, Any] = {
            "id": record.id,
            "task": task,
            "status": "queued",
            "payload": payload,
            "ttl": ttl,
            "submitted_at": now,
            "run_at": now,
            "attempts": 0,
            "errors": 0,
            "lost": 0,
            "cancel_requested": "0",
        }
        if callback is not None:
            fields["callback"] = callback
        with self._reaching(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(record.id), mapping=fields)
            pipe.zadd(f"{self.prefix}:q:{task}", {record.id: now})
            pipe.zadd(f"{self.prefix}:all:{task}", {record.id: now})
            pipe.execute()
        return record

    def get(self, task_id: str, *, now: float) -> TaskRecord | None:
        with self._reaching():
            flat = self._redis.execute_command("HGETALL", self._key(task_id))
        return _visible(_record(_pairs(flat)), now)

    def list(self, task: str, *, status: str | None, limit: int, now: float) -> list[TaskRecord]:
        found: list[TaskRecord] = []
        start, page = 0, max(limit, 100)
        with self._reaching():
            while len(found) < limit:
                ids = self._redis.zrevrange(f"{self.prefix}:all:{task}", start, start + page - 1)
                if not ids:
                    break
                with self._redis.pipeline(transaction=False) as pipe:
                    for task_id in ids:
                        pipe.execute_command("HGETALL", self._key(task_id.decode()))
                    rows = pipe.execute()
                for row in rows:
                    record = _visible(_record(_pairs(row)), now)
                    if record is not None and status in (None, record.status):
                        found.append(record)
                start += page
        return found[:limit]

    def depth(self, tasks: Collection[str], *, now: float) -> dict[str, int]:
        names = list(tasks)
        with self._reaching(), self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(f"{self.prefix}:q:{name}")
            counts = pipe.execute()
        return {name: int(count) for name, count in zip(names, counts, strict=True)}

    # -- running ---------------------------------------------------------------------

    def claim(
        self, tasks: Collection[str], owner: str, *, lease: float, now: float
    ) -> TaskRecord | None:
        error = orjson.dumps(lost_error(LOST_LIMIT))
        with self._reaching():
            flat = self._claim(
                keys=[], args=[self.prefix, owner, now, lease, LOST_LIMIT, error, *tasks]
            )
        return _record(flat)

    def renew(self, task_ids: Collection[str], owner: str, *, lease: float, now: float) -> Renewal:
        if not task_ids:
            return Renewal(frozenset(), frozenset())
        with self._reaching():
            kept, cancel = self._renew(keys=[], args=[self.prefix, owner, now, lease, *task_ids])
        return Renewal(frozenset(i.decode() for i in kept), frozenset(i.decode() for i in cancel))

    def complete(self, task_id: str, owner: str, result: bytes, *, now: float) -> TaskRecord | None:
        args = [self.prefix, task_id, owner, now, now + CALLBACK_LEASE, result]
        with self._reaching():
            return _record(self._complete(keys=[], args=args))

    def fail(
        self,
        task_id: str,
        owner: str,
        error: dict[str, Any],
        *,
        retry_at: float | None,
        now: float,
    ) -> TaskRecord | None:
        args = [
            self.prefix,
            task_id,
            owner,
            now,
            now + CALLBACK_LEASE,
            orjson.dumps(error),
            "" if retry_at is None else retry_at,
        ]
        with self._reaching():
            return _record(self._fail(keys=[], args=args))

    def release(self, task_id: str, owner: str, *, now: float) -> bool:
        with self._reaching():
            return bool(self._release(keys=[], args=[self.prefix, task_id, owner, now]))

    def cancel(self, task_id: str, *, now: float) -> TaskRecord | None:
        with self._reaching():
            flat = self._cancel(keys=[], args=[self.prefix, task_id, now])
        return _visible(_record(flat), now)

    # -- callbacks and housekeeping --------------------------------------------------

    def claim_callback(self, *, now: float) -> TaskRecord | None:
        with self._reaching():
            flat = self._claim_callback(keys=[], args=[self.prefix, now, CALLBACK_LEASE])
        return _record(flat)

    def callback_done(self, task_id: str, *, delivered: bool, now: float) -> None:
        with self._reaching(), self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(task_id), "callback_status", "delivered" if delivered else "failed")
            pipe.hdel(self._key(task_id), "callback_until")
            pipe.zrem(f"{self.prefix}:callbacks", task_id)
            pipe.execute()

    def purge(self, *, now: float) -> int:
        with self._reaching():
            return int(self._purge(keys=[], args=[self.prefix, now]))

    def close(self) -> None:
        self._redis.close()


def _pairs(value: Any) -> list[bytes] | None:
    """HGETALL's answer as the flat list of pairs a script returns (redis-py gives a dict
    for the command, a list for a script)."""
    if isinstance(value, dict):
        return [item for pair in value.items() for item in pair]
    return value if isinstance(value, list) else None
