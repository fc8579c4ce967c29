"""``GET /models`` shapes."""

from __future__ import annotations

from typing import Literal

from portway.protocol.base import ResponseModel


class Model(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: str
    version: str


class ListModelsResponse(ResponseModel):
    object: Literal["list"] = "list"
    data: list[Model]
