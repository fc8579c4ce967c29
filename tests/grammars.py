"""What a grammar allows, decided without a model.

A byte-level tokenizer (one token per byte, plus an end token) stands in for a
model's: llguidance's matcher then says exactly which texts a grammar allows. Tests
of sampled output use it as their oracle: whatever the model happens to write on
this CPU, a finished output must be complete under the grammar and a cut one must
be a prefix of something the grammar allows.
"""

from __future__ import annotations

import llguidance

from portway.backends.base import Grammar
from portway.constrain.runtime import GrammarCompiler

EOS = 256


class _ByteTokenizer:
    eos_token_id = EOS
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"\xff<eos>"]
    special_token_ids = [EOS]

    def __call__(self, text: bytes | str) -> list[int]:
        return list(text.encode() if isinstance(text, str) else text)


TOKENIZER = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_ByteTokenizer()))


def matcher(grammar: Grammar) -> llguidance.LLMatcher:
    return GrammarCompiler(TOKENIZER).matcher(grammar)


def allows(grammar: Grammar, text: str) -> bool:
    """Whether ``text`` is a complete output under ``grammar``."""
    m = matcher(grammar)
    return m.consume_tokens(list(text.encode())) and m.is_accepting()


def allows_prefix(grammar: Grammar, text: str) -> bool:
    """Whether ``text`` can be continued into an output under ``grammar``. A trailing
    U+FFFD (a character cut in the middle by ``max_tokens``) is not counted."""
    return matcher(grammar).consume_tokens(list(text.removesuffix("\ufffd").encode()))


def follows(grammar: Grammar, text: str, finish_reason: str | None) -> bool:
    """Whether an output is consistent with its grammar and how it finished:
    complete when it stopped, a prefix when ``max_tokens`` cut it (``length``)."""
    if finish_reason == "stop":
        return allows(grammar, text)
    return finish_reason == "length" and allows_prefix(grammar, text)
