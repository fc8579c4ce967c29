"""Several ``portway serve`` processes as one server, on the machine's PostgreSQL,
Redis and NATS (each test with a database and a cluster name of its own): they
start together on a fresh database, share tokens and revocations, survive one of
them being killed; ``--workers 2`` does the same on one address; and a start that
cannot share state fails with a message that says why."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.cluster import NATS_URL
from tests.e2e.conftest import SCRIPTED
from tests.e2e.server import SCRIPTED_CATALOG, TOKEN_LINE, Server, free_port
from tests.unit.cluster.services import closed_port

CATALOG = "default_model = false\n" + SCRIPTED_CATALOG
"""Scripted models only: a process without the embedded model stays light."""
WORKER_PID = re.compile(r"Started server process \[(\d+)\]")

pytestmark = pytest.mark.postgres


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """The servers a test starts, stopped at its end whatever happened."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop(signal.SIGKILL)


def start_together(servers: list[Server]) -> None:
    """Start every server at the same moment and wait until all serve."""
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(Server.start, servers))


def admin_token(servers: list[Server]) -> str:
    """The first admin's token, printed by whichever process made it."""
    return next(server.admin_token for server in servers if server.admin_token)


def status(server: Server, token: str) -> int:
    """``GET /v1/me``'s status on a new connection (a new worker, maybe)."""
    headers = {"Authorization": f"Bearer {token}", "Connection": "close"}
    return httpx.get(server.base_url + "/v1/me", headers=headers, timeout=10).status_code


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Wait for ``check`` to hold (the design says within 2 s; the margin is for
    a loaded machine, not a promise)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the cluster never agreed"
        time.sleep(0.05)


def create_token(server: Server, admin: str) -> tuple[str, str]:
    made = httpx.post(
        server.base_url + "/v1/tokens",
        headers={"Authorization": f"Bearer {admin}"},
        json={"name": "shared"},
        timeout=10,
    )
    assert made.status_code == 200, made.text
    return made.json()["token"], made.json()["id"]


def revoke(server: Server, admin: str, token_id: str) -> None:
    headers = {"Authorization": f"Bearer {admin}"}
    gone = httpx.delete(f"{server.base_url}/v1/tokens/{token_id}", headers=headers, timeout=10)
    assert gone.status_code == 200, gone.text


def chat(server: Server, token: str) -> str:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
    reply = client.chat.completions.create(
        model=SCRIPTED, messages=[{"role": "user", "content": "hi"}], max_tokens=64
    )
    return reply.choices[0].finish_reason


def test_three_processes_start_at_once_and_share_tokens(
    tmp_path: Path, postgres_url: str, cluster_args: tuple[str, ...], servers: list[Server]
) -> None:
    servers += [
        Server(tmp_path / name, CATALOG, database_url=postgres_url, args=cluster_args)
        for name in ("a", "b", "c")
    ]
    start_together(servers)  # one migrates the fresh database, the others wait for it
    a, b, c = servers
    printed = [token for server in servers for token in TOKEN_LINE.findall(server.log_text())]
    assert len(printed) == 1  # one process made the first admin; the others found it
    assert a.cli("pat", "list").stdout.count("\tadmin\t") == 1
    admin = admin_token(servers)
    token, token_id = create_token(a, admin)
    for server in servers:
        eventually(lambda server=server: status(server, token) == 200)  # type: ignore[misc]
    assert chat(c, token) == "stop"
    revoke(b, admin, token_id)
    for server in (a, c, b):
        eventually(lambda server=server: status(server, token) == 401)  # type: ignore[misc]
    assert status(a, admin) == 200


def test_a_killed_process_leaves_the_others_serving(
    tmp_path: Path, postgres_url: str, cluster_args: tuple[str, ...], servers: list[Server]
) -> None:
    servers += [
        Server(tmp_path / name, CATALOG, database_url=postgres_url, args=cluster_args)
        for name in ("a", "b")
    ]
    start_together(servers)
    a, b = servers
    admin = admin_token(servers)
    assert a.stop(signal.SIGKILL) == -signal.SIGKILL
    token, token_id = create_token(b, admin)
    assert status(b, token) == 200
    assert chat(b, token) == "stop"
    revoke(b, admin, token_id)
    assert status(b, token) == 401  # the revoking process refuses it at once


def worker_pids(server: Server) -> list[int]:
    return [int(pid) for pid in WORKER_PID.findall(server.log_text())]


def test_two_workers_share_an_address_tokens_and_revocations(
    tmp_path: Path, postgres_url: str, cluster_args: tuple[str, ...], servers: list[Server]
) -> None:
    server = Server(
        tmp_path / "w", CATALOG, database_url=postgres_url, args=(*cluster_args, "--workers", "2")
    )
    servers.append(server.start())
    eventually(lambda: server.log_text().count("Application startup complete") == 2, 120)
    first, second = worker_pids(server)
    assert server.process is not None and server.process.pid not in (first, second)
    admin = server.admin_token
    token, token_id = create_token(server, admin)
    eventually(lambda: all(status(server, token) == 200 for _ in range(6)))
    revoke(server, admin, token_id)
    eventually(lambda: all(status(server, token) == 401 for _ in range(6)))

    os.kill(first, signal.SIGKILL)  # the supervisor starts another in its place
    eventually(lambda: len(worker_pids(server)) == 3, 120)
    eventually(lambda: server.log_text().count("Application startup complete") == 3, 120)
    assert all(chat(server, admin) == "stop" for _ in range(4))

    assert server.stop() == 0  # SIGTERM: every worker finishes, then the supervisor
    servers.remove(server)
    log = server.log_text()
    assert f"Finished server process [{second}]" in log
    assert "Stopping parent process" in log


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "portway.toml").write_text(CATALOG)
    command = ["serve", "--data-dir", str(tmp_path), "--port", str(free_port()), *args]
    return subprocess.run(
        [sys.executable, "-m", "portway", *command], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--workers", "2"), "--workers 2 needs --redis-url and --nats-url"),
        (("--nats-url", NATS_URL), "--nats-url needs --redis-url too"),
    ],
)
def test_a_start_that_cannot_share_state_fails_clearly(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    refused = serve(tmp_path, *args)
    assert refused.returncode == 1
    assert message in refused.stderr
    assert not (tmp_path / "portway.db").exists()  # refused before anything opened


def test_a_start_without_redis_fails_clearly(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{closed_port()}"
    refused = serve(tmp_path, "--workers", "2", "--redis-url", url, "--nats-url", NATS_URL)
    assert refused.returncode == 1
    assert f"Redis at {url} is unreachable" in refused.stderr
