"""Route labels are templates without the API prefix: a bounded set."""

from __future__ import annotations

from dataclasses import dataclass

from portway.metrics.routes import OTHER, RouteLabels

PREFIXES = ("/v1", "/v2/ext/openai/v1")
LABELS = RouteLabels(["/v1/chat/completions", "/v2/ext/openai/v1/chat/completions"], PREFIXES)


@dataclass
class Route:
    path: str


def test_direct_paths_lose_their_prefix() -> None:
    for path in ("/v1/chat/completions", "/v2/ext/openai/v1/chat/completions"):
        assert LABELS({"path": path}) == "/chat/completions"


def test_a_matched_route_gives_its_template_whatever_its_prefix() -> None:
    for template in ("/models/{model:path}", "/v1/models/{model:path}"):
        scope = {"path": "/v1/models/a/b/models/c", "route": Route(template)}
        assert LABELS(scope) == "/models/{model:path}"
    assert LABELS({"path": "/health", "route": Route("/health")}) == "/health"
    assert LABELS({"path": "/v1x/health", "route": Route("/v1x/health")}) == "/v1x/health"


def test_unmatched_paths_share_one_label() -> None:
    assert LABELS({"path": "/no/such/thing"}) == OTHER
    assert LABELS({"path": "/v1/chat/completions/x"}) == OTHER
