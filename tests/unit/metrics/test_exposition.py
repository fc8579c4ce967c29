"""The registry renders text Prometheus's own parser reads, with names that keep
Prometheus's conventions, and the numbers the request path gave it."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from portway.metrics import Metrics
from portway.serving.usage import Meter
from tests.unit.metrics.reading import value

NAMES = {
    "portway_requests": "counter",
    "portway_request_duration_seconds": "histogram",
    "portway_time_to_first_token_seconds": "histogram",
    "portway_prompt_tokens": "counter",
    "portway_completion_tokens": "counter",
    "portway_queue_depth": "gauge",
    "portway_requests_in_flight": "gauge",
    "portway_runners_attached": "gauge",
    "portway_upstream_retries": "counter",
    "portway_upstream_failures": "counter",
    "portway_upstream_ejections": "counter",
    "portway_usage_ledger_lag_seconds": "gauge",
}
"""Every metric and its type (the parser names counters without ``_total``)."""


@pytest.fixture
def metrics(tmp_path: Path) -> Metrics:
    return Metrics(tmp_path / "ledger", ["/v1/chat/completions"], ["/v1"])


def scope(path: str) -> dict[str, object]:
    return {"type": "http", "path": path}


def test_every_metric_is_rendered_with_its_type_and_help(metrics: Metrics) -> None:
    families = {
        family.name: family for family in text_string_to_metric_families(metrics.render().decode())
    }
    assert {name: family.type for name, family in families.items()} == NAMES
    assert all(family.documentation for family in families.values())


def test_names_keep_prometheus_conventions() -> None:
    for name, kind in NAMES.items():
        assert name.startswith("portway_")
        if kind == "histogram":
            assert name.endswith("_seconds")
        if kind == "counter":
            assert not name.endswith("_total")  # the parser took it off: it was there


def test_requests_are_counted_by_model_route_and_status(metrics: Metrics) -> None:
    metrics.request_done("a/b/models/c", scope("/v1/chat/completions"), 200, 0.02)
    metrics.request_done("a/b/models/c", scope("/v1/chat/completions"), 200, 0.5)
    metrics.request_done("", scope("/nowhere/at/all"), 404, 0.001)
    chat = {"model": "a/b/models/c", "route": "/chat/completions"}
    assert value(metrics, "portway_requests_total", **chat, status="200") == 2
    assert value(metrics, "portway_requests_total", model="", route="other", status="404") == 1
    assert value(metrics, "portway_request_duration_seconds_count", **chat) == 2
    assert value(metrics, "portway_request_duration_seconds_sum", **chat) == pytest.approx(0.52)
    assert value(metrics, "portway_request_duration_seconds_bucket", **chat, le="0.025") == 1


def test_usage_counts_tokens_and_the_first_token(metrics: Metrics) -> None:
    meter = Meter("req_1", "chat.completions", 1, "tok_1", model="m", prompt_tokens=7)
    meter.completion_tokens = 5
    meter.first_token()
    metrics.usage_ended(meter, "completed")
    metrics.usage_ended(Meter("req_2", "embeddings", 1, None, model="m", prompt_tokens=3), "failed")
    assert value(metrics, "portway_prompt_tokens_total", model="m") == 10
    assert value(metrics, "portway_completion_tokens_total", model="m") == 5
    assert value(metrics, "portway_time_to_first_token_seconds_count", model="m") == 1


def test_label_children_are_made_once(metrics: Metrics) -> None:
    for _ in range(3):
        metrics.request_done("m", scope("/v1/chat/completions"), 200, 0.01)
    assert len(metrics._requests) == 1


def test_the_ledger_lag_is_zero_without_a_journal(metrics: Metrics) -> None:
    assert value(metrics, "portway_usage_ledger_lag_seconds") == 0
