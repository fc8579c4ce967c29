"""A model that replies with a fixed script: for tests and for measuring the
serving layer without a model's cost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from portway.backends.base import Capabilities, ChatBackend, Delta, GenerationRequest
from portway.errors import ContextLengthExceeded


class ScriptedBackend(ChatBackend):
    """Each script piece is one token; ``delay`` seconds pass before each.

    It can play a model that writes tool calls in ``tool_family``'s format or
    ``<think>`` reasoning (``reasons``); it cannot enforce grammars.
    """

    def __init__(
        self,
        script: Sequence[str],
        *,
        delay: float = 0.0,
        context_length: int = 4096,
        tool_family: str = "json",
        reasons: bool = False,
    ) -> None:
        self.script = tuple(script)
        self.delay = delay
        self.context_length = context_length
        self.tool_family = tool_family
        self.reasons = reasons
        self.capabilities = Capabilities(tools=True, reasoning=reasons)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _prompt_tokens(self, request: GenerationRequest) -> int:
        return sum(self.count_tokens(message.content) + 3 for message in request.messages)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        prompt_tokens = self._prompt_tokens(request)
        budget = request.sampling.max_tokens or self.context_length - prompt_tokens
        if prompt_tokens + (request.sampling.max_tokens or 0) > self.context_length:
            raise ContextLengthExceeded(
                prompt_tokens, request.sampling.max_tokens or 0, self.context_length
            )
        yield Delta(prompt_tokens=prompt_tokens)
        pieces = self.script[:budget]
        for piece in pieces:
            if self.delay:
                await asyncio.sleep(self.delay)
            yield Delta(text=piece, tokens=1)
        yield Delta(finish_reason="stop" if len(self.script) <= budget else "length")
