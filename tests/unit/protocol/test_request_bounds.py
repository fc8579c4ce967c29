"""Bounds on request bodies: schemas, tool lists, stop sequences, logit_bias and
non-finite numbers are refused with a 400 naming the field, before any work; tool
schemas are meta-validated off the event loop."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from portway.api.deps import parse_body
from portway.backends.scripted import ScriptedBackend
from portway.constrain import schema as constrain_schema
from portway.errors import InvalidRequest
from portway.protocol.bounds import (
    MAX_LOGIT_BIAS,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    MAX_STOP_CHARS,
    MAX_TOOLS,
    MAX_TOOLS_BYTES,
    depth,
    size_at_least,
)
from portway.protocol.chat import ChatCompletionRequest
from portway.protocol.responses import CreateResponse
from portway.serving.chat import ChatService
from tests.unit.doubles import context, registry

MODEL = "acme/chat/models/bot"
HELLO = [{"role": "user", "content": "hi"}]


def nested(levels: int) -> dict[str, Any]:
    """A schema of arrays of arrays... whose JSON nests ``levels`` objects deep."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels - 1):
        schema = {"type": "array", "items": schema}
    return schema


def wide(properties: int, prefix: str = "p") -> dict[str, Any]:
    """An object schema of many string properties (about 60 bytes each)."""
    props = {f"{prefix}{i}": {"type": "string", "description": "d" * 20} for i in range(properties)}
    return {"type": "object", "properties": props}


def chat_tool(parameters: Any, name: str = "f") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def responses_tool(parameters: Any, name: str = "f") -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": parameters}


class _Body:
    """The part of a request ``parse_body`` reads."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    async def body(self) -> bytes:
        return self.raw


async def refusal(model: type[BaseModel], body: dict[str, Any] | bytes) -> InvalidRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidRequest) as caught:
        await parse_body(_Body(raw), model)  # type: ignore[arg-type]
    assert caught.value.status == 400
    return caught.value


# ------------------------------------------------------------------ measuring


def test_depth_is_measured_without_recursion() -> None:
    value: Any = []
    for _ in range(100_000):  # far deeper than any recursion limit
        value = [value]
    assert depth(value, MAX_SCHEMA_DEPTH) == MAX_SCHEMA_DEPTH + 1
    assert depth(nested(MAX_SCHEMA_DEPTH), 1000) == MAX_SCHEMA_DEPTH


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(json_values)
def test_size_at_least_never_overestimates(value: Any) -> None:
    exact = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    assert size_at_least(value, 10**9) <= exact


def test_size_at_least_stops_at_its_budget() -> None:
    assert size_at_least(["x"] * 1_000_000, 100) > 100
    assert size_at_least([["x"] * 60] * 1_000_000, 100) > 100


# ------------------------------------------------------------------ chat completions

CHAT_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("deep parameters", {"tools": [chat_tool(nested(190))]}, "tools[0].function.parameters"),
    (
        "parameters one level too deep",
        {"tools": [chat_tool(nested(MAX_SCHEMA_DEPTH + 1))]},
        "tools[0].function.parameters",
    ),
    (
        "large parameters",
        {"tools": [chat_tool({}), chat_tool(wide(1500), "g")]},
        "tools[1].function.parameters",
    ),
    (
        "large tools together",
        {"tools": [chat_tool(wide(1000, f"t{n}_"), f"f{n}") for n in range(MAX_TOOLS)]},
        "tools",
    ),
    ("too many tools", {"tools": [chat_tool({}, f"f{n}") for n in range(MAX_TOOLS + 1)]}, "tools"),
    (
        "NaN in parameters",
        {"tools": [chat_tool({"maximum": float("nan")})]},
        "tools[0].function.parameters",
    ),
    (
        "deep response format",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": nested(MAX_SCHEMA_DEPTH + 1)},
            }
        },
        "response_format.json_schema.schema",
    ),
    ("long stop", {"stop": "x" * 1_000_000}, "stop"),
    ("long stop in a list", {"stop": ["a", "x" * (MAX_STOP_CHARS + 1)]}, "stop"),
    ("five stops", {"stop": list("abcde")}, "stop"),
    ("large logit_bias", {"logit_bias": {str(n): 1 for n in range(10_000)}}, "logit_bias"),
    ("logit_bias out of range", {"logit_bias": {"1": 101}}, "logit_bias"),
    ("NaN temperature", {"temperature": float("nan")}, "temperature"),
    ("infinite penalty", {"presence_penalty": float("-inf")}, "presence_penalty"),
]


@pytest.mark.parametrize(("name", "fields", "param"), CHAT_CASES, ids=[c[0] for c in CHAT_CASES])
async def test_chat_bounds_name_the_field(name: str, fields: dict[str, Any], param: str) -> None:
    error = await refusal(ChatCompletionRequest, {"model": MODEL, "messages": HELLO, **fields})
    assert error.param == param, error.message
    assert f"'{param}'" in error.message


async def test_bounds_admit_what_they_allow() -> None:
    fields = {
        "tools": [chat_tool(nested(MAX_SCHEMA_DEPTH), f"f{n}") for n in range(MAX_TOOLS)],
        "stop": ["x" * MAX_STOP_CHARS] * 4,
        "logit_bias": {str(n): -100 for n in range(MAX_LOGIT_BIAS)},
    }
    raw = json.dumps({"model": MODEL, "messages": HELLO, **fields}).encode()
    request = await parse_body(_Body(raw), ChatCompletionRequest)  # type: ignore[arg-type]
    assert request.tools is not None and len(request.tools) == MAX_TOOLS


def test_the_bounds_fit_each_other() -> None:
    size = len(json.dumps(wide(1000), separators=(",", ":")).encode())
    assert size < MAX_SCHEMA_BYTES < len(json.dumps(wide(1500)).encode())
    assert MAX_TOOLS * size > MAX_TOOLS_BYTES


# ------------------------------------------------------------------ responses

RESPONSES_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("deep parameters", {"tools": [responses_tool(nested(190))]}, "tools[0].parameters"),
    (
        "large parameters",
        {"tools": [responses_tool(wide(1500))]},
        "tools[0].parameters",
    ),
    (
        "large tools together",
        {"tools": [responses_tool(wide(1000, f"t{n}_"), f"f{n}") for n in range(MAX_TOOLS)]},
        "tools",
    ),
    (
        "too many tools",
        {"tools": [responses_tool({}, f"f{n}") for n in range(MAX_TOOLS + 1)]},
        "tools",
    ),
    (
        "NaN in parameters",
        {"tools": [responses_tool({"minimum": float("inf")})]},
        "tools[0].parameters",
    ),
    (
        "deep text format",
        {"text": {"format": {"type": "json_schema", "name": "a", "schema": nested(40)}}},
        "text.format.schema",
    ),
    ("NaN top_p", {"top_p": float("nan")}, "top_p"),
    (
        "too many allowed tools",
        {
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "auto",
                "tools": [{"type": "function", "name": f"f{n}"} for n in range(MAX_TOOLS + 1)],
            }
        },
        "tool_choice.tools",
    ),
]


@pytest.mark.parametrize(
    ("name", "fields", "param"), RESPONSES_CASES, ids=[c[0] for c in RESPONSES_CASES]
)
async def test_responses_bounds_name_the_field(
    name: str, fields: dict[str, Any], param: str
) -> None:
    error = await refusal(CreateResponse, {"model": MODEL, "input": "hi", **fields})
    assert error.param == param, error.message


# ------------------------------------------------------------------ non-finite numbers


NON_FINITE: list[tuple[bytes, str | None]] = [
    (b'[{"role": "assistant", "content": "", "annotations": [NaN]}]', None),
    (b'[{"role": "user", "content": [{"type": "t", "x": -Infinity}]}]', None),
    (b'[{"role": "user", "content": "hi"}], "seed": Infinity', "seed"),
]


@pytest.mark.parametrize(("messages", "param"), NON_FINITE)
async def test_non_finite_numbers_are_refused_anywhere(messages: bytes, param: str | None) -> None:
    error = await refusal(ChatCompletionRequest, b'{"model": "m", "messages": ' + messages + b"}")
    assert error.param == param
    assert "finite" in error.message if param else "NaN or Infinity" in error.message


async def test_the_names_inside_strings_are_text() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "NaN, Infinity"}]}
    raw = json.dumps(body).encode()
    request = await parse_body(_Body(raw), ChatCompletionRequest)  # type: ignore[arg-type]
    assert request.messages[0].content == "NaN, Infinity"


# ------------------------------------------------------------------ off the event loop


async def test_tool_schemas_are_checked_while_the_loop_serves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Meta-validation runs on a worker thread: the event loop goes on serving
    while it blocks (here until the loop itself releases it)."""
    entered, release = threading.Event(), threading.Event()
    released: list[bool] = []
    check = jsonschema.Draft202012Validator.check_schema

    def blocking(schema: Any, *args: Any, **kwargs: Any) -> None:
        entered.set()
        released.append(release.wait(timeout=20))  # on the loop, nothing would set it
        check(schema, *args, **kwargs)

    monkeypatch.setattr(jsonschema.Draft202012Validator, "check_schema", blocking)
    constrain_schema.clear_cache()
    service = ChatService(registry((MODEL, ScriptedBackend(["ok"]))), None)  # type: ignore[arg-type]
    ctx = context("chat.completions")
    request = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": HELLO, "tools": [chat_tool(wide(3, "loop"))]}
    )
    accepting = asyncio.create_task(service.accept(ctx, request))
    await asyncio.to_thread(entered.wait, 20)
    release.set()  # the loop runs this test while the schema is being checked
    run = await accepting
    assert released == [True]
    assert [tool.name for tool in run.tool_use.tools] == ["f"]
