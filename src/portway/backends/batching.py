"""Gather the items of concurrent callers into one call of a blocking function.

A caller ``submit``s a list of items and awaits its results. One worker task
takes what is waiting, runs ``run`` on all of it in a thread, and hands each
caller its slice. One call runs at a time, so the model is never entered twice at
once, and callers arriving during a call are batched for the next. While callers
come together (the last batch had more than one), the worker also waits up to
``max_wait`` seconds for more before a batch of fewer than ``max_batch`` items; a
lone caller never waits. A caller cancelled before its batch starts is left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from portway.aio import cancel_and_wait

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job(Generic[T, R]):
    items: list[T]
    future: asyncio.Future[list[R]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Batcher(Generic[T, R]):
    def __init__(
        self, run: Callable[[list[T]], list[R]], *, max_batch: int, max_wait: float
    ) -> None:
        self._run = run
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._pending: list[_Job[T, R]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._together = False

    async def submit(self, items: list[T]) -> list[R]:
        """``run``'s results for ``items``, in order; what ``run`` raised, if it failed."""
        if self._task is None:
            self._task = asyncio.create_task(self._work(), name="batcher")
        job: _Job[T, R] = _Job(items)
        self._pending.append(job)
        self._wake.set()
        return await job.future

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for job in self._pending:
            job.future.cancel()
        self._pending.clear()

    def _waiting(self) -> int:
        return sum(len(job.items) for job in self._pending)

    def _take(self) -> list[_Job[T, R]]:
        """Waiting jobs, oldest first, up to ``max_batch`` items (at least one job)."""
        taken: list[_Job[T, R]] = []
        size = 0
        while self._pending and (
            not taken or size + len(self._pending[0].items) <= self._max_batch
        ):
            job = self._pending.pop(0)
            if not job.future.done():
                taken.append(job)
                size += len(job.items)
        if not self._pending:
            self._wake.clear()
        return taken

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            if self._together and self._max_wait and self._waiting() < self._max_batch:
                await asyncio.sleep(self._max_wait)
            jobs = self._take()
            self._together = len(jobs) > 1
            if jobs:
                await self._run_batch(jobs)

    async def _run_batch(self, jobs: list[_Job[T, R]]) -> None:
        items = [item for job in jobs for item in job.items]
        try:
            results = await asyncio.to_thread(self._run, items)
        except asyncio.CancelledError:
            for job in jobs:
                job.future.cancel()
            raise
        except Exception as exc:
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        start = 0
        for job in jobs:
            end = start + len(job.items)
            if not job.future.done():
                job.future.set_result(results[start:end])
            start = end
