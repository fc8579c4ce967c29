"""The catalogue builder of ``backend = "openai"`` (see portway/builders.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from portway.backends.base import Built
from portway.backends.upstream.backend import upstream_backend
from portway.backends.versions import version_id

if TYPE_CHECKING:  # the catalogue imports this family's spec.py: no import back at run time
    from portway.registry.catalog import OpenAISpec


def build_openai(spec: OpenAISpec, data_dir: Path) -> Built:
    """The backend, and a version that changes with what the model is (its
    upstream and name there), not with timeouts, keys or fallbacks."""
    return upstream_backend(spec), version_id("openai", spec.kind, spec.urls, spec.upstream_model)
