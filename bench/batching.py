"""Many streams on one local model (issue 13), measured side by side in one run.

On the embedded Gemma 3 270M, with the same threads everywhere:

1. llama.cpp's batched-decode ceiling on the low-level API (one context with 16
   sequence slots, one ``llama_decode`` per step for every sequence, argmax, no
   sampler) for 1, 4, 8 and 16 sequences;
2. llama-cpp-python in-process, one stream (``Llama.create_completion``);
3. Portway (a real ``portway serve``; its catalogue entry sets ``parallel`` when
   the code under test knows it) streamed over HTTP by the ``openai`` client:
   1, 4, 8 and 16 concurrent streams of 64-token prompts and 128 forced tokens;
4. llama-cpp-python's own server under the same load (it serialises);
5. a 10-turn conversation: time to first token of the last turn vs the first;
6. one 2,000-token request with 7 short ones started just after it: the short
   ones' completion time vs the same 7 sent alone;
7. single stream, Portway vs in-process, and the server's CPU per token.

Run ``.venv/bin/python bench/batching.py [--quick] [--label after]`` or
``make bench-batching ARGS="--label after"``. It prints one markdown table per
measurement and writes them, with the machine, to ``WORK_DIR/batching-LABEL.md``;
``--benchmarks`` also puts them into BENCHMARKS.md (section "Many streams on one
local model", sub-section of the label). ``--portway-src DIR`` serves Portway from
another checkout's ``src`` (say, the code before the batching engine) with this
same script and environment. Timings never go into the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import batching_report as report
import servers
from batching_direct import (
    batched_context,
    in_process_stream,
    prompt_tokens,
    run_ceiling,
    user_text,
)
from batching_http import (
    Sampling,
    Target,
    concurrent,
    conversation,
    interference,
)
from common import CpuWatch, machine, wait_for_quiet
from generation import GenerationSettings, end_of_generation_tokens, load_llama

from portway.backends.llamacpp.default_model import ensure_default_gguf

REPO = Path(__file__).resolve().parent.parent
PORTWAY = "Portway"
LLAMA_SERVER = "llama-cpp-python server"
PROMPT_TOKENS = 64
N_SEQ_MAX = 16


@dataclass(frozen=True)
class Options:
    label: str
    streams: list[int]
    tokens: int
    repetitions: int
    single_runs: int
    turns: int
    turn_tokens: int
    long_tokens: int
    short_tokens: int
    short_requests: int
    threads: int
    parallel: int
    ctx: int
    quiet_wait: float
    portway_src: Path | None
    baseline_src: Path | None
    baseline_label: str
    work_dir: Path
    benchmarks: bool


FULL = {"repetitions": 3, "single_runs": 5, "quiet_wait": 30.0}
QUICK = {"repetitions": 1, "single_runs": 2, "quiet_wait": 3.0}


def parse_options() -> Options:
    parser = argparse.ArgumentParser(description="Benchmark many streams on one local model.")
    add = parser.add_argument
    add("--label", default="after", help="names this run (before, after...) [after]")
    add("--quick", action="store_true", help="one repetition of each measurement")
    add("--streams", default="1,4,8,16", help="concurrent stream counts [1,4,8,16]")
    add("--tokens", type=int, default=128, help="tokens per concurrent stream [128]")
    add("--repetitions", type=int, help="repetitions per measurement [3; --quick 1]")
    add("--single-runs", type=int, help="single-stream runs per path [5; --quick 2]")
    add("--turns", type=int, default=10, help="multi-turn: turns [10]")
    add("--turn-tokens", type=int, default=32, help="multi-turn: tokens per answer [32]")
    add("--long-tokens", type=int, default=2000, help="interference: long request [2000]")
    add("--short-tokens", type=int, default=32, help="interference: short requests [32]")
    add("--short-requests", type=int, default=7, help="interference: how many short [7]")
    add("--threads", type=int, default=2, help="llama.cpp threads everywhere [2]")
    add("--parallel", type=int, default=N_SEQ_MAX, help="Portway's `parallel` [16]")
    add("--ctx", type=int, default=2304, help="context per stream (Portway, llama server)")
    add("--quiet-wait", type=float, help="seconds to wait for a quiet machine [30; quick 3]")
    add("--portway-src", type=Path, help="serve Portway from this src directory")
    add("--baseline-src", type=Path, help="also serve a second Portway from this src directory")
    add("--baseline-label", default="before", help="names the second Portway [before]")
    add("--benchmarks", action="store_true", help="also write the run into BENCHMARKS.md")
    add(
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
        label=args.label,
        streams=[int(n) for n in args.streams.split(",")],
        tokens=args.tokens,
        repetitions=args.repetitions,
        single_runs=args.single_runs,
        turns=args.turns,
        turn_tokens=args.turn_tokens,
        long_tokens=args.long_tokens,
        short_tokens=args.short_tokens,
        short_requests=args.short_requests,
        threads=args.threads,
        parallel=args.parallel,
        ctx=args.ctx,
        quiet_wait=args.quiet_wait,
        portway_src=args.portway_src.resolve() if args.portway_src else None,
        baseline_src=args.baseline_src.resolve() if args.baseline_src else None,
        baseline_label=args.baseline_label,
        work_dir=args.work_dir,
        benchmarks=args.benchmarks,
    )


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class UnderTest:
    """A Portway to serve: its label and the ``src`` directory its code comes from
    (None: the installed one)."""

    label: str
    src: Path | None

    @property
    def name(self) -> str:
        return f"{PORTWAY} ({self.label})"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.src), *filter(None, [env.get("PYTHONPATH")])]
            )
        return env


def under_test(options: Options) -> list[UnderTest]:
    found = [UnderTest(options.label, options.portway_src)]
    if options.baseline_src is not None:
        found.append(UnderTest(options.baseline_label, options.baseline_src))
    return found


def knows_parallel(env: dict[str, str]) -> bool:
    """Whether the Portway under test has ``parallel`` in its llama.cpp catalogue entry."""
    probe = (
        "from portway.registry.catalog import LlamaCppSpec as S; "
        "print('parallel' in S.model_fields)"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return found.stdout.strip() == "True"


def catalog(options: Options, model: Path, parallel: bool) -> str:
    entry = [
        'user = "bench"',
        'app = "batching"',
        'model = "gemma-3-270m"',
        'backend = "llamacpp"',
        f'path = "{model}"',
        f"threads = {options.threads}",
        f"context_length = {options.ctx}",
        f"max_queue = {4 * N_SEQ_MAX}",
        'aliases = ["gemma-bench"]',
    ]
    if parallel:
        entry.append(f"parallel = {options.parallel}")
    head = "default_model = false\ndefault_embedding_model = false\n\n[[models]]\n"
    return head + "\n".join(entry) + "\n"


@contextlib.contextmanager
def env_for_start(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` as ``env`` while a server process is started."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def start_portway(
    stack: contextlib.ExitStack, options: Options, which: UnderTest, model: Path, run_dir: Path
) -> tuple[Target, str, list[str]]:
    """One Portway: its target, its catalogue entry and notes."""
    env = which.env()
    notes = []
    parallel = knows_parallel(env)
    if not parallel:
        notes.append(f"{which.name} has no `parallel` setting: served as it is.")
    entry = catalog(options, model, parallel)
    with env_for_start(env):
        server = servers.portway(run_dir / f"portway-{which.label}", entry)
        stack.enter_context(server)
    target = Target(which.name, server.base_url, server.token, "gemma-bench", server.pid)
    return target, entry, notes


def start_llama_server(
    stack: contextlib.ExitStack, options: Options, model: Path, run_dir: Path
) -> Target:
    """llama-cpp-python's server, as Portway's llama.cpp settings and sampling."""
    llama = servers.llama_cpp_server(
        model, threads=options.threads, n_ctx=options.ctx, log_dir=run_dir
    )
    # Its default interrupts the running stream when another request arrives.
    llama.command += ["--interrupt_requests", "false"]
    stack.enter_context(llama)
    # Its defaults add top-k 40, min-p 0.05 and repeat penalty 1.1: off, as Portway.
    neutral = {"top_k": 0, "min_p": 0.0, "repeat_penalty": 1.0}
    return Target(LLAMA_SERVER, llama.base_url, "none", "gemma", llama.pid, neutral, usage=False)


@dataclass
class Servers:
    portways: list[Target]
    llama_server: Target | None
    entries: dict[str, str]
    """Each Portway's catalogue entry, by name."""
    notes: list[str]

    @property
    def targets(self) -> list[Target]:
        return [*self.portways, *([self.llama_server] if self.llama_server else [])]


def start_servers(
    stack: contextlib.ExitStack, options: Options, model: Path, run_dir: Path
) -> Servers:
    started = Servers([], None, {}, [])
    for which in under_test(options):
        target, entry, notes = start_portway(stack, options, which, model, run_dir)
        started.portways.append(target)
        started.entries[target.name] = entry
        started.notes += notes
    try:
        started.llama_server = start_llama_server(stack, options, model, run_dir)
    except RuntimeError as exc:
        started.notes.append(f"{LLAMA_SERVER} left out: {(str(exc).splitlines() or [''])[0]}")
    return started


# --------------------------------------------------------------------------- measuring


@dataclass
class Bench:
    """One run's shared state: the loaded model, the prompts handed out so far,
    the results, and the processes whose CPU is not "other load"."""

    options: Options
    llama: Any
    sampling: Sampling
    results: report.Results
    own: list[int]
    _next_prompt: int = 0

    def fresh(self, count: int) -> list[str]:
        """``count`` prompts no earlier measurement used (no cached prefix helps)."""
        start, self._next_prompt = self._next_prompt, self._next_prompt + count
        return [
            user_text(self.llama, index, PROMPT_TOKENS) for index in range(start, start + count)
        ]

    def quiet(self) -> None:
        wait_for_quiet(self.own, threshold=0.1, limit=self.options.quiet_wait)

    def attempt(self, what: str, measurement: Any, *args: Any, **kwargs: Any) -> Any:
        """Runs ``measurement`` after waiting for quiet; a failure becomes a note."""
        self.quiet()
        try:
            result = measurement(*args, **kwargs)
        except Exception as exc:  # reported, and the run goes on
            first_line = (str(exc).splitlines() or [""])[0][:200]
            note = f"{what} failed: {type(exc).__name__}: {first_line}"
            self.results.notes.append(note)
            log(f"! {note}")
            return None
        return result


def rotated(items: Sequence[Any], index: int) -> list[Any]:
    """``items`` starting from ``index`` (so no path always goes first)."""
    start = index % len(items)
    return [*items[start:], *items[:start]]


def ceiling_shape(options: Options) -> tuple[int, int]:
    """The ceiling context's sequence slots, and cells per slot."""
    return max(N_SEQ_MAX, *options.streams), -(-(PROMPT_TOKENS + options.tokens) // 256) * 256


def measure_ceiling(bench: Bench) -> None:
    o = bench.options
    n_seq_max, slot = ceiling_shape(o)
    log(f"1. batched-decode ceiling: n_seq_max {n_seq_max}, {slot} cells per sequence")
    with batched_context(
        bench.llama, n_seq_max=n_seq_max, slot_tokens=slot, threads=o.threads
    ) as ctx:
        run_ceiling(ctx, [prompt_tokens(bench.llama, bench.fresh(1)[0])], 8)
        for streams in o.streams:
            for _ in range(o.repetitions):
                prompts = [prompt_tokens(bench.llama, text) for text in bench.fresh(streams)]
                run = bench.attempt(f"ceiling {streams}", _ceiling, bench, ctx, prompts)
                if run is not None:
                    bench.results.ceiling.setdefault(streams, []).append(run)
                    log(
                        f"  {streams} sequences: {run.rate:.1f} tok/s "
                        f"({run.decode_rate:.1f} decoding)"
                    )


def _ceiling(bench: Bench, context: Any, prompts: list[list[int]]) -> Any:
    watch = CpuWatch(bench.own).start()
    run = run_ceiling(context, prompts, bench.options.tokens)
    return replace(run, foreign_cores=watch.foreign_cores())


def _in_process(bench: Bench, text: str, seed: int) -> Any:
    s = bench.sampling
    watch = CpuWatch(bench.own).start()
    run = in_process_stream(
        bench.llama,
        text,
        tokens=bench.options.tokens,
        seed=s.seed + seed,
        sampling={
            "temperature": s.temperature,
            "top_p": s.top_p,
            "logit_bias": dict.fromkeys(s.end_tokens, -100.0),
        },
    )
    return replace(run, foreign_cores=watch.foreign_cores())


def _over_http(bench: Bench, target: Target, text: str) -> Any:
    run = asyncio.run(
        concurrent(
            target, [text], max_tokens=bench.options.tokens, sampling=bench.sampling, own=bench.own
        )
    )
    return report.stream_run(run.completions[0], run.observed)


def measure_single(bench: Bench, portways: Sequence[Target]) -> None:
    log("2/7. single stream: in-process and Portway, interleaved")
    for index in range(bench.options.single_runs):
        text = bench.fresh(1)[0]
        for target in rotated([None, *portways], index):
            if target is None:
                name = report.IN_PROCESS
                run = bench.attempt(name, _in_process, bench, text, index)
            else:
                name = target.name
                run = bench.attempt(name, _over_http, bench, target, text)
            if run is not None:
                bench.results.single.setdefault(name, []).append(run)
                log(f"  {name}: {run.decode_rate:.1f} tok/s, TTFT {run.ttft * 1000:.0f} ms")


def measure_concurrent(bench: Bench, targets: Sequence[Target]) -> None:
    o = bench.options
    log("3/4. concurrent streams")
    for streams in o.streams:
        for repetition in range(o.repetitions):
            texts = bench.fresh(streams)
            for target in rotated(targets, repetition):
                run = bench.attempt(
                    f"{target.name}, {streams} streams",
                    asyncio.run,
                    concurrent(
                        target, texts, max_tokens=o.tokens, sampling=bench.sampling, own=bench.own
                    ),
                )
                if run is not None:
                    bench.results.concurrent.setdefault((streams, target.name), []).append(run)
                    ttft = max(run.ttfts)
                    log(
                        f"  {streams} x {target.name}: {run.rate:.1f} tok/s, "
                        f"slowest TTFT {ttft:.2f} s"
                    )


def measure_conversations(bench: Bench, targets: Sequence[Target]) -> None:
    o = bench.options
    log(f"5. multi-turn: {o.turns} turns")
    for repetition in range(o.repetitions):
        opening = bench.fresh(1)[0]
        for target in rotated(targets, repetition):
            run = bench.attempt(
                f"{target.name}, multi-turn",
                asyncio.run,
                conversation(
                    target,
                    opening,
                    turns=o.turns,
                    max_tokens=o.turn_tokens,
                    sampling=bench.sampling,
                    own=bench.own,
                ),
            )
            if run is not None:
                bench.results.conversations.setdefault(target.name, []).append(run)
                ttfts = ", ".join(f"{turn.ttft * 1000:.0f}" for turn in run.turns)
                log(f"  {target.name}: TTFT per turn (ms) {ttfts}")


def measure_interference(bench: Bench, targets: Sequence[Target]) -> None:
    o = bench.options
    log(f"6. interference: one {o.long_tokens}-token request, {o.short_requests} short ones")
    for repetition in range(o.repetitions):
        long_text, *shorts = bench.fresh(1 + 2 * o.short_requests)
        for target in rotated(targets, repetition):
            run = bench.attempt(
                f"{target.name}, interference",
                asyncio.run,
                interference(
                    target,
                    long_text,
                    shorts[: o.short_requests],
                    shorts[o.short_requests :],
                    long_tokens=o.long_tokens,
                    short_tokens=o.short_tokens,
                    sampling=bench.sampling,
                    own=bench.own,
                ),
            )
            if run is not None:
                bench.results.interference.setdefault(target.name, []).append(run)
                log(f"  {target.name}: short ones {run.ratio:.2f}x their time alone")


def warm_up(bench: Bench, targets: Sequence[Target]) -> None:
    for target in targets:
        asyncio.run(
            concurrent(target, bench.fresh(1), max_tokens=8, sampling=bench.sampling, own=bench.own)
        )


# --------------------------------------------------------------------------- checks


def completion_notes(results: report.Results, options: Options) -> list[str]:
    """Streams that did not get the prompt or the length they were meant to."""
    found: set[str] = set()
    runs = [
        (run.target, run.completions, options.tokens)
        for rs in results.concurrent.values()
        for run in rs
    ]
    for name, conversations in results.conversations.items():
        runs += [(name, c.turns, options.turn_tokens) for c in conversations]
    for name, interferences in results.interference.items():
        runs += [(name, [*i.alone, *i.behind], options.short_tokens) for i in interferences]
        runs += [(name, [i.long], options.long_tokens) for i in interferences]
    for name, completions, tokens in runs:
        for completion in completions:
            if completion.tokens != tokens or completion.finish_reason != "length":
                found.add(
                    f"{name}: a stream of {completion.tokens} tokens (asked {tokens}), "
                    f"finish_reason {completion.finish_reason}; counted by {completion.counted}"
                )
    for run in (run for rs in results.concurrent.values() for run in rs):
        for completion in run.completions:
            if completion.prompt_tokens not in (None, PROMPT_TOKENS):
                found.add(
                    f"{run.target}: a prompt of {completion.prompt_tokens} tokens, "
                    f"not {PROMPT_TOKENS}"
                )
    counted = {
        c.counted for rs in results.concurrent.values() for run in rs for c in run.completions
    }
    if "length" in counted:
        found.add(
            f"{LLAMA_SERVER} sends no usage chunk: a stream that ended by length is counted as "
            "its max_tokens."
        )
    return sorted(found)


# --------------------------------------------------------------------------- main


def measure(options: Options, model: Path, run_dir: Path) -> tuple[report.Results, dict[str, str]]:
    settings = GenerationSettings(
        model=model, threads=options.threads, n_ctx=2048, tokens=options.tokens
    )
    llama = load_llama(settings)
    results = report.Results()
    entries: dict[str, str] = {}
    try:
        sampling = Sampling(end_tokens=end_of_generation_tokens(llama))
        bench = Bench(options, llama, sampling, results, own=[os.getpid()])
        measure_ceiling(bench)
        with contextlib.ExitStack() as stack:
            started = start_servers(stack, options, model, run_dir)
            results.notes += started.notes
            entries = started.entries
            targets = started.targets
            bench.own += [target.pid for target in targets]
            warm_up(bench, targets)
            measure_single(bench, started.portways)
            measure_concurrent(bench, targets)
            measure_conversations(bench, targets)
            measure_interference(bench, targets)
    finally:
        llama.close()
    results.notes += completion_notes(results, options)
    return results, entries


def code_under_test(which: UnderTest) -> str:
    """The commit (and whether it has changes) of the Portway code being served."""
    where = which.src or REPO / "src"
    git = ["git", "-C", str(where)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--", "."], capture_output=True, text=True
    )
    label = commit.stdout.strip() or "not a git checkout"
    return f"{label}{' + uncommitted changes' if dirty.stdout.strip() else ''} ({where})"


def main() -> None:
    options = parse_options()
    options.work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="batching-", dir=options.work_dir))
    log(f"work dir {run_dir}")
    model = ensure_default_gguf(options.work_dir / "shared")
    results, entries = measure(options, model, run_dir)
    rows = [list(row) for row in machine().rows()]
    rows += [[f"{which.name} code", code_under_test(which)] for which in under_test(options)]
    rows += [["llama.cpp threads", str(options.threads)]]
    settings = report.Settings(
        label=options.label,
        streams=options.streams,
        prompt_tokens=PROMPT_TOKENS,
        tokens=options.tokens,
        turns=options.turns,
        turn_tokens=options.turn_tokens,
        long_tokens=options.long_tokens,
        short_tokens=options.short_tokens,
        short_requests=options.short_requests,
        repetitions=options.repetitions,
        ceiling_context=(
            "n_seq_max {}, {} KV cells per sequence, flash attention off (as "
            "llama-cpp-python's `Llama`), every prompt in one batch".format(*ceiling_shape(options))
        ),
        catalogs={
            name: "; ".join(entry.split("[[models]]\n", 1)[1].splitlines())
            for name, entry in entries.items()
        },
    )
    reference = (
        LLAMA_SERVER if any(name == LLAMA_SERVER for _, name in results.concurrent) else None
    )
    text = report.body(results, settings, machine_table_of(rows), reference)
    log(text)
    out = options.work_dir / f"batching-{options.label}.md"
    out.write_text(text + "\n", encoding="utf-8")
    log(f"wrote {out}")
    if options.benchmarks:
        report.write_section(REPO / "BENCHMARKS.md", options.label, text)
        log(f"wrote {REPO / 'BENCHMARKS.md'}")


def machine_table_of(rows: list[list[str]]) -> str:
    from report import table

    return table(["", ""], rows)


if __name__ == "__main__":
    main()
