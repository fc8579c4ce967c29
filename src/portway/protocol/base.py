"""The one base class for wire models."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class RequestModel(BaseModel):
    """A request body: unknown fields are refused, never silently dropped, and so
    are NaN and Infinity in number fields."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ResponseModel(BaseModel):
    """A response body or stream chunk, serialised with every field present except
    the optional ones named in ``omit_when_none`` (OpenAI leaves those out)."""

    model_config = ConfigDict(frozen=True)
    omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        for name in self.omit_when_none:
            if isinstance(data, dict) and data.get(name, 0) is None:
                del data[name]
        return data
