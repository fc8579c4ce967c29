"""The runner hop: what serving a model through ``portway runner`` costs.

One Portway server serves the echo model folder twice: in-process (catalogue
``backend = "python"``) and through runners attached over loopback. The same
load generator measures both:

- latency: sequential streamed requests of a 256-word prompt (the echo model
  streams it back, one token a word): time to first token and tokens/s; the
  same for the Gemma example folder (llama-cpp-python, 48 tokens, greedy);
- throughput: unary requests from ``--concurrency`` clients for ``--seconds``,
  in-process and with 1, 2 and 4 runners.

Run: ``python bench/runners.py`` (about two minutes; ``--no-gemma`` skips Gemma).
Prints a Markdown table: latencies, requests/s, and the CPU the server and the
runners spent per request (the runners share the machine here; on machines of
their own only the server column is the hop's cost to the server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import CpuWatch, machine, median, percentile, process_cpu_seconds
from servers import PortwayServer, portway

from portway.sdk.scaffold import MODEL_PY

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "models"
INPROC = "bench/inproc/models/echo"
HEADER = (
    "| measure | path | TTFT p50 ms | tokens/s p50 | req/s | p50 ms | p99 ms "
    "| server CPU ms/req | runners CPU ms/req | errors | other load (CPUs) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)
LONG = " ".join(f"w{index}" for index in range(256))


def example_folder(root: Path, name: str, app: str, concurrency: int) -> Path:
    """A copy of an example model folder under ``bench/{app}/models/{name}``."""
    folder = root / app / name
    folder.mkdir(parents=True)
    if name == "echo":  # what `portway model init` writes
        (folder / "model.py").write_text(MODEL_PY)
    else:
        shutil.copy(EXAMPLES / name / "model.py", folder / "model.py")
    (folder / "portway-model.toml").write_text(
        f'[model]\nuser = "bench"\napp = "{app}"\nid = "{name}"\nkind = "chat"\n'
        f"context_length = 8192\nconcurrency = {concurrency}\n"
    )
    return folder


def catalog(folders: list[Path]) -> str:
    found = "default_model = false\ndefault_embedding_model = false\n"
    for folder in folders:
        found += (
            f'\n[[models]]\nuser = "bench"\napp = "inproc"\nmodel = "{folder.name}"\n'
            f'backend = "python"\npath = "{folder}"\n'
        )
    return found


def start_runner(
    folder: Path, server: PortwayServer, token: str, log: Path
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "portway", "runner", str(folder), "--server", server.base_url]
    process = subprocess.Popen(
        [*command, "--concurrency", "64"],
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        text=True,
        env={**os.environ, "PORTWAY_TOKEN": token},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("serving "):
        raise RuntimeError(f"runner did not attach: {line!r}\n{log.read_text()[-2000:]}")
    return process


@dataclass
class Latency:
    ttft_ms: float
    tokens_per_s: float


ECHO_BODY: dict[str, object] = {"messages": [{"role": "user", "content": LONG}]}
GEMMA_BODY: dict[str, object] = {
    "messages": [{"role": "user", "content": "Tell me about lighthouses."}],
    "max_tokens": 48,
    "temperature": 0,
    "seed": 1,
}


async def one_stream(client: httpx.AsyncClient, model: str, body: dict[str, object]) -> Latency:
    body = {**body, "model": model, "stream": True}
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            if choices and choices[0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
                tokens += 1
    assert tokens > 8, tokens
    return Latency((first - started) * 1000, (tokens - 1) / (last - first))


async def latency(
    client: httpx.AsyncClient, models: dict[str, str], body: dict[str, object], count: int
) -> dict[str, tuple[float, float]]:
    """Per path (name: model), p50 time to first token (ms) and p50 tokens/s over
    ``count`` streams; the paths take turns, so that load from elsewhere hits all."""
    found: dict[str, list[Latency]] = {name: [] for name in models}
    for index in range(count + 2):
        for name, model in models.items():
            sample = await one_stream(client, model, body)
            if index >= 2:  # two warm-ups
                found[name].append(sample)
    return {
        name: (median([s.ttft_ms for s in samples]), median([s.tokens_per_s for s in samples]))
        for name, samples in found.items()
    }


@dataclass
class Load:
    """Unary requests answered, and their latencies in ms, over ``seconds``."""

    seconds: float = 0.0
    times: list[float] = field(default_factory=list)
    errors: int = 0
    server_cpu: float = 0.0
    runner_cpu: float = 0.0

    def row(self) -> str:
        rate = len(self.times) / self.seconds
        p50, p99 = percentile(self.times, 0.5), percentile(self.times, 0.99)
        per = 1000 / max(1, len(self.times))
        cpu = f"{self.server_cpu * per:.2f} | {self.runner_cpu * per:.2f}"
        return f"{rate:.0f} | {p50:.2f} | {p99:.2f} | {cpu} | {self.errors}"


def cpu_seconds(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


async def load(
    client: httpx.AsyncClient, model: str, concurrency: int, seconds: float, into: Load
) -> None:
    """Unary requests from ``concurrency`` workers for ``seconds``, tallied ``into``."""
    body = {"model": model, "messages": [{"role": "user", "content": "hello runner"}]}
    deadline = time.perf_counter() + seconds

    async def work() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code == 200:
                into.times.append((time.perf_counter() - started) * 1000)
            else:
                into.errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(work() for _ in range(concurrency)))
    into.seconds += time.perf_counter() - began


THROUGHPUT = {"echo in-process": (INPROC, 0)} | {
    f"echo, {count} runner{'s' if count > 1 else ''}": (f"bench/runners{count}/models/echo", count)
    for count in (1, 2, 4)
}
"""Each throughput path: its model, served by that many runners of its own."""


async def run(args: argparse.Namespace, server: PortwayServer, root: Path) -> list[str]:
    token = server_token(server, root)
    runners: list[subprocess.Popen[str]] = []
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    headers = {"Authorization": f"Bearer {server.token}"}
    rows = []
    async with httpx.AsyncClient(
        base_url=server.base_url, headers=headers, timeout=60, limits=limits
    ) as client:
        try:
            if args.gemma:
                rows += await gemma_latency(args, client, server, token, root)
            for model, count in THROUGHPUT.values():
                if count:
                    folder = example_folder(root, "echo", model.split("/")[1], 64)
                    for _ in range(count):
                        runners.append(start_runner(folder, server, token, root / "runners.log"))
            paths = {"echo in-process": INPROC, "echo, 1 runner": THROUGHPUT["echo, 1 runner"][0]}
            watch = CpuWatch(own_pids(server, runners)).start()
            found = await latency(client, paths, ECHO_BODY, args.streams)
            other = watch.foreign_cores()
            for name, (ttft, rate) in found.items():
                rows.append(
                    f"| latency | {name} | {ttft:.2f} | {rate:.0f} | | | | | | | {other:.2f} |"
                )
            rows += await throughput(args, client, server, runners)
        finally:
            for process in runners:
                process.terminate()
            for process in runners:
                process.wait(30)
    return rows


async def throughput(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    server: PortwayServer,
    runners: list[subprocess.Popen[str]],
) -> list[str]:
    """Each path for ``args.seconds`` in all, in ``args.rounds`` turns."""
    tallies = {name: Load() for name in THROUGHPUT}
    watch = CpuWatch(own_pids(server, runners)).start()
    for model, _ in THROUGHPUT.values():
        await load(client, model, args.concurrency, 0.5, Load())
    runner_pids = [process.pid for process in runners]
    for _ in range(args.rounds):
        for name, (model, _) in THROUGHPUT.items():
            tally = tallies[name]
            server_before, runners_before = cpu_seconds([server.pid]), cpu_seconds(runner_pids)
            await load(client, model, args.concurrency, args.seconds / args.rounds, tally)
            tally.server_cpu += cpu_seconds([server.pid]) - server_before
            tally.runner_cpu += cpu_seconds(runner_pids) - runners_before
    other = watch.foreign_cores()
    return [
        f"| throughput | {name} | | | {tally.row()} | {other:.2f} |"
        for name, tally in tallies.items()
    ]


async def gemma_latency(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    server: PortwayServer,
    token: str,
    root: Path,
) -> list[str]:
    """Gemma in-process and through one runner (stopped afterwards), taking turns."""
    folder = example_folder(root, "gemma", "runner", 1)
    runner = start_runner(folder, server, token, root / "runners.log")
    try:
        paths = {
            "gemma in-process": "bench/inproc/models/gemma",
            "gemma, 1 runner": "bench/runner/models/gemma",
        }
        watch = CpuWatch(own_pids(server, [runner])).start()
        found = await latency(client, paths, GEMMA_BODY, args.gemma_streams)
        other = watch.foreign_cores()
    finally:
        runner.terminate()
        runner.wait(30)
    return [
        f"| latency | {name} | {ttft:.2f} | {rate:.0f} | | | | | | | {other:.2f} |"
        for name, (ttft, rate) in found.items()
    ]


def own_pids(server: PortwayServer, runners: list[subprocess.Popen[str]]) -> list[int]:
    return [os.getpid(), server.pid, *(process.pid for process in runners)]


def server_token(server: PortwayServer, root: Path) -> str:
    data_dir = Path(server.command[server.command.index("--data-dir") + 1])
    create = ["pat", "create", "--user", "bench", "--scope", "runner"]
    result = subprocess.run(
        [sys.executable, "-m", "portway", *create, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=12.0, help="each throughput path")
    parser.add_argument("--rounds", type=int, default=3, help="turns of the throughput paths")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--streams", type=int, default=40, help="latency samples per path")
    parser.add_argument("--gemma-streams", type=int, default=8, help="Gemma latency samples")
    parser.add_argument("--no-gemma", dest="gemma", action="store_false")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="portway-bench-runners-"))
    inproc = [example_folder(root, "echo", "inproc", 64)]
    if args.gemma:
        inproc.append(example_folder(root, "gemma", "inproc", 1))
    started = os.getloadavg()[0]
    with portway(root / "data", catalog(inproc)) as server:
        rows = asyncio.run(run(args, server, root))
    print(HEADER)
    print("\n".join(rows))
    print()
    print("|  |  |\n|---|---|")
    for key, value in machine().rows():
        print(f"| {key} | {value} |")
    print(f"\nload average (1 min) at start {started:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(
        f"concurrency {args.concurrency}, {args.seconds:.0f} s a throughput path "
        f"in {args.rounds} turns, "
        f"{args.streams} echo and {args.gemma_streams} Gemma streams a latency cell"
    )


if __name__ == "__main__":
    main()
