"""Reasoning models' ``<think>…</think>``, split from the answer as it streams.

DeepSeek-R1 distills, Qwen3, QwQ and Phi-4-reasoning think in a ``<think>`` block
before they answer. Some chat templates open the block themselves (the prompt ends
with ``<think>``), so the output starts inside it: ``ThinkSplitter(starts_inside=
True)``; ``prompt_opens_think`` tells from a rendered prompt.
"""

from __future__ import annotations

import re
from typing import Literal

from portway.toolcalls.stream import held_suffix_length

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REASONING_MARKERS = (THINK_OPEN, THINK_CLOSE)
"""Markers the splitter must see as text (see ``TOOL_CALL_MARKERS``)."""

Part = Literal["reasoning", "content"]

_REASONING_NAMES = re.compile(r"qwen-?3|qwq|deepseek-r1|r1-distill|phi-4-(mini-)?reasoning", re.I)


class ThinkSplitter:
    """Splits output into reasoning (inside ``<think>…</think>``) and content.

    The tags themselves are dropped, and so is the whitespace right after
    ``</think>``. Text that may be the beginning of a tag is held back until it is
    known. Feeding a text whole or in any pieces gives the same reasoning and the
    same content; output that ends inside the block is all reasoning.
    """

    def __init__(self, starts_inside: bool = False) -> None:
        self._inside = starts_inside
        self._pending = ""
        self._strip_next = False

    def feed(self, text: str) -> list[tuple[Part, str]]:
        """The parts that ``text`` completes, in order (adjacent parts of one kind merged)."""
        self._pending += text
        return self._split(final=False)

    def finish(self) -> list[tuple[Part, str]]:
        """Whatever was held back, once the output has ended."""
        return self._split(final=True)

    def _split(self, *, final: bool) -> list[tuple[Part, str]]:
        parts: list[tuple[Part, str]] = []
        while self._pending:
            if self._strip_next:
                self._pending = self._pending.lstrip()
                if not self._pending:
                    break
                self._strip_next = False
            tag = THINK_CLOSE if self._inside else THINK_OPEN
            kind: Part = "reasoning" if self._inside else "content"
            index = self._pending.find(tag)
            if index < 0:
                keep = 0 if final else held_suffix_length(self._pending, (tag,))
                cut = len(self._pending) - keep
                _append(parts, kind, self._pending[:cut])
                self._pending = self._pending[cut:]
                break
            _append(parts, kind, self._pending[:index])
            self._pending = self._pending[index + len(tag) :]
            self._strip_next = self._inside
            self._inside = not self._inside
        return parts


def _append(parts: list[tuple[Part, str]], kind: Part, text: str) -> None:
    if not text:
        return
    if parts and parts[-1][0] == kind:
        parts[-1] = (kind, parts[-1][1] + text)
    else:
        parts.append((kind, text))


def reasoning_family(chat_template_source: str | None, model_name: str) -> bool:
    """Whether a model thinks in ``<think>`` blocks: its template mentions
    ``<think>``, or its name is one of Qwen3, QwQ, DeepSeek-R1 or Phi-4-reasoning."""
    if chat_template_source and THINK_OPEN in chat_template_source:
        return True
    return _REASONING_NAMES.search(model_name) is not None


def prompt_opens_think(prompt: str) -> bool:
    """Whether a rendered prompt ends inside an opened ``<think>`` block."""
    return prompt.rstrip().endswith(THINK_OPEN)
