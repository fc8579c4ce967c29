"""Portway's metrics, named as Prometheus's conventions ask: the ``portway_``
prefix, the unit in the name (``_seconds``), counters ending in ``_total``.

Label children are looked up once per label values and kept, so that the hot
path does one dict lookup and the increments themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
"""Seconds: from a relayed request's added millisecond to a long generation."""
FIRST_TOKEN_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass(frozen=True)
class Definitions:
    """Every metric object; registered in ``registry`` (None in multiprocess
    mode, where values go to the shared files and are read back from there)."""

    requests: Counter
    request_duration: Histogram
    time_to_first_token: Histogram
    prompt_tokens: Counter
    completion_tokens: Counter
    queue_depth: Gauge
    requests_in_flight: Gauge
    runners_attached: Gauge
    upstream_retries: Counter
    upstream_failures: Counter
    upstream_ejections: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> Definitions:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, ("model",), registry=registry, multiprocess_mode="livesum")

        return cls(
            requests=counter(
                "portway_requests_total",
                "HTTP requests answered, by model, route and status code.",
                "model",
                "route",
                "status",
            ),
            request_duration=Histogram(
                "portway_request_duration_seconds",
                "Seconds from a request's arrival to the end of its response (a stream's too).",
                ("model", "route"),
                registry=registry,
                buckets=DURATION_BUCKETS,
            ),
            time_to_first_token=Histogram(
                "portway_time_to_first_token_seconds",
                "Seconds from a generation request's acceptance to its first generated token.",
                ("model",),
                registry=registry,
                buckets=FIRST_TOKEN_BUCKETS,
            ),
            prompt_tokens=counter(
                "portway_prompt_tokens_total", "Prompt tokens of recorded requests.", "model"
            ),
            completion_tokens=counter(
                "portway_completion_tokens_total",
                "Completion tokens of recorded requests.",
                "model",
            ),
            queue_depth=gauge("portway_queue_depth", "Requests waiting for the model."),
            requests_in_flight=gauge(
                "portway_requests_in_flight", "Requests the model is working on."
            ),
            runners_attached=gauge(
                "portway_runners_attached", "Runners attached to the model (all its versions)."
            ),
            upstream_retries=counter(
                "portway_upstream_retries_total",
                "Attempts on a hosted model's upstream repeated after a failure.",
                "model",
            ),
            upstream_failures=counter(
                "portway_upstream_failures_total",
                "Attempts on a hosted model's upstream endpoints that failed "
                "(no answer, a 5xx, a timeout, a broken stream).",
                "model",
            ),
            upstream_ejections=counter(
                "portway_upstream_ejections_total",
                "Times an upstream endpoint was taken out for a cool-down after failures.",
                "model",
            ),
        )
