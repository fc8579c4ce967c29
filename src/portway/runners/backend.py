"""``RunnerBackend``: one model version served by the runners attached to it."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from portway.backends.base import Capabilities, ChatBackend, Delta, GenerationRequest
from portway.errors import Overloaded
from portway.runners.errors import RunnerGone, RunnerLost, RunnerUnavailable, from_frame
from portway.runners.link import Call, RunnerLink
from portway.runners.wire import ErrorFrame, ModelInfo

MAX_QUEUE = 64
"""Requests that may wait for a free runner slot; more get 503 Overloaded."""


class RunnerBackend(ChatBackend):
    """A chat model version whose generations run on attached runners.

    Each request goes to the runner with the fewest calls in flight, never past
    a runner's concurrency; when all are busy it waits in a FIFO queue of at most
    ``max_queue``. A request whose runner leaves before its first delta goes back
    to the head of the queue; one that had begun fails with :class:`RunnerLost`.
    ``info`` is None for a catalogue-declared model no runner has described yet.
    """

    def __init__(
        self, reference: str, info: ModelInfo | None = None, max_queue: int = MAX_QUEUE
    ) -> None:
        self.reference = reference
        self.info = info
        self.max_queue = max_queue
        self.links: list[RunnerLink] = []
        self._waiters: deque[asyncio.Future[RunnerLink]] = deque()
        if info is not None:
            self.context_length = info.context_length
            self.capabilities = Capabilities(**info.capabilities.model_dump(), grammar=False)
            self.tool_family = info.tool_family
            self.reasons = info.reasons

    @property
    def attached(self) -> bool:
        return bool(self.links)

    def count_tokens(self, text: str) -> int:
        """An estimate (the tokenizer is on the runner): a token per 4 UTF-8 bytes."""
        return math.ceil(len(text.encode("utf-8")) / 4)

    def add(self, link: RunnerLink) -> None:
        self.links.append(link)
        self._hand_out()

    def remove(self, link: RunnerLink) -> None:
        """Detach ``link`` (its calls must already know, see ``RunnerLink.lose``)."""
        if link in self.links:
            self.links.remove(link)
        if not self.links:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(RunnerUnavailable(self.reference))

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        retried = False
        while True:
            link = await self._acquire(front=retried)
            call = link.open(request)
            try:
                async for delta in self._relay(link, call):
                    yield delta
                return
            except RunnerGone:
                if call.started:
                    raise RunnerLost(self.reference) from None
                retried = True
            finally:
                link.finish(call)
                self._release(link)

    async def _relay(self, link: RunnerLink, call: Call) -> AsyncIterator[Delta]:
        while True:
            event = await call.events.get()
            if event is None:
                raise RunnerGone()
            if isinstance(event, ErrorFrame):
                call.done = True
                link.failed += 1
                raise from_frame(event)
            delta = event.delta
            if not call.started and (delta.prompt_tokens is None or _has_output(delta)):
                yield Delta(prompt_tokens=delta.prompt_tokens or 0)
                delta = replace(delta, prompt_tokens=None)
            call.started = True
            if _has_output(delta) or delta.prompt_tokens is not None:
                yield delta
            if delta.finish_reason is not None:
                call.done = True
                link.served += 1
                return

    def _pick(self) -> RunnerLink | None:
        free = [link for link in self.links if link.in_flight < link.concurrency]
        return min(free, key=lambda link: link.in_flight) if free else None

    async def _acquire(self, *, front: bool) -> RunnerLink:
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
                self._release(waiter.result())
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def _release(self, link: RunnerLink) -> None:
        link.in_flight -= 1
        self._hand_out()

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


def _has_output(delta: Delta) -> bool:
    return bool(
        delta.text
        or delta.tokens
        or delta.reasoning
        or delta.calls
        or delta.logprobs
        or delta.finish_reason
    )
