"""The catalogue builders of embedding and image models (see portway/builders.py)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from portway.backends.base import Built, ImageCapabilities
from portway.backends.digests import directory_digest
from portway.backends.versions import version_id
from portway.registry.catalog import (
    MINILM_PACKAGE,
    CatalogError,
    DiffusersSpec,
    SentenceTransformersSpec,
)


def _model_dir(reference: str, path: Path) -> Path:
    if not path.is_dir():
        raise CatalogError(f"{reference}: no directory {path}")
    return path


def _digest_cache(data_dir: Path) -> Path:
    return data_dir / "cache" / "model-digests.json"


def build_sentence_transformers(spec: SentenceTransformersSpec, data_dir: Path) -> Built:
    from portway.backends.hf.embeddings import SentenceTransformerBackend, embedded_model_dir

    if spec.path is None:
        path = embedded_model_dir(MINILM_PACKAGE)
        digest = f"{MINILM_PACKAGE}=={metadata.version(MINILM_PACKAGE.replace('_', '-'))}"
    else:
        path = _model_dir(spec.reference, spec.path)
        digest = directory_digest(path, _digest_cache(data_dir))
    backend = SentenceTransformerBackend(
        path,
        device=spec.device,
        normalize=spec.normalize,
        shortening=spec.shortening,
        max_batch=spec.max_batch,
        max_wait=spec.batch_wait_ms / 1000,
    )
    return backend, version_id("sentence-transformers", digest, spec.normalize)


def image_capabilities(spec: DiffusersSpec) -> ImageCapabilities:
    """The sizes ``spec`` allows; CatalogError when its default is not one of them."""
    width, height = (int(side) for side in spec.default_size.split("x"))
    caps = ImageCapabilities(
        default_size=(width, height), min_side=spec.min_side, max_side=spec.max_side
    )
    for side in (width, height):
        if side % caps.side_multiple or not caps.min_side <= side <= caps.max_side:
            raise CatalogError(
                f"{spec.reference}: default_size {spec.default_size} is not multiples of "
                f"{caps.side_multiple} from min_side {caps.min_side} to max_side {caps.max_side}"
            )
    return caps


def build_diffusers(spec: DiffusersSpec, data_dir: Path) -> Built:
    from portway.backends.hf.images import DiffusersBackend

    path = _model_dir(spec.reference, spec.path)
    backend = DiffusersBackend(
        path,
        capabilities=image_capabilities(spec),
        device=spec.device,
        steps=spec.steps,
        guidance=spec.guidance,
        url_ttl=spec.url_ttl,
        max_queue=spec.max_queue,
        model_name=spec.reference,
    )
    digest = directory_digest(path, _digest_cache(data_dir))
    return backend, version_id("diffusers", digest, spec.steps, spec.guidance)
