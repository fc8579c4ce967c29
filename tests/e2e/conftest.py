from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.e2e.cluster import cluster_flags, scratch_postgres_url
from tests.e2e.server import Server

GEMMA = "google/gemma/models/gemma-3-270m"
SCRIPTED = "portway/test/models/scripted"
HERMES = "portway/test/models/hermes"
"""A scripted model that writes a Hermes tool call (see server.SCRIPTED_CATALOG)."""
THINKER = "portway/test/models/thinker"
"""A scripted model that reasons in <think> before answering."""
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "City and country", "maxLength": 40}
    },
    "required": ["location"],
    "additionalProperties": False,
}
"""The arguments of the get_weather tool the tool tests use. Bounded, so that one
forced call fits in a known number of tokens whatever the model writes."""


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the session: the embedded Gemma model and scripted models."""
    running = Server(tmp_path_factory.mktemp("portway-data")).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    """The admin's client of ``server``: the session's, or a module's own server."""
    return server.client()


@pytest.fixture(scope="session")
def alice_token(server: Server) -> str:
    return server.token("alice")


@pytest.fixture(scope="session")
def bob_token(server: Server) -> str:
    return server.token("bob")


@pytest.fixture
def fresh_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A scratch PostgreSQL database for one test, dropped afterwards."""
    with scratch_postgres_url() as url:
        yield url


@pytest.fixture
def cluster_args() -> tuple[str, ...]:
    """The flags that join a test's own cluster on the machine's Redis and NATS."""
    return cluster_flags()
