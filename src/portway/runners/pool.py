"""``RunnerPool``: the runners attached to one model version, and who waits for them."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from portway.errors import Overloaded
from portway.registry.errors import RunnerUnavailable
from portway.runners.link import RunnerLink

MAX_QUEUE = 64
"""Requests that may wait for a free runner slot; more get 503 Overloaded."""


class RunnerPool:
    """Hands out runner slots: the runner with the fewest calls in flight first,
    never past a runner's concurrency; when all are busy, a FIFO queue of at most
    ``max_queue`` waits (a request put back after its runner left goes first)."""

    def __init__(self, reference: str, max_queue: int = MAX_QUEUE) -> None:
        self.reference = reference
        self.max_queue = max_queue
        self.links: list[RunnerLink] = []
        self._waiters: deque[asyncio.Future[RunnerLink]] = deque()

    def add(self, link: RunnerLink) -> None:
        self.links.append(link)
        self._hand_out()

    def remove(self, link: RunnerLink) -> None:
        """Detach ``link``; with none left, everyone waiting gets 503."""
        if link in self.links:
            self.links.remove(link)
        if not self.links:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(RunnerUnavailable(self.reference))

    async def acquire(self, *, front: bool = False) -> RunnerLink:
        """A runner with a free slot (taken: give it back with :meth:`release`)."""
        if not self.links:
            raise RunnerUnavailable(self.reference)
        link = None if self._waiters else self._pick()
        if link is not None:
            link.in_flight += 1
            return link
        if len(self._waiters) >= self.max_queue and not front:
            raise Overloaded(self.reference)
        waiter: asyncio.Future[RunnerLink] = asyncio.get_running_loop().create_future()
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self, link: RunnerLink) -> None:
        link.in_flight -= 1
        self._hand_out()

    def _pick(self) -> RunnerLink | None:
        free = [link for link in self.links if link.in_flight < link.concurrency]
        return min(free, key=lambda link: link.in_flight) if free else None

    def _hand_out(self) -> None:
        while self._waiters and (link := self._pick()) is not None:
            waiter = self._waiters.popleft()
            if not waiter.done():
                link.in_flight += 1
                waiter.set_result(link)

    def health(self) -> dict[str, Any]:
        return {
            "queued": sum(not waiter.done() for waiter in self._waiters),
            "runners": [link.health() for link in self.links],
        }
