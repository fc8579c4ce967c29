"""Prometheus metrics: what is counted (``definitions``), where the numbers come
from (the request log middleware, the ledger writer, the backends: ``service``,
``sampling``, ``ledger``), and where they are served (``http``); multiprocess
mode for ``--workers`` (``multiprocess``)."""

from portway.metrics.multiprocess import (
    cleanup_multiprocess,
    multiprocess_dir,
    prepare_multiprocess,
    worker_exited,
)
from portway.metrics.service import Metrics

__all__ = [
    "Metrics",
    "cleanup_multiprocess",
    "multiprocess_dir",
    "prepare_multiprocess",
    "worker_exited",
]
