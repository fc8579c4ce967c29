"""The APIs the console stands on (tokens, users, usage, model detail), driven over
HTTP and with the openai client: scopes hold, errors are OpenAI-shaped, and a
model's URL still answers JSON clients as before."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import SCRIPTED
from tests.e2e.ledger import wait_for_rows
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e


def _call(server: Server, token: str, method: str, path: str, body: Any = None) -> httpx.Response:
    return httpx.request(
        method,
        server.base_url + path,
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _client(server: Server, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=token, max_retries=0)


def test_a_token_made_over_the_api_works_until_revoked_there(server: Server) -> None:
    owner = server.token("tina")
    made = _call(server, owner, "POST", "/v1/tokens", {"name": "laptop", "scopes": ["inference"]})
    assert made.status_code == 200, made.text
    secret = made.json()["token"]
    assert made.json()["user"] == "tina" and made.json()["name"] == "laptop"
    listed = _call(server, owner, "GET", "/v1/tokens").json()["data"]
    assert [item["name"] for item in listed] == ["", "laptop"]
    assert secret not in str(listed)
    reply = _client(server, secret).chat.completions.create(
        model=SCRIPTED, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    revoked = _call(server, owner, "DELETE", f"/v1/tokens/{made.json()['id']}")
    assert revoked.json()["revoked_at"] is not None
    with pytest.raises(openai.AuthenticationError):
        _client(server, secret).models.list()


def test_a_token_grants_no_scope_it_lacks(server: Server) -> None:
    inference = server.token("uma")
    error = _error(
        _call(server, inference, "POST", "/v1/tokens", {"scopes": ["inference", "admin"]}), 403
    )
    assert error["code"] == "missing_scope" and "admin" in error["message"]
    admin_user_plain_token = server.token("admin")
    _error(_call(server, admin_user_plain_token, "POST", "/v1/tokens", {"scopes": ["admin"]}), 403)


def test_other_users_tokens_need_the_admin_scope(server: Server) -> None:
    victor = server.token("victor")
    wendy = server.token("wendy")
    _error(_call(server, victor, "GET", "/v1/tokens?user=wendy"), 403)
    _error(_call(server, victor, "POST", "/v1/tokens", {"user": "wendy"}), 403)
    _error(_call(server, victor, "GET", "/v1/users"), 403)
    wendys = _call(server, wendy, "GET", "/v1/tokens").json()["data"]
    _error(_call(server, victor, "DELETE", f"/v1/tokens/{wendys[0]['id']}"), 404)
    assert _client(server, wendy).models.list().data
    admin = server.admin_token
    body = {"user": "xena", "scopes": ["runner"], "create_user": True}
    made = _call(server, admin, "POST", "/v1/tokens", body)
    assert (made.json()["user"], made.json()["scopes"]) == ("xena", ["runner"])
    assert _call(server, admin, "GET", "/v1/tokens?user=xena").json()["data"][0]["user"] == "xena"
    names = [user["id"] for user in _call(server, admin, "GET", "/v1/users").json()["data"]]
    assert {"xena", "victor", "wendy"} <= set(names)
    _call(server, admin, "DELETE", f"/v1/tokens/{wendys[0]['id']}")
    with pytest.raises(openai.AuthenticationError):
        _client(server, wendy).models.list()


def test_a_token_that_expires_mints_none_that_outlives_it(server: Server) -> None:
    brief = server.token("yara", "inference", expires_in="2")
    for body in ({}, {"expires_in_days": 3}):
        error = _error(_call(server, brief, "POST", "/v1/tokens", body), 400)
        assert error["param"] == "expires_in_days"
    made = _call(server, brief, "POST", "/v1/tokens", {"expires_in_days": 1})
    assert made.status_code == 200, made.text
    assert made.json()["expires_at"] is not None


def test_managing_tokens_needs_the_inference_or_admin_scope(server: Server) -> None:
    runner = server.token("zack", "runner")
    for method, path in (("GET", "/v1/tokens"), ("POST", "/v1/tokens")):
        body = {"scopes": ["runner"]} if method == "POST" else None
        error = _error(_call(server, runner, method, path, body), 403)
        assert error["code"] == "missing_scope"
    own = _call(server, server.token("zack"), "GET", "/v1/tokens").json()["data"]
    _error(_call(server, runner, "DELETE", f"/v1/tokens/{own[0]['id']}"), 403)


def test_a_token_revokes_no_token_with_scopes_it_lacks(server: Server) -> None:
    plain = server.token("admin")
    listed = _call(server, plain, "GET", "/v1/tokens").json()["data"]
    first_admin = next(item for item in listed if "admin" in item["scopes"])
    _error(_call(server, plain, "DELETE", f"/v1/tokens/{first_admin['id']}"), 404)
    assert _call(server, server.admin_token, "GET", "/v1/me").status_code == 200
    spare = _call(server, plain, "POST", "/v1/tokens", {"name": "spare"}).json()
    assert _call(server, plain, "DELETE", f"/v1/tokens/{spare['id']}").status_code == 200


def test_an_admin_creates_a_user_only_when_asked(server: Server) -> None:
    admin = server.admin_token
    error = _error(_call(server, admin, "POST", "/v1/tokens", {"user": "nobody-yet"}), 404)
    assert error["param"] == "user"
    users = [user["id"] for user in _call(server, admin, "GET", "/v1/users").json()["data"]]
    assert "nobody-yet" not in users
    body = {"user": "nobody-yet", "create_user": True}
    assert _call(server, admin, "POST", "/v1/tokens", body).json()["user"] == "nobody-yet"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"scopes": ["root"]}, "scopes"),
        ({"expires_in_days": 0}, "expires_in_days"),
        ({"name": "x" * 101}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_token_requests_name_the_param(server: Server, body: Any, param: str) -> None:
    error = _error(_call(server, server.admin_token, "POST", "/v1/tokens", body), 400)
    assert error["param"] == param


def test_me_says_who_and_what(server: Server) -> None:
    found = _call(server, server.admin_token, "GET", "/v1/me").json()
    assert (found["user"], found["is_admin"]) == ("admin", True)
    assert _error(httpx.get(server.base_url + "/v1/me"), 401)["code"] == "invalid_api_key"


def _requests(rows: list[dict[str, Any]], model: str) -> int:
    return sum(row["requests"] for row in rows if row["model"] == model)


def test_usage_is_ones_own_and_admins_see_everyone(server: Server) -> None:
    yuri = server.token("yuri")
    _client(server, yuri).chat.completions.create(
        model=SCRIPTED, messages=[{"role": "user", "content": "count me"}]
    )
    assert len(wait_for_rows(server, "yuri", 1)) == 1
    own = _call(server, yuri, "GET", "/v1/usage?group_by=day,model").json()
    assert own["user"] == "yuri" and _requests(own["data"], SCRIPTED) == 1
    assert set(own["data"][0]) == {
        "day",
        "model",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    }
    _error(_call(server, yuri, "GET", "/v1/usage?user=admin"), 403)
    everyone = _call(server, server.admin_token, "GET", "/v1/usage?group_by=user").json()
    assert "yuri" in {row["user"] for row in everyone["data"]}
    one = _call(server, server.admin_token, "GET", "/v1/usage?user=yuri&group_by=model").json()
    assert _requests(one["data"], SCRIPTED) == 1


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("group_by=week", "group_by"),
        ("days=0", "days"),
        ("days=x", "days"),
        ("days=%C2%B2", "days"),
    ],
)
def test_bad_usage_queries_name_the_param(server: Server, query: str, param: str) -> None:
    assert _error(_call(server, server.admin_token, "GET", f"/v1/usage?{query}"), 400)["param"] == (
        param
    )


def test_a_model_carries_its_detail_in_one_added_field(client: openai.OpenAI) -> None:
    found = client.models.retrieve(SCRIPTED)
    assert found.id == SCRIPTED and found.object == "model"
    detail = found.model_extra["portway"]  # type: ignore[index]
    assert detail["backend"] == "local"
    assert detail["versions"][0]["id"] == found.model_extra["version"]  # type: ignore[index]
    assert set(detail["capabilities"]) >= {"tools", "json_schema", "reasoning"}
    assert detail["context_length"] > 0


def test_a_model_url_is_a_page_for_browsers_and_404_json_for_the_rest(server: Server) -> None:
    url = f"{server.base_url}/{SCRIPTED}"
    for method in ("GET", "POST"):
        plain = httpx.request(method, url, headers={"Accept": "application/json"})
        assert _error(plain, 404)["code"] == "not_found"
    page = httpx.get(url + "/versions/abc", headers={"Accept": "text/html,*/*"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    script = httpx.get(server.base_url + "/console/static/console.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert httpx.get(server.base_url + "/console/static/../app.py").status_code == 404


def test_the_first_start_names_the_console(server: Server) -> None:
    assert f"Or open {server.base_url}/ in a browser and sign in" in server.log_text()
    first = _call(server, server.admin_token, "GET", "/v1/tokens").json()["data"][0]
    assert first["name"] == "first start"
