"""The sampling side of a llama.cpp generation: seeds, ``Llama.generate``'s
sampler settings, logit bias and grammar masks, and top logprobs.

``llama_seed`` and ``top_ids`` live in ``seq_sampling`` (the batched engine's
sampler) and are re-exported here for the one-request worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import llama_cpp
import numpy as np

from portway.backends.base import SamplingParams
from portway.backends.llamacpp.seq_sampling import llama_seed, top_ids
from portway.constrain.runtime import GrammarMask

__all__ = [
    "free_sampler",
    "llama_seed",
    "logits_processors",
    "sampler_settings",
    "top_ids",
]


def sampler_settings(sampling: SamplingParams) -> dict[str, Any]:
    """``Llama.generate`` arguments meaning OpenAI's sampling: no top-k, min-p,
    typical-p or repeat penalty (llama-cpp-python enables some by default)."""
    return {
        "temp": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": 0,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }


def free_sampler(llama: Any) -> None:
    """Frees the sampler chain ``Llama.generate`` built.

    llama-cpp-python 0.3 frees it only when the cyclic garbage collector finds the
    reference cycle it sits in; under load (and Portway's raised collection
    thresholds) that is rare, and each chain holds about 3 MB of native memory the
    collector cannot see, so the server grew by that much per generation.
    """
    sampler, llama._sampler = getattr(llama, "_sampler", None), None
    if sampler is not None:
        sampler.close()


def logits_processors(bias: Mapping[int, float], mask: GrammarMask | None) -> Any:
    """A ``LogitsProcessorList`` adding ``bias`` to the logits, then applying the
    grammar ``mask``; None when there is neither.

    It runs first in llama.cpp's sampler chain, where candidates are still in token
    id order, so ``scores[token_id]`` is that token's logit.
    """
    processors = [p for p in (_logit_bias(bias), mask) if p is not None]
    return llama_cpp.LogitsProcessorList(processors) if processors else None


def _logit_bias(bias: Mapping[int, float]) -> Callable[[Any, Any], Any] | None:
    if not bias:
        return None
    token_ids = np.fromiter(bias.keys(), dtype=np.intc, count=len(bias))
    offsets = np.fromiter(bias.values(), dtype=np.single, count=len(bias))

    def add_bias(_input_ids: Any, scores: Any) -> Any:
        scores[token_ids] += offsets
        return scores

    return add_bias
