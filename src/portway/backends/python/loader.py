"""``load_model_dir``: a model folder in, a backend (not yet started) out."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from portway.backends.base import ModelBackend
from portway.backends.python.media import PythonEmbeddingBackend, PythonImageBackend
from portway.backends.python.model import PythonChatBackend
from portway.sdk.config import ModelConfig, ModelConfigError, load_config
from portway.sdk.digest import folder_digest
from portway.sdk.model import ModelClass
from portway.sdk.requirements import check_requirements

MODEL_FILE = "model.py"


@dataclass(frozen=True)
class LoadedModel:
    """A model folder ready to serve: ``backend.start()`` runs ``load_model``."""

    path: Path
    config: ModelConfig
    model: ModelClass
    backend: ModelBackend
    version: str
    """32 hex digits; changes with any file of the folder."""

    @property
    def reference(self) -> str:
        return self.config.reference


def _import_module(path: Path, digest: str) -> ModuleType:
    name = f"portway_model_{digest[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelConfigError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _model_class(module: ModuleType, config: ModelConfig, path: Path) -> type[ModelClass]:
    from portway.sdk.openai_model import OpenAIModelClass

    found = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, ModelClass)
        and value not in (ModelClass, OpenAIModelClass)
        and value.__module__ == module.__name__
    ]
    if config.class_name:
        named = [cls for cls in found if cls.__name__ == config.class_name]
        if not named:
            raise ModelConfigError(f"{path}: no ModelClass subclass named {config.class_name!r}")
        return named[0]
    if len(found) != 1:
        names = ", ".join(cls.__name__ for cls in found) or "none"
        raise ModelConfigError(
            f"{path}: expected one ModelClass subclass, found {names} "
            "(set model.class in portway-model.toml)"
        )
    return found[0]


def _check_openai_table(cls: type[ModelClass], config: ModelConfig, path: Path) -> None:
    from portway.sdk.openai_model import OpenAIModelClass

    if config.openai is not None and not issubclass(cls, OpenAIModelClass):
        raise ModelConfigError(
            f"{path.parent / 'portway-model.toml'}: [openai] configures an OpenAIModelClass, "
            f"and {cls.__name__} is not one"
        )


def load_model_dir(path: Path | str) -> LoadedModel:
    """Read the folder's config, check its requirements, import ``model.py`` and
    wrap an instance of its model class in the backend for its kind.

    Raises ``ModelConfigError`` or ``MissingRequirements``; whatever importing
    ``model.py`` raises propagates.
    """
    from portway.backends.versions import version_id

    folder = Path(path).resolve()
    config = load_config(folder)
    check_requirements(config.requirements, str(folder / "portway-model.toml"))
    source = folder / MODEL_FILE
    if not source.is_file():
        raise ModelConfigError(f"{source}: no such file (a model folder needs {MODEL_FILE})")
    digest = folder_digest(folder)
    cls = _model_class(_import_module(source, digest), config, source)
    _check_openai_table(cls, config, source)
    model = cls()
    model.config, model.path = config, folder
    version = version_id("python", digest)
    return LoadedModel(folder, config, model, backend_for(model, config), version)


def backend_for(model: ModelClass, config: ModelConfig) -> ModelBackend:
    """The backend for ``config.kind``."""
    if config.kind == "chat":
        return PythonChatBackend(model, config)
    if config.kind == "embedding":
        return PythonEmbeddingBackend(model, config)
    return PythonImageBackend(model, config)
