"""Markdown for the terminal and for BENCHMARKS.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from common import Machine
from generation import GenerationResult
from overhead import Limits, LoadResult

RATIO_GOAL = 0.95


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def machine_table(machine: Machine) -> str:
    return table(["", ""], [list(row) for row in machine.rows()])


# --------------------------------------------------------------------------- (a)


def generation_table(result: GenerationResult) -> str:
    rows = []
    for name, samples in result.samples.items():
        rates = [s.decode_rate for s in samples]
        ttfts = [s.ttft * 1000 for s in samples]
        is_reference = name == result.reference
        rows.append(
            [
                name,
                _num(result.median_rate(name)),
                f"{_num(min(rates))} - {_num(max(rates))}",
                _num(result.median_ttft(name) * 1000),
                f"{_num(min(ttfts))} - {_num(max(ttfts))}",
                "1 (reference)" if is_reference else _num(result.rate_ratio(name), 3),
                "0 (reference)" if is_reference else f"{result.added_ttft_ms(name):+.1f}",
                "—" if is_reference else f"{result.same_text(name)}/{len(samples)}",
            ]
        )
    header = [
        "Path",
        "tokens/s (median)",
        "tokens/s range",
        "TTFT ms (median)",
        "TTFT ms range",
        "tokens/s vs in-process",
        "added TTFT ms",
        "same text as in-process",
    ]
    return table(header, rows)


def generation_settings(result: GenerationResult, runs: int) -> str:
    s = result.settings
    return (
        f"Model `{s.model.name}`, `n_threads={s.threads}`, `n_ctx={s.n_ctx}`, "
        f"{s.tokens} tokens forced per completion (`max_tokens` and `logit_bias` -100 on "
        f"end-of-generation tokens {list(s.end_tokens)}), temperature {s.temperature}, "
        f"top_p {s.top_p}, seed {s.seed}+run. One warm-up each, then {runs} runs each, "
        "interleaved. tokens/s is the decode rate from the first token's text to the "
        "last one's, as the client sees it; TTFT is from sending the request to the "
        "first text."
    )


def generation_verdict(result: GenerationResult, portway: str) -> str:
    ratio = result.rate_ratio(portway)
    met = "meets" if ratio >= RATIO_GOAL else "misses"
    return (
        f"Portway / in-process decode rate: **{ratio:.3f}** ({met} the {RATIO_GOAL} goal); "
        f"added time to first token: **{result.added_ttft_ms(portway):+.1f} ms**."
    )


# --------------------------------------------------------------------------- (b)


def overhead_table(results: Sequence[LoadResult]) -> str:
    rows = [
        [
            r.mode,
            str(r.concurrency),
            r.front,
            str(r.requests),
            str(r.errors),
            _num(r.seconds),
            _num(r.rps, 0),
            _num(r.p50_ms, 2),
            _num(r.p99_ms, 2),
        ]
        for r in results
    ]
    header = [
        "Mode",
        "Concurrency",
        "Front",
        "Requests",
        "Errors",
        "s",
        "req/s",
        "p50 ms",
        "p99 ms",
    ]
    return table(header, rows)


def overhead_settings(limits: Limits, pinning: str) -> str:
    return (
        "A scripted model (16 one-word pieces, no delay) behind each front; load from "
        "`httpx.AsyncClient` with HTTP keep-alive, one connection per concurrent worker, "
        "each sending its next request as soon as the last is answered. Per row: a "
        f"warm-up of {limits.warmup} requests, then {limits.requests} requests or "
        f"{limits.seconds:.0f} s, whichever comes first. Unary latency is to the full "
        f"body, streamed latency to the last byte (`data: [DONE]`). {pinning}"
    )


# --------------------------------------------------------------------------- document


@dataclass(frozen=True)
class Report:
    machine: Machine
    generation: GenerationResult
    generation_runs: int
    portway: str
    generation_notes: Sequence[str]
    overhead: Sequence[LoadResult]
    limits: Limits
    pinning: str


ABOUT = """\
What is compared, and why: (a) whether putting Portway in front of llama.cpp costs
generation speed, against the same GGUF driven by llama-cpp-python in-process (no
HTTP at all: the ceiling) and by llama-cpp-python's own OpenAI-compatible server
(the thin front a user would otherwise pick), all with the same llama.cpp load
settings and sampling; (b) what Portway's request path (HTTP, auth, validation,
routing, usage records, logging) costs per request when the model costs nothing,
against a bare FastAPI front on the same stack that does none of that but a
token comparison: the floor for any FastAPI-based server."""


def tables(report: Report) -> str:
    parts = [
        "### (a) Streamed generation",
        generation_table(report.generation),
        generation_verdict(report.generation, report.portway),
        "### (b) Request-path overhead (scripted model)",
        overhead_table(report.overhead),
    ]
    return "\n\n".join(parts)


def document(report: Report) -> str:
    notes = [f"- {note}" for note in report.generation_notes]
    parts = [
        "# Benchmarks",
        "The latest full run of `bench/run.py` on the machine below; every full run "
        "overwrites this file. How to run: `make bench` (or `.venv/bin/python bench/run.py "
        "--runs 5 --tokens 256`; `--quick` is a smoke run that leaves this file alone).",
        ABOUT,
        "## Machine",
        machine_table(report.machine),
        "## (a) Streamed generation",
        generation_settings(report.generation, report.generation_runs),
        generation_table(report.generation),
        generation_verdict(report.generation, report.portway),
        *(["\n".join(notes)] if notes else []),
        "## (b) Request-path overhead",
        overhead_settings(report.limits, report.pinning),
        overhead_table(report.overhead),
    ]
    return "\n\n".join(parts) + "\n"
