"""Prometheus's multiprocess mode, for ``portway serve --workers N``.

Every worker writes its metric values to files in one directory
(``PROMETHEUS_MULTIPROC_DIR``) and any of them can read all the files back, so
one scrape sees the sums over every process. The parent process prepares the
directory before it starts the workers (:func:`prepare_multiprocess`), tells
Prometheus's files when a worker has gone (:func:`worker_exited`: its gauges
stop counting) and removes the directory when it exits
(:func:`cleanup_multiprocess`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The directory metric values are shared through, if this process shares them."""
    found = os.environ.get(ENV)
    return Path(found) if found else None


def prepare_multiprocess() -> Path:
    """In the parent, before any worker starts: an empty directory for the
    workers' metric files, exported as ``PROMETHEUS_MULTIPROC_DIR`` (which the
    workers inherit). One set by the operator is used, emptied of old files;
    otherwise a new private temporary one."""
    directory = multiprocess_dir()
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="portway-metrics-"))
        os.environ[ENV] = str(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    _use_shared_values()
    return directory


def worker_exited(pid: int) -> None:
    """In the parent, when worker ``pid`` has exited however it ended: its live
    gauges (queue depth, in flight, runners) no longer count; its counters do."""
    from prometheus_client import multiprocess

    if multiprocess_dir() is not None:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def cleanup_multiprocess(directory: Path) -> None:
    """In the parent, at exit: remove what :func:`prepare_multiprocess` made
    (a directory the operator chose keeps existing, emptied of metric files)."""
    if directory.name.startswith("portway-metrics-"):
        shutil.rmtree(directory, ignore_errors=True)
    else:
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)


def _use_shared_values() -> None:
    """``prometheus_client`` picks how values are kept when it is first imported;
    a parent that imported it before exporting the directory (and then forks)
    is switched here, so that its workers share their values."""
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
