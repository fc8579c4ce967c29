"""Calls as a region parser reads them, and the checks a finished call must pass."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from portway.toolcalls.stream import Cursor, JsonScanner, Need

ARGUMENT_KEYS = ("arguments", "parameters")
"""Keys under which the families put a call's arguments."""

BARE_CALL_KEYS = frozenset({"name", "arguments", "parameters", "id", "type"})
"""The only keys a call written as bare JSON may have (else it is content, not a call)."""


@dataclass
class CallDraft:
    """A call being read: its name once known, and where its arguments' text is.

    ``arguments_start``/``arguments_end`` index the region's cursor text;
    ``arguments_end`` is None while the arguments are still being written, and then
    ``readable_end`` says how far they have been read. A family that converts its
    own syntax sets ``converted_arguments`` instead. ``call_object`` is the whole
    ``{"name": ..., ...}`` text for families that write calls as JSON objects.
    """

    cursor: Cursor
    name: str | None = None
    arguments_start: int | None = None
    arguments_end: int | None = None
    readable_end: int = 0
    converted_arguments: str | None = None
    call_object: str | None = None
    complete: bool = False

    @property
    def streams_arguments(self) -> bool:
        """Whether the arguments are a JSON object written in place, so their text can
        be passed on as it arrives."""
        start = self.arguments_start
        return start is not None and self.cursor.text[start : start + 1] == "{"

    def arguments_so_far(self) -> str:
        if self.arguments_start is None:
            return ""
        end = self.arguments_end if self.arguments_end is not None else self.readable_end
        return self.cursor.text[self.arguments_start : end]

    def raw_arguments(self) -> str | None:
        """The arguments' complete text, or None if the call has none."""
        if self.converted_arguments is not None:
            return self.converted_arguments
        if self.arguments_start is None or self.arguments_end is None:
            return None
        return self.cursor.text[self.arguments_start : self.arguments_end]


def read_call_object(cursor: Cursor, draft: CallDraft) -> Need[bool]:
    """Reads a ``{"name": ..., "arguments": {...}}`` object into ``draft``, updating
    it as text arrives; False if the text is no JSON object or ends inside it."""
    if (yield from cursor.peek()) != "{":
        return False
    scanner = JsonScanner(cursor.pos)
    while True:
        cursor.pos = scanner.scan(cursor.text)
        _update_draft(draft, scanner)
        if scanner.end is not None:
            draft.call_object = cursor.text[scanner.start : scanner.end]
            draft.complete = True
            return True
        if cursor.closed:
            return False
        yield


def _update_draft(draft: CallDraft, scanner: JsonScanner) -> None:
    text = draft.cursor.text
    for member in scanner.members:
        if member.key == "name" and draft.name is None and member.end is not None:
            draft.name = _json_string(text[member.start : member.end])
        if member.key in ARGUMENT_KEYS and draft.arguments_start is None and member.start >= 0:
            draft.arguments_start = member.start
        if member.start == draft.arguments_start:
            draft.arguments_end = member.end
    draft.readable_end = scanner.position


def read_arguments_object(cursor: Cursor, draft: CallDraft) -> Need[bool]:
    """Reads a JSON object that is the call's arguments (the whole of it)."""
    if (yield from cursor.peek()) != "{":
        return False
    draft.arguments_start = cursor.pos
    scanner = JsonScanner(cursor.pos)
    while True:
        cursor.pos = draft.readable_end = scanner.scan(cursor.text)
        if scanner.end is not None:
            draft.arguments_end = scanner.end
            draft.complete = True
            return True
        if cursor.closed:
            return False
        yield


def _json_string(raw: str) -> str | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class CheckedCall:
    name: str
    arguments: str


def checked_call(
    draft: CallDraft, *, bare: bool, tool_names: Collection[str]
) -> CheckedCall | None:
    """The call ``draft`` makes, or None if it is not a valid call.

    Valid: the name is a string (one of ``tool_names`` when given) and the
    arguments are a JSON object, written in place (kept as the model wrote them)
    or as a string holding a JSON object; a call without arguments gets ``{}``.
    ``bare`` calls (JSON with no tag around it) must also have only call keys and
    an arguments key, or they are taken for content.
    """
    if not draft.complete or not draft.name or (tool_names and draft.name not in tool_names):
        return None
    if draft.call_object is not None and not _is_call_object(draft.call_object, bare=bare):
        return None
    raw = draft.raw_arguments()
    if raw is None:
        return None if bare else CheckedCall(draft.name, "{}")
    arguments = _object_text(raw)
    return None if arguments is None else CheckedCall(draft.name, arguments)


def _is_call_object(text: str, *, bare: bool) -> bool:
    value = _loads(text)
    if not isinstance(value, dict):
        return False
    if not bare:
        return True
    return set(value) <= BARE_CALL_KEYS and any(key in value for key in ARGUMENT_KEYS)


def _object_text(raw: str) -> str | None:
    """``raw`` if it is a JSON object; the string's text if it is a string holding one."""
    value = _loads(raw)
    if isinstance(value, dict):
        return raw
    if isinstance(value, str) and isinstance(_loads(value), dict):
        return value
    return None


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
