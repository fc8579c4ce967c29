"""Memory under steady load: does anything in the server grow without bound?

Starts a real ``portway serve`` on a fresh data directory with the default
catalogue (the embedded Gemma 3 270M and all-MiniLM-L6-v2) and drives it for
``--minutes`` with ``--clients`` concurrent clients (the ``openai`` client, plus
raw HTTP for malformed bodies), each sending its next request as soon as the
last is answered, from a fixed mix: chat completions unary and streamed,
structured output against a schema never seen before (so the grammar caches
keep evicting), embeddings of 1 to 64 texts, Responses unary and streamed
(stored, some continuing an earlier one, some read back), the models list, and
bodies that are not JSON (which must get a 400).

Every ``--interval`` seconds it records the server process's ``VmRSS``,
``VmHWM``, ``RssAnon`` and thread count from ``/proc/PID/status``, the server's
own counters (``soak_probe.py``: Python's allocated blocks, glibc's
``mallinfo2``), and the requests and errors so far. Results go to
``samples.csv`` and ``summary.json`` in the run directory, and to the "Memory
under steady load" section of BENCHMARKS.md (a row per ``--label``, other rows
kept).

    .venv/bin/python bench/soak.py [--minutes 30] [--clients 4] [--label NAME]
        [--only KIND ...] [--server-env NAME=VALUE ...] [--no-write]

``--only`` narrows the mix to some kinds (to find which one grows);
``--server-env PORTWAY_SOAK_TRIM=1`` makes the probe trim malloc at every sample.
Short trials first (``--minutes 3 --no-write``); the full run takes 30 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import re
import signal
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from common import CpuWatch, machine, replace_section
from servers import BENCH_DIR, PortwayServer, free_port

CHAT_MODEL = "gemma-3-270m"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
SECTION = "## Memory under steady load"
FINDINGS = "### Findings"
"""Where the section's hand-written part starts; a run keeps it."""
BENCHMARKS = BENCH_DIR.parent / "BENCHMARKS.md"
MIB = 1024 * 1024
VOCABULARY = (
    "port ship harbour crane cargo tide pier dock sail anchor rope lighthouse keeper storm "
    "calm wave container vessel captain crew route map signal night morning fog bell quay"
)
WORDS = VOCABULARY.split(" ")
MIX: dict[str, int] = {
    "chat": 3,
    "chat_stream": 3,
    "structured": 1,
    "embeddings": 4,
    "responses": 1,
    "responses_stream": 1,
    "models": 2,
    "bad_json": 2,
}
"""Relative weights of the request kinds."""


# --------------------------------------------------------------------------- traffic


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    messages: list[str] = field(default_factory=list)

    def failed(self, kind: str, problem: str) -> None:
        self.errors[kind] += 1
        if len(self.messages) < 20:
            self.messages.append(f"{kind}: {problem[:300]}")


class Traffic:
    """One client's requests; ``rng`` picks the kind and the content of each."""

    def __init__(
        self, base_url: str, token: str, rng: random.Random, tally: Tally, mix: dict[str, int]
    ) -> None:
        self.client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=token, max_retries=0)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=120)
        self.token = token
        self.rng = rng
        self.tally = tally
        self.mix = mix
        self.stored: list[str] = []
        self.kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "chat": self.chat,
            "chat_stream": self.chat_stream,
            "structured": self.structured,
            "embeddings": self.embeddings,
            "responses": self.responses,
            "responses_stream": self.responses_stream,
            "models": self.models,
            "bad_json": self.bad_json,
        }

    def sentence(self, low: int = 4, high: int = 24) -> str:
        return " ".join(self.rng.choices(WORDS, k=self.rng.randint(low, high))) + "."

    async def one(self) -> None:
        kind = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        self.tally.requests[kind] += 1
        try:
            await self.kinds[kind]()
        except Exception as exc:  # every failure is counted; the soak goes on
            self.tally.failed(kind, f"{type(exc).__name__}: {exc}")

    async def chat(self) -> None:
        reply = await self.client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": self.sentence()}],
            max_tokens=self.rng.randint(8, 32),
            temperature=0.8,
        )
        assert reply.choices and reply.usage is not None

    async def chat_stream(self) -> None:
        stream = await self.client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": self.sentence()},
            ],
            max_tokens=self.rng.randint(8, 32),
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks and chunks[-1].usage is not None

    async def structured(self) -> None:
        """A schema with a property name never used before: a new grammar to compile."""
        name = f"field_{self.rng.getrandbits(48):012x}"
        schema = {
            "type": "object",
            "properties": {name: {"type": "string", "maxLength": 12}},
            "required": [name],
            "additionalProperties": False,
        }
        reply = await self.client.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Reply in JSON. " + self.sentence()}],
            max_tokens=48,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": True},
            },
        )
        assert reply.choices

    async def embeddings(self) -> None:
        count = self.rng.choice((1, 1, 2, 4, 8, 16, 32, 64))
        texts = [self.sentence(4, 60) for _ in range(count)]
        reply = await self.client.embeddings.create(model=EMBEDDING_MODEL, input=texts)
        assert len(reply.data) == count

    def _previous(self) -> str | None:
        if self.stored and self.rng.random() < 0.3:
            return self.rng.choice(self.stored)
        return None

    def _remember(self, response_id: str) -> None:
        self.stored = [*self.stored[-15:], response_id]

    async def responses(self) -> None:
        previous = self._previous()
        reply = await self.client.responses.create(
            model=CHAT_MODEL,
            input=self.sentence(),
            max_output_tokens=self.rng.randint(8, 32),
            **({"previous_response_id": previous} if previous else {}),
        )
        self._remember(reply.id)
        if self.rng.random() < 0.3:
            await self.client.responses.retrieve(reply.id)

    async def responses_stream(self) -> None:
        stream = await self.client.responses.create(
            model=CHAT_MODEL,
            input=[{"role": "user", "content": self.sentence()}],
            instructions="Answer briefly.",
            max_output_tokens=self.rng.randint(8, 32),
            stream=True,
        )
        ends = ("response.completed", "response.incomplete")
        done = [event async for event in stream if event.type in ends]
        assert done, "no response.completed or response.incomplete event"
        self._remember(done[0].response.id)

    async def models(self) -> None:
        listed = await self.client.models.list()
        assert listed.data

    async def bad_json(self) -> None:
        body = self.rng.choice((b'{"model": "gemma-3-270m", "messages": [', b"not json", b"{}}"))
        route = self.rng.choice(("/v1/chat/completions", "/v1/embeddings", "/v1/responses"))
        reply = await self.http.post(
            route,
            content=body,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        assert reply.status_code == 400, reply.status_code
        assert set(reply.json()["error"]) >= {"message", "type", "param", "code"}

    async def close(self) -> None:
        await self.client.close()
        await self.http.aclose()


async def drive(
    base_url: str, token: str, clients: int, deadline: float, tally: Tally, mix: dict[str, int]
) -> None:
    traffic = [Traffic(base_url, token, random.Random(n), tally, mix) for n in range(clients)]

    async def client(one: Traffic) -> None:
        while time.monotonic() < deadline:
            await one.one()

    try:
        await asyncio.gather(*(client(one) for one in traffic))
    finally:
        for one in traffic:
            await one.close()


# --------------------------------------------------------------------------- memory


def proc_status(pid: int) -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` (bytes) and ``Threads`` of ``pid``."""
    wanted = {"VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"}
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in wanted:
                parts = value.split()
                found[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return found


def last_probe(path: Path) -> dict[str, Any]:
    """The server's latest line of counters (see ``soak_probe.py``); {} before the first."""
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(json.loads(lines[-1])) if lines else {}


async def watch(
    pid: int, probe: Path, interval: float, deadline: float, tally: Tally, load: asyncio.Task[None]
) -> list[dict[str, Any]]:
    """Samples until ``deadline``; raises what the load raised if it failed."""
    started = time.monotonic()
    samples: list[dict[str, Any]] = []
    while True:
        if load.done():
            load.result()
        row: dict[str, Any] = {"seconds": round(time.monotonic() - started, 1)}
        row |= proc_status(pid)
        row |= {k: v for k, v in last_probe(probe).items() if k != "t"}
        row |= {"requests": sum(tally.requests.values()), "errors": sum(tally.errors.values())}
        samples.append(row)
        print(
            f"{row['seconds']:7.0f}s  RSS {row['VmRSS'] / MIB:7.1f} MiB  "
            f"HWM {row['VmHWM'] / MIB:7.1f}  anon {row['RssAnon'] / MIB:7.1f}  "
            f"malloc in use {row.get('malloc_inuse', 0) / MIB:7.1f} "
            f"free {row.get('malloc_free', 0) / MIB:7.1f}  "
            f"threads {row['Threads']}  requests {row['requests']} errors {row['errors']}",
            flush=True,
        )
        if time.monotonic() >= deadline:
            return samples
        await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# --------------------------------------------------------------------------- summary


def slope_mib_per_hour(samples: list[dict[str, Any]], key: str = "VmRSS") -> float:
    """Least-squares slope of ``key`` over the second half of the run, MiB per hour."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs = [s["seconds"] for s in half]
    ys = [s[key] / MIB for s in half]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread * 3600


def at_fraction(samples: list[dict[str, Any]], fraction: float, key: str = "VmRSS") -> float:
    return float(samples[round(fraction * (len(samples) - 1))][key]) / MIB


@dataclass
class Summary:
    label: str
    minutes: float
    clients: int
    server_env: dict[str, str]
    rss_mib: dict[str, float]
    hwm_mib: float
    slope_second_half_mib_per_hour: float
    malloc_inuse_end_mib: float
    malloc_free_end_mib: float
    requests: dict[str, int]
    errors: dict[str, int]
    error_messages: list[str]
    other_load_cpus: float
    machine: str


def summarise(
    label: str,
    minutes: float,
    clients: int,
    server_env: dict[str, str],
    samples: list[dict[str, Any]],
    tally: Tally,
    other_load: float,
) -> Summary:
    box = machine()
    rss = {f"{int(f * 100)}%": at_fraction(samples, f) for f in (0, 0.25, 0.5, 0.75, 1)}
    rss["peak"] = max(s["VmRSS"] for s in samples) / MIB
    return Summary(
        label=label,
        minutes=minutes,
        clients=clients,
        server_env=server_env,
        rss_mib={k: round(v, 1) for k, v in rss.items()},
        hwm_mib=round(samples[-1]["VmHWM"] / MIB, 1),
        slope_second_half_mib_per_hour=round(slope_mib_per_hour(samples), 1),
        malloc_inuse_end_mib=round(samples[-1].get("malloc_inuse", 0) / MIB, 1),
        malloc_free_end_mib=round(samples[-1].get("malloc_free", 0) / MIB, 1),
        requests=dict(tally.requests),
        errors=dict(tally.errors),
        error_messages=tally.messages,
        other_load_cpus=round(other_load, 2),
        machine=f"{box.cpu}, {box.cores} cores, {box.ram_gib:.0f} GiB, Python {box.python}, "
        f"llama-cpp-python {box.llama_cpp_python}, {box.date}",
    )


def table_row(s: Summary) -> str:
    r = s.rss_mib
    curve = " / ".join(f"{r[k]:,.0f}" for k in ("0%", "25%", "50%", "75%", "100%"))
    return (
        f"| {s.label} | {s.minutes:g} | {sum(s.requests.values()):,} | "
        f"{sum(s.errors.values())} | {curve} | {r['peak']:,.0f} | {s.hwm_mib:,.0f} | "
        f"{s.slope_second_half_mib_per_hour:+,.0f} | "
        f"{s.malloc_inuse_end_mib:,.0f} / {s.malloc_free_end_mib:,.0f} | "
        f"{s.other_load_cpus:.2f} |"
    )


HEADER = (
    "| run | minutes | requests | errors | RSS MiB at 0 / 25 / 50 / 75 / 100% | peak RSS "
    "| VmHWM | RSS slope, 2nd half (MiB/h) | malloc in use / free at end (MiB) "
    "| other load (CPUs) |\n"
    "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"
)


def section(summary: Summary, current: str) -> str:
    """This bench's section: the text, and the table with ``summary``'s row replacing
    the row of the same label (other rows kept)."""
    old = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", current, re.MULTILINE | re.DOTALL)
    table = old.group(0).split(FINDINGS, 1)[0] if old else ""
    rows = [
        line
        for line in table.splitlines()
        if line.startswith("| ")
        and not line.startswith("| run ")
        and line.split("|")[1].strip() != summary.label
    ]
    kept = old.group(0).split(FINDINGS, 1)[1].strip() if old and FINDINGS in old.group(0) else ""
    mix = ", ".join(f"{kind} {weight}" for kind, weight in MIX.items())
    about = (
        "`bench/soak.py` (`make bench-soak`): a real `portway serve` with the default "
        "catalogue (embedded Gemma 3 270M and all-MiniLM-L6-v2) under steady load from "
        f"{summary.clients} concurrent clients (the `openai` client; each sends its next "
        f"request when the last is answered). Mix by weight: {mix}. Structured output "
        "uses a schema never seen before, so the grammar caches keep evicting; Responses "
        "are stored, some continue an earlier one. RSS is the server process's `VmRSS`, "
        "sampled every 10 s; the slope is a least-squares fit over the second half of the "
        "run; malloc in use / free is glibc's `mallinfo2` over all arenas (free counts "
        "pages `malloc_trim` already gave back too). Other load is what processes "
        "outside the soak used meanwhile, in CPUs."
    )
    return "\n".join(
        [
            SECTION,
            "",
            textwrap.fill(about, 88),
            "",
            textwrap.fill(f"Latest run: {summary.machine}.", 88),
            "",
            HEADER,
            *rows,
            table_row(summary),
            *(["", FINDINGS, "", kept] if kept else []),
            "",
        ]
    )


def write_section(summary: Summary, path: Path = BENCHMARKS) -> None:
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    replace_section(path, SECTION, section(summary, current))


# --------------------------------------------------------------------------- main


def soak_server(data_dir: Path, probe: Path, server_env: dict[str, str]) -> PortwayServer:
    data_dir.mkdir(parents=True)
    (data_dir / "portway.toml").write_text("# the default catalogue\n")
    port = free_port()
    os.environ.update(server_env, PORTWAY_SOAK_PROBE=str(probe), HF_HUB_OFFLINE="1")
    command = [sys.executable, str(BENCH_DIR / "soak_probe.py"), "serve", "--port", str(port)]
    return PortwayServer(
        name="portway",
        command=[*command, "--data-dir", str(data_dir), "--grace", "5"],
        log_path=data_dir / "server.log",
        ready_path="/health",
        port=port,
    )


async def soak(args: argparse.Namespace, server: PortwayServer, probe: Path) -> Summary:
    tally = Tally()
    deadline = time.monotonic() + args.minutes * 60
    cpu = CpuWatch([os.getpid(), server.pid]).start()
    load = asyncio.create_task(
        drive(server.base_url, server.token, args.clients, deadline, tally, args.mix)
    )
    samples = await watch(server.pid, probe, args.interval, deadline, tally, load)
    await load
    samples.append(samples[-1] | proc_status(server.pid))
    args.run_dir.joinpath("samples.csv").write_text(_csv(samples))
    return summarise(
        args.label, args.minutes, args.clients, args.server_env, samples, tally, cpu.foreign_cores()
    )


def _csv(samples: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(key for s in samples for key in s))
    lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            lines.append(text)

    writer = csv.DictWriter(Sink(), fieldnames=names)
    writer.writeheader()
    writer.writerows(samples)
    return "".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--label", default="default", help="this run's row in BENCHMARKS.md")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment for the server (e.g. MALLOC_ARENA_MAX=8)",
    )
    parser.add_argument(
        "--only", action="append", choices=list(MIX), help="send only these kinds (repeatable)"
    )
    parser.add_argument("--no-write", action="store_true", help="leave BENCHMARKS.md alone")
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "portway-bench"
    )
    args = parser.parse_args()
    args.mix = {kind: MIX[kind] for kind in args.only} if args.only else MIX
    args.server_env = dict(item.split("=", 1) for item in args.server_env)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.run_dir = Path(tempfile.mkdtemp(prefix="soak-", dir=args.work_dir))
    return args


def stop_on_sigterm() -> None:
    """SIGTERM (``kill PID``, or SIGINT ignored in a background job) stops the soak
    the way Ctrl-C does, so the server it started is stopped too."""

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def main() -> int:
    stop_on_sigterm()
    args = parse_args()
    probe = args.run_dir / "probe.jsonl"
    os.environ["PORTWAY_SOAK_INTERVAL"] = str(args.interval)
    print(f"run dir {args.run_dir}", flush=True)
    server = soak_server(args.run_dir / "data", probe, args.server_env)
    try:  # not ``with``: a server interrupted while starting is stopped too
        server.start()
        summary = asyncio.run(soak(args, server, probe))
    finally:
        server.stop()
    args.run_dir.joinpath("summary.json").write_text(json.dumps(asdict(summary), indent=2))
    print(json.dumps(asdict(summary), indent=2))
    print(HEADER + "\n" + table_row(summary))
    if not args.no_write:
        write_section(summary)
        print(f"wrote {BENCHMARKS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
