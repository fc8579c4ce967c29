"""Scaling out: relay requests/s with ``portway serve --workers`` 1, 2 and 4 on
this machine.

The relay path of ``upstream.py`` (a hosted ``openai`` catalogue entry in front
of ``fast_upstream.py``'s canned 16-piece replies; PAT auth and the usage ledger
on), loaded by ``overhead.measure`` (one keep-alive ``httpx`` client per worker,
unary and streamed with the usage chunk). More than one worker shares state
through the machine's Redis and NATS (``PORTWAY_BENCH_REDIS_URL``,
``PORTWAY_BENCH_NATS_URL``; a cluster name of the run's own). The stand-in and
the load generator are pinned to the last CPU; Portway's processes to the others
when there are at least four, otherwise they are left on every CPU (and share
the last with the load generator; the table says which). Run:
``.venv/bin/python bench/scaling.py [--quick] [--no-write]``. A full run
replaces this bench's section of BENCHMARKS.md and keeps the others.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import report
import servers
from common import free_port, machine
from overhead import Limits, LoadResult, check_reply, measure, pinned
from upstream import UsageFront, portway_catalog, stand_in

REPO = Path(__file__).resolve().parent.parent
HEADING = "## Scaling out: `portway serve --workers` (relay requests/s)"
WORKERS = (1, 2, 4)
CONCURRENCY = 32
REDIS_URL = os.environ.get("PORTWAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("PORTWAY_BENCH_NATS_URL", "nats://127.0.0.1:4222")
MODEL = "bench/hosted/models/relay"


@dataclass(frozen=True)
class Cell:
    workers: int
    result: LoadResult
    gateway_cpu: float
    """CPU seconds every Portway process (supervisor and workers) used meanwhile."""


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (a supervisor's workers)."""
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def gateway(
    work: Path, upstream: str, workers: int, cpus: set[int] | None
) -> servers.PortwayServer:
    data_dir = work / f"portway-{workers}"
    data_dir.mkdir(parents=True)
    (data_dir / "portway.toml").write_text(portway_catalog(upstream))
    port = free_port()
    cluster = ["--redis-url", REDIS_URL, "--nats-url", NATS_URL]
    cluster += ["--cluster-name", f"bench-{secrets.token_hex(4)}"]
    command = [sys.executable, "-m", "portway", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--grace", "5", "--workers", str(workers)]
    return servers.PortwayServer(
        name=f"portway x{workers}",
        command=command + (cluster if workers > 1 else []),
        log_path=data_dir / "server.log",
        ready_path="/health",
        port=port,
        cpus=cpus,
    )


async def measure_workers(
    server: servers.PortwayServer, limits: Limits, upstream_pid: int
) -> list[Cell]:
    await all_workers_up(server)
    front = UsageFront(
        f"x{server_workers(server)}", server.base_url, server.token, MODEL, server.pid
    )
    await check_reply(front)
    pids = [server.pid, *children(server.pid)]
    cells = []
    for stream in (False, True):
        before = cpu_seconds(pids)
        result = await measure(
            front, concurrency=CONCURRENCY, stream=stream, limits=limits, pids=[upstream_pid, *pids]
        )
        cells.append(Cell(server_workers(server), result, cpu_seconds(pids) - before))
        print(
            f"workers={server_workers(server)} {result.mode:6} {result.rps:7.0f} req/s "
            f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}",
            flush=True,
        )
    return cells


async def all_workers_up(server: servers.PortwayServer) -> None:
    """Wait until every worker has started, not only the first to answer."""
    for _ in range(1500):  # 300 s
        if server.log_text().count("Application startup complete") >= server_workers(server):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{server.name}: not every worker started:\n{server.log_text()[-4000:]}")


def server_workers(server: servers.PortwayServer) -> int:
    return int(server.command[server.command.index("--workers") + 1])


def section(cells: list[Cell], limits: Limits, pinning: str) -> str:
    base = {cell.result.mode: cell.result.rps for cell in cells if cell.workers == 1}
    rows = [
        [
            str(cell.workers),
            cell.result.mode,
            f"{cell.result.rps:.0f}",
            f"{cell.result.rps / base[cell.result.mode]:.2f}x",
            f"{cell.result.p50_ms:.2f}",
            f"{cell.result.p99_ms:.2f}",
            f"{cell.gateway_cpu / max(1, cell.result.requests) * 1000:.2f}",
            f"{cell.result.foreign_cores:.2f}",
            str(cell.result.errors),
        ]
        for cell in cells
    ]
    header = [
        "workers",
        "mode",
        "req/s",
        "vs 1 worker",
        "p50 ms",
        "p99 ms",
        "Portway CPU ms/req",
        "other load (CPUs)",
        "errors",
    ]
    text = (
        f"{HEADING}\n\n"
        "`bench/scaling.py` (`make bench-scaling`): the relay path of the table below it "
        "(a hosted `openai` entry in front of the fast stand-in upstream; PAT auth, the usage "
        f"ledger) under `portway serve --workers N`, {CONCURRENCY} concurrent keep-alive "
        "clients, unary and streamed (with the usage chunk). More than one worker uses the "
        "machine's Redis and NATS. "
        f"{pinning} Each cell: {limits.requests} requests or {limits.seconds:.0f} s after a "
        "warm-up. *Portway CPU* counts the supervisor and every worker.\n\n"
    )
    return text + report.table(header, rows) + "\n\n" + report.machine_table(machine())


def write(path: Path, text: str) -> None:
    """Replace this bench's section of ``path`` (or append it), keeping the others."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    kept = [s for s in report.split_sections(current) if s.splitlines()[0] != HEADING]
    head = current.split("\n## ", 1)[0].strip()
    path.write_text("\n\n".join([head, *kept, text]) + "\n")


def placement() -> tuple[set[int], set[int] | None, str]:
    cpus = sorted(os.sched_getaffinity(0))
    client = {cpus[-1]}
    if len(cpus) >= 4:
        gateway_cpus = set(cpus[:-1])
        return (
            client,
            gateway_cpus,
            (
                f"The stand-in and the load generator run on CPU {cpus[-1]}, Portway's processes "
                f"on CPUs {cpus[0]}-{cpus[-2]}."
            ),
        )
    return (
        client,
        None,
        (
            f"This machine has {len(cpus)} CPUs: the stand-in and the load generator are pinned "
            f"to CPU {cpus[-1]} and Portway's processes may run on every CPU, so they share "
            f"CPU {cpus[-1]} with the load; more workers than free cores cannot scale here."
        ),
    )


async def run(options: argparse.Namespace) -> str:
    limits = (
        Limits(requests=300, seconds=5, warmup=20)
        if options.quick
        else Limits(requests=3000, seconds=20, warmup=100)
    )
    client_cpus, gateway_cpus, pinning = placement()
    work = Path(tempfile.mkdtemp(prefix="portway-scaling-bench-"))
    cells: list[Cell] = []
    upstream = stand_in(work, client_cpus)
    with upstream, pinned(client_cpus):
        os.environ["BENCH_UPSTREAM_KEY"] = "sk-bench"  # the Portway processes inherit it
        for workers in WORKERS:
            with gateway(work, upstream.base_url, workers, gateway_cpus) as server:
                cells += await measure_workers(server, limits, upstream.pid)
    return section(cells, limits, pinning)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs; print only")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    options = parser.parse_args()
    text = asyncio.run(run(options))
    print(text)
    if not (options.quick or options.no_write):
        write(REPO / "BENCHMARKS.md", text)


if __name__ == "__main__":
    main()
