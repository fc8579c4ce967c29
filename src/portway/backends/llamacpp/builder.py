"""The catalogue builder of ``backend = "llamacpp"`` (see portway/builders.py)."""

from __future__ import annotations

from pathlib import Path

from portway.backends.base import Built
from portway.backends.versions import version_id
from portway.registry.catalog import CatalogError, LlamaCppSpec


def _gguf_path(spec: LlamaCppSpec, data_dir: Path) -> Path:
    if spec.path is not None:
        if not spec.path.is_file():
            raise CatalogError(f"{spec.reference}: no file {spec.path}")
        return spec.path
    from portway.backends.llamacpp.default_model import ensure_default_gguf

    return ensure_default_gguf(data_dir)


def build_llamacpp(spec: LlamaCppSpec, data_dir: Path) -> Built:
    from portway.backends.llamacpp.backend import LlamaCppBackend
    from portway.backends.llamacpp.default_model import file_sha256

    path = _gguf_path(spec, data_dir)
    backend = LlamaCppBackend(
        path,
        n_ctx=spec.context_length,
        n_threads=spec.threads,
        chat_template=spec.chat_template,
        max_queue=spec.max_queue,
        model_name=spec.reference,
        parallel=spec.parallel,
        default_max_tokens=spec.default_max_tokens,
        prefill_chunk=spec.prefill_chunk,
        prefix_reuse=spec.prefix_reuse,
        n_gpu_layers=spec.gpu_layers,
    )
    version = version_id("llamacpp", file_sha256(path), spec.chat_template, spec.context_length)
    return backend, version
