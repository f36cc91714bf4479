"""Where a sync API call runs: inline on the event loop, or in a worker thread.

A ``def`` API has to run where it cannot hold the event loop up for long. A thread does
that, but the hop costs: the call is queued to a ``ThreadPoolExecutor``, a worker thread
is woken and takes the GIL from the loop, runs, and wakes the loop again. Measured with
the iris quickstart (a ``predict`` of ~100 us) on the 2-core VM of the serving-overhead
benchmark (server pinned to one CPU, wrk on the other): a lone request (one connection)
took 356 us at the median through a thread and 269 us inline, against 262 us for a bare
ASGI app calling the same model; with 8 connections, inline alone raised 3,729 to 3,909
requests/s and cut p99 from 3.96 to 2.36 ms. For a call that takes about as long as the
hop, the hop is most of the cost.

So a call known to be short runs inline, on the event loop, and any other in a thread.
Per API, ``InlinePolicy`` keeps an exponential moving average of how long its calls take
(timed around the call itself, in whichever thread it ran), and:

- the first ``WARMUP`` calls always run in a thread (a first call is often slow: lazy
  imports, caches, JIT compilation);
- after that, a call runs inline while the average stays under ``limit``: 1 ms, or a
  hundredth of the request timeout when that is shorter, so an inline call is far from
  the timeout;
- an inline call that takes longer than ``limit`` sends the API's next calls back to a
  thread: the next 64, twice as many each time it happens again (up to 65,536), and half
  as many again after as many calls in a row that stayed short. An API whose calls are
  mostly short but now and then long ends up in a thread nearly all the time.

What this gives up. An inline call cannot be interrupted: while it runs the event loop
waits (``/livez`` too), for at most one unexpectedly long call per back-off, the call
that showed the API is slower than it was. Such a call can also run past the request
timeout; its caller then gets 504, as from a thread (it finished, but later than the
limit), and its concurrency slot was held all along. Inline calls of one worker take
turns, where threads could overlap calls that release the GIL (large numpy or torch
operations) on several cores; tiffin uses more cores with more worker processes. A
method that is usually fast but sometimes slow, or that should overlap with itself in
one worker, says so with ``@tiffin.api(offload=True)``: it then always runs in a thread.
Inline or not, a sync call sees no running event loop (``asyncio.run()`` works in it);
only the thread it runs in (its name, its ``threading.local`` values) tells them apart.
"""

from __future__ import annotations

__all__ = ["BACKOFF", "INLINE_UNDER", "WARMUP", "InlinePolicy"]

INLINE_UNDER = 0.001
"""Seconds: a sync API whose calls average less than this runs on the event loop."""
WARMUP = 8
"""Calls of each API that always run in a thread, to measure it first."""
BACKOFF = 64
"""Calls sent back to a thread after an inline call ran longer than the limit."""
_MAX_BACKOFF = 65_536
_WEIGHT = 0.125  # of the newest call in the moving average


class InlinePolicy:
    """Decides, call by call, whether one sync API runs inline on the event loop.

    Args:
        timeout: the request timeout in seconds; the limit is at most a hundredth of it.
        offload: never inline (``@tiffin.api(offload=True)``).

    Example:
        policy = InlinePolicy(timeout=60.0)
        if policy.inline():
            started = time.perf_counter()
            result = method(**kwargs)
            policy.observe(time.perf_counter() - started, inline=True)
    """

    __slots__ = ("_average", "_backoff", "_clean", "_observed", "_skip", "limit", "offload")

    def __init__(self, *, timeout: float, offload: bool = False) -> None:
        self.limit = min(INLINE_UNDER, timeout / 100)
        self.offload = offload
        self._average = 0.0
        self._observed = 0
        self._skip = 0  # calls still to send to a thread after a long inline call
        self._backoff = BACKOFF
        self._clean = 0  # inline calls in a row that stayed under the limit

    @property
    def average(self) -> float:
        """The moving average of the API's call times, in seconds."""
        return self._average

    def inline(self) -> bool:
        """Whether the next call runs on the event loop."""
        if self.offload or self._observed < WARMUP:
            return False
        if self._skip:
            self._skip -= 1
            return False
        return self._average < self.limit

    def observe(self, seconds: float, *, inline: bool) -> None:
        """Record one finished call and where it ran."""
        if self._observed:
            self._average += (seconds - self._average) * _WEIGHT
        else:
            self._average = seconds
        self._observed += 1
        if not inline:
            return
        if seconds > self.limit:
            self._skip = self._backoff
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            self._clean = 0
            return
        self._clean += 1
        if self._clean >= self._backoff and self._backoff > BACKOFF:
            self._backoff //= 2
            self._clean = 0
