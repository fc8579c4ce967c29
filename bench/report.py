"""Markdown for the terminal and for BENCHMARKS.md."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common import Machine, median
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
        f"top_p {s.top_p}, seed {s.seed}+run, prompts differing from run to run after a "
        f"few tokens. One warm-up each, then {runs} runs each, interleaved: one run of "
        "each per round, the first of the round rotating. tokens/s is the decode rate "
        "from the first token's text to the last one's, as the client sees it; TTFT is "
        "from sending the request to the first text. llama-cpp-python's server runs "
        "with `--chat_format gemma` (the GGUF has no chat template, and its fallback "
        "is Llama 2's) and `--logits_all false` (its default keeps every prompt "
        "token's logits), as Portway and the in-process call do."
    )


def generation_verdict(result: GenerationResult, portway: str) -> str:
    ratio = result.rate_ratio(portway)
    met = "meets" if ratio >= RATIO_GOAL else "misses"
    return (
        f"Portway / in-process decode rate: **{ratio:.3f}** ({met} the {RATIO_GOAL} goal; "
        f"median of the per-round ratios {result.paired_rate_ratio(portway):.3f}); "
        f"added time to first token: **{result.added_ttft_ms(portway):+.1f} ms**."
    )


def generation_noise(result: GenerationResult) -> str:
    rounds = result.rounds
    text = (
        "Other processes' load during the kept rounds: median "
        f"{_num(median(rounds.foreign), 2)}, max {_num(max(rounds.foreign), 2)} CPUs"
    )
    if rounds.repeated:
        loads = ", ".join(f"{load:.2f}" for load in rounds.repeated)
        text += (
            f"; {len(rounds.repeated)} run(s) stopped early by that load ({loads} CPUs), "
            "their rounds run again"
        )
    return text + "."


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
            _num(r.server_cpu_ms, 3),
            _num(r.foreign_cores, 2),
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
        "server CPU ms/req",
        "other load (CPUs)",
    ]
    return table(header, rows)


def overhead_settings(limits: Limits, pinning: str) -> str:
    return (
        "A scripted model (16 one-word pieces, no delay) behind each front; load from "
        "`httpx.AsyncClient` with HTTP keep-alive, one connection per concurrent worker, "
        "each sending its next request as soon as the last is answered. Per row: a "
        f"warm-up of {limits.warmup} requests, then {limits.requests} requests or "
        f"{limits.seconds:.0f} s, whichever comes first. Unary latency is to the full "
        "body, streamed latency to the last byte (`data: [DONE]`); server CPU is the "
        "server process's user + system time over the row, per request; other load is "
        f"what processes outside the benchmark used meanwhile. {pinning}"
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


GENERATION = "## Generation: Portway vs llama-cpp-python"
OVERHEAD = "## Request-path overhead: Portway vs a bare FastAPI front"
MACHINE = "## Machine"
MINE = (MACHINE, GENERATION, OVERHEAD)
"""The sections ``bench/run.py`` owns; others (another bench's) are kept as they are."""


def tables(report: Report) -> str:
    parts = [
        "### Streamed generation",
        generation_table(report.generation),
        generation_verdict(report.generation, report.portway),
        generation_noise(report.generation),
        "### Request-path overhead (scripted model)",
        overhead_table(report.overhead),
    ]
    return "\n\n".join(parts)


def preamble() -> str:
    return "\n\n".join(
        [
            "# Benchmarks",
            "The Machine, Generation and Request-path overhead sections are the latest full "
            "run of `bench/run.py`; every full run rewrites them and keeps the other "
            "sections (other benches'). How to run: `make bench` (or `.venv/bin/python "
            "bench/run.py --runs 5 --tokens 256`; `--quick` is a smoke run that leaves this "
            "file alone).",
            ABOUT,
        ]
    )


def sections(report: Report) -> list[str]:
    notes = "\n".join(f"- {note}" for note in report.generation_notes)
    generation = [
        GENERATION,
        generation_settings(report.generation, report.generation_runs),
        generation_table(report.generation),
        generation_verdict(report.generation, report.portway),
        generation_noise(report.generation),
        *([notes] if notes else []),
    ]
    overhead = [
        OVERHEAD,
        overhead_settings(report.limits, report.pinning),
        overhead_table(report.overhead),
    ]
    return [
        f"{MACHINE}\n\n{machine_table(report.machine)}",
        "\n\n".join(generation),
        "\n\n".join(overhead),
    ]


def split_sections(text: str) -> list[str]:
    """The level-2 sections of a markdown document, each from its heading on."""
    found: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            found.append([])
        if found:
            found[-1].append(line)
    return ["\n".join(lines).strip() for lines in found]


def write(path: Path, report: Report) -> None:
    """Writes this bench's sections into ``path``, keeping every other bench's."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    others = [s for s in split_sections(current) if s.splitlines()[0] not in MINE]
    path.write_text("\n\n".join([preamble(), *sections(report), *others]) + "\n")
