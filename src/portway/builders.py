"""Build the registry from the catalogue: one backend and version per model.

Each backend family's builder lives beside its backend (``backends/<family>/builder.py``);
``BUILDERS`` names them by the catalogue's ``backend`` field. This module sits
above both ``registry`` and the families, so neither imports the other back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from portway.backends.base import Built
from portway.backends.hf.builder import build_diffusers, build_sentence_transformers
from portway.backends.llamacpp.builder import build_llamacpp
from portway.backends.python.builder import build_python
from portway.backends.scripted import ScriptedBackend
from portway.backends.upstream.builder import build_openai
from portway.backends.versions import version_id
from portway.registry import catalog
from portway.registry.catalog import Catalog, RunnerSpec, ScriptedSpec
from portway.registry.models import ModelEntry, Registry
from portway.registry.refs import ModelRef
from portway.store import Store


def build_scripted(spec: ScriptedSpec, data_dir: Path) -> Built:
    backend = ScriptedBackend(
        spec.script, delay=spec.delay, tool_family=spec.tool_family, reasons=spec.reasons
    )
    return backend, version_id("scripted", spec.script, spec.delay, spec.tool_family, spec.reasons)


def build_runner(spec: RunnerSpec, data_dir: Path) -> Built:
    """A declared runner model: listed always, served while runners attach."""
    from portway.runners.kinds import runner_backend

    backend = runner_backend(spec.reference, spec.kind, timeouts=spec.timeouts)
    return backend, version_id("runner", spec.reference)


BUILDERS: dict[str, Callable[[Any, Path], Built]] = {
    "llamacpp": build_llamacpp,
    "scripted": build_scripted,
    "sentence-transformers": build_sentence_transformers,
    "diffusers": build_diffusers,
    "openai": build_openai,
    "python": build_python,
    "runner": build_runner,
}


async def build_registry(cat: Catalog, data_dir: Path, store: Store) -> Registry:
    """Create every catalogue model's backend (not yet started) and record its version."""
    entries = []
    for spec in catalog.specs(cat):
        backend, version = BUILDERS[spec.backend](spec, data_dir)
        ref = ModelRef(spec.user, spec.app, spec.model)
        created = await store.register_model_version(str(ref), version)
        entries.append(
            ModelEntry(
                ref=ref,
                version_id=version,
                backend=backend,
                visibility=spec.visibility,
                aliases=spec.aliases,
                created=spec.created or int(created.timestamp()),
            )
        )
    return Registry(entries, cat.aliases)
