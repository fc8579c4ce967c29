"""Server processes the benchmark starts: Portway, llama-cpp-python's server and a
bare FastAPI front. Each runs on a free port, logs to a file, and is stopped with
SIGTERM by the process id this module started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import free_port

BENCH_DIR = Path(__file__).resolve().parent
TOKEN_LINE = re.compile(r"^\s+(pwt_[0-9A-Za-z]+)\s*$", re.MULTILINE)
THIN_FRONT_TOKEN = "bench-token"


@dataclass
class ServerProcess:
    """One server process: started, waited for, stopped."""

    name: str
    command: list[str]
    log_path: Path
    ready_path: str
    port: int
    cpus: Collection[int] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout: float = 300.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=log, preexec_fn=self._pin()
            )
        self._wait_ready(timeout)

    def _pin(self) -> Callable[[], None] | None:
        cpus = self.cpus
        if not cpus:
            return None
        return lambda: os.sched_setaffinity(0, cpus)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(self.base_url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {timeout:.0f}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class PortwayServer(ServerProcess):
    """``portway serve`` on a fresh data directory; ``token`` is the admin's PAT."""

    token: str = ""

    def start(self, timeout: float = 300.0) -> None:
        super().start(timeout)
        found = TOKEN_LINE.search(self.log_text())
        if found is None:
            self.stop()
            raise RuntimeError("Portway printed no admin token (data dir not fresh?)")
        self.token = found.group(1)

    def __enter__(self) -> PortwayServer:
        self.start()
        return self


def portway(data_dir: Path, catalog: str, *, cpus: Collection[int] | None = None) -> PortwayServer:
    """A Portway server serving ``catalog`` (TOML) from the fresh ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=False)
    (data_dir / "portway.toml").write_text(catalog)
    port = free_port()
    command = [sys.executable, "-m", "portway", "serve", "--port", str(port)]
    return PortwayServer(
        name="portway",
        command=[*command, "--data-dir", str(data_dir), "--grace", "5"],
        log_path=data_dir / "server.log",
        ready_path="/health",
        port=port,
        cpus=cpus,
    )


def llama_cpp_server(model: Path, *, threads: int, n_ctx: int, log_dir: Path) -> ServerProcess:
    """``python -m llama_cpp.server`` for ``model`` (through ``llama_server.py``, which
    loads it with the same llama.cpp settings as Portway)."""
    port = free_port()
    command = [
        sys.executable,
        str(BENCH_DIR / "llama_server.py"),
        *("--model", str(model), "--n_threads", str(threads), "--n_ctx", str(n_ctx)),
        # The GGUF has no chat template; without this the server would fall back to
        # Llama 2's format (Portway picks Gemma's from the architecture).
        *("--chat_format", "gemma"),
        # Its default (true) keeps every prompt token's logits: as Portway, no.
        *("--logits_all", "false"),
        *("--host", "127.0.0.1", "--port", str(port), "--verbose", "false"),
    ]
    return ServerProcess(
        name="llama-cpp-python server",
        command=command,
        log_path=log_dir / "llama-cpp-server.log",
        ready_path="/v1/models",
        port=port,
    )


def thin_front(
    script: list[str], *, log_dir: Path, cpus: Collection[int] | None = None
) -> ServerProcess:
    """The bare FastAPI front of ``thin_front.py`` replying with ``script``."""
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "thin_front.py"), "--port", str(port)]
    command += ["--script", json.dumps(script), "--token", THIN_FRONT_TOKEN]
    return ServerProcess(
        name="bare FastAPI front",
        command=command,
        log_path=log_dir / "thin-front.log",
        ready_path="/health",
        port=port,
        cpus=cpus,
    )
