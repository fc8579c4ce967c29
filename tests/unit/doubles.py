"""Test doubles the unit tests share: a ledger that keeps its rows, a request
context for a user, and a registry of backends named by reference."""

from __future__ import annotations

from datetime import UTC, datetime

from portway.auth.principal import Principal
from portway.backends.base import ModelBackend
from portway.registry.models import ModelEntry, Registry
from portway.registry.refs import ModelRef
from portway.serving.context import RequestContext
from portway.store import UsageRecord, User


class Ledger:
    """Stands in for the usage recorder: keeps every row it is given."""

    def __init__(self) -> None:
        self.rows: list[UsageRecord] = []

    def record(self, record: UsageRecord) -> None:
        self.rows.append(record)


def user(name: str = "acme") -> User:
    return User(id=1, name=name, is_admin=False, created_at=datetime.now(UTC))


def context(endpoint: str, who: User | None = None) -> RequestContext:
    """Request ``req_1`` of ``who`` (user ``acme`` by default) with an inference token."""
    principal = Principal(who or user(), "tok_1", ("inference",))
    return RequestContext("req_1", principal, endpoint)


def entry(ref: str, backend: ModelBackend, version: str = "0" * 32) -> ModelEntry:
    """``backend`` served as ``ref`` (``user/app/models/model``)."""
    owner, app, _, model = ref.split("/")
    return ModelEntry(ModelRef(owner, app, model), version, backend)


def registry(*served: tuple[str, ModelBackend]) -> Registry:
    """A registry of ``(ref, backend)`` pairs; their versions are ``"0" * 32``,
    ``"1" * 32``, ... in order."""
    return Registry(
        [entry(ref, backend, str(index) * 32) for index, (ref, backend) in enumerate(served)]
    )
