"""Reading text that arrives in pieces, for parsers written as generators.

A region parser is a generator that reads a ``Cursor``. When it needs a character
that has not arrived yet it yields; the driver resumes it once more text is
pushed, or once the cursor is closed (then reads see the end of the text). Every
decision waits for the characters it depends on, so the outcome never depends on
where the text was cut into pieces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
Need = Generator[None, None, T]
"""A read that may have to wait for more text: ``result = yield from cursor.read()``."""

_STRING_SPECIAL = re.compile(r'["\\]')
_WHITESPACE = " \t\r\n"


def held_suffix_length(text: str, words: Iterable[str]) -> int:
    """Length of the longest end of ``text`` that could begin one of ``words``
    (a proper prefix of it), and so must be held back until more text decides."""
    longest = 0
    for word in words:
        for length in range(min(len(word) - 1, len(text)), longest, -1):
            if text.endswith(word[:length]):
                longest = length
                break
    return longest


class Cursor:
    """A growing text and a reading position in it."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.pos = 0
        self.closed = False

    def push(self, text: str) -> None:
        self.text += text

    def close(self) -> None:
        """No more text will come: reads past the end now answer instead of waiting."""
        self.closed = True

    @property
    def rest(self) -> str:
        """The text not read yet."""
        return self.text[self.pos :]

    def peek(self) -> Need[str | None]:
        """The next character without reading it; None at the end of a closed text."""
        while self.pos >= len(self.text):
            if self.closed:
                return None
            yield
        return self.text[self.pos]

    def take(self) -> Need[str | None]:
        """Reads the next character; None at the end of a closed text."""
        char = yield from self.peek()
        if char is not None:
            self.pos += 1
        return char

    def skip_whitespace(self) -> Need[None]:
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.pos += 1
            if self.pos < len(self.text) or self.closed:
                return
            yield

    def accept(self, word: str) -> Need[bool]:
        """Reads ``word`` if the text continues with it; otherwise reads nothing."""
        while True:
            available = self.text[self.pos : self.pos + len(word)]
            if available == word:
                self.pos += len(word)
                return True
            if not word.startswith(available) or self.closed:
                return False
            yield

    def read_while(self, allowed: str) -> Need[str]:
        """Reads characters from ``allowed`` until another one (or the end) comes."""
        start = self.pos
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in allowed:
                self.pos += 1
            if self.pos < len(self.text) or self.closed:
                return self.text[start : self.pos]
            yield


# --------------------------------------------------------------------------- JSON


@dataclass
class Member:
    """One member of a JSON object: its key, and the span of its value's text."""

    key: str
    start: int
    end: int | None = None


_KEY, _IN_KEY, _COLON, _VALUE, _SCALAR, _AFTER = range(6)


class JsonScanner:
    """Follows one JSON object or array, as text arrives, to where it ends.

    For an object it also records the top-level members (key and value span), so a
    caller can use a value as soon as it is complete. It does not validate: text
    that is not JSON still ends at its matching bracket, and the caller parses the
    span to validate it.
    """

    def __init__(self, start: int) -> None:
        self.start = start
        self.end: int | None = None
        self.position = start
        self.members: list[Member] = []
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._state = _KEY
        self._key_start = 0

    def scan(self, text: str) -> int:
        """Reads ``text`` from where the last call stopped; returns the new position."""
        pos = self.position
        while pos < len(text) and self.end is None:
            if self._in_string:
                pos = self._string(text, pos)
            else:
                self._structure(text, pos)
                pos += 1
        self.position = pos
        return pos

    def open_member(self) -> Member | None:
        """The member whose value is being read, if any."""
        if self.members and self.members[-1].end is None:
            return self.members[-1]
        return None

    def _string(self, text: str, pos: int) -> int:
        if self._escaped:
            self._escaped = False
            return pos + 1
        found = _STRING_SPECIAL.search(text, pos)
        if found is None:
            return len(text)
        pos = found.start()
        if text[pos] == "\\":
            self._escaped = True
            return pos + 1
        self._in_string = False
        if self._depth == 1:
            self._string_closed(text, pos)
        return pos + 1

    def _string_closed(self, text: str, pos: int) -> None:
        if self._state == _IN_KEY:
            self.members.append(Member(_decode_key(text[self._key_start : pos + 1]), -1))
            self._state = _COLON
        elif self._state == _VALUE:
            self._end_value(pos + 1)

    def _structure(self, text: str, pos: int) -> None:
        char = text[pos]
        if self._depth == 0:
            self._depth = 1
            self._state = _KEY if char == "{" else _AFTER
        elif self._depth > 1 or text[self.start] == "[":
            self._nested(char, pos)
        else:
            self._member_structure(char, pos)

    def _nested(self, char: str, pos: int) -> None:
        if char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
            if self._depth == 0:
                self.end = pos + 1
            elif self._depth == 1 and self.open_member() is not None:
                self._end_value(pos + 1)

    def _member_structure(self, char: str, pos: int) -> None:
        if self._state == _SCALAR and (char in _WHITESPACE or char in ",}"):
            self._end_value(pos)
        if char in _WHITESPACE:
            return
        if char == "}":
            self._depth = 0
            self.end = pos + 1
        elif char == '"' and self._state in (_KEY, _VALUE):
            self._in_string = True
            if self._state == _KEY:
                self._state, self._key_start = _IN_KEY, pos
            else:
                self._start_value(pos)
        elif char == ":" and self._state == _COLON:
            self._state = _VALUE
        elif char == ",":
            self._state = _KEY
        elif self._state == _VALUE:
            self._start_value(pos)
            if char in "{[":
                self._depth = 2
            else:
                self._state = _SCALAR

    def _start_value(self, pos: int) -> None:
        if self.members and self.members[-1].start < 0:
            self.members[-1].start = pos
        else:
            self.members.append(Member("", pos))

    def _end_value(self, end: int) -> None:
        member = self.open_member()
        if member is not None and member.start >= 0:
            member.end = end
        self._state = _AFTER


def _decode_key(raw: str) -> str:
    try:
        key = json.loads(raw)
    except ValueError:
        return raw
    return key if isinstance(key, str) else raw
