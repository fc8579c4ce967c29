"""Markdown for the batching bench: one table per measurement, and its section of
BENCHMARKS.md ("Many streams on one local model", one sub-section per label)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from batching_direct import CeilingRun, StreamRun
from batching_http import Completion, ConcurrentRun, Conversation, Interference, Observed
from common import median, percentile
from report import split_sections, table

SECTION = "## Many streams on one local model"
CEILING = "llama.cpp batched decode (ceiling)"
IN_PROCESS = "llama-cpp-python in-process"

INTRO = """\
Issue 13's measurements of serving many streams from one local model: the embedded
Gemma 3 270M (Q4_K_M), 2 threads, in ONE run of `bench/batching.py` (`make
bench-batching ARGS="--label after"`), side by side: llama.cpp's batched-decode
ceiling on its low-level API (one `llama_decode` per step for every sequence, next
token by argmax, no sampler), llama-cpp-python in-process (the single-stream
reference), Portway (a real `portway serve`, streamed over HTTP by the `openai`
client) and llama-cpp-python's own server (`--interrupt_requests false`, so it
serialises concurrent requests instead of cutting them off). Every prompt is 64
tokens (Gemma chat format, BOS included) and every completion is forced to its full
length with `max_tokens` and a -100 `logit_bias` on the end-of-generation tokens;
sampling temperature 0.8, top-p 0.95, a seed per stream. Aggregate tokens/s is all
streams' tokens over the time from the first request sent to the last stream's end
(prompt evaluation included, as in the ceiling's own column); time to first token
(TTFT) is per stream, from its request to its first text. Server CPU is the server
process's user + system seconds over the measurement, per token generated; "other
load" is what processes outside the benchmark used meanwhile (in CPUs): on a
shared machine that slows every llama.cpp step, so compare rows of one run only.
`--baseline-src DIR` serves a second Portway from another checkout's `src` in the
same run (e.g. the code before the batching engine: `git archive <commit> src | tar
-x -C DIR/..`), so before and after share the machine's conditions. Each run below
is one label (`--label`); a later run with the same label replaces it."""


def _num(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def _ratio(value: float) -> str:
    return _num(value, 2)


# --------------------------------------------------------------------------- results


@dataclass
class Results:
    """Everything one run measured, keyed by path name."""

    ceiling: dict[int, list[CeilingRun]] = field(default_factory=dict)
    single: dict[str, list[StreamRun]] = field(default_factory=dict)
    concurrent: dict[tuple[int, str], list[ConcurrentRun]] = field(default_factory=dict)
    conversations: dict[str, list[Conversation]] = field(default_factory=dict)
    interference: dict[str, list[Interference]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ceiling_rate(self, streams: int) -> float:
        return median([run.rate for run in self.ceiling.get(streams, [])])

    def concurrent_rate(self, streams: int, name: str) -> float:
        return median([run.rate for run in self.concurrent.get((streams, name), [])])


def stream_run(completion: Completion, observed: Observed) -> StreamRun:
    """A single HTTP stream as a ``StreamRun`` (times from its request)."""
    return StreamRun(
        ttft=completion.ttft,
        seconds=completion.last - completion.sent,
        first_to_last=completion.last - completion.first,
        tokens=completion.tokens,
        cpu_seconds=observed.server_cpu,
        foreign_cores=observed.foreign_cores,
    )


# --------------------------------------------------------------------------- tables


def ceiling_table(results: Results) -> str:
    rows = []
    for streams, runs in sorted(results.ceiling.items()):
        tokens = sum(r.sequences * r.tokens for r in runs)
        rows.append(
            [
                str(streams),
                _num(median([r.rate for r in runs])),
                _num(median([r.decode_rate for r in runs])),
                _num(median([r.prompt_seconds for r in runs]) * 1000, 0),
                _num(1000 * sum(r.cpu_seconds for r in runs) / tokens, 2),
                _num(max(r.foreign_cores for r in runs), 2),
            ]
        )
    header = [
        "sequences",
        "tokens/s (prompt + decode)",
        "tokens/s (decode steps only)",
        "prompt evaluation ms",
        "CPU ms/token",
        "other load",
    ]
    return table(header, rows)


def concurrent_table(results: Results, reference: str | None) -> str:
    """One row per (streams, path); ratios to the ceiling and to ``reference``
    (llama-cpp-python's server) at the same number of streams."""
    rows = []
    for (streams, name), runs in sorted(results.concurrent.items()):
        rate = median([r.rate for r in runs])
        ttfts = [t for r in runs for t in r.ttfts]
        tokens = sum(r.tokens for r in runs)
        versus = math.nan
        if reference is not None and name != reference:
            versus = rate / results.concurrent_rate(streams, reference)
        rows.append(
            [
                str(streams),
                name,
                _num(rate),
                _ratio(rate / results.ceiling_rate(streams)),
                _ratio(versus),
                _num(percentile(ttfts, 0.5), 2),
                _num(percentile(ttfts, 0.9), 2),
                _num(1000 * sum(r.observed.server_cpu for r in runs) / tokens, 2),
                _num(max(r.observed.foreign_cores for r in runs), 2),
            ]
        )
    header = [
        "streams",
        "path",
        "tokens/s (aggregate)",
        "vs ceiling",
        "vs llama-cpp-python server",
        "TTFT p50 s",
        "TTFT p90 s",
        "server CPU ms/token",
        "other load",
    ]
    return table(header, rows)


def single_table(results: Results) -> str:
    reference = median([r.decode_rate for r in results.single.get(IN_PROCESS, [])])
    rows = []
    for name, runs in results.single.items():
        rate = median([r.decode_rate for r in runs])
        tokens = sum(r.tokens for r in runs)
        rows.append(
            [
                name,
                _num(rate),
                _num(median([r.rate for r in runs])),
                _num(median([r.ttft for r in runs]) * 1000, 0),
                _ratio(rate / reference) if name != IN_PROCESS else "1 (reference)",
                _num(1000 * sum(r.cpu_seconds for r in runs) / tokens, 2),
                _num(max(r.foreign_cores for r in runs), 2),
            ]
        )
    header = [
        "path",
        "tokens/s (first to last token)",
        "tokens/s (request to last token)",
        "TTFT ms",
        "vs in-process",
        "CPU ms/token",
        "other load",
    ]
    return table(header, rows)


def conversation_table(results: Results) -> str:
    rows = []
    for name, runs in results.conversations.items():
        first = median([run.turns[0].ttft for run in runs])
        last = median([run.turns[-1].ttft for run in runs])
        prompts = [run.turns[-1].prompt_tokens for run in runs]
        rows.append(
            [
                name,
                str(len(runs[0].turns)),
                _num(first * 1000, 0),
                _num(last * 1000, 0),
                _ratio(median([run.growth for run in runs])),
                ", ".join(sorted({str(p) for p in prompts if p is not None})) or "—",
                _num(max(run.observed.foreign_cores for run in runs), 2),
            ]
        )
    header = [
        "path",
        "turns",
        "TTFT turn 1 ms",
        "TTFT last turn ms",
        "last / first",
        "last turn's prompt tokens",
        "other load",
    ]
    return table(header, rows)


def interference_table(results: Results) -> str:
    rows = []
    for name, runs in results.interference.items():
        alone = median([percentile([c.seconds for c in r.alone], 0.5) for r in runs])
        behind = median([percentile([c.seconds for c in r.behind], 0.5) for r in runs])
        worst = median([max(c.seconds for c in r.behind) for r in runs])
        long_rate = median([r.long.tokens / r.long.seconds for r in runs])
        rows.append(
            [
                name,
                str(len(runs[0].behind)),
                _num(alone, 2),
                _num(behind, 2),
                _num(worst, 2),
                _ratio(median([r.ratio for r in runs])),
                _num(long_rate),
                _num(max(r.observed.foreign_cores for r in runs), 2),
            ]
        )
    header = [
        "path",
        "short requests",
        "short alone, median s",
        "behind the long one, median s",
        "behind, slowest s",
        "ratio (median)",
        "long request tokens/s",
        "other load",
    ]
    return table(header, rows)


# --------------------------------------------------------------------------- document


@dataclass(frozen=True)
class Settings:
    label: str
    streams: Sequence[int]
    prompt_tokens: int
    tokens: int
    turns: int
    turn_tokens: int
    long_tokens: int
    short_tokens: int
    short_requests: int
    repetitions: int
    catalogs: dict[str, str]
    """Each Portway's catalogue entry, by name."""
    ceiling_context: str


def settings_text(s: Settings) -> str:
    return (
        f"Streams {', '.join(map(str, s.streams))}; prompts of {s.prompt_tokens} tokens; "
        f"{s.tokens} tokens per stream; ceiling context: {s.ceiling_context}; "
        f"{s.repetitions} repetition(s) of each measurement "
        f"(medians; TTFT percentiles over every stream of every repetition). Multi-turn: "
        f"{s.turns} turns of {s.turn_tokens} tokens each. Interference: one request of "
        f"{s.long_tokens} tokens, and once its first token has arrived {s.short_requests} "
        f"requests of {s.short_tokens} tokens; their completion times against "
        f"{s.short_requests} such requests (other prompts) sent together without it. "
        + " ".join(f"{name}'s catalogue entry: `{entry}`." for name, entry in s.catalogs.items())
    )


def body(results: Results, settings: Settings, machine_table: str, reference: str | None) -> str:
    """The run's markdown: its machine, settings and one table per measurement."""
    notes = "\n".join(f"- {note}" for note in results.notes)
    parts = [
        f"### Run: {settings.label}",
        machine_table,
        settings_text(settings),
        "#### Batched-decode ceiling (llama.cpp low-level API, no sampling)",
        ceiling_table(results),
        "#### Concurrent streams (64-token prompts, forced length)",
        concurrent_table(results, reference),
        "#### Single stream: Portway vs in-process (goal >= 0.95)",
        single_table(results),
        "#### Multi-turn: time to first token, last turn vs first (goal <= 1.5)",
        conversation_table(results),
        "#### Interference: short requests behind a long one (goal <= 1.3)",
        interference_table(results),
        *([f"Notes:\n\n{notes}"] if notes else []),
    ]
    return "\n\n".join(parts)


def runs_of(section: str) -> dict[str, str]:
    """The ``### Run: LABEL`` sub-sections of the section, by label."""
    found: dict[str, list[str]] = {}
    label = None
    for line in section.splitlines():
        if line.startswith("### Run: "):
            label = line.removeprefix("### Run: ").strip()
            found[label] = []
        if label is not None:
            found[label].append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def write_section(path: Path, label: str, run: str) -> None:
    """Puts ``run`` into BENCHMARKS.md's section as the sub-section of ``label``,
    keeping the other labels' runs and every other section as they are."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    sections = split_sections(text)
    mine = next((s for s in sections if s.splitlines()[0] == SECTION), "")
    runs = runs_of(mine)
    runs[label] = run
    section = "\n\n".join([SECTION, INTRO, *runs.values()])
    head = text.split("\n## ", 1)[0].rstrip()
    kept = [s if s.splitlines()[0] != SECTION else section for s in sections]
    if not mine:
        kept.append(section)
    path.write_text("\n\n".join([head, *kept]) + "\n", encoding="utf-8")
