"""The machine's Redis and NATS for the cluster tests (``PORTWAY_TEST_REDIS_URL``,
``PORTWAY_TEST_NATS_URL``), and a cluster name of each test's own."""

from __future__ import annotations

import os
import secrets
import socket
from urllib.parse import urlsplit

from tests.services import require_service

REDIS_URL = os.environ.get("PORTWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("PORTWAY_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _reachable(url: str, default_port: int) -> tuple[bool, str]:
    parts = urlsplit(url)
    where = (parts.hostname or "127.0.0.1", parts.port or default_port)
    try:
        socket.create_connection(where, timeout=2).close()
    except OSError as exc:
        return False, f"cannot connect to {url}: {exc}"
    return True, ""


def require_redis_and_nats() -> None:
    """Skip (fail under CI=true) unless the machine's Redis and NATS answer."""
    require_service("Redis", *_reachable(REDIS_URL, 6379))
    require_service("NATS", *_reachable(NATS_URL, 4222))


def cluster_name() -> str:
    """A cluster name no other test run uses: its keys and subjects are its own."""
    return f"test-{secrets.token_hex(6)}"


def closed_port() -> int:
    """A local port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
