"""Grammars applied during generation: a compiled matcher per request, and the
logits mask it computes at every step.

``GrammarCompiler`` compiles a ``Grammar`` for one tokenizer and keeps the most
recently used compiled matchers, so a repeated schema costs a copy (microseconds)
instead of a compilation. ``GrammarMask`` follows one generation: as a logits
processor it sets the logit of every token the grammar forbids to -inf, and
``accept`` advances it with each sampled token.

The mask is applied with numpy only: llguidance writes a bitmask (one bit per
token, 32 KiB for 262k tokens) and it is unpacked and applied in place, with no
Python loop over the vocabulary.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import llguidance
import llguidance.numpy
import numpy as np

from portway.backends.base import Grammar
from portway.constrain.errors import SchemaError
from portway.constrain.schema import compile_error_reason, parser_limits
from portway.errors import BackendError, InvalidRequest


class GrammarCompiler:
    """Compiles grammars for one tokenizer; keeps up to ``capacity`` compiled ones.

    Thread-safe: compiling runs outside the lock (llguidance releases the GIL while
    it compiles), so a long compilation does not hold up requests for cached ones.
    """

    def __init__(self, tokenizer: llguidance.LLTokenizer, capacity: int = 32) -> None:
        self.tokenizer = tokenizer
        self._capacity = capacity
        self._compiled: OrderedDict[str, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def matcher(self, grammar: Grammar) -> llguidance.LLMatcher:
        """A fresh matcher for ``grammar`` at its start.

        Raises ``SchemaError`` (naming ``grammar.param``) when the grammar cannot be
        compiled for this tokenizer within ``parser_limits()``.
        """
        with self._lock:
            compiled = self._compiled.get(grammar.source)
            if compiled is not None:
                self._compiled.move_to_end(grammar.source)
        if compiled is None:
            compiled = self._compile(grammar)
            with self._lock:
                self._compiled[grammar.source] = compiled
                while len(self._compiled) > self._capacity:
                    self._compiled.popitem(last=False)
        return compiled.deep_copy()

    def _compile(self, grammar: Grammar) -> llguidance.LLMatcher:
        matcher = llguidance.LLMatcher(
            self.tokenizer,
            llguidance.LLMatcher.grammar_from_lark(grammar.source),
            log_level=0,
            limits=parser_limits(),
        )
        if matcher.is_error():
            subject = grammar.description or "The grammar"
            raise SchemaError(
                f"{subject} cannot be enforced on this model: "
                f"{compile_error_reason(matcher.get_error())}",
                param=grammar.param,
            )
        return matcher


class GrammarMask:
    """One generation under a grammar: a logits processor plus ``accept``.

    Call it with a step's logits (token-id order, ``vocab_size`` of them) before
    sampling; then pass the sampled token to ``accept``.
    """

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._bitmask = llguidance.numpy.allocate_token_bitmask(1, vocab_size)
        # Bit i of the int32 word j is token 32j+i; on a little-endian machine the
        # words' bytes in order hold the tokens in order, lowest bit first.
        self._bytes = self._bitmask.view(np.uint8).reshape(-1)
        self._masked = False
        self._gave_up = False

    def __call__(self, _input_ids: Any, scores: Any) -> Any:
        """Sets the logits of the tokens the grammar forbids next to -inf, in place."""
        llguidance.numpy.fill_next_token_bitmask(self._matcher, self._bitmask)
        self._masked = True
        self._gave_up = bool(self._matcher.is_error())
        forbidden = np.unpackbits(~self._bytes, count=self._vocab_size, bitorder="little")
        scores[forbidden.view(np.bool_)] = -np.inf
        return scores

    def accept(self, token: int) -> bool:
        """Advances past a sampled token; True when the grammar allows nothing more.

        Raises ``BackendError`` if the grammar forbids ``token`` (the mask was not
        applied to the step that chose it), and ``InvalidRequest`` when the engine
        gives up on a token the mask allowed: the request's grammar hit the
        engine's limits (e.g. a schema that admits no finite value).
        """
        if self._matcher.consume_token(token):
            return bool(self._matcher.is_stopped())
        reason = compile_error_reason(self._matcher.get_error())
        if not self._gave_up and not (self._masked and self._allowed(token)):
            raise BackendError(f"Constrained decoding failed: {reason}")
        raise InvalidRequest(
            f"Constrained decoding stopped: {reason}. Simplify the schema "
            "(it may admit no finite value).",
            code="grammar_limit",
        )

    def _allowed(self, token: int) -> bool:
        """Whether the last computed mask allowed ``token``."""
        return bool(self._bytes[token >> 3] >> (token & 7) & 1)

    @property
    def accepting(self) -> bool:
        """Whether the output so far is complete under the grammar."""
        return bool(self._matcher.is_accepting())
