"""Backends whose work runs on attached runners: one per model version and kind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from portway.backends.base import (
    AttachableBackend,
    Capabilities,
    ChatBackend,
    Delta,
    GenerationRequest,
)
from portway.backends.tokens import estimate_tokens
from portway.errors import BadGateway
from portway.registry.runner_spec import RunnerTimeouts
from portway.runners.errors import RunnerGone, RunnerLost, RunnerTimeout
from portway.runners.link import Call, Event, RunnerLink
from portway.runners.pool import MAX_QUEUE, RunnerPool
from portway.runners.wire import ErrorFrame, ModelInfo, ResultFrame

ATTEMPTS = 3
"""Runners a request may be sent to: one whose runners keep leaving before they
answer it (a request that crashes them, say) fails after this many."""


class RunnerBackend(AttachableBackend):
    """What every runner-served backend has: its pool of runners and the model's
    description (``info`` is None for a catalogue declaration no runner has filled).
    ``declared_timeouts`` are the catalogue's, which win over the runner's own."""

    declared_timeouts: RunnerTimeouts | None = None

    def __init__(self, reference: str, info: ModelInfo | None, max_queue: int) -> None:
        self.reference = reference
        self.info = info
        self.pool = RunnerPool(reference, max_queue)

    @property
    def timeouts(self) -> RunnerTimeouts:
        """The catalogue's deadlines, else the runner's, else the defaults."""
        own = self.info.timeouts if self.info is not None else None
        return self.declared_timeouts or own or RunnerTimeouts()

    async def next_event(self, link: RunnerLink, call: Call) -> Event:
        """The call's next frame (None: the runner left); RunnerTimeout past the
        first-byte deadline (before the first delta) or the idle one (after)."""
        deadline, seconds = (
            ("idle", self.timeouts.idle)
            if call.started
            else ("first-byte", self.timeouts.first_byte)
        )
        try:
            async with asyncio.timeout(seconds):
                return await call.events.get()
        except TimeoutError:
            link.failed += 1
            raise RunnerTimeout(self.reference, deadline, seconds) from None

    @property
    def attached(self) -> bool:
        return bool(self.pool.links)

    def add(self, link: RunnerLink) -> None:
        self.pool.add(link)

    def remove(self, link: RunnerLink) -> None:
        """Detach ``link`` (its calls must already know, see ``RunnerLink.lose``)."""
        self.pool.remove(link)

    def health(self) -> dict[str, Any]:
        return self.pool.health()

    async def unary(self, kind: str, payload: dict[str, Any]) -> ResultFrame:
        """Send one ``kind`` frame to a runner and await its result; a runner that
        leaves first is replaced (the work is repeated elsewhere)."""
        for attempt in range(ATTEMPTS):
            link = await self.pool.acquire(front=attempt > 0)
            call = link.open(kind, payload)
            try:
                event = await self.next_event(link, call)
                if event is None:
                    continue
                call.done = True
                if isinstance(event, ErrorFrame):
                    link.failed += 1
                    raise link.error(event)
                if not isinstance(event, ResultFrame):
                    raise BadGateway(f"The runner of '{self.reference}' answered with a delta.")
                link.served += 1
                return event
            finally:
                link.finish(call)
                self.pool.release(link)
        raise RunnerLost(self.reference, ATTEMPTS)


class RunnerChatBackend(RunnerBackend, ChatBackend):
    """A chat model version whose generations run on attached runners.

    A request whose runner leaves before its first delta goes back to the head
    of the queue (at most ``ATTEMPTS`` runners in all); one that had begun fails
    with :class:`RunnerLost`.
    """

    def __init__(
        self, reference: str, info: ModelInfo | None = None, max_queue: int = MAX_QUEUE
    ) -> None:
        super().__init__(reference, info, max_queue)
        if info is not None:
            self.context_length = info.context_length
            self.capabilities = Capabilities(**info.capabilities.model_dump(), grammar=False)
            self.tool_family = info.tool_family
            self.reasons = info.reasons

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(len(text))  # the model's tokenizer is on the runner

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        for attempt in range(ATTEMPTS):
            link = await self.pool.acquire(front=attempt > 0)
            call = link.open("chat", {"request": request})
            try:
                async for delta in self._relay(link, call):
                    yield delta
                return
            except RunnerGone:
                if call.started:
                    raise RunnerLost(self.reference) from None
            finally:
                link.finish(call)
                self.pool.release(link)
        raise RunnerLost(self.reference, ATTEMPTS)

    async def _relay(self, link: RunnerLink, call: Call) -> AsyncIterator[Delta]:
        while True:
            event = await self.next_event(link, call)
            if event is None:
                raise RunnerGone()
            if isinstance(event, ErrorFrame):
                call.done = True
                link.failed += 1
                raise link.error(event)
            if isinstance(event, ResultFrame):
                call.done = True
                raise BadGateway(f"The runner of '{self.reference}' answered with a result.")
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


def _has_output(delta: Delta) -> bool:
    return bool(
        delta.text
        or delta.tokens
        or delta.reasoning
        or delta.calls
        or delta.logprobs
        or delta.finish_reason
    )
