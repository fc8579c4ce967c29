"""One sequence's output: sampled tokens in, ``Delta``s out.

Token counts include every sampled token: an end-of-turn token counts (it has no
text and no logprob), and so do the tokens of a stop string (they keep their
logprobs) although their text is not emitted. Several tokens' text go in one
delta only while a multi-byte character or a possible stop string is held back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from portway.backends.base import Delta, FinishReason, TokenLogprob
from portway.backends.textstream import StopMatcher, Utf8StreamDecoder
from portway.constrain.runtime import GrammarMask


class TokenPiece(Protocol):
    def __call__(self, token: int, *, special: bool) -> bytes: ...


@dataclass(frozen=True)
class OutputModel:
    """What turning tokens into text needs of the loaded model."""

    stop_strings: tuple[str, ...]
    piece: TokenPiece
    is_end_token: Callable[[int], bool]


@dataclass
class _PendingDelta:
    """Tokens produced since the last delta was sent, with their text and logprobs."""

    text: str = ""
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)

    def add(self, text: str = "", logprob: TokenLogprob | None = None, tokens: int = 1) -> None:
        self.text += text
        self.tokens += tokens
        if logprob is not None:
            self.logprobs.append(logprob)

    def take(self, finish_reason: FinishReason | None = None) -> Delta:
        delta = Delta(
            text=self.text,
            tokens=self.tokens,
            logprobs=tuple(self.logprobs),
            finish_reason=finish_reason,
        )
        self.text, self.tokens, self.logprobs = "", 0, []
        return delta


class TokenOutput:
    """Turns one generation's sampled tokens into deltas, up to ``budget`` tokens."""

    def __init__(
        self,
        model: OutputModel,
        *,
        budget: int,
        stop: tuple[str, ...] = (),
        constraint: GrammarMask | None = None,
    ) -> None:
        self._model = model
        self._budget = budget
        self._constraint = constraint
        self._decoder = Utf8StreamDecoder()
        self._stops = StopMatcher((*model.stop_strings, *stop))
        self._pending = _PendingDelta()
        self.produced = 0
        self.finished = False

    def feed(self, token: int, logprob: TokenLogprob | None) -> Delta | None:
        """The delta to send after ``token`` (None: nothing yet); the last one has
        a ``finish_reason`` and sets ``finished``. ``constraint.accept`` may raise."""
        self.produced += 1
        if self._model.is_end_token(token):
            self._pending.add()
            return self._finish("stop")
        piece = self._model.piece(token, special=False)
        text, cut_at_stop_string = self._stops.feed(self._decoder.feed(piece))
        self._pending.add(text, logprob)
        if cut_at_stop_string:
            return self._finish("stop", cut=True)
        if self._constraint is not None and self._constraint.accept(token):
            return self._finish("stop")  # the grammar is complete and allows nothing more
        if self.produced >= self._budget:
            return self._finish("length")
        return self._pending.take() if self._pending.text else None

    def _finish(self, reason: FinishReason, *, cut: bool = False) -> Delta:
        if not cut:
            self._pending.add(self._remaining_text(), tokens=0)
        self.finished = True
        return self._pending.take(reason)

    def _remaining_text(self) -> str:
        """What is still held back when generation ends without a stop string."""
        text, stopped = self._stops.feed(self._decoder.flush())
        return text if stopped else text + self._stops.flush()
