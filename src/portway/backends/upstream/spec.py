"""The parts of an ``openai`` (hosted, OpenAI-compatible) catalogue entry that
are tables of their own: timeouts and retries. See ``OpenAISpec`` in catalog.py.

[[models]]
user = "openai"
app = "chat-completion"
model = "gpt-4o"
backend = "openai"
base_url = "https://api.openai.com/v1"      # or endpoints = ["http://a/v1", "http://b/v1"]
upstream_model = "gpt-4o"
api_key_env = "OPENAI_API_KEY"              # or api_key_secret = "openai" (portway secret set)
timeouts = { connect = 10, first_byte = 120, idle = 60, total = 600 }
retries = { max_attempts = 3, backoff_base = 0.5, backoff_cap = 8, jitter = true }
fallbacks = ["openai/chat-completion/models/gpt-4.1"]

An image model (``kind = "image"``) may set ``rehost_images = true``: its ``url``
results are then fetched and served from Portway's own signed, expiring links
(``url_ttl`` seconds, 3600 by default) instead of the provider's. Only public
addresses are fetched from, unless ``rehost_allowed_networks`` lists more (say
``["10.1.2.0/24"]`` for an upstream whose storage is on the private network).

``max_event_bytes`` bounds one event of the upstream's streams (16 MiB by default).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_EVENT_BYTES = 16 * 1024 * 1024
"""The largest event read from an upstream's stream (base64 images are big)."""


class UpstreamTimeouts(BaseModel):
    """Seconds. ``first_byte``: from sending the request to the upstream's first
    event (stream) or its response headers (unary); ``idle``: the longest gap
    between two reads of the body; ``total``: the whole request, retries included."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect: float = Field(default=10.0, gt=0, le=600)
    first_byte: float = Field(default=120.0, gt=0, le=3600)
    idle: float = Field(default=60.0, gt=0, le=3600)
    total: float = Field(default=600.0, gt=0, le=86400)


class UpstreamRetries(BaseModel):
    """Attempts before the first byte reaches the client; attempt ``k`` (from 1)
    waits ``min(cap, base * 2**(k-1))`` seconds first, times a random factor in
    [0.5, 1) with ``jitter``, and at least what the upstream's ``Retry-After`` says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=10)
    backoff_base: float = Field(default=0.5, ge=0, le=60)
    backoff_cap: float = Field(default=8.0, ge=0, le=600)
    jitter: bool = True


def clean_base_url(url: str) -> str:
    """``url`` without its trailing slash; ValueError unless it is http(s)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"an upstream URL must start with http:// or https://, not {url!r}")
    return url.rstrip("/")
