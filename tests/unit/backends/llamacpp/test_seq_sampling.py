"""The batched engine's per-sequence sampler, on the real embedded Gemma 3 270M.

A low-level decode loop (one ``llama_batch``, as the engine builds them) feeds the
sampler. No test depends on what the model writes: they check the sampler against
the logits it was given (argmax, bias, penalties, masks, log-softmax) and
determinism. ``TokenChooser`` (the numpy draw) is also tested alone on crafted
rows: nucleus, temperature, bias, penalties and the frequencies of its draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import llama_cpp
import numpy as np
import pytest

from portway.backends.base import Grammar, SamplingParams
from portway.backends.llamacpp.default_model import ensure_default_gguf
from portway.backends.llamacpp.loading import cpu_advertises_amx, model_params
from portway.backends.llamacpp.seq_sampling import SequenceSampler, TokenChooser, nucleus
from portway.constrain.llamacpp import llama_tokenizer
from portway.constrain.runtime import GrammarCompiler, GrammarMask
from portway.errors import InvalidRequest

N_CTX = 256
PROMPT = b"Once upon a time, in a land far away,"
STEPS = 24


class OneSequence:
    """Sequence 0 of a llama.cpp context, decoded with a ``llama_batch`` that asks
    for logits on its last token only (the engine's prompt and decode steps)."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.ctx = llama.ctx
        self.n_vocab = int(llama.n_vocab())
        self.prompt = llama.tokenize(PROMPT)
        self._batch = llama_cpp.llama_batch_init(N_CTX, 0, 1)
        self._position = 0

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)

    def start(self) -> int:
        """Clears the cache and decodes the prompt; returns the row to sample."""
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self._position = 0
        return self.decode(self.prompt)

    def decode(self, tokens: list[int], seq_id: int = 0) -> int:
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = self._position + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = i == len(tokens) - 1
        assert llama_cpp.llama_decode(self.ctx, batch) == 0
        self._position += len(tokens)
        return len(tokens) - 1

    def logits(self, row: int) -> Any:
        """A copy of the model's logits in batch row ``row``."""
        view = llama_cpp.llama_get_logits_ith(self.ctx, row)
        return np.ctypeslib.as_array(view, shape=(self.n_vocab,)).copy()

    def run(
        self,
        sampler: SequenceSampler,
        steps: int = STEPS,
        before: Callable[[int, Any], None] | None = None,
    ) -> list[int]:
        """Samples ``steps`` tokens; ``before(row, logits)`` sees each row first."""
        row, tokens = self.start(), []
        try:
            for _ in range(steps):
                if before is not None:
                    before(row, self.logits(row))
                token, _ = sampler.sample(self.ctx, row)
                tokens.append(token)
                row = self.decode([token])
        finally:
            sampler.close()
        return tokens


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    path = ensure_default_gguf(tmp_path_factory.mktemp("data"))
    with model_params(extra_buffer_types=not cpu_advertises_amx()):
        model = llama_cpp.Llama(str(path), n_ctx=N_CTX, logits_all=False, verbose=False)
    yield model
    model.close()


@pytest.fixture(scope="module")
def seq(llama: Any) -> Iterator[OneSequence]:
    sequence = OneSequence(llama)
    yield sequence
    sequence.close()


def fields(token: int) -> tuple[str, tuple[int, ...]]:
    return str(token), (token % 256,)


def sampler(seq: OneSequence, **sampling: Any) -> SequenceSampler:
    return SequenceSampler(SamplingParams(**sampling), n_vocab=seq.n_vocab, token_fields=fields)


def log_softmax(logits: Any) -> Any:
    shifted = logits.astype(np.float64) - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    "sampling",
    [
        {"seed": 11},
        {"seed": 12, "temperature": 0.7, "top_p": 0.9},
        {"seed": 13, "presence_penalty": 1.0, "frequency_penalty": 0.5, "logit_bias": {506: 3.0}},
    ],
)
def test_the_same_seed_gives_the_same_tokens(seq: OneSequence, sampling: dict[str, Any]) -> None:
    assert seq.run(sampler(seq, **sampling)) == seq.run(sampler(seq, **sampling))


def test_other_seeds_draw_other_tokens(seq: OneSequence) -> None:
    """At temperature 2 over 24 tokens, eight seeds cannot all agree."""
    runs = {tuple(seq.run(sampler(seq, seed=seed, temperature=2.0))) for seed in range(8)}
    assert len(runs) > 1


def test_a_tiny_top_p_always_takes_the_argmax(seq: OneSequence) -> None:
    greedy = seq.run(sampler(seq, temperature=0.0))
    assert seq.run(sampler(seq, seed=3, temperature=1.5, top_p=1e-9)) == greedy


# ------------------------------------------------------------------- greedy, bias, penalties


def test_temperature_zero_takes_the_argmax_of_the_biased_logits(seq: OneSequence) -> None:
    bias = {506: 4.0, 496: -3.0, 236764: 2.5}
    offsets = np.zeros(seq.n_vocab, dtype=np.float32)
    for token, value in bias.items():
        offsets[token] = value
    expected: list[int] = []
    tokens = seq.run(
        sampler(seq, temperature=0.0, logit_bias=bias),
        before=lambda _row, logits: expected.append(int(np.argmax(logits + offsets))),
    )
    assert tokens == expected


def test_a_bias_of_minus_100_on_the_argmax_changes_the_choice(seq: OneSequence) -> None:
    [first] = seq.run(sampler(seq, temperature=0.0), steps=1)
    [other] = seq.run(sampler(seq, temperature=0.0, logit_bias={first: -100.0}), steps=1)
    assert other != first


def test_penalties_lower_the_logits_of_chosen_tokens(seq: OneSequence) -> None:
    """Greedy under penalties takes the argmax of logit + bias - frequency * count
    - presence * (count > 0), counting the tokens chosen so far (not the prompt's).

    Two tokens get a bias that lifts them far above all others, so without
    penalties one of them would win every step; as their counts grow the
    penalties soon make the other one win, whatever the model's logits are.
    """
    first_logits = seq.logits(seq.start())
    lifted = [int(i) for i in np.argsort(-first_logits)[:2]]
    offsets = np.zeros(seq.n_vocab, dtype=np.float32)
    offsets[lifted] = 100.0
    presence, frequency = 2.0, 2.0
    counts = np.zeros(seq.n_vocab, dtype=np.float32)
    expected: list[int] = []
    changed: list[bool] = []

    def expect(_row: int, logits: Any) -> None:
        biased = logits + offsets  # float32, as llama.cpp computes
        penalised = biased - (counts * np.float32(frequency) + (counts > 0) * np.float32(presence))
        expected.append(int(np.argmax(penalised)))
        changed.append(expected[-1] != int(np.argmax(biased)))
        counts[expected[-1]] += 1

    tokens = seq.run(
        sampler(
            seq,
            temperature=0.0,
            logit_bias=dict.fromkeys(lifted, 100.0),
            presence_penalty=presence,
            frequency_penalty=frequency,
        ),
        before=expect,
    )
    assert tokens == expected
    assert any(changed)


# --------------------------------------------------------------------------- logprobs


def test_logprobs_are_the_models_own_before_bias_sorted_with_the_requested_count(
    seq: OneSequence,
) -> None:
    bias = {506: -100.0, 496: 7.0}
    row = seq.start()
    raw = log_softmax(seq.logits(row))
    chosen = SequenceSampler(
        SamplingParams(seed=3, logit_bias=bias, logprobs=True, top_logprobs=5),
        n_vocab=seq.n_vocab,
        token_fields=fields,
    )
    try:
        token, logprob = chosen.sample(seq.ctx, row)
    finally:
        chosen.close()

    assert logprob is not None
    assert (logprob.token, logprob.bytes) == fields(token)
    assert logprob.logprob == pytest.approx(raw[token], abs=1e-4)
    assert len(logprob.top) == 5
    values = [top.logprob for top in logprob.top]
    assert values == sorted(values, reverse=True)
    assert [int(top.token) for top in logprob.top] == [int(i) for i in np.argsort(-raw)[:5]]
    for top in logprob.top:
        assert top.logprob == pytest.approx(raw[int(top.token)], abs=1e-4)


def test_logprobs_with_no_alternatives_still_give_the_chosen_token(seq: OneSequence) -> None:
    row = seq.start()
    chosen = sampler(seq, temperature=0.0, logprobs=True, top_logprobs=0)
    try:
        token, logprob = chosen.sample(seq.ctx, row)
    finally:
        chosen.close()
    assert logprob is not None
    assert logprob.top == ()
    assert logprob.token == str(token)


def test_without_logprobs_none_are_returned(seq: OneSequence) -> None:
    row = seq.start()
    chosen = sampler(seq, seed=1)
    try:
        assert chosen.sample(seq.ctx, row)[1] is None
    finally:
        chosen.close()


# --------------------------------------------------------------------------- grammar masks


class OnlyTheseTokens:
    """A stand-in for ``GrammarMask``: allows ``allowed`` at every step."""

    def __init__(self, allowed: list[int], n_vocab: int) -> None:
        self._forbidden = np.ones(n_vocab, dtype=np.bool_)
        self._forbidden[allowed] = False
        self.accepted: list[int] = []

    def __call__(self, _input_ids: Any, scores: Any) -> Any:
        scores[self._forbidden] = -np.inf
        return scores

    def accept(self, token: int) -> bool:
        self.accepted.append(token)
        return False


@pytest.mark.parametrize("temperature", [1.5, 0.0])
def test_a_mask_forbids_tokens_and_logprobs_ignore_it(seq: OneSequence, temperature: float) -> None:
    allowed = [236764, 506, 496, 107]
    mask = OnlyTheseTokens(allowed, seq.n_vocab)
    masked = SequenceSampler(
        SamplingParams(seed=9, temperature=temperature, logprobs=True, top_logprobs=2),
        n_vocab=seq.n_vocab,
        constraint=cast(GrammarMask, mask),
        token_fields=fields,
    )
    row = seq.start()
    try:
        for _ in range(STEPS):
            raw = log_softmax(seq.logits(row))
            token, logprob = masked.sample(seq.ctx, row)
            assert token in allowed
            assert logprob is not None
            assert logprob.logprob == pytest.approx(raw[token], abs=1e-4)
            assert [int(top.token) for top in logprob.top] == [int(i) for i in np.argsort(-raw)[:2]]
            row = seq.decode([token])
    finally:
        masked.close()
    assert mask.accepted == []  # the engine advances the grammar, not the sampler


def test_a_compiled_grammar_is_followed_to_its_end(seq: OneSequence) -> None:
    vocab = llama_cpp.llama_model_get_vocab(seq.llama.model)
    ends = [t for t in range(seq.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    compiler = GrammarCompiler(llama_tokenizer(vocab, seq.n_vocab, end_tokens=ends))
    grammar = Grammar(source='start: "yes" | "no" | "maybe later"')
    for seed in range(3):
        mask = GrammarMask(compiler.matcher(grammar), seq.n_vocab)
        constrained = SequenceSampler(
            SamplingParams(seed=seed, temperature=1.5), n_vocab=seq.n_vocab, constraint=mask
        )
        row, text, complete = seq.start(), b"", False
        try:
            for _ in range(8):
                token, _ = constrained.sample(seq.ctx, row)
                assert token not in ends
                text += seq.llama.detokenize([token])
                if mask.accept(token):
                    complete = True
                    break
                row = seq.decode([token])
        finally:
            constrained.close()
        assert complete
        assert text in (b"yes", b"no", b"maybe later")


# --------------------------------------------------------------------------- batch rows


def test_each_sequence_samples_its_own_row_of_the_batch(llama: Any, seq: OneSequence) -> None:
    """Two sequences decoded in one batch: each sampler reads its own row."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_seq_max = 2 * N_CTX, N_CTX, 2
    ctx = llama_cpp.llama_init_from_model(llama.model, params)
    assert ctx is not None
    try:
        rows = decode_together(ctx, [seq.prompt, llama.tokenize(b"The capital city of France is")])
        logits = {
            seq_id: np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx, row), shape=(seq.n_vocab,)
            ).copy()
            for seq_id, row in rows.items()
        }
        samplers = {seq_id: sampler(seq, temperature=0.0) for seq_id in rows}
        sampled = {seq_id: samplers[seq_id].sample(ctx, row)[0] for seq_id, row in rows.items()}
        for each in samplers.values():
            each.close()
    finally:
        llama_cpp.llama_free(ctx)
    assert sampled == {seq_id: int(np.argmax(row)) for seq_id, row in logits.items()}
    assert not np.array_equal(logits[0], logits[1])


def decode_together(ctx: Any, prompts: list[list[int]]) -> dict[int, int]:
    """Decodes each prompt as its own sequence in one batch; returns each
    sequence's row (its last token, the only one with logits)."""
    batch = llama_cpp.llama_batch_init(sum(map(len, prompts)), 0, 1)
    rows = {}
    try:
        for seq_id, prompt in enumerate(prompts):
            for position, token in enumerate(prompt):
                i = batch.n_tokens
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = position == len(prompt) - 1
                batch.n_tokens += 1
            rows[seq_id] = batch.n_tokens - 1
        assert llama_cpp.llama_decode(ctx, batch) == 0
    finally:
        llama_cpp.llama_batch_free(batch)
    return rows


# --------------------------------------------------------------------------- lifecycle and errors


def test_close_is_idempotent_and_a_closed_sampler_refuses_to_sample(seq: OneSequence) -> None:
    closed = sampler(seq, seed=1)
    closed.close()
    closed.close()
    assert closed.closed
    with pytest.raises(RuntimeError):
        closed.sample(seq.ctx, seq.start())


def test_a_bias_on_a_token_outside_the_vocabulary_is_refused(seq: OneSequence) -> None:
    with pytest.raises(InvalidRequest) as caught:
        sampler(seq, logit_bias={seq.n_vocab: 1.0})
    assert caught.value.param == "logit_bias"


def test_logprobs_need_token_fields(seq: OneSequence) -> None:
    with pytest.raises(ValueError, match="token_fields"):
        SequenceSampler(SamplingParams(logprobs=True), n_vocab=seq.n_vocab)


def test_a_row_with_every_token_forbidden_cannot_be_drawn_from() -> None:
    with pytest.raises(RuntimeError, match="-inf"):
        chooser(seed=1).choose(crafted([]))


# --------------------------------------------------------------------------- the numpy draw alone

VOCAB = 3000
"""Crafted rows: a vocabulary that is not a multiple of the draw's block size."""


def chooser(penalty_window: int = 64, **sampling: Any) -> TokenChooser:
    return TokenChooser(SamplingParams(**sampling), VOCAB, penalty_window)


def crafted(probabilities: list[float], rest: float = -np.inf) -> Any:
    """A logits row whose first tokens have these probabilities (the others ``rest``)."""
    row = np.full(VOCAB, rest, dtype=np.float32)
    row[: len(probabilities)] = np.log(np.asarray(probabilities, dtype=np.float64))
    return row


def draws(each: TokenChooser, row: Any, count: int) -> list[int]:
    return [each.choose(row.copy()) for _ in range(count)]


def test_the_same_seed_draws_the_same_tokens_and_other_seeds_other_ones() -> None:
    row = crafted([0.25] * 4, rest=-3.0)
    first = draws(chooser(seed=21, top_p=0.9), row, 50)
    assert draws(chooser(seed=21, top_p=0.9), row, 50) == first
    assert draws(chooser(seed=22, top_p=0.9), row, 50) != first


@pytest.mark.parametrize("top_p", [1.0, 0.999])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.5])
def test_draws_follow_the_softmax_at_the_temperature(temperature: float, top_p: float) -> None:
    """20,000 draws of a seeded chooser from three tokens (the rest -inf): each
    token's share is within 0.02 of softmax(logits / temperature)."""
    probabilities = np.array([0.5, 0.3, 0.2])
    tokens = draws(
        chooser(seed=5, temperature=temperature, top_p=top_p), crafted([*probabilities]), 20_000
    )
    tempered = probabilities ** (1 / temperature)
    shares = np.bincount(tokens, minlength=VOCAB) / len(tokens)
    assert np.abs(shares[:3] - tempered / tempered.sum()).max() < 0.02
    assert shares[3:].sum() == 0


def test_tokens_outside_the_nucleus_are_never_drawn() -> None:
    """0.5 + 0.3 reach top_p 0.75: the 0.15 and 0.05 tokens and the rest (each far
    less likely) are outside, even at a high temperature."""
    row = crafted([0.5, 0.3, 0.15, 0.05], rest=-20.0)
    drawn = {
        token
        for seed in range(200)
        for token in draws(chooser(seed=seed, top_p=0.75, temperature=3.0), row, 5)
    }
    assert drawn == {0, 1}


@pytest.mark.parametrize("top_p", [0.0, 0.3, 0.9, 0.99, 0.9999])
def test_the_nucleus_is_the_smallest_most_likely_set_reaching_top_p(top_p: float) -> None:
    """Against a full sort of random rows (ties: lower id first); the edge may
    differ only where a sum's rounding decides it."""
    generator = np.random.default_rng(7)
    for _ in range(5):
        logits = (generator.standard_normal(4096) * 3).astype(np.float32)
        logits[generator.integers(0, 4096, 50)] = logits.max()  # ties at the top
        weights = np.exp(logits - logits.max())
        order = np.lexsort((np.arange(len(weights)), -weights))
        cumulative = np.cumsum(weights[order].astype(np.float64))
        count = int(np.searchsorted(cumulative, top_p * cumulative[-1], side="left")) + 1
        assert sorted(nucleus(weights, top_p).tolist()) == sorted(order[:count].tolist())


def test_a_tiny_top_p_or_temperature_takes_the_argmax() -> None:
    row = crafted([0.2, 0.1, 0.4, 0.3], rest=-5.0)
    for seed in range(100):
        assert chooser(seed=seed, top_p=1e-6).choose(row.copy()) == 2
        assert chooser(seed=seed, temperature=0.01).choose(row.copy()) == 2


def test_ties_in_a_one_token_nucleus_go_to_the_lower_id() -> None:
    row = crafted([0.1, 0.4, 0.1, 0.4])
    assert {chooser(seed=seed, top_p=0.01).choose(row.copy()) for seed in range(50)} == {1}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_bias_of_minus_100_removes_a_token_and_plus_100_forces_one(temperature: float) -> None:
    row = crafted([0.9, 0.05, 0.05], rest=-10.0)
    for seed in range(50):
        removed = chooser(seed=seed, temperature=temperature, logit_bias={0: -100.0})
        assert removed.choose(row.copy()) != 0
        forced = chooser(seed=seed, temperature=temperature, logit_bias={2999: 100.0})
        assert forced.choose(row.copy()) == 2999


def test_penalties_follow_llama_cpps_formula_on_the_row() -> None:
    """After tokens 3, 3 and 5 were chosen the row has lost count * frequency +
    presence on them (float32), and nothing elsewhere."""
    each = chooser(temperature=0.0, presence_penalty=0.5, frequency_penalty=0.25)
    for token in (3, 3, 5):
        lifted = np.zeros(VOCAB, dtype=np.float32)
        lifted[token] = 100.0 + 10  # above what the penalties take away
        assert each.choose(lifted) == token
    row = np.zeros(VOCAB, dtype=np.float32)
    each.choose(row)
    expected = np.zeros(VOCAB, dtype=np.float32)
    expected[3] -= np.float32(2) * np.float32(0.25) + np.float32(0.5)
    expected[5] -= np.float32(1) * np.float32(0.25) + np.float32(0.5)
    assert np.array_equal(row, expected)


def test_a_frequency_penalty_makes_a_chosen_token_less_likely() -> None:
    """Two equally likely tokens: after a large penalty on the first draw's token
    the second draw is mostly the other token; without one, about half the time."""

    def switches(**penalties: Any) -> int:
        count = 0
        for seed in range(300):
            each = chooser(seed=seed, **penalties)
            row = crafted([0.5, 0.5])
            count += each.choose(row.copy()) != each.choose(row.copy())
        return count

    assert switches(frequency_penalty=2.0) > 240  # e**2 / (1 + e**2) = 0.88: 264 expected
    assert switches(frequency_penalty=2.0, presence_penalty=2.0) > 280  # 0.98: 295
    assert 100 < switches() < 200


def test_penalties_forget_tokens_beyond_their_window() -> None:
    each = chooser(penalty_window=2, temperature=0.0, presence_penalty=1.0)
    for token in (7, 8, 9):
        lifted = np.zeros(VOCAB, dtype=np.float32)
        lifted[token] = 50.0
        each.choose(lifted)
    row = np.zeros(VOCAB, dtype=np.float32)
    each.choose(row)
    assert row[7] == 0.0 and row[8] == -1.0 and row[9] == -1.0
