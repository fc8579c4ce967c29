"""Relay overhead: what Portway adds in front of a hosted (OpenAI-compatible) model,
side by side with calling the upstream directly and with LiteLLM's proxy.

One fast stand-in upstream (``fast_upstream.py``: raw asyncio, canned replies of
16 pieces) serves all three. Portway (one process, an ``openai`` catalogue entry,
PAT auth and the usage ledger on) and LiteLLM's proxy (one worker, no database)
run pinned to the same CPU, one at a time; the stand-in and the load generator
(``overhead.measure``: one keep-alive ``httpx`` client per worker) share the other.
Unary and streamed (the client asks for usage), at concurrency 1, 16 and 64:
requests/s, p50 and p99 latency, and each gateway's added p50 against direct.

LiteLLM runs from its own environment (``--litellm /path/to/litellm``; ``make
bench-upstream`` creates ``.bench/litellm`` from ``bench/litellm-requirements.txt``
and runs this), never from the project's; without it the table says so. Run:
``.venv/bin/python bench/upstream.py [--quick] [--no-write] [--litellm PATH]``.
A full run replaces this bench's section of BENCHMARKS.md and keeps the others.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import report
import servers
from common import free_port, machine, replace_section
from overhead import Front, Limits, LoadResult, check_reply, measure, pinned

REPO = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
HEADING = "## Hosted models: relay overhead (Portway vs LiteLLM proxy vs direct)"
CONCURRENCY = (1, 16, 64)
LITELLM_KEY = "sk-" + "b3" * 32
"""The proxy's master key (it refuses to start without one): its clients' token."""
DIRECT, PORTWAY, LITELLM = "direct to the upstream", "Portway", "LiteLLM proxy"


@dataclass(frozen=True)
class Row:
    result: LoadResult
    added_p50_ms: float | None


def stand_in(log_dir: Path, cpus: set[int]) -> servers.ServerProcess:
    port = free_port()
    return servers.ServerProcess(
        name="stand-in upstream",
        command=[sys.executable, str(BENCH / "fast_upstream.py"), "--port", str(port)],
        log_path=log_dir / "stand-in.log",
        ready_path="/v1/models",
        port=port,
        cpus=cpus,
    )


def portway_catalog(upstream: str) -> str:
    return f"""default_model = false
default_embedding_model = false

[[models]]
user = "bench"
app = "hosted"
model = "relay"
backend = "openai"
base_url = "{upstream}/v1"
upstream_model = "bench-model"
api_key_env = "BENCH_UPSTREAM_KEY"
"""


def litellm(binary: Path, upstream: str, log_dir: Path, cpus: set[int]) -> servers.ServerProcess:
    config = log_dir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench-model\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-bench\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    port = free_port()
    return servers.ServerProcess(
        name="litellm",
        command=[str(binary), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        log_path=log_dir / "litellm.log",
        ready_path="/health/liveliness",
        port=port,
        cpus=cpus,
    )


class UsageFront(Front):
    """As ``Front``, but streams ask for the usage chunk, as metering clients do."""

    def body(self, *, stream: bool) -> dict[str, object]:
        body = super().body(stream=stream)
        return {**body, "stream_options": {"include_usage": True}} if stream else body


async def load(front: Front, limits: Limits, pids: Sequence[int]) -> list[LoadResult]:
    await check_reply(front)
    results = []
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            result = await measure(
                front, concurrency=concurrency, stream=stream, limits=limits, pids=pids
            )
            print(
                f"{front.name:24} {result.mode:6} c={concurrency:<3} {result.rps:7.0f} req/s "
                f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}",
                flush=True,
            )
            results.append(result)
    return results


def rows(results: list[LoadResult]) -> list[Row]:
    direct = {(r.mode, r.concurrency): r for r in results if r.front == DIRECT}
    found = []
    for result in results:
        base = direct.get((result.mode, result.concurrency))
        added = None if result.front == DIRECT or base is None else result.p50_ms - base.p50_ms
        found.append(Row(result, added))
    return found


def section(found: list[Row], limits: Limits, litellm_note: str) -> str:
    body = [
        HEADING,
        "What a gateway adds in front of a hosted model: `bench/upstream.py`. One fast "
        "stand-in upstream (raw asyncio, canned 16-piece replies) serves all three; Portway "
        "(one process; PAT auth, an `openai` catalogue entry, the usage ledger) and "
        "LiteLLM's proxy (one worker, no database, its master key as the token) each run "
        "pinned to CPU 0, one at a time; the stand-in and the load generator (one keep-alive "
        "httpx client per worker) share CPU 1. Streams ask for the usage chunk. Latency is "
        "to the full body (unary) or the last byte (streamed). Each cell: "
        f"{limits.requests} requests or {limits.seconds:.0f} s after a warm-up. "
        "*added p50* is the gateway's p50 minus direct's; *server CPU* is the CPU time "
        "the measured server process (the gateway, or the stand-in for direct) used per "
        "request; *other load* is the CPU used meanwhile by processes outside the benchmark.",
        report.table(
            [
                "path",
                "mode",
                "concurrency",
                "req/s",
                "p50 ms",
                "p99 ms",
                "added p50 ms",
                "server CPU ms/req",
                "other load (CPUs)",
                "errors",
            ],
            [
                [
                    row.result.front,
                    row.result.mode,
                    str(row.result.concurrency),
                    f"{row.result.rps:.0f}",
                    f"{row.result.p50_ms:.2f}",
                    f"{row.result.p99_ms:.2f}",
                    "-" if row.added_p50_ms is None else f"{row.added_p50_ms:.2f}",
                    f"{row.result.server_cpu_ms:.2f}",
                    f"{row.result.foreign_cores:.2f}",
                    str(row.result.errors),
                ]
                for row in found
            ],
        ),
        report.table(["", ""], [[key, value] for key, value in machine().rows()]),
    ]
    if litellm_note:
        body.append(litellm_note)
    return "\n\n".join(body)


async def run(options: argparse.Namespace) -> str:
    limits = (
        Limits(requests=300, seconds=5, warmup=20)
        if options.quick
        else Limits(requests=3000, seconds=20, warmup=100)
    )
    gateway_cpus, client_cpus = {0}, {1}
    work = Path(tempfile.mkdtemp(prefix="portway-relay-bench-"))
    results: list[LoadResult] = []
    upstream = stand_in(work, client_cpus)
    with upstream, pinned(client_cpus):
        direct = UsageFront(DIRECT, upstream.base_url, "sk-bench", "bench-model", upstream.pid)
        results += await load(direct, limits, [])
        os.environ["BENCH_UPSTREAM_KEY"] = "sk-bench"  # the Portway process inherits it
        portway = servers.portway(
            work / "portway", portway_catalog(upstream.base_url), cpus=gateway_cpus
        )
        with portway:
            model = "bench/hosted/models/relay"
            front = UsageFront(PORTWAY, portway.base_url, portway.token, model, portway.pid)
            results += await load(front, limits, [upstream.pid])
        note = ""
        if options.litellm.exists():
            proxy = litellm(options.litellm, upstream.base_url, work, gateway_cpus)
            with proxy:
                front = UsageFront(LITELLM, proxy.base_url, LITELLM_KEY, "bench-model", proxy.pid)
                results += await load(front, limits, [upstream.pid])
        else:
            note = f"LiteLLM's proxy was not measured: no {options.litellm}."
    return section(rows(results), limits, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs; print only")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    parser.add_argument("--litellm", type=Path, default=Path(".bench/litellm/bin/litellm"))
    options = parser.parse_args()
    text = asyncio.run(run(options))
    print(text)
    if not (options.quick or options.no_write):
        replace_section(REPO / "BENCHMARKS.md", HEADING, text)


if __name__ == "__main__":
    main()
