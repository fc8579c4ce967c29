"""Catalogue entries for embedding and image models, and model-directory digests."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from portway.backends.digests import directory_digest
from portway.backends.hf.builder import build_diffusers, image_capabilities
from portway.registry import catalog
from portway.registry.catalog import CatalogError, DiffusersSpec, SentenceTransformersSpec

MINILM = "sentence-transformers/embed/models/all-MiniLM-L6-v2"


def _load(tmp_path: Path, text: str) -> catalog.Catalog:
    path = tmp_path / "portway.toml"
    path.write_text(text)
    return catalog.load(path)


def _references(cat: catalog.Catalog) -> list[str]:
    return [spec.reference for spec in catalog.specs(cat)]


def test_the_default_embedding_model_is_served_unless_turned_off(tmp_path: Path) -> None:
    assert MINILM in _references(_load(tmp_path, "default_model = false\n"))
    off = _load(tmp_path, "default_model = false\ndefault_embedding_model = false\n")
    assert _references(off) == []


def test_without_the_extra_the_default_embedding_model_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "sentence_transformers" else real(name, *args),
    )
    with caplog.at_level(logging.INFO):
        assert _references(_load(tmp_path, "default_model = false\n")) == []
    assert [record.message for record in caplog.records if "embeddings" in record.message]


def test_model_entries_parse_with_paths_relative_to_the_catalogue(tmp_path: Path) -> None:
    cat = _load(
        tmp_path,
        """
default_model = false
default_embedding_model = false

[[models]]
user = "me"
app = "search"
model = "minilm"
backend = "sentence-transformers"
path = "models/minilm"
shortening = false

[[models]]
user = "me"
app = "art"
model = "sd"
backend = "diffusers"
path = "models/sd"
steps = 4
""",
    )
    embedding, image = cat.models
    assert isinstance(embedding, SentenceTransformersSpec)
    assert isinstance(image, DiffusersSpec)
    assert embedding.path == tmp_path / "models" / "minilm"
    assert embedding.shortening is False
    assert image.path == tmp_path / "models" / "sd"
    assert (image.steps, image.guidance, image.url_ttl, image.device) == (4, 7.5, 3600, "cpu")


@pytest.mark.parametrize("field", ["steps = 0", 'default_size = "big"', "guidance = -1"])
def test_bad_image_entries_are_refused(tmp_path: Path, field: str) -> None:
    entry = '[[models]]\nuser = "me"\napp = "a"\nmodel = "m"\nbackend = "diffusers"\n'
    with pytest.raises(CatalogError):
        _load(tmp_path, entry + 'path = "x"\n' + field + "\n")


def _spec(**fields: object) -> DiffusersSpec:
    base = {"user": "me", "app": "a", "model": "m", "backend": "diffusers", "path": "x"}
    return DiffusersSpec.model_validate({**base, **fields})


def test_a_default_size_outside_the_limits_is_a_catalogue_error() -> None:
    assert image_capabilities(_spec(default_size="64x128")).default_size == (64, 128)
    for size in ("60x64", "2048x2048", "32x32"):
        with pytest.raises(CatalogError):
            image_capabilities(_spec(default_size=size))


def test_a_missing_pipeline_directory_is_a_catalogue_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        build_diffusers(_spec(path=str(tmp_path / "missing")), tmp_path)


def test_directory_digest_follows_content_and_caches(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "sub" / "weights.bin").write_bytes(b"\x00" * 1000)
    cache = tmp_path / "cache.json"
    first = directory_digest(model, cache)
    assert cache.exists()
    assert directory_digest(model, cache) == first
    (model / "sub" / "weights.bin").write_bytes(b"\x01" * 1000)
    assert directory_digest(model, cache) != first
