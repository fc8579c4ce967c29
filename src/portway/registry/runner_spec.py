"""The timeouts of a runner model (``backend = "runner"``): declared in the
catalogue or in a model folder, and sent by a runner in its ``hello``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RunnerTimeouts(BaseModel):
    """Seconds the server waits on a runner's call. ``first_byte``: from sending it
    to the first delta (a stream) or to the result (embeddings, images); ``idle``:
    the longest gap between two deltas. Past either the client gets 504
    ``runner_timeout`` and the runner a ``cancel``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    first_byte: float = Field(default=300.0, gt=0, le=86400)
    idle: float = Field(default=60.0, gt=0, le=86400)
