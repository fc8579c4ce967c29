"""What the serving layer knows of the request it serves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from portway.auth.principal import Principal
from portway.serving.usage import Meter


@dataclass
class RequestContext:
    request_id: str
    principal: Principal
    endpoint: str
    log_fields: dict[str, Any] = field(default_factory=dict)
    on_usage: Callable[[Meter, str], None] | None = None
    """Given to every meter of the request (see ``Meter.on_end``)."""

    def meter(self, end_user: str | None) -> Meter:
        return Meter(
            request_id=self.request_id,
            endpoint=self.endpoint,
            user_id=self.principal.user.id,
            token_id=self.principal.token_id,
            end_user=end_user,
            on_end=self.on_usage,
        )
