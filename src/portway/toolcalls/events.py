"""What a tool-call parser reports: text, and calls as they take shape."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass

_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 24


@dataclass(frozen=True)
class TextEvent:
    """Output that is not a tool call (the message's ``content``)."""

    text: str


@dataclass(frozen=True)
class CallStart:
    """A new call: its position among the calls, its id and the function's name.

    It comes before any ``CallArgs`` of the same ``index``.
    """

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class CallArgs:
    """A piece of a call's arguments; a call's pieces concatenate to its JSON text."""

    index: int
    fragment: str


Event = TextEvent | CallStart | CallArgs


def new_call_id() -> str:
    """``call_`` and 24 random letters and digits, as OpenAI's ids look."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
