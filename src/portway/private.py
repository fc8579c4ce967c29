"""What the data dir keeps is for the server's user alone.

The data dir is made mode 0700 and its files (the SQLite database, whose WAL
and SHM files SQLite gives the database's mode, the key files, generated
media) 0600. An existing dir or file that other local users may read is left
as it is, with a warning in the log.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("portway.files")

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
OTHERS = 0o077
"""Permission bits for the group and everyone else."""

_warned: set[Path] = set()


def warn_if_open(path: Path) -> None:
    """Log a warning if users other than the owner may read or enter ``path``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    if mode & OTHERS and path not in _warned:
        _warned.add(path)
        private = PRIVATE_DIR if path.is_dir() else PRIVATE_FILE
        log.warning(
            "%s is open to other local users (mode %04o); 'chmod %o %s' makes it private",
            path,
            mode,
            private,
            path,
        )


def private_dir(path: Path) -> Path:
    """``path`` as a directory: made mode 0700 if missing (parents too), else
    checked with :func:`warn_if_open`."""
    try:
        path.mkdir(parents=True, mode=PRIVATE_DIR)
    except FileExistsError:
        warn_if_open(path)
    else:
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode passes through the umask
    return path


def private_file(path: Path) -> Path:
    """An empty file at ``path``, mode 0600, unless one is there (then checked
    with :func:`warn_if_open`)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        warn_if_open(path)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600): a reader sees the old file or the
    whole new one, never part of it."""
    temp = _private_temp(path, data, durable=False)
    try:
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def read_or_create(path: Path, make: Callable[[], bytes]) -> bytes:
    """The content of ``path``; where there is none, ``make()`` is put there first.

    The new content is written whole to a private temporary file, then linked
    to ``path`` (which fails if ``path`` exists): a reader never sees a partial
    file, and concurrent first calls, in threads or processes, all return what
    the first link put there.
    """
    try:
        return _read_existing(path)
    except FileNotFoundError:
        pass
    temp = _private_temp(path, make())
    try:
        os.link(temp, path)
    except FileExistsError:
        pass  # another caller was first: its file is complete, read it
    finally:
        temp.unlink()
    return path.read_bytes()


def _read_existing(path: Path) -> bytes:
    data = path.read_bytes()
    warn_if_open(path)
    return data


def _private_temp(path: Path, data: bytes, *, durable: bool = True) -> Path:
    """A mode 0600 file next to ``path`` holding ``data`` (``durable``: on disk)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)
