"""One accepted relayed request, and what the relay's unary and streamed paths
both do with it: find the hosted model's backend, put the usage on the meter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portway.backends.upstream.backend import UpstreamBackend
from portway.registry.models import ModelEntry
from portway.serving.context import RequestContext
from portway.serving.relay.endpoints import RelayEndpoint
from portway.serving.usage import Meter


@dataclass
class RelayCall:
    """One accepted relayed request."""

    ctx: RequestContext
    entry: ModelEntry
    endpoint: RelayEndpoint
    body: dict[str, Any]
    meter: Meter
    chain: list[ModelEntry]
    base_url: str = ""
    """Where the client reached Portway (for links to re-hosted images)."""

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def client_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))


def upstream_of(entry: ModelEntry) -> UpstreamBackend:
    """The hosted model's backend (the chain's first model, or a hosted fallback)."""
    backend = entry.backend
    assert isinstance(backend, UpstreamBackend)
    return backend


def meter_usage(meter: Meter, entry: ModelEntry, usage: tuple[int, int]) -> None:
    meter.model, meter.version_id = entry.name, entry.version_id
    meter.prompt_tokens, meter.completion_tokens = usage
