"""Backends for model folders written with ``portway.sdk`` (see ``load_model_dir``).

A chat model's yields become ``Delta``s: text (its tokens counted with the model's
``count_tokens``), reasoning, and tool calls as ``CallPiece``s; ``Usage`` replaces
Portway's counts. Portway enforces ``max_tokens`` (the text that would pass it is
cut to fit, then the generator is closed: ``length``) and ``stop`` strings.
The first delta waits for the model's first yield, so that an exception raised
before it becomes an HTTP error rather than an error event in a stream.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from portway.aio import aclose
from portway.backends.base import (
    Capabilities,
    ChatBackend,
    Delta,
    GenerationRequest,
)
from portway.backends.python.bridge import ThreadedIterator
from portway.backends.python.yields import YieldConverter, request_params, to_dicts
from portway.errors import ContextLengthExceeded, ModelFailed, PortwayError
from portway.sdk.config import ModelConfig
from portway.sdk.model import ModelClass

log = logging.getLogger(__name__)


def model_failed(exc: BaseException, model: str) -> PortwayError:
    """What a user's exception becomes (Portway's own errors pass through)."""
    if isinstance(exc, PortwayError):
        return exc
    log.error("model %s failed", model, exc_info=exc)
    return ModelFailed(f"{type(exc).__name__}: {exc}")


class PythonChatBackend(ChatBackend):
    """A ``ModelClass`` chat model run in this process; at most
    ``config.concurrency`` generations run at once, the others wait in turn."""

    tool_family = "typed"

    def __init__(self, model: ModelClass, config: ModelConfig) -> None:
        self.model = model
        self.config = config
        self.name = config.reference
        self.context_length = config.context_length
        self.capabilities = Capabilities(
            tools=config.tools,
            json_schema=config.response_format,
            reasoning=config.reasoning,
            logprobs=False,
            logit_bias=False,
            seed=True,
            grammar=False,
        )
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.concurrency)
        return self._slots

    async def start(self) -> None:
        """Runs the model's ``load_model`` on a worker thread."""
        await asyncio.to_thread(self.model.load_model)

    async def close(self) -> None:
        """Runs the model's ``close`` on a worker thread."""
        await asyncio.to_thread(self.model.close)

    def count_tokens(self, text: str) -> int:
        try:
            return int(self.model.count_tokens(text))
        except Exception as exc:
            raise model_failed(exc, self.name) from exc

    def _prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        texts = [str(message.get("content") or "") for message in messages]
        for message in messages:
            texts += [call["function"]["arguments"] for call in message.get("tool_calls", ())]
        return sum(self.count_tokens(text) for text in texts if text)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        messages, params = to_dicts(request.messages), request_params(request)
        prompt_tokens = self._prompt_tokens(messages)
        max_tokens = request.sampling.max_tokens
        if prompt_tokens + (max_tokens or 0) > self.context_length:
            raise ContextLengthExceeded(prompt_tokens, max_tokens or 0, self.context_length)
        budget = max_tokens or self.context_length - prompt_tokens
        convert = YieldConverter(
            self.count_tokens, budget, params, self.name, cut=not self.model.stops_at_max_tokens
        )
        await self.slots.acquire()
        items = self._items(messages, params, self.slots.release)
        try:
            item = await self._next(items)  # before the first delta: errors stay HTTP errors
            yield Delta(prompt_tokens=prompt_tokens)
            while item is not None and not convert.finished:
                for delta in convert.feed(item[0]):
                    yield delta
                item = None if convert.finished else await self._next(items)
            yield convert.finish()
        finally:
            await aclose(items)

    async def _next(self, items: AsyncIterator[Any]) -> tuple[Any] | None:
        try:
            return (await anext(items),)
        except StopAsyncIteration:
            return None
        except Exception as exc:
            raise model_failed(exc, self.name) from exc

    def _items(
        self, messages: list[dict[str, Any]], params: Any, release: Callable[[], None]
    ) -> AsyncIterator[Any]:
        generate: Callable[..., Any] = self.model.generate
        if inspect.isasyncgenfunction(generate):
            return _released(generate(messages, params), release)
        return aiter(ThreadedIterator(lambda: generate(messages, params), release))


async def _released(items: AsyncIterator[Any], release: Callable[[], None]) -> AsyncIterator[Any]:
    """``items``, closed (its ``finally`` run) when this is closed; then ``release``."""
    try:
        async for item in items:
            yield item
    finally:
        try:
            await aclose(items)
        finally:
            release()
