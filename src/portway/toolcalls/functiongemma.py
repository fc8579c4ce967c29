"""FunctionGemma's argument syntax, converted to JSON.

FunctionGemma writes ``call:NAME{key:value,...}`` between ``<start_function_call>``
and ``<end_function_call>``. Keys are bare; strings are wrapped in ``<escape>``
tokens (so they may hold any character); numbers, ``true``, ``false`` and ``null``
are bare; objects and arrays nest with ``{}`` and ``[]``.
"""

from __future__ import annotations

import json
from typing import Any

from portway.toolcalls.stream import Cursor, Need

ESCAPE = "<escape>"
CALL_OPEN = "<start_function_call>"
CALL_CLOSE = "<end_function_call>"
NAME_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-."


class _SyntaxError(ValueError):
    pass


def arguments_json(body: str) -> str | None:
    """The JSON object text for a ``{key:value,...}`` body; None if it is malformed."""
    try:
        value, end = _value(body, 0)
    except _SyntaxError:
        return None
    if end != len(body) or not isinstance(value, dict):
        return None
    return json.dumps(value, ensure_ascii=False)


def _value(text: str, pos: int) -> tuple[Any, int]:
    if text.startswith(ESCAPE, pos):
        return _string(text, pos + len(ESCAPE))
    if text.startswith("{", pos):
        return _object(text, pos + 1)
    if text.startswith("[", pos):
        return _array(text, pos + 1)
    return _scalar(text, pos)


def _string(text: str, pos: int) -> tuple[str, int]:
    end = text.find(ESCAPE, pos)
    if end < 0:
        raise _SyntaxError("unterminated string")
    return text[pos:end], end + len(ESCAPE)


def _object(text: str, pos: int) -> tuple[dict[str, Any], int]:
    members: dict[str, Any] = {}
    if text.startswith("}", pos):
        return members, pos + 1
    while True:
        colon = text.find(":", pos)
        if colon < 0:
            raise _SyntaxError("member without ':'")
        key = text[pos:colon].strip()
        if not key or any(char in key for char in "{}[],"):
            raise _SyntaxError("bad key")
        members[key], pos = _value(text, colon + 1)
        pos = _expect_separator(text, pos, "}")
        if text[pos - 1] == "}":
            return members, pos


def _array(text: str, pos: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    if text.startswith("]", pos):
        return items, pos + 1
    while True:
        item, pos = _value(text, pos)
        items.append(item)
        pos = _expect_separator(text, pos, "]")
        if text[pos - 1] == "]":
            return items, pos


def _expect_separator(text: str, pos: int, closing: str) -> int:
    """Reads the ``,`` between members or the closing bracket; returns the position after."""
    if pos < len(text) and text[pos] in (",", closing):
        return pos + 1
    raise _SyntaxError(f"expected ',' or {closing!r}")


def _scalar(text: str, pos: int) -> tuple[Any, int]:
    end = pos
    while end < len(text) and text[end] not in ",}]":
        end += 1
    raw = text[pos:end].strip()
    if not raw:
        raise _SyntaxError("empty value")
    try:
        return json.loads(raw), end
    except ValueError:
        return raw, end  # a bare word: FunctionGemma meant a string


def read_call(cursor: Cursor) -> Need[tuple[str, str] | None]:
    """Reads ``call:NAME{...}``: the name and the raw ``{...}`` body, or None."""
    if not (yield from cursor.accept("call:")):
        return None
    name = yield from cursor.read_while(NAME_CHARACTERS)
    if not name or (yield from cursor.peek()) != "{":
        return None
    start = cursor.pos
    if not (yield from _skip_braces(cursor)):
        return None
    return name, cursor.text[start : cursor.pos]


def _skip_braces(cursor: Cursor) -> Need[bool]:
    """Reads a bracketed value whose strings are ``<escape>``-delimited."""
    depth = 0
    in_string = False
    while True:
        char = yield from cursor.peek()
        if char is None:
            return False
        if char == "<" and (yield from cursor.accept(ESCAPE)):
            in_string = not in_string
            continue
        cursor.pos += 1
        if in_string:
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return True
