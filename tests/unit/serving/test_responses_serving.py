"""The Responses serving layer on scripted backends and a real SQLite store:
events, storing, chains, truncation, refusals."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from portway.aio import aclose
from portway.backends.base import ChatBackend, Delta, GenerationRequest
from portway.backends.scripted import ScriptedBackend
from portway.errors import (
    BackendError,
    ContextLengthExceeded,
    InvalidRequest,
    NotFound,
    PortwayError,
    UnsupportedParameter,
)
from portway.protocol.responses import CreateResponse
from portway.serving import responses as serving
from portway.serving.chat import ChatService
from portway.serving.context import RequestContext
from portway.serving.responses import ResponsesService
from portway.serving.responses_events import EventWriter
from portway.store import Store, User
from tests.unit.doubles import Ledger, context, registry

MODEL = "acme/chat/models/bot"


class Recording(ScriptedBackend):
    """A scripted backend that keeps the requests it was given."""

    def __init__(self, script: list[str], **options: Any) -> None:
        super().__init__(script, **options)
        self.requests: list[GenerationRequest] = []

    def generate(self, request: GenerationRequest) -> AsyncGenerator[Delta, None]:
        self.requests.append(request)
        return super().generate(request)


class Failing(ChatBackend):
    def count_tokens(self, text: str) -> int:
        return 1

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        yield Delta(prompt_tokens=3)
        yield Delta(text="a", tokens=1)
        raise BackendError("the model fell over")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'portway.db'}")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def user(store: Store) -> User:
    return await store.ensure_user("acme")


def _ctx(user: User) -> RequestContext:
    return context("responses", user)


def _service(store: Store, backend: ChatBackend) -> ResponsesService:
    chat = ChatService(registry((MODEL, backend)), Ledger())  # type: ignore[arg-type]
    return ResponsesService(chat, store)


def _body(**fields: Any) -> CreateResponse:
    return CreateResponse.model_validate({"model": MODEL, "input": "hi there", **fields})


async def _events(service: ResponsesService, user: User, **fields: Any) -> list[dict[str, Any]]:
    run = await service.create(_ctx(user), _body(stream=True, **fields))
    return [event async for event in service.events(run)]


async def _unary(service: ResponsesService, user: User, **fields: Any) -> dict[str, Any]:
    return await service.complete(await service.create(_ctx(user), _body(**fields)))


async def test_stream_events_in_order(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["Hel", "lo"]))
    events = await _events(service, user)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["output_tokens"] == 2
    assert "usage" not in events[0]["response"]
    stored = await store.get_response(final["id"], user.id)
    assert stored is not None
    assert stored.body == final
    assert [item["role"] for item in stored.input_items] == ["user"]
    assert stored.input_items[0]["id"].startswith("msg_")


async def test_unary_is_the_last_event_and_is_stored(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["Hel", "lo"]))
    body = await _unary(service, user, metadata={"k": "v"}, instructions="Be brief.")
    assert body["id"].startswith("resp_")
    assert body["status"] == "completed"
    assert body["metadata"] == {"k": "v"}
    assert body["instructions"] == "Be brief."
    stored = await store.get_response(body["id"], user.id)
    assert stored is not None and stored.body == body


async def test_max_output_tokens_gives_incomplete(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["a", "b", "c"]))
    body = await _unary(service, user, max_output_tokens=2)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete"
    assert body["completed_at"] is None


async def test_failure_is_stored_as_failed(store: Store, user: User) -> None:
    service = _service(store, Failing())
    events = await _events(service, user)
    failed = events[-1]
    assert failed["type"] == "response.failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "the model fell over"}
    assert failed["response"]["output"][0]["status"] == "incomplete"
    stored = await store.get_response(failed["response"]["id"], user.id)
    assert stored is not None and stored.status == "failed"
    run = await service.create(_ctx(user), _body())
    with pytest.raises(BackendError):
        await service.complete(run)
    stored = await store.get_response(run.id, user.id)
    assert stored is not None and stored.status == "failed"


async def test_closing_the_stream_stores_cancelled(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["a", "b", "c", "d"]))
    run = await service.create(_ctx(user), _body(stream=True))
    events = service.events(run)
    for _ in range(5):
        await anext(events)
    await aclose(events)
    stored = await store.get_response(run.id, user.id)
    assert stored is not None
    assert stored.status == "cancelled"
    assert stored.body["output"][0]["content"][0]["text"] == "a"


async def test_store_false_stores_nothing(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["a"]))
    body = await _unary(service, user, store=False)
    assert body["store"] is False
    assert await store.get_response(body["id"], user.id) is None


async def test_refused_prompt_stores_nothing(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["a"], context_length=2))
    with pytest.raises(ContextLengthExceeded) as caught:
        await service.create(_ctx(user), _body())
    assert caught.value.param == "input"


async def test_reasoning_items(store: Store, user: User) -> None:
    backend = ScriptedBackend(["<think>", "Two", " and two", "</think>", "\n\n", "Four."])
    backend.reasons = True
    events = await _events(_service(store, backend), user)
    types = [event["type"] for event in events]
    assert types.index("response.reasoning_text.delta") < types.index("response.output_text.delta")
    output = events[-1]["response"]["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[0]["content"] == [{"type": "reasoning_text", "text": "Two and two"}]
    assert output[0]["id"].startswith("rs_")
    assert output[1]["content"][0]["text"] == "Four."


async def test_chain_rebuilds_the_conversation(store: Store, user: User) -> None:
    backend = Recording(["Hello."])
    service = _service(store, backend)
    first = await _unary(service, user, instructions="Old rules.")
    call = {"type": "function_call", "call_id": "call_9", "name": "f", "arguments": "{}"}
    second = await _unary(
        service,
        user,
        previous_response_id=first["id"],
        input=[{"role": "user", "content": "x"}, call],
    )
    await _unary(
        service,
        user,
        previous_response_id=second["id"],
        instructions="New rules.",
        input=[{"type": "function_call_output", "call_id": "call_9", "output": "42"}],
    )
    messages = backend.requests[-1].messages
    assert [(m.role, m.content) for m in messages] == [
        ("system", "New rules."),
        ("user", "hi there"),
        ("assistant", "Hello."),
        ("user", "x"),
        ("assistant", ""),  # the function call given as input
        ("assistant", "Hello."),
        ("tool", "42"),
    ]
    assert [(c.id, c.name) for c in messages[4].tool_calls] == [("call_9", "f")]
    assert messages[6].tool_call_id == "call_9"


async def test_truncation_auto_drops_the_oldest_turns(store: Store, user: User) -> None:
    backend = Recording(["ok"], context_length=45)
    service = _service(store, backend)
    long = " ".join(["word"] * 12)
    previous = None
    for _ in range(2):  # 15 + 4 tokens a turn
        body = await _unary(service, user, input=long, previous_response_id=previous)
        previous = body["id"]
    with pytest.raises(ContextLengthExceeded):
        await _unary(service, user, input=long, previous_response_id=previous)
    body = await _unary(service, user, input=long, previous_response_id=previous, truncation="auto")
    assert body["truncation"] == "auto"
    assert body["usage"]["input_tokens"] == 34
    assert [m.role for m in backend.requests[-1].messages][-1] == "user"


async def test_chain_errors(store: Store, user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    service = _service(store, ScriptedBackend(["ok"]))
    with pytest.raises(NotFound) as missing:
        await _unary(service, user, previous_response_id="resp_nope")
    assert missing.value.param == "previous_response_id"
    other = await store.ensure_user("other")
    theirs = await _unary(service, other)
    with pytest.raises(NotFound):
        await _unary(service, user, previous_response_id=theirs["id"])
    monkeypatch.setattr(serving, "MAX_CHAIN", 2)
    first = await _unary(service, user)
    second = await _unary(service, user, previous_response_id=first["id"])
    with pytest.raises(InvalidRequest) as long:
        await _unary(service, user, previous_response_id=second["id"])
    assert long.value.code == "conversation_too_long"
    assert await store.delete_response(first["id"], user.id)
    with pytest.raises(NotFound, match="no longer exists"):
        await _unary(service, user, previous_response_id=second["id"])


async def test_bad_items(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["ok"]))
    orphan = [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]
    first = await _unary(service, user)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"input": orphan}, "input[0].call_id"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0]"),
        (
            {
                "previous_response_id": first["id"],
                "input": [{"role": "user", "content": "a", "id": first["output"][0]["id"]}],
            },
            "input[0]",
        ),
        ({"input": []}, "input"),
    ]
    for fields, param in cases:
        with pytest.raises(InvalidRequest) as caught:
            await _unary(service, user, **fields)
        assert caught.value.param == param, fields


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"background": True}, "background"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"reasoning": {"effort": "low"}}, "reasoning.effort"),
        ({"reasoning": {"summary": "detailed"}}, "reasoning.summary"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
        ({"service_tier": "flex"}, "service_tier"),
    ],
)
async def test_refused_parameters_are_named(
    store: Store, user: User, fields: dict[str, Any], param: str
) -> None:
    service = _service(store, ScriptedBackend(["ok"]))
    with pytest.raises(UnsupportedParameter) as caught:
        await service.create(_ctx(user), _body(**fields))
    assert caught.value.param == param
    assert f"'{param}'" in caught.value.message


async def test_tool_choice_without_tools_is_named(store: Store, user: User) -> None:
    service = _service(store, ScriptedBackend(["ok"]))
    with pytest.raises(PortwayError) as caught:
        await service.create(_ctx(user), _body(tool_choice="required"))
    assert caught.value.param == "tool_choice"


def _function(name: str) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}


async def test_tool_choices_reach_chat(store: Store, user: User) -> None:
    backend = Recording(["ok"])
    service = _service(store, backend)
    tools = [_function("f"), _function("g")]
    allowed = {
        "type": "allowed_tools",
        "mode": "auto",
        "tools": [{"type": "function", "name": "g"}],
    }
    body = await _unary(service, user, tools=tools, tool_choice=allowed)
    assert [tool.name for tool in backend.requests[-1].tools] == ["g"]
    assert body["tool_choice"] == allowed
    assert [tool["name"] for tool in body["tools"]] == ["f", "g"]
    await _unary(service, user, tools=tools, tool_choice="none")
    assert backend.requests[-1].tools == ()
    unknown = {**allowed, "tools": [{"type": "function", "name": "h"}]}
    with pytest.raises(InvalidRequest) as caught:
        await _unary(service, user, tools=tools, tool_choice=unknown)
    assert caught.value.param == "tool_choice.tools"
    bad_schema = [{**_function("f"), "parameters": {"type": "nonsense"}}]
    with pytest.raises(InvalidRequest) as schema:
        await _unary(service, user, tools=bad_schema)
    assert schema.value.param == "tools[0].parameters"


def test_leading_whitespace_is_dropped_before_a_call() -> None:
    writer = EventWriter()
    writer.feed({"delta": {"content": "\n"}})
    call = {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    events = writer.feed({"delta": {"tool_calls": [call]}})
    assert events[0]["item"]["type"] == "function_call"
    writer.finish("completed")
    assert [item.type for item in writer.output] == ["function_call"]
    assert writer.output[0].model_dump()["arguments"] == "{}"


def test_whitespace_only_text_is_kept() -> None:
    writer = EventWriter()
    assert writer.feed({"delta": {"content": " "}}) == []
    events = writer.finish("completed")
    assert [event["type"] for event in events][:2] == [
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert writer.output[0].model_dump()["content"][0]["text"] == " "


def test_created_at_is_recent() -> None:
    assert datetime.now(UTC).year >= 2025
