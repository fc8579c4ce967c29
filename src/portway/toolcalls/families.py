"""The tool-call syntax of each model family, and how to tell a model's family.

=============  ===============================================================
family         what the model writes
=============  ===============================================================
hermes         ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``,
               once per call (Hermes, Qwen 2.5/3)
llama3         ``{"name": ..., "parameters": {...}}``, optionally after
               ``<|python_tag|>``; several separated by ``;`` (Llama 3.x)
mistral        ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``, or
               ``[TOOL_CALLS]NAME[ARGS]{...}`` per call (newer tokenizers)
functiongemma  ``<start_function_call>call:NAME{key:<escape>value<escape>}``
               ``<end_function_call>`` (arguments converted to JSON)
json           a JSON object ``{"name": ..., "arguments": {...}}`` or an array
               of them, optionally in a ```json fence: what Portway asks of
               models whose chat template knows no tools
=============  ===============================================================
"""

from __future__ import annotations

from collections.abc import Collection

from portway.toolcalls import functiongemma
from portway.toolcalls.calls import CallDraft, read_arguments_object, read_call_object
from portway.toolcalls.parser import Family, ToolCallParser
from portway.toolcalls.stream import Cursor, Need

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
MISTRAL_CALLS, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"

TOOL_CALL_MARKERS = (
    HERMES_OPEN,
    HERMES_CLOSE,
    PYTHON_TAG,
    MISTRAL_CALLS,
    MISTRAL_ARGS,
    MISTRAL_CALL_ID,
    functiongemma.CALL_OPEN,
    functiongemma.CALL_CLOSE,
    functiongemma.ESCAPE,
)
"""Markers the parsers must see as text. A backend that hides control tokens
(llama.cpp does) has to write these ones out when the model emits them."""


def _new_draft(cursor: Cursor, drafts: list[CallDraft]) -> CallDraft:
    draft = CallDraft(cursor)
    drafts.append(draft)
    return draft


def _optional(cursor: Cursor, word: str) -> Need[None]:
    """Reads whitespace and ``word`` if they come next; else reads nothing."""
    mark = cursor.pos
    yield from cursor.skip_whitespace()
    if not (yield from cursor.accept(word)):
        cursor.pos = mark


def read_hermes(cursor: Cursor, drafts: list[CallDraft]) -> Need[bool]:
    """After ``<tool_call>``: one call object, then ``</tool_call>`` (tolerated missing)."""
    yield from cursor.skip_whitespace()
    if not (yield from read_call_object(cursor, _new_draft(cursor, drafts))):
        return False
    yield from _optional(cursor, HERMES_CLOSE)
    return True


def read_llama3(cursor: Cursor, drafts: list[CallDraft]) -> Need[bool]:
    """Call objects separated by ``;``."""
    while True:
        yield from cursor.skip_whitespace()
        if not (yield from read_call_object(cursor, _new_draft(cursor, drafts))):
            return False
        mark = cursor.pos
        yield from cursor.skip_whitespace()
        if not (yield from cursor.accept(";")):
            cursor.pos = mark
            return True


def read_call_array(cursor: Cursor, drafts: list[CallDraft]) -> Need[bool]:
    """``[call, call, ...]`` with at least one call object."""
    if not (yield from cursor.accept("[")):
        return False
    while True:
        yield from cursor.skip_whitespace()
        if not (yield from read_call_object(cursor, _new_draft(cursor, drafts))):
            return False
        yield from cursor.skip_whitespace()
        separator = yield from cursor.take()
        if separator != ",":
            return separator == "]"


def read_mistral(cursor: Cursor, drafts: list[CallDraft]) -> Need[bool]:
    """After ``[TOOL_CALLS]``: an array of calls, or ``NAME[ARGS]{...}``."""
    yield from cursor.skip_whitespace()
    if (yield from cursor.peek()) == "[":
        return (yield from read_call_array(cursor, drafts))
    draft = _new_draft(cursor, drafts)
    name = yield from cursor.read_while(functiongemma.NAME_CHARACTERS)
    if not name:
        return False
    draft.name = name
    if (yield from cursor.accept(MISTRAL_CALL_ID)):
        yield from cursor.read_while(functiongemma.NAME_CHARACTERS)
    if not (yield from cursor.accept(MISTRAL_ARGS)):
        return False
    return (yield from read_arguments_object(cursor, draft))


def read_functiongemma(cursor: Cursor, drafts: list[CallDraft]) -> Need[bool]:
    """After ``<start_function_call>``: ``call:NAME{...}<end_function_call>``."""
    draft = _new_draft(cursor, drafts)
    call = yield from functiongemma.read_call(cursor)
    if call is None:
        return False
    draft.name, body = call
    draft.converted_arguments = functiongemma.arguments_json(body)
    if draft.converted_arguments is None:
        return False
    draft.complete = True
    yield from _optional(cursor, functiongemma.CALL_CLOSE)
    return True


def read_json(cursor: Cursor, drafts: list[CallDraft]) -> Need[bool]:
    """A call object or an array of them, optionally fenced as ```json."""
    fenced = yield from cursor.accept("```")
    if fenced:
        yield from cursor.accept("json")
        yield from cursor.skip_whitespace()
    if (yield from cursor.peek()) == "[":
        valid = yield from read_call_array(cursor, drafts)
    else:
        valid = yield from read_call_object(cursor, _new_draft(cursor, drafts))
    if valid and fenced:
        yield from _optional(cursor, "```")
    return valid


FAMILIES: dict[str, Family] = {
    "hermes": Family("hermes", read_hermes, markers=(HERMES_OPEN,)),
    "llama3": Family("llama3", read_llama3, markers=(PYTHON_TAG,), start_markers=("{",)),
    "mistral": Family("mistral", read_mistral, markers=(MISTRAL_CALLS,)),
    "functiongemma": Family(
        "functiongemma", read_functiongemma, markers=(functiongemma.CALL_OPEN,)
    ),
    "json": Family("json", read_json, start_markers=("{", "[", "```")),
}


def parser_for(
    family: str, *, constrained: bool = False, tool_names: Collection[str] = ()
) -> ToolCallParser:
    """A new parser for one output of a model of ``family`` (see ``FAMILIES``).

    ``constrained``: the output was forced by ``tool_call_grammar``, so calls are
    streamed as they are written. ``tool_names``: an unconstrained call to any other
    name is left as text. Raises ``ValueError`` for an unknown family.
    """
    try:
        return ToolCallParser(FAMILIES[family], constrained=constrained, tool_names=tool_names)
    except KeyError:
        raise ValueError(f"Unknown tool-call family {family!r}.") from None


_TEMPLATE_MARKERS = (
    ("start_function_call", "functiongemma"),
    (MISTRAL_CALLS, "mistral"),
    (HERMES_OPEN, "hermes"),
    (PYTHON_TAG, "llama3"),
    ("ipython", "llama3"),
)


def family_from_template(chat_template_source: str | None, model_name: str) -> str:
    """The family whose syntax a model's chat template teaches it, found by the
    markers in the Jinja source; ``json`` when there are none.

    ``json`` is also right for a model without a template (or whose template knows
    no tools), whatever ``model_name`` says: Portway then describes the tools in
    the prompt and asks for the ``json`` syntax, whatever the model was trained on.
    """
    source = chat_template_source or ""
    for marker, family in _TEMPLATE_MARKERS:
        if marker in source:
            return family
    return "json"
