"""Prefix reuse leaves greedy output unchanged, at llama.cpp's low-level API on two
models, the embedded Gemma 3 270M (sliding-window attention, ``n_swa`` 512) and a
tiny random llama without SWA (tests/tiny_gguf.py), and through the backend.

Each case compares greedy tokens continuing a prompt evaluated in an empty
sequence with those continuing the same prompt after keeping the cached prefix
``reusable_length`` allows and evaluating only the rest. The contexts are made the
way that loses most: no ``swa_full`` and a small micro-batch, so Gemma's
sliding-window layers keep only 768 cells per sequence and an 800-token sequence
has already lost its oldest ones. One test shows why the rule is needed:
reusing a prefix whose cells fell out of that cache is accepted by llama.cpp and
gives other logits. (Logits themselves may differ in small ways with the number of
rows evaluated together, on CPU kernels; see ``prefix``. Greedy tokens are compared.)

What the models write differs between CPUs; nothing here depends on it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
import pytest

from portway.backends.base import GenerationRequest, Message, SamplingParams
from portway.backends.llamacpp.backend import LlamaCppBackend
from portway.backends.llamacpp.default_model import ensure_default_gguf
from portway.backends.llamacpp.prefix import AttentionSpan, common_prefix, reusable_length
from tests.tiny_gguf import write_tiny_llama

N_SEQ = 3
N_CTX_PER_SEQ = 1024
N_UBATCH = 64
"""Gemma's sliding-window cache is then n_swa + 64 cells rounded up: 768."""
GREEDY_TOKENS = 8
LONG = 800
"""Longer than Gemma's window and than its sliding-window cache."""

FRESH, CACHED, SCRATCH = 0, 1, 2
"""Sequence ids: a long prompt evaluated once; the sequence a case reuses; an empty one."""


@dataclass
class Context:
    """One llama.cpp context of ``N_SEQ`` sequences, each in its own KV stream."""

    name: str
    model: Any
    ctx: Any
    batch: Any
    span: AttentionSpan
    ordinary: list[int]
    bos: int

    @property
    def memory(self) -> Any:
        return llama_cpp.llama_get_memory(self.ctx)

    def decode(self, seq: int, tokens: Sequence[int], start: int) -> np.ndarray:
        """Evaluates ``tokens`` at positions ``start``... of ``seq``; the logits of
        the last one."""
        n_vocab = len_vocab(self.model)
        for offset in range(0, len(tokens), N_UBATCH):
            chunk = tokens[offset : offset + N_UBATCH]
            self.batch.n_tokens = len(chunk)
            for row, token in enumerate(chunk):
                self.batch.token[row] = token
                self.batch.pos[row] = start + offset + row
                self.batch.n_seq_id[row] = 1
                self.batch.seq_id[row][0] = seq
                self.batch.logits[row] = offset + row == len(tokens) - 1
            assert llama_cpp.llama_decode(self.ctx, self.batch) == 0
        row_logits = llama_cpp.llama_get_logits_ith(self.ctx, len(chunk) - 1)
        return np.ctypeslib.as_array(row_logits, shape=(n_vocab,)).copy()

    def greedy(self, seq: int, tokens: Sequence[int], start: int) -> list[int]:
        """Evaluates ``tokens`` from ``start``, then picks and evaluates
        ``GREEDY_TOKENS`` most likely tokens, which it returns."""
        logits = self.decode(seq, tokens, start)
        position = start + len(tokens)
        picked: list[int] = []
        for _ in range(GREEDY_TOKENS):
            picked.append(int(np.argmax(logits)))
            logits = self.decode(seq, picked[-1:], position)
            position += 1
        return picked

    def fresh_greedy(self, prompt: Sequence[int]) -> list[int]:
        self.clear(SCRATCH)
        return self.greedy(SCRATCH, prompt, 0)

    def pos_min(self, seq: int) -> int:
        return int(llama_cpp.llama_memory_seq_pos_min(self.memory, seq))

    def cut(self, seq: int, keep: int) -> bool:
        return bool(llama_cpp.llama_memory_seq_rm(self.memory, seq, keep, -1))

    def clear(self, seq: int) -> None:
        assert llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)

    def copy(self, source: int, target: int) -> None:
        """The whole of ``source`` into ``target`` (across KV streams llama.cpp
        copies whole buffers only)."""
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def prompt(self, length: int, seed: int) -> list[int]:
        """BOS and ``length - 1`` ordinary tokens drawn with ``seed``."""
        rng = random.Random(seed)
        return [self.bos, *rng.choices(self.ordinary, k=length - 1)]

    def reuse_greedy(self, seq: int, cached: Sequence[int], prompt: Sequence[int]) -> list[int]:
        """Keeps what the rule allows of ``seq`` (holding ``cached``) and continues
        ``prompt`` from there; asserts something was kept."""
        keep = reusable_length(cached, prompt, pos_min=self.pos_min(seq), span=self.span)
        assert keep > 0
        assert self.cut(seq, keep)
        return self.greedy(seq, prompt[keep:], keep)


def len_vocab(model: Any) -> int:
    return int(llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model)))


def open_context(name: str, path: Path) -> Context:
    model_params = llama_cpp.llama_model_default_params()
    model_params.use_extra_bufts = False
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
    assert model
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = N_CTX_PER_SEQ * N_SEQ
    params.n_batch = params.n_ubatch = N_UBATCH
    params.n_seq_max = N_SEQ
    params.n_threads = params.n_threads_batch = 2
    params.swa_full = False
    params.kv_unified = False
    ctx = llama_cpp.llama_init_from_model(model, params)
    assert ctx
    vocab = llama_cpp.llama_model_get_vocab(model)
    ordinary = [
        token
        for token in range(len_vocab(model))
        if llama_cpp.llama_vocab_get_attr(vocab, token) & llama_cpp.LLAMA_TOKEN_ATTR_NORMAL
    ]
    return Context(
        name=name,
        model=model,
        ctx=ctx,
        batch=llama_cpp.llama_batch_init(N_UBATCH, 0, 1),
        span=AttentionSpan.of_model(model),
        ordinary=ordinary,
        bos=int(llama_cpp.llama_vocab_bos(vocab)),
    )


def close_context(context: Context) -> None:
    llama_cpp.llama_batch_free(context.batch)
    llama_cpp.llama_free(context.ctx)
    llama_cpp.llama_model_free(context.model)


@pytest.fixture(scope="module", params=["gemma-3-270m", "tiny-llama"])
def context(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Context]:
    if request.param == "gemma-3-270m":
        path = ensure_default_gguf(tmp_path_factory.mktemp("data"))
    else:
        path = write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama.gguf")
    opened = open_context(request.param, path)
    yield opened
    close_context(opened)


@pytest.fixture(scope="module")
def long_prompt(context: Context) -> list[int]:
    """``LONG`` tokens, evaluated once into sequence ``FRESH`` (which cases copy)."""
    prompt = context.prompt(LONG, seed=800)
    context.clear(FRESH)
    context.decode(FRESH, prompt, 0)
    return prompt


# --------------------------------------------------------------------------- the rule


def test_common_prefix_counts_leading_matches() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([7], [8]) == 0


def test_reusable_length_leaves_the_last_prompt_token_to_evaluate() -> None:
    full = AttentionSpan(n_swa=0)
    assert reusable_length([1, 2, 3], [1, 2, 3], pos_min=0, span=full) == 2
    assert reusable_length([1, 2, 3, 4], [1, 2, 3], pos_min=0, span=full) == 2
    assert reusable_length([1, 2], [1, 2, 3], pos_min=0, span=full) == 2
    assert reusable_length([1], [1], pos_min=0, span=full) == 0


def test_reusable_length_needs_the_window_in_the_cache() -> None:
    cached = list(range(1000))
    window = AttentionSpan(n_swa=512)
    assert reusable_length(cached, cached[:700], pos_min=187, span=window) == 699
    assert reusable_length(cached, cached[:700], pos_min=100, span=window) == 699
    assert reusable_length(cached, cached[:700], pos_min=188, span=window) == 0
    assert reusable_length(cached, cached[:101], pos_min=1, span=window) == 0
    assert reusable_length(cached, cached[:101], pos_min=0, span=window) == 100


def test_reusable_length_without_a_window_needs_position_zero() -> None:
    cached = list(range(10))
    assert reusable_length(cached, cached, pos_min=1, span=AttentionSpan(n_swa=0)) == 0
    assert reusable_length(cached, cached, pos_min=-1, span=AttentionSpan(n_swa=0)) == 0


# --------------------------------------------------------------------------- exactness


def test_the_models_differ_in_attention(context: Context) -> None:
    expected = 512 if context.name == "gemma-3-270m" else 0
    assert context.span.n_swa == expected


def test_a_wholly_cached_prompt_continues_as_a_fresh_one(context: Context) -> None:
    prompt = context.prompt(40, seed=1)
    fresh = context.fresh_greedy(prompt)
    context.clear(CACHED)
    generated = context.greedy(CACHED, prompt, 0)
    assert generated == fresh

    reused = context.reuse_greedy(CACHED, [*prompt, *generated], prompt)

    assert reused == fresh


def test_a_partly_cached_prompt_continues_as_a_fresh_one(context: Context) -> None:
    prompt = context.prompt(60, seed=2)
    other = [*prompt[:25], *context.prompt(30, seed=3)[1:]]
    context.clear(CACHED)
    context.decode(CACHED, other, 0)

    reused = context.reuse_greedy(CACHED, other, prompt)

    assert common_prefix(other, prompt) >= 25
    assert reused == context.fresh_greedy(prompt)


def test_the_next_turn_reuses_the_generated_tokens(context: Context) -> None:
    first_turn = context.prompt(40, seed=4)
    context.clear(CACHED)
    answer = context.greedy(CACHED, first_turn, 0)
    cached = [*first_turn, *answer]  # every picked token was evaluated
    next_turn = [*cached, *context.prompt(20, seed=5)[1:]]

    reused = context.reuse_greedy(CACHED, cached, next_turn)

    assert reused == context.fresh_greedy(next_turn)


def test_a_prefix_of_a_sequence_longer_than_the_window(
    context: Context, long_prompt: list[int]
) -> None:
    context.clear(CACHED)
    context.copy(FRESH, CACHED)
    if context.span.n_swa:
        assert context.pos_min(CACHED) > 0  # the sliding-window cache dropped cells
    prompt = [*long_prompt[:700], *context.prompt(20, seed=6)[1:]]

    reused = context.reuse_greedy(CACHED, long_prompt, prompt)

    assert reused == context.fresh_greedy(prompt)


def test_a_prefix_copied_from_another_sequence(context: Context) -> None:
    prompt = context.prompt(50, seed=7)
    source = [*prompt[:35], *context.prompt(10, seed=8)[1:]]
    context.clear(SCRATCH)
    context.decode(SCRATCH, source, 0)
    context.clear(CACHED)
    context.copy(SCRATCH, CACHED)

    reused = context.reuse_greedy(CACHED, source, prompt)

    assert reused == context.fresh_greedy(prompt)


def test_a_prefix_the_window_lost_is_refused_and_would_be_wrong(
    context: Context, long_prompt: list[int]
) -> None:
    if not context.span.n_swa:
        pytest.skip("every layer of this model keeps the whole sequence")
    context.clear(CACHED)
    context.copy(FRESH, CACHED)
    prompt = [*long_prompt[:100], *context.prompt(20, seed=9)[1:]]
    pos_min = context.pos_min(CACHED)
    assert reusable_length(long_prompt, prompt, pos_min=pos_min, span=context.span) == 0

    # What a reuse by common prefix alone does: llama.cpp accepts the cut ...
    assert context.cut(CACHED, 100)
    naive = context.decode(CACHED, prompt[100:], 100)
    context.clear(SCRATCH)
    fresh = context.decode(SCRATCH, prompt, 0)

    # ... but the sliding-window layers no longer see positions 0..pos_min-1.
    assert float(np.max(np.abs(naive - fresh))) > 1.0


# --------------------------------------------------------------------------- the backend

TURNS = ("Tell me about lighthouses.", "And their keepers?", "Why did they leave?")
LONG_SYSTEM = "Answer as a lighthouse keeper would, in plain words. " * 60
"""About 660 tokens: every turn's prompt is longer than Gemma's window."""


async def converse(model: LlamaCppBackend, system: str) -> list[str]:
    """A conversation of ``TURNS`` at temperature 0, each reply 16 tokens long."""
    vocab = llama_cpp.llama_model_get_vocab(model._loaded().model)
    no_end = {t: -100.0 for t in range(model._n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    messages: list[Message] = [Message("system", system)] if system else []
    replies: list[str] = []
    for turn in TURNS:
        messages.append(Message("user", turn))
        sampling = SamplingParams(max_tokens=16, temperature=0, logit_bias=no_end)
        deltas = [
            delta async for delta in model.generate(GenerationRequest(tuple(messages), sampling))
        ]
        replies.append("".join(delta.text for delta in deltas))
        messages.append(Message("assistant", replies[-1]))
    return replies


async def conversation_and_reuse(
    path: Path, *, prefix_reuse: bool, system: str
) -> tuple[list[str], int]:
    # small prompt chunks (the unit of reuse), so that short turns reuse some
    model = LlamaCppBackend(
        path, n_ctx=2048, parallel=2, prefix_reuse=prefix_reuse, prefill_chunk=8
    )
    await model.start()
    try:
        replies = await converse(model, system)
        return replies, model.engine.stats.prompt_tokens_reused
    finally:
        await model.close()


@pytest.mark.parametrize("system", ["", LONG_SYSTEM], ids=["short", "longer-than-the-window"])
async def test_a_conversation_writes_the_same_with_and_without_reuse(
    tmp_path_factory: pytest.TempPathFactory, system: str
) -> None:
    path = ensure_default_gguf(tmp_path_factory.mktemp("data"))

    reused, reused_tokens = await conversation_and_reuse(path, prefix_reuse=True, system=system)
    fresh, fresh_reused_tokens = await conversation_and_reuse(
        path, prefix_reuse=False, system=system
    )

    assert reused == fresh
    assert reused_tokens > 0
    assert fresh_reused_tokens == 0
