"""Tool calling, structured outputs and reasoning through the real openai client.

What the Gemma model writes differs between CPUs, so these tests assert what the
platform guarantees for any output: a call or an answer that validates when the
reply finished, and exactly ``max_tokens`` used when it was cut (``length``), with
constrained text then a prefix its grammar allows.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from portway.constrain import json_object_grammar, json_schema_grammar
from tests.e2e.conftest import GEMMA, HERMES, THINKER, WEATHER_SCHEMA
from tests.e2e.server import Server
from tests.e2e.sse import chunks, raw_events
from tests.grammars import follows
from tests.schemas import validate

TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current temperature for a location.",
            "parameters": WEATHER_SCHEMA,
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a timezone.",
            "parameters": {
                "type": "object",
                "properties": {"timezone": {"type": "string"}},
                "required": ["timezone"],
            },
        },
    },
]
ASK: Any = [{"role": "user", "content": "What is the weather like in Paris today?"}]
NAMED: Any = {"type": "function", "function": {"name": "get_weather"}}


def _cut(reply: Any, max_tokens: int) -> bool:
    """Whether ``max_tokens`` cut the reply; if so, it used exactly that many."""
    if reply.choices[0].finish_reason != "length":
        return False
    assert reply.usage is not None and reply.usage.completion_tokens == max_tokens
    return True


def _check_call(call: Any, name: str | None = None) -> dict[str, Any]:
    assert call.id.startswith("call_") and call.type == "function"
    if name:
        assert call.function.name == name
    arguments: dict[str, Any] = json.loads(call.function.arguments)
    schema = next(
        t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.function.name
    )
    jsonschema.validate(arguments, schema)
    return arguments


@pytest.mark.parametrize("choice", ["required", NAMED])
def test_forced_tool_call_unary(client: openai.OpenAI, choice: Any) -> None:
    reply = client.chat.completions.create(
        model=GEMMA, messages=ASK, tools=TOOLS, tool_choice=choice, seed=3, max_tokens=80
    )
    validate(reply.model_dump(mode="json", exclude_unset=True), "CreateChatCompletionResponse")
    if _cut(reply, 80):
        return
    choice_out = reply.choices[0]
    assert choice_out.finish_reason == "tool_calls"
    assert choice_out.message.content is None
    calls = choice_out.message.tool_calls or []
    assert len(calls) >= 1
    for call in calls:
        _check_call(call, "get_weather" if choice == NAMED else None)


def test_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=GEMMA,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        seed=4,
        max_tokens=80,
    )
    if not _cut(reply, 80):
        assert len(reply.choices[0].message.tool_calls or []) == 1


def test_tool_choice_none_gives_no_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=GEMMA, messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=12
    )
    assert not reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_streamed_calls_equal_unary_for_a_seed(client: openai.OpenAI, server: Server) -> None:
    args: Any = {
        "model": GEMMA,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "required",
        "seed": 9,
        "max_tokens": 80,
    }
    unary_reply = client.chat.completions.create(**args)
    unary = unary_reply.choices[0].message.tool_calls or []
    parsed = chunks(raw_events(server.base_url, server.admin_token, {**args, "stream": True}))
    if _cut(unary_reply, 80):  # the same seed gives the same tokens, streamed or not
        assert parsed[-1]["choices"][0]["finish_reason"] == "length"
        return
    seen: dict[int, dict[str, Any]] = {}
    for chunk in parsed:
        validate(chunk, "CreateChatCompletionStreamResponse")
        for call in chunk["choices"][0]["delta"].get("tool_calls", []) if chunk["choices"] else []:
            if call["index"] not in seen:
                assert call["id"].startswith("call_") and call["type"] == "function"
                assert call["function"]["name"]
                seen[call["index"]] = {"name": call["function"]["name"], "arguments": ""}
            else:
                assert set(call) == {"index", "function"}
                assert set(call["function"]) == {"arguments"}
            seen[call["index"]]["arguments"] += call["function"].get("arguments", "")
    assert parsed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    streamed = [seen[index] for index in sorted(seen)]
    assert streamed == [{"name": c.function.name, "arguments": c.function.arguments} for c in unary]
    with client.chat.completions.stream(**args) as stream:
        final = stream.get_final_completion()
    helper_calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in helper_calls] == [
        (c.function.name, c.function.arguments) for c in unary
    ]


def test_auto_mode_parses_the_model_family_format(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=HERMES, messages=ASK, tools=TOOLS)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert (message.content or "").strip() == "Let me check."
    calls = message.tool_calls or []
    assert len(calls) == 1 and _check_call(calls[0], "get_weather") == {"location": "Paris"}
    stream = client.chat.completions.create(model=HERMES, messages=ASK, tools=TOOLS, stream=True)
    arguments = "".join(
        call.function.arguments or ""
        for chunk in stream
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function
    )
    assert arguments == calls[0].function.arguments


def test_without_tools_the_same_text_is_content(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=HERMES, messages=ASK)
    assert "<tool_call>" in (reply.choices[0].message.content or "")
    assert not reply.choices[0].message.tool_calls


def test_reasoning_content_is_split(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=THINKER, messages=ASK)
    message = reply.choices[0].message
    assert message.content == "Four."
    assert message.model_extra and message.model_extra["reasoning_content"] == "Two and two"
    assert reply.usage is not None and reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens >= 2
    stream = client.chat.completions.create(model=THINKER, messages=ASK, stream=True)
    reasoning, content = "", ""
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            content += delta.content or ""
    assert (reasoning, content) == ("Two and two", "Four.")


class Weather(BaseModel):
    city: str = Field(max_length=16)
    celsius: int = Field(ge=-50, le=60)
    sunny: bool


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=GEMMA,
        messages=[{"role": "user", "content": "Give the weather in Rome as JSON."}],
        response_format=Weather,
        seed=1,
        max_tokens=200,  # the schema bounds the JSON to fewer tokens: it cannot be cut
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Weather)


def test_json_object(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=GEMMA,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        seed=2,
    )
    content = reply.choices[0].message.content or ""
    assert follows(json_object_grammar(), content, reply.choices[0].finish_reason), content
    if not _cut(reply, 60):
        assert isinstance(json.loads(content), dict)


def test_tools_and_response_format_together(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=GEMMA,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        response_format={"type": "json_object"},
        max_tokens=80,
    )
    assert reply.choices[0].message.tool_calls or _cut(reply, 80)


def test_reasoning_effort_refused_where_it_cannot_be_honoured(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=GEMMA, messages=ASK, reasoning_effort="low")
    assert caught.value.param == "reasoning_effort"  # type: ignore[attr-defined]


def _tool(name: str, parameters: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


BAD: list[tuple[str, dict[str, Any], str]] = [
    (
        "not json schema",
        {"tools": [_tool("f", {"type": "nonsense"})]},
        "tools[0].function.parameters",
    ),
    ("duplicate names", {"tools": [_tool("f", {}), _tool("f", {})]}, "tools[1].function.name"),
    (
        "named not among tools",
        {"tools": [_tool("f", {})], "tool_choice": {"type": "function", "function": {"name": "g"}}},
        "tool_choice",
    ),
    ("choice without tools", {"tool_choice": "required"}, "tool_choice"),
    (
        "bad response schema",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": 5}},
            }
        },
        "response_format.json_schema.schema",
    ),
    ("bad tool name", {"tools": [_tool("has space", {})]}, "tools[0].function.name"),
]


@pytest.mark.parametrize(("name", "extra", "param"), BAD, ids=[case[0] for case in BAD])
def test_bad_tool_input(server: Server, name: str, extra: dict[str, Any], param: str) -> None:
    body = {"model": GEMMA, "messages": ASK, "max_tokens": 4, **extra}
    response = httpx.post(
        server.base_url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=60,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_enormous_and_recursive_schemas_are_bounded(server: Server) -> None:
    huge = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string"} for i in range(5000)},
        "required": [f"p{i}" for i in range(5000)],
    }
    recursive = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/node"}},
                "required": ["next"],
            }
        },
        "$ref": "#/$defs/node",
    }
    for schema in (huge, recursive):
        body = {
            "model": GEMMA,
            "messages": ASK,
            "max_tokens": 8,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            },
        }
        response = httpx.post(
            server.base_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {server.admin_token}"},
            timeout=120,
        )
        assert response.status_code in (200, 400), response.text
    assert httpx.get(server.base_url + "/health").status_code == 200


def _property_schemas() -> Any:
    from hypothesis import strategies as st

    leaf = st.one_of(
        st.just({"type": "string", "maxLength": 12}),
        st.just({"type": "integer", "minimum": 0, "maximum": 999}),
        st.just({"type": "boolean"}),
        st.lists(
            st.sampled_from(["red", "green", "blue", "cyan"]), min_size=1, max_size=3, unique=True
        ).map(lambda values: {"enum": values}),
        st.just(
            {
                "type": "array",
                "items": {"type": "integer", "maximum": 99, "minimum": 0},
                "maxItems": 3,
            }
        ),
    )
    names = st.text("abcdefghij", min_size=1, max_size=6)

    def obj(props: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": props,
            "required": sorted(props),
            "additionalProperties": False,
        }

    inner = st.dictionaries(names, leaf, min_size=1, max_size=2).map(obj)
    return st.dictionaries(names, st.one_of(leaf, inner), min_size=1, max_size=3).map(obj)


def test_random_schemas_give_valid_json(client: openai.OpenAI) -> None:
    from hypothesis import HealthCheck, given, settings

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_property_schemas())
    def check(schema: dict[str, Any]) -> None:
        reply = client.chat.completions.create(
            model=GEMMA,
            messages=[{"role": "user", "content": "Fill in the JSON."}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "random", "schema": schema, "strict": True},
            },
            max_tokens=160,
            seed=0,
        )
        choice, content = reply.choices[0], reply.choices[0].message.content or ""
        assert follows(json_schema_grammar(schema), content, choice.finish_reason), content
        if not _cut(reply, 160):
            jsonschema.validate(json.loads(content), schema)

    check()


def test_auto_tools_with_a_json_schema_answer(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 20}},
        "required": ["answer"],
    }
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(
            model=GEMMA,
            messages=ASK,
            tools=TOOLS,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema},
            },
            max_tokens=80,
            seed=seed,
        )
        message = reply.choices[0].message
        if _cut(reply, 80):  # e.g. a long call's arguments: the tools' strings are unbounded
            continue
        if message.tool_calls:
            assert reply.choices[0].finish_reason == "tool_calls"
            for call in message.tool_calls:
                _check_call(call)
        else:
            assert reply.choices[0].finish_reason == "stop"
            jsonschema.validate(json.loads(message.content or ""), schema)
