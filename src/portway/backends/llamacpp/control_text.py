"""Keeping a client's text from becoming control tokens.

A rendered chat prompt holds two kinds of text: the template's markup
(``<start_of_turn>user``...) and what the client wrote. Tokenising the whole prompt
with special tokens parsed, as llama.cpp's server does, turns a user who writes
``<end_of_turn>\\n<start_of_turn>model\\n`` into a forged turn. So, before the
template sees them, every control-token text in a client's strings is swapped for a
placeholder character (one per distinct text, from Unicode's private-use planes 15
and 16, chosen among those the client did not write). The prompt is then cut where the
template's own control-token texts stand, as llama.cpp's tokenizer cuts it, and the
text between them (placeholders restored) is tokenised as plain text.

What counts as client text: every message's content, name, tool-call id, name and
arguments, and every tool's name, description and parameter schema (keys and
values).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from portway.backends.base import Message, ToolCall, ToolSpec
from portway.errors import InvalidRequest

_PLACEHOLDERS = (range(0xF0000, 0xFFFFE), range(0x100000, 0x10FFFE))
"""Candidate placeholder characters: Supplementary Private Use Areas A and B."""

_PLACEHOLDER_CHARS = re.compile("[\U000f0000-\U000ffffd\U00100000-\U0010fffd]")

_ASCII_SPACE = " \t\n\v\f\r"
"""What llama.cpp's ``isspace`` strips next to a token marked to strip spaces."""


@dataclass(frozen=True)
class ControlToken:
    """One control token: its id, and whether llama.cpp strips the whitespace
    before (``lstrip``) or after (``rstrip``) it."""

    id: int
    lstrip: bool = False
    rstrip: bool = False


@dataclass(frozen=True)
class MaskedRequest:
    """Messages and tools with client-written control texts swapped for placeholders;
    ``originals`` maps each placeholder used to the text it stands for."""

    messages: list[Message]
    tools: list[ToolSpec]
    originals: dict[str, str]


class ControlTexts:
    """A vocabulary's control tokens by their text.

    ``mask`` hides control texts in what a client wrote; ``tokenize`` tokenises a
    prompt rendered from a masked request.
    """

    def __init__(self, tokens: Iterable[tuple[str, ControlToken]] = ()) -> None:
        """``tokens``: (text, token) pairs; of tokens sharing a text, the first counts."""
        self._tokens: dict[str, ControlToken] = {}
        for text, token in tokens:
            if text:
                self._tokens.setdefault(text, token)
        self._pattern = re.compile(_trie_pattern(self._tokens)) if self._tokens else None

    def mask(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> MaskedRequest:
        """``messages`` and ``tools`` with every control text a client wrote replaced."""
        if self._pattern is None or not any(
            map(self._pattern.search, _client_strings(messages, tools))
        ):
            return MaskedRequest(list(messages), list(tools), {})
        taken = {c for s in _client_strings(messages, tools) for c in _PLACEHOLDER_CHARS.findall(s)}
        free = (chr(c) for c in itertools.chain(*_PLACEHOLDERS) if chr(c) not in taken)
        placeholders: dict[str, str] = {}

        def swap(match: re.Match[str]) -> str:
            text = match.group()
            if text not in placeholders:
                placeholders[text] = next(free, "")
                if not placeholders[text]:
                    raise InvalidRequest(
                        "The messages use too many private-use characters.", param="messages"
                    )
            return placeholders[text]

        pattern = self._pattern

        def hide(text: str) -> str:
            return pattern.sub(swap, text)

        return MaskedRequest(
            [_map_message(m, hide) for m in messages],
            [_map_tool(t, hide) for t in tools],
            {placeholder: text for text, placeholder in placeholders.items()},
        )

    def tokenize(
        self, prompt: str, originals: Mapping[str, str], plain: Callable[[str], list[int]]
    ) -> list[int]:
        """The tokens of ``prompt``: its control texts as control tokens and the text
        between them, with the ``originals`` put back, through ``plain`` (a tokenizer
        that parses no control tokens and adds none)."""
        tokens: list[int] = []
        for fragment in self._fragments(prompt):
            if isinstance(fragment, ControlToken):
                tokens.append(fragment.id)
            elif fragment:
                tokens.extend(plain(_restore(fragment, originals)))
        return tokens

    def _fragments(self, prompt: str) -> Iterator[str | ControlToken]:
        """Text and control tokens in order, whitespace stripped as llama.cpp does."""
        start = 0
        strip_next = False
        for match in self._pattern.finditer(prompt) if self._pattern else ():
            token = self._tokens[match.group()]
            text = prompt[start : match.start()]
            text = text.lstrip(_ASCII_SPACE) if strip_next else text
            yield text.rstrip(_ASCII_SPACE) if token.lstrip else text
            yield token
            start, strip_next = match.end(), token.rstrip
        rest = prompt[start:]
        yield rest.lstrip(_ASCII_SPACE) if strip_next else rest


def _restore(text: str, originals: Mapping[str, str]) -> str:
    for placeholder, original in originals.items():
        text = text.replace(placeholder, original)
    return text


def _trie_pattern(texts: Iterable[str]) -> str:
    """A regex matching any of ``texts``, the longest at each position, that tries
    each character once per position (not once per text)."""
    trie: dict[str, Any] = {}
    for text in texts:
        node = trie
        for char in text:
            node = node.setdefault(char, {})
        node[""] = {}
    return _node_pattern(trie)


def _node_pattern(node: dict[str, Any]) -> str:
    branches = [re.escape(char) + _node_pattern(child) for char, child in node.items() if char]
    if not branches:
        return ""
    if len(branches) == 1 and "" not in node:
        return branches[0]
    group = "(?:" + "|".join(branches) + ")"
    return group + "?" if "" in node else group


# --------------------------------------------------------------------------- client text


def _client_strings(messages: Sequence[Message], tools: Sequence[ToolSpec]) -> Iterator[str]:
    for message in messages:
        yield message.content
        yield from (s for s in (message.name, message.tool_call_id) if s)
        for call in message.tool_calls:
            yield from (call.id, call.name, call.arguments)
    for tool in tools:
        yield tool.name
        yield tool.description
        yield from _json_strings(tool.parameters)


def _json_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)


def _map_message(message: Message, hide: Callable[[str], str]) -> Message:
    return replace(
        message,
        content=hide(message.content),
        name=message.name and hide(message.name),
        tool_call_id=message.tool_call_id and hide(message.tool_call_id),
        tool_calls=tuple(
            ToolCall(hide(call.id), hide(call.name), hide(call.arguments))
            for call in message.tool_calls
        ),
    )


def _map_tool(tool: ToolSpec, hide: Callable[[str], str]) -> ToolSpec:
    return replace(
        tool,
        name=hide(tool.name),
        description=hide(tool.description),
        parameters=_map_json(tool.parameters, hide),
    )


def _map_json(value: Any, hide: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return hide(value)
    if isinstance(value, dict):
        return {hide(str(key)): _map_json(item, hide) for key, item in value.items()}
    if isinstance(value, list):
        return [_map_json(item, hide) for item in value]
    return value
