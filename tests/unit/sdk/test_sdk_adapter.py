"""A user's chat model behind ``PythonChatBackend``: what its yields become,
max_tokens, stop strings, cancellation, errors and the concurrency bound."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest

from portway.aio import aclose
from portway.backends.base import CallPiece, Delta
from portway.errors import ContextLengthExceeded, ModelFailed
from portway.sdk import (
    GenerateParams,
    ModelClass,
    Output,
    Reasoning,
    Text,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tests.unit.sdk.sdk_helpers import chat_backend, collect, request


class Words(ModelClass):
    """Yields what it was built with; one token per word."""

    def __init__(self, *items: Output) -> None:
        self.items = items
        self.seen: list[tuple[list[dict[str, Any]], GenerateParams]] = []
        self.closed = threading.Event()
        self.produced = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages: list[dict[str, Any]], params: GenerateParams) -> Iterator[Output]:
        self.seen.append((messages, params))
        try:
            for item in self.items:
                self.produced += 1
                yield item
        finally:
            self.closed.set()


async def test_text_is_counted_and_the_prompt_comes_first() -> None:
    backend = chat_backend(Words("Hello", Text(" big world")))
    deltas = await collect(backend, request("one two three"))
    assert deltas == [
        Delta(prompt_tokens=3),
        Delta(text="Hello", tokens=1),
        Delta(text=" big world", tokens=2),
        Delta(finish_reason="stop"),
    ]


async def test_messages_and_params_reach_the_model() -> None:
    model = Words("ok")
    backend = chat_backend(model, tools=True)
    await collect(backend, request("hi", max_tokens=5, stop=("x",), tools=("f",)))
    messages, params = model.seen[0]
    assert messages == [{"role": "user", "content": "hi"}]
    assert params.max_tokens == 5
    assert params.stop == ["x"]
    assert params.tool_choice == "auto"
    assert params.tools[0]["function"]["name"] == "f"
    await collect(backend, request("hi", tools=("f",), tool_mode="none"))
    assert model.seen[1][1].tool_choice == "none"


async def test_reasoning_calls_and_usage() -> None:
    model = Words(
        Reasoning("let me think"),
        ToolCall("f", {"city": "Paris"}, id="call_1"),
        ToolCallDelta(1, name="f", arguments='{"city": '),
        ToolCallDelta(1, arguments='"Rome"}'),
        Usage(prompt_tokens=11, completion_tokens=20),
    )
    backend = chat_backend(model, tools=True, reasoning=True)
    deltas = await collect(backend, request("hi", tools=("f",)))
    assert deltas[1] == Delta(reasoning="let me think", tokens=3)
    assert deltas[2].calls == (CallPiece(0, "call_1", "f", '{"city": "Paris"}'),)
    assert deltas[3].calls == (CallPiece(1, None, "f", '{"city": '),)
    assert deltas[4].calls == (CallPiece(1, None, None, '"Rome"}'),)
    counted = sum(delta.tokens for delta in deltas[1:5])
    assert deltas[5] == Delta(prompt_tokens=11)
    assert deltas[6] == Delta(tokens=20 - counted)
    assert deltas[-1] == Delta(finish_reason="stop")


async def test_a_call_to_a_tool_not_offered_fails() -> None:
    backend = chat_backend(Words(ToolCall("g", {})), tools=True)
    with pytest.raises(ModelFailed, match="'g', which the request did not offer"):
        await collect(backend, request("hi", tools=("f",)))


async def test_tool_choice_is_held_to() -> None:
    backend = chat_backend(Words("no call"), tools=True)
    with pytest.raises(ModelFailed, match="made no tool call"):
        await collect(backend, request("hi", tools=("f",), tool_mode="required"))
    backend = chat_backend(Words(ToolCall("g", {})), tools=True)
    named = request("hi", tools=("f", "g"), tool_mode="named")
    named = replace(named, tool_name="f")
    with pytest.raises(ModelFailed, match="tool_choice names 'f'"):
        await collect(backend, named)
    backend = chat_backend(Words(ToolCall("f", {})), tools=True)
    deltas = await collect(backend, named)
    assert deltas[-1].finish_reason == "stop"


async def test_max_tokens_cuts_the_text_and_closes_the_generator() -> None:
    model = Words("one two", " three four", " five")
    backend = chat_backend(model)
    deltas = await collect(backend, request("hi", max_tokens=3))
    assert [delta.text for delta in deltas[1:]] == ["one two", " three ", ""]
    assert sum(delta.tokens for delta in deltas) == 3
    assert deltas[-1].finish_reason == "length"
    assert model.closed.wait(5)


async def test_stop_strings_end_the_text() -> None:
    backend = chat_backend(Words("Hello wor", "ld. Bye", " now"))
    deltas = await collect(backend, request("hi", stop=("world",)))
    assert "".join(delta.text for delta in deltas) == "Hello "
    assert deltas[-1].finish_reason == "stop"


async def test_context_length_is_checked_before_the_model_runs() -> None:
    model = Words("x")
    backend = chat_backend(model, context_length=16)
    with pytest.raises(ContextLengthExceeded):
        await collect(backend, request("a b c", max_tokens=14))
    assert model.seen == []


class Slow(ModelClass):
    def __init__(self) -> None:
        self.closed = threading.Event()
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def generate(self, messages: list[dict[str, Any]], params: GenerateParams) -> Iterator[Output]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            for index in range(1000):
                time.sleep(0.01)
                yield f"w{index} "
        finally:
            with self.lock:
                self.running -= 1
            self.closed.set()


async def test_closing_the_stream_stops_the_generator_and_runs_its_finally() -> None:
    model = Slow()
    stream = chat_backend(model).generate(request())
    assert (await anext(stream)).prompt_tokens is not None
    await anext(stream)
    await aclose(stream)
    assert await asyncio.to_thread(model.closed.wait, 60)  # a deadline, not a timing
    assert model.running == 0


async def _until_done(tasks: list[asyncio.Future[Any]], count: int) -> None:
    pending = set(tasks)
    while len(tasks) - len(pending) < count:
        _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)


async def test_concurrency_bounds_the_generations() -> None:
    model = Slow()
    backend = chat_backend(model, concurrency=2)
    streams = [backend.generate(request()) for _ in range(4)]
    tasks = [asyncio.ensure_future(anext(stream)) for stream in streams]
    await asyncio.wait_for(_until_done(tasks, 2), 60)  # 60 s: a hang fails, not a timing
    done = {task for task in tasks if task.done()}
    assert len(done) == 2  # the other two wait for a slot, however long this took
    assert model.most == 2
    first = [stream for stream, task in zip(streams, tasks, strict=True) if task in done]
    for stream in first:
        await aclose(stream)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert model.most == 2
    for stream in streams:
        await aclose(stream)


class Failing(ModelClass):
    def __init__(self, after: int) -> None:
        self.after = after

    def generate(self, messages: list[dict[str, Any]], params: GenerateParams) -> Iterator[Output]:
        for index in range(self.after):
            yield f"w{index}"
        raise ValueError("the model broke")


async def test_an_exception_before_the_first_yield_fails_the_request() -> None:
    stream = chat_backend(Failing(0)).generate(request())
    with pytest.raises(ModelFailed) as caught:
        await anext(stream)
    assert caught.value.message == "ValueError: the model broke"
    assert caught.value.status == 500
    assert caught.value.body()["error"]["code"] == "model_error"
    assert caught.value.body()["error"]["type"] == "server_error"


async def test_an_exception_after_text_ends_the_stream() -> None:
    stream = chat_backend(Failing(2)).generate(request())
    seen = [await anext(stream) for _ in range(3)]
    assert seen[1].text == "w0"
    with pytest.raises(ModelFailed, match="ValueError: the model broke"):
        async for _ in stream:
            pass


async def test_a_yield_of_the_wrong_type_fails() -> None:
    backend = chat_backend(Words(42))  # type: ignore[arg-type]
    with pytest.raises(ModelFailed, match="yielded a int"):
        await collect(backend, request())


class AsyncModel(ModelClass):
    def __init__(self) -> None:
        self.closed = False

    async def generate(
        self, messages: list[dict[str, Any]], params: GenerateParams
    ) -> AsyncIterator[Output]:
        try:
            for word in ("a", " b", " c"):
                await asyncio.sleep(0)
                yield word
            await asyncio.sleep(60)
            yield " never"
        finally:
            self.closed = True


async def test_async_generators_run_on_the_loop_and_are_closed() -> None:
    model = AsyncModel()
    stream = chat_backend(model).generate(request())
    deltas = [await anext(stream) for _ in range(4)]
    assert "".join(delta.text for delta in deltas) == "a b c"
    await aclose(stream)
    assert model.closed
    deltas = await collect(chat_backend(AsyncModel()), request(max_tokens=2))
    assert deltas[-1].finish_reason == "length"
