"""Bounds on the request fields whose cost grows with their contents: JSON
Schemas (tool parameters, response formats), tool lists, stop sequences and
``logit_bias``.

They are checked while the body is validated, before any other work, so a
request past one fails at once with a 400 naming the field. Depth is measured
without recursion, before anything that recurses (serialising, JSON Schema
meta-validation, grammar building) reads the value.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

MAX_SCHEMA_BYTES = 64 * 1024
"""Largest JSON Schema accepted, as compact JSON in UTF-8."""

MAX_SCHEMA_DEPTH = 32
"""Deepest nesting of JSON objects and arrays accepted in a schema."""

MAX_TOOLS = 128
"""Most tools in one request (OpenAI's documented maximum)."""

MAX_TOOLS_BYTES = 4 * MAX_SCHEMA_BYTES
"""Largest total of the tools' parameter schemas, as compact JSON in UTF-8."""

MAX_STOPS = 4
"""Most stop sequences (OpenAI's documented maximum)."""

MAX_STOP_CHARS = 1024
"""Longest stop sequence, in characters."""

MAX_LOGIT_BIAS = 1024
"""Most tokens one ``logit_bias`` may adjust."""


def depth(value: Any, limit: int) -> int:
    """How deeply objects and arrays nest in ``value``, measured without recursion;
    the walk stops as soon as it passes ``limit`` (the result is then ``limit + 1``)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            if level > limit:
                return level
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def size_at_least(value: Any, budget: int) -> int:
    """A lower bound of the size of ``value`` as compact JSON in UTF-8, measured
    without recursion; the walk stops once it passes ``budget``, so it costs at
    most about ``budget`` steps however large ``value`` is."""
    size = 0
    stack: list[Any] = [value]
    while stack and size <= budget:
        item = stack.pop()
        if isinstance(item, dict):
            size += 1 + sum(len(key) + 3 for key in item)  # {"key":value,...}
            children: Any = item.values()
        elif isinstance(item, list):
            size += 1 + len(item)  # [value,...]
            children = item
        else:
            size += len(item) + 2 if isinstance(item, str) else 1
            continue
        if size <= budget:
            stack.extend(children)
    return size


def _too_large(limit: int, what: str = "the schema is") -> PydanticCustomError:
    return PydanticCustomError(
        "too_large", what + " larger than {limit} KiB as JSON", {"limit": limit // 1024}
    )


def schema_json(schema: Any) -> str:
    """``schema`` as compact JSON (key order kept), within the size and depth bounds.

    Raises ``PydanticCustomError`` (a validation error of the field) for a schema
    too large, nested too deeply, or holding NaN or Infinity. Size and depth are
    measured before anything recursive reads the schema.
    """
    if size_at_least(schema, MAX_SCHEMA_BYTES) > MAX_SCHEMA_BYTES:
        raise _too_large(MAX_SCHEMA_BYTES)
    if depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        raise PydanticCustomError(
            "schema_too_deep",
            "the schema is nested more than {limit} levels deep",
            {"limit": MAX_SCHEMA_DEPTH},
        )
    try:
        text = json.dumps(schema, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise PydanticCustomError(
            "schema_not_json", "the schema holds NaN or Infinity, which are not JSON"
        ) from exc
    if _size(text) > MAX_SCHEMA_BYTES:
        raise _too_large(MAX_SCHEMA_BYTES)
    return text


def _size(text: str) -> int:
    """UTF-8 length of ``text`` (without encoding it when it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode())


def _bounded_schema(schema: dict[str, Any]) -> dict[str, Any]:
    schema_json(schema)
    return schema


JSONSchema = Annotated[dict[str, Any], AfterValidator(_bounded_schema)]
"""A JSON Schema object within ``MAX_SCHEMA_DEPTH`` and ``MAX_SCHEMA_BYTES``."""


_TOOLS_ARE = "the tools' parameter schemas are together"


def check_tools_budget(schemas: Iterable[Any]) -> None:
    """Raises ``PydanticCustomError`` when the tools' parameter schemas, as sent,
    clearly exceed ``MAX_TOOLS_BYTES`` together: a walk that stops at the bound,
    so that a huge tool list is refused before each tool is validated."""
    remaining = MAX_TOOLS_BYTES
    for schema in schemas:
        remaining -= 0 if schema is None else size_at_least(schema, remaining)
        if remaining < 0:
            raise _too_large(MAX_TOOLS_BYTES, _TOOLS_ARE)


def check_tools_size(schemas: Iterable[dict[str, Any] | None]) -> None:
    """Raises ``PydanticCustomError`` when the tools' parameter schemas (each
    already within the bounds of one schema) exceed ``MAX_TOOLS_BYTES`` together."""
    total = sum(_size(schema_json(schema)) for schema in schemas if schema is not None)
    if total > MAX_TOOLS_BYTES:
        raise _too_large(MAX_TOOLS_BYTES, _TOOLS_ARE)


def check_stop(stop: str | list[str] | None) -> str | list[str] | None:
    """``stop`` unchanged, if it has at most ``MAX_STOPS`` sequences of at most
    ``MAX_STOP_CHARS`` characters each."""
    stops = [stop] if isinstance(stop, str) else (stop or [])
    if len(stops) > MAX_STOPS:
        raise PydanticCustomError(
            "too_many_stops", "takes at most {limit} sequences", {"limit": MAX_STOPS}
        )
    if any(len(item) > MAX_STOP_CHARS for item in stops):
        raise PydanticCustomError(
            "stop_too_long",
            "a stop sequence is at most {limit} characters long",
            {"limit": MAX_STOP_CHARS},
        )
    return stop
