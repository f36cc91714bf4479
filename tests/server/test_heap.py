"""Freed heap memory goes back to the system once large requests stop
(``tiffin.server.heap``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest

import tiffin
from tests.server.asgi import serving
from tiffin.server.heap import LARGE_BYTES, HeapTrim

pytestmark = pytest.mark.skipif(
    HeapTrim()._trim is None, reason="the C library has no malloc_trim (glibc has)"
)


@tiffin.service
class Echo:
    @tiffin.api
    def size(self, text: str) -> int:
        return len(text)

    @tiffin.api
    def text(self, n: int) -> str:
        return "x" * n


async def _settle(heap: HeapTrim, trims: int, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while heap.trims < trims:
        assert time.monotonic() < deadline, f"no trim within {seconds} s"
        await asyncio.sleep(0.01)


def test_the_server_trims_once_after_large_bodies_stop() -> None:
    async def main() -> None:
        async with serving(Echo) as (client, app):
            app.heap.quiet_s = 0.2
            app.heap.after_bytes = 3 * LARGE_BYTES
            for _ in range(10):  # small requests never arm a trim
                assert (await client.post("/size", json={"text": "x" * 100})).json() == 100
            await asyncio.sleep(0.3)
            assert app.heap.trims == 0

            big = "x" * LARGE_BYTES
            assert (await client.post("/size", json={"text": big})).json() == LARGE_BYTES
            # a large answer counts as a large request does
            answer = await client.post("/text", json={"n": LARGE_BYTES})
            assert len(answer.json()) == LARGE_BYTES
            # even one refused (422) passed its body through the server's memory
            refused = await client.post("/size", json={"text": big, "extra": 1})
            assert refused.status_code == 422
            assert app.heap.trims == 0
            await _settle(app.heap, 1)
            await asyncio.sleep(0.3)
            assert app.heap.trims == 1  # once per burst, not once per quiet second

            for _ in range(3):
                await client.post("/size", json={"text": big})
            await _settle(app.heap, 2)

    asyncio.run(main())


def test_large_bodies_that_keep_coming_postpone_the_trim() -> None:
    async def main() -> None:
        heap = HeapTrim(quiet_s=0.2, after_bytes=LARGE_BYTES)
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            heap.note(LARGE_BYTES)
            last = time.monotonic()
            await asyncio.sleep(0.05)
        assert heap.trims == 0
        await _settle(heap, 1)
        assert time.monotonic() - last >= 0.2

        heap.note(LARGE_BYTES)
        heap.close()  # a server stopping cancels the pending trim
        await asyncio.sleep(0.3)
        assert heap.trims == 1

    asyncio.run(main())


def test_a_trim_gives_freed_pages_below_the_heap_top_back() -> None:
    # In a fresh process: 1 MiB blocks come from the heap once one has been freed, and
    # freeing every other one leaves 32 MiB of holes that stay resident until the trim.
    script = textwrap.dedent(
        """
        import asyncio, os
        from tiffin.server.heap import HeapTrim

        def resident():
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        first = bytes(1 << 20)  # freed, it raises glibc's mmap threshold past 1 MiB
        del first
        blocks = [b"x" * (1 << 20) for _ in range(64)]
        del blocks[::2]  # 32 holes of 1 MiB, each between two blocks still in use
        freed = resident()

        async def main():
            heap = HeapTrim(quiet_s=0.01, after_bytes=1)
            heap.note(1 << 20)
            while heap.trims == 0:
                await asyncio.sleep(0.01)

        asyncio.run(main())
        print(freed, resident(), len(blocks))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    freed, trimmed, _ = (int(word) for word in done.stdout.split())
    assert freed - trimmed > 24 << 20, (freed >> 20, trimmed >> 20)
