"""JSON Schema checks, bounds, and grammars for ``response_format``.

Every schema passes three gates before it becomes a grammar:

1. bounds: at most ``MAX_SCHEMA_BYTES`` of JSON and ``MAX_SCHEMA_DEPTH`` levels
   of nesting, checked before anything else reads it;
2. it is JSON Schema (Draft 2020-12 meta-schema);
3. llguidance compiles it within ``parser_limits()``, which refuses keywords it
   cannot enforce (``not``, ``if``/``then``, ``uniqueItems``, unknown ``format``s,
   regex lookarounds...) with a message naming them.

Checked grammars are cached by the schema's JSON text, whose key order is kept:
llguidance generates properties in the schema's order, so order matters.
"""

from __future__ import annotations

import functools
import json
import re
from typing import TYPE_CHECKING, Any

import jsonschema

from portway.backends.base import Grammar
from portway.constrain.errors import SchemaError
from portway.protocol.bounds import MAX_SCHEMA_BYTES, MAX_SCHEMA_DEPTH, depth

JSON_FORMAT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How generated JSON is laid out: ``{"a": 1, "b": [1, 2]}``, one space after
separators and no other whitespace, so a model cannot pad output with newlines."""

if TYPE_CHECKING:
    import llguidance

_CACHE_SIZE = 256
_LOCATION = re.compile(r"^at \d+\(\d+\): (failed to compile JSON schema: )?")
_EXCERPT = re.compile(r"\d+ \|.*|\^+")


def parser_limits() -> llguidance.LLParserLimits:
    """The bounds on compiling a grammar and on each step of using it.

    Lexer fuel is spent at roughly 50 units/µs building and 14 units/µs per token,
    so compiling takes at most tens of milliseconds plus the grammar's size, and a
    token's mask at most ~15 ms. Exceeding a bound is an error, not a slowdown.
    """
    import llguidance

    return llguidance.LLParserLimits(
        max_items_in_row=2_000,
        initial_lexer_fuel=1_000_000,
        step_lexer_fuel=200_000,
        step_max_items=50_000,
        max_lexer_states=50_000,
        max_grammar_size=200_000,
        verbose_errors=False,
    )


def json_schema_grammar(
    schema: dict[str, Any], *, param: str = "response_format.json_schema.schema"
) -> Grammar:
    """A grammar for JSON that validates against ``schema``.

    Raises ``SchemaError`` (400, naming ``param``) when the schema is too large or
    too deep, is not JSON Schema, or uses a feature that cannot be enforced.
    """
    return _checked_schema_grammar(canonical_json(schema, param=param), param)


def json_object_grammar() -> Grammar:
    """A grammar for any JSON object (``response_format: {"type": "json_object"}``)."""
    return json_schema_grammar({"type": "object"}, param="response_format")


def canonical_json(value: Any, *, param: str) -> str:
    """``value`` as compact JSON (key order kept), within the size and depth bounds."""
    if depth(value, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise SchemaError(
            f"The schema in '{param}' is nested more than {MAX_SCHEMA_DEPTH} levels deep.",
            param=param,
        )
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise SchemaError(f"The schema in '{param}' is not valid JSON: {exc}", param=param) from exc
    if len(text.encode()) > MAX_SCHEMA_BYTES:
        raise SchemaError(
            f"The schema in '{param}' is larger than {MAX_SCHEMA_BYTES // 1024} KiB.",
            param=param,
        )
    return text


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _checked_schema_grammar(schema_json: str, param: str) -> Grammar:
    schema = json.loads(schema_json)
    check_json_schema(schema, param=param)
    source = f"start: {json_rule(schema)}\n"
    check_grammar(source, param=param, subject=f"The schema in '{param}'")
    return Grammar(source, description=f"JSON schema from {param}", param=param)


def clear_cache() -> None:
    """Forgets every checked schema (for benchmarks measuring cold compilation)."""
    _checked_schema_grammar.cache_clear()
    _meta_schema_problem.cache_clear()


def check_json_schema(schema: Any, *, param: str) -> None:
    """Raises ``SchemaError`` unless ``schema`` is a valid Draft 2020-12 JSON Schema
    within the size and depth bounds.

    Meta-validation is pure Python (on a slow CPU, about a second for the
    256 KiB of schemas the tools may hold together): call it off the event loop.
    Its verdicts are cached by the schema's JSON text.
    """
    if not isinstance(schema, dict):
        raise SchemaError(f"The schema in '{param}' must be a JSON object.", param=param)
    problem = _meta_schema_problem(canonical_json(schema, param=param))
    if problem is not None:
        raise SchemaError(
            f"The schema in '{param}' is not valid JSON Schema {problem}", param=param
        )


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _meta_schema_problem(schema_json: str) -> str | None:
    """Where and why the schema breaks the Draft 2020-12 meta-schema; None if it does not."""
    try:
        jsonschema.Draft202012Validator.check_schema(json.loads(schema_json))
    except jsonschema.SchemaError as exc:
        where = exc.json_path if exc.path else "its root"
        return f"(at {where}): {exc.message}"
    return None


def json_rule(schema: dict[str, Any]) -> str:
    """A Lark rule body generating JSON valid against ``schema``, with only the
    declared properties (see ``closed_objects``) and laid out as ``JSON_FORMAT``
    says (which replaces any ``x-guidance`` options of the schema)."""
    laid_out = {**closed_objects(schema), "x-guidance": JSON_FORMAT}
    return "%json " + json.dumps(laid_out, ensure_ascii=False)


_OPEN_ENDED = ("additionalProperties", "patternProperties", "unevaluatedProperties", "$ref")
_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions")


def closed_objects(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` where objects that list ``properties`` and say nothing about other
    properties get ``additionalProperties: false``.

    JSON Schema allows undeclared properties by default, and small models fill
    them with invented keys (and llguidance does not keep such keys unique). Any
    output of the closed schema is valid under the original one. Objects whose
    ``required`` names undeclared properties stay open, and so does everything in
    a schema using ``allOf`` (closing one part would forbid the others' properties).
    """
    if _uses_all_of(schema):
        return schema
    closed: dict[str, Any] = _closed(schema)
    return closed


def _uses_all_of(value: Any, parent: str = "") -> bool:
    if isinstance(value, list):
        return any(_uses_all_of(item) for item in value)
    if not isinstance(value, dict):
        return False
    if parent not in _SUBSCHEMA_MAPS and "allOf" in value:
        return True
    return any(_uses_all_of(child, key) for key, child in value.items())


def _closed(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    closed = {key: _closed_children(key, value) for key, value in schema.items()}
    properties = closed.get("properties")
    if (
        isinstance(properties, dict)
        and not any(key in closed for key in _OPEN_ENDED)
        and set(closed.get("required", ())) <= set(properties)
    ):
        closed["additionalProperties"] = False
    return closed


def _closed_children(key: str, value: Any) -> Any:
    if key in _SUBSCHEMA_MAPS and isinstance(value, dict):
        return {name: _closed(child) for name, child in value.items()}
    if key in _SUBSCHEMA_LISTS and isinstance(value, list):
        return [_closed(child) for child in value]
    if key == "items":
        return _closed(value)
    return value


def lark_literal(text: str) -> str:
    """``text`` as a Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


def check_grammar(source: str, *, param: str, subject: str) -> None:
    """Raises ``SchemaError`` unless llguidance compiles the Lark ``source`` within
    ``parser_limits()``; the message starts with ``subject``.

    Without llguidance (the ``local`` extra) nothing is compiled: no backend here
    enforces grammars then, and remote ones check schemas themselves.
    """
    try:
        import llguidance
    except ImportError:
        return
    grammar = llguidance.LLMatcher.grammar_from_lark(source)
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
        grammar, None, limits=parser_limits()
    )
    if failed:
        reason = compile_error_reason(messages[0])
        raise SchemaError(f"{subject} cannot be enforced: {reason}", param=param)


def compile_error_reason(message: str) -> str:
    """llguidance's error message on one line, without the grammar excerpt."""
    lines = (line.strip() for line in _LOCATION.sub("", message.strip()).splitlines())
    return " ".join(line for line in lines if line and not _EXCERPT.fullmatch(line))
