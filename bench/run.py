"""Portway's benchmark: what serving a model through Portway costs, on this machine.

(a) Generation. The embedded Gemma 3 270M GGUF streams a fixed number of tokens
    through a real ``portway serve`` process (the ``openai`` client, ``stream=True``),
    through llama-cpp-python in-process (``Llama.create_completion(stream=True)``,
    the ceiling: no HTTP at all), and through llama-cpp-python's own server (the thin
    OpenAI-compatible front a user would otherwise pick). Same GGUF, threads, n_ctx,
    llama.cpp load settings and sampling; runs interleaved after one warm-up each.
    Reported: median decode tokens/s and time to first token, Portway's tokens/s
    relative to in-process (goal: at least 0.95) and its added time to first token.

(b) Overhead. Portway with only a scripted model (canned text, no delay) and a bare
    FastAPI front doing the same, loaded by an ``httpx.AsyncClient`` (keep-alive) at
    concurrency 1, 16 and 64 (unary) and 16 (streamed): requests/s, p50, p99. This is
    the cost of Portway's request path itself, model excluded.

The machine may be shared: every measurement waits for other processes to go
quiet, measures their load meanwhile, and is taken again when it was disturbed
(see ``generation.run_interleaved`` and ``measure_quietly``); the report says how
much other load there was.

Run ``.venv/bin/python bench/run.py [--runs 5] [--tokens 256] [--quick]``, or
``make bench``. A full run rewrites its sections of BENCHMARKS.md (other benches'
sections are kept); ``--quick`` only prints. Timings never go into the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import report
import servers
from common import machine, wait_for_quiet
from generation import (
    Contender,
    DirectLlama,
    GenerationResult,
    GenerationSettings,
    OpenAIStream,
    end_of_generation_tokens,
    load_llama,
    run_interleaved,
)
from overhead import (
    SCRIPT,
    Front,
    Limits,
    LoadResult,
    check_reply,
    measure,
    pinned,
    scripted_catalog,
)

from portway.backends.llamacpp.default_model import ensure_default_gguf

REPO = Path(__file__).resolve().parent.parent
PORTWAY = "Portway"
IN_PROCESS = "llama-cpp-python in-process"
LLAMA_SERVER = "llama-cpp-python server"
BARE_FRONT = "bare FastAPI front"

GGUF_CATALOG = """\
default_model = false
default_embedding_model = false

[[models]]
user = "bench"
app = "generation"
model = "gemma-3-270m"
backend = "llamacpp"
path = "{path}"
threads = {threads}
context_length = {n_ctx}
aliases = ["gemma-bench"]
"""


@dataclass(frozen=True)
class Options:
    runs: int
    tokens: int
    threads: int
    n_ctx: int
    limits: Limits
    budget: float
    """Seconds (a) may spend running noisy rounds again."""
    work_dir: Path
    write: bool


FULL = {"runs": 5, "tokens": 256, "requests": 2000, "seconds": 20.0, "budget": 300.0}
QUICK = {"runs": 2, "tokens": 64, "requests": 300, "seconds": 5.0, "budget": 30.0}


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description="Benchmark Portway against llama-cpp-python.")
    parser.add_argument("--runs", type=int, help="(a): measured runs per contender [5]")
    parser.add_argument("--tokens", type=int, help="(a): tokens per completion [256]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama threads")
    parser.add_argument("--ctx", type=int, default=2048, help="n_ctx for every contender")
    parser.add_argument("--requests", type=int, help="(b): requests per row [2000]")
    parser.add_argument("--seconds", type=float, help="(b): time limit per row [20]")
    parser.add_argument("--budget", type=float, help="(a): seconds for re-running noisy rounds")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (defaults 2 runs of 64 tokens, short (b)); BENCHMARKS.md left alone",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "portway-bench",
        help="where the GGUF is cached and servers keep their data",
    )
    args = parser.parse_args()
    for name, default in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return Options(
        runs=args.runs,
        tokens=args.tokens,
        threads=args.threads,
        n_ctx=args.ctx,
        limits=Limits(requests=args.requests, seconds=args.seconds, warmup=args.requests // 10),
        budget=args.budget,
        work_dir=args.work_dir,
        write=not args.quick,
    )


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- (a)


def optional_server(
    stack: contextlib.ExitStack, server: servers.ServerProcess, notes: list[str]
) -> servers.ServerProcess | None:
    """Starts ``server``; when it cannot start, notes why and goes on without it."""
    try:
        return stack.enter_context(server)
    except RuntimeError as exc:
        notes.append(f"{server.name} left out: {str(exc).splitlines()[0]}")
        log(f"! {notes[-1]}")
        return None


def generation_contenders(
    stack: contextlib.ExitStack,
    settings: GenerationSettings,
    direct: DirectLlama,
    run_dir: Path,
    notes: list[str],
) -> tuple[list[Contender], list[int]]:
    """The contenders of (a), and the ids of the server processes started for them."""
    catalog = GGUF_CATALOG.format(
        path=settings.model, threads=settings.threads, n_ctx=settings.n_ctx
    )
    portway = stack.enter_context(servers.portway(run_dir / "portway-generation", catalog))
    contenders: list[Contender] = [
        OpenAIStream(PORTWAY, settings, portway.base_url, portway.token, "gemma-bench", usage=True),
        direct,
    ]
    pids = [portway.pid]
    llama_server = optional_server(
        stack,
        servers.llama_cpp_server(
            settings.model, threads=settings.threads, n_ctx=settings.n_ctx, log_dir=run_dir
        ),
        notes,
    )
    if llama_server is not None:
        # Its defaults add top-k 40, min-p 0.05 and repeat penalty 1.1: turned off to match.
        neutral = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
        contenders.append(
            OpenAIStream(
                LLAMA_SERVER, settings, llama_server.base_url, "none", "gemma", extra_body=neutral
            )
        )
        pids.append(llama_server.pid)
    return contenders, pids


def prompt_notes(result: GenerationResult) -> list[str]:
    """Checks that every path saw the same prompt and generated the tokens asked for."""
    notes = [f"Not as requested: {problem}" for problem in result.problems()]
    counts = {
        name: {s.prompt_tokens for s in samples if s.prompt_tokens is not None}
        for name, samples in result.samples.items()
    }
    reference = counts[result.reference]
    for name, seen in counts.items():
        if seen and seen != reference:
            notes.append(f"Prompt token counts differ: {name} {seen}, in-process {reference}.")
    return notes


def run_generation(
    options: Options, model: Path, run_dir: Path
) -> tuple[GenerationResult, list[str]]:
    settings = GenerationSettings(
        model=model, threads=options.threads, n_ctx=options.n_ctx, tokens=options.tokens
    )
    llama = load_llama(settings)
    settings = replace(settings, end_tokens=end_of_generation_tokens(llama))
    direct = DirectLlama(settings, llama, name=IN_PROCESS)
    notes: list[str] = []
    try:
        with contextlib.ExitStack() as stack:
            contenders, pids = generation_contenders(stack, settings, direct, run_dir, notes)
            log(f"(a) generation: {', '.join(c.name for c in contenders)}")
            rounds = run_interleaved(
                contenders, options.runs, [os.getpid(), *pids], budget=options.budget, log=log
            )
    finally:
        llama.close()
    result = GenerationResult(settings, rounds, reference=IN_PROCESS)
    return result, notes + prompt_notes(result)


# --------------------------------------------------------------------------- (b)


def cpu_split() -> tuple[set[int] | None, set[int] | None, str]:
    """Servers on one CPU, the load generator on another, when there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, "Server and load generator share the only CPU."
    server, client = {cpus[0]}, {cpus[1]}
    return server, client, f"Servers pinned to CPU {cpus[0]}, the load generator to CPU {cpus[1]}."


ROWS: list[tuple[bool, int]] = [(False, 1), (False, 16), (False, 64), (True, 16)]
"""(b)'s rows: (streamed, concurrency)."""
QUIET = {"threshold": 0.1, "limit": 30.0}
"""Before each row of (b): wait up to 30 s for other processes to use under 0.1 CPUs."""
QUIET_MAX = 0.25
"""A row of (b) during which other processes used more CPUs than this is run again."""


async def measure_quietly(
    front: Front, *, stream: bool, concurrency: int, limits: Limits, pids: list[int]
) -> LoadResult:
    """``measure`` after waiting for quiet, taken again (up to twice) when other
    processes used over ``QUIET_MAX`` CPUs meanwhile."""
    for attempt in range(3):
        await asyncio.to_thread(wait_for_quiet, [os.getpid(), *pids], **QUIET)
        result = await measure(
            front, concurrency=concurrency, stream=stream, limits=limits, pids=pids
        )
        if result.foreign_cores <= QUIET_MAX or attempt == 2:
            break
        log(f"  {front.name}: other processes used {result.foreign_cores:.2f} CPUs; again")
    return result


async def load_fronts(fronts: list[Front], limits: Limits) -> list[LoadResult]:
    """Every row for every front, fronts interleaved within each row."""
    for front in fronts:
        await check_reply(front)
    pids = [front.pid for front in fronts]
    results = []
    for stream, concurrency in ROWS:
        for front in fronts:
            result = await measure_quietly(
                front, stream=stream, concurrency=concurrency, limits=limits, pids=pids
            )
            log(
                f"  {result.mode} c={concurrency} {front.name}: {result.rps:.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, "
                f"server CPU {result.server_cpu_ms:.2f} ms/request, errors {result.errors}, "
                f"other load {result.foreign_cores:.2f} CPUs"
            )
            results.append(result)
    return results


def run_overhead(options: Options, run_dir: Path) -> tuple[list[LoadResult], str]:
    server_cpus, client_cpus, pinning = cpu_split()
    portway = servers.portway(run_dir / "portway-scripted", scripted_catalog(), cpus=server_cpus)
    bare = servers.thin_front(SCRIPT, log_dir=run_dir, cpus=server_cpus)
    log("(b) overhead: Portway (scripted model) and a bare FastAPI front")
    with portway, bare, pinned(client_cpus):
        fronts = [
            Front(PORTWAY, portway.base_url, portway.token, "scripted", portway.pid),
            Front(BARE_FRONT, bare.base_url, servers.THIN_FRONT_TOKEN, "scripted", bare.pid),
        ]
        results = asyncio.run(load_fronts(fronts, options.limits))
    return results, pinning


# --------------------------------------------------------------------------- main


def main() -> None:
    options = parse_options()
    options.work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=options.work_dir))
    log(f"work dir {run_dir}")
    model = ensure_default_gguf(options.work_dir / "shared")
    generation, notes = run_generation(options, model, run_dir)
    overhead, pinning = run_overhead(options, run_dir)
    result = report.Report(
        machine=machine(),
        generation=generation,
        generation_runs=options.runs,
        portway=PORTWAY,
        generation_notes=notes,
        overhead=overhead,
        limits=options.limits,
        pinning=pinning,
    )
    log(report.tables(result))
    if options.write:
        report.write(REPO / "BENCHMARKS.md", result)
        log(f"wrote {REPO / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    main()
