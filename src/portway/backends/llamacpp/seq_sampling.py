"""Sampling one sequence of a batched llama.cpp decode, with llama.cpp's own samplers.

A ``SequenceSampler`` follows one generated sequence. After each ``llama_decode``
the engine calls ``sample(ctx, i)`` for every sequence that got logits in batch
row ``i``; it reads that row only, so sequences of one batch never share state.

The chain is OpenAI's sampling, in the order ``Llama.generate`` used it:
logit bias → presence/frequency penalties → top-p → temperature → a draw seeded
per sequence, or greedy at temperature 0. There is no top-k, min-p, typical-p or
repeat penalty. Penalties count every token this sampler has chosen (not the
prompt's), up to ``penalty_window`` of them. The same seed and the same logits
give the same tokens; no seed draws a random one (``llama_seed``).

Steps that run in Python, only when the request asks for them, each costing a
few vocabulary-sized arrays per token:

* logprobs (``sampling.logprobs``) are read first, from the model's own logits
  before logit bias, penalties and the grammar mask;
* a grammar (``constraint``) then sets the logits it forbids to -inf in the
  batch row itself, before the native chain copies the row.

Otherwise ``sample`` is one native call, except greedy decoding without
penalties: its chain would copy the whole row into a candidate array to take its
maximum, so the bias is added to the row in place and numpy takes the argmax (the
first maximum, as llama.cpp's greedy sampler does): the same token for about half
the cost (``bench/sampling_cost.py``), and no native chain at all.

The grammar is not advanced here: the engine calls ``constraint.accept(token)``
for each sampled token it keeps (not for an end-of-turn token), before the
sequence's next ``sample``, since ``accept`` tells the engine when the grammar is
complete and raises when it is broken. ``close`` frees the native chain (a
vocabulary-sized buffer, about 3 MB for Gemma's 262k tokens); a sampler dropped
without ``close`` is freed when collected.
"""

from __future__ import annotations

import ctypes
import secrets
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import llama_cpp
import numpy as np

from portway.backends.base import SamplingParams, TokenLogprob, TopLogprob
from portway.constrain.runtime import GrammarMask
from portway.errors import InvalidRequest

TokenFields = Callable[[int], tuple[str, tuple[int, ...]]]
"""A token's text and bytes as logprobs report them."""

DEFAULT_PENALTY_WINDOW = 32768
"""Chosen tokens the penalties remember: more than any sequence generates here."""

_SEED_MODULUS = 0xFFFFFFFF
"""llama.cpp seeds are uint32 and 0xFFFFFFFF means "random": seeds are taken modulo this."""


def llama_seed(seed: int | None) -> int:
    """The llama.cpp seed for a request: a fresh random one when ``seed`` is None."""
    if seed is None:
        return secrets.randbelow(_SEED_MODULUS)
    return seed % _SEED_MODULUS


def top_ids(logprobs: Any, count: int) -> list[int]:
    """Ids of the ``count`` most likely tokens, most likely first (ties: lower id)."""
    count = min(count, len(logprobs))
    if count <= 0:
        return []
    candidates = np.argpartition(-logprobs, count - 1)[:count]
    order = np.lexsort((candidates, -logprobs[candidates]))
    return [int(i) for i in candidates[order]]


class SequenceSampler:
    """Chooses the next tokens of one sequence (see the module's docstring).

    Raises ``InvalidRequest`` (``param="logit_bias"``) for a bias on a token id
    outside the vocabulary, and ``ValueError`` when logprobs are asked for
    without ``token_fields``. Not thread-safe: one engine thread uses it.
    """

    def __init__(
        self,
        sampling: SamplingParams,
        *,
        n_vocab: int,
        constraint: GrammarMask | None = None,
        token_fields: TokenFields | None = None,
        penalty_window: int = DEFAULT_PENALTY_WINDOW,
    ) -> None:
        if sampling.logprobs and token_fields is None:
            raise ValueError("logprobs need token_fields")
        _check_logit_bias(sampling.logit_bias, n_vocab)
        self._n_vocab = n_vocab
        self._constraint = constraint
        self._token_fields = token_fields
        self._top_logprobs = sampling.top_logprobs if sampling.logprobs else -1
        self._argmax = _plain_greedy(sampling)
        self._bias = _bias_arrays(sampling.logit_bias) if self._argmax else None
        self._reads_row = self._argmax or sampling.logprobs or constraint is not None
        chain = None if self._argmax else native_chain(sampling, n_vocab, penalty_window)
        self._chain = chain
        self._free = weakref.finalize(self, _free_chain, chain)

    def sample(self, ctx: Any, output_index: int) -> tuple[int, TokenLogprob | None]:
        """Samples the next token from the logits of batch row ``output_index``
        (``llama_get_logits_ith(ctx, output_index)``) and records it for the
        penalties; returns it with its ``TokenLogprob`` when logprobs were asked
        for (the model's own, before bias and mask). The row may be changed in
        place (the grammar mask, greedy's bias): the engine must not read it
        afterwards. The engine advances the grammar (see the module docstring).
        """
        if not self._free.alive:
            raise RuntimeError("sample() on a closed SequenceSampler")
        if not self._reads_row:
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, output_index)), None
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(ctx, output_index), shape=(self._n_vocab,)
        )
        logprobs = llama_cpp.Llama.logits_to_logprobs(logits) if self._top_logprobs >= 0 else None
        if self._constraint is not None:
            self._constraint(None, logits)
        token = self._choose(ctx, output_index, logits)
        return token, None if logprobs is None else self._logprob(token, logprobs)

    def close(self) -> None:
        """Frees the native chain; idempotent."""
        self._free()

    @property
    def closed(self) -> bool:
        return not self._free.alive

    def _choose(self, ctx: Any, output_index: int, logits: Any) -> int:
        if not self._argmax:
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, output_index))
        if self._bias is not None:
            token_ids, offsets = self._bias
            logits[token_ids] += offsets
        return int(np.argmax(logits))

    def _logprob(self, token: int, logprobs: Any) -> TokenLogprob:
        fields = self._token_fields
        assert fields is not None  # checked in __init__
        top = tuple(
            TopLogprob(*fields(i), float(logprobs[i]))
            for i in top_ids(logprobs, self._top_logprobs)
        )
        return TokenLogprob(*fields(token), float(logprobs[token]), top)


def native_chain(sampling: SamplingParams, n_vocab: int, penalty_window: int) -> Any:
    """A llama.cpp sampler chain (a pointer the caller frees with
    ``llama_sampler_free``) meaning ``sampling``; stages that would change
    nothing (no bias, no penalties, top-p 1) are left out."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    for stage in _stages(sampling, n_vocab, penalty_window):
        llama_cpp.llama_sampler_chain_add(chain, stage)
    return chain


def _plain_greedy(sampling: SamplingParams) -> bool:
    penalised = sampling.presence_penalty or sampling.frequency_penalty
    return sampling.temperature <= 0 and not penalised


def _bias_arrays(bias: Mapping[int, float]) -> tuple[Any, Any] | None:
    """Token ids and their offsets (float32, as llama.cpp adds them); None if none."""
    if not bias:
        return None
    token_ids = np.fromiter(bias.keys(), dtype=np.intp, count=len(bias))
    offsets = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
    return token_ids, offsets


def _free_chain(chain: Any) -> None:
    if chain is not None:
        llama_cpp.llama_sampler_free(chain)


def _stages(sampling: SamplingParams, n_vocab: int, penalty_window: int) -> list[Any]:
    stages = []
    if sampling.logit_bias:
        stages.append(_logit_bias(sampling.logit_bias, n_vocab))
    if sampling.presence_penalty or sampling.frequency_penalty:
        stages.append(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                penalty_window,
                1.0,
                sampling.frequency_penalty,
                sampling.presence_penalty,
            )
        )
    if sampling.temperature <= 0:
        stages.append(llama_cpp.llama_sampler_init_greedy())
        return stages
    if sampling.top_p < 1.0:
        stages.append(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
    stages.append(llama_cpp.llama_sampler_init_temp(sampling.temperature))
    stages.append(llama_cpp.llama_sampler_init_dist(llama_seed(sampling.seed)))
    return stages


def _logit_bias(bias: Mapping[int, float], n_vocab: int) -> Any:
    """A native logit-bias stage (llama.cpp copies the entries)."""
    entries = (llama_cpp.llama_logit_bias * len(bias))(
        *(llama_cpp.llama_logit_bias(token, value) for token, value in bias.items())
    )
    return llama_cpp.llama_sampler_init_logit_bias(
        n_vocab, len(bias), ctypes.cast(entries, llama_cpp.llama_logit_bias_p)
    )


def _check_logit_bias(bias: Mapping[int, float], n_vocab: int) -> None:
    invalid = sorted(token for token in bias if not 0 <= token < n_vocab)
    if invalid:
        raise InvalidRequest(f"Invalid token ids in logit_bias: {invalid[:5]}.", param="logit_bias")
