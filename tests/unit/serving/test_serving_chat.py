"""The serving layer on scripted backends: wire shapes, metering, cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from portway.aio import aclose
from portway.backends.base import CallPiece, Capabilities, ChatBackend, Delta, GenerationRequest
from portway.backends.scripted import ScriptedBackend
from portway.errors import BackendError, ContextLengthExceeded, UnsupportedParameter
from portway.protocol.chat import ChatCompletionRequest
from portway.serving.chat import ChatService
from portway.serving.context import RequestContext
from tests.unit.doubles import Ledger, context, registry

MODEL = "acme/chat/models/bot"


class Failing(ChatBackend):
    """Two tokens, then a failure."""

    def count_tokens(self, text: str) -> int:
        return 1

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        yield Delta(prompt_tokens=3)
        yield Delta(text="a", tokens=1)
        yield Delta(text="b", tokens=1)
        raise BackendError("the model fell over")


def _service(backend: ChatBackend) -> tuple[ChatService, Ledger]:
    ledger = Ledger()
    return ChatService(registry((MODEL, backend)), ledger), ledger  # type: ignore[arg-type]


def _ctx() -> RequestContext:
    return context("chat.completions")


def _request(**fields: Any) -> ChatCompletionRequest:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi there"}], **fields}
    return ChatCompletionRequest.model_validate(body)


async def test_unary_body_and_usage_row() -> None:
    service, ledger = _service(ScriptedBackend(["Hel", "lo"]))
    ctx = _ctx()
    body = await service.complete(ctx, await service.accept(ctx, _request(user="u-1")))
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello",
        "refusal": None,
        "annotations": [],
    }
    assert body["usage"]["completion_tokens"] == 2
    assert [(row.status, row.completion_tokens, row.end_user) for row in ledger.rows] == [
        ("completed", 2, "u-1")
    ]


async def test_stream_chunks_and_usage_chunk() -> None:
    service, _ = _service(ScriptedBackend(["a", "b", "c"]))
    ctx = _ctx()
    run = await service.accept(
        ctx, _request(stream=True, stream_options={"include_usage": True}, n=2)
    )
    chunks = [chunk async for chunk in await service.stream(ctx, run)]
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "abcabc"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 6
    assert all(chunk["usage"] is None for chunk in chunks[:-1])


async def test_max_tokens_gives_length() -> None:
    service, _ = _service(ScriptedBackend(["a", "b", "c"]))
    ctx = _ctx()
    body = await service.complete(ctx, await service.accept(ctx, _request(max_completion_tokens=2)))
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == "ab"


async def test_closing_a_stream_records_a_cancelled_row() -> None:
    service, ledger = _service(ScriptedBackend(["a", "b", "c", "d"]))
    ctx = _ctx()
    stream = await service.stream(ctx, await service.accept(ctx, _request(stream=True)))
    taken = [await anext(stream), await anext(stream)]
    assert taken[1]["choices"][0]["delta"] == {"content": "a"}
    await aclose(stream)
    assert [(row.status, row.completion_tokens) for row in ledger.rows] == [("cancelled", 1)]


async def test_closing_an_unread_stream_still_records() -> None:
    service, ledger = _service(ScriptedBackend(["a"]))
    ctx = _ctx()
    stream = await service.stream(ctx, await service.accept(ctx, _request(stream=True)))
    await aclose(stream)
    assert [row.status for row in ledger.rows] == ["cancelled"]


async def test_failure_mid_stream_records_partial_usage() -> None:
    service, ledger = _service(Failing())
    ctx = _ctx()
    stream = await service.stream(ctx, await service.accept(ctx, _request(stream=True)))
    with pytest.raises(BackendError):
        async for _ in stream:
            pass
    assert [(row.status, row.completion_tokens, row.prompt_tokens) for row in ledger.rows] == [
        ("failed", 2, 3)
    ]


async def test_refused_prompt_writes_nothing() -> None:
    service, ledger = _service(ScriptedBackend(["a"], context_length=2))
    ctx = _ctx()
    with pytest.raises(ContextLengthExceeded):
        await service.stream(ctx, await service.accept(ctx, _request(stream=True)))
    assert ledger.rows == []


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"store": True}, "store"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        (
            {"stream": True, "stream_options": {"include_obfuscation": True}},
            "stream_options.include_obfuscation",
        ),
    ],
)
async def test_unsupported_parameters_are_named(fields: dict[str, Any], param: str) -> None:
    service, _ = _service(ScriptedBackend(["a"]))
    with pytest.raises(UnsupportedParameter) as caught:
        await service.accept(_ctx(), _request(**fields))
    assert caught.value.param == param


async def test_accepted_no_op_values() -> None:
    service, _ = _service(ScriptedBackend(["a"]))
    run = await service.accept(
        _ctx(), _request(response_format={"type": "text"}, store=False, service_tier="auto")
    )
    assert run.choices == 1


class Typed(ChatBackend):
    """Reports reasoning and a tool call as such, and its exact prompt count last."""

    tool_family = "typed"

    def __init__(self) -> None:
        self.capabilities = Capabilities(tools=True, json_schema=True, grammar=False)
        self.seen: list[GenerationRequest] = []

    def count_tokens(self, text: str) -> int:
        return 1

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        self.seen.append(request)
        yield Delta(prompt_tokens=1)
        yield Delta(reasoning="thinking", tokens=2)
        yield Delta(text='{"a"', tokens=1)
        yield Delta(calls=(CallPiece(0, name="get_weather", arguments='{"location": '),), tokens=1)
        yield Delta(calls=(CallPiece(0, arguments='"Paris"}'),), tokens=1)
        yield Delta(finish_reason="stop", prompt_tokens=7)


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


async def test_typed_calls_and_reasoning_reach_the_unary_body() -> None:
    backend = Typed()
    service, ledger = _service(backend)
    ctx = _ctx()
    request = _request(tools=TOOLS, tool_choice="required", response_format={"type": "json_object"})
    body = await service.complete(ctx, await service.accept(ctx, request))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["reasoning_content"] == "thinking"
    assert choice["message"]["content"] == '{"a"'  # typed text is content, never parsed
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["function"] == {"name": "get_weather", "arguments": '{"location": "Paris"}'}
    assert body["usage"]["prompt_tokens"] == 7
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2
    assert ledger.rows[0].prompt_tokens == 7
    (seen,) = backend.seen
    assert seen.constraint is None  # the backend cannot enforce grammars
    assert (seen.tool_mode, seen.response_format) == ("required", {"type": "json_object"})


async def test_typed_calls_stream_in_openai_delta_grammar() -> None:
    service, _ = _service(Typed())
    ctx = _ctx()
    chunks = await service.stream(ctx, await service.accept(ctx, _request(tools=TOOLS)))
    calls = [
        choice["delta"]["tool_calls"][0]
        async for chunk in chunks
        for choice in chunk["choices"]
        if "tool_calls" in choice["delta"]
    ]
    assert calls[0]["function"]["name"] == "get_weather"
    assert calls[0]["id"].startswith("call_")
    assert "id" not in calls[1] and "name" not in calls[1]["function"]
