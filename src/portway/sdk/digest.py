"""A model folder's digest: every file's relative path and bytes, so that any
change to code or configuration makes a new version."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path


def _skipped(relative: Path) -> bool:
    return (
        any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
        or relative.suffix == ".pyc"
    )


def model_files(folder: Path) -> Iterator[Path]:
    """The folder's files in a stable order, without ``__pycache__``, hidden files
    and ``*.pyc``."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not _skipped(relative):
            yield path


def folder_digest(folder: Path) -> str:
    """The hex sha256 over each file's relative path (POSIX) and contents."""
    digest = hashlib.sha256()
    for path in model_files(folder):
        name = path.relative_to(folder).as_posix().encode("utf-8")
        data = path.read_bytes()
        for part in (name, data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()
