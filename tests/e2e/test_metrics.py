"""``/metrics`` of a real server: chat requests with a scripted model show in the
counters with their labels; the API port's ``/metrics`` wants an admin token;
``--metrics-address`` serves the same without one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.samples import Sample

from tests.e2e.conftest import SCRIPTED
from tests.e2e.server import SCRIPTED_CATALOG, Server, free_port
from tests.unit.metrics.reading import parsed, value_in

CATALOG = "default_model = false\ndefault_embedding_model = false\n" + SCRIPTED_CATALOG
CHAT = "/chat/completions"
WAIT_SECONDS = 30.0


class MetricsServer(Server):
    metrics_port: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsServer]:
    port = free_port()
    running = MetricsServer(
        Path(tmp_path_factory.mktemp("metrics")),
        catalog=CATALOG,
        args=("--metrics-address", f"127.0.0.1:{port}"),
    )
    running.metrics_port = port
    yield running.start()  # type: ignore[misc]
    running.stop()


def scrape(server: Server) -> list[Sample]:
    response = httpx.get(
        server.base_url + "/metrics", headers={"authorization": f"Bearer {server.admin_token}"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4; charset=utf-8")
    return parsed(response.text)


def scrape_until(server: Server, name: str, wanted: float, **labels: str) -> list[Sample]:
    """A scrape once ``name{labels}`` has reached ``wanted`` (a request is counted
    once its response has gone out, so just after the client has it)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        found = scrape(server)
        have = [s.value for s in found if s.name == name and s.labels == labels]
        if have == [wanted] or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_chat_requests_are_counted_with_their_labels(server: MetricsServer) -> None:
    client = server.client()
    unary = client.chat.completions.create(
        model=SCRIPTED, messages=[{"role": "user", "content": "one two"}]
    )
    stream = client.chat.completions.create(
        model=SCRIPTED,
        messages=[{"role": "user", "content": "three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usages = [unary.usage] + [chunk.usage for chunk in stream if chunk.usage]
    model = unary.model
    assert len(usages) == 2 and all(usages)
    chat = {"model": model, "route": CHAT}
    found = scrape_until(server, "portway_requests_total", 2, **chat, status="200")
    assert value_in(found, "portway_requests_total", **chat, status="200") == 2
    assert value_in(found, "portway_request_duration_seconds_count", **chat) == 2
    prompt = sum(usage.prompt_tokens for usage in usages if usage)
    completion = sum(usage.completion_tokens for usage in usages if usage)
    assert value_in(found, "portway_prompt_tokens_total", model=model) == prompt
    assert value_in(found, "portway_completion_tokens_total", model=model) == completion
    assert value_in(found, "portway_time_to_first_token_seconds_count", model=model) == 2
    assert value_in(found, "portway_usage_ledger_lag_seconds") >= 0


def test_unknown_models_are_counted_without_a_model(server: MetricsServer) -> None:
    response = httpx.post(
        server.base_url + "/v1" + CHAT,
        headers={"authorization": f"Bearer {server.admin_token}"},
        json={"model": "no/such/models/thing", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 404
    labels = {"model": "", "route": CHAT, "status": "404"}
    found = scrape_until(server, "portway_requests_total", 1, **labels)
    assert value_in(found, "portway_requests_total", **labels) == 1


def test_the_api_port_wants_an_admin_token(server: MetricsServer) -> None:
    assert httpx.get(server.base_url + "/metrics").status_code == 401
    bearer = {"authorization": f"Bearer {server.token('metrics-reader')}"}
    refused = httpx.get(server.base_url + "/metrics", headers=bearer)
    assert refused.status_code == 403
    assert refused.json()["error"]["type"] == "permission_error"


def test_the_metrics_address_serves_without_a_token(server: MetricsServer) -> None:
    response = httpx.get(server.metrics_url)
    assert response.status_code == 200
    names = {sample.name for sample in parsed(response.text)}
    assert "portway_usage_ledger_lag_seconds" in names
    assert httpx.get(server.metrics_url.removesuffix("metrics")).status_code == 404
