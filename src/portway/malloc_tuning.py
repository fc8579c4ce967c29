"""Giving the memory the server's threads freed back to the system.

glibc's malloc keeps what a thread frees inside that thread's arena, for the next
allocation there. The server's worker threads (llama.cpp's, torch's, the event
loop's thread pool) allocate and free tens of megabytes per request in shapes
that change from request to request, so under steady load the arenas end up
holding a hundred megabytes or more of free memory that stays resident
(BENCHMARKS.md, "Memory under steady load"). ``MemoryTrimmer`` calls glibc's
``malloc_trim(0)`` every ``interval`` seconds, in a worker thread, which returns
the free pages of every arena to the system; it takes under a millisecond to a
few tens of milliseconds. Where the C library has no ``malloc_trim`` (musl,
macOS) it does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

from portway.aio import cancel_and_wait

log = logging.getLogger(__name__)

TRIM_SECONDS = 30.0


def glibc_malloc_trim() -> Callable[[], object] | None:
    """``malloc_trim(0)`` of the process's C library, or None where it has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class MemoryTrimmer:
    """Calls ``trim`` every ``interval`` seconds between ``start`` and ``stop``."""

    def __init__(
        self,
        interval: float | None = None,
        trim: Callable[[], object] | None = None,
    ) -> None:
        self.interval = TRIM_SECONDS if interval is None else interval
        self._trim = trim if trim is not None else glibc_malloc_trim()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._trim is not None and self._task is None:
            self._task = asyncio.create_task(self._run(), name="malloc-trim")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        trim = self._trim
        assert trim is not None
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(trim)
            except Exception:  # never worth stopping the server for
                log.exception("malloc_trim failed")
