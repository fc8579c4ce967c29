"""The batched engine's per-sequence sampler, on the real embedded Gemma 3 270M.

A low-level decode loop (one ``llama_batch``, as the engine builds them) feeds the
sampler. No test depends on what the model writes: they check the sampler against
the logits it was given (argmax, bias, penalties, masks, log-softmax), against
llama-cpp-python's own ``Llama.generate`` on the same logits, and determinism.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from typing import Any, cast

import llama_cpp
import numpy as np
import pytest

from portway.backends.base import Grammar, SamplingParams
from portway.backends.llamacpp.default_model import ensure_default_gguf
from portway.backends.llamacpp.loading import cpu_advertises_amx, model_params
from portway.backends.llamacpp.seq_sampling import SequenceSampler, llama_seed
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


@pytest.mark.parametrize(
    "sampling",
    [
        {"temperature": 0.0},
        {"seed": 5},
        {"seed": 6, "temperature": 0.8, "top_p": 0.9},
        {"seed": 7, "presence_penalty": 1.5, "frequency_penalty": 1.0},
        {"seed": 8, "logit_bias": {506: 5.0, 496: -100.0}},
        {"temperature": 0.0, "logit_bias": {506: 5.0, 496: -100.0}},
        {"temperature": 0.0, "logit_bias": {506: 2.0}, "presence_penalty": 1.0},
    ],
)
def test_tokens_are_those_llama_generate_samples_from_the_same_logits(
    seq: OneSequence, sampling: dict[str, Any]
) -> None:
    """The native chain means what the one-request path's ``Llama.generate`` meant:
    logit bias, penalties, top-p, temperature, seeded draw (greedy at 0)."""
    params = SamplingParams(**sampling)
    assert seq.run(sampler(seq, **sampling)) == generated(seq.llama, seq.prompt, params)


def generated(llama: Any, prompt: list[int], params: SamplingParams) -> list[int]:
    bias = params.logit_bias

    def add_bias(_ids: Any, scores: Any) -> Any:
        for token, value in bias.items():
            scores[token] += value
        return scores

    llama.set_seed(llama_seed(params.seed))
    llama.n_tokens = 0
    tokens = llama.generate(
        prompt,
        temp=params.temperature,
        top_p=params.top_p,
        top_k=0,
        min_p=0.0,
        typical_p=1.0,
        repeat_penalty=1.0,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        logits_processor=llama_cpp.LogitsProcessorList([add_bias]) if bias else None,
    )
    try:
        return [token for _, token in zip(range(STEPS), tokens, strict=False)]
    finally:
        tokens.close()
        sampler_chain, llama._sampler = llama._sampler, None
        if sampler_chain is not None:
            sampler_chain.close()


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


def test_samplers_dropped_without_close_are_freed(seq: OneSequence) -> None:
    dropped = sampler(seq, seed=1)
    finalizer = dropped._free
    del dropped
    gc.collect()
    assert not finalizer.alive


def test_creating_and_closing_many_samplers_does_not_grow_memory(seq: OneSequence) -> None:
    """Each chain holds a vocabulary-sized buffer (about 3 MB here) once it has
    sampled: 300 leaked chains would add about 900 MB."""
    row = seq.start()
    settings = {"seed": 1, "logit_bias": {506: 1.0}, "presence_penalty": 0.5}

    def churn(count: int) -> None:
        for _ in range(count):
            each = sampler(seq, **settings)
            each.sample(seq.ctx, row)
            each.close()

    churn(30)
    before = resident_bytes()
    churn(300)
    assert resident_bytes() - before < 150 * 1024 * 1024


def resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * 4096


def test_a_bias_on_a_token_outside_the_vocabulary_is_refused(seq: OneSequence) -> None:
    with pytest.raises(InvalidRequest) as caught:
        sampler(seq, logit_bias={seq.n_vocab: 1.0})
    assert caught.value.param == "logit_bias"


def test_logprobs_need_token_fields(seq: OneSequence) -> None:
    with pytest.raises(ValueError, match="token_fields"):
        SequenceSampler(SamplingParams(logprobs=True), n_vocab=seq.n_vocab)
