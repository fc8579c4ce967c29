"""The catalogue builder of ``backend = "python"``: a model folder served in-process."""

from __future__ import annotations

from pathlib import Path

from portway.backends.base import Built
from portway.registry.catalog import CatalogError, PythonSpec


def build_python(spec: PythonSpec, data_dir: Path) -> Built:
    """Load the folder (its config, requirements and ``model.py``); its
    ``user``/``app``/``id`` must be the catalogue entry's."""
    from portway.backends.python.loader import load_model_dir
    from portway.sdk.requirements import MissingRequirements

    try:
        loaded = load_model_dir(spec.path)
    except (ValueError, MissingRequirements) as exc:
        raise CatalogError(f"{spec.reference}: {exc}") from exc
    except Exception as exc:
        raise CatalogError(
            f"{spec.reference}: importing {spec.path / 'model.py'} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if loaded.config.owned_by(spec.user) != spec.reference:
        raise CatalogError(
            f"{spec.reference}: the folder {spec.path} declares the model "
            f"{loaded.reference} (portway-model.toml); the catalogue entry must match it"
        )
    return loaded.backend, loaded.version
