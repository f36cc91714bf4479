"""Per-worker concurrency with a bounded wait queue.

At most ``limit`` API calls run at once; up to ``queue`` more wait for a slot, first come
first served; any request past that is refused at once with 503 and ``Retry-After``, so
a burst turns into fast, honest refusals instead of an unbounded pile of waiting work.
"""

from __future__ import annotations

import asyncio
from collections import deque

from tiffin.exceptions import ServiceUnavailable

__all__ = ["ConcurrencyLimit"]


class ConcurrencyLimit:
    """A semaphore whose waiting line has a length limit.

    Args:
        limit: calls that may run at once.
        queue: calls that may wait; ``acquire`` raises ``ServiceUnavailable`` past it.
    """

    def __init__(self, limit: int, queue: int) -> None:
        self.limit = limit
        self.queue = queue
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def running(self) -> int:
        return self.limit - self._free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in line if need be; refuse when the line is full."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        if len(self._waiters) >= self.queue:
            raise ServiceUnavailable(
                f"The server is busy: {self.running} requests running and {self.waiting} "
                "waiting, the most it queues. Retry after a moment, or add workers or replicas.",
                detail={"retry_after": 1, "running": self.running, "waiting": self.waiting},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back, to the first caller in line if there is one."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
