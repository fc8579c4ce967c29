"""The usage ledger's journal: rows on local disk until the database has them.

Each process appends its rows, one JSON line each, to a segment file of its own
(``{owner}.{seq}.jsonl``) with one ``write`` system call: once :meth:`append`
returns, the row survives the process being killed. The writer seals the open
segment, writes its rows to the database and deletes it. A process holds an
exclusive ``flock`` on ``{owner}.lock`` while it lives (the kernel releases it
when the process dies, however it dies); another process that can take that
lock adopts the dead owner's segments by renaming them into its own name, so a
segment is replayed by one process at a time. Replays are idempotent anyway:
every row carries a unique ``entry_id``. The directory is made mode 0700 (see
:mod:`portway.private`), its files 0600.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from portway.private import private_dir
from portway.store import UsageRecord

log = logging.getLogger("portway.usage")

_DATETIMES = ("started_at", "ended_at")
_FIELDS = tuple(UsageRecord.__dataclass_fields__)
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(record: UsageRecord) -> bytes:
    """``record`` as one journal line."""
    row: dict[str, Any] = {name: getattr(record, name) for name in _FIELDS}
    for name in _DATETIMES:
        row[name] = row[name].isoformat()
    return _ENCODER.encode(row).encode("utf-8") + b"\n"


def decode(line: bytes) -> UsageRecord:
    """The record of one journal line (ValueError, TypeError or KeyError if it is
    not one)."""
    row = json.loads(line)
    for name in _DATETIMES:
        row[name] = datetime.fromisoformat(row[name])
    return UsageRecord(**row)


def read_segment(path: Path) -> tuple[list[UsageRecord], int]:
    """The records in the segment at ``path``, and how many lines were unreadable
    (a torn last line after a power loss, say)."""
    records, broken = [], 0
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            records.append(decode(line))
        except (ValueError, TypeError, KeyError):
            broken += 1
    return records, broken


class Journal:
    """This process's segments in ``directory``, and the adoption of dead ones'."""

    def __init__(self, directory: Path) -> None:
        private_dir(directory)
        self.directory = directory
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = _locked_file(directory, self.owner)
        self._seq = 0
        self._fd: int | None = None
        self._size = 0
        """Bytes in the open segment: where a row that fails is cut off."""
        self.appended = 0
        """Rows appended to the open segment."""

    def append(self, line: bytes) -> None:
        """Add one encoded row to the open segment, whole or not at all: OSError
        if the disk refuses it or takes only part of it (a full disk), and then
        the part is cut off again, or, if it cannot be, the segment is sealed so
        that the next row starts a new line in a new one."""
        if self._fd is None:
            self._seq += 1
            path = self._segment(self._seq)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        except OSError:
            self._undo_partial_write()
            raise
        self._size += written
        self.appended += 1

    def _undo_partial_write(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            with contextlib.suppress(OSError):
                self.seal()

    def seal(self) -> None:
        """Close the open segment; the next row starts a new one."""
        if self._fd is not None:
            fd, self._fd, self.appended = self._fd, None, 0
            os.close(fd)

    def sealed(self) -> list[Path]:
        """This process's closed segments, oldest first."""
        found = []
        for path in self.directory.glob(f"{self.owner}.*.jsonl"):
            seq = int(path.name.split(".")[1])
            if self._fd is None or seq != self._seq:
                found.append((seq, path))
        return [path for _, path in sorted(found)]

    def adopt(self) -> int:
        """Take over the segments of every owner that is gone; how many."""
        adopted = 0
        for lock in self.directory.glob("*.lock"):
            owner = lock.name.removesuffix(".lock")
            if owner != self.owner and (fd := _try_lock(lock)) is not None:
                try:
                    adopted += self._take(owner)
                    lock.unlink(missing_ok=True)
                finally:
                    os.close(fd)
        return adopted

    def _take(self, owner: str) -> int:
        taken = 0
        for path in sorted(self.directory.glob(f"{owner}.*.jsonl"), key=_seq_of):
            self._seq += 1
            with contextlib.suppress(FileNotFoundError):  # another process took it
                path.rename(self._segment(self._seq))
                taken += 1
        if self._fd is not None:  # keep the open segment the newest
            self.seal()
        return taken

    def close(self) -> None:
        """Seal, and let go of the lock: what is left is adopted at the next start."""
        self.seal()
        if not self.sealed():
            (self.directory / f"{self.owner}.lock").unlink(missing_ok=True)
        os.close(self._lock)

    def _segment(self, seq: int) -> Path:
        return self.directory / f"{self.owner}.{seq:09d}.jsonl"


def _seq_of(path: Path) -> int:
    try:
        return int(path.name.split(".")[1])
    except (IndexError, ValueError):
        return 0


def _locked_file(directory: Path, owner: str) -> int:
    """An open, exclusively locked ``{owner}.lock``: locked under a temporary
    name first, so that no other process ever sees it unlocked."""
    temporary = directory / f".{owner}.locking"
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    temporary.rename(directory / f"{owner}.lock")
    return fd


def _try_lock(path: Path) -> int | None:
    """An open file descriptor holding ``path``'s lock, or None if its owner lives."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd
