"""The in-process side of the batching bench: the prompts every contender gets, the
llama.cpp batched-decode ceiling (low-level API, no sampling) and
llama-cpp-python's single-stream reference (``Llama.create_completion``).

The ceiling shares the loaded weights of the ``Llama`` object (one model load)
but has its own context with ``n_seq_max`` sequence slots; each step is ONE
``llama_decode`` of a batch holding one token per sequence, the next token being
the argmax of that sequence's logits (no sampler).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from generation import gemma_chat_prompt

FILLER = (
    "Describe the harbour at dawn: the cranes, the gulls, the fishing boats coming "
    "home, the smell of salt and diesel, the dock workers and their morning coffee, "
    "the ferry leaving for the islands and the light on the water"
)
SHORT_WORDS = ["a", "of", "and", "the", "to", "in"]


def user_text(llama: Any, index: int, tokens: int) -> str:
    """A user message whose Gemma chat prompt (BOS included) is exactly ``tokens``
    tokens long; it starts with ``index`` so no two prompts share more than the
    template's first few tokens."""
    words = [f"Request {index}:"]

    def length(candidate: list[str]) -> int:
        text = gemma_chat_prompt(" ".join(candidate)).encode()
        return len(llama.tokenize(text, add_bos=True, special=True))

    for word in [*FILLER.split(), *SHORT_WORDS * tokens]:
        if length([*words, word]) <= tokens:
            words.append(word)
        if length(words) == tokens:
            return " ".join(words)
    raise ValueError(f"cannot build a {tokens}-token prompt")


def prompt_tokens(llama: Any, text: str) -> list[int]:
    """The tokens of ``text``'s one-turn Gemma chat prompt."""
    tokens = llama.tokenize(gemma_chat_prompt(text).encode(), add_bos=True, special=True)
    return [int(token) for token in tokens]


# --------------------------------------------------------------------------- ceiling


@dataclass(frozen=True)
class CeilingRun:
    sequences: int
    prompt_seconds: float
    """Evaluating every sequence's prompt in one batch."""
    decode_seconds: float
    """The decode steps after it (``tokens - 1`` of them)."""
    tokens: int
    """Tokens per sequence (the first comes from the prompt's logits)."""
    cpu_seconds: float
    foreign_cores: float = math.nan
    """Other processes' load meanwhile (CPUs), when measured."""

    @property
    def rate(self) -> float:
        """Aggregate tokens/s from the start of prompt evaluation to the last token."""
        return self.sequences * self.tokens / (self.prompt_seconds + self.decode_seconds)

    @property
    def decode_rate(self) -> float:
        """Aggregate tokens/s of the decode steps alone."""
        return self.sequences * (self.tokens - 1) / self.decode_seconds


class BatchedContext:
    """A llama context on ``llama``'s weights with ``n_seq_max`` slots of
    ``slot_tokens`` cells each, decoding with per-token sequence ids."""

    def __init__(self, llama: Any, *, n_seq_max: int, slot_tokens: int, threads: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_seq_max * slot_tokens
        params.n_batch = params.n_ctx
        params.n_seq_max = n_seq_max
        params.n_threads = params.n_threads_batch = threads
        # As llama-cpp-python's Llama (and so Portway's backend today) makes its context.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.n_vocab = int(llama.n_vocab())
        self.capacity = int(params.n_batch)
        self.batch = llama_cpp.llama_batch_init(self.capacity, 0, 1)

    def close(self) -> None:
        self._lib.llama_batch_free(self.batch)
        self._lib.llama_free(self.ctx)

    def clear(self) -> None:
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self.ctx), True)

    def decode(self, rows: Sequence[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of ``rows``: (token, position, sequence, wants logits)."""
        batch = self.batch
        for i, (token, position, sequence, logits) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = sequence
            batch.logits[i] = logits
        batch.n_tokens = len(rows)
        status = self._lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def argmax(self, row: int) -> int:
        """The most likely next token after batch row ``row`` of the last decode."""
        import numpy as np

        pointer = self._lib.llama_get_logits_ith(self.ctx, row)
        logits = np.ctypeslib.as_array(
            ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        )
        return int(logits.argmax())


def _prompt_rows(prompts: Sequence[Sequence[int]]) -> list[tuple[int, int, int, bool]]:
    return [
        (token, position, sequence, position == len(prompt) - 1)
        for sequence, prompt in enumerate(prompts)
        for position, token in enumerate(prompt)
    ]


def run_ceiling(
    context: BatchedContext, prompts: Sequence[Sequence[int]], tokens: int
) -> CeilingRun:
    """Every prompt evaluated in one batch, then ``tokens - 1`` batched decode steps
    of one argmax token per sequence."""
    context.clear()
    started, cpu_started = time.perf_counter(), time.process_time()
    rows = _prompt_rows(prompts)
    context.decode(rows)
    next_tokens = [context.argmax(row) for row, (*_, logits) in enumerate(rows) if logits]
    prompted = time.perf_counter()
    for step in range(tokens - 1):
        rows = [
            (token, len(prompt) + step, sequence, True)
            for sequence, (token, prompt) in enumerate(zip(next_tokens, prompts, strict=True))
        ]
        context.decode(rows)
        next_tokens = [context.argmax(row) for row in range(len(rows))]
    finished = time.perf_counter()
    return CeilingRun(
        sequences=len(prompts),
        prompt_seconds=prompted - started,
        decode_seconds=finished - prompted,
        tokens=tokens,
        cpu_seconds=time.process_time() - cpu_started,
    )


@contextlib.contextmanager
def batched_context(
    llama: Any, *, n_seq_max: int, slot_tokens: int, threads: int
) -> Iterator[BatchedContext]:
    context = BatchedContext(llama, n_seq_max=n_seq_max, slot_tokens=slot_tokens, threads=threads)
    try:
        yield context
    finally:
        context.close()


# --------------------------------------------------------------------------- in-process


@dataclass(frozen=True)
class StreamRun:
    """One single-stream completion, timed where its text appears."""

    ttft: float
    seconds: float
    """From starting the call (or sending the request) to the last token."""
    first_to_last: float
    tokens: int
    cpu_seconds: float
    """CPU of the process doing the generation (here: this one; over HTTP: the server)."""
    foreign_cores: float = math.nan
    """Other processes' load meanwhile (CPUs), when measured."""

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    @property
    def decode_rate(self) -> float:
        return (self.tokens - 1) / self.first_to_last if self.first_to_last > 0 else float("nan")


def in_process_stream(
    llama: Any, text: str, *, tokens: int, seed: int, sampling: dict[str, Any]
) -> StreamRun:
    """``Llama.create_completion(stream=True)`` on ``text``'s chat prompt."""
    stamps: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    chunks = llama.create_completion(
        gemma_chat_prompt(text),
        max_tokens=tokens,
        seed=seed,
        stream=True,
        top_k=0,
        min_p=0.0,
        typical_p=1.0,
        repeat_penalty=1.0,
        **sampling,
    )
    with contextlib.closing(chunks):
        stamps.extend(time.perf_counter() for chunk in chunks if chunk["choices"][0]["text"])
    if len(stamps) < 2:
        raise RuntimeError("the in-process stream produced fewer than two pieces of text")
    return StreamRun(
        ttft=stamps[0] - started,
        seconds=stamps[-1] - started,
        first_to_last=stamps[-1] - stamps[0],
        tokens=tokens,
        cpu_seconds=time.process_time() - cpu_started,
    )
