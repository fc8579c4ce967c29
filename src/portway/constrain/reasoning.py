"""Grammars that let a reasoning model think before the constrained answer.

A reasoning model (see ``portway.toolcalls.reasoning``) writes ``<think>…</think>``
before its answer; a grammar that allowed only the answer would forbid the
thinking, and for a model whose template already opened ``<think>`` it would force
the answer inside the thought. ``allow_reasoning`` puts a free-text thought
(anything but ``</think>``) and up to 8 whitespace characters before the grammar.
"""

from __future__ import annotations

import re
from dataclasses import replace

from portway.backends.base import Grammar
from portway.constrain.schema import lark_literal
from portway.toolcalls.reasoning import THINK_CLOSE, THINK_OPEN

_START = re.compile(r"^start:", re.MULTILINE)
_CLOSE = re.escape(THINK_CLOSE).replace("/", r"\/")  # as it goes in a Lark /regex/
_THOUGHT = (
    rf"REASONING_TEXT: /(?s:.*){_CLOSE}/ & ~/(?s:.*){_CLOSE}(?s:.+)/",
    r"REASONING_SPACE: /[ \t\r\n]{0,8}/",
)


def allow_reasoning(grammar: Grammar, *, starts_inside: bool) -> Grammar:
    """``grammar`` after an optional ``<think>…</think>`` block; with
    ``starts_inside`` (the prompt opened ``<think>``) the block's end comes first,
    and is not optional."""
    if not _START.search(grammar.source):
        raise ValueError("The grammar has no 'start' rule.")
    answer = _START.sub("reasoning_answer:", grammar.source, count=1)
    thought = "REASONING_TEXT REASONING_SPACE reasoning_answer"
    if starts_inside:
        start = f"start: {thought}"
    else:
        start = f"start: {lark_literal(THINK_OPEN)} {thought} | reasoning_answer"
    source = "\n".join((start, *_THOUGHT, answer))
    return replace(grammar, source=source)
