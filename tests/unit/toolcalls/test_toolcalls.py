"""Tool-call parsers, on recorded-style outputs of each family, whole and in pieces."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portway.toolcalls import (
    FAMILIES,
    CallArgs,
    CallStart,
    Event,
    TextEvent,
    family_from_template,
    new_call_id,
    parser_for,
)


@dataclass(frozen=True)
class Parsed:
    """What a parser made of an output, whatever the pieces: text and calls."""

    text: str
    calls: tuple[tuple[str, str], ...]


def summarize(events: Sequence[Event]) -> Parsed:
    text = ""
    names: dict[int, str] = {}
    arguments: dict[int, str] = {}
    for event in events:
        if isinstance(event, TextEvent):
            text += event.text
        elif isinstance(event, CallStart):
            assert event.index == len(names), "calls are announced in index order"
            assert event.index not in arguments, "a call starts before its arguments"
            names[event.index] = event.name
            arguments[event.index] = ""
        else:
            assert event.index in names, "arguments come after their call's start"
            arguments[event.index] += event.fragment
    return Parsed(text, tuple((names[i], arguments[i]) for i in sorted(names)))


def parse_whole(
    family: str, output: str, *, constrained: bool = False, tool_names: Collection[str] = ()
) -> Parsed:
    parser = parser_for(family, constrained=constrained, tool_names=tool_names)
    return summarize(parser.feed(output) + parser.finish())


def parse_pieces(family: str, pieces: Sequence[str], *, constrained: bool = False) -> Parsed:
    parser = parser_for(family, constrained=constrained)
    events: list[Event] = []
    for piece in pieces:
        events += parser.feed(piece)
    return summarize(events + parser.finish())


def cut(text: str, points: Sequence[int]) -> list[str]:
    bounds = [0, *sorted({p % (len(text) + 1) for p in points}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


WEATHER_PARIS = '{"location": "Paris, France", "unit": "celsius"}'
TRICKY = (
    '{"query": "say \\"hi\\" {not a brace} <tool_call> ; ]", '
    '"city": "Zürich ☃ 東京", "n": [1, {"a": null}]}'
)


@dataclass(frozen=True)
class Sample:
    family: str
    output: str
    expected: Parsed


SAMPLES = [
    # Qwen 2.5 answering with a sentence, then two calls.
    Sample(
        "hermes",
        "I'll look both up.\n\n<tool_call>\n"
        f'{{"name": "get_weather", "arguments": {WEATHER_PARIS}}}\n</tool_call>\n'
        f'<tool_call>\n{{"name": "search", "arguments": {TRICKY}}}\n</tool_call>',
        Parsed("I'll look both up.", (("get_weather", WEATHER_PARIS), ("search", TRICKY))),
    ),
    # Hermes 3: arguments first, no closing tag before the end of the turn.
    Sample(
        "hermes",
        '<tool_call>\n{"arguments": {"q": "x"}, "name": "search"}',
        Parsed("", (("search", '{"q": "x"}'),)),
    ),
    # Llama 3.1 JSON tool calling, and two calls after <|python_tag|>.
    Sample(
        "llama3",
        f'{{"name": "get_weather", "parameters": {WEATHER_PARIS}}}',
        Parsed("", (("get_weather", WEATHER_PARIS),)),
    ),
    Sample(
        "llama3",
        f'<|python_tag|>{{"name": "get_weather", "parameters": {WEATHER_PARIS}}}; '
        '{"name": "get_time", "parameters": {}}',
        Parsed("", (("get_weather", WEATHER_PARIS), ("get_time", "{}"))),
    ),
    # Mistral 7B v0.3 (array) and Mistral Small 3.2 (NAME[ARGS]).
    Sample(
        "mistral",
        f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {WEATHER_PARIS}, "id": "a1B2c3D4e"}}, '
        f'{{"name": "search", "arguments": {TRICKY}}}]',
        Parsed("", (("get_weather", WEATHER_PARIS), ("search", TRICKY))),
    ),
    Sample(
        "mistral",
        f"Checking.[TOOL_CALLS]get_weather[ARGS]{WEATHER_PARIS}[TOOL_CALLS]search[ARGS]{TRICKY}",
        Parsed("Checking.", (("get_weather", WEATHER_PARIS), ("search", TRICKY))),
    ),
    # FunctionGemma: its own argument syntax, converted to JSON.
    Sample(
        "functiongemma",
        "<start_function_call>call:get_weather{location:<escape>Paris, {France}<escape>,"
        "days:3,metric:true,hours:[<escape>9:00<escape>,<escape>18:00<escape>],"
        "where:{lat:48.85,lon:2.35}}<end_function_call>",
        Parsed(
            "",
            (
                (
                    "get_weather",
                    '{"location": "Paris, {France}", "days": 3, "metric": true, '
                    '"hours": ["9:00", "18:00"], "where": {"lat": 48.85, "lon": 2.35}}',
                ),
            ),
        ),
    ),
    # Portway's generic JSON: one object, or an array in a fence.
    Sample(
        "json",
        f'{{"name": "get_weather", "arguments": {WEATHER_PARIS}}}',
        Parsed("", (("get_weather", WEATHER_PARIS),)),
    ),
    Sample(
        "json",
        f'\n```json\n[{{"name": "get_weather", "arguments": {WEATHER_PARIS}}}, '
        f'{{"name": "search", "arguments": {TRICKY}}}]\n```\n',
        Parsed("", (("get_weather", WEATHER_PARIS), ("search", TRICKY))),
    ),
]

NOT_CALLS = [
    # Plain answers, including text that looks like the start of a tag.
    ("hermes", "The weather is nice. Use a <b>tag</b> or <tool_ if you like."),
    ("mistral", "Arrays look like [1, 2] and [TOOL] is not [TOOL_CALLS"),
    # Broken JSON, an unterminated call, and calls with the wrong shape are text.
    (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {location: Paris}}\n</tool_call>',
    ),
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Par'),
    ("hermes", '<tool_call>\n{"name": 7, "arguments": {}}\n</tool_call>'),
    ("llama3", 'Sure: {"name": "get_weather", "parameters": {}}'),
    ("functiongemma", "<start_function_call>call:get_weather{location:<escape>Paris}"),
    # JSON content (an answer under response_format) is not a call.
    ("json", '{"name": "Ada Lovelace", "born": 1815}'),
    ("json", '[{"name": "Ada"}, {"name": "Alan"}]'),
    ("llama3", '{"name": "Ada Lovelace", "parameters": {}, "born": 1815}'),
    ("json", "```python\nprint('hi')\n```"),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.family)
@pytest.mark.parametrize("constrained", [False, True], ids=["auto", "constrained"])
def test_recorded_outputs_parse_whole(sample: Sample, constrained: bool) -> None:
    assert parse_whole(sample.family, sample.output, constrained=constrained) == sample.expected


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.family)
@pytest.mark.parametrize("constrained", [False, True], ids=["auto", "constrained"])
def test_recorded_outputs_parse_one_character_at_a_time(sample: Sample, constrained: bool) -> None:
    pieces = list(sample.output)
    assert parse_pieces(sample.family, pieces, constrained=constrained) == sample.expected


@settings(max_examples=300, deadline=None)
@given(
    sample=st.sampled_from(SAMPLES),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    constrained=st.booleans(),
)
def test_recorded_outputs_parse_the_same_in_any_pieces(
    sample: Sample, points: list[int], constrained: bool
) -> None:
    pieces = cut(sample.output, points)
    assert parse_pieces(sample.family, pieces, constrained=constrained) == sample.expected


@pytest.mark.parametrize(("family", "output"), NOT_CALLS)
def test_outputs_without_valid_calls_are_left_as_text_exactly(family: str, output: str) -> None:
    assert parse_whole(family, output) == Parsed(output, ())
    assert parse_pieces(family, list(output)) == Parsed(output, ())


@settings(max_examples=200, deadline=None)
@given(
    case=st.sampled_from(NOT_CALLS),
    points=st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
)
def test_text_is_the_same_in_any_pieces(case: tuple[str, str], points: list[int]) -> None:
    family, output = case
    assert parse_pieces(family, cut(output, points)) == Parsed(output, ())


def test_text_that_may_open_a_tag_is_held_back_until_known() -> None:
    parser = parser_for("hermes")
    assert summarize(parser.feed("Let me check <tool")).text == "Let me check"
    events = parser.feed('_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    assert summarize(events) == Parsed("", (("f", "{}"),))

    parser = parser_for("hermes")
    parser.feed("a <tool")
    assert summarize(parser.feed("box> b")).text == " <toolbox> b"


def test_constrained_calls_stream_their_arguments_as_written() -> None:
    parser = parser_for("json", constrained=True)
    first = parser.feed('{"name": "get_weather", "arguments": {"location": "Pa')
    assert [type(e) for e in first] == [CallStart, CallArgs]
    assert isinstance(first[1], CallArgs)
    assert first[1].fragment == '{"location": "Pa'
    assert parser.feed('ris"}}') == [CallArgs(0, 'ris"}')]
    assert parser.finish() == []


@pytest.mark.parametrize(
    ("family", "output"),
    [
        ("json", '{"name": "f", "arguments": {"location": "Paris"}}'),
        ("hermes", '<tool_call>\n{"name": "f", "arguments": {"location": "Paris"}}\n</tool_call>'),
        ("llama3", '{"name": "f", "parameters": {"location": "Paris"}}'),
        ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": {"location": "Paris"}}]'),
        ("mistral", '[TOOL_CALLS]f[ARGS]{"location": "Paris"}'),
    ],
)
def test_every_json_family_streams_constrained_arguments(family: str, output: str) -> None:
    head, tail = output.split("Pa", 1)
    parser = parser_for(family, constrained=True)
    first = parser.feed(head + "Pa")
    assert isinstance(first[0], CallStart)
    assert (first[0].index, first[0].name) == (0, "f")
    assert first[1:] == [CallArgs(0, '{"location": "Pa')]
    rest = summarize(first + parser.feed(tail) + parser.finish())
    assert rest == Parsed("", (("f", '{"location": "Paris"}'),))


def test_unconstrained_calls_come_once_complete() -> None:
    parser = parser_for("json")
    assert parser.feed('{"name": "get_weather", "arguments": {"location": "Pa') == []
    events = parser.feed('ris"}}') + parser.finish()
    assert summarize(events) == Parsed("", (("get_weather", '{"location": "Paris"}'),))


@pytest.mark.parametrize("pieces", [1, 7, 1000])
def test_a_constrained_call_cut_short_keeps_its_partial_arguments(pieces: int) -> None:
    output = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Par'
    chunks = [output[i : i + pieces] for i in range(0, len(output), pieces)]
    parsed = parse_pieces("hermes", chunks, constrained=True)
    assert parsed == Parsed("", (("get_weather", '{"location": "Par'),))


def test_tool_names_keep_calls_to_unknown_functions_as_text() -> None:
    output = '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'
    assert parse_whole("hermes", output, tool_names={"get_weather"}) == Parsed(output, ())
    known = parse_whole("hermes", output, tool_names={"rm_rf"})
    assert known.calls == (("rm_rf", "{}"),)


def test_arguments_written_as_a_json_string_are_unwrapped() -> None:
    output = '<tool_call>\n{"name": "f", "arguments": "{\\"a\\": 1}"}\n</tool_call>'
    assert parse_whole("hermes", output).calls == (("f", '{"a": 1}'),)


@pytest.mark.parametrize(
    ("output", "text"),
    [
        (
            'Calling.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n\nDone. ',
            "Calling.\n\nDone. ",
        ),
        ('Calling.\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n', "Calling."),
        ('\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>\n Done.', "Done."),
    ],
)
def test_whitespace_next_to_calls_is_dropped(output: str, text: str) -> None:
    assert parse_whole("hermes", output) == Parsed(text, (("f", "{}"),))
    assert parse_pieces("hermes", list(output)) == Parsed(text, (("f", "{}"),))


def test_every_family_has_a_parser_and_unknown_ones_are_refused() -> None:
    assert set(FAMILIES) == {"hermes", "llama3", "mistral", "functiongemma", "json"}
    with pytest.raises(ValueError, match="nope"):
        parser_for("nope")


def test_call_ids_look_like_openai_ids() -> None:
    ids = {new_call_id() for _ in range(50)}
    assert len(ids) == 50
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


def test_each_call_gets_a_new_id() -> None:
    parser = parser_for("llama3")
    events = parser.feed('{"name": "f", "parameters": {}}; {"name": "g", "parameters": {}}')
    starts = [e for e in events + parser.finish() if isinstance(e, CallStart)]
    assert [s.index for s in starts] == [0, 1]
    assert len({s.id for s in starts}) == 2


# --------------------------------------------------------------------------- families

QWEN25_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}# Tools\\n<tools>{% for tool in tools %}"
    "{{ tool | tojson }}{% endfor %}</tools>\\nFor each function call, return a json object "
    "within <tool_call></tool_call> XML tags{%- endif %}"
)
LLAMA31_TEMPLATE = (
    "{%- if message.role == 'ipython' %}<|start_header_id|>ipython<|end_header_id|>"
    "{%- endif %}{{- '<|python_tag|>' + tool_call.name }}"
)
MISTRAL_TEMPLATE = "{%- if message.tool_calls %}{{- '[TOOL_CALLS]' }}{{ tool_calls|tojson }}"
FUNCTIONGEMMA_TEMPLATE = "{{- '<start_function_call>call:' + tool_call.function.name + '{' }}"
GEMMA3_TEMPLATE = "{{ bos_token }}{%- for message in messages -%}<start_of_turn>{{ role }}"


@pytest.mark.parametrize(
    ("template", "family"),
    [
        (QWEN25_TEMPLATE, "hermes"),
        (LLAMA31_TEMPLATE, "llama3"),
        (MISTRAL_TEMPLATE, "mistral"),
        (FUNCTIONGEMMA_TEMPLATE, "functiongemma"),
        (GEMMA3_TEMPLATE, "json"),
        (None, "json"),
    ],
)
def test_family_from_template(template: str | None, family: str) -> None:
    assert family_from_template(template, "some-model") == family


def test_converted_functiongemma_arguments_are_json() -> None:
    output = "<start_function_call>call:f{s:<escape>a,b:c<escape>,word:sunny,n:-1.5e3}"
    parsed = parse_whole("functiongemma", output)
    assert json.loads(parsed.calls[0][1]) == {"s": "a,b:c", "word": "sunny", "n": -1500.0}
