"""``RunnerPool``: the runners attached to one model version, and who waits for them."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

from portway.errors import Overloaded
from portway.registry.errors import RunnerUnavailable
from portway.runners.link import RunnerLink

MAX_QUEUE = 64
"""Requests that may wait for a free runner slot; more get 503 Overloaded."""


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[RunnerLink]
    among: Container[RunnerLink] | None
    """The runners it may have (None: any)."""


class RunnerPool:
    """Hands out runner slots: the runner with the fewest calls in flight first,
    never past a runner's concurrency; when all are busy, a FIFO queue of at most
    ``max_queue`` waits (a request put back after its runner left goes first).

    A request may be restricted to some of the runners (``among``): another
    process's call is run on this process's own runners only."""

    def __init__(self, reference: str, max_queue: int = MAX_QUEUE) -> None:
        self.reference = reference
        self.max_queue = max_queue
        self.links: list[RunnerLink] = []
        self._waiters: deque[_Waiter] = deque()

    def add(self, link: RunnerLink) -> None:
        self.links.append(link)
        self._hand_out()

    def remove(self, link: RunnerLink) -> None:
        """Detach ``link``; whoever waits for runners of which none are left gets 503."""
        if link in self.links:
            self.links.remove(link)
        for waiter in list(self._waiters):
            if not any(_allowed(found, waiter.among) for found in self.links):
                self._waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(RunnerUnavailable(self.reference))

    async def acquire(
        self,
        *,
        front: bool = False,
        prefer: RunnerLink | None = None,
        among: Container[RunnerLink] | None = None,
    ) -> RunnerLink:
        """A runner with a free slot (taken: give it back with :meth:`release`),
        one of ``among`` if given; ``prefer`` if it has a slot and nobody waits."""
        if not any(_allowed(link, among) for link in self.links):
            raise RunnerUnavailable(self.reference)
        link = None if self._waiters else self._pick(among, prefer)
        if link is not None:
            link.in_flight += 1
            return link
        if len(self._waiters) >= self.max_queue and not front:
            raise Overloaded(self.reference)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), among)
        if front:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        self._hand_out()  # those ahead may wait for runners this one may not need
        try:
            return await waiter.future
        except asyncio.CancelledError:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self, link: RunnerLink) -> None:
        link.in_flight -= 1
        self._hand_out()

    def _pick(
        self, among: Container[RunnerLink] | None, prefer: RunnerLink | None = None
    ) -> RunnerLink | None:
        free = [
            link
            for link in self.links
            if link.in_flight < link.concurrency and _allowed(link, among)
        ]
        if prefer is not None and prefer in free:
            return prefer
        return min(free, key=lambda link: link.load) if free else None

    def _hand_out(self) -> None:
        """Give free slots to the waiters, in order; one restricted to busy runners
        lets those behind it past."""
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            link = self._pick(waiter.among)
            if link is None:
                if waiter.among is None:
                    return  # nothing is free
                continue
            self._waiters.remove(waiter)
            link.in_flight += 1
            waiter.future.set_result(link)

    def health(self) -> dict[str, Any]:
        return {
            "queued": sum(not waiter.future.done() for waiter in self._waiters),
            "runners": [link.health() for link in self.links],
        }


def _allowed(link: RunnerLink, among: Container[RunnerLink] | None) -> bool:
    return among is None or link in among
