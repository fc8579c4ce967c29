"""Constrained decoding on the real embedded Gemma 3 270M.

The model is the pretrained 270M: what it writes is not meant to be sensible, only
valid. Every output here must parse and validate, whatever the model would rather
have written. What it writes differs between CPUs, so where a schema does not bound
the output's length an output may also be cut by ``max_tokens``: then it must be a
prefix the grammar allows (see ``tests.grammars``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portway.backends.base import (
    Delta,
    GenerationRequest,
    Grammar,
    Message,
    SamplingParams,
    ToolSpec,
)
from portway.backends.llamacpp.backend import LlamaCppBackend
from portway.backends.llamacpp.default_model import ensure_default_gguf
from portway.constrain import (
    SchemaError,
    json_object_grammar,
    json_schema_grammar,
    tool_call_grammar,
)
from portway.toolcalls import CallArgs, CallStart, TextEvent, parser_for
from tests.grammars import follows

N_CTX = 1024
ASK_FOR_JSON = (Message("user", "Describe a person as a JSON object."),)
ASK_FOR_WEATHER = (Message("user", "What is the weather like in Paris today?"),)


@pytest.fixture(scope="session")
def constrain_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_default_gguf(tmp_path_factory.mktemp("constrain-data"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def backend(constrain_gguf: Path) -> AsyncIterator[LlamaCppBackend]:
    model = LlamaCppBackend(constrain_gguf, n_ctx=N_CTX)
    await model.start()
    yield model
    await model.close()


async def generate(
    backend: LlamaCppBackend,
    grammar: Grammar,
    messages: tuple[Message, ...] = ASK_FOR_JSON,
    **sampling: Any,
) -> tuple[str, list[Delta]]:
    sampling = {"max_tokens": 160, "temperature": 0.0, **sampling}
    request = GenerationRequest(messages, SamplingParams(**sampling), constraint=grammar)
    deltas = [delta async for delta in backend.generate(request)]
    return "".join(delta.text for delta in deltas), deltas


def check_output(grammar: Grammar, text: str, deltas: list[Delta], max_tokens: int) -> bool:
    """Asserts ``text`` follows ``grammar`` as its finish reason says; True when it
    finished (``stop``) rather than being cut at ``max_tokens``."""
    finish = deltas[-1].finish_reason
    assert follows(grammar, text, finish), (finish, text)
    if finish == "length":
        assert sum(delta.tokens for delta in deltas) == max_tokens
    return finish == "stop"


def test_the_backend_declares_tools_and_structured_outputs() -> None:
    assert LlamaCppBackend.capabilities.tools
    assert LlamaCppBackend.capabilities.json_schema


# --------------------------------------------------------------------------- response_format

FIXED_SCHEMAS = [
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "role": {"enum": ["admin", "editor", "viewer"]},
            "active": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                },
                "required": ["city", "zip"],
            },
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "email": {"type": "string", "format": "email"},
        },
        "required": ["name", "role", "active", "tags", "address", "score", "email"],
    },
    {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "minimum": -9, "maximum": 9},
                    "y": {"type": "integer", "minimum": -9, "maximum": 9},
                },
                "required": ["x", "y"],
            }
        },
        "type": "object",
        "properties": {
            "shape": {"const": "polyline"},
            "points": {
                "type": "array",
                "items": {"$ref": "#/$defs/point"},
                "minItems": 2,
                "maxItems": 4,
            },
            "label": {"anyOf": [{"type": "string", "maxLength": 10}, {"type": "null"}]},
        },
        "required": ["shape", "points", "label"],
    },
    {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 100}, "maxItems": 5},
]


@pytest.mark.parametrize("schema", FIXED_SCHEMAS, ids=["person", "profile", "refs", "array"])
async def test_outputs_under_a_schema_parse_and_validate(
    backend: LlamaCppBackend, schema: dict[str, Any]
) -> None:
    grammar = json_schema_grammar(schema)
    text, deltas = await generate(backend, grammar, temperature=0.8, seed=11)
    if check_output(grammar, text, deltas, 160):
        jsonschema.validate(json.loads(text), schema)


SCALARS = st.sampled_from(
    [
        {"type": "string", "maxLength": 12},
        {"type": "integer", "minimum": -50, "maximum": 5000},
        {"type": "boolean"},
        {"enum": ["red", "green", "blue"]},
        {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
    ]
)
NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


def objects(
    values: st.SearchStrategy[dict[str, Any]], size: int = 3
) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(NAMES, values, min_size=1, max_size=size).map(
        lambda properties: {
            "type": "object",
            "properties": properties,
            "required": list(properties),
        }
    )


RANDOM_SCHEMAS = objects(st.one_of(SCALARS, objects(SCALARS, size=2)))


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(schema=RANDOM_SCHEMAS, seed=st.integers(min_value=0, max_value=2**31))
async def test_outputs_under_random_schemas_parse_and_validate(
    backend: LlamaCppBackend, schema: dict[str, Any], seed: int
) -> None:
    grammar = json_schema_grammar(schema)
    text, deltas = await generate(backend, grammar, temperature=0.9, seed=seed, max_tokens=320)
    if check_output(grammar, text, deltas, 320):
        jsonschema.validate(json.loads(text), schema)


async def test_json_object_output_is_an_object(backend: LlamaCppBackend) -> None:
    grammar = json_object_grammar()
    text, deltas = await generate(backend, grammar, temperature=0.7, seed=3)
    if check_output(grammar, text, deltas, 160):
        assert isinstance(json.loads(text), dict)


async def test_logprobs_and_token_counts_still_work(backend: LlamaCppBackend) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    text, deltas = await generate(
        backend, json_schema_grammar(schema), logprobs=True, top_logprobs=2
    )
    assert json.loads(text) in ({"ok": True}, {"ok": False})
    logprobs = [lp for delta in deltas for lp in delta.logprobs]
    assert "".join(lp.token for lp in logprobs) == text
    assert all(len(lp.top) == 2 for lp in logprobs)
    assert sum(delta.tokens for delta in deltas) == len(logprobs)


async def test_max_tokens_cuts_constrained_output_with_length(backend: LlamaCppBackend) -> None:
    # No token of Gemma's is longer than 31 bytes: 6 tokens cannot hold this object.
    story = {"type": "string", "minLength": 200}
    schema = {"type": "object", "properties": {"story": story}, "required": ["story"]}
    grammar = json_schema_grammar(schema)
    text, deltas = await generate(backend, grammar, max_tokens=6)
    assert deltas[-1].finish_reason == "length"
    assert not check_output(grammar, text, deltas, 6)


# --------------------------------------------------------------------------- tool calls

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather in a given location.",
    {
        "type": "object",
        "properties": {
            "location": {
                "type": "string",
                "description": "City and country, e.g. Paris, France",
                "maxLength": 40,
            },
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["location", "unit"],
        "additionalProperties": False,
    },
    strict=True,
)
TIME = ToolSpec(
    "get_time",
    "Get the current time in a time zone.",
    {
        "type": "object",
        "properties": {"timezone": {"type": "string", "maxLength": 40}},
        "required": ["timezone"],
    },
)


@pytest.mark.parametrize(("choice", "name"), [("required", None), ("named", "get_time")])
async def test_forced_tool_calls_parse_into_one_valid_call(
    backend: LlamaCppBackend, choice: Any, name: str | None
) -> None:
    grammar = tool_call_grammar(
        [WEATHER, TIME], family="json", choice=choice, name=name, parallel=False
    )
    # Bounded arguments: one call is at most ~300 tokens (40 characters of \u escapes).
    text, deltas = await generate(
        backend, grammar, ASK_FOR_WEATHER, temperature=0.7, seed=5, max_tokens=400
    )
    assert deltas[-1].finish_reason == "stop", text

    parser = parser_for("json", constrained=True)
    events = parser.feed(text) + parser.finish()
    assert not [e for e in events if isinstance(e, TextEvent)], text
    (call,) = [e for e in events if isinstance(e, CallStart)]
    assert name is None or call.name == name
    arguments = json.loads("".join(e.fragment for e in events if isinstance(e, CallArgs)))
    jsonschema.validate(arguments, {"get_weather": WEATHER, "get_time": TIME}[call.name].parameters)


# --------------------------------------------------------------------------- bad grammars


async def test_a_grammar_the_model_cannot_compile_fails_before_the_first_delta(
    backend: LlamaCppBackend,
) -> None:
    broken = Grammar("start: <no_such_token>", "a test grammar", param="response_format")
    request = GenerationRequest(ASK_FOR_JSON, SamplingParams(max_tokens=4), constraint=broken)
    stream = backend.generate(request)
    with pytest.raises(SchemaError, match="a test grammar cannot be enforced") as caught:
        await anext(stream)
    assert caught.value.param == "response_format"


async def test_enormous_and_recursive_schemas_are_refused_or_bounded(
    backend: LlamaCppBackend,
) -> None:
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5_000)}}
    with pytest.raises(SchemaError):
        json_schema_grammar(wide)

    recursive = {
        "$defs": {
            "a": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/b"}}, {"type": "null"}]},
            "b": {
                "type": "object",
                "properties": {"x": {"$ref": "#/$defs/a"}, "y": {"$ref": "#/$defs/b"}},
            },
        },
        "$ref": "#/$defs/a",
    }
    grammar = json_schema_grammar(recursive)  # finite values exist: it compiles
    text, deltas = await generate(backend, grammar, max_tokens=24, temperature=0.8, seed=1)
    if check_output(grammar, text, deltas, 24):
        jsonschema.validate(json.loads(text), recursive)
