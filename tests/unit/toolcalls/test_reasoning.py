"""Splitting ``<think>`` reasoning from the answer, whole and in pieces."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portway.toolcalls.reasoning import (
    ThinkSplitter,
    prompt_opens_think,
    reasoning_family,
)

Split = tuple[str, str]
"""All reasoning, all content."""


def split(pieces: Sequence[str], *, starts_inside: bool = False) -> Split:
    splitter = ThinkSplitter(starts_inside=starts_inside)
    parts = [part for piece in pieces for part in splitter.feed(piece)] + splitter.finish()
    assert all(text for _, text in parts), "no empty parts"
    reasoning = "".join(text for kind, text in parts if kind == "reasoning")
    content = "".join(text for kind, text in parts if kind == "content")
    return reasoning, content


CASES = [
    # DeepSeek-R1 distill: the template opened <think>, the output closes it.
    (
        True,
        'Okay, 2 + 2: add them.\nThat is 4 — "four" <b>.\n</think>\n\nThe answer is **4**.',
        ('Okay, 2 + 2: add them.\nThat is 4 — "four" <b>.\n', "The answer is **4**."),
    ),
    # Qwen3 writes both tags itself.
    (
        False,
        "<think>\nThe user greets me. 你好!\n</think>\n\nHello! How can I help?",
        ("\nThe user greets me. 你好!\n", "Hello! How can I help?"),
    ),
    # Qwen3 with thinking disabled: an empty block.
    (False, "<think>\n\n</think>\n\nHi.", ("\n\n", "Hi.")),
    # No reasoning at all; text that looks like a tag stays content.
    (False, "Use <thin> or <thinking> tags, 1 < 2.", ("", "Use <thin> or <thinking> tags, 1 < 2.")),
    # Cut short while thinking (max_tokens): all reasoning.
    (True, "Let me think about this carefully and", ("Let me think about this carefully and", "")),
    (False, "<think>Step 1: read the", ("Step 1: read the", "")),
    # Text ending in a partial tag is flushed at the end.
    (False, "Answer</thi", ("", "Answer</thi")),
]


@pytest.mark.parametrize(("starts_inside", "output", "expected"), CASES)
def test_whole_outputs(starts_inside: bool, output: str, expected: Split) -> None:
    assert split([output], starts_inside=starts_inside) == expected


@pytest.mark.parametrize(("starts_inside", "output", "expected"), CASES)
def test_one_character_at_a_time(starts_inside: bool, output: str, expected: Split) -> None:
    assert split(list(output), starts_inside=starts_inside) == expected


@settings(max_examples=300, deadline=None)
@given(
    case=st.sampled_from(CASES),
    points=st.lists(st.integers(min_value=0, max_value=1_000), max_size=10),
)
def test_any_pieces(case: tuple[bool, str, Split], points: list[int]) -> None:
    starts_inside, output, expected = case
    bounds = [0, *sorted({p % (len(output) + 1) for p in points}), len(output)]
    pieces = [output[a:b] for a, b in itertools.pairwise(bounds)]
    assert split(pieces, starts_inside=starts_inside) == expected


def test_partial_tags_are_held_back_until_known() -> None:
    splitter = ThinkSplitter()
    assert splitter.feed("<th") == []
    assert splitter.feed("ink>Hmm. </thi") == [("reasoning", "Hmm. ")]
    assert splitter.feed("nk>  \n") == []
    assert splitter.feed(" Yes.") == [("content", "Yes.")]
    assert splitter.finish() == []


def test_parts_come_in_order_and_merged() -> None:
    splitter = ThinkSplitter()
    parts = splitter.feed("Before <think>why</think> after") + splitter.finish()
    assert parts == [("content", "Before "), ("reasoning", "why"), ("content", "after")]


@pytest.mark.parametrize(
    ("template", "name", "reasons"),
    [
        ("{% if enable_thinking %}<think>\n{% endif %}", "custom", True),
        ("{{ bos_token }}<start_of_turn>", "gemma-3-270m", False),
        (None, "Qwen3-4B-Q4_K_M", True),
        (None, "QwQ-32B", True),
        (None, "DeepSeek-R1-Distill-Qwen-7B", True),
        (None, "phi-4-reasoning-plus", True),
        (None, "Phi-4-mini-reasoning", True),
        (None, "Qwen2.5-7B-Instruct", False),
        (None, "Llama-3.1-8B", False),
    ],
)
def test_reasoning_family(template: str | None, name: str, reasons: bool) -> None:
    assert reasoning_family(template, name) is reasons


def test_prompt_opens_think() -> None:
    assert prompt_opens_think("<|Assistant|><think>\n")
    assert not prompt_opens_think("<|im_start|>assistant\n")
    assert not prompt_opens_think("<think>\n\n</think>\n\n")
