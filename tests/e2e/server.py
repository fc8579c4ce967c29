"""Start real ``portway serve`` processes for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

TOKEN_LINE = re.compile(r"^\s+(pwt_[0-9A-Za-z]+)\s*$", re.MULTILINE)

SCRIPTED_CATALOG = """
[[models]]
user = "portway"
app = "test"
model = "scripted"
backend = "scripted"
aliases = ["scripted"]

[[models]]
user = "portway"
app = "test"
model = "hermes"
backend = "scripted"
tool_family = "hermes"
script = ["Let me check.", "<tool", "_call>", "\\n{\\"name\\": \\"get_weather\\", ",
          "\\"arguments\\": {\\"location\\": ", "\\"Paris\\"}}", "\\n</tool_call>"]

[[models]]
user = "portway"
app = "test"
model = "thinker"
backend = "scripted"
reasons = true
script = ["<think>", "Two", " and two", "</think>", "\\n\\n", "Four", "."]

[[models]]
user = "alice"
app = "private"
model = "echo"
backend = "scripted"
visibility = "private"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def portway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``portway`` command; raise with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "portway", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    if result.returncode != 0:
        raise AssertionError(f"portway {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Server:
    data_dir: Path
    catalog: str = SCRIPTED_CATALOG
    database_url: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    admin_token: str = ""
    args: tuple[str, ...] = ()
    """More ``portway serve`` flags."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    def store_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def start(self, timeout: float = 180.0) -> Server:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (self.data_dir / "portway.toml").write_text(self.catalog)
        command = [sys.executable, "-m", "portway", "serve", "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, *self.store_args(), "--grace", "20", *self.args],
                stdout=log,
                stderr=log,
            )
        self._wait_ready(timeout)
        found = TOKEN_LINE.search(self.log_text())
        if found and not self.admin_token:
            self.admin_token = found.group(1)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log_text()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_once_it_has(self, *texts: str, timeout: float = 30.0) -> str:
        """The log, once it holds every one of ``texts`` (lines such as the access
        log's are written after the response has gone out)."""
        deadline = time.monotonic() + timeout
        while not all(text in (log := self.log_text()) for text in texts):
            if time.monotonic() > deadline:
                raise AssertionError(f"the log never showed {texts!r}:\n{log}")
            time.sleep(0.1)
        return log

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return portway(*args, *self.store_args())

    def client(self) -> openai.OpenAI:
        """The official client as the first admin, without retries."""
        return openai.OpenAI(
            base_url=self.base_url + "/v1", api_key=self.admin_token, max_retries=0
        )

    def token(self, user: str, *scopes: str, expires_in: str | None = None) -> str:
        args = ["pat", "create", "--user", user]
        for scope in scopes:
            args += ["--scope", scope]
        if expires_in:
            args += ["--expires-in", expires_in]
        return self.cli(*args).stdout.strip().splitlines()[-1]
