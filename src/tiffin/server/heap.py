"""Giving freed heap memory back to the system once large requests stop.

glibc's malloc serves a large block (a 1 MB request body, the list and array decoded
from it) from its heap as soon as one such block has been freed (its mmap threshold
rises to the largest block freed), and a heap gives pages back only from its top: after a
burst of large requests the pages of blocks freed below the top stay resident, counted
against the process until it exits. Serving 1 MB JSON bodies grew the heap here by 14 MiB
in 3 s at 8 connections (30 MiB after a minute) and kept it (a bare ASGI app, parsing
four times slower, grew 3 MiB).

Giving the pages back after every large request (``malloc_trim``) cost 30% of the
requests per second, the next request faulting them in again; a fixed mmap threshold
(``MALLOC_MMAP_THRESHOLD_``), which maps and unmaps every large block, cost 40%. So the
server trims once large requests stop: after ``after_bytes`` of large bodies, the first
time ``quiet_s`` passes with no large body in or out, ``malloc_trim(0)`` gives every free
page of every arena back (0.7 ms for a 30 MiB heap here, on the event loop). While large
requests keep coming, their freed pages stay for the next ones to reuse. Small requests
never arm it; on a C library without ``malloc_trim`` (musl, macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import time
from collections.abc import Callable

__all__ = ["LARGE_BYTES", "HeapTrim"]

LARGE_BYTES = 64 << 10
"""A body at least this long is a large one: it is noted toward a trim."""


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return trim


class HeapTrim:
    """Calls ``malloc_trim(0)`` once large bodies stop passing through.

    Args:
        quiet_s: seconds without a large body before trimming.
        after_bytes: bytes of large bodies that arm a trim.
    """

    def __init__(self, *, quiet_s: float = 1.0, after_bytes: int = 16 << 20) -> None:
        self.quiet_s = quiet_s
        self.after_bytes = after_bytes
        self.trims = 0
        self._trim = _malloc_trim()
        self._bytes = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def note(self, size: int) -> None:
        """A large body of ``size`` bytes came in or went out; call on the event loop."""
        if self._trim is None:
            return
        self._bytes += size
        self._last = time.monotonic()
        if self._timer is None and self._bytes >= self.after_bytes:
            self._timer = asyncio.get_running_loop().call_later(self.quiet_s, self._check)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        wait = self._last + self.quiet_s - time.monotonic()
        if wait > 0:
            self._timer = asyncio.get_running_loop().call_later(wait, self._check)
            return
        self._timer = None
        self._bytes = 0
        assert self._trim is not None
        self._trim(0)
        self.trims += 1
