"""Sampling one sequence of a batched llama.cpp decode, in numpy.

A ``SequenceSampler`` follows one generated sequence. After each ``llama_decode``
the engine calls ``sample(ctx, i)`` for every sequence that got logits in batch
row ``i``; it reads that row only, so sequences of one batch never share state.

The choice is OpenAI's sampling, in the order ``Llama.generate`` used it:
logit bias → presence/frequency penalties → top-p → temperature → a draw seeded
per sequence, or the argmax at temperature 0. There is no top-k, min-p,
typical-p or repeat penalty. Penalties follow llama.cpp's formula (``logit -=
count * frequency + (count > 0) * presence``) and count every token this sampler
has chosen (not the prompt's), up to ``penalty_window`` of them. Top-p keeps the
smallest set of most likely tokens (softmax at temperature 1; ties: lower id
first) whose probability reaches ``top_p``, at least one. The draw takes one
number from ``numpy.random.Generator(PCG64(llama_seed(seed)))`` per token: the
same seed and the same logits give the same tokens; no seed draws a random one.

Why numpy and not llama.cpp's sampler chain: at Gemma 3's 262,144-token
vocabulary the native chain copied the row into a candidate array and ran a
softmax over it at every token, and top-p below 1 sorted the whole vocabulary
whenever its top 256 tokens held less than ``top_p`` of the mass: 2.2 ms per
token for a plain draw and 2.5 ms (median) to 5 ms (mean) at temperature 0.8 /
top_p 0.95, against about 60 ms for a batched decode step of 8 sequences. Here
a draw is one maximum and one exponential pass over the row into a buffer the
sampler keeps, then either a blocked inverse-CDF search over the whole row
(top-p 1) or a threshold search that finds the nucleus without sorting the
vocabulary, sorting only the tokens near its edge (``bench/sampling_cost.py``).

Steps that run only when the request asks for them:

* logprobs (``sampling.logprobs``) are read first, from the model's own logits
  before logit bias, penalties and the grammar mask;
* a grammar (``constraint``) then sets the logits it forbids to -inf in the
  batch row itself, before the bias and penalties are added to it in place.

The grammar is not advanced here: the engine calls ``constraint.accept(token)``
for each sampled token it keeps (not for an end-of-turn token), before the
sequence's next ``sample``, since ``accept`` tells the engine when the grammar is
complete and raises when it is broken. ``close`` drops the sampler's buffer (a
vocabulary-sized float32 array for draws); nothing native is held.
"""

from __future__ import annotations

import secrets
from collections import Counter, deque
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

_BLOCK = 1024
"""Tokens per block of the whole-row draw: block sums first, then one block's cumsum."""

_COARSE_STEP = 1e-2
_FINE_STEP = 0.5
"""Each threshold of the nucleus search is this fraction of the one before: coarse
over the vocabulary, fine within a band of more than ``_SORT_LIMIT`` tokens."""

_SORT_LIMIT = 2048
_SMALLEST_THRESHOLD = 1e-30


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
        self._chooser = TokenChooser(sampling, n_vocab, penalty_window)
        self._closed = False

    def sample(self, ctx: Any, output_index: int) -> tuple[int, TokenLogprob | None]:
        """Samples the next token from the logits of batch row ``output_index``
        (``llama_get_logits_ith(ctx, output_index)``) and records it for the
        penalties; returns it with its ``TokenLogprob`` when logprobs were asked
        for (the model's own, before bias and mask). The row is changed in place
        (the grammar mask, the bias and penalties): the engine must not read it
        afterwards. The engine advances the grammar (see the module docstring).
        """
        if self._closed:
            raise RuntimeError("sample() on a closed SequenceSampler")
        logits = np.ctypeslib.as_array(
            llama_cpp.llama_get_logits_ith(ctx, output_index), shape=(self._n_vocab,)
        )
        logprobs = llama_cpp.Llama.logits_to_logprobs(logits) if self._top_logprobs >= 0 else None
        if self._constraint is not None:
            self._constraint(None, logits)
        token = self._chooser.choose(logits)
        return token, None if logprobs is None else self._logprob(token, logprobs)

    def close(self) -> None:
        """Drops the sampler's buffer; idempotent."""
        self._closed = True
        self._chooser.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def _logprob(self, token: int, logprobs: Any) -> TokenLogprob:
        fields = self._token_fields
        assert fields is not None  # checked in __init__
        top = tuple(
            TopLogprob(*fields(i), float(logprobs[i]))
            for i in top_ids(logprobs, self._top_logprobs)
        )
        return TokenLogprob(*fields(token), float(logprobs[token]), top)


class TokenChooser:
    """Chooses one token per logits row and remembers it for the penalties: the
    whole of the sampling except logprobs and the grammar mask (see the module's
    docstring). ``choose(row)`` adds the bias and penalties to ``row`` in place.
    """

    def __init__(
        self,
        sampling: SamplingParams,
        n_vocab: int,
        penalty_window: int = DEFAULT_PENALTY_WINDOW,
    ) -> None:
        self._bias = _bias_arrays(sampling.logit_bias)
        self._presence = np.float32(sampling.presence_penalty)
        self._frequency = np.float32(sampling.frequency_penalty)
        self._penalised = bool(sampling.presence_penalty or sampling.frequency_penalty)
        self._penalty_window = penalty_window
        self._counts: Counter[int] = Counter()
        self._chosen: deque[int] = deque()
        self._temperature = sampling.temperature
        self._top_p = sampling.top_p
        self._rng: np.random.Generator | None = None
        self._weights: Any = None
        if sampling.temperature > 0:
            self._rng = np.random.Generator(np.random.PCG64(llama_seed(sampling.seed)))
            self._weights = np.empty(n_vocab, dtype=np.float32)

    def choose(self, row: Any) -> int:
        """The next token from ``row`` (float32, one logit per token), recorded."""
        self._adjust(row)
        token = int(np.argmax(row)) if self._rng is None else self._draw(row, self._rng)
        if self._penalised:
            self._remember(token)
        return token

    def release(self) -> None:
        """Drops the vocabulary-sized buffer; ``choose`` must not be called after."""
        self._weights = None

    def _adjust(self, row: Any) -> None:
        if self._bias is not None:
            token_ids, offsets = self._bias
            row[token_ids] += offsets
        if self._counts:
            token_ids = np.fromiter(self._counts.keys(), dtype=np.intp, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(self._counts))
            row[token_ids] -= counts * self._frequency + self._presence

    def _remember(self, token: int) -> None:
        self._counts[token] += 1
        self._chosen.append(token)
        if len(self._chosen) > self._penalty_window:
            forgotten = self._chosen.popleft()
            self._counts[forgotten] -= 1
            if not self._counts[forgotten]:
                del self._counts[forgotten]

    def _draw(self, row: Any, rng: np.random.Generator) -> int:
        top = row.max()
        if not np.isfinite(top):
            raise RuntimeError("no token can be sampled: every logit is -inf")
        if self._top_p < 1.0:
            kept = self._nucleus(row, top)
            shifted = (row[kept].astype(np.float64) - float(top)) / self._temperature
            return int(kept[pick(np.exp(shifted), rng.random())])
        weights = self._weights
        np.subtract(row, top, out=weights)
        if self._temperature != 1.0:
            np.divide(weights, np.float32(self._temperature), out=weights)
        np.exp(weights, out=weights)
        return pick_blocked(weights, rng.random())

    def _nucleus(self, row: Any, top: Any) -> Any:
        """Ids of the top-p nucleus of ``row`` (see ``nucleus``)."""
        weights = self._weights
        np.subtract(row, top, out=weights)
        np.exp(weights, out=weights)
        return nucleus(weights, self._top_p)


def nucleus(weights: Any, top_p: float) -> Any:
    """Ids of the smallest set of largest ``weights`` (unnormalised probabilities,
    maximum 1, a float32 array) holding ``top_p`` of their sum, at least one; ties
    are broken by the lower id. The vocabulary is not sorted: thresholds fall
    until the tokens at or above one hold enough, so every token above the one
    before is in the set and only the band between the two is searched, in finer
    steps while it is large, then sorted.
    """
    target = top_p * float(block_sums(weights).sum())
    kept: list[Any] = []
    mass, upper, threshold, step = 0.0, np.inf, 1.0, _COARSE_STEP
    ids, pool = None, weights
    while True:
        threshold = threshold * step if threshold > _SMALLEST_THRESHOLD else 0.0
        chosen = pool >= threshold
        if upper != np.inf:
            chosen &= pool < upper
        selected = np.flatnonzero(chosen)
        band = selected if ids is None else ids[selected]
        band_weights = pool[selected].astype(np.float64)
        band_mass = float(band_weights.sum())
        if mass + band_mass < target and threshold > 0.0:
            kept.append(band)
            mass, upper = mass + band_mass, threshold
        elif len(band) <= _SORT_LIMIT or step == _FINE_STEP or threshold == 0.0:
            break
        else:  # search the band alone, in finer steps
            ids, pool = band, pool[selected]
            threshold, step = min(upper, 1.0), _FINE_STEP
    order = np.argsort(-band_weights, kind="stable")
    cumulative = mass + np.cumsum(band_weights[order])
    count = int(np.searchsorted(cumulative, target, side="left")) + 1
    kept.append(band[order[:count]])
    return np.concatenate(kept)


def block_sums(weights: Any) -> Any:
    """Sums of float32 ``weights`` by blocks of ``_BLOCK`` (the last may be
    shorter), as float64: pairwise float32 sums of 1024 values are exact enough."""
    whole = len(weights) // _BLOCK * _BLOCK
    sums = weights[:whole].reshape(-1, _BLOCK).sum(axis=1)
    if whole < len(weights):
        sums = np.append(sums, weights[whole:].sum())
    return sums.astype(np.float64)


def pick(weights: Any, u: float) -> int:
    """The index drawn by ``u`` in [0, 1) from ``weights`` (not all zero) by
    inverse CDF: the first whose cumulative sum exceeds ``u`` of the total. A
    zero weight is never drawn."""
    cumulative = np.cumsum(weights, dtype=np.float64)
    return _first_above(weights, cumulative, u * float(cumulative[-1]))


def pick_blocked(weights: Any, u: float) -> int:
    """``pick`` over a long float32 array: the block is found from the block
    sums, then the token from that block's cumulative sum."""
    sums = block_sums(weights)
    cumulative = np.cumsum(sums)
    target = u * float(cumulative[-1])
    block = _first_above(sums, cumulative, target)
    start = block * _BLOCK
    inside = weights[start : start + _BLOCK]
    before = float(cumulative[block - 1]) if block else 0.0
    return start + _first_above(inside, np.cumsum(inside, dtype=np.float64), target - before)


def _first_above(weights: Any, cumulative: Any, target: float) -> int:
    index = int(np.searchsorted(cumulative, target, side="right"))
    if index < len(weights) and weights[index] > 0:
        return index
    return int(np.flatnonzero(weights)[-1])  # rounding put the target at the very end


def _bias_arrays(bias: Mapping[int, float]) -> tuple[Any, Any] | None:
    """Token ids and their offsets (float32, as llama.cpp added them); None if none."""
    if not bias:
        return None
    token_ids = np.fromiter(bias.keys(), dtype=np.intp, count=len(bias))
    offsets = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))
    return token_ids, offsets


def _check_logit_bias(bias: Mapping[int, float], n_vocab: int) -> None:
    invalid = sorted(token for token in bias if not 0 <= token < n_vocab)
    if invalid:
        raise InvalidRequest(f"Invalid token ids in logit_bias: {invalid[:5]}.", param="logit_bias")
