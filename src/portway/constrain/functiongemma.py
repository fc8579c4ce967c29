"""JSON Schemas as Lark rules for FunctionGemma's argument syntax.

FunctionGemma writes arguments as ``{key:value,...}`` with ``<escape>``-wrapped
strings (see ``portway.toolcalls.functiongemma``), which ``%json`` cannot produce,
so schemas are translated here. The translation covers what tool parameters use:
``type`` (one or a list), ``properties``, ``required``, ``items``, ``enum``,
``const``, ``anyOf``, ``minLength``/``maxLength``, ``minItems``/``maxItems`` and
the numeric bounds (numbers are written as in JSON, so they are ``%json`` rules);
annotations are ignored. Any other keyword (``pattern``, ``format``, ``$ref``...)
is refused with a ``SchemaError`` naming it, since the grammar could not enforce it.

Objects keep the schema's property order; optional properties may be left out.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from portway.constrain.errors import SchemaError
from portway.constrain.schema import lark_literal
from portway.toolcalls.functiongemma import ESCAPE

COMMON_RULES = (
    f"FG_STRING: {lark_literal(ESCAPE)} FG_TEXT {lark_literal(ESCAPE)}",
    f"FG_TEXT: /(?s:.*)/ & ~/(?s:.*){ESCAPE}(?s:.*)/",
    r"FG_INTEGER: /-?(0|[1-9][0-9]*)/",
    r"FG_NUMBER: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/",
    r"FG_KEY: /[A-Za-z_][A-Za-z0-9_]*/",
    'fg_any: FG_STRING | FG_NUMBER | "true" | "false" | "null" | fg_any_object | fg_any_array',
    'fg_any_object: "{" (FG_KEY ":" fg_any ("," FG_KEY ":" fg_any)*)? "}"',
    'fg_any_array: "[" (fg_any ("," fg_any)*)? "]"',
)
"""Rules every FunctionGemma grammar needs once."""

_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "$schema",
        "$id",
        "deprecated",
        "readOnly",
        "writeOnly",
        "additionalProperties",  # extra properties are never generated
    }
)
_NUMERIC = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_HANDLED = frozenset(
    {
        *("type", "properties", "required", "items", "enum", "const", "anyOf"),
        *("minLength", "maxLength", "minItems", "maxItems"),
        *_NUMERIC,
    }
)
_SCALAR_TYPES = {
    "string": "FG_STRING",
    "integer": "FG_INTEGER",
    "number": "FG_NUMBER",
    "boolean": '("true" | "false")',
    "null": '"null"',
}
_KEY = re.compile(r"[^\s{}\[\],:<>]+")


def _array(item: str, shortest: int, longest: int | None) -> str:
    """``[item,...]`` with ``shortest`` to ``longest`` items."""
    if longest == 0:
        return '"[]"'
    more = f"{{{max(shortest - 1, 0)},{'' if longest is None else longest - 1}}}"
    items = f'{item} ("," {item}){more}'
    return f'"[" {items} "]"' if shortest > 0 else f'"[" ({items})? "]"'


def arguments_rules(schema: dict[str, Any], *, rule: str, param: str) -> list[str]:
    """Lark rules whose rule ``rule`` generates FunctionGemma arguments valid
    against ``schema`` (an object schema). Needs ``COMMON_RULES`` in the grammar."""
    translator = _Translator(rule, param)
    translator.rules.append(f"{rule}: {translator.object(schema, '$')}")
    return translator.rules


class _Translator:
    def __init__(self, prefix: str, param: str) -> None:
        self.prefix = prefix
        self.param = param
        self.rules: list[str] = []
        self._count = 0

    def value(self, schema: Any, path: str) -> str:
        """A Lark expression for values valid against ``schema``."""
        if schema is True or schema == {}:
            return "fg_any"
        if not isinstance(schema, dict):
            self._refuse("a schema that allows nothing", path)
        unsupported = sorted(set(schema) - _HANDLED - _ANNOTATIONS)
        if unsupported:
            self._refuse(f"'{unsupported[0]}'", path)
        if "const" in schema:
            return self._literal(schema["const"], path)
        if "enum" in schema:
            return self._alternatives([self._literal(v, path) for v in schema["enum"]])
        if "anyOf" in schema:
            return self._any_of(schema, path)
        return self._typed(schema, schema.get("type"), path)

    def _any_of(self, schema: dict[str, Any], path: str) -> str:
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        if set(rest) - _ANNOTATIONS:
            self._refuse("'anyOf' beside other keywords", path)
        return self._alternatives(
            [self.value(option, f"{path}.anyOf[{i}]") for i, option in enumerate(schema["anyOf"])]
        )

    def _typed(self, schema: dict[str, Any], kind: Any, path: str) -> str:
        if isinstance(kind, list):
            return self._alternatives([self._typed(schema, one, path) for one in kind])
        if kind is None:
            return "fg_any"
        if kind == "object":
            return self.object(schema, path)
        if kind == "array":
            item = self.value(schema.get("items", True), f"{path}.items")
            return _array(item, schema.get("minItems", 0), schema.get("maxItems"))
        if kind == "string" and ("minLength" in schema or "maxLength" in schema):
            return self._bounded_string(schema.get("minLength", 0), schema.get("maxLength"))
        if kind in ("integer", "number") and any(key in schema for key in _NUMERIC):
            bounds = {key: schema[key] for key in _NUMERIC if key in schema}
            return self._rule(f"%json {json.dumps({'type': kind, **bounds})}")
        return _SCALAR_TYPES[str(kind)]

    def _bounded_string(self, shortest: int, longest: int | None) -> str:
        """A string of ``shortest`` to ``longest`` characters: one terminal, since the
        lexer cannot split a string's text from the ``<escape>`` that ends it."""
        name = f"{self.prefix.upper()}_STRING_{self._count}"
        self._count += 1
        bound = "" if longest is None else str(longest)
        text = f"/(?s:.{{{shortest},{bound}}})/ & ~/(?s:.*){ESCAPE}(?s:.*)/"
        self.rules += [
            f"{name}_TEXT: {text}",
            f"{name}: {lark_literal(ESCAPE)} {name}_TEXT {lark_literal(ESCAPE)}",
        ]
        return name

    def object(self, schema: dict[str, Any], path: str) -> str:
        """``{key:value,...}`` for ``properties`` in order, optional ones skippable."""
        properties: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", ()))
        if required - set(properties):
            self._refuse(f"required properties not in 'properties': {sorted(required)}", path)
        if not properties:
            return '"{}"'
        names = self._member_rules(properties, path)
        optional = [key not in required for key in properties]
        after = self._after_rules(names, optional)
        first = self._first_rules(names, optional, after)
        return f'"{{" {first} "}}"' if not all(optional) else f'"{{" {first}? "}}"'

    def _member_rules(self, properties: dict[str, Any], path: str) -> list[str]:
        names = []
        for key, subschema in properties.items():
            if not _KEY.fullmatch(key):
                self._refuse(f"the property name {key!r}", path)
            value = self.value(subschema, f"{path}.{key}")
            names.append(self._rule(f"{lark_literal(key + ':')} {value}"))
        return names

    def _after_rules(self, members: list[str], optional: list[bool]) -> list[str | None]:
        """``after[k]``: members k.. each after a comma (None past the end)."""
        after: list[str | None] = [None] * (len(members) + 1)
        for k in range(len(members) - 1, -1, -1):
            part = f'("," {members[k]})?' if optional[k] else f'"," {members[k]}'
            after[k] = self._rule(" ".join(filter(None, (part, after[k + 1]))))
        return after

    def _first_rules(
        self, members: list[str], optional: list[bool], after: list[str | None]
    ) -> str:
        """``first[k]``: a non-empty run of members k.., its first without a comma."""
        first = ""
        for k in range(len(members) - 1, -1, -1):
            starting_here = " ".join(filter(None, (members[k], after[k + 1])))
            alternatives = [starting_here, first] if optional[k] and first else [starting_here]
            first = self._rule(" | ".join(alternatives))
        return first

    def _literal(self, value: Any, path: str) -> str:
        if isinstance(value, str):
            if ESCAPE in value:
                self._refuse(f"a string containing {ESCAPE}", path)
            return lark_literal(f"{ESCAPE}{value}{ESCAPE}")
        if isinstance(value, dict | list):
            self._refuse("an object or array in 'enum' or 'const'", path)
        return lark_literal(json.dumps(value))

    def _alternatives(self, options: list[str]) -> str:
        if not options:
            self._refuse("an empty 'enum' or 'anyOf'", "$")
        return "(" + " | ".join(options) + ")"

    def _rule(self, body: str) -> str:
        name = f"{self.prefix}_{self._count}"
        self._count += 1
        self.rules.append(f"{name}: {body}")
        return name

    def _refuse(self, feature: str, path: str) -> NoReturn:
        raise SchemaError(
            f"The schema in '{self.param}' uses {feature} (at {path}), which FunctionGemma's "
            "call syntax cannot enforce.",
            param=self.param,
        )
