"""The llama.cpp worker thread: one generation's blocking loop, from sampled
tokens to ``Delta``s handed back to the event loop.

Token counts include every sampled token: an end-of-turn token counts (it has no
text and no logprob), and so do the tokens of a stop string (they keep their
logprobs) although their text is not emitted.

Logprobs do not need ``logits_all=True`` (which would hold a context-sized copy of
the logits; with Gemma's 262k vocabulary that is gigabytes): when a token is
yielded, llama.cpp's output buffer still holds the logits of the step that chose
it, so they are read there with ``llama_get_logits_ith(ctx, -1)``. They are the
model's own, before logit bias and any grammar mask.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import llama_cpp
import numpy as np

from portway.backends.base import (
    Delta,
    FinishReason,
    SamplingParams,
    TokenLogprob,
    TopLogprob,
)
from portway.backends.llamacpp.sampling import (
    free_sampler,
    llama_seed,
    logits_processors,
    sampler_settings,
    top_ids,
)
from portway.backends.textstream import StopMatcher, Utf8StreamDecoder
from portway.constrain.runtime import GrammarMask

log = logging.getLogger(__name__)

QueueItem = Delta | BaseException


@dataclass
class Job:
    """One generation, as the worker thread sees it."""

    prompt: list[int]
    budget: int
    sampling: SamplingParams
    emit: Callable[[QueueItem], None]
    cancel: threading.Event = field(default_factory=threading.Event)
    constraint: GrammarMask | None = None


class TokenPiece(Protocol):
    def __call__(self, token: int, *, special: bool) -> bytes: ...


@dataclass(frozen=True)
class LoadedModel:
    """What the worker reads of the backend's loaded model."""

    llama: Any
    n_vocab: int
    stop_strings: tuple[str, ...]
    piece: TokenPiece
    is_end_token: Callable[[int], bool]


def emitter(
    loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[QueueItem]
) -> Callable[[QueueItem], None]:
    """Puts what the worker emits on ``queue``, from the worker thread."""

    def emit(item: QueueItem) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(queue.put_nowait, item)

    return emit


def run(job: Job, loaded: Callable[[], LoadedModel]) -> None:
    """The worker: generates ``job`` and emits its deltas; errors are emitted too."""
    try:
        _generate_blocking(job, loaded)
    except Exception as exc:
        log.exception("llama.cpp generation failed")
        job.emit(exc)


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


def _remaining_text(decoder: Utf8StreamDecoder, stops: StopMatcher) -> str:
    """What is still held back when generation ends without a stop string."""
    text, stopped = stops.feed(decoder.flush())
    return text if stopped else text + stops.flush()


def _generate_blocking(job: Job, loaded: Callable[[], LoadedModel]) -> None:
    if job.cancel.is_set():
        return
    if job.budget <= 0:
        job.emit(Delta(finish_reason="length"))
        return
    model = loaded()
    llama = model.llama
    llama.set_seed(llama_seed(job.sampling.seed))
    # llama-cpp-python's prompt-prefix reuse gives wrong logits after a prompt that
    # was wholly cached (seen on Gemma 3's sliding-window cache): same seed, other
    # text. Evaluate every prompt from the start; the 0.3.36 reuse is not trusted.
    llama.n_tokens = 0
    tokens = llama.generate(
        job.prompt,
        **sampler_settings(job.sampling),
        logits_processor=logits_processors(job.sampling.logit_bias, job.constraint),
    )
    try:
        _stream_tokens(tokens, job, model)
    finally:
        tokens.close()
        free_sampler(llama)


def _stream_tokens(tokens: Iterator[int], job: Job, model: LoadedModel) -> None:
    """Turns sampled tokens into deltas until a stop, the budget, or cancellation."""
    decoder = Utf8StreamDecoder()
    stops = StopMatcher((*model.stop_strings, *job.sampling.stop))
    pending = _PendingDelta()
    finish: FinishReason = "length"
    cut_at_stop_string = False
    for produced, token in enumerate(tokens, start=1):
        if job.cancel.is_set():
            return
        if model.is_end_token(token):
            pending.add()
            finish = "stop"
            break
        text, cut_at_stop_string = stops.feed(decoder.feed(model.piece(token, special=False)))
        pending.add(text, _logprob(model, token, job.sampling))
        if cut_at_stop_string:
            finish = "stop"
            break
        if job.constraint is not None and job.constraint.accept(token):
            finish = "stop"  # the grammar is complete and allows nothing more
            break
        if produced >= job.budget:
            break
        if pending.text:
            job.emit(pending.take())
    if not cut_at_stop_string:
        pending.add(_remaining_text(decoder, stops), tokens=0)
    job.emit(pending.take(finish))


def _logprob(model: LoadedModel, token: int, sampling: SamplingParams) -> TokenLogprob | None:
    """The chosen token's logprob and the top alternatives, from the logits of the
    step that chose it (still in llama.cpp's output buffer)."""
    if not sampling.logprobs:
        return None
    logits = np.ctypeslib.as_array(
        llama_cpp.llama_get_logits_ith(model.llama.ctx, -1), shape=(model.n_vocab,)
    )
    logprobs = llama_cpp.Llama.logits_to_logprobs(logits)
    top = tuple(
        TopLogprob(*_token_fields(model, i), float(logprobs[i]))
        for i in top_ids(logprobs, sampling.top_logprobs)
    )
    return TokenLogprob(*_token_fields(model, token), float(logprobs[token]), top)


def _token_fields(model: LoadedModel, token: int) -> tuple[str, tuple[int, ...]]:
    raw = model.piece(token, special=True)
    return raw.decode("utf-8", errors="replace"), tuple(raw)
