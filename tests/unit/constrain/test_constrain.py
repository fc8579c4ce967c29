"""Grammars for structured outputs and forced tool calls, checked without a model
(see ``tests.grammars``: a byte-level tokenizer stands in for a model's)."""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import llguidance
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portway.backends.base import Grammar, ToolSpec
from portway.constrain import (
    MAX_SCHEMA_BYTES,
    SchemaError,
    allow_reasoning,
    json_object_grammar,
    json_schema_grammar,
    tool_call_grammar,
)
from portway.constrain.runtime import GrammarCompiler, GrammarMask
from portway.constrain.schema import closed_objects
from portway.errors import BackendError, InvalidRequest
from portway.toolcalls import CallArgs, CallStart, parser_for
from portway.toolcalls.reasoning import ThinkSplitter
from tests.grammars import EOS, TOKENIZER, allows, matcher


def random_output(grammar: Grammar, rng: random.Random, limit: int = 4000) -> str:
    """A random complete output of ``grammar``: a walk through its masks."""
    m = matcher(grammar)
    mask = GrammarMask(m, TOKENIZER.vocab_size)
    scores = np.zeros(TOKENIZER.vocab_size, dtype=np.float32)
    out = bytearray()
    for _ in range(limit):
        scores[:] = 0
        allowed = np.flatnonzero(mask(None, scores) == 0)
        if EOS in allowed and (len(allowed) == 1 or rng.random() < 0.4):
            return out.decode()
        token = int(rng.choice([t for t in allowed if t != EOS]))
        out.append(token)
        if mask.accept(token):
            return out.decode()
    raise AssertionError(f"no end after {limit} bytes: {out[:200]!r}")


# --------------------------------------------------------------------------- response_format


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_a_schema_becomes_a_grammar_for_compact_json() -> None:
    grammar = json_schema_grammar(PERSON)
    assert grammar.param == "response_format.json_schema.schema"
    assert allows(grammar, '{"name": "Ada", "age": 36}')
    assert not allows(grammar, '{"name":"Ada","age":36}')
    assert not allows(grammar, '{\n  "name": "Ada",\n  "age": 36\n}')
    assert not allows(grammar, '{"name": "Ada"}')
    assert not allows(grammar, '{"name": "Ada", "age": 36, "extra": 1}')


def test_grammars_are_cached_by_schema_text_with_its_key_order() -> None:
    first = json_schema_grammar(PERSON)
    assert json_schema_grammar(json.loads(json.dumps(PERSON))) is first
    reordered = {**PERSON, "properties": dict(reversed(PERSON["properties"].items()))}
    assert json_schema_grammar(reordered) is not first
    assert allows(json_schema_grammar(reordered), '{"age": 36, "name": "Ada"}')


def test_json_object_grammar_allows_any_object_only() -> None:
    grammar = json_object_grammar()
    assert allows(grammar, '{"a": [1, {"b": null}], "c": "d"}')
    assert allows(grammar, "{}")
    assert not allows(grammar, "[1]")
    assert not allows(grammar, '"text"')


@pytest.mark.parametrize(
    ("schema", "feature"),
    [
        ({"type": "object", "not": {"required": ["a"]}}, "not"),
        ({"if": {"type": "string"}, "then": {"minLength": 2}}, "if"),
        ({"type": "array", "uniqueItems": True}, "uniqueItems"),
        ({"type": "array", "contains": {"type": "integer"}}, "contains"),
        ({"type": "object", "propertyNames": {"pattern": "^a"}}, "propertyNames"),
        ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
        ({"type": "object", "unevaluatedProperties": False}, "unevaluatedProperties"),
        ({"type": "string", "format": "credit-card"}, "credit-card"),
        ({"type": "string", "pattern": "(?<=a)b"}, "look-around"),
        ({"$ref": "https://example.com/schema.json"}, "https://example.com/schema.json"),
    ],
)
def test_features_that_cannot_be_enforced_are_a_400_naming_them(
    schema: dict[str, Any], feature: str
) -> None:
    with pytest.raises(SchemaError, match="cannot be enforced") as caught:
        json_schema_grammar(schema)
    assert feature in caught.value.message
    assert caught.value.status == 400
    assert caught.value.param == "response_format.json_schema.schema"
    assert isinstance(caught.value, InvalidRequest)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "strnig"},
        {"type": "object", "properties": []},
        {"type": "object", "required": "name"},
        {"minLength": -1},
    ],
)
def test_schemas_that_are_not_json_schema_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError, match="not valid JSON Schema") as caught:
        json_schema_grammar(schema, param="tools[0].function.parameters")
    assert caught.value.param == "tools[0].function.parameters"


def test_enormous_schemas_are_refused_before_anything_reads_them() -> None:
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5_000)}}
    with pytest.raises(SchemaError, match="larger than 64 KiB"):
        json_schema_grammar(wide)

    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(SchemaError, match="nested more than 32 levels"):
        json_schema_grammar(deep)

    with pytest.raises(SchemaError, match="not valid JSON"):
        json_schema_grammar({"type": "number", "maximum": float("nan")})


def test_the_largest_accepted_schemas_compile_into_grammars_that_validate() -> None:
    """Near the size bound, schemas compile within ``parser_limits()`` (fuel and
    item counts, not time: the same result on every machine) and every output of
    their grammars validates."""
    properties = {f"p{i}": {"type": "string", "maxLength": 3} for i in range(1_400)}
    wide = {"type": "object", "properties": properties, "required": list(properties)[:700]}
    assert len(json.dumps(wide, separators=(",", ":"))) < MAX_SCHEMA_BYTES

    chained: dict[str, Any] = {
        "$defs": {
            f"n{i}": {
                "type": "object",
                "properties": {
                    "next": {"anyOf": [{"$ref": f"#/$defs/n{i + 1}"}, {"type": "null"}]}
                },
            }
            for i in range(300)
        },
        "$ref": "#/$defs/n0",
    }
    chained["$defs"]["n300"] = {"$ref": "#/$defs/n0"}

    rng = random.Random(5)
    for schema in (wide, chained):
        grammar = json_schema_grammar(schema)  # a refusal fails the test
        for _ in range(3):
            text = random_output(grammar, rng, limit=200_000)
            jsonschema.validate(json.loads(text), schema)


def test_recursive_schemas_generate_valid_json() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "v": {"type": "integer", "minimum": 0, "maximum": 9},
                    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2},
                },
                "required": ["v", "kids"],
            }
        },
        "$ref": "#/$defs/node",
    }
    grammar = json_schema_grammar(tree)
    rng = random.Random(7)
    for _ in range(5):
        jsonschema.validate(json.loads(random_output(grammar, rng)), tree)


def test_objects_are_closed_to_undeclared_properties_where_that_is_safe() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {}}}, "c": {"items": {}}},
        "required": ["a"],
    }
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in closed["properties"]["c"]
    # Left open: what the schema says about other properties, unknown required
    # properties, and anything using allOf.
    for open_schema in [
        {"properties": {"a": {}}, "additionalProperties": {"type": "string"}},
        {"properties": {"a": {}}, "patternProperties": {"^x": {}}},
        {"properties": {"a": {}}, "required": ["b"]},
        {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]},
    ]:
        assert closed_objects(open_schema) == open_schema
    assert schema["properties"]["a"] == {"type": "object", "properties": {"b": {}}}


# --------------------------------------------------------------------------- tool calls


WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {
            "location": {"type": "string", "maxLength": 6},
            "unit": {"enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["location"],
    },
    strict=True,
)
SEARCH = ToolSpec(
    "search",
    "Searches the web.",
    {
        "type": "object",
        "properties": {
            "query": {"type": "string", "maxLength": 8},
            "safe": {"type": "boolean"},
            "sites": {"type": "array", "items": {"enum": ["a.org", "b.net"]}, "maxItems": 2},
            "range": {
                "type": "object",
                "properties": {"from": {"type": "integer", "minimum": 0, "maximum": 99}},
                "required": ["from"],
            },
        },
        "required": ["query", "safe"],
    },
)
NO_PARAMETERS = ToolSpec("get_time")
TOOLS = (WEATHER, SEARCH, NO_PARAMETERS)
SCHEMAS = {tool.name: tool.parameters or {"type": "object"} for tool in TOOLS}

FAMILY_SAMPLES = {
    "json": '{"name": "get_weather", "arguments": {"location": "Paris"}}',
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n'
    "</tool_call>",
    "llama3": '{"name": "get_weather", "parameters": {"location": "Paris"}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris"}}]',
    "functiongemma": "<start_function_call>call:get_weather{location:<escape>Paris<escape>}"
    "<end_function_call>",
}


@pytest.mark.parametrize("family", sorted(FAMILY_SAMPLES))
def test_tool_grammars_write_the_syntax_the_parsers_read(family: str) -> None:
    grammar = tool_call_grammar(TOOLS, family=family, choice="required", name=None, parallel=False)
    sample = FAMILY_SAMPLES[family]
    assert allows(grammar, sample)
    parser = parser_for(family)
    events = parser.feed(sample) + parser.finish()
    assert [(e.name) for e in events if isinstance(e, CallStart)] == ["get_weather"]
    arguments = "".join(e.fragment for e in events if isinstance(e, CallArgs))
    assert json.loads(arguments) == {"location": "Paris"}
    assert not allows(grammar, sample.replace("Paris", "Paris, France"))  # maxLength
    assert not allows(grammar, sample.replace("get_weather", "get_whether"))


def test_mistral_grammar_also_allows_the_newer_syntax() -> None:
    grammar = tool_call_grammar(
        TOOLS, family="mistral", choice="required", name=None, parallel=True
    )
    assert allows(grammar, '[TOOL_CALLS]get_weather[ARGS]{"location": "Paris"}')
    assert allows(grammar, "[TOOL_CALLS]get_time[ARGS]{}[TOOL_CALLS]get_time[ARGS]{}")


@settings(max_examples=40, deadline=None)
@given(
    family=st.sampled_from(sorted(FAMILY_SAMPLES)),
    choice=st.sampled_from(["required", "get_weather", "search", "get_time"]),
    parallel=st.booleans(),
    rng=st.randoms(use_true_random=False),
)
def test_every_forced_output_parses_into_calls_valid_against_their_schemas(
    family: str, choice: str, parallel: bool, rng: random.Random
) -> None:
    named = None if choice == "required" else choice
    tools = TOOLS if family != "functiongemma" else (_without_free_strings(WEATHER), NO_PARAMETERS)
    if named is not None and named not in {tool.name for tool in tools}:
        named = "get_time"
    grammar = tool_call_grammar(
        tools,
        family=family,
        choice="named" if named else "required",
        name=named,
        parallel=parallel,
    )
    output = random_output(grammar, rng)
    for constrained in (True, False):
        parser = parser_for(family, constrained=constrained)
        events = parser.feed(output) + parser.finish()
        assert not [e for e in events if not isinstance(e, CallStart | CallArgs)], output
        calls = [e for e in events if isinstance(e, CallStart)]
        assert calls, output
        assert len(calls) == 1 or parallel
        for call in calls:
            assert named is None or call.name == named
            arguments = "".join(
                e.fragment for e in events if isinstance(e, CallArgs) and e.index == call.index
            )
            jsonschema.validate(json.loads(arguments), SCHEMAS[call.name])


def _without_free_strings(tool: ToolSpec) -> ToolSpec:
    properties = {**tool.parameters["properties"], "location": {"enum": ["Paris", "Oslo"]}}
    return ToolSpec(tool.name, tool.description, {**tool.parameters, "properties": properties})


def test_functiongemma_strings_hold_any_text_but_the_escape_token() -> None:
    grammar = tool_call_grammar(
        [WEATHER], family="functiongemma", choice="required", name=None, parallel=False
    )
    text = "<start_function_call>call:get_weather{location:<escape>%s<escape>}<end_function_call>"
    assert allows(grammar, text % "a,b}:")
    assert not allows(grammar, text % "a<escape>b")


@pytest.mark.parametrize(
    ("tools", "family", "choice", "name", "param", "message"),
    [
        ([], "json", "required", None, "tools", "at least one"),
        ([WEATHER, SEARCH, WEATHER], "json", "required", None, "tools[2].function.name", "twice"),
        ([ToolSpec("get weather")], "json", "required", None, "tools[0].function.name", "name"),
        (TOOLS, "json", "named", "get_news", "tool_choice", "get_news"),
        (
            [WEATHER, ToolSpec("f", parameters={"type": "array"})],
            "hermes",
            "required",
            None,
            "tools[1].function.parameters",
            "must describe an object",
        ),
        (
            [ToolSpec("f", parameters={"type": "object", "properties": {"a": {"type": "x"}}})],
            "json",
            "required",
            None,
            "tools[0].function.parameters",
            "not valid JSON Schema",
        ),
        (
            [ToolSpec("f", parameters={"type": "object", "not": {}})],
            "llama3",
            "required",
            None,
            "tools[0].function.parameters",
            "not",
        ),
        (
            [WEATHER, ToolSpec("f", parameters={"properties": {"a": {"pattern": "x+"}}})],
            "functiongemma",
            "required",
            None,
            "tools[1].function.parameters",
            "'pattern'",
        ),
    ],
)
def test_bad_tool_lists_are_a_400_naming_the_field(
    tools: list[ToolSpec], family: str, choice: Any, name: str | None, param: str, message: str
) -> None:
    with pytest.raises(SchemaError, match=message) as caught:
        tool_call_grammar(tools, family=family, choice=choice, name=name, parallel=False)
    assert caught.value.param == param


def test_tools_too_large_together_are_refused() -> None:
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2_500)}}
    tools = [ToolSpec(f"f{i}", parameters=big) for i in range(6)]
    with pytest.raises(SchemaError, match="together") as caught:
        tool_call_grammar(tools, family="json", choice="required", name=None, parallel=False)
    assert caught.value.param == "tools"


def test_unknown_families_are_a_programming_error() -> None:
    with pytest.raises(ValueError, match="nope"):
        tool_call_grammar(TOOLS, family="nope", choice="required", name=None, parallel=False)


# --------------------------------------------------------------------------- runtime


def test_the_mask_sets_forbidden_logits_to_minus_infinity_in_place() -> None:
    mask = GrammarMask(matcher(json_schema_grammar({"enum": ["yes", "no"]})), EOS + 1)
    scores = np.arange(EOS + 1, dtype=np.float32)
    assert mask(None, scores) is scores
    assert set(np.flatnonzero(np.isfinite(scores))) == {ord('"')}
    assert scores[ord('"')] == ord('"')
    assert not mask.accept(ord('"'))
    assert not mask.accepting
    scores[:] = 0
    mask(None, scores)
    assert set(np.flatnonzero(np.isfinite(scores))) == {ord("y"), ord("n")}


def test_accept_says_when_the_grammar_is_complete_and_refuses_forbidden_tokens() -> None:
    mask = GrammarMask(matcher(json_schema_grammar({"enum": ["no"]})), EOS + 1)
    assert [mask.accept(token) for token in b'"no'] == [False, False, False]
    assert mask.accept(ord('"'))
    assert mask.accepting
    with pytest.raises(BackendError, match="Constrained decoding failed"):
        GrammarMask(matcher(json_object_grammar()), EOS + 1).accept(ord("x"))


def test_the_compiler_keeps_compiled_grammars(monkeypatch: pytest.MonkeyPatch) -> None:
    compiler = GrammarCompiler(TOKENIZER, capacity=2)
    compiled: list[str] = []
    original = compiler._compile

    def counting(grammar: Grammar) -> llguidance.LLMatcher:
        compiled.append(grammar.source)
        return original(grammar)

    monkeypatch.setattr(compiler, "_compile", counting)
    grammars = [json_schema_grammar({"const": i}) for i in range(3)]
    first = compiler.matcher(grammars[0])
    first.consume_tokens([ord("0")])
    second = compiler.matcher(grammars[0])
    assert not second.is_accepting(), "each request gets a matcher at the start"
    assert len(compiled) == 1
    compiler.matcher(grammars[1])
    compiler.matcher(grammars[2])
    compiler.matcher(grammars[0])
    assert len(compiled) == 4, "the least recently used grammar was dropped"


def test_a_grammar_that_does_not_compile_is_a_schema_error_naming_its_field() -> None:
    broken = Grammar('start: %json {"type": "object", "not": {}}', "a test", param="x.y")
    with pytest.raises(SchemaError, match="a test cannot be enforced") as caught:
        matcher(broken)
    assert caught.value.param == "x.y"


# --------------------------------------------------------------------------- reasoning


@pytest.mark.parametrize("starts_inside", [False, True])
def test_reasoning_models_may_think_before_the_constrained_answer(starts_inside: bool) -> None:
    grammar = allow_reasoning(json_schema_grammar(PERSON), starts_inside=starts_inside)
    assert grammar.param == "response_format.json_schema.schema"
    opening = "" if starts_inside else "<think>"
    output = opening + 'Ada? {"name": 1} </thin </think>\n\n{"name": "Ada", "age": 36}'
    assert allows(grammar, output)
    assert not allows(grammar, output + "</think>")
    assert allows(grammar, '{"name": "Ada", "age": 36}') is not starts_inside

    splitter = ThinkSplitter(starts_inside=starts_inside)
    parts = splitter.feed(output) + splitter.finish()
    content = "".join(text for kind, text in parts if kind == "content")
    jsonschema.validate(json.loads(content), PERSON)


def test_reasoning_grammars_wrap_tool_grammars_too() -> None:
    tools = tool_call_grammar(TOOLS, family="hermes", choice="required", name=None, parallel=False)
    grammar = allow_reasoning(tools, starts_inside=False)
    assert allows(grammar, "<think>Weather, so get_weather.</think>\n" + FAMILY_SAMPLES["hermes"])
    with pytest.raises(ValueError, match="start"):
        allow_reasoning(Grammar('root: "x"'), starts_inside=False)
