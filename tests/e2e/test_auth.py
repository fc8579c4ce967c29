"""Personal access tokens as a client meets them."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from portway.auth import tokens
from tests.e2e.conftest import SCRIPTED
from tests.e2e.server import Server

HELLO = [{"role": "user", "content": "hi"}]
PRIVATE = "alice/private/models/echo"


def _status_and_body(server: Server, header: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": header} if header is not None else {}
    response = httpx.get(server.base_url + "/v1/models", headers=headers)
    return response.status_code, response.content


def _flip_last(token: str) -> str:
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_every_bad_token_gets_the_same_401(server: Server) -> None:
    revoked = server.token("carol")
    expired = server.token("carol", expires_in="0.00001")
    token_id = server.cli("pat", "list", "--user", "carol").stdout.splitlines()[0].split("\t")[0]
    server.cli("pat", "revoke", token_id)
    time.sleep(3)
    unknown = tokens.generate()
    cases = {
        "missing": None,
        "empty": "Bearer",
        "wrong scheme": f"Basic {unknown}",
        "malformed": "Bearer not-a-token",
        "bad checksum": f"Bearer {_flip_last(unknown)}",
        "unknown": f"Bearer {unknown}",
        "revoked": f"Bearer {revoked}",
        "expired": f"Bearer {expired}",
    }
    results = {name: _status_and_body(server, header) for name, header in cases.items()}
    bodies = {body for _, body in results.values()}
    assert {status for status, _ in results.values()} == {401}
    assert len(bodies) == 1, results
    assert b'"type":"authentication_error"' in bodies.pop()


def test_bearer_and_key_schemes(server: Server) -> None:
    for scheme in ("Bearer", "Key", "key"):
        status, _ = _status_and_body(server, f"{scheme} {server.admin_token}")
        assert status == 200


def test_created_and_revoked_tokens_take_effect_while_serving(server: Server) -> None:
    token = server.token("dave")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)
    assert client.chat.completions.create(model=SCRIPTED, messages=HELLO).choices
    listing = server.cli("pat", "list", "--user", "dave").stdout
    assert token not in listing
    token_id = listing.splitlines()[0].split("\t")[0]
    assert token_id.startswith("tok_")
    server.cli("pat", "revoke", token_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            client.models.list()
        except openai.AuthenticationError:
            return
        time.sleep(0.25)
    pytest.fail("a revoked token still worked 5 seconds later")


def test_private_models_are_their_owners(server: Server, alice_token: str, bob_token: str) -> None:
    def client(token: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)

    assert PRIVATE in [model.id for model in client(alice_token).models.list()]
    assert PRIVATE not in [model.id for model in client(bob_token).models.list()]
    assert client(alice_token).chat.completions.create(model=PRIVATE, messages=HELLO).choices
    with pytest.raises(openai.NotFoundError) as caught:
        client(bob_token).chat.completions.create(model=PRIVATE, messages=HELLO)
    assert caught.value.code == "model_not_found"


def test_scopes(server: Server) -> None:
    runner_only = server.token("erin", "runner")
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=runner_only, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model=SCRIPTED, messages=HELLO)


def test_health_needs_no_token(server: Server) -> None:
    assert httpx.get(server.base_url + "/health").json() == {"status": "ok"}
    detail = httpx.get(
        server.base_url + "/v1/health", headers={"Authorization": f"Bearer {server.admin_token}"}
    ).json()
    assert any(model["id"] == SCRIPTED for model in detail["models"])
