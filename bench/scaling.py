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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import report
import runners
import servers
from common import free_port, machine, median, percentile, replace_section
from overhead import Limits, LoadResult, check_reply, measure, pinned
from upstream import UsageFront, portway_catalog, stand_in

REPO = Path(__file__).resolve().parent.parent
HEADING = "## Scaling out: `portway serve --workers` (relay requests/s)"
WORKERS = (1, 2, 4)
CONCURRENCY = 32
REDIS_URL = os.environ.get("PORTWAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("PORTWAY_BENCH_NATS_URL", "nats://127.0.0.1:4222")
MODEL = "bench/hosted/models/relay"
POSTGRES_URL = os.environ.get(
    "PORTWAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
HOP_MODEL = "bench/hop/models/echo"
HOP_REQUESTS = 200


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


# ------------------------------------------------------------------ the runner hop


@contextmanager
def scratch_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the two processes, dropped afterwards."""
    import asyncpg

    name = f"portway_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        base = POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def clustered(work: Path, name: str, database: str, cluster: str) -> servers.PortwayServer:
    data_dir = work / name
    data_dir.mkdir(parents=True)
    (data_dir / "portway.toml").write_text(
        "default_model = false\ndefault_embedding_model = false\n"
    )
    port = free_port()
    command = [sys.executable, "-m", "portway", "serve", "--port", str(port)]
    command += ["--data-dir", str(data_dir), "--database-url", database, "--grace", "5"]
    command += ["--redis-url", REDIS_URL, "--nats-url", NATS_URL, "--cluster-name", cluster]
    return servers.PortwayServer(
        name=name,
        command=command,
        log_path=data_dir / "server.log",
        ready_path="/health",
        port=port,
    )


def runner_token(server: servers.PortwayServer) -> str:
    made = httpx.post(
        server.base_url + "/v1/tokens",
        headers={"Authorization": f"Bearer {server.token}"},
        json={"user": "bench", "create_user": True, "scopes": ["runner"]},
        timeout=30,
    )
    made.raise_for_status()
    token: str = made.json()["token"]
    return token


def hop_latencies(
    owner: servers.PortwayServer, other: servers.PortwayServer
) -> dict[str, list[float]]:
    """Sequential unary requests to the runner's model, taking turns between the
    process holding the runner and the other one; milliseconds each."""
    body = {"model": HOP_MODEL, "messages": [{"role": "user", "content": "hello runner"}]}
    found: dict[str, list[float]] = {"owner": [], "other": []}
    headers = {"Authorization": f"Bearer {owner.token}"}
    with (
        httpx.Client(base_url=owner.base_url, headers=headers, timeout=30) as at_owner,
        httpx.Client(base_url=other.base_url, headers=headers, timeout=30) as at_other,
    ):
        for index in range(HOP_REQUESTS + 10):
            for label, client in (("owner", at_owner), ("other", at_other)):
                started = time.perf_counter()
                client.post("/v1/chat/completions", json=body).raise_for_status()
                if index >= 10:  # warm-up
                    found[label].append((time.perf_counter() - started) * 1000)
    return found


def runner_hop(work: Path) -> str:
    """The added latency of serving a runner attached to another process."""
    cluster = f"bench-{secrets.token_hex(4)}"
    with scratch_database() as database:
        owner = clustered(work, "hop-owner", database, cluster)
        with owner:
            other = clustered(work, "hop-other", database, cluster)
            # No admin token of its own to find: the database has its admin already.
            servers.ServerProcess.start(other)
            other.token = owner.token
            folder = runners.example_folder(work / "hop-models", "echo", "hop", 64)
            runner = runners.start_runner(folder, owner, runner_token(owner), work / "runner.log")
            try:
                time.sleep(3)  # the owner's announcement reaches the other process
                found = hop_latencies(owner, other)
            finally:
                runner.terminate()
                runner.wait(30)
                other.stop()
    rows = [
        [
            label,
            f"{median(times):.2f}",
            f"{percentile(times, 0.99):.2f}",
            f"{median(times) - median(found['owner']):+.2f}",
        ]
        for label, times in (
            ("at the process holding the runner", found["owner"]),
            ("at another process (over NATS)", found["other"]),
        )
    ]
    return (
        "The cross-process runner hop: an echo model folder served by one `portway runner` "
        "attached to process A; two `portway serve` processes (A and B) share a PostgreSQL "
        f"database, Redis and NATS. {HOP_REQUESTS} sequential unary requests to each, "
        "taking turns (after 10 warm-ups each):\n\n"
        + report.table(["request arrives", "p50 ms", "p99 ms", "added p50 ms"], rows)
    )


# ------------------------------------------------------------------ the report


def section(cells: list[Cell], limits: Limits, pinning: str, hop: str) -> str:
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
    tables = report.table(header, rows) + "\n\n" + hop
    return text + tables + "\n\n" + report.machine_table(machine())


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
    hop = await asyncio.to_thread(runner_hop, work)
    return section(cells, limits, pinning, hop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs; print only")
    parser.add_argument("--no-write", action="store_true", help="print, leave BENCHMARKS.md")
    options = parser.parse_args()
    text = asyncio.run(run(options))
    print(text)
    if not (options.quick or options.no_write):
        replace_section(REPO / "BENCHMARKS.md", HEADING, text)


if __name__ == "__main__":
    main()
