"""Grammars that force a tool call in a model family's own syntax.

With ``tool_choice: "required"`` (any of the tools) or a named function, the model
must write exactly one call (or, with ``parallel``, one or more) in the syntax
``portway.toolcalls`` parses for its family, and each call's arguments must
validate against that tool's JSON Schema. Names are fixed literals; arguments are
an ``%json`` rule of the tool's own schema (so its ``$ref``s resolve as written),
or for FunctionGemma a translation of it (see ``constrain.functiongemma``).

The layout is fixed: ``{"name": "get_weather", "arguments": {"location": "Paris"}}``
(``JSON_FORMAT``), which is also what the parsers read back unchanged.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from portway.backends.base import Grammar, ToolSpec
from portway.constrain import functiongemma
from portway.constrain.errors import SchemaError
from portway.constrain.schema import (
    canonical_json,
    check_grammar,
    check_json_schema,
    json_rule,
    json_schema_grammar,
    lark_literal,
)
from portway.protocol.bounds import MAX_TOOLS_BYTES
from portway.toolcalls.families import HERMES_CLOSE, HERMES_OPEN, MISTRAL_ARGS, MISTRAL_CALLS
from portway.toolcalls.functiongemma import CALL_CLOSE, CALL_OPEN

ToolChoice = Literal["required", "named"]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DESCRIBES_PROPERTIES = frozenset(
    {"properties", "required", "additionalProperties", "patternProperties", "$ref"}
    | {"anyOf", "oneOf", "allOf", "unevaluatedProperties", "minProperties"}
)

Call = tuple[str, str]
"""A call rule's name and the tool name it writes."""


def tool_call_grammar(
    tools: Sequence[ToolSpec],
    *,
    family: str,
    choice: ToolChoice,
    name: str | None,
    parallel: bool,
) -> Grammar:
    """A grammar for a call of one of ``tools`` (only ``name`` when ``choice`` is
    ``"named"``), or one or more calls when ``parallel``, in ``family``'s syntax.

    Raises ``SchemaError`` naming the field: ``tools`` (none given, or too large
    together), ``tools[i].function.name`` (invalid or duplicate),
    ``tools[i].function.parameters`` (not an object schema, or not enforceable),
    ``tool_choice`` (names a function not among ``tools``). ``ValueError`` for an
    unknown family.
    """
    if family not in _SYNTAXES:
        raise ValueError(f"Unknown tool-call family {family!r}.")
    _check_names(tools, choice, name)
    texts = [
        canonical_json(tool.parameters, param=f"tools[{index}].function.parameters")
        for index, tool in enumerate(tools)
    ]
    if sum(len(text.encode()) for text in texts) > MAX_TOOLS_BYTES:
        raise SchemaError(
            f"The tools' parameter schemas are larger than {MAX_TOOLS_BYTES // 1024} KiB together.",
            param="tools",
        )
    parameters = [_arguments_schema(text, index, family) for index, text in enumerate(texts)]
    key = json.dumps([[tool.name for tool in tools], parameters], ensure_ascii=False)
    chosen = name if choice == "named" else None
    return _tool_grammar(key, family, chosen, parallel)


def _check_names(tools: Sequence[ToolSpec], choice: ToolChoice, name: str | None) -> None:
    if not tools:
        raise SchemaError("'tools' must list at least one function to call.", param="tools")
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        param = f"tools[{index}].function.name"
        if not _TOOL_NAME.fullmatch(tool.name):
            raise SchemaError(
                f"Invalid function name {tool.name!r}: use 1 to 64 letters, digits, "
                "'_', '-' or '.'.",
                param=param,
            )
        if tool.name in seen:
            raise SchemaError(f"The function name {tool.name!r} is used twice.", param=param)
        seen.add(tool.name)
    if choice == "named" and name not in seen:
        raise SchemaError(
            f"tool_choice names the function {name!r}, which is not among 'tools'.",
            param="tool_choice",
        )


def _arguments_schema(parameters: str, index: int, family: str) -> dict[str, Any]:
    """A tool's parameters (JSON text) as an object schema, checked for the family's
    grammar."""
    param = f"tools[{index}].function.parameters"
    schema: dict[str, Any] = json.loads(parameters)
    check_json_schema(schema, param=param)
    kind = schema.get("type", "object")
    if kind != "object" and not (isinstance(kind, list) and "object" in kind):
        raise SchemaError(
            f"The schema in '{param}' must describe an object (type 'object').", param=param
        )
    schema["type"] = "object"
    if not set(schema) & _DESCRIBES_PROPERTIES:
        schema["properties"] = {}  # a function without parameters: its arguments are {}
    if family == "functiongemma":
        functiongemma.arguments_rules(schema, rule="check", param=param)
    else:
        json_schema_grammar(schema, param=param)
    return schema


@functools.lru_cache(maxsize=128)
def _tool_grammar(key: str, family: str, chosen: str | None, parallel: bool) -> Grammar:
    names, parameters = json.loads(key)
    rules: list[str] = []
    calls: list[Call] = []
    for index, (tool_name, schema) in enumerate(zip(names, parameters, strict=True)):
        if chosen is not None and tool_name != chosen:
            continue
        arguments = f"args_{index}"
        rules += _arguments_rules(schema, arguments, family, index)
        calls.append((arguments, tool_name))
    rules = _SYNTAXES[family](calls, parallel) + rules
    source = "\n".join(rules) + "\n"
    check_grammar(source, param="tools", subject="The tools")
    what = f"a call of {chosen}" if chosen else "a tool call"
    return Grammar(source, description=f"{what} in the {family} syntax", param="tools")


def _arguments_rules(schema: dict[str, Any], rule: str, family: str, index: int) -> list[str]:
    if family == "functiongemma":
        param = f"tools[{index}].function.parameters"
        return functiongemma.arguments_rules(schema, rule=rule, param=param)
    return [f"{rule}: {json_rule(schema)}"]


# --------------------------------------------------------------------------- syntaxes


def _call_object(arguments: str, name: str, key: str = "arguments") -> str:
    """``{"name": "NAME", "<key>": <arguments>}``."""
    opening = "{" + f'"name": {json.dumps(name, ensure_ascii=False)}, "{key}": '
    return f'{lark_literal(opening)} {arguments} "}}"'


def _one_of(rule: str, bodies: list[str]) -> list[str]:
    """``rule`` as a choice of ``bodies``, each a rule of its own."""
    named = [f"{rule}_{index}: {body}" for index, body in enumerate(bodies)]
    return [f"{rule}: " + " | ".join(f"{rule}_{index}" for index in range(len(bodies))), *named]


def _repeated(item: str, separator: str, parallel: bool) -> str:
    """One ``item``, or with ``parallel`` one or more joined by ``separator``."""
    return f"{item} ({lark_literal(separator)} {item})*" if parallel else item


def _json_syntax(calls: list[Call], parallel: bool) -> list[str]:
    start = f'call | "[" {_repeated("call", ", ", True)} "]"' if parallel else "call"
    return [f"start: {start}", *_one_of("call", [_call_object(a, n) for a, n in calls])]


def _hermes_syntax(calls: list[Call], parallel: bool) -> list[str]:
    bodies = [
        f"{lark_literal(HERMES_OPEN + chr(10))} {_call_object(a, n)} "
        f"{lark_literal(chr(10) + HERMES_CLOSE)}"
        for a, n in calls
    ]
    return [f"start: {_repeated('call', chr(10), parallel)}", *_one_of("call", bodies)]


def _llama3_syntax(calls: list[Call], parallel: bool) -> list[str]:
    bodies = [_call_object(a, n, key="parameters") for a, n in calls]
    return [f"start: {_repeated('call', '; ', parallel)}", *_one_of("call", bodies)]


def _mistral_syntax(calls: list[Call], parallel: bool) -> list[str]:
    """Both of Mistral's syntaxes: the model writes the one it was trained on."""
    named = _repeated("named", MISTRAL_CALLS, parallel)
    return [
        f'start: {lark_literal(MISTRAL_CALLS)} ("[" {_repeated("call", ", ", parallel)} "]" '
        f"| {named})",
        *_one_of("call", [_call_object(a, n) for a, n in calls]),
        *_one_of("named", [f"{lark_literal(n + MISTRAL_ARGS)} {a}" for a, n in calls]),
    ]


def _functiongemma_syntax(calls: list[Call], parallel: bool) -> list[str]:
    bodies = [
        f"{lark_literal(CALL_OPEN + 'call:' + n)} {a} {lark_literal(CALL_CLOSE)}" for a, n in calls
    ]
    start = "call+" if parallel else "call"
    return [f"start: {start}", *_one_of("call", bodies), *functiongemma.COMMON_RULES]


_SYNTAXES: dict[str, Callable[[list[Call], bool], list[str]]] = {
    "json": _json_syntax,
    "hermes": _hermes_syntax,
    "llama3": _llama3_syntax,
    "mistral": _mistral_syntax,
    "functiongemma": _functiongemma_syntax,
}
