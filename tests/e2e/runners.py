"""Real ``portway runner`` processes, and model folders for them to serve."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.server import Server

SLOW_MODEL = '''
import os, time
from portway import ModelClass

class Slow(ModelClass):
    """Says its pid, then counts slowly; a generation stopped early leaves a marker."""

    def generate(self, messages, params):
        finished = False
        try:
            yield f"{os.getpid()}"
            for index in range(int(os.environ.get("SLOW_WORDS", "20"))):
                time.sleep(float(os.environ.get("SLOW_DELAY", "0.1")))
                yield f" {index}"
            finished = True
        finally:
            if not finished:
                (self.path / "stopped").write_text("stopped early")
'''

BOOM_MODEL = """
from portway import ModelClass

class Boom(ModelClass):
    def generate(self, messages, params):
        if messages[-1]["content"] == "later":
            yield "fine so far"
        raise ValueError("the model is broken")
"""

EMBED_MODEL = """
from portway import ModelClass

class Letters(ModelClass):
    def count_tokens(self, text):
        return len(text.split())

    def embed(self, texts):
        return [[float(len(text)), 1.0, 0.0, 0.0] for text in texts]
"""

IMAGE_MODEL = """
import struct, zlib
from portway import ModelClass

def png(width, height):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    rows = b"".join(b"\\x00" + b"\\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))

class Grey(ModelClass):
    def generate_image(self, prompt, *, n, width, height):
        return [png(width, height) for _ in range(n)]
"""


def model_folder(
    root: Path,
    source: str,
    *,
    user: str = "alice",
    app: str = "runners",
    kind: str = "chat",
    model: str = "slow",
    concurrency: int = 2,
    extra: str = "",
) -> Path:
    """Write a model folder (``model.py`` + ``portway-model.toml``) under ``root``."""
    folder = root / f"{model}-{len(list(root.glob('*')))}"
    folder.mkdir(parents=True)
    (folder / "model.py").write_text(textwrap.dedent(source))
    (folder / "portway-model.toml").write_text(
        f'[model]\nuser = "{user}"\napp = "{app}"\nid = "{model}"\nkind = "{kind}"\n'
        f"context_length = 4096\nconcurrency = {concurrency}\n{extra}"
    )
    return folder


@dataclass
class Runner:
    """One ``portway runner`` process; its stdout lines arrive in ``lines``."""

    folder: Path
    server: Server
    token: str
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    serving: str = ""
    """What the runner printed once attached: ``serving {reference} version {id}``."""
    stderr: str = ""

    def start(self, *, wait: bool = True, timeout: float = 60) -> Runner:
        command = [sys.executable, "-m", "portway", "runner", str(self.folder)]
        command += ["--server", self.server.base_url, *self.args]
        self.log_path = Path(tempfile.mkdtemp(prefix="portway-runner-")) / "runner.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "PORTWAY_TOKEN": self.token, **self.env},
            )
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            line = self.lines.get(timeout=timeout)
            assert line.startswith("serving "), line
            self.serving, self.version = line, line.split()[-1]
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait(self, timeout: float = 30) -> int:
        """The exit code (stderr is kept in ``stderr``)."""
        assert self.process is not None
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # never leave a runner behind a failed test
            self.process.wait()
            raise
        self.stderr = self.log_path.read_text()
        return code

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait()
