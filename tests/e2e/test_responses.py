"""The Responses API through the real openai client and raw HTTP, against real
servers: the session's (Gemma and scripted models) and our own for restarts."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import BaseModel, Field, TypeAdapter

from tests.e2e.conftest import GEMMA, HERMES, SCRIPTED, THINKER, WEATHER_SCHEMA
from tests.e2e.server import SCRIPTED_CATALOG, Server
from tests.schemas import validate

TOOLS: Any = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current temperature for a location.",
        "parameters": WEATHER_SCHEMA,
        "strict": True,
    }
]
ASK = "What is the weather like in Paris today?"
LONG_TEXT: Any = {
    "format": {
        "type": "json_schema",
        "name": "long",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"story": {"type": "string", "pattern": "^[a-z ]{1000,}$"}},
            "required": ["story"],
            "additionalProperties": False,
        },
    }
}
"""An ASCII output format no reply completes in a few hundred tokens (no Gemma token
is longer than 31 bytes): under it a reply runs to max_output_tokens, whatever the
model would rather write (which differs between CPUs)."""
EVENT_SCHEMAS = {
    "response.created": "ResponseCreatedEvent",
    "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent",
    "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
}
STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ITEM: TypeAdapter[Any] = TypeAdapter(ResponseItem)


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post(server: Server, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    return httpx.post(
        server.base_url + "/v1/responses",
        json=body,
        headers=_headers(token or server.admin_token),
        timeout=120,
    )


def sse_events(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The events of one streamed response, checking OpenAI's framing:
    ``event: TYPE`` then ``data: JSON`` naming the same type; no ``[DONE]``."""
    with httpx.stream(
        "POST",
        server.base_url + "/v1/responses",
        json={**body, "stream": True},
        headers=_headers(server.admin_token),
        timeout=120,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode("utf-8")
    assert text.endswith("\n\n")
    events = []
    for frame in text[:-2].split("\n\n"):
        event_line, data_line = frame.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), frame
        event = json.loads(data_line[len("data: ") :])
        assert event["type"] == event_line[len("event: ") :]
        events.append(event)
    return events


def check_events(events: list[dict[str, Any]]) -> None:
    """Numbering, order, and both the client's types and OpenAI's schemas."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert [event["type"] for event in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed")
    for event in events:
        STREAM_EVENT.validate_python(event)
        validate(event, EVENT_SCHEMAS[event["type"]])
    opened: set[int] = set()
    added = 0
    for event in events:
        index = event.get("output_index")
        if event["type"] == "response.output_item.added":
            assert index == added
            added += 1
            opened.add(index)
        elif event["type"] == "response.output_item.done":
            opened.discard(index)
        elif index is not None:
            assert index in opened, event
    assert not opened


def rows(server: Server) -> int:
    with sqlite3.connect(server.data_dir / "portway.db") as db:
        count: int = db.execute("SELECT count(*) FROM responses").fetchone()[0]
    return count


def _shape(response: Response) -> list[Any]:
    """A response's output without its ids."""
    return [item.model_dump(exclude={"id"}) for item in response.output]


# ----------------------------------------------------------------- creating


def test_unary_scripted(server: Server, client: openai.OpenAI) -> None:
    reply = client.responses.create(model=SCRIPTED, input="Say hello.", metadata={"run": "1"})
    assert reply.id.startswith("resp_")
    assert reply.object == "response"
    assert reply.status == "completed"
    assert reply.output_text == "Hello from Portway."
    assert reply.model == SCRIPTED
    assert reply.metadata == {"run": "1"}
    message = reply.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    assert reply.usage is not None
    assert reply.usage.output_tokens == 4
    assert reply.usage.total_tokens == reply.usage.input_tokens + 4
    assert reply.usage.output_tokens_details.reasoning_tokens == 0
    raw = post(server, {"model": SCRIPTED, "input": "Say hello."})
    assert raw.status_code == 200
    validate(raw.json(), "Response")
    Response.model_validate(raw.json())


def test_stream_raw_events(server: Server) -> None:
    events = sse_events(server, {"model": SCRIPTED, "input": "Say hello."})
    check_events(events)
    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 4,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == "Hello from Portway."
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == text
    assert final["usage"]["output_tokens"] == 4
    assert events[0]["response"]["status"] == "in_progress"


def test_stream_helper_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model=SCRIPTED, input="Say hello.") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "Hello from Portway."
    stored = client.responses.retrieve(final.id)
    assert (stored.status, stored.output_text, stored.usage) == (
        "completed",
        final.output_text,
        final.usage,
    )


def test_stream_equals_unary_for_a_seed(client: openai.OpenAI) -> None:
    args: Any = {
        "model": GEMMA,
        "input": "Say hello.",
        "instructions": "You are terse.",
        "max_output_tokens": 40,
        "temperature": 0.9,
        "extra_body": {"seed": 7},
    }
    unary = client.responses.create(**args)
    with client.responses.stream(**args) as stream:
        ends = [
            event for event in stream if event.type in ("response.completed", "response.incomplete")
        ]
    final = ends[-1].response
    if final.status == "completed":
        assert stream.get_final_response().output_text == final.output_text
    assert final.id != unary.id
    assert final.output_text == unary.output_text
    assert _shape(final) == _shape(unary)
    assert final.usage == unary.usage
    assert final.status == unary.status


def test_incomplete_at_max_output_tokens(server: Server, client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model=GEMMA, input="Count to twenty.", max_output_tokens=3, text=LONG_TEXT
    )
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage is not None and reply.usage.output_tokens == 3
    events = sse_events(
        server,
        {"model": GEMMA, "input": "Count to twenty.", "max_output_tokens": 3, "text": LONG_TEXT},
    )
    check_events(events)
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["output"][0]["status"] == "incomplete"


def test_reasoning_items(server: Server, client: openai.OpenAI) -> None:
    reply = client.responses.create(model=THINKER, input=ASK)
    reasoning, message = reply.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert message.type == "message"
    assert [part.text for part in reasoning.content or []] == ["Two and two"]
    assert reply.output_text == "Four."
    assert reply.usage is not None
    assert reply.usage.output_tokens_details.reasoning_tokens >= 2
    events = sse_events(server, {"model": THINKER, "input": ASK})
    check_events(events)
    deltas = [e["delta"] for e in events if e["type"] == "response.reasoning_text.delta"]
    assert "".join(deltas) == "Two and two"


def test_logprobs(server: Server, client: openai.OpenAI) -> None:
    args: Any = {
        "model": GEMMA,
        "input": "Say hello.",
        "max_output_tokens": 5,
        "temperature": 0,
        "text": LONG_TEXT,
    }
    reply = client.responses.create(
        **args, include=["message.output_text.logprobs"], top_logprobs=2
    )
    part = reply.output[0].content[0]  # type: ignore[union-attr]
    assert part.logprobs is not None and len(part.logprobs) == 5
    assert "".join(item.token for item in part.logprobs) == part.text
    for item in part.logprobs:
        assert item.logprob <= 0 and len(item.top_logprobs) == 2
    events = sse_events(server, {**args, "top_logprobs": 1})
    check_events(events)
    streamed = [e["logprobs"] for e in events if e["type"] == "response.output_text.delta"]
    assert sum(len(found) for found in streamed) == 5
    assert client.responses.create(**args).output[0].content[0].logprobs == []  # type: ignore[union-attr]


# ------------------------------------------------------------ function calls


def test_function_call_round_trip_in_auto_mode(server: Server, client: openai.OpenAI) -> None:
    first = client.responses.create(model=HERMES, input=ASK, tools=TOOLS)
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.id is not None and call.id.startswith("fc_")
    assert call.call_id.startswith("call_")
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"location": "Paris"}
    assert first.output_text.strip() == "Let me check."
    validate(post(server, {"model": HERMES, "input": ASK, "tools": TOOLS}).json(), "Response")
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": '{"c": 21}'}
    second = client.responses.create(model=SCRIPTED, previous_response_id=first.id, input=[answer])
    assert second.status == "completed"
    assert second.previous_response_id == first.id
    items = client.responses.input_items.list(second.id).data
    assert [(item.type, getattr(item, "call_id", None)) for item in items] == [
        ("function_call_output", call.call_id)
    ]
    events = sse_events(server, {"model": HERMES, "input": ASK, "tools": TOOLS})
    check_events(events)
    fragments = [
        e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"
    ]
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0]["name"] == "get_weather"
    assert "".join(fragments) == done[0]["arguments"] == call.arguments


def test_stateless_loop_echoes_output_items(client: openai.OpenAI) -> None:
    first = client.responses.create(model=HERMES, input=ASK, tools=TOOLS, store=False)
    call = next(item for item in first.output if item.type == "function_call")
    history: Any = [{"role": "user", "content": ASK}, *first.output]
    answer = {"type": "function_call_output", "call_id": call.call_id, "output": "21C"}
    second = client.responses.create(model=THINKER, input=[*history, answer], store=False)
    assert second.output_text == "Four."
    again: Any = [*history, answer, *second.output, {"role": "user", "content": "Thanks."}]
    third = client.responses.create(model=SCRIPTED, input=again, store=False)
    assert third.status == "completed"


def test_forced_function_call_on_gemma(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=GEMMA,
        input=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=400,  # one call with bounded arguments: it cannot be cut
        extra_body={"seed": 3},
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER_SCHEMA)
    second = client.responses.create(
        model=GEMMA,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "21C"}],
        tools=TOOLS,
        max_output_tokens=24,
    )
    assert second.status in ("completed", "incomplete")
    assert second.usage is not None and second.usage.input_tokens > first.usage.input_tokens  # type: ignore[union-attr]


class Weather(BaseModel):
    city: str = Field(max_length=24)
    celsius: int = Field(ge=-60, le=60)


def test_json_schema_output(client: openai.OpenAI) -> None:
    schema = Weather.model_json_schema() | {"additionalProperties": False}
    reply = client.responses.create(
        model=GEMMA,
        input="Give the weather in Rome as JSON.",
        text={
            "format": {"type": "json_schema", "name": "weather", "schema": schema, "strict": True}
        },
        max_output_tokens=240,  # the schema bounds the JSON to fewer tokens
        extra_body={"seed": 1},
    )
    assert reply.status == "completed", reply.output_text
    jsonschema.validate(json.loads(reply.output_text), schema)
    assert reply.text is not None and reply.text.format is not None
    assert reply.text.format.type == "json_schema"
    parsed = client.responses.parse(
        model=GEMMA,
        input="Give the weather in Oslo as JSON.",
        text_format=Weather,
        max_output_tokens=240,  # the schema bounds the JSON to fewer tokens
        extra_body={"seed": 1},
    )
    assert isinstance(parsed.output_parsed, Weather)


# ------------------------------------------------------------------ stored


def test_retrieve_paginate_and_delete(server: Server, client: openai.OpenAI) -> None:
    turns = [{"role": "user", "content": f"Message {n}."} for n in range(5)]
    created = client.responses.create(model=SCRIPTED, input=turns, instructions="Be kind.")
    fetched = client.responses.retrieve(created.id)
    assert fetched == created
    raw = httpx.get(
        f"{server.base_url}/v1/responses/{created.id}", headers=_headers(server.admin_token)
    )
    validate(raw.json(), "Response")
    page = client.responses.input_items.list(created.id, limit=2, order="asc")
    assert page.has_more and len(page.data) == 2
    texts = [item.content[0].text for item in page]  # type: ignore[union-attr]  # every page
    assert texts == [f"Message {n}." for n in range(5)]
    ascending = client.responses.input_items.list(created.id, order="asc", limit=100)
    newest = client.responses.input_items.list(created.id)  # default: desc, 20
    assert [item.id for item in newest.data] == [item.id for item in ascending.data][::-1]
    raw_page = httpx.get(
        f"{server.base_url}/v1/responses/{created.id}/input_items",
        params={"limit": 3, "order": "desc"},
        headers=_headers(server.admin_token),
    ).json()
    validate(raw_page, "ResponseItemList")
    for item in raw_page["data"]:
        ITEM.validate_python(item)
    assert raw_page["first_id"] == raw_page["data"][0]["id"]
    assert raw_page["last_id"] == raw_page["data"][-1]["id"]
    deleted = httpx.delete(
        f"{server.base_url}/v1/responses/{created.id}", headers=_headers(server.admin_token)
    )
    assert deleted.json() == {"id": created.id, "object": "response.deleted", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(created.id)


def test_a_closed_stream_is_stored_as_cancelled(server: Server, client: openai.OpenAI) -> None:
    body = {
        "model": GEMMA,
        "input": "Count to a thousand.",
        "max_output_tokens": 400,
        "text": LONG_TEXT,
    }
    with httpx.stream(
        "POST",
        server.base_url + "/v1/responses",
        json={**body, "stream": True},
        headers=_headers(server.admin_token),
        timeout=120,
    ) as response:
        lines = response.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
        next(line for line in lines if "output_text.delta" in line)
    response_id = created["response"]["id"]
    for _ in range(600):  # the server stores it once it has seen the disconnect
        try:
            stored = client.responses.retrieve(response_id)
            break
        except openai.NotFoundError:
            time.sleep(0.1)
    assert stored.status == "cancelled"
    assert stored.usage is not None and 0 < stored.usage.output_tokens < 400


def test_store_false_is_not_kept(client: openai.OpenAI) -> None:
    reply = client.responses.create(model=SCRIPTED, input="hi", store=False)
    assert reply.output_text == "Hello from Portway."
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=SCRIPTED, input="again", previous_response_id=reply.id)


def test_owner_isolation(server: Server, alice_token: str, bob_token: str) -> None:
    def as_user(token: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)

    alice, bob = as_user(alice_token), as_user(bob_token)
    mine = alice.responses.create(model=SCRIPTED, input="secret plans")
    assert alice.responses.retrieve(mine.id).id == mine.id
    for attempt in (
        lambda: bob.responses.retrieve(mine.id),
        lambda: bob.responses.delete(mine.id),
        lambda: bob.responses.input_items.list(mine.id),
    ):
        with pytest.raises(openai.NotFoundError) as caught:
            attempt()
        assert caught.value.body["param"] == "response_id"  # type: ignore[index]
        assert caught.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as chained:
        bob.responses.create(model=SCRIPTED, input="and?", previous_response_id=mine.id)
    assert chained.value.body["param"] == "previous_response_id"  # type: ignore[index]
    follow = alice.responses.create(model=SCRIPTED, input="and?", previous_response_id=mine.id)
    assert follow.status == "completed"


def test_chain_survives_a_restart(fresh_dir: Path) -> None:
    catalog = "default_model = false\n" + SCRIPTED_CATALOG
    server = Server(fresh_dir, catalog=catalog).start()
    try:
        client = openai.OpenAI(
            base_url=server.base_url + "/v1", api_key=server.admin_token, max_retries=0
        )
        first = client.responses.create(model=SCRIPTED, input="My name is Ada.")
        second = client.responses.create(
            model=SCRIPTED, input="What is my name?", previous_response_id=first.id
        )
        assert server.stop() == 0
        server.start()
        client = openai.OpenAI(
            base_url=server.base_url + "/v1", api_key=server.admin_token, max_retries=0
        )
        third = client.responses.create(
            model=SCRIPTED, input="Again?", previous_response_id=second.id
        )
        # The scripted model counts words + 3 per message: the whole chain is in the prompt.
        assert third.usage is not None
        assert third.usage.input_tokens == (4 + 3) + (3 + 3) + (4 + 3) + (3 + 3) + (1 + 3)
        assert client.responses.retrieve(first.id).output_text == "Hello from Portway."
    finally:
        server.stop()


# --------------------------------------------------------------- bad input


def _error(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    return error


BAD: list[tuple[str, dict[str, Any], int, str | None]] = [
    ("unknown previous", {"previous_response_id": "resp_nope"}, 404, "previous_response_id"),
    (
        "unknown call_id",
        {"input": [{"type": "function_call_output", "call_id": "call_zz", "output": "1"}]},
        400,
        "input[0].call_id",
    ),
    (
        "message without role",
        {"input": [{"type": "message", "content": "x"}]},
        400,
        "input[0].role",
    ),
    ("item not an object", {"input": [5]}, 400, "input[0]"),
    ("item reference", {"input": [{"type": "item_reference", "id": "msg_1"}]}, 400, "input[0]"),
    (
        "image part",
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "u"}]}]},
        400,
        "input[0].content[0]",
    ),
    ("unknown field", {"frobnicate": True}, 400, "frobnicate"),
    ("hosted tool", {"tools": [{"type": "web_search"}]}, 400, "tools[0]"),
    ("background", {"background": True}, 400, "background"),
    ("bad truncation", {"truncation": "sometimes"}, 400, "truncation"),
    ("too much metadata", {"metadata": {str(n): "v" for n in range(17)}}, 400, "metadata"),
    ("bad format", {"text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "text.format"),
    ("reasoning effort", {"reasoning": {"effort": "high"}}, 400, "reasoning.effort"),
]


@pytest.mark.parametrize(("name", "extra", "status", "param"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_and_not_stored(
    server: Server, name: str, extra: dict[str, Any], status: int, param: str | None
) -> None:
    before = rows(server)
    _error(post(server, {"model": SCRIPTED, "input": "hi", **extra}), status, param)
    assert rows(server) == before


def test_foreign_previous_response(server: Server, alice_token: str, bob_token: str) -> None:
    theirs = post(server, {"model": SCRIPTED, "input": "hi"}, alice_token).json()
    before = rows(server)
    answer = post(
        server, {"model": SCRIPTED, "input": "hi", "previous_response_id": theirs["id"]}, bob_token
    )
    _error(answer, 404, "previous_response_id")
    assert rows(server) == before


def test_a_too_long_chain_is_refused(server: Server) -> None:
    previous = None
    for _ in range(100):
        body = {"model": SCRIPTED, "input": "hi", "previous_response_id": previous}
        response = post(server, body)
        assert response.status_code == 200, response.text
        previous = response.json()["id"]
    error = _error(
        post(server, {"model": SCRIPTED, "input": "hi", "previous_response_id": previous}),
        400,
        "previous_response_id",
    )
    assert error["code"] == "conversation_too_long"


def test_query_parameters(server: Server, client: openai.OpenAI) -> None:
    created = client.responses.create(model=SCRIPTED, input="hi")
    base = f"{server.base_url}/v1/responses/{created.id}"
    headers = _headers(server.admin_token)
    assert httpx.get(base + "/input_items", params={"limit": 0}, headers=headers).status_code == 400
    _error(httpx.get(base, params={"stream": "true"}, headers=headers), 400, "stream")
    _error(httpx.get(base, params={"colour": "red"}, headers=headers), 400, "colour")
    _error(
        httpx.get(base + "/input_items", params={"after": "msg_x"}, headers=headers), 400, "after"
    )
    _error(httpx.post(base + "/cancel", headers=headers), 400, "response_id")
    _error(
        httpx.get(base, params={"include[]": "reasoning.encrypted_content"}, headers=headers),
        400,
        "include",
    )
