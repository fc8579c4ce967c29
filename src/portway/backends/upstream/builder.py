"""The catalogue builder of ``backend = "openai"`` (see registry/loader.py)."""

from __future__ import annotations

from pathlib import Path

from portway.backends.base import Built
from portway.backends.upstream.backend import upstream_backend
from portway.registry.catalog import OpenAISpec
from portway.registry.versions import version_id


def build_openai(spec: OpenAISpec, data_dir: Path) -> Built:
    """The backend, and a version that changes with what the model is (its
    upstream and name there), not with timeouts, keys or fallbacks."""
    return upstream_backend(spec), version_id("openai", spec.kind, spec.urls, spec.upstream_model)
