"""Start the upstream servers the relay tests talk to: the fault-injecting fake
(``tests/upstream_fake.py``) and llama-cpp-python's own server."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.server import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass
class UpstreamProcess:
    """One upstream server process, on a free port, logging to ``log_path``."""

    command: list[str]
    log_path: Path
    ready_path: str
    port: int = field(default_factory=free_port)
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> UpstreamProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command, "--port", str(self.port)], stdout=log, stderr=log, cwd=REPO
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"upstream exited early:\n{self.log_path.read_text()}")
            try:
                url = f"http://127.0.0.1:{self.port}{self.ready_path}"
                if httpx.get(url, headers=self.headers, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"upstream not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


class FakeUpstream(UpstreamProcess):
    def __init__(self, log_dir: Path, name: str = "upstream") -> None:
        command = [sys.executable, "-m", "tests.upstream_fake", "--name", name]
        super().__init__(command, log_dir / f"{name}.log", "/stats")

    def stats(self) -> dict[str, Any]:
        found: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/stats").json()
        return found

    def post(self, action: str) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/{action}").raise_for_status()


def llama_server_command(gguf: Path) -> list[str]:
    """The command line of llama-cpp-python's server on ``gguf`` (port not given),
    through ``tests/llama_server.py``; the model is called ``gemma-upstream``."""
    return [
        sys.executable,
        str(REPO / "tests" / "llama_server.py"),
        "--model",
        str(gguf),
        "--model_alias",
        "gemma-upstream",
        "--chat_format",
        "gemma",
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
        "--host",
        "127.0.0.1",
    ]


def llama_server(log_dir: Path, gguf: Path) -> UpstreamProcess:
    """llama-cpp-python's server on ``gguf``."""
    command = llama_server_command(gguf)
    return UpstreamProcess(command, log_dir / "llama-server.log", "/v1/models")
