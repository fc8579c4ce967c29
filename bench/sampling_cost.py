"""Per-token cost of the batched engine's sampler (``SequenceSampler.sample``).

One process, the embedded Gemma 3 270M (262,144-token vocabulary) on llama.cpp's
low-level API: one sequence, a prompt decoded with a ``llama_batch``, then one
token per ``llama_decode``, each chosen by a ``SequenceSampler``. Every
``sample()`` call is timed alone (``perf_counter_ns``), for each sampling set-up:
greedy, a seeded draw with and without top-p, logit bias, penalties, logprobs,
a JSON-schema grammar, and all of them at once. The grammar's ``accept`` (which
the engine calls) is timed apart. For scale: llama.cpp's own sampler chain
(top-p, temperature, seeded draw; what ``SequenceSampler`` used before it drew
with numpy) called directly on the same rows, and ``llama_decode`` of one token.
Set-ups alternate within each round.

The results replace the "Per-sequence sampling cost" section of BENCHMARKS.md.

    .venv/bin/python bench/sampling_cost.py [--runs 3] [--tokens 128] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
from common import CpuWatch, machine, median, percentile, replace_section

from portway.backends.base import SamplingParams
from portway.backends.llamacpp.default_model import ensure_default_gguf
from portway.backends.llamacpp.loading import cpu_advertises_amx, model_params
from portway.backends.llamacpp.seq_sampling import SequenceSampler, llama_seed
from portway.constrain import json_schema_grammar
from portway.constrain.llamacpp import llama_tokenizer
from portway.constrain.runtime import GrammarCompiler, GrammarMask

SECTION = "## Per-sequence sampling cost"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
DATA_DIR = Path(tempfile.gettempdir()) / "portway-bench-sampling"
N_CTX = 1024
PROMPT = b"List the people in the photo, as JSON, with all their details."
PEOPLE = {
    "type": "array",
    "minItems": 40,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["host", "guest", "staff"]},
            "smiling": {"type": "boolean"},
        },
        "required": ["name", "age", "role", "smiling"],
    },
}
DRAW = {"temperature": 0.8, "top_p": 0.95}
BIAS = {"logit_bias": {1: -100.0, 106: -100.0, 506: 2.0, 496: -1.0}}
PENALTIES = {"presence_penalty": 0.5, "frequency_penalty": 0.5}
LOGPROBS = {"logprobs": True, "top_logprobs": 5}


@dataclass(frozen=True)
class Setup:
    name: str
    sampling: dict[str, Any]
    grammar: bool = False
    native_only: bool = False


SETUPS = (
    Setup("greedy (temperature 0)", {"temperature": 0.0}),
    Setup("draw: temperature 0.8, top_p 0.95", DRAW),
    Setup("draw: temperature 1, top_p 1 (whole vocabulary)", {"temperature": 1.0}),
    Setup("draw + logit_bias (4 tokens)", {**DRAW, **BIAS}),
    Setup("draw + presence/frequency penalties", {**DRAW, **PENALTIES}),
    Setup("draw + logprobs (top_logprobs 5)", {**DRAW, **LOGPROBS}),
    Setup("draw + grammar (JSON schema)", DRAW, grammar=True),
    Setup("draw + all of the above", {**DRAW, **BIAS, **PENALTIES, **LOGPROBS}, grammar=True),
    Setup("reference: llama.cpp's native chain (draw 0.8 / 0.95)", DRAW, native_only=True),
    Setup(
        "reference: llama.cpp's native chain (temperature 1, top_p 1)",
        {"temperature": 1.0},
        native_only=True,
    ),
)


@dataclass
class Timings:
    """``sample_us`` and ``accept_us`` are CPU time of the calling thread (they run
    on it alone), so time the shared machine gives to others is not counted;
    ``sample_wall_us`` and ``decode_ms`` (llama.cpp's threads) are wall time."""

    sample_us: list[float] = field(default_factory=list)
    sample_wall_us: list[float] = field(default_factory=list)
    accept_us: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)

    def time_sample(self, call: Callable[[Any, int], Any], ctx: Any, row: int) -> int:
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        result = call(ctx, row)
        self.sample_us.append((time.thread_time_ns() - cpu) / 1e3)
        self.sample_wall_us.append((time.perf_counter_ns() - wall) / 1e3)
        return int(result[0] if isinstance(result, tuple) else result)


class Sequence:
    """One sequence on a llama.cpp context, decoded with ``llama_batch``."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.ctx = llama.ctx
        self.n_vocab = int(llama.n_vocab())
        self.prompt = llama.tokenize(PROMPT)
        self._batch = llama_cpp.llama_batch_init(N_CTX, 0, 1)
        self._position = 0

    def start(self) -> int:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        self._position = 0
        return self.decode(self.prompt)

    def decode(self, tokens: list[int]) -> int:
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, self._position + i, 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(tokens) - 1
        if llama_cpp.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        self._position += len(tokens)
        return len(tokens) - 1


class Bench:
    def __init__(self, llama: Any) -> None:
        self.seq = Sequence(llama)
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self.ends = [t for t in range(self.seq.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        tokenizer = llama_tokenizer(vocab, self.seq.n_vocab, end_tokens=self.ends)
        self.compiler = GrammarCompiler(tokenizer)
        self.grammar = json_schema_grammar(PEOPLE)
        self.llama = llama

    def fields(self, token: int) -> tuple[str, tuple[int, ...]]:
        raw: bytes = self.llama.detokenize([token], special=True)
        return raw.decode("utf-8", errors="replace"), tuple(raw)

    def run(self, setup: Setup, tokens: int, seed: int, into: Timings) -> None:
        params = SamplingParams(seed=seed, **setup.sampling)
        if setup.native_only:
            self._run_native(params, tokens, into)
            return
        mask = self._mask() if setup.grammar else None
        sampler = self._sampler(params, mask)
        row = self.seq.start()
        try:
            for _ in range(tokens):
                token = into.time_sample(sampler.sample, self.seq.ctx, row)
                if mask is not None and self._accept(mask, token, into):
                    sampler.close()  # the grammar is complete: start it again
                    mask = self._mask()
                    sampler = self._sampler(params, mask)
                row = self._decode(token, into)
        finally:
            sampler.close()

    def _run_native(self, params: SamplingParams, tokens: int, into: Timings) -> None:
        chain = native_chain(params)

        def native(ctx: Any, row: int) -> int:
            return int(llama_cpp.llama_sampler_sample(chain, ctx, row))

        row = self.seq.start()
        try:
            for _ in range(tokens):
                token = into.time_sample(native, self.seq.ctx, row)
                row = self._decode(token, into)
        finally:
            llama_cpp.llama_sampler_free(chain)

    def _sampler(self, params: SamplingParams, mask: GrammarMask | None) -> SequenceSampler:
        return SequenceSampler(
            params, n_vocab=self.seq.n_vocab, constraint=mask, token_fields=self.fields
        )

    def _mask(self) -> GrammarMask:
        return GrammarMask(self.compiler.matcher(self.grammar), self.seq.n_vocab)

    def _accept(self, mask: GrammarMask, token: int, into: Timings) -> bool:
        if token in self.ends:
            return True
        started = time.thread_time_ns()
        complete = mask.accept(token)
        into.accept_us.append((time.thread_time_ns() - started) / 1e3)
        return complete

    def _decode(self, token: int, into: Timings) -> int:
        started = time.perf_counter_ns()
        row = self.seq.decode([token])
        into.decode_ms.append((time.perf_counter_ns() - started) / 1e6)
        return row


def native_chain(params: SamplingParams) -> Any:
    """llama.cpp's chain for a plain draw: top-p (when below 1), temperature and a
    seeded draw (freed by the caller with ``llama_sampler_free``)."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if params.top_p < 1.0:
        llama_cpp.llama_sampler_chain_add(
            chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1)
        )
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    llama_cpp.llama_sampler_chain_add(
        chain, llama_cpp.llama_sampler_init_dist(llama_seed(params.seed))
    )
    return chain


def load(threads: int) -> Any:
    path = ensure_default_gguf(DATA_DIR)
    with model_params(extra_buffer_types=not cpu_advertises_amx()):
        return llama_cpp.Llama(
            str(path), n_ctx=N_CTX, n_threads=threads, logits_all=False, verbose=False
        )


def measure(runs: int, tokens: int, threads: int) -> tuple[dict[str, Timings], float]:
    bench = Bench(load(threads))
    timings = {setup.name: Timings() for setup in SETUPS}
    for setup in SETUPS:  # warm-up
        bench.run(setup, 8, 0, Timings())
    watch = CpuWatch([os.getpid()]).start()
    for round_ in range(runs):
        order = SETUPS[round_ % len(SETUPS) :] + SETUPS[: round_ % len(SETUPS)]
        for setup in order:
            bench.run(setup, tokens, 1234 + round_, timings[setup.name])
    foreign = watch.foreign_cores()
    return timings, foreign


def report(
    timings: dict[str, Timings],
    foreign: float,
    runs: int,
    tokens: int,
    threads: int,
) -> str:
    info = machine()
    decode = median([ms for t in timings.values() for ms in t.decode_ms])
    lines = [
        SECTION,
        "",
        f"`bench/sampling_cost.py`: what `SequenceSampler.sample()` (the batched engine's "
        f"per-sequence sampler) costs per token. Gemma 3 270M (Q4_K_M, 262,144-token "
        f"vocabulary) in-process, one sequence decoded with `llama_batch`, "
        f"`n_threads={threads}`; {info.cpu}, {info.cores} cores, {info.date}; "
        f"{runs} rounds of {tokens} tokens per set-up, set-ups alternating. Other "
        f"processes used {foreign:.2f} CPUs on average meanwhile (the machine is shared), "
        "so compare rows rather than absolute numbers.",
        "",
        "| Sampling set-up | sample() CPU µs/token (median) | p90 | mean | wall µs (median) "
        "| grammar accept CPU µs (engine) | share of a one-sequence step |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for setup in SETUPS:
        t = timings[setup.name]
        cost = median(t.sample_us)
        accept = f"{median(t.accept_us):.0f}" if t.accept_us else "—"
        share = cost / (cost + decode * 1e3)
        lines.append(
            f"| {setup.name} | {cost:.0f} | {percentile(t.sample_us, 0.9):.0f} | "
            f"{statistics.fmean(t.sample_us):.0f} | "
            f"{median(t.sample_wall_us):.0f} | {accept} | "
            f"{share:.1%} |"
        )
    lines += [
        "",
        f"`llama_decode` of one token: {decode:.2f} ms (median, wall). sample() and accept "
        "are CPU time of the calling thread (they run on it alone), so other processes' "
        "share of the cores does not count in them; wall times include it. The sampler "
        "is numpy: a maximum and one exponential pass over the 262,144-token row into a "
        "buffer it keeps, then a blocked inverse-CDF search (top_p 1) or a threshold "
        "search for the top-p nucleus that sorts only the tokens near its edge; greedy "
        "is an argmax. The reference rows are llama.cpp's own chain, which the sampler "
        "used before: it copies the row into a candidate array, runs a softmax over it "
        "and, for top_p below 1, sorts the whole vocabulary whenever its top 256 tokens "
        "hold less than top_p of the mass. Logprobs (a log-softmax over the row) and a "
        "grammar (llguidance's mask, unpacked and applied with numpy) are paid only by "
        "requests that ask for them.",
        "",
        f"For a batch of 8 sequences sampled one after another that is, on average, "
        f"{8 * statistics.fmean(timings[SETUPS[1].name].sample_us) / 1e3:.1f} ms of one core "
        f"per step at temperature 0.8 / top_p 0.95 "
        f"({8 * statistics.fmean(timings[SETUPS[-2].name].sample_us) / 1e3:.1f} ms with "
        f"llama.cpp's chain), "
        f"{8 * statistics.fmean(timings[SETUPS[2].name].sample_us) / 1e3:.1f} ms at top_p 1 "
        f"({8 * statistics.fmean(timings[SETUPS[-1].name].sample_us) / 1e3:.1f} ms with "
        f"llama.cpp's chain) "
        f"and {8 * statistics.fmean(timings[SETUPS[0].name].sample_us) / 1e3:.1f} ms greedy.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args()
    timings, foreign = measure(args.runs, args.tokens, args.threads)
    text = report(timings, foreign, args.runs, args.tokens, args.threads)
    print("\n" + text)
    if not args.no_write:
        replace_section(BENCHMARKS, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
