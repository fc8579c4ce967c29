"""``runner_backend``: the runner-served backend of a model, by its kind."""

from __future__ import annotations

from portway.backends.base import Kind
from portway.registry.runner_spec import RunnerTimeouts
from portway.runners.backend import RunnerBackend, RunnerChatBackend
from portway.runners.media import RunnerEmbeddingBackend, RunnerImageBackend
from portway.runners.pool import MAX_QUEUE
from portway.runners.wire import ModelInfo


def runner_backend(
    reference: str,
    kind: Kind,
    info: ModelInfo | None = None,
    max_queue: int = MAX_QUEUE,
    timeouts: RunnerTimeouts | None = None,
) -> RunnerBackend:
    """The runner-served backend of a model of ``kind`` (``timeouts``: the catalogue's)."""
    backend: RunnerBackend
    if kind == "embedding":
        backend = RunnerEmbeddingBackend(reference, info, max_queue)
    elif kind == "image":
        backend = RunnerImageBackend(reference, info, max_queue)
    else:
        backend = RunnerChatBackend(reference, info, max_queue)
    backend.declared_timeouts = timeouts
    return backend
