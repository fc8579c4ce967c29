"""portway-model.toml, folder digests, requirements and the ``python`` catalogue backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portway.backends.python.builder import build_python
from portway.registry import catalog
from portway.registry.catalog import CatalogError, PythonSpec
from portway.sdk import MissingRequirements, ModelConfigError, load_model_dir
from portway.sdk.digest import folder_digest
from tests.unit.sdk.sdk_helpers import write_folder

ECHO = """
from portway import ModelClass

class Echo(ModelClass):
    def generate(self, messages, params):
        yield messages[-1]["content"]
"""


def test_loads_a_folder(tmp_path: Path) -> None:
    loaded = load_model_dir(write_folder(tmp_path / "m", ECHO, "concurrency = 2"))
    assert loaded.reference == "alice/demo/models/m"
    assert len(loaded.version) == 32
    assert int(loaded.version, 16) >= 0
    assert loaded.config.concurrency == 2
    assert type(loaded.model).__name__ == "Echo"
    assert loaded.model.path == tmp_path / "m"


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        ("colour = 'red'", "model.colour: Extra inputs are not permitted"),
        ("kind = 'audio'", "model.kind: Input should be 'chat', 'embedding' or 'image'"),
        ("concurrency = 0", "model.concurrency: Input should be greater than or equal to 1"),
        ("[python]\nrequirements = 'numpy'", "python.requirements: Input should be a valid"),
        ("[python]\npip = []", "python.pip: unknown key"),
        ("[other]\nx = 1", "unknown table [other]"),
        ("kind = 'embedding'", "model.dimensions: an embedding model needs dimensions"),
        ("[openai]\nport = 1", "openai.port: Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_file_and_field(tmp_path: Path, extra: str, where: str) -> None:
    folder = write_folder(tmp_path / "m", ECHO, extra)
    with pytest.raises(ModelConfigError) as caught:
        load_model_dir(folder)
    assert str(folder / "portway-model.toml") in str(caught.value)
    assert where in str(caught.value)


def test_bad_names_and_missing_files(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(ModelConfigError, match=r"portway-model.toml: no such file"):
        load_model_dir(folder)
    (folder / "portway-model.toml").write_text('[model]\nuser = "a b"\napp = "x"\nid = "y"\n')
    with pytest.raises(ModelConfigError, match=r"model.user: String should match pattern"):
        load_model_dir(folder)
    (folder / "portway-model.toml").write_text('[model]\nuser = "a"\napp = "x"\nid = "y"\n')
    with pytest.raises(ModelConfigError, match=r"model.py: no such file"):
        load_model_dir(folder)


def test_the_model_class_is_found_or_named(tmp_path: Path) -> None:
    two = ECHO + "\nclass Other(Echo):\n    pass\n"
    folder = write_folder(tmp_path / "m", two)
    with pytest.raises(ModelConfigError, match=r"found Echo, Other .*model.class"):
        load_model_dir(folder)
    folder = write_folder(tmp_path / "n", two, 'class = "Other"')
    assert type(load_model_dir(folder).model).__name__ == "Other"
    folder = write_folder(tmp_path / "o", two, 'class = "Nope"')
    with pytest.raises(ModelConfigError, match="no ModelClass subclass named 'Nope'"):
        load_model_dir(folder)


def test_digest_follows_code_and_config_only(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m", ECHO)
    first = folder_digest(folder)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    (folder / ".cache").write_text("x")
    (folder / "old.pyc").write_bytes(b"x")
    assert folder_digest(folder) == first
    (folder / "model.py").write_text(ECHO + "\n# changed\n")
    second = folder_digest(folder)
    assert second != first
    (folder / "portway-model.toml").write_text(
        (folder / "portway-model.toml").read_text() + "concurrency = 3\n"
    )
    assert folder_digest(folder) != second
    (folder / "data").mkdir()
    (folder / "data" / "weights.bin").write_bytes(b"\x00")
    assert folder_digest(folder) not in (first, second)


def test_missing_requirements_are_listed_with_the_pip_command(tmp_path: Path) -> None:
    extra = '[python]\nrequirements = ["click>=1", "no-such-package-xyz==1.0", "click<1"]'
    folder = write_folder(tmp_path / "m", ECHO, extra)
    with pytest.raises(MissingRequirements) as caught:
        load_model_dir(folder)
    assert caught.value.missing == ["no-such-package-xyz==1.0", "click<1"]
    assert "pip install no-such-package-xyz==1.0 'click<1'" in str(caught.value)
    folder = write_folder(tmp_path / "n", ECHO, '[python]\nrequirements = ["not a req!"]')
    with pytest.raises(ValueError, match="is not a valid requirement"):
        load_model_dir(folder)


def test_user_import_errors_surface(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m", "import no_such_module_xyz\n")
    with pytest.raises(ModuleNotFoundError):
        load_model_dir(folder)
    spec = PythonSpec(user="alice", app="demo", model="m", backend="python", path=folder)
    with pytest.raises(CatalogError, match="ModuleNotFoundError"):
        build_python(spec, tmp_path)


def test_catalogue_entry_must_match_and_paths_are_relative(tmp_path: Path) -> None:
    write_folder(tmp_path / "models" / "m", ECHO)
    (tmp_path / "portway.toml").write_text(
        '[[models]]\nuser = "alice"\napp = "demo"\nmodel = "m"\nbackend = "python"\n'
        'path = "models/m"\n'
    )
    spec = catalog.load(tmp_path / "portway.toml").models[0]
    assert isinstance(spec, PythonSpec)
    backend, version = build_python(spec, tmp_path)
    assert backend.kind == "chat"
    assert len(version) == 32
    wrong = spec.model_copy(update={"model": "other"})
    with pytest.raises(CatalogError, match="declares the model alice/demo/models/m"):
        build_python(wrong, tmp_path)


def test_an_openai_table_needs_an_openai_model_class(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m", ECHO, '[openai]\nbase_url = "http://x/v1"')
    with pytest.raises(ModelConfigError, match=r"\[openai\] configures an OpenAIModelClass"):
        load_model_dir(folder)


def test_a_folders_runner_deadlines_reach_its_hello(tmp_path: Path) -> None:
    from portway.runners import wire
    from portway.runners.work import model_info

    extra = "timeouts = { first_byte = 5, idle = 2 }"
    loaded = load_model_dir(write_folder(tmp_path / "m", ECHO, extra))
    assert loaded.config.timeouts == wire.RunnerTimeouts(first_byte=5, idle=2)
    info = model_info(loaded.backend, loaded.reference, loaded.version, loaded.config.timeouts)
    hello = wire.parse_runner_frame(json.dumps({"type": "hello", "model": info}))
    assert isinstance(hello, wire.Hello)
    assert hello.model.timeouts == loaded.config.timeouts
    with pytest.raises(ModelConfigError, match=r"model\.timeouts\.idle"):
        load_model_dir(write_folder(tmp_path / "n", ECHO, "timeouts = { idle = 0 }"))
