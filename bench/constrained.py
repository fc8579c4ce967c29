"""Constrained decoding: generation speed with and without a JSON schema.

One process, the embedded Gemma 3 270M on llama.cpp through Portway's backend, the
same prompt and sampling: runs without a constraint and runs under a JSON schema
alternate, and each reports its decode rate (tokens after the first, over the
time from the first to the last). Also measured: what the grammar mask costs per
token on its own (computing llguidance's mask and applying it to Gemma's 262k
logits), the one-off tokenizer build, and the time to compile a schema, cold
(nothing cached) and cached (the same schema again). The goal: constrained
within 15% of unconstrained tokens/s.

The results replace the "Constrained decoding" section of BENCHMARKS.md.

    .venv/bin/python bench/constrained.py [--runs 5] [--tokens 128] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from common import CpuWatch, machine, median, replace_section

from portway.backends.base import GenerationRequest, Grammar, Message, SamplingParams
from portway.backends.llamacpp.backend import LlamaCppBackend
from portway.backends.llamacpp.default_model import ensure_default_gguf
from portway.constrain import json_schema_grammar, schema
from portway.constrain.runtime import GrammarCompiler, GrammarMask

SECTION = "## Constrained decoding"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
DATA_DIR = Path(tempfile.gettempdir()) / "portway-bench-constrained"
GOAL = 0.85
PROMPT = (Message("user", "List the people in the photo, as JSON, with all their details."),)

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
"""Long enough that every constrained run writes all its tokens."""

LARGE = {
    "type": "object",
    "properties": {
        f"field_{i}": {
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "count": {"type": "integer", "minimum": 0},
                "kind": {"enum": ["a", "b", "c"]},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 16}},
            },
            "required": ["id", "count"],
        }
        for i in range(60)
    },
}
"""About 11 KB of schema: 60 nested objects."""


@dataclass
class Run:
    tokens: int
    rate: float


async def generate(
    backend: LlamaCppBackend, tokens: int, grammar: Grammar | None, seed: int
) -> Run:
    sampling = SamplingParams(max_tokens=tokens, temperature=0.8, seed=seed)
    request = GenerationRequest(PROMPT, sampling, constraint=grammar)
    produced = 0
    first = last = 0.0
    async for delta in backend.generate(request):
        if delta.tokens:
            now = time.perf_counter()
            first = first or now
            last = now
            produced += delta.tokens
    return Run(produced, (produced - 1) / (last - first) if last > first else float("nan"))


def mask_cost(compiler: GrammarCompiler, vocab_size: int, text: str) -> float:
    """Microseconds per token to compute the mask and apply it to the logits, over
    the tokens of ``text`` (a valid output of ``PEOPLE``)."""
    mask = GrammarMask(compiler.matcher(json_schema_grammar(PEOPLE)), vocab_size)
    tokens = compiler.tokenizer.tokenize_str(text)
    logits = np.zeros(vocab_size, dtype=np.float32)
    started = time.perf_counter()
    for token in tokens:
        logits[:] = 0
        mask(None, logits)
        mask.accept(token)
    return (time.perf_counter() - started) / len(tokens) * 1e6


def compile_times(compiler: GrammarCompiler, grammar_schema: dict[str, Any]) -> tuple[float, float]:
    """Milliseconds to check a schema and compile it for the tokenizer: cold, cached."""
    cold, cached = [], []
    for _ in range(5):
        schema.clear_cache()
        fresh = GrammarCompiler(compiler.tokenizer)
        cold.append(_compile_ms(fresh, grammar_schema))
        cached.append(_compile_ms(fresh, grammar_schema))
    return median(cold), median(cached)


def _compile_ms(compiler: GrammarCompiler, grammar_schema: dict[str, Any]) -> float:
    started = time.perf_counter()
    compiler.matcher(json_schema_grammar(grammar_schema))
    return (time.perf_counter() - started) * 1000


async def run(runs: int, tokens: int) -> str:
    backend = LlamaCppBackend(ensure_default_gguf(DATA_DIR), n_ctx=1024)
    await backend.start()
    try:
        started = time.perf_counter()
        compiler = backend._grammar_compiler()  # builds the tokenizer: the one-off cost
        tokenizer_seconds = time.perf_counter() - started
        grammar = json_schema_grammar(PEOPLE)
        await generate(backend, 8, None, 0)  # warm up both paths
        await generate(backend, 8, grammar, 0)
        watch = CpuWatch([os.getpid()]).start()
        free, constrained = [], []
        for seed in range(runs):
            free.append(await generate(backend, tokens, None, seed))
            constrained.append(await generate(backend, tokens, grammar, seed))
        foreign = watch.foreign_cores()
        person = '{"name": "Ada Lovelace", "age": 36, "role": "host", "smiling": true}'
        sample = "[" + ", ".join([person] * 45) + "]"
        cost = mask_cost(compiler, backend._n_vocab, sample)
        small = compile_times(compiler, PEOPLE)
        large = compile_times(compiler, LARGE)
    finally:
        await backend.close()
    return report(free, constrained, foreign, cost, tokenizer_seconds, small, large, tokens)


def report(
    free: list[Run],
    constrained: list[Run],
    foreign: float,
    cost: float,
    tokenizer_seconds: float,
    small: tuple[float, float],
    large: tuple[float, float],
    tokens: int,
) -> str:
    free_rate = median([r.rate for r in free])
    constrained_rate = median([r.rate for r in constrained])
    ratio = constrained_rate / free_rate
    verdict = "meets" if ratio >= GOAL else "misses"
    info = machine()
    lines = [
        SECTION,
        "",
        f"Gemma 3 270M (Q4_K_M) in-process on llama.cpp, {info.cpu}, {info.cores} cores, "
        f"{info.date}; {len(free)} alternating runs of {tokens} tokens each, temperature 0.8, "
        f"the same seeds. Other processes used {foreign:.2f} CPUs on average meanwhile "
        "(the machine is shared), so compare the two rows rather than absolute numbers.",
        "",
        "| Generation | tokens/s (median) | tokens/s range | tokens per run |",
        "|---|---:|---:|---:|",
        _rate_row("unconstrained", free),
        _rate_row("JSON schema (array of 40+ objects)", constrained),
        "",
        f"Constrained/unconstrained: **{ratio:.2f}** ({verdict} the goal of {GOAL:.2f}). "
        f"The mask itself (llguidance's mask over 262,144 tokens, applied to the logits "
        f"with numpy) costs {cost:.0f} µs per token.",
        "",
        "| Schema compile (check + llguidance, for Gemma's tokenizer) | cold ms | cached ms |",
        "|---|---:|---:|",
        f"| small (array of objects, 4 properties) | {small[0]:.1f} | {small[1]:.3f} |",
        f"| large (60 nested objects, 11 KB) | {large[0]:.1f} | {large[1]:.3f} |",
        "",
        f"Building the llguidance tokenizer for the model, once per model on the first "
        f"constrained request: {tokenizer_seconds:.2f} s.",
        "",
    ]
    return "\n".join(lines)


def _rate_row(name: str, runs: list[Run]) -> str:
    rates = [r.rate for r in runs]
    counts = sorted({r.tokens for r in runs})
    spread = f"{min(rates):.1f} - {max(rates):.1f}"
    return f"| {name} | {median(rates):.1f} | {spread} | {', '.join(map(str, counts))} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    args = parser.parse_args()
    text = asyncio.run(run(args.runs, args.tokens))
    print("\n" + text)
    if not args.no_write:
        replace_section(BENCHMARKS, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
