"""A model folder's digest: every file's relative path and bytes, so that any
change to code or configuration makes a new version."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20


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
    """The hex sha256 over each file's relative path (POSIX) and contents, each
    preceded by its length; files are streamed (a folder may hold weights)."""
    digest = hashlib.sha256()
    for path in model_files(folder):
        name = path.relative_to(folder).as_posix().encode("utf-8")
        digest.update(len(name).to_bytes(8, "big"))
        digest.update(name)
        with path.open("rb") as file:
            digest.update(os.fstat(file.fileno()).st_size.to_bytes(8, "big"))
            while chunk := file.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()
