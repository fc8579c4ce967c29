"""A digest of a model directory, for its version id.

Hashing gigabytes of weights at every start would be slow, so each file's sha256
is cached in one JSON file (in the data dir, never beside the model) and trusted
while the file's size and modification time are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def directory_digest(root: Path, cache_path: Path) -> str:
    """sha256 over the relative path and content of every file under ``root``."""
    cache = _read_cache(cache_path)
    digest = hashlib.sha256()
    for path in sorted(item for item in root.rglob("*") if item.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_file_sha256(path, cache).encode() + b"\0")
    _write_cache(cache_path, cache)
    return digest.hexdigest()


def _file_sha256(path: Path, cache: dict[str, list[object]]) -> str:
    stat = path.stat()
    key = str(path.resolve())
    found = cache.get(key)
    if found is not None and found[:2] == [stat.st_size, stat.st_mtime_ns]:
        return str(found[2])
    with path.open("rb") as file:
        value = hashlib.file_digest(file, "sha256").hexdigest()
    cache[key] = [stat.st_size, stat.st_mtime_ns, value]
    return value


def _read_cache(path: Path) -> dict[str, list[object]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _write_cache(path: Path, cache: dict[str, list[object]]) -> None:
    """Best effort: a failed write only costs hashing again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "w") as file:
            json.dump(cache, file)
        os.replace(name, path)
    except OSError as exc:
        log.debug("could not write %s: %s", path, exc)
