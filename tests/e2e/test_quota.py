"""Limits per token and per user against real server processes, through the
official client: headers on every answer, OpenAI's 429s, budgets that refuse the
next request, and exact limits across two processes sharing Redis."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.cluster import NATS_URL, REDIS_URL, cluster_name, require_redis_and_nats
from tests.e2e.conftest import SCRIPTED
from tests.e2e.server import SCRIPTED_CATALOG, Server

HELLO = [{"role": "user", "content": "Hello"}]
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
CATALOG = "default_model = false\ndefault_embedding_model = false\n" + SCRIPTED_CATALOG
"""Scripted models only: quick to start."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of this module's own: the limits set here stay here."""
    running = Server(tmp_path_factory.mktemp("portway-quota"), CATALOG).start()
    yield running
    running.stop()


def token_id(server: Server, user: str) -> str:
    """The id of ``user``'s newest token."""
    lines = server.cli("pat", "list", "--user", user).stdout.strip().splitlines()
    return lines[-1].split("\t")[0]


def client_of(server: Server, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)


def test_requests_per_minute_headers_and_429(server: Server) -> None:
    token = server.token("rita")
    server.cli("limits", "set", "--token", token_id(server, "rita"), "--rpm", "2", "--tpm", "5000")
    client = client_of(server, token)
    remaining = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model=SCRIPTED, messages=HELLO, max_tokens=4
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.headers["x-ratelimit-limit-tokens"] == "5000"
        assert DURATION.match(raw.headers["x-ratelimit-reset-requests"])
        assert DURATION.match(raw.headers["x-ratelimit-reset-tokens"])
        assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 5000
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["1", "0"]
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=SCRIPTED, messages=HELLO, max_tokens=4)
    error = refused.value
    assert (error.status_code, error.code, error.type) == (429, "rate_limit_exceeded", "requests")
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    # the user's other token is not limited, nor are other routes of this one
    other = client_of(server, server.token("rita"))
    raw = other.chat.completions.with_raw_response.create(model=SCRIPTED, messages=HELLO)
    assert "x-ratelimit-limit-requests" not in raw.headers
    assert [model.id for model in client.models.list()]


def test_a_request_over_the_tokens_per_minute_is_refused(server: Server) -> None:
    token = server.token("tom")
    server.cli("limits", "set", "--user", "tom", "--tpm", "50")
    client = client_of(server, token)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=SCRIPTED, messages=HELLO, max_tokens=100)
    assert (refused.value.code, refused.value.type) == ("rate_limit_exceeded", "tokens")
    assert refused.value.response.headers["x-ratelimit-limit-tokens"] == "50"
    # an error answer to a limited principal carries the headers too
    with pytest.raises(openai.BadRequestError) as wrong_kind:
        client.embeddings.create(model=SCRIPTED, input="hi")
    assert wrong_kind.value.response.headers["x-ratelimit-limit-tokens"] == "50"


def test_a_budget_refuses_the_next_request_and_lifting_it_applies(server: Server) -> None:
    token = server.token("bea")
    server.cli("limits", "set", "--user", "bea", "--daily-tokens", "1")
    client = client_of(server, token)
    stream = client.chat.completions.create(model=SCRIPTED, messages=HELLO, stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert len(pieces) > 1  # the request that went past its budget was not cut
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=SCRIPTED, messages=HELLO)
    assert (refused.value.code, refused.value.type) == ("insufficient_quota", "insufficient_quota")
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.response.headers["x-should-retry"] == "false"  # the client gives up
    server.cli("limits", "set", "--user", "bea", "--daily-tokens", "none")
    deadline = time.monotonic() + 10
    while True:  # servers read limits again within 2 seconds
        try:
            client.chat.completions.create(model=SCRIPTED, messages=HELLO)
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "lifting the budget never applied"
            time.sleep(0.25)
    listed = server.cli("limits", "list").stdout
    assert "user bea\trpm=-\ttpm=-\tconcurrent=-\tdaily-tokens=-\tmonthly-tokens=-" in listed


def _usage(server: Server, token: str, query: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{server.base_url}/v1/usage?{query}", headers=headers, timeout=30)


def test_usage_read_back_matches_the_command(server: Server) -> None:
    token = server.token("uma")
    client = client_of(server, token)
    for _ in range(2):
        client.chat.completions.create(model=SCRIPTED, messages=HELLO, max_tokens=3)
    deadline = time.monotonic() + 20
    while True:  # the ledger reaches the database within a second
        lines = server.cli("usage").stdout.strip().splitlines()[1:]
        rows = {tuple(line.split("\t")[:2]): line.split("\t")[2:] for line in lines}
        if rows.get(("uma", SCRIPTED), ["0"])[0] == "2":
            break
        assert time.monotonic() < deadline, "usage never reached the database"
        time.sleep(0.2)
    everyone = _usage(server, server.admin_token, "group_by=user,model&start_time=0").json()
    api = {
        (row["user"], row["model"]): [
            str(row[name]) for name in ("requests", "prompt_tokens", "completion_tokens")
        ]
        for row in everyone["data"]
    }
    assert api == rows
    own = _usage(server, token, f"group_by=model,day&model={SCRIPTED}").json()
    assert [(row["model"], row["requests"]) for row in own["data"]] == [(SCRIPTED, 2)]
    assert _usage(server, token, "model=nothing/such/models/one").json()["data"] == []
    assert _usage(server, token, "start_time=0&end_time=1").json()["data"] == []
    assert _usage(server, token, "user=admin").status_code == 403
    refused = _usage(server, token, "start_time=5&days=2")
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "start_time")


# ------------------------------------------------------------------ two processes


async def _fire(servers: list[Server], token: str, count: int) -> list[int]:
    clients = [
        openai.AsyncOpenAI(base_url=s.base_url + "/v1", api_key=token, max_retries=0, timeout=120)
        for s in servers
    ]

    async def one(index: int) -> int:
        try:
            await clients[index % len(clients)].chat.completions.create(
                model=SCRIPTED, messages=HELLO, max_tokens=2
            )
        except openai.RateLimitError as exc:
            return exc.status_code
        return 200

    try:
        return await asyncio.gather(*(one(index) for index in range(count)))
    finally:
        for client in clients:
            await client.close()


@pytest.mark.postgres
def test_limits_hold_exactly_across_two_processes(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_redis_and_nats()  # given through the environment, as an operator may
    monkeypatch.setenv("PORTWAY_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("PORTWAY_NATS_URL", NATS_URL)
    monkeypatch.setenv("PORTWAY_CLUSTER_NAME", cluster_name())
    servers = [
        Server(tmp_path / name, CATALOG, database_url=postgres_url).start() for name in ("a", "b")
    ]
    try:
        token = servers[0].token("carl")
        servers[1].cli("limits", "set", "--token", token_id(servers[0], "carl"), "--rpm", "30")
        statuses = asyncio.run(_fire(servers, token, 100))
        assert (statuses.count(200), statuses.count(429)) == (30, 70)
    finally:
        for running in servers:
            running.stop()
