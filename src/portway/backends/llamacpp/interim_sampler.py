"""A per-sequence sampler on llama.cpp's native sampler chain, used by the engine
until ``seq_sampling`` provides the measured one (same interface)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np

from portway.backends.base import SamplingParams, TokenLogprob, TopLogprob
from portway.backends.llamacpp.sampling import llama_seed, top_ids
from portway.constrain.runtime import GrammarMask

_PENALTY_WINDOW = 8192

TokenFields = Callable[[int], tuple[str, tuple[int, ...]]]


class SequenceSampler:
    """Logit bias → penalties → top-p → temperature → seeded draw (greedy at 0)."""

    def __init__(
        self,
        sampling: SamplingParams,
        *,
        n_vocab: int,
        constraint: GrammarMask | None = None,
        token_fields: TokenFields | None = None,
    ) -> None:
        self._sampling = sampling
        self._n_vocab = n_vocab
        self._constraint = constraint
        self._token_fields = token_fields or (lambda token: (str(token), ()))
        self._chain: Any = _chain(sampling, n_vocab)

    def sample(self, ctx: Any, output_index: int) -> tuple[int, TokenLogprob | None]:
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(ctx, output_index), shape=(self._n_vocab,)
        )
        logprob_source = logits.copy() if self._sampling.logprobs else None
        if self._constraint is not None:
            self._constraint(None, logits)
        token = int(llama_cpp.llama_sampler_sample(self._chain, ctx, output_index))
        if logprob_source is None:
            return token, None
        return token, self._logprob(logprob_source, token)

    def close(self) -> None:
        chain, self._chain = self._chain, None
        if chain is not None:
            llama_cpp.llama_sampler_free(chain)

    def _logprob(self, logits: Any, token: int) -> TokenLogprob:
        logprobs = llama_cpp.Llama.logits_to_logprobs(logits)
        top = tuple(
            TopLogprob(*self._token_fields(i), float(logprobs[i]))
            for i in top_ids(logprobs, self._sampling.top_logprobs)
        )
        return TokenLogprob(*self._token_fields(token), float(logprobs[token]), top)


def _chain(sampling: SamplingParams, n_vocab: int) -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if sampling.logit_bias:
        items = (llama_cpp.llama_logit_bias * len(sampling.logit_bias))()
        for index, (token, bias) in enumerate(sampling.logit_bias.items()):
            items[index].token, items[index].bias = token, bias  # type: ignore[assignment]
        llama_cpp.llama_sampler_chain_add(
            chain,
            llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(sampling.logit_bias), items),
        )
    if sampling.presence_penalty or sampling.frequency_penalty:
        llama_cpp.llama_sampler_chain_add(
            chain,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, _PENALTY_WINDOW, 1.0, sampling.frequency_penalty, sampling.presence_penalty
            ),
        )
    if sampling.temperature <= 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    for sampler in (
        llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1),
        llama_cpp.llama_sampler_init_temp(sampling.temperature),
        llama_cpp.llama_sampler_init_dist(llama_seed(sampling.seed)),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain
