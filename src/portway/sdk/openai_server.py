"""Start an inference server process for ``OpenAIModelClass`` and wait until it
answers its health probe."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx


class ServerFailed(RuntimeError):
    """The server did not start, or did not become healthy in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def origin(base_url: str) -> str:
    """``scheme://host:port`` of ``base_url``."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


class ServerProcess:
    """``command`` (``{port}`` replaced by a free port) run in ``cwd``; its output
    goes to a temporary log file, quoted when it fails."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.log = Path(tempfile.mkstemp(prefix="portway-model-server-", suffix=".log")[1])
        with self.log.open("ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                raise ServerFailed(f"could not start {self.command[0]!r}: {exc}") from exc

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)

    def exited(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_healthy(
    url: str,
    timeout: float,
    *,
    headers: dict[str, str] | None = None,
    process: ServerProcess | None = None,
) -> None:
    """Poll ``url`` until it answers 200; ``ServerFailed`` after ``timeout`` seconds
    or as soon as ``process`` exits."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process is not None and (code := process.exited()) is not None:
            raise ServerFailed(
                f"the server exited with status {code} before it was healthy:\n{process.log_tail()}"
            )
        try:
            response = httpx.get(url, headers=headers, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    tail = f"\n{process.log_tail()}" if process is not None else ""
    raise ServerFailed(f"{url} was not healthy after {timeout:g}s ({last}){tail}")
