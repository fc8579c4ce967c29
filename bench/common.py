"""Shared bits of the benchmark: statistics, the machine, llama.cpp load settings."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import re
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# --------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- machine


@dataclass(frozen=True)
class Machine:
    cpu: str
    cores: int
    ram_gib: float
    python: str
    llama_cpp_python: str
    portway: str
    date: str

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("CPU", self.cpu),
            ("Cores (logical)", str(self.cores)),
            ("RAM", f"{self.ram_gib:.1f} GiB"),
            ("Python", self.python),
            ("llama-cpp-python", self.llama_cpp_python),
            ("Portway", self.portway),
            ("Date", self.date),
        ]


def _proc_value(path: str, key: str) -> str:
    with contextlib.suppress(OSError), open(path, encoding="ascii", errors="replace") as lines:
        for line in lines:
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return ""


def machine() -> Machine:
    mem_kib = _proc_value("/proc/meminfo", "MemTotal").split()
    return Machine(
        cpu=_proc_value("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        cores=os.cpu_count() or 1,
        ram_gib=int(mem_kib[0]) / 1024**2 if mem_kib else math.nan,
        python=platform.python_version(),
        llama_cpp_python=metadata.version("llama-cpp-python"),
        portway=metadata.version("portway"),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    )


# --------------------------------------------------------------------------- CPU


_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _busy_ticks() -> int:
    """CPU ticks the whole machine spent busy (steal included) since boot."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq + steal


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


@dataclass
class CpuWatch:
    """Measures the CPU that processes other than ``pids`` used over an interval.

    ``foreign_cores`` is their average load in CPUs (0.5 = half a core busy
    throughout): other engineers' tests, or steal by the hypervisor.
    """

    pids: Sequence[int]
    _busy: int = 0
    _own: float = 0.0
    _started: float = 0.0

    def _own_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids)

    def start(self) -> CpuWatch:
        self._busy, self._own = _busy_ticks(), self._own_seconds()
        self._started = time.perf_counter()
        return self

    def foreign_cores(self) -> float:
        busy = (_busy_ticks() - self._busy) / _TICKS_PER_SECOND
        own = self._own_seconds() - self._own
        elapsed = time.perf_counter() - self._started
        return max(0.0, busy - own) / elapsed if elapsed > 0 else 0.0


def wait_for_quiet(
    pids: Sequence[int], *, threshold: float, limit: float, window: float = 1.0
) -> float:
    """Waits (at most ``limit`` seconds) for a ``window`` during which processes other
    than ``pids`` use under ``threshold`` CPUs; returns the last window's load."""
    deadline = time.monotonic() + limit
    while True:
        watch = CpuWatch(pids).start()
        time.sleep(window)
        load = watch.foreign_cores()
        if load < threshold or time.monotonic() >= deadline:
            return load


def replace_section(path: Path, heading: str, text: str) -> None:
    """Replaces the ``heading`` section of ``path`` (a BENCHMARKS.md) with ``text``,
    where it stands, or appends it; every other section stays as it is."""
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text.rstrip("\n") + "\n\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    path.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")
