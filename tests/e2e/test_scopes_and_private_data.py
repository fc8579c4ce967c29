"""Who may do what, and what stays private: a token does only what its scopes say,
the data dir's files are the server user's alone, image links ignore the Host
header, and nothing a client or runner sends forges a log line."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from websockets.sync.client import connect

from tests.e2e.runners import IMAGE_MODEL, model_folder
from tests.e2e.server import Server, portway

PUBLIC_URL = "https://portway.example/base"
GREY = "alice/art/models/grey"
CATALOG = """
default_model = false
default_embedding_model = false

[[models]]
user = "alice"
app = "art"
model = "grey"
backend = "python"
path = "{path}"
"""
FORGED = "2026-01-01 00:00:00,000 INFO portway.access forged"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on a data dir others may read (made 0755 before it starts), with
    its public URL from PORTWAY_PUBLIC_URL and an image model in a model folder."""
    root = tmp_path_factory.mktemp("scoped")
    folder = model_folder(root, IMAGE_MODEL, user="alice", app="art", kind="image", model="grey")
    data_dir = root / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PORTWAY_PUBLIC_URL", PUBLIC_URL + "/")
        running = Server(data_dir, catalog=CATALOG.format(path=folder)).start()
    yield running
    running.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def attach(server: Server, token: str, reference: str, runner: str = "test") -> dict[str, Any]:
    """Say hello as a runner of ``reference``; the server's first frame."""
    url = server.base_url.replace("http://", "ws://") + "/v1/runners/connect"
    hello = {
        "type": "hello",
        "model": {"reference": reference, "version": "a" * 32},
        "runner": runner,
    }
    with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as socket:
        socket.send(json.dumps(hello))
        frame: dict[str, Any] = json.loads(socket.recv(timeout=30))
    return frame


def test_an_admin_users_inference_token_gets_no_health_detail(server: Server) -> None:
    inference_only = server.token("admin")
    response = httpx.get(
        server.base_url + "/health", headers={"Authorization": f"Bearer {inference_only}"}
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("permission_error", "missing_scope")
    assert "'admin' scope" in error["message"]
    detail = httpx.get(
        server.base_url + "/health", headers={"Authorization": f"Bearer {server.admin_token}"}
    ).json()
    assert GREY in {model["id"] for model in detail["models"]}


def test_the_first_admins_token_names_its_scopes(server: Server) -> None:
    [first, *_] = server.cli("pat", "list", "--user", "admin").stdout.splitlines()
    assert first.split("\t")[2] == "inference,admin"


def test_an_admin_users_tokens_attach_only_what_their_scopes_allow(server: Server) -> None:
    refused = attach(server, server.token("admin"), "alice/demo/models/one")
    assert (refused["type"], refused["status"]) == ("refused", 403)
    assert "lacks the 'runner' scope" in refused["message"]
    refused = attach(server, server.token("admin", "runner"), "alice/demo/models/one")
    assert (refused["type"], refused["status"]) == ("refused", 403)
    assert "Only 'alice'" in refused["message"]
    ready = attach(server, server.token("admin", "runner,admin"), "alice/demo/models/one")
    assert ready == {"type": "ready", "model": "alice/demo/models/one", "version_id": "a" * 32}


def image_url(server: Server, host: str) -> str:
    """The ``url`` of an image made with ``Host: {host}``."""
    response = httpx.post(
        server.base_url + "/v1/images/generations",
        headers={"Authorization": f"Bearer {server.admin_token}", "Host": host},
        json={"model": GREY, "prompt": "a lighthouse", "size": "64x64"},
    )
    assert response.status_code == 200, response.text
    url: str = response.json()["data"][0]["url"]
    return url


def test_image_links_ignore_a_forged_host_header(server: Server) -> None:
    url = image_url(server, "evil.example")
    assert url.startswith(PUBLIC_URL + "/media/"), url
    image = httpx.get(server.base_url + url.removeprefix(PUBLIC_URL))
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"


def test_what_the_data_dir_keeps_is_private(server: Server) -> None:
    image_url(server, "127.0.0.1")  # a media file, at least one
    data_dir = server.data_dir
    assert f"{data_dir} is open to other local users (mode 0755)" in server.log_text()
    kept = [data_dir / name for name in ("portway.db", "portway.db-wal", "media.key")]
    kept += [path for path in (data_dir / "media").iterdir()]
    kept += [data_dir / name for name in ("portway.db-shm", "secrets.key")]
    found = {path.name: mode(path) for path in kept if path.exists()}
    assert len(found) >= 4
    assert found == dict.fromkeys(found, 0o600)
    assert mode(data_dir / "media") == 0o700


def test_a_fresh_data_dir_is_private(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    portway("pat", "create", "--user", "someone", "--data-dir", str(fresh), "--create")
    assert mode(fresh) == 0o700
    assert mode(fresh / "portway.db") == 0o600


def test_client_strings_cannot_forge_log_lines(server: Server) -> None:
    runner_token = server.token("alice", "runner")
    ready = attach(server, runner_token, "alice/demo/models/two", runner="evil\n" + FORGED)
    assert ready["type"] == "ready"
    missing = httpx.get(server.base_url + "/v1/" + quote("x\n" + FORGED + "\x00"))
    assert missing.status_code == 404
    log = server.log_once_it_has("runner evil\\n" + FORGED, "/v1/x\\n" + FORGED + "\\x00 404")
    assert not [line for line in log.splitlines() if line.startswith(FORGED)]
